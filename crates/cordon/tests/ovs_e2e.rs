//! End to end on a real Open vSwitch: ovsdb-server and ovs-vswitchd started by the test under a
//! temporary directory (userspace datapath), namespace hosts on access ports (VLAN 10 =
//! office, VLAN 999 = quarantine), a real `cordon serve` on a configuration like the one in
//! docs/configuration.md, and the real `cordon` command.
//!
//! The lab is `crates/cordon-drivers/tests/support/ovs_lab.rs` (shared with the driver's
//! compliance test); everything is killed and deleted on drop, also when a test fails.

mod common;
#[path = "../../cordon-drivers/tests/support/ovs_lab.rs"]
mod ovs_lab;

use std::process::Output;

use common::*;
use ovs_lab::{OvsHost, OvsLab};

const SERVERS: [(&str, &str, &str, &str); 3] = [
    ("sbc-01", "02:00:00:00:01:01", "10.10.0.11", "p-sbc-01"),
    ("sbc-02", "02:00:00:00:01:02", "10.10.0.12", "p-sbc-02"),
    ("sbc-03", "02:00:00:00:01:03", "10.10.0.13", "p-sbc-03"),
];
const REMEDIATION: &str = "10.99.0.10";

/// The switch with three servers on VLAN 10 and a remediation host on VLAN 999 (not
/// protected), and the configuration for it (with `manager` keys appended to `[manager]`).
struct OvsSite {
    lab: OvsLab,
    hosts: Vec<OvsHost>,
    remediation: OvsHost,
}

impl OvsSite {
    fn up(manager_keys: &str) -> OvsSite {
        let mut lab = OvsLab::new();
        let hosts = SERVERS.iter().map(|(_, _, ip, port)| lab.add_host(port, 10, false, ip)).collect();
        let remediation = lab.add_host("p-rem", 999, false, REMEDIATION);
        let mut config = format!(
            r#"[manager]
listen = "127.0.0.1:0"
data_dir = "{data}"
{manager_keys}

[[network]]
name = "office"
role = "operational"
vlan = 10
subnet = "10.10.0.0/24"
quarantine_network = "quarantine"

[[network]]
name = "quarantine"
role = "quarantine"
vlan = 999
subnet = "10.99.0.0/24"
pool = "10.99.0.100-10.99.0.199"

[[switch]]
name = "ovs-1"
driver = "ovs"
ovsdb = "{ovsdb}"
bridge = "{bridge}"
"#,
            data = lab.dir.path().join("data").display(),
            ovsdb = lab.ovsdb(),
            bridge = lab.bridge,
        );
        for (name, mac, ip, port) in SERVERS {
            config.push_str(&format!(
                "\n[[server]]\nname = \"{name}\"\nkind = \"physical\"\n[[server.nic]]\nmac = \"{mac}\"\n\
                 network = \"office\"\nip = \"{ip}\"\nswitch = \"ovs-1\"\nport = \"{port}\"\n"
            ));
        }
        std::fs::write(lab.dir.path().join("cordon.toml"), config).unwrap();
        OvsSite { lab, hosts, remediation }
    }

    fn manager(&self) -> Manager {
        Manager::start(&self.lab.dir.path().join("cordon.toml"), &self.lab.dir.path().join("data"))
    }

    fn host(&self, server: &str) -> &OvsHost {
        let index = SERVERS.iter().position(|(name, ..)| *name == server).unwrap();
        &self.hosts[index]
    }

    fn ping(&self, server: &str, address: &str) -> bool {
        ovs_lab::ping(&self.host(server).netns, address)
    }

    /// What the administrator does in the guest: give eth0 this one address.
    fn set_address(&self, server: &str, address: &str) {
        let netns = &self.host(server).netns;
        run("ip", &["-n", netns, "addr", "flush", "dev", "eth0"]);
        run("ip", &["-n", netns, "addr", "add", &format!("{address}/24"), "dev", "eth0"]);
    }

    /// (tag, protected) of a server's port, read with ovs-vsctl independently of Cordon.
    fn port(&self, server: &str) -> (Option<u16>, bool) {
        self.lab.port_state(&self.host(server).port)
    }
}

fn in_pool(address: &str) -> bool {
    let last: u8 = address.strip_prefix("10.99.0.").and_then(|x| x.parse().ok()).unwrap_or(0);
    (100..=199).contains(&last)
}

