//! The switch-driver compliance test: ONE scenario, written against `dyn SwitchDriver`, run on
//! a real instance of every switch driver (`linux-bridge` on Linux bridges in a namespace,
//! `ovs` on an Open vSwitch started for the test). It checks the MUSTs of `docs/drivers.md`
//! ("Driver contract"): idempotent apply, read-back, what `moved`/`isolation_changed` mean,
//! resync (a port already moved by hand is reported, not moved again), isolation inside the
//! quarantine segment (proved with ping between host namespaces), numbered errors for a
//! missing port, a segment of the wrong kind and an unreachable switch, and recovery once the
//! switch is back.
//!
//! Must run as root; fails, never skips, otherwise.

#[path = "support/ovs_lab.rs"]
mod ovs_lab;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use cordon_drivers::{DriverError, LinuxBridgeSwitch, OvsSwitch, Segment, SegmentKind, SwitchDriver};

/// What the scenario needs from a lab, whatever the driver.
trait Fixture {
    fn driver(&self) -> &dyn SwitchDriver;
    /// The operational segment (where every port starts) and the quarantine segment.
    fn segments(&self) -> (Segment, Segment);
    /// Where `port` is and whether it is isolated, read without the driver.
    fn read_by_hand(&self, port: &str) -> (Segment, bool);
    /// Moves `port` without the driver (an operator at the switch).
    fn move_by_hand(&self, port: &str, segment: &Segment, isolated: bool);
    /// Whether host `from` (1-based, behind port `p<from>`) reaches host `to`.
    fn reaches(&self, from: usize, to: usize) -> bool;
    /// Makes the switch unreachable for the driver.
    fn break_switch(&mut self);
    /// Undoes [`Fixture::break_switch`], if the switch can come back (`false` if not).
    fn repair_switch(&mut self) -> bool;
    /// The number a missing port is reported with.
    fn missing_port_number(&self) -> u32;
    /// The number an unreachable switch is reported with.
    fn unreachable_number(&self) -> u32;
}

/// The catalogue of numbered messages: every driver error must be one of them.
fn catalogued(number: u32) -> bool {
    cordon_model::Message::find(number).is_some()
}

