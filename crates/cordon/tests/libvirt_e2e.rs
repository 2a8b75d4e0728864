//! End to end through a real hypervisor: the lab (scripts/lab.sh), a private libvirtd started
//! inside the lab's switch namespace (so the VMs' taps land next to br-office and
//! br-quarantine), tiny QEMU VMs (software emulation, no disk, no OS), a real `cordon serve`
//! whose `[[hypervisor]] kvm-1` is that libvirtd and whose virtual server vpc-001 is one of the
//! VMs, and the real `cordon` command.
//!
//! What Cordon claims is checked independently: the definitions through the test's own libvirt
//! connection (live and persistent XML), the tap with `ip -n NAME-sw -d -j link show`.
//!
//! The libvirtd harness is the driver crate's (crates/cordon-drivers/tests/support/libvirtd.rs),
//! used by path; one test per binary, as it runs one libvirtd. QEMU's capability cache is kept
//! in `$CARGO_TARGET_TMPDIR/libvirt-cache` (shared with the driver crate's tests): a cold start
//! probes QEMU for several seconds, a warm one takes well under a second. Needs root and what
//! `scripts/install-deps.sh` installs (libvirtd, QEMU, iproute2, util-linux).
//!
//! Timings with `--nocapture`: `cargo test -p cordon --test libvirt_e2e -- --nocapture`.

mod common;
#[path = "../../cordon-drivers/tests/support/libvirtd.rs"]
mod libvirtd;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use libvirtd::Libvirtd;
use virt::connect::Connect;
use virt::domain::Domain;

const OFFICE: &str = "br-office";
const QUARANTINE: &str = "br-quarantine";
const VM: &str = "vpc-001";
const VM_MAC: &str = "52:54:00:00:00:11";
const VM_IP: &str = "10.10.0.21";
/// Defined on the hypervisor, never started, not in the configuration: found by the import.
const OFF_VM: &str = "vpc-002";
const OFF_VM_MAC: &str = "52:54:00:00:00:12";

/// A NIC as the test reads it from a definition.
#[derive(Debug, Clone, PartialEq, Eq)]
struct XmlNic {
    kind: String,
    bridge: Option<String>,
    isolated: bool,
    tap: Option<String>,
}

fn nic_in(xml: &str, mac: &str) -> XmlNic {
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
    XmlNic {
        kind: interface.attribute("type").unwrap_or("").to_string(),
        bridge: child_attribute("source", "bridge"),
        isolated: child_attribute("port", "isolated").as_deref() == Some("yes"),
        tap: child_attribute("target", "dev"),
    }
}

/// The test's own libvirt connection. Declared after the `Libvirtd` so that it is dropped
/// first (virt's `Connect` panics in drop if closing fails), and dropped before libvirtd is
/// killed on purpose.
struct Vms {
    connection: Connect,
}

impl Vms {
    fn open(daemon: &Libvirtd) -> Vms {
        Vms { connection: Connect::open(Some(&daemon.uri)).expect("the test's libvirt connection") }
    }

    fn domain(&self, name: &str) -> Domain {
        self.connection.lookup_domain_by_name(name).expect("domain exists")
    }

    fn live(&self, name: &str, mac: &str) -> XmlNic {
        nic_in(&self.domain(name).xml_desc(0).expect("live XML"), mac)
    }

    fn persistent(&self, name: &str, mac: &str) -> XmlNic {
        nic_in(&self.domain(name).xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE).expect("persistent XML"), mac)
    }

    fn running(&self, name: &str) -> bool {
        self.domain(name).is_active().expect("domain state")
    }

    /// Moves the NIC by hand, live and persistent (as an operator with `virsh update-device
    /// --live --config` would).
    fn move_by_hand(&self, name: &str, mac: &str, bridge: &str, isolated: bool) {
        let port = if isolated { "<port isolated='yes'/>" } else { "" };
        let xml = format!(
            "<interface type='bridge'><mac address='{mac}'/><source bridge='{bridge}'/>{port}\
             <model type='virtio'/><rom enabled='no'/></interface>"
        );
        let flags = virt::sys::VIR_DOMAIN_AFFECT_LIVE | virt::sys::VIR_DOMAIN_AFFECT_CONFIG;
        self.domain(name).update_device_flags(&xml, flags).expect("update-device by hand");
    }
}

