//! Real tests of the `libvirt` driver against a private libvirtd and QEMU VMs (software
//! emulation, no disk, no OS).
//!
//! One test runs every scenario in sequence so that one libvirtd serves them all (a cold
//! start probes QEMU for several seconds; the capability cache is kept in
//! `$CARGO_TARGET_TMPDIR/libvirt-cache`, so later runs start in well under a second). The
//! layout is the lab's: libvirtd runs inside a network namespace `cdv-<pid>` that holds
//! `br-office` and `br-quarantine`, so the VMs' taps land next to the bridges; the driver is
//! told that namespace (`with_netns`) to read the taps. The test checks the driver's claims
//! independently: the tap with `ip -n NETNS -d link show`, the definitions with its own
//! libvirt connection.
//!
//! Must run as root (CI does); fails, never skips, otherwise. `RUST_LOG=cordon_drivers=debug
//! cargo test -p cordon-drivers --test libvirt -- --nocapture` shows the driver's debug events
//! and the timings.

#[path = "support/libvirtd.rs"]
mod libvirtd;

use std::path::Path;
use std::time::{Duration, Instant};

use cordon_drivers::{DriverError, HypervisorDriver, LibvirtHypervisor, PowerDriver};
use libvirtd::{Libvirtd, TestNetns};
use virt::connect::Connect;
use virt::domain::Domain;

const OFFICE: &str = "br-office";
const QUARANTINE: &str = "br-quarantine";
const VM: &str = "cdv-vm1";
const VM_MAC: &str = "52:54:00:00:00:11";
/// vm1's second NIC: `type='network'` on the libvirt network NETWORK (bridged to br-office).
const VM_NET_MAC: &str = "52:54:00:00:00:12";
const NETWORK: &str = "cdv-office";
/// A domain that is defined but never started by the setup.
const OFF_VM: &str = "cdv-vm2";
const OFF_VM_MAC: &str = "52:54:00:00:00:21";

const AFFECT_LIVE: u32 = virt::sys::VIR_DOMAIN_AFFECT_LIVE;
const AFFECT_CONFIG: u32 = virt::sys::VIR_DOMAIN_AFFECT_CONFIG;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A tiny domain (environment.md): no disk, ACPI on (libvirt 9 would pass QEMU 10 the
/// refused `-no-acpi`), iPXE ROM off (it would burn a core for ~17 s per boot).
fn domain_xml(name: &str, nics: &str) -> String {
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/></features>
  <devices>
    <emulator>{emulator}</emulator>
{nics}
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>",
        emulator = libvirtd::QEMU
    )
}

fn bridge_nic(mac: &str, bridge: &str) -> String {
    format!(
        "    <interface type='bridge'>
      <mac address='{mac}'/>
      <source bridge='{bridge}'/>
      <model type='virtio'/>
      <rom enabled='no'/>
    </interface>"
    )
}

fn network_nic(mac: &str, network: &str) -> String {
    format!(
        "    <interface type='network'>
      <mac address='{mac}'/>
      <source network='{network}'/>
      <model type='virtio'/>
      <rom enabled='no'/>
    </interface>"
    )
}

/// What the test reads itself from a definition: `(type, bridge, isolated, target dev)`.
fn nic_in(xml: &str, mac: &str) -> (String, Option<String>, bool, Option<String>) {
    let document = roxmltree::Document::parse(xml).expect("domain XML parses");
    let interface = document
        .descendants()
        .filter(|node| node.has_tag_name("interface"))
        .find(|node| node.children().any(|child| child.has_tag_name("mac") && child.attribute("address") == Some(mac)))
        .unwrap_or_else(|| panic!("no interface with MAC {mac} in\n{xml}"));
    let child_attribute = |element: &str, attribute: &str| {
        interface
            .children()
            .find(|child| child.has_tag_name(element))
            .and_then(|child| child.attribute(attribute))
            .map(str::to_string)
    };
    (
        interface.attribute("type").unwrap_or("").to_string(),
        child_attribute("source", "bridge"),
        child_attribute("port", "isolated").as_deref() == Some("yes"),
        child_attribute("target", "dev"),
    )
}

