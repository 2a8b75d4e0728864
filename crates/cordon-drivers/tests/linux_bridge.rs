//! Real tests of the `linux-bridge` driver against the kernel.
//!
//! Every test builds its own lab with `ip` (setup only: the driver itself
//! speaks netlink): a switch namespace with bridges `br-a` and `br-b`, veth
//! ports `p1..pN` on `br-a`, whose other ends sit in small host namespaces
//! with IPv4 addresses 10.77.0.<i>/24. A guard deletes every namespace the
//! test created when it goes out of scope, also on panic. Namespace names
//! carry the process id and a per-process counter, so tests run in parallel
//! (and alongside other test processes) without colliding.
//!
//! Must run as root (CI does); fails, never skips, otherwise.

use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cordon_drivers::{DriverError, LinuxBridgeSwitch, PortObservation, SwitchDriver};

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// `RUST_LOG=cordon_drivers=debug cargo test -- --nocapture` shows the
/// driver's own debug events (with per-step timings).
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn require_root() {
    init_tracing();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the linux-bridge tests create network namespaces, bridges and veth pairs and must run as root (euid is {euid})"
    );
}

fn run(program: &str, args: &[&str]) -> Output {
    match Command::new(program).args(args).output() {
        Ok(output) => output,
        Err(error) => panic!(
            "cannot run `{program} {}`: {error} (is {program} installed? `ip`/`bridge` come with iproute2, `ping` with iputils-ping)",
            args.join(" ")
        ),
    }
}