/// Where vpc-001's NIC is, read independently: the domain runs, its live and persistent
/// definitions say `bridge` and `isolated`, and so does the kernel about its tap.
fn assert_vm_nic(lab: &Lab, vms: &Vms, bridge: &str, isolated: bool) {
    assert!(vms.running(VM), "{VM} keeps running");
    let live = vms.live(VM, VM_MAC);
    assert_eq!(
        (live.kind.as_str(), live.bridge.as_deref(), live.isolated),
        ("bridge", Some(bridge), isolated),
        "live XML: {live:?}"
    );
    let persistent = vms.persistent(VM, VM_MAC);
    assert_eq!(
        (persistent.kind.as_str(), persistent.bridge.as_deref(), persistent.isolated),
        ("bridge", Some(bridge), isolated),
        "persistent XML: {persistent:?}"
    );
    let tap = live.tap.expect("a running domain's NIC has a tap");
    assert_eq!(lab.port(&tap), (bridge.to_string(), isolated), "tap {tap} read with ip -d -j link show");
}

/// A TOML basic string (a JSON string is one).
fn toml_string(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// The lab's configuration with the reboot timings in `[manager]`, the hypervisor and the
/// virtual server appended.
fn configure(lab: &Lab, daemon: &Libvirtd) {
    let mut text = std::fs::read_to_string(lab.config()).unwrap();
    let needle = "\n[manager]\n";
    assert_eq!(text.matches(needle).count(), 1, "one [manager] table in the lab's config:\n{text}");
    let at = text.find(needle).unwrap() + needle.len();
    text.insert_str(at, "graceful_timeout = \"1s\"\nreboot_deadline = \"30s\"\n");
    text.push_str(&format!(
        "\n[[hypervisor]]\nname = \"kvm-1\"\ndriver = \"libvirt\"\nuri = {}\nnetns = {}\n\n\
         [[server]]\nname = \"{VM}\"\nkind = \"virtual\"\nhypervisor = \"kvm-1\"\ndomain = \"{VM}\"\n\
         tenant = \"sales\"\n[[server.nic]]\nmac = \"{VM_MAC}\"\nnetwork = \"office\"\nip = \"{VM_IP}\"\n",
        toml_string(&daemon.uri),
        toml_string(&lab.switch()),
    ));
    // Detections from an EVE file: a serious alert on a VM quarantines and reboots it.
    text.push_str(&format!(
        "\n[[source]]\nname = \"ids-1\"\ntype = \"suricata-eve\"\npath = {}\n\n[policy]\ndefault_action = \"notify\"\n\n\
         [[policy.rule]]\nname = \"contain and restart\"\nsources = [\"ids-1\"]\nmin_severity = \"high\"\n\
         action = \"quarantine_reboot\"\nmode = \"auto\"\n",
        toml_string(&eve_path(lab).display().to_string()),
    ));
    std::fs::write(lab.config(), text).unwrap();
}

fn eve_path(lab: &Lab) -> std::path::PathBuf {
    lab.dir.path().join("eve.json")
}

fn in_pool(address: &str) -> bool {
    let last: u8 = address.strip_prefix("10.99.0.").and_then(|x| x.parse().ok()).unwrap_or(0);
    (100..=199).contains(&last)
}

/// The action id from `quarantine of X queued as action N`.
fn queued_id(out: &Output) -> String {
    let text = stdout(out);
    let id = text.lines().find_map(|line| line.split_once(" queued as action ").map(|(_, id)| id.trim().to_string()));
    id.unwrap_or_else(|| panic!("no action id in {text:?} {}", stderr(out)))
}

/// Runs an action command with `--wait`; it must succeed. Returns the action, shown.
fn act(manager: &Manager, args: &[&str]) -> (serde_json::Value, Duration) {
    let clock = Instant::now();
    let out = manager.cordon(args);
    let elapsed = clock.elapsed();
    assert!(out.status.success(), "cordon {args:?}: {}{}\n{}", stdout(&out), stderr(&out), manager.log());
    let action = manager.json(&["actions", "show", &queued_id(&out), "-o", "json"]);
    assert_eq!(action["state"], "succeeded", "{action:#}");
    (action, elapsed)
}

fn assert_operational(manager: &Manager) {
    let server = manager.json(&["servers", "show", VM, "-o", "json"]);
    assert_eq!(
        (server["state"].as_str(), server["network"].as_str(), server["ip"].as_str()),
        (Some("operational"), Some("office"), Some(VM_IP)),
        "{server:#}"
    );
    assert_eq!(server["nics"][0]["network"], "office", "{server:#}");
}

fn secs(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

#[test]
fn virtual_server_through_a_real_libvirtd() {
    libvirtd::require_root();
    let begun = Instant::now();
    // Dropped in reverse order, also on panic: the manager, the test's connection, libvirtd
    // (and every QEMU it started), then the lab.
    let lab = Lab::up(&format!("v{}", std::process::id() % 100_000));
    let lab_up = begun.elapsed();
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("libvirt-cache");
    let (mut daemon, daemon_start) = Libvirtd::start(&lab.switch(), &cache);
    let vms = Vms::open(&daemon);
    let clock = Instant::now();
    let vm = vms.connection.define_domain_xml(&libvirtd::tiny_domain_xml(VM, VM_MAC, OFFICE)).expect("define vpc-001");
    vm.create().expect("start vpc-001");
    drop(vm);
    vms.connection.define_domain_xml(&libvirtd::tiny_domain_xml(OFF_VM, OFF_VM_MAC, OFFICE)).expect("define vpc-002");
    daemon.collect_qemu_pids();
    let vm_start = clock.elapsed();
    assert_vm_nic(&lab, &vms, OFFICE, false);

    configure(&lab, &daemon);
    let manager = Manager::start(&lab.config(), &lab.dir.path().join("data"));
    let ready = begun.elapsed();
    eprintln!(
        "lab up in {}, libvirtd ready in {}, VMs defined and vpc-001 started in {}; ready after {}",
        secs(lab_up),
        secs(daemon_start),
        secs(vm_start),
        secs(ready)
    );
    let server = manager.json(&["servers", "show", VM, "-o", "json"]);
    assert_eq!((server["kind"].as_str(), server["state"].as_str()), (Some("virtual"), Some("operational")));

    // --- 1. quarantine: the live NIC moves to br-quarantine, isolated; the VM keeps running ---
    let (action, quarantine_time) = act(&manager, &["quarantine", VM, "--reason", "e2e", "--wait"]);
    assert_eq!(step(&action, "ensure_port_on_bridge")["outcome"], "done", "{action:#}");
    let server = manager.json(&["servers", "show", VM, "-o", "json"]);
    assert_eq!(server["state"], "quarantined", "{server:#}");
    assert_eq!(server["network"], "quarantine", "{server:#}");
    let quarantine_ip = server["ip"].as_str().unwrap().to_string();
    assert!(in_pool(&quarantine_ip), "{quarantine_ip} is from the pool");
    assert_eq!(server["nics"][0]["mac"], VM_MAC);
    assert_eq!(server["nics"][0]["operational_ip"], VM_IP);
    assert_vm_nic(&lab, &vms, QUARANTINE, true);

    // --- 2. unquarantine: back on br-office, not isolated ---------------------------------
    let (_, unquarantine_time) = act(&manager, &["unquarantine", VM, "--wait"]);
    assert_operational(&manager);
    assert_vm_nic(&lab, &vms, OFFICE, false);

    // --- 3. moved by hand through libvirt, then `cordon quarantine`: records resync --------
    vms.move_by_hand(VM, VM_MAC, QUARANTINE, true);
    assert_vm_nic(&lab, &vms, QUARANTINE, true);
    let (action, _) = act(&manager, &["quarantine", VM, "--wait"]);
    assert_eq!(step(&action, "ensure_port_on_bridge")["outcome"], "already_in_place", "{action:#}");
    assert!(
        action["messages"].as_array().unwrap().iter().any(|m| m["number"] == 21005),
        "message 21005 says the NIC was already in place: {action:#}"
    );
    assert_eq!(manager.json(&["servers", "show", VM, "-o", "json"])["network"], "quarantine");
    assert_vm_nic(&lab, &vms, QUARANTINE, true);
    act(&manager, &["unquarantine", VM, "--wait"]);
    assert_operational(&manager);
    assert_vm_nic(&lab, &vms, OFFICE, false);

    // --- 4. libvirtd down: the action fails with 60014; back up: a retry completes it ------
    drop(vms);
    daemon.kill_daemon();
    let clock = Instant::now();
    let out = manager.cordon(&["quarantine", VM, "--wait"]);
    let unreachable_time = clock.elapsed();
    assert_eq!(out.status.code(), Some(1), "quarantine with libvirtd down: {}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("60014"), "--wait names 60014: {}{}", stdout(&out), stderr(&out));
    let failed_id = queued_id(&out);
    let action = manager.json(&["actions", "show", &failed_id, "-o", "json"]);
    assert_eq!(action["state"], "failed", "{action:#}");
    assert_eq!(action["message"]["number"], 60014, "hypervisor unreachable: {action:#}");
    assert_eq!(action["attempts"], 3, "tried again automatically before giving up: {action:#}");
    let port_step = step(&action, "ensure_port_on_bridge");
    assert_eq!((port_step["outcome"].as_str(), port_step["message_number"].as_u64()), (Some("failed"), Some(60014)));
    let server = manager.json(&["servers", "show", VM, "-o", "json"]);
    assert_eq!(server["state"], "quarantine_failed", "{server:#}");
    assert_eq!(server["network"], "office", "the record did not follow a move that did not happen: {server:#}");

    let restart = daemon.start_daemon();
    let vms = Vms::open(&daemon);
    let qemu_survived = vms.running(VM);
    if !qemu_survived {
        vms.domain(VM).create().expect("start vpc-001 again");
    }
    daemon.collect_qemu_pids();
    eprintln!(
        "libvirtd down: failed in {}; restarted in {} (vpc-001's QEMU {})",
        secs(unreachable_time),
        secs(restart),
        if qemu_survived { "survived" } else { "had died and was started again" }
    );
    assert_vm_nic(&lab, &vms, OFFICE, false);
    let clock = Instant::now();
    let out = manager.cordon(&["actions", "retry", &failed_id, "--wait"]);
    let retry_time = clock.elapsed();
    assert!(out.status.success(), "retry {failed_id}: {}{}\n{}", stdout(&out), stderr(&out), manager.log());
    let action = manager.json(&["actions", "show", &failed_id, "-o", "json"]);
    assert_eq!(action["state"], "succeeded", "{action:#}");
    assert!(action["attempts"].as_u64().unwrap() >= 2, "{action:#}");
    let server = manager.json(&["servers", "show", VM, "-o", "json"]);
    assert_eq!((server["state"].as_str(), server["network"].as_str()), (Some("quarantined"), Some("quarantine")));
    assert!(in_pool(server["ip"].as_str().unwrap()), "{server:#}");
    assert_vm_nic(&lab, &vms, QUARANTINE, true);
    act(&manager, &["unquarantine", VM, "--wait"]);
    assert_operational(&manager);
    assert_vm_nic(&lab, &vms, OFFICE, false);

    // --- 5. reboot: no OS, so the graceful request is ignored; the reset after 1 s confirms ---
    let (action, reboot_time) = act(&manager, &["reboot", VM, "--reason", "e2e", "--wait"]);
    assert_eq!(action["kind"], "reboot", "{action:#}");
    assert_eq!(action["message"]["number"], 21015, "{action:#}");
    let reboot_step = step(&action, "ensure_rebooted");
    assert_eq!(reboot_step["outcome"], "done", "{reboot_step:#}");
    assert_eq!(reboot_step["target"], format!("kvm-1/{VM}"), "{reboot_step:#}");
    let detail = reboot_step["detail"].as_str().unwrap();
    eprintln!("reboot of {VM} confirmed in {}: {detail}", secs(reboot_time));
    assert!(detail.starts_with("forced via libvirt: "), "{detail}");
    let at = |needle: &str, from: usize| detail[from..].find(needle).map(|i| i + from);
    let requested = at("graceful reboot requested", 0).unwrap_or_else(|| panic!("the request in {detail}"));
    let waited = at("no reboot event within 1 s", requested).unwrap_or_else(|| panic!("the wait in {detail}"));
    let reset = at("reset sent", waited).unwrap_or_else(|| panic!("the reset in {detail}"));
    at("reboot event", reset).unwrap_or_else(|| panic!("the reboot event after the reset in {detail}"));
    assert!(action["message"]["text"].as_str().unwrap().contains(detail), "the message carries it: {action:#}");
    assert!(reboot_time >= Duration::from_secs(1), "the graceful wait came first: {reboot_time:?}");
    assert_operational(&manager);
    assert_vm_nic(&lab, &vms, OFFICE, false);

    // --- 6. import from the hypervisor: a dry run writes nothing, --apply adds vpc-002 -------
    let report = manager.json(&["servers", "import", "--from-libvirt", "kvm-1", "-o", "json"]);
    assert_eq!((report["hypervisor"].as_str(), report["applied"].as_bool()), (Some("kvm-1"), Some(false)));
    let listed = |report: &serde_json::Value, name: &str| {
        let found = report["servers"].as_array().unwrap().iter().find(|s| s["name"] == name).cloned();
        found.unwrap_or_else(|| panic!("{name} in the import: {report:#}"))
    };
    let new = listed(&report, OFF_VM);
    assert_eq!((new["outcome"].as_str(), new["running"].as_bool()), (Some("new"), Some(false)), "{new:#}");
    assert_eq!(new["nics"].as_array().unwrap().len(), 1, "{new:#}");
    let nic = &new["nics"][0];
    assert_eq!(
        (nic["mac"].as_str(), nic["bridge"].as_str(), nic["network"].as_str()),
        (Some(OFF_VM_MAC), Some(OFFICE), Some("office")),
        "{new:#}"
    );
    let existing = listed(&report, VM);
    assert_eq!((existing["outcome"].as_str(), existing["running"].as_bool()), (Some("exists"), Some(true)));
    let out = manager.cordon(&["servers", "show", OFF_VM, "-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "a dry run writes nothing: {}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("60002"), "{}", stderr(&out));

    let report = manager.json(&["servers", "import", "--from-libvirt", "kvm-1", "--apply", "-o", "json"]);
    assert_eq!(report["applied"], true, "{report:#}");
    assert_eq!(listed(&report, OFF_VM)["outcome"], "new", "{report:#}");
    let imported = manager.json(&["servers", "show", OFF_VM, "-o", "json"]);
    assert_eq!(
        (imported["kind"].as_str(), imported["network"].as_str()),
        (Some("virtual"), Some("office")),
        "{imported:#}"
    );
    assert_eq!(imported["nics"][0]["mac"], OFF_VM_MAC, "{imported:#}");
    let again = manager.json(&["servers", "import", "--from-libvirt", "kvm-1", "-o", "json"]);
    assert_eq!(listed(&again, OFF_VM)["outcome"], "exists", "{again:#}");
    assert!(!vms.running(OFF_VM), "the import did not start vpc-002");

    // --- 7. the policy's quarantine_reboot for a detection on the VM does both, in order ---
    let alert = format!(
        r#"{{"timestamp":"2026-11-27T10:00:00.000000+0000","event_type":"alert","src_ip":"{VM_IP}","src_port":40000,"dest_ip":"203.0.113.5","dest_port":443,"proto":"TCP","alert":{{"action":"allowed","gid":1,"signature_id":2000001,"rev":1,"signature":"CORDON TEST VM beacon","category":"A Network Trojan was detected","severity":1}}}}"#
    );
    let mut eve = std::fs::OpenOptions::new().create(true).append(true).open(eve_path(&lab)).unwrap();
    std::io::Write::write_all(&mut eve, format!("{alert}\n").as_bytes()).unwrap();
    drop(eve);
    let contained = |m: &Manager| {
        let actions = m.json(&["actions", "list", "-o", "json"]);
        actions.as_array().unwrap().iter().any(|a| a["kind"] == "quarantine_reboot" && a["state"] == "succeeded")
    };
    manager.wait_until(30, "the policy's quarantine_reboot of the VM", contained);
    let listed = manager.json(&["actions", "list", "-o", "json"]);
    let id = listed.as_array().unwrap().iter().find(|a| a["kind"] == "quarantine_reboot").unwrap()["id"].to_string();
    let action = manager.json(&["actions", "show", &id, "-o", "json"]);
    let names: Vec<&str> = action["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["ensure_quarantine_address", "ensure_port_on_bridge", "record_nic_position", "ensure_rebooted"],
        "quarantine first, then reboot: {action:#}"
    );
    assert_eq!(action["decided_by"], "rule contain and restart", "{action:#}");
    assert_eq!(action["detections"], 1, "{action:#}");
    assert_vm_nic(&lab, &vms, QUARANTINE, true);

    eprintln!(
        "ready {}, quarantine {}, unquarantine {}, unreachable {}, libvirtd restart {}, retry {}, reboot {}, \
         total {}",
        secs(ready),
        secs(quarantine_time),
        secs(unquarantine_time),
        secs(unreachable_time),
        secs(restart),
        secs(retry_time),
        secs(reboot_time),
        secs(begun.elapsed())
    );
}
