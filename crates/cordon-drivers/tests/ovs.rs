//! The `ovs` driver's own cases on a real Open vSwitch, beyond the shared compliance test
//! (`switch_compliance.rs`): a concurrent change raced in between the driver's read and write
//! (60052, nothing applied), ovs-vswitchd down (60054 after the apply timeout; the next call
//! completes once it is back), the OVSDB over TCP, a missing bridge and a port on another
//! bridge (60051), and OVSDB servers that answer garbage (60053) or nothing at all (60050).
//!
//! Must run as root; fails, never skips, otherwise.

#[path = "support/ovs_lab.rs"]
mod ovs_lab;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::Duration;

use cordon_drivers::{DriverError, OvsSwitch, OvsdbAddress, Segment, SwitchDriver};

fn lab_with_ports(ports: usize) -> ovs_lab::OvsLab {
    let mut lab = ovs_lab::OvsLab::new();
    for i in 1..=ports {
        lab.add_host(&format!("p{i}"), 10, false, &format!("10.77.0.{i}"));
    }
    lab
}

fn driver(lab: &ovs_lab::OvsLab) -> OvsSwitch {
    OvsSwitch::new("ovs-test", lab.ovsdb().parse().unwrap(), lab.bridge.clone())
}

#[test]
fn a_change_raced_in_between_read_and_write_is_a_conflict() {
    let lab = lab_with_ports(1);
    let (db, dir) = (lab.ovsdb(), lab.dir.path().to_path_buf());
    let racing = driver(&lab).with_hook_before_write(move |port| {
        // Another manager (or an operator) retags the port right after Cordon read it.
        let status = Command::new("ovs-vsctl")
            .env("OVS_RUNDIR", &dir)
            .args([&format!("--db={db}"), "set", "Port", port, "tag=77"])
            .status()
            .unwrap();
        assert!(status.success());
    });
    let error = racing.ensure_port("p1", &Segment::Vlan(999), true).unwrap_err();
    assert!(matches!(error, DriverError::OvsConflict { .. }), "{error}");
    assert_eq!(error.message_number(), 60052);
    assert!(error.to_string().contains("p1"), "{error}");
    // Nothing of Cordon's transaction was applied: the racing change stands alone.
    assert_eq!(lab.port_state("p1"), (Some(77), false));
    // Without the race, the same request goes through.
    let outcome = driver(&lab).ensure_port("p1", &Segment::Vlan(999), true).unwrap();
    assert!(outcome.moved && outcome.before.vlan == Some(77), "{outcome:?}");
    assert_eq!(lab.port_state("p1"), (Some(999), true));
}

#[test]
fn vswitchd_down_is_not_applied_and_completed_once_back() {
    let mut lab = lab_with_ports(1);
    let quick = driver(&lab).with_timeouts(Duration::from_secs(2), Duration::from_millis(500));
    lab.stop_vswitchd();
    let error = quick.ensure_port("p1", &Segment::Vlan(999), true).unwrap_err();
    assert!(matches!(error, DriverError::OvsNotApplied { .. }), "{error}");
    assert_eq!(error.message_number(), 60054);
    assert!(error.to_string().contains("cur_cfg"), "{error}");
    // The database holds the change; the next call sees it in place but still waits for
    // ovs-vswitchd before calling it done.
    assert_eq!(lab.port_state("p1"), (Some(999), true));
    let again = quick.ensure_port("p1", &Segment::Vlan(999), true).unwrap_err();
    assert_eq!(again.message_number(), 60054, "{again}");
    lab.restart_vswitchd();
    let done = quick.ensure_port("p1", &Segment::Vlan(999), true).unwrap();
    assert!(!done.moved && !done.isolation_changed, "{done:?}");
    let next = lab.vsctl(&["get", "Open_vSwitch", ".", "next_cfg"]);
    let cur = lab.vsctl(&["get", "Open_vSwitch", ".", "cur_cfg"]);
    assert!(cur.parse::<i64>().unwrap() >= next.parse::<i64>().unwrap(), "applied: cur_cfg {cur}, next_cfg {next}");
}