/// Runs `ip ARGS`, panicking with its stderr if it fails.
fn ip(args: &[&str]) -> String {
    let output = run("ip", args);
    assert!(
        output.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// One test's namespaces. Dropping it deletes them all.
struct Lab {
    switch: String,
    hosts: Vec<String>,
    /// Namespaces to delete on drop (switch first, then hosts).
    created: Vec<String>,
}

impl Lab {
    /// A switch namespace with `br-a` and `br-b` (up), and `ports` veth
    /// ports `p1..pN` on `br-a` (up), each leading to host namespace `i` with
    /// address 10.77.0.<i>/24.
    fn new(ports: usize) -> Lab {
        require_root();
        let id = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
        let base = format!("cd{}-{}", std::process::id(), id);
        let switch = format!("{base}s");
        assert!(switch.len() <= 15, "namespace name {switch} too long");
        let mut lab = Lab { switch: switch.clone(), hosts: Vec::new(), created: Vec::new() };
        lab.add_namespace(&switch);
        lab.sw(&["link", "set", "lo", "up"]);
        for bridge in ["br-a", "br-b"] {
            lab.sw(&["link", "add", bridge, "type", "bridge"]);
            lab.sw(&["link", "set", bridge, "up"]);
        }
        for i in 1..=ports {
            let host = format!("{base}h{i}");
            assert!(host.len() <= 15, "namespace name {host} too long");
            lab.add_namespace(&host);
            let port = format!("p{i}");
            lab.sw(&["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &host]);
            lab.sw(&["link", "set", &port, "master", "br-a"]);
            lab.sw(&["link", "set", &port, "up"]);
            let address = format!("10.77.0.{i}/24");
            ip(&["-n", &host, "link", "set", "lo", "up"]);
            ip(&["-n", &host, "addr", "add", &address, "dev", "eth0"]);
            ip(&["-n", &host, "link", "set", "eth0", "up"]);
            lab.hosts.push(host);
        }
        lab
    }

    fn add_namespace(&mut self, name: &str) {
        // A leftover from a crashed run with the same pid would collide.
        let _ = run("ip", &["netns", "del", name]);
        ip(&["netns", "add", name]);
        self.created.push(name.to_string());
    }

    /// `ip -n SWITCH ARGS`.
    fn sw(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.switch.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    fn driver(&self) -> LinuxBridgeSwitch {
        LinuxBridgeSwitch::new("tor-test", Some(self.switch.clone()))
    }

    /// `ping -c N -W 1` from host `from` (1-based) to host `to`; true if
    /// any reply came back.
    fn ping(&self, from: usize, to: usize, count: u32) -> bool {
        let target = format!("10.77.0.{to}");
        let count = count.to_string();
        let output = run(
            "ip",
            &[
                "netns",
                "exec",
                &self.hosts[from - 1],
                "ping",
                "-n",
                "-q",
                "-c",
                &count,
                "-i",
                "0.2",
                "-W",
                "1",
                &target,
            ],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains("No such file") && !stderr.contains("not found"),
            "ping is missing: install iputils-ping ({stderr})"
        );
        output.status.success()
    }

    /// What `bridge -d link show dev PORT` says about the port (independent
    /// of the driver).
    fn bridge_link(&self, port: &str) -> String {
        let output = run("bridge", &["-n", &self.switch, "-d", "link", "show", "dev", port]);
        assert!(
            output.status.success(),
            "`bridge -d link show dev {port}` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in self.created.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

fn observation(port: &str, bridge: Option<&str>, isolated: bool, up: bool) -> PortObservation {
    PortObservation { port: port.to_string(), bridge: bridge.map(str::to_string), vlan: None, isolated, up }
}

/// Checks with `ip -d link show` and `bridge -d link show` (not with the
/// driver) that `port` sits on `bridge` with the given isolation.
fn assert_independently(lab: &Lab, port: &str, bridge: &str, isolated: bool) {
    let flag = if isolated { "isolated on" } else { "isolated off" };
    let ip_view = lab.sw(&["-d", "link", "show", "dev", port]);
    assert!(
        ip_view.contains(&format!("master {bridge} ")),
        "ip -d link show {port}: expected master {bridge}:\n{ip_view}"
    );
    assert!(ip_view.contains(flag), "ip -d link show {port}: expected {flag}:\n{ip_view}");
    let bridge_view = lab.bridge_link(port);
    assert!(
        bridge_view.contains(&format!("master {bridge} ")),
        "bridge -d link show {port}: expected master {bridge}:\n{bridge_view}"
    );
    assert!(bridge_view.contains(flag), "bridge -d link show {port}: expected {flag}:\n{bridge_view}");
}

#[test]
fn observe_reports_bridge_isolation_and_up() {
    let lab = Lab::new(2);
    lab.sw(&["link", "set", "p2", "type", "bridge_slave", "isolated", "on"]);
    lab.sw(&["link", "set", "p2", "down"]);
    lab.sw(&["link", "add", "lonely", "type", "veth", "peer", "name", "lonely-peer"]);
    let driver = lab.driver();
    assert_eq!(driver.kind(), "linux-bridge");
    assert_eq!(driver.switch_name(), "tor-test");

    assert_eq!(driver.observe_port("p1").expect("observe p1"), observation("p1", Some("br-a"), false, true));
    assert_eq!(driver.observe_port("p2").expect("observe p2"), observation("p2", Some("br-a"), true, false));
    assert_eq!(driver.observe_port("lonely").expect("observe lonely"), observation("lonely", None, false, false));
}

#[test]
fn ensure_moves_isolates_reads_back_and_is_idempotent() {
    let lab = Lab::new(1);
    let driver = lab.driver();

    // br-a -> br-b, isolated.
    let outcome = driver.ensure_port("p1", "br-b", true).expect("move to br-b");
    assert_eq!(outcome.before, observation("p1", Some("br-a"), false, true));
    assert_eq!(outcome.after, observation("p1", Some("br-b"), true, true));
    assert!(outcome.moved);
    assert!(outcome.isolation_changed);
    assert_independently(&lab, "p1", "br-b", true);

    // Again: nothing to do.
    let again = driver.ensure_port("p1", "br-b", true).expect("second ensure");
    assert_eq!(again.before, observation("p1", Some("br-b"), true, true));
    assert_eq!(again.after, again.before);
    assert!(!again.moved);
    assert!(!again.isolation_changed);
    assert_independently(&lab, "p1", "br-b", true);

    // Back to br-a, isolation off.
    let back = driver.ensure_port("p1", "br-a", false).expect("move back");
    assert_eq!(back.before, observation("p1", Some("br-b"), true, true));
    assert_eq!(back.after, observation("p1", Some("br-a"), false, true));
    assert!(back.moved);
    assert!(back.isolation_changed);
    assert_independently(&lab, "p1", "br-a", false);

    let noop = driver.ensure_port("p1", "br-a", false).expect("no-op");
    assert!(!noop.moved && !noop.isolation_changed);

    // Only the flag: stay on br-a, isolate, un-isolate.
    let flag = driver.ensure_port("p1", "br-a", true).expect("isolate in place");
    assert!(!flag.moved);
    assert!(flag.isolation_changed);
    assert_independently(&lab, "p1", "br-a", true);
    let flag = driver.ensure_port("p1", "br-a", false).expect("un-isolate in place");
    assert!(!flag.moved);
    assert!(flag.isolation_changed);
    assert_independently(&lab, "p1", "br-a", false);

    // Isolated on br-a, moved isolated to br-b: the flag is re-applied on
    // the new bridge (attaching resets it).
    driver.ensure_port("p1", "br-a", true).expect("isolate on br-a");
    let moved = driver.ensure_port("p1", "br-b", true).expect("move isolated");
    assert!(moved.moved);
    assert!(!moved.isolation_changed, "isolated before and after");
    assert_independently(&lab, "p1", "br-b", true);
}

#[test]
fn ensure_brings_a_moved_port_up() {
    let lab = Lab::new(1);
    lab.sw(&["link", "set", "p1", "down"]);
    let driver = lab.driver();
    let outcome = driver.ensure_port("p1", "br-b", false).expect("move");
    assert!(!outcome.before.up);
    assert!(outcome.after.up);
    assert!(outcome.moved);
    let view = lab.sw(&["link", "show", "dev", "p1"]);
    assert!(view.contains(",UP"), "p1 should be up:\n{view}");
}

#[test]
fn port_moved_by_hand_is_not_moved_again() {
    let lab = Lab::new(1);
    let driver = lab.driver();
    driver.observe_port("p1").expect("connect first");
    lab.sw(&["link", "set", "p1", "master", "br-b"]);

    let outcome = driver.ensure_port("p1", "br-b", false).expect("ensure");
    assert!(!outcome.moved);
    assert!(!outcome.isolation_changed);
    assert_eq!(outcome.before, observation("p1", Some("br-b"), false, true));
    assert_eq!(outcome.after, outcome.before);

    let outcome = driver.ensure_port("p1", "br-b", true).expect("ensure isolated");
    assert!(!outcome.moved);
    assert!(outcome.isolation_changed);
    assert_independently(&lab, "p1", "br-b", true);
}

#[test]
fn missing_port_bridge_and_namespace_are_reported() {
    let lab = Lab::new(1);
    let driver = lab.driver();

    assert_eq!(driver.observe_port("p9"), Err(DriverError::PortNotFound { port: "p9".into() }));
    let error = driver.ensure_port("p9", "br-b", true).unwrap_err();
    assert_eq!(error, DriverError::PortNotFound { port: "p9".into() });
    assert_eq!(error.message_number(), 60010);
    assert_eq!(
        driver.ensure_port("a-name-far-too-long-for-linux", "br-b", true),
        Err(DriverError::PortNotFound { port: "a-name-far-too-long-for-linux".into() })
    );

    let error = driver.ensure_port("p1", "br-zz", true).unwrap_err();
    assert_eq!(error, DriverError::BridgeNotFound { bridge: "br-zz".into() });
    assert_eq!(error.message_number(), 60010);
    assert_eq!(error.to_string(), "bridge br-zz does not exist");

    // A link that exists but is not a bridge is no bridge either.
    lab.sw(&["link", "add", "notbr", "type", "veth", "peer", "name", "notbr-peer"]);
    assert_eq!(driver.ensure_port("p1", "notbr", false), Err(DriverError::BridgeNotFound { bridge: "notbr".into() }));

    // Failed calls changed nothing, and the driver still works.
    assert_eq!(driver.observe_port("p1").expect("observe after errors"), observation("p1", Some("br-a"), false, true));
    assert_independently(&lab, "p1", "br-a", false);

    // A namespace that does not exist.
    let missing = format!("{}x", lab.switch);
    let ghost = LinuxBridgeSwitch::new("tor-ghost", Some(missing.clone()));
    let error = ghost.ensure_port("p1", "br-b", true).unwrap_err();
    match &error {
        DriverError::Namespace { netns, detail } => {
            assert_eq!(netns, &missing);
            assert!(detail.contains(&missing), "detail names the path: {detail}");
        }
        other => panic!("expected Namespace, got {other:?}"),
    }
    assert_eq!(error.message_number(), 60010);
    assert!(error.to_string().contains(&missing));
}

#[test]
fn deleted_and_recreated_namespace_is_noticed() {
    let mut lab = Lab::new(1);
    let driver = lab.driver();
    driver.ensure_port("p1", "br-b", true).expect("move in the first namespace");

    // The namespace is deleted while the driver holds a socket in it: the
    // driver must report it missing, not keep talking to the orphan.
    ip(&["netns", "del", &lab.switch]);
    let error = driver.observe_port("p1").unwrap_err();
    assert!(matches!(&error, DriverError::Namespace { netns, .. } if netns == &lab.switch), "{error:?}");

    // Created again under the same name: the driver reconnects to the new one.
    let switch = lab.switch.clone();
    lab.created.retain(|name| name != &switch);
    lab.add_namespace(&switch);
    lab.sw(&["link", "add", "br-a", "type", "bridge"]);
    lab.sw(&["link", "add", "br-b", "type", "bridge"]);
    lab.sw(&["link", "add", "p1", "type", "veth", "peer", "name", "q1"]);
    lab.sw(&["link", "set", "p1", "master", "br-a"]);
    assert_eq!(
        driver.observe_port("p1").expect("observe in the new namespace"),
        observation("p1", Some("br-a"), false, false)
    );
}

#[test]
fn isolated_ports_cannot_talk_to_each_other_but_reach_the_rest() {
    let lab = Lab::new(3);
    let driver = lab.driver();

    // Sanity: on br-a, not isolated, host 1 reaches host 2.
    assert!(lab.ping(1, 2, 3), "h1 -> h2 on br-a (not isolated) should work");

    driver.ensure_port("p1", "br-b", true).expect("p1 -> br-b isolated");
    driver.ensure_port("p2", "br-b", true).expect("p2 -> br-b isolated");
    driver.ensure_port("p3", "br-b", false).expect("p3 -> br-b open");
    assert_independently(&lab, "p1", "br-b", true);
    assert_independently(&lab, "p2", "br-b", true);
    assert_independently(&lab, "p3", "br-b", false);

    // Forget what was learnt on br-a.
    for host in &lab.hosts {
        let _ = run("ip", &["-n", host, "neigh", "flush", "all"]);
    }

    assert!(!lab.ping(1, 2, 2), "h1 -> h2: both isolated on br-b, must fail");
    assert!(!lab.ping(2, 1, 2), "h2 -> h1: both isolated on br-b, must fail");
    assert!(lab.ping(1, 3, 3), "h1 (isolated) -> h3 (not isolated) should work");
    assert!(lab.ping(2, 3, 3), "h2 (isolated) -> h3 (not isolated) should work");
    assert!(lab.ping(3, 1, 3), "h3 -> h1 should work");

    // Lifting the flag on one side is enough to let the two talk.
    let lifted = driver.ensure_port("p1", "br-b", false).expect("p1 not isolated");
    assert!(!lifted.moved && lifted.isolation_changed);
    assert!(lab.ping(1, 2, 3), "h1 (not isolated) -> h2 (isolated) should work");

    // And the networks really are separate: a host left on br-a cannot
    // reach anyone on br-b.
    driver.ensure_port("p3", "br-a", false).expect("p3 back to br-a");
    assert!(!lab.ping(3, 1, 2), "h3 on br-a -> h1 on br-b must fail");
}

#[test]
fn concurrent_ensures_on_one_driver() {
    let lab = Lab::new(3);
    let driver = Arc::new(lab.driver());
    let workers: Vec<_> = (1..=3)
        .map(|i| {
            let driver = Arc::clone(&driver);
            std::thread::spawn(move || {
                let port = format!("p{i}");
                for round in 0..20 {
                    let (bridge, isolated) = if round % 2 == 0 { ("br-b", true) } else { ("br-a", false) };
                    let outcome = driver
                        .ensure_port(&port, bridge, isolated)
                        .unwrap_or_else(|error| panic!("{port} round {round}: {error}"));
                    assert!(outcome.moved, "{port} round {round}");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker thread");
    }
    for port in ["p1", "p2", "p3"] {
        assert_independently(&lab, port, "br-a", false);
    }
}

#[test]
fn netns_none_uses_the_current_namespace() {
    let lab = Lab::new(1);
    let path = format!("/run/netns/{}", lab.switch);
    // A thread of our own enters the switch namespace; a driver created
    // there with netns = None opens its socket in that namespace.
    let result = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        // SAFETY: valid fd; only this thread's network namespace changes.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let driver = LinuxBridgeSwitch::new("tor-local", None);
        let outcome = driver.ensure_port("p1", "br-b", true)?;
        Ok::<_, DriverError>((driver.observe_port("p1")?, outcome))
    })
    .join()
    .expect("thread");
    let (observed, outcome) = result.expect("driver in current namespace");
    assert!(outcome.moved);
    assert_eq!(observed, observation("p1", Some("br-b"), true, true));
    assert_independently(&lab, "p1", "br-b", true);
}

#[test]
fn timing_of_moves() {
    let lab = Lab::new(1);
    let driver = lab.driver();
    driver.observe_port("p1").expect("connect"); // exclude namespace entry

    const ROUNDS: usize = 200;
    let mut moves = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let (bridge, isolated) = if round % 2 == 0 { ("br-b", true) } else { ("br-a", false) };
        let started = Instant::now();
        let outcome = driver.ensure_port("p1", bridge, isolated).expect("move");
        moves.push(started.elapsed());
        assert!(outcome.moved);
    }
    let mut noops = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let outcome = driver.ensure_port("p1", "br-a", false).expect("no-op");
        noops.push(started.elapsed());
        assert!(!outcome.moved);
    }
    let mut observes = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        driver.observe_port("p1").expect("observe");
        observes.push(started.elapsed());
    }
    let cold = {
        let fresh = lab.driver();
        let started = Instant::now();
        fresh.ensure_port("p1", "br-b", true).expect("cold move");
        started.elapsed()
    };
    println!("ensure_port move (with isolation change + read-back): {}", stats(&mut moves));
    println!("ensure_port no-op: {}", stats(&mut noops));
    println!("observe_port: {}", stats(&mut observes));
    println!("first call on a fresh driver (enters the namespace): {cold:?}");
}

fn stats(samples: &mut [Duration]) -> String {
    samples.sort();
    let total: Duration = samples.iter().sum();
    let mean = total / u32::try_from(samples.len()).unwrap_or(1);
    format!(
        "n={} mean={:?} median={:?} p99={:?} max={:?}",
        samples.len(),
        mean,
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
        samples[samples.len() - 1]
    )
}