fn newest_action(manager: &Manager) -> serde_json::Value {
    let id = manager.json(&["actions", "list", "-o", "json"])[0]["id"].as_i64().unwrap().to_string();
    manager.json(&["actions", "show", &id, "-o", "json"])
}

fn queued_id(out: &Output) -> String {
    let text = stdout(out);
    let id = text.lines().find_map(|line| line.split_once(" queued as action ").map(|(_, id)| id.trim().to_string()));
    id.unwrap_or_else(|| panic!("no action id in {text:?} {}", stderr(out)))
}

#[test]
fn ovs_quarantine_retags_isolates_and_unquarantine_restores() {
    let site = OvsSite::up("");
    let manager = site.manager();
    assert!(site.ping("sbc-01", "10.10.0.12"), "A reaches B on VLAN 10 before anything happens");
    assert!(!site.ping("sbc-01", REMEDIATION), "the remediation VLAN is separate");

    let out = manager.cordon(&["quarantine", "sbc-01", "--reason", "ovs e2e", "--wait"]);
    assert!(out.status.success(), "quarantine A: {}{}\n{}", stdout(&out), stderr(&out), manager.log());
    let a = manager.json(&["servers", "show", "sbc-01", "-o", "json"]);
    assert_eq!((a["state"].as_str(), a["network"].as_str()), (Some("quarantined"), Some("quarantine")));
    let a_ip = a["ip"].as_str().unwrap().to_string();
    assert!(in_pool(&a_ip), "{a_ip}");
    assert_eq!(site.port("sbc-01"), (Some(999), true), "tag 999 and protected, read with ovs-vsctl");
    let shown = newest_action(&manager);
    let port_step = step(&shown, "ensure_port_on_bridge");
    assert_eq!(port_step["outcome"], "done", "{shown:#}");
    assert!(
        port_step["detail"].as_str().unwrap().contains("vlan 10")
            && port_step["detail"].as_str().unwrap().contains("vlan 999"),
        "{port_step}"
    );
    assert!(shown["message"]["text"].as_str().unwrap().contains("vlan 999"), "{shown:#}");

    // Still holding its office address, A cannot reach B: its port left VLAN 10.
    assert!(!site.ping("sbc-01", "10.10.0.12"), "A is cut off from office at layer 2");
    site.set_address("sbc-01", &a_ip);
    assert!(site.ping("sbc-01", REMEDIATION), "A reaches the remediation host");
    assert!(!site.ping("sbc-01", "10.10.0.12"), "A no longer reaches B");

    // A second quarantined server cannot reach the first (both ports protected).
    let out = manager.cordon(&["quarantine", "sbc-03", "--wait"]);
    assert!(out.status.success(), "quarantine C: {}", stderr(&out));
    let c_ip = manager.json(&["servers", "show", "sbc-03", "-o", "json"])["ip"].as_str().unwrap().to_string();
    assert_ne!(c_ip, a_ip);
    site.set_address("sbc-03", &c_ip);
    assert!(site.ping("sbc-03", REMEDIATION), "C reaches the remediation host");
    assert!(!site.ping("sbc-03", &a_ip), "C cannot reach A: quarantined ports are protected");
    assert!(!site.ping("sbc-01", &c_ip), "nor A C");

    // Release A: VLAN 10, not protected, office address, B reachable again.
    let out = manager.cordon(&["unquarantine", "sbc-01", "--wait"]);
    assert!(out.status.success(), "unquarantine A: {}", stderr(&out));
    let a = manager.json(&["servers", "show", "sbc-01", "-o", "json"]);
    assert_eq!((a["state"].as_str(), a["ip"].as_str()), (Some("operational"), Some("10.10.0.11")));
    assert_eq!(site.port("sbc-01"), (Some(10), false));
    site.set_address("sbc-01", "10.10.0.11");
    assert!(site.ping("sbc-01", "10.10.0.12"), "A reaches B again");
    assert!(!site.ping("sbc-01", REMEDIATION), "and no longer the quarantine VLAN");
    assert!(site.ping("sbc-03", REMEDIATION), "C is still quarantined");
    let _ = &site.remediation;
}