/// The test's own view of the domains, through its own connection.
struct Inspector {
    connection: Connect,
}

impl Inspector {
    fn domain(&self, name: &str) -> Domain {
        self.connection.lookup_domain_by_name(name).expect("domain exists")
    }

    fn live(&self, name: &str, mac: &str) -> (String, Option<String>, bool, Option<String>) {
        nic_in(&self.domain(name).xml_desc(0).expect("live XML"), mac)
    }

    fn persistent(&self, name: &str, mac: &str) -> (String, Option<String>, bool, Option<String>) {
        nic_in(&self.domain(name).xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE).expect("persistent XML"), mac)
    }

    fn tap(&self, name: &str, mac: &str) -> String {
        self.live(name, mac).3.expect("a running domain's NIC has a tap")
    }

    fn running(&self, name: &str) -> bool {
        self.domain(name).is_active().expect("domain state")
    }

    /// Moves the NIC by hand (as an operator with `virsh update-device` would).
    fn update(&self, name: &str, mac: &str, bridge: &str, isolated: bool, flags: u32) {
        let port = if isolated { "<port isolated='yes'/>" } else { "" };
        let xml = format!(
            "<interface type='bridge'><mac address='{mac}'/><source bridge='{bridge}'/>{port}\
             <model type='virtio'/><rom enabled='no'/></interface>"
        );
        self.domain(name).update_device_flags(&xml, flags).expect("update-device by hand");
    }
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