fn compliance(fixture: &mut dyn Fixture) {
    let (operational, quarantine) = fixture.segments();
    let kind = fixture.driver().segment_kind();
    let other_kind = match kind {
        SegmentKind::Bridge => Segment::Vlan(42),
        SegmentKind::Vlan => Segment::Bridge("br-x".into()),
    };
    let name = fixture.driver().kind();

    // observe_port changes nothing and reports the real place.
    let first = fixture.driver().observe_port("p1").expect("observe p1");
    assert!(first.is_on(&operational), "{name}: p1 starts on {operational}: {first:?}");
    assert!(!first.isolated, "{name}: {first:?}");
    assert_eq!(fixture.driver().observe_port("p1").expect("observe again"), first, "{name}");
    assert_eq!(fixture.read_by_hand("p1"), (operational.clone(), false), "{name}: observe changed nothing");
    assert!(fixture.reaches(1, 2) && fixture.reaches(1, 4), "{name}: one operational segment at start");

    // Apply: moved and isolated, read back, and the switch agrees when read by hand.
    let outcome = fixture.driver().ensure_port("p1", &quarantine, true).expect("quarantine p1");
    assert!(outcome.moved && outcome.isolation_changed, "{name}: {outcome:?}");
    assert_eq!(outcome.before, first, "{name}: before is the observation before the change");
    assert!(outcome.after.is_on(&quarantine) && outcome.after.isolated, "{name}: {outcome:?}");
    assert_eq!(fixture.read_by_hand("p1"), (quarantine.clone(), true), "{name}: the switch agrees");
    assert_eq!(fixture.driver().observe_port("p1").expect("observe"), outcome.after, "{name}");

    // Idempotent: the same request changes nothing and says so.
    let again = fixture.driver().ensure_port("p1", &quarantine, true).expect("again");
    assert!(!again.moved && !again.isolation_changed, "{name}: {again:?}");
    assert_eq!(again.before, again.after, "{name}");

    // Isolation: p2 quarantined too, p3 the remediation host on the quarantine segment, not
    // isolated; p4 stays operational.
    fixture.driver().ensure_port("p2", &quarantine, true).expect("quarantine p2");
    let remediation = fixture.driver().ensure_port("p3", &quarantine, false).expect("p3 remediation");
    assert!(remediation.moved && !remediation.isolation_changed, "{name}: {remediation:?}");
    assert!(!fixture.reaches(1, 2), "{name}: two quarantined ports must not reach each other");
    assert!(fixture.reaches(1, 3) && fixture.reaches(2, 3), "{name}: quarantined ports reach remediation");
    assert!(!fixture.reaches(1, 4), "{name}: a quarantined port must not reach the operational segment");

    // Isolation alone changes in place.
    let lifted = fixture.driver().ensure_port("p2", &quarantine, false).expect("lift p2");
    assert!(!lifted.moved && lifted.isolation_changed, "{name}: {lifted:?}");
    assert!(fixture.reaches(1, 2), "{name}: an isolated port reaches a non-isolated one");

    // Back: everything restored.
    for port in ["p1", "p2", "p3"] {
        let back = fixture.driver().ensure_port(port, &operational, false).expect("restore");
        assert!(back.moved, "{name}: {back:?}");
    }
    assert!(fixture.reaches(1, 2) && fixture.reaches(1, 4) && fixture.reaches(3, 4), "{name}: restored");

    // Resync: moved by hand first; the driver records it (moved = false) and changes nothing.
    fixture.move_by_hand("p4", &quarantine, true);
    let resync = fixture.driver().ensure_port("p4", &quarantine, true).expect("resync");
    assert!(!resync.moved && !resync.isolation_changed, "{name}: {resync:?}");
    assert!(resync.before.is_on(&quarantine) && resync.before.isolated, "{name}: {resync:?}");
    // Half by hand: on the segment but not isolated; only the flag is written.
    fixture.move_by_hand("p4", &operational, true);
    let half = fixture.driver().ensure_port("p4", &operational, false).expect("flag only");
    assert!(!half.moved && half.isolation_changed, "{name}: {half:?}");
    assert_eq!(fixture.read_by_hand("p4"), (operational.clone(), false), "{name}");

    // Numbered errors, nothing changed.
    let missing = fixture.driver().ensure_port("p9", &quarantine, true).expect_err("missing port");
    assert_eq!(missing.message_number(), fixture.missing_port_number(), "{name}: {missing}");
    let observe_missing = fixture.driver().observe_port("p9").expect_err("observe missing port");
    assert_eq!(observe_missing.message_number(), fixture.missing_port_number(), "{name}: {observe_missing}");
    let wrong = fixture.driver().ensure_port("p1", &other_kind, true).expect_err("wrong segment kind");
    assert!(matches!(wrong, DriverError::WrongSegment { .. }), "{name}: {wrong}");
    assert_eq!(fixture.read_by_hand("p1"), (operational.clone(), false), "{name}: refused requests change nothing");
    for error in [&missing, &observe_missing, &wrong] {
        assert!(catalogued(error.message_number()), "{name}: {error} has no catalogued number");
    }

    // Unreachable switch: numbered error from every call; back: the same driver works again.
    fixture.break_switch();
    let down = fixture.driver().ensure_port("p1", &quarantine, true).expect_err("switch down");
    assert_eq!(down.message_number(), fixture.unreachable_number(), "{name}: {down}");
    let down = fixture.driver().observe_port("p1").expect_err("switch down");
    assert_eq!(down.message_number(), fixture.unreachable_number(), "{name}: {down}");
    assert!(catalogued(down.message_number()), "{name}");
    if fixture.repair_switch() {
        let back = fixture.driver().ensure_port("p1", &quarantine, true).expect("switch back");
        assert!(back.moved, "{name}: {back:?}");
    }
}

// ---------------------------------------------------------------- linux-bridge