#[test]
fn ovs_resync_after_a_tag_was_changed_by_hand() {
    let site = OvsSite::up("");
    let manager = site.manager();

    // The operator retagged B's port by hand before Cordon acted ...
    site.lab.set_by_hand("p-sbc-02", 999, true);
    // ... then runs `cordon quarantine` so that the records match: recorded, not changed again.
    let out = manager.cordon(&["quarantine", "sbc-02", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = newest_action(&manager);
    assert_eq!(step(&shown, "ensure_port_on_bridge")["outcome"], "already_in_place", "{shown:#}");
    assert!(shown["messages"].as_array().unwrap().iter().any(|m| m["number"] == 21005), "{shown:#}");
    assert!(shown["message"]["text"].as_str().unwrap().contains("already there"), "{shown:#}");
    assert_eq!(site.port("sbc-02"), (Some(999), true));

    // The reverse: back by hand, then `cordon unquarantine`.
    site.lab.set_by_hand("p-sbc-02", 10, false);
    let out = manager.cordon(&["unquarantine", "sbc-02", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = newest_action(&manager);
    assert_eq!(step(&shown, "ensure_port_on_bridge")["outcome"], "already_in_place", "{shown:#}");
    let b = manager.json(&["servers", "show", "sbc-02", "-o", "json"]);
    assert_eq!((b["state"].as_str(), b["network"].as_str()), (Some("operational"), Some("office")));
    assert!(site.ping("sbc-02", "10.10.0.11"));

    // Drift: a tag changed by hand behind Cordon's back is found by `cordon reconcile`.
    site.lab.set_by_hand("p-sbc-01", 999, false);
    let out = manager.cordon(&["reconcile"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("sbc-01") && text.contains("vlan 999"), "reconcile reports the drift: {text}");
}

#[test]
fn ovsdb_down_fails_60050_and_retry_succeeds() {
    let mut site = OvsSite::up("max_attempts = 1\nreconcile_interval = \"1h\"");
    let manager = site.manager();

    site.lab.stop_ovsdb();
    let out = manager.cordon(&["quarantine", "sbc-01", "--reason", "ovsdb down", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "must fail: {}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("60050"), "--wait names 60050: {}{}", stdout(&out), stderr(&out));
    let id = queued_id(&out);
    let action = manager.json(&["actions", "show", &id, "-o", "json"]);
    assert_eq!(action["state"], "failed", "{action:#}");
    assert_eq!(action["message"]["number"], 60050, "{action:#}");
    let port_step = step(&action, "ensure_port_on_bridge");
    assert_eq!(port_step["message_number"], 60050, "{action:#}");
    assert!(port_step["detail"].as_str().unwrap().contains("db.sock"), "names the OVSDB address: {port_step}");

    // Back: `cordon actions retry` completes it.
    site.lab.start_ovsdb();
    let out = manager.cordon(&["actions", "retry", &id, "--wait", "--timeout", "60"]);
    assert!(out.status.success(), "retry: {}{}\n{}", stdout(&out), stderr(&out), manager.log());
    let action = manager.json(&["actions", "show", &id, "-o", "json"]);
    assert_eq!((action["state"].as_str(), action["attempts"].as_u64()), (Some("succeeded"), Some(2)), "{action:#}");
    assert_eq!(site.port("sbc-01"), (Some(999), true));
}

#[test]
fn ovsdb_down_is_retried_automatically() {
    let mut site = OvsSite::up("max_attempts = 5\nretry_backoff = \"1s\"\nreconcile_interval = \"1h\"");
    let manager = site.manager();

    site.lab.stop_ovsdb();
    let out = manager.cordon(&["quarantine", "sbc-02", "--reason", "ovsdb down"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = queued_id(&out);
    // The first attempt fails with 60050 and the action waits for its retry (41008).
    manager.wait_until(30, "a retry scheduled after 60050", |m| {
        let action = m.json(&["actions", "show", &id, "-o", "json"]);
        action["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|msg| msg["number"] == 41008 && msg["text"].as_str().is_some_and(|text| text.contains("60050")))
    });
    site.lab.start_ovsdb();
    manager.wait_until(60, "the automatic retry to succeed", |m| {
        m.json(&["actions", "show", &id, "-o", "json"])["state"] == "succeeded"
    });
    let action = manager.json(&["actions", "show", &id, "-o", "json"]);
    assert!(action["attempts"].as_u64().unwrap() >= 2, "{action:#}");
    assert_eq!(site.port("sbc-02"), (Some(999), true));
}

#[test]
fn ovs_status_checks_the_switch() {
    let mut site = OvsSite::up("");
    let manager = site.manager();
    let out = manager.cordon(&["status"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ovs-1") && text.contains("reachable"), "{text}");
    site.lab.stop_ovsdb();
    let out = manager.cordon(&["status"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("ovs-1") && text.contains("db.sock"), "the unreachable OVSDB is named: {text}");
}