#[test]
fn libvirt_driver_against_a_real_libvirtd() {
    init_tracing();
    libvirtd::require_root();
    let test_started = Instant::now();
    let netns = TestNetns::new(&[OFFICE, QUARANTINE]);
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("libvirt-cache");
    let (mut daemon, start_time) = Libvirtd::start(&netns.name, &cache);
    eprintln!("libvirtd ready after {} (cache {})", ms(start_time), cache.display());

    let driver = LibvirtHypervisor::new("kvm-test", daemon.uri.clone()).with_netns(Some(netns.name.clone()));
    // The driver's first call starts libvirt's event loop; the test's own connection comes after.
    assert_eq!(driver.list_domains().expect("list on an empty libvirtd"), Vec::new());
    let inspector = Inspector { connection: Connect::open(Some(&daemon.uri)).expect("test connection") };

    // A libvirt network bridged to br-office (forward mode bridge: no dnsmasq, no firewall).
    let network = inspector
        .connection
        .define_network_xml(&format!(
            "<network><name>{NETWORK}</name><forward mode='bridge'/><bridge name='{OFFICE}'/></network>"
        ))
        .expect("define the network");
    network.create().expect("start the network");

    let nics = format!("{}\n{}", bridge_nic(VM_MAC, OFFICE), network_nic(VM_NET_MAC, NETWORK));
    let vm = inspector.connection.define_domain_xml(&domain_xml(VM, &nics)).expect("define vm1");
    let boot = Instant::now();
    vm.create().expect("start vm1");
    eprintln!("vm1 started in {}", ms(boot.elapsed()));
    inspector.connection.define_domain_xml(&domain_xml(OFF_VM, &bridge_nic(OFF_VM_MAC, OFFICE))).expect("define vm2");
    daemon.collect_qemu_pids();
    let tap = inspector.tap(VM, VM_MAC);

    // --- observe_nic ---------------------------------------------------------------------
    let observed = driver.observe_nic(VM, VM_MAC).expect("observe vm1's NIC");
    assert_eq!(observed.port, tap);
    assert_eq!(observed.bridge.as_deref(), Some(OFFICE));
    assert!(!observed.isolated);
    assert!(observed.up);
    assert_eq!(netns.link(&tap), (Some(OFFICE.to_string()), false, true), "read independently");
    // Upper case works too.
    assert_eq!(driver.observe_nic(VM, &VM_MAC.to_uppercase()).expect("observe, upper-case MAC"), observed);
    // A driver looking into the wrong namespace (its own) says so instead of guessing.
    if !libvirtd::run("ip", &["link", "show", "dev", &tap]).status.success() {
        let blind = LibvirtHypervisor::new("kvm-test", daemon.uri.clone());
        match blind.observe_nic(VM, VM_MAC) {
            Err(DriverError::Namespace { detail, .. }) => assert!(detail.contains(&tap), "{detail}"),
            other => panic!("expected a Namespace error from the wrong namespace, got {other:?}"),
        }
    }

    // --- quarantine: br-quarantine, isolated ----------------------------------------------
    let started = Instant::now();
    let outcome = driver.ensure_nic(VM, VM_MAC, QUARANTINE, true).expect("move to quarantine");
    let move_time = started.elapsed();
    eprintln!("move to {QUARANTINE} (isolated): {}", ms(move_time));
    assert!(outcome.moved && outcome.isolation_changed, "{outcome:?}");
    assert_eq!(outcome.before, observed);
    assert_eq!(outcome.after.port, tap, "same tap, moved live");
    assert_eq!(outcome.after.bridge.as_deref(), Some(QUARANTINE));
    assert!(outcome.after.isolated && outcome.after.up);
    assert!(inspector.running(VM), "the domain keeps running");
    assert_eq!(netns.link(&tap), (Some(QUARANTINE.to_string()), true, true), "tap read with ip -d link");
    assert_eq!(inspector.live(VM, VM_MAC).1.as_deref(), Some(QUARANTINE));
    let (kind, bridge, isolated, _) = inspector.persistent(VM, VM_MAC);
    assert_eq!((kind.as_str(), bridge.as_deref(), isolated), ("bridge", Some(QUARANTINE), true), "persistent XML");

    // --- the same again: nothing to do -----------------------------------------------------
    let started = Instant::now();
    let again = driver.ensure_nic(VM, VM_MAC, QUARANTINE, true).expect("ensure again");
    eprintln!("no-op ensure: {}", ms(started.elapsed()));
    assert!(!again.moved && !again.isolation_changed, "{again:?}");
    assert_eq!(again.before, again.after);
    assert_eq!(netns.link(&tap), (Some(QUARANTINE.to_string()), true, true));

    // --- release: back to br-office, not isolated -------------------------------------------
    let started = Instant::now();
    let back = driver.ensure_nic(VM, VM_MAC, OFFICE, false).expect("move back to the office");
    eprintln!("move back to {OFFICE}: {}", ms(started.elapsed()));
    assert!(back.moved && back.isolation_changed, "{back:?}");
    assert_eq!(netns.link(&tap), (Some(OFFICE.to_string()), false, true));
    assert_eq!(inspector.persistent(VM, VM_MAC).1.as_deref(), Some(OFFICE));
    assert!(!inspector.persistent(VM, VM_MAC).2);

    // --- isolation only (same bridge) -------------------------------------------------------
    let flag = driver.ensure_nic(VM, VM_MAC, OFFICE, true).expect("isolate in place");
    assert!(!flag.moved && flag.isolation_changed, "{flag:?}");
    assert_eq!(netns.link(&tap), (Some(OFFICE.to_string()), true, true));
    assert!(inspector.persistent(VM, VM_MAC).2);
    driver.ensure_nic(VM, VM_MAC, OFFICE, false).expect("un-isolate");
    assert_eq!(netns.link(&tap), (Some(OFFICE.to_string()), false, true));

    // --- moved by hand (live and persistent): already where it should be --------------------
    inspector.update(VM, VM_MAC, QUARANTINE, false, AFFECT_LIVE | AFFECT_CONFIG);
    assert_eq!(netns.link(&tap).0.as_deref(), Some(QUARANTINE));
    let by_hand = driver.ensure_nic(VM, VM_MAC, QUARANTINE, false).expect("ensure after a move by hand");
    assert!(!by_hand.moved && !by_hand.isolation_changed, "{by_hand:?}");
    assert_eq!(by_hand.before.bridge.as_deref(), Some(QUARANTINE));

    // --- only the persistent definition differs: fixed, the live NIC is not touched ---------
    inspector.update(VM, VM_MAC, OFFICE, false, AFFECT_CONFIG);
    let config_only = driver.ensure_nic(VM, VM_MAC, QUARANTINE, false).expect("fix the persistent definition");
    assert!(!config_only.moved, "the tap did not move: {config_only:?}");
    assert_eq!(inspector.persistent(VM, VM_MAC).1.as_deref(), Some(QUARANTINE));
    assert_eq!(netns.link(&tap).0.as_deref(), Some(QUARANTINE));

    // --- the tap moved behind libvirt's back: the kernel's view wins and is corrected -------
    netns.ip(&["link", "set", "dev", &tap, "master", OFFICE]);
    let drifted = driver.observe_nic(VM, VM_MAC).expect("observe a drifted tap");
    assert_eq!(drifted.bridge.as_deref(), Some(OFFICE), "the tap's real master is reported");
    let fixed = driver.ensure_nic(VM, VM_MAC, QUARANTINE, true).expect("re-attach the drifted tap");
    assert!(fixed.moved && fixed.isolation_changed, "{fixed:?}");
    assert_eq!(netns.link(&tap), (Some(QUARANTINE.to_string()), true, true));
    assert!(inspector.live(VM, VM_MAC).2 && inspector.persistent(VM, VM_MAC).2);
    driver.ensure_nic(VM, VM_MAC, OFFICE, false).expect("back to the office");
    assert_eq!(netns.link(&tap), (Some(OFFICE.to_string()), false, true));

    // --- a missing bridge: refused cleanly, nothing changed ---------------------------------
    let missing = driver.ensure_nic(VM, VM_MAC, "br-nope", true);
    assert_eq!(missing, Err(DriverError::BridgeNotFound { bridge: "br-nope".into() }));
    assert_eq!(netns.link(&tap), (Some(OFFICE.to_string()), false, true));
    assert_eq!(inspector.persistent(VM, VM_MAC).1.as_deref(), Some(OFFICE));
    // Also for a domain that is not running (libvirt itself would accept any name there).
    let missing = driver.ensure_nic(OFF_VM, OFF_VM_MAC, "br-nope", false);
    assert_eq!(missing, Err(DriverError::BridgeNotFound { bridge: "br-nope".into() }));
    assert_eq!(inspector.persistent(OFF_VM, OFF_VM_MAC).1.as_deref(), Some(OFFICE));

    // --- half done: the live move works, saving the persistent definition fails -------------
    // libvirt applies the live change, then writes the definition; a read-only
    // /etc/libvirt/qemu (inside libvirtd's mount namespace) makes only the second part fail.
    let pid = daemon.pid().expect("libvirtd runs").to_string();
    let in_daemon_mounts = |command: &str| {
        let output = libvirtd::run("nsenter", &["-t", &pid, "-m", "sh", "-c", command]);
        assert!(output.status.success(), "{command}: {}", String::from_utf8_lossy(&output.stderr));
    };
    in_daemon_mounts("mount --bind /etc/libvirt/qemu /etc/libvirt/qemu && mount -o remount,bind,ro /etc/libvirt/qemu");
    let half = driver.ensure_nic(VM, VM_MAC, QUARANTINE, true);
    in_daemon_mounts("umount /etc/libvirt/qemu");
    eprintln!("half-done move: {half:?}");
    match &half {
        Err(DriverError::Netlink { detail, .. }) => {
            assert!(detail.contains("HALF DONE: the live NIC is connected as requested"), "{detail}")
        }
        other => panic!("expected a plain half-done error, got {other:?}"),
    }
    assert_eq!(netns.link(&tap), (Some(QUARANTINE.to_string()), true, true), "the live part happened");
    assert_eq!(inspector.persistent(VM, VM_MAC).1.as_deref(), Some(OFFICE), "the persistent part did not");
    let completed = driver.ensure_nic(VM, VM_MAC, QUARANTINE, true).expect("the next ensure completes it");
    assert!(!completed.moved, "only the definition was missing: {completed:?}");
    assert_eq!(inspector.persistent(VM, VM_MAC).1.as_deref(), Some(QUARANTINE));
    driver.ensure_nic(VM, VM_MAC, OFFICE, false).expect("back to the office");

    // --- unknown domain, unknown MAC --------------------------------------------------------
    let error = driver.ensure_nic("cdv-nosuch", VM_MAC, QUARANTINE, true).expect_err("unknown domain");
    assert_eq!(error, DriverError::DomainNotFound { domain: "cdv-nosuch".into() });
    assert_eq!(error.message_number(), 60015);
    assert_eq!(
        driver.observe_nic("cdv-nosuch", VM_MAC),
        Err(DriverError::DomainNotFound { domain: "cdv-nosuch".into() })
    );
    let error = driver.ensure_nic(VM, "52:54:00:00:00:99", QUARANTINE, true).expect_err("unknown MAC");
    assert_eq!(error, DriverError::NicNotFound { domain: VM.into(), mac: "52:54:00:00:00:99".into() });
    assert_eq!(error.message_number(), 60016);
    assert_eq!(
        driver.observe_nic(VM, "52:54:00:00:00:99"),
        Err(DriverError::NicNotFound { domain: VM.into(), mac: "52:54:00:00:00:99".into() })
    );

    // --- a domain that is not running: its persistent definition -----------------------------
    let off = driver.observe_nic(OFF_VM, OFF_VM_MAC).expect("observe a shut-off domain");
    assert_eq!((off.port.as_str(), off.bridge.as_deref(), off.isolated, off.up), ("", Some(OFFICE), false, false));
    let off_moved = driver.ensure_nic(OFF_VM, OFF_VM_MAC, QUARANTINE, true).expect("move a shut-off domain's NIC");
    assert!(off_moved.moved && off_moved.isolation_changed, "{off_moved:?}");
    let (_, bridge, isolated, _) = inspector.persistent(OFF_VM, OFF_VM_MAC);
    assert_eq!((bridge.as_deref(), isolated), (Some(QUARANTINE), true));
    assert!(!inspector.running(OFF_VM), "not started by a move");
    driver.ensure_nic(OFF_VM, OFF_VM_MAC, OFFICE, false).expect("move it back");

    // --- a type='network' NIC: seen on the network's bridge, moved as a bridge NIC -----------
    let net_tap = inspector.tap(VM, VM_NET_MAC);
    let net_nic = driver.observe_nic(VM, VM_NET_MAC).expect("observe the network NIC");
    assert_eq!((net_nic.port.as_str(), net_nic.bridge.as_deref()), (net_tap.as_str(), Some(OFFICE)));
    let net_noop = driver.ensure_nic(VM, VM_NET_MAC, OFFICE, false).expect("network NIC already on br-office");
    assert!(!net_noop.moved && !net_noop.isolation_changed, "{net_noop:?}");
    let net_moved = driver.ensure_nic(VM, VM_NET_MAC, QUARANTINE, true).expect("move the network NIC");
    assert!(net_moved.moved && net_moved.isolation_changed, "{net_moved:?}");
    assert_eq!(netns.link(&net_tap), (Some(QUARANTINE.to_string()), true, true), "the tap really moved");
    let (kind, bridge, isolated, _) = inspector.persistent(VM, VM_NET_MAC);
    assert_eq!((kind.as_str(), bridge.as_deref(), isolated), ("bridge", Some(QUARANTINE), true));

    // --- list_domains -----------------------------------------------------------------------
    let domains = driver.list_domains().expect("list domains");
    let names: Vec<&str> = domains.iter().map(|domain| domain.name.as_str()).collect();
    assert_eq!(names, [VM, OFF_VM]);
    let vm1 = &domains[0];
    assert!(vm1.running);
    assert_eq!(vm1.nics.len(), 2);
    assert_eq!(vm1.nics[0].mac, VM_MAC);
    assert_eq!(vm1.nics[0].bridge.as_deref(), Some(OFFICE));
    assert_eq!(vm1.nics[0].model.as_deref(), Some("virtio"));
    assert_eq!((vm1.nics[1].mac.as_str(), vm1.nics[1].bridge.as_deref()), (VM_NET_MAC, Some(QUARANTINE)));
    let vm2 = &domains[1];
    assert!(!vm2.running);
    assert_eq!((vm2.nics[0].mac.as_str(), vm2.nics[0].bridge.as_deref()), (OFF_VM_MAC, Some(OFFICE)));
    // A network NIC in a shut-off domain's definition: the network's bridge.
    let listed_network = {
        let xml = domain_xml("cdv-vm3", &network_nic("52:54:00:00:00:31", NETWORK));
        let vm3 = inspector.connection.define_domain_xml(&xml).expect("define vm3");
        let listed = driver.list_domains().expect("list domains");
        vm3.undefine().expect("undefine vm3");
        listed
    };
    let vm3 = listed_network.iter().find(|domain| domain.name == "cdv-vm3").expect("vm3 listed");
    assert_eq!(vm3.nics[0].bridge.as_deref(), Some(OFFICE), "{vm3:?}");

    // --- reboot of the running VM: no OS, so ACPI is ignored and the reset confirms ---------
    let power = driver.power(VM);
    assert_eq!(power.target(), format!("kvm-test/{VM}"));
    let started = Instant::now();
    let reboot = power.reboot(Duration::from_secs(1), Duration::from_secs(20)).expect("reboot vm1");
    let reboot_time = started.elapsed();
    eprintln!("reboot of {VM}: {} in {}: {:?}", reboot.method, ms(reboot_time), reboot.observed);
    assert_eq!(reboot.method, "forced");
    assert!(!reboot.powered_on);
    assert!(reboot.observed.iter().any(|line| line == "graceful reboot requested"), "{:?}", reboot.observed);
    assert!(reboot.observed.iter().any(|line| line == "reset sent"), "{:?}", reboot.observed);
    assert!(reboot.observed.last().is_some_and(|line| line.starts_with("reboot event")), "{:?}", reboot.observed);
    assert!(inspector.running(VM));
    assert_eq!(netns.link(&tap).0.as_deref(), Some(OFFICE), "a reboot keeps the NIC where it is");

    // --- reboot of a shut-off domain: powered on ----------------------------------------------
    assert!(!inspector.running(OFF_VM));
    let started = Instant::now();
    let power_on = driver.power(OFF_VM).reboot(Duration::from_secs(1), Duration::from_secs(20)).expect("power on");
    eprintln!("power-on of {OFF_VM} in {}: {:?}", ms(started.elapsed()), power_on.observed);
    assert_eq!(power_on.method, "power_on");
    assert!(power_on.powered_on);
    assert!(
        power_on.observed.iter().any(|line| line.starts_with("lifecycle event: started")),
        "{:?}",
        power_on.observed
    );
    assert!(inspector.running(OFF_VM));
    daemon.collect_qemu_pids();

    // --- libvirtd down: unreachable; back up: the same driver works again -------------------
    drop(inspector);
    daemon.kill_daemon();
    for error in [
        driver.observe_nic(VM, VM_MAC).err(),
        driver.ensure_nic(VM, VM_MAC, QUARANTINE, true).err(),
        driver.list_domains().err(),
        power.reboot(Duration::from_millis(100), Duration::from_secs(1)).err(),
    ] {
        match error {
            Some(DriverError::HypervisorUnreachable { detail }) => {
                assert!(detail.contains(&daemon.uri), "the error names the URI: {detail}")
            }
            other => panic!("expected HypervisorUnreachable with libvirtd down, got {other:?}"),
        }
    }
    let restart = daemon.start_daemon();
    eprintln!("libvirtd restarted (warm) in {}", ms(restart));
    let after_restart = driver.observe_nic(VM, VM_MAC).expect("observe after the restart");
    assert_eq!((after_restart.port.as_str(), after_restart.bridge.as_deref()), (tap.as_str(), Some(OFFICE)));
    let moved = driver.ensure_nic(VM, VM_MAC, QUARANTINE, true).expect("move after the restart");
    assert!(moved.moved);
    assert_eq!(netns.link(&tap), (Some(QUARANTINE.to_string()), true, true));

    eprintln!(
        "summary: libvirtd start {}, warm restart {}, move {}, reboot confirmed in {}, whole test {}",
        ms(start_time),
        ms(restart),
        ms(move_time),
        ms(reboot_time),
        ms(test_started.elapsed())
    );
    drop(daemon);
    drop(netns);
}