static LB_COUNTER: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> String {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(output.status.success(), "`ip {}`: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

struct BridgeLab {
    switch: String,
    hosts: Vec<String>,
    driver: LinuxBridgeSwitch,
}

impl BridgeLab {
    fn new(ports: usize) -> BridgeLab {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "must run as root");
        let base = format!("cov{}-c{}", std::process::id(), LB_COUNTER.fetch_add(1, Ordering::SeqCst));
        let switch = format!("{base}s");
        let _ = Command::new("ip").args(["netns", "del", &switch]).output();
        ip(&["netns", "add", &switch]);
        let mut lab =
            BridgeLab { driver: LinuxBridgeSwitch::new("tor-compliance", Some(switch.clone())), switch, hosts: vec![] };
        for bridge in ["br-office", "br-quar"] {
            ip(&["-n", &lab.switch, "link", "add", bridge, "type", "bridge"]);
            ip(&["-n", &lab.switch, "link", "set", bridge, "up"]);
        }
        for i in 1..=ports {
            let host = format!("{base}h{i}");
            let _ = Command::new("ip").args(["netns", "del", &host]).output();
            ip(&["netns", "add", &host]);
            lab.hosts.push(host.clone());
            let port = format!("p{i}");
            ip(&["-n", &lab.switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &host]);
            ip(&["-n", &lab.switch, "link", "set", &port, "master", "br-office", "up"]);
            ip(&["-n", &host, "addr", "add", &format!("10.77.0.{i}/24"), "dev", "eth0"]);
            ip(&["-n", &host, "link", "set", "eth0", "up"]);
        }
        lab
    }
}

impl Drop for BridgeLab {
    fn drop(&mut self) {
        for name in std::iter::once(&self.switch).chain(self.hosts.iter()) {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

impl Fixture for BridgeLab {
    fn driver(&self) -> &dyn SwitchDriver {
        &self.driver
    }
    fn segments(&self) -> (Segment, Segment) {
        (Segment::Bridge("br-office".into()), Segment::Bridge("br-quar".into()))
    }
    fn read_by_hand(&self, port: &str) -> (Segment, bool) {
        let details = ip(&["-n", &self.switch, "-d", "link", "show", "dev", port]);
        let master = details
            .split_whitespace()
            .skip_while(|word| *word != "master")
            .nth(1)
            .expect("port has a master")
            .to_string();
        (Segment::Bridge(master), details.contains("isolated on"))
    }
    fn move_by_hand(&self, port: &str, segment: &Segment, isolated: bool) {
        let Segment::Bridge(bridge) = segment else { panic!("not a bridge") };
        ip(&["-n", &self.switch, "link", "set", port, "master", bridge]);
        let flag = if isolated { "on" } else { "off" };
        let output = Command::new("bridge")
            .args(["-n", &self.switch, "link", "set", "dev", port, "isolated", flag])
            .output()
            .expect("run bridge");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    fn reaches(&self, from: usize, to: usize) -> bool {
        ovs_lab::ping(&self.hosts[from - 1], &format!("10.77.0.{to}"))
    }
    fn break_switch(&mut self) {
        ip(&["netns", "del", &self.switch]);
    }
    fn repair_switch(&mut self) -> bool {
        false
    }
    fn missing_port_number(&self) -> u32 {
        60010
    }
    fn unreachable_number(&self) -> u32 {
        60010
    }
}

#[test]
fn linux_bridge_complies() {
    let mut lab = BridgeLab::new(4);
    compliance(&mut lab);
}

// ---------------------------------------------------------------- ovs

struct OvsFixture {
    lab: ovs_lab::OvsLab,
    driver: OvsSwitch,
}

impl Fixture for OvsFixture {
    fn driver(&self) -> &dyn SwitchDriver {
        &self.driver
    }
    fn segments(&self) -> (Segment, Segment) {
        (Segment::Vlan(10), Segment::Vlan(999))
    }
    fn read_by_hand(&self, port: &str) -> (Segment, bool) {
        let (tag, protected) = self.lab.port_state(port);
        (Segment::Vlan(tag.expect("port has a tag")), protected)
    }
    fn move_by_hand(&self, port: &str, segment: &Segment, isolated: bool) {
        let Segment::Vlan(tag) = segment else { panic!("not a vlan") };
        self.lab.set_by_hand(port, *tag, isolated);
    }
    fn reaches(&self, from: usize, to: usize) -> bool {
        self.lab.reaches(&self.lab.hosts[from - 1], &self.lab.hosts[to - 1])
    }
    fn break_switch(&mut self) {
        self.lab.stop_ovsdb();
    }
    fn repair_switch(&mut self) -> bool {
        self.lab.start_ovsdb();
        true
    }
    fn missing_port_number(&self) -> u32 {
        60051
    }
    fn unreachable_number(&self) -> u32 {
        60050
    }
}

#[test]
fn ovs_complies() {
    let mut lab = ovs_lab::OvsLab::new();
    for i in 1..=4 {
        lab.add_host(&format!("p{i}"), 10, false, &format!("10.77.0.{i}"));
    }
    let driver = OvsSwitch::new("ovs-compliance", lab.ovsdb().parse().expect("address"), lab.bridge.clone());
    let mut fixture = OvsFixture { lab, driver };
    compliance(&mut fixture);
}