#[test]
fn tcp_missing_bridge_and_foreign_port() {
    let lab = lab_with_ports(1);
    let tcp = lab.add_tcp_remote();
    let over_tcp = OvsSwitch::new("ovs-tcp", tcp.parse().unwrap(), lab.bridge.clone());
    let outcome = over_tcp.ensure_port("p1", &Segment::Vlan(20), false).unwrap();
    assert!(outcome.moved && outcome.after.vlan == Some(20), "{outcome:?}");
    assert_eq!(over_tcp.observe_port("p1").unwrap().vlan, Some(20));

    let no_bridge = OvsSwitch::new("ovs-x", lab.ovsdb().parse().unwrap(), "cov-nobr");
    let error = no_bridge.observe_port("p1").unwrap_err();
    assert_eq!(error.message_number(), 60051, "{error}");
    assert!(error.to_string().contains("bridge cov-nobr does not exist"), "{error}");

    // A port on another bridge of the same switch is not this driver's.
    let other = format!("{}x", &lab.bridge[..lab.bridge.len().min(13)]);
    lab.vsctl(&["add-br", &other, "--", "set", "bridge", &other, "datapath_type=netdev"]);
    lab.vsctl(&["add-port", &other, "q1", "--", "set", "Interface", "q1", "type=internal"]);
    let error = driver(&lab).ensure_port("q1", &Segment::Vlan(999), true).unwrap_err();
    assert_eq!(error.message_number(), 60051, "{error}");
    assert!(error.to_string().contains("not a port of bridge"), "{error}");
    assert_eq!(lab.port_state("q1"), (None, false), "nothing changed");
}

/// A Unix-socket "OVSDB" that answers every request with `reply` (or never, if `None`).
fn fake_server(dir: &std::path::Path, reply: Option<&'static [u8]>) -> OvsdbAddress {
    let path = dir.join("fake.sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buffer) {
                    if n == 0 {
                        return;
                    }
                    if let Some(reply) = reply {
                        let _ = stream.write_all(reply);
                    }
                }
            });
        }
    });
    OvsdbAddress::Unix(path)
}

#[test]
fn malformed_and_silent_servers() {
    let cases: [(&[u8], &str); 4] = [
        (b"[1, 2, 3]", "other than a JSON object"),
        (b"{\"id\": 1, \"result\": {\"not\": \"an array\"}, \"error\": null}", "not an array"),
        (b"{\"id\": 1, \"result\": [], \"error\": null}", "results for"),
        (b"{\"id\": 1, \"result\": null, \"error\": {\"error\": \"unknown database\"}}", "unknown database"),
    ];
    for (reply, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let address = fake_server(dir.path(), Some(reply));
        let driver = OvsSwitch::new("ovs-fake", address, "br-int");
        let error = driver.observe_port("p1").unwrap_err();
        assert_eq!(error.message_number(), 60053, "{error}");
        assert!(error.to_string().contains(expected), "{expected}: {error}");
    }
    // A server that accepts and never answers: the call ends at the timeout.
    let dir = tempfile::tempdir().unwrap();
    let silent = fake_server(dir.path(), None);
    let driver = OvsSwitch::new("ovs-silent", silent, "br-int")
        .with_timeouts(Duration::from_millis(300), Duration::from_millis(300));
    let error = driver.ensure_port("p1", &Segment::Vlan(999), true).unwrap_err();
    assert_eq!(error.message_number(), 60050, "{error}");
    assert!(error.to_string().contains("no answer"), "{error}");
    // Nothing listens at all.
    let gone = OvsSwitch::new("ovs-gone", OvsdbAddress::Unix(dir.path().join("none.sock")), "br-int");
    let error = gone.observe_port("p1").unwrap_err();
    assert_eq!(error.message_number(), 60050, "{error}");
    assert!(error.to_string().contains("none.sock"), "names the address: {error}");
}

/// Prints what a move and a no-op cost on this machine (`-- --nocapture`); asserts no timing.
#[test]
fn timings() {
    let lab = lab_with_ports(1);
    let driver = driver(&lab);
    let (mut moves, mut noops) = (Vec::new(), Vec::new());
    for round in 0..20 {
        let (tag, isolated) = if round % 2 == 0 { (999, true) } else { (10, false) };
        let clock = std::time::Instant::now();
        assert!(driver.ensure_port("p1", &Segment::Vlan(tag), isolated).unwrap().moved);
        moves.push(clock.elapsed());
        let clock = std::time::Instant::now();
        assert!(!driver.ensure_port("p1", &Segment::Vlan(tag), isolated).unwrap().moved);
        noops.push(clock.elapsed());
    }
    moves.sort();
    noops.sort();
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    println!(
        "ovs: move median {} (max {}), no-op median {} (max {}), 20 rounds",
        ms(moves[10]),
        ms(moves[19]),
        ms(noops[10]),
        ms(noops[19])
    );
}
