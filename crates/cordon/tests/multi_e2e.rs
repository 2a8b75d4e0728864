//! Several managers on one PostgreSQL database, on the real lab with the real binary: two
//! `cordon serve` instances (`cpg-a`, `cpg-b`) share a database on a private PostgreSQL 15 that
//! this test binary starts (`crates/cordon-store/tests/support/postgres.rs`).
//!
//! 1. Detections go to both instances (each has its own EVE source): every server is
//!    quarantined by exactly one action, executed once, and each detection names the instance
//!    that received it. `cordon status` lists both instances, live.
//! 2. A batch of quarantine actions, requested through both instances, is held in the middle:
//!    the test locks the NIC rows, so every worker stops after moving its port and before
//!    recording it, with its action `running` under that instance's lease. The instance holding
//!    the most leases is killed with SIGKILL and the lock released; the other instance takes the
//!    orphaned actions over once their lease expires and finishes them from their journals.
//!    Afterwards every action succeeded, the records equal the switch, and the test prints how
//!    long the takeover took (run it with `--nocapture` to see it).

mod common;

#[path = "../../cordon-store/tests/support/postgres.rs"]
mod postgres;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SERVERS: [(&str, &str, &str); 3] =
    [("sbc-01", "p-sbc-01", "10.10.0.11"), ("sbc-02", "p-sbc-02", "10.10.0.12"), ("sbc-03", "p-sbc-03", "10.10.0.13")];

/// Short, so that the takeover happens within seconds.
const ACTION_LEASE_SECS: u64 = 3;

fn eve_alert(subject: &str, sid: u32) -> String {
    format!(
        r#"{{"timestamp":"2026-11-27T10:00:00.000000+0000","flow_id":{sid},"in_iface":"eth0","event_type":"alert","src_ip":"{subject}","src_port":40000,"dest_ip":"203.0.113.5","dest_port":80,"proto":"TCP","alert":{{"action":"allowed","gid":1,"signature_id":{sid},"rev":1,"signature":"CORDON MULTI {sid}","category":"A Network Trojan was detected","severity":1}}}}"#
    ) + "\n"
}

/// The lab's configuration for one instance: its name, its own data folder and EVE source, the
/// shared database, and a policy that quarantines on serious alerts from either source.
fn instance_config(lab: &Lab, name: &str, database: &str) -> (PathBuf, PathBuf) {
    let folder = lab.dir.path().join(name);
    std::fs::create_dir_all(&folder).unwrap();
    let data = folder.join("data");
    let eve = folder.join("eve.json");
    std::fs::write(&eve, "").unwrap();
    let base = std::fs::read_to_string(lab.config()).unwrap();
    let mut lines: Vec<String> = base
        .lines()
        .map(|line| {
            if line.starts_with("data_dir =") { format!("data_dir = \"{}\"", data.display()) } else { line.to_string() }
        })
        .collect();
    let manager = lines.iter().position(|l| l == "[manager]").expect("[manager] in the lab's configuration");
    lines.insert(manager + 1, format!("instance = \"{name}\""));
    lines.insert(manager + 2, format!("database = \"{database}\""));
    lines.insert(manager + 3, format!("action_lease = \"{ACTION_LEASE_SECS}s\""));
    let source = if name.ends_with('a') { "ids-a" } else { "ids-b" };
    let config = lines.join("\n")
        + &format!(
            "\n\n[[source]]\nname = \"{source}\"\ntype = \"suricata-eve\"\npath = \"{}\"\n\n[policy]\ndefault_action = \"notify\"\n\n\
             [[policy.rule]]\nname = \"serious\"\nmin_severity = \"high\"\naction = \"quarantine\"\nmode = \"auto\"\n",
            eve.display()
        );
    let path = folder.join("cordon.toml");
    std::fs::write(&path, config).unwrap();
    (path, data)
}

fn post_eve(http: &reqwest::blocking::Client, manager: &Manager, source: &str, body: String) {
    let token = std::fs::read_to_string(&manager.token_file).unwrap();
    let response = http
        .post(format!("{}/api/v1/sources/{source}/eve", manager.url))
        .bearer_auth(token.trim())
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 202, "{}", response.text().unwrap_or_default());
}

/// `POST /api/v1/servers/SERVER/quarantine|unquarantine` through `manager`; the new action's id.
fn act(http: &reqwest::blocking::Client, manager: &Manager, verb: &str, server: &str) -> i64 {
    let token = std::fs::read_to_string(&manager.token_file).unwrap();
    let response = http
        .post(format!("{}/api/v1/servers/{server}/{verb}", manager.url))
        .bearer_auth(token.trim())
        .json(&serde_json::json!({"reason": "multi-instance test"}))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 202, "{verb} {server}");
    response.json::<serde_json::Value>().unwrap()["action"]["id"].as_i64().unwrap()
}

fn state_of(manager: &Manager, server: &str) -> String {
    manager.json(&["servers", "show", server, "-o", "json"])["state"].as_str().unwrap().to_string()
}

fn action(manager: &Manager, id: i64) -> serde_json::Value {
    manager.json(&["actions", "show", &id.to_string(), "-o", "json"])
}

/// A psql session that holds `FOR UPDATE` locks on every NIC row until released (or dropped).
struct NicLock {
    child: Child,
}

impl NicLock {
    fn take(server: &postgres::PgServer, database: &str) -> NicLock {
        let mut child = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &server.port.to_string(), "-U", "postgres", "-d", database, "-q"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.as_mut().unwrap();
        stdin.write_all(b"BEGIN;\nSELECT mac FROM nics FOR UPDATE;\n").unwrap();
        stdin.flush().unwrap();
        let lock = NicLock { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        let held = "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                    WHERE c.relname = 'nics' AND l.mode = 'RowShareLock' AND l.granted";
        while server.psql(database, held) == "0" {
            assert!(Instant::now() < deadline, "psql did not lock the NIC rows");
            std::thread::sleep(Duration::from_millis(20));
        }
        lock
    }

    fn release(mut self) {
        let mut stdin = self.child.stdin.take().unwrap();
        let _ = stdin.write_all(b"COMMIT;\n");
        drop(stdin);
        let _ = self.child.wait();
    }
}

impl Drop for NicLock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts an instance; the second one finds the admin token made by the first in its folder.
fn start(config: &Path, data: &Path, token_from: Option<&Manager>) -> Manager {
    let mut manager = Manager::start(config, data);
    if let Some(first) = token_from {
        manager.token_file = first.token_file.clone();
    }
    manager
}

#[test]
fn two_instances_share_the_work_and_one_takes_over_when_the_other_is_killed() {
    let url = postgres::fresh_database("cpg_multi");
    let database = url.rsplit('/').next().unwrap().to_string();
    let lab = Lab::up(&format!("cpg{}", std::process::id() % 100_000));
    let (config_a, data_a) = instance_config(&lab, "cpg-a", &url);
    let (config_b, data_b) = instance_config(&lab, "cpg-b", &url);
    let a = start(&config_a, &data_a, None);
    let b = start(&config_b, &data_b, Some(&a));
    let http = reqwest::blocking::Client::new();

    // 1. Detections to both instances; sbc-01 is reported to both.
    post_eve(&http, &a, "ids-a", eve_alert("10.10.0.11", 1) + &eve_alert("10.10.0.13", 2));
    post_eve(&http, &b, "ids-b", eve_alert("10.10.0.11", 3) + &eve_alert("10.10.0.12", 4));
    a.wait_until(30, "every server quarantined by the detections", |m| {
        SERVERS.iter().all(|(server, _, _)| state_of(m, server) == "quarantined")
    });
    let actions = b.json(&["actions", "list", "-o", "json"]).as_array().unwrap().clone();
    assert_eq!(actions.len(), 3, "one action per server, whichever instance got its detections: {actions:#?}");
    let mut ran_on = BTreeMap::new();
    for listed in &actions {
        let id = listed["id"].as_i64().unwrap();
        let shown = action(&a, id);
        assert_eq!((shown["state"].as_str(), shown["attempts"].as_u64()), (Some("succeeded"), Some(1)), "{shown:#}");
        let steps = shown["steps"].as_array().unwrap();
        let mut names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), steps.len(), "every step ran once: {steps:#?}");
        let instances: Vec<&str> = steps.iter().map(|s| s["instance"].as_str().unwrap()).collect();
        assert!(instances.windows(2).all(|w| w[0] == w[1]), "one instance ran the whole action: {instances:?}");
        *ran_on.entry(instances[0].to_string()).or_insert(0) += 1;
    }
    let detections = a.json(&["detections", "list", "-o", "json"]).as_array().unwrap().clone();
    assert_eq!(detections.len(), 4, "{detections:#?}");
    for detection in &detections {
        let expected = if detection["source"] == "ids-a" { "cpg-a" } else { "cpg-b" };
        assert_eq!(detection["instance"], expected, "a detection names the instance that received it");
        assert!(detection["action_id"].as_i64().is_some(), "{detection:#}");
    }
    let status = a.json(&["status", "-o", "json"]);
    let mut live: Vec<&str> = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["live"] == true)
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    live.sort();
    assert_eq!(live, vec!["cpg-a", "cpg-b"], "{status:#}");
    let reconcilers = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["leases"].as_array().unwrap().iter().any(|l| l["name"] == "reconciler"))
        .count();
    assert_eq!(reconcilers, 1, "the reconciler runs on one instance: {status:#}");
    let text = stdout(&b.cordon(&["status"]));
    assert!(text.contains("Instances:") && text.contains("cpg-a") && text.contains("reconciler until"), "{text}");
    println!("cordon status on cpg-b:\n{text}");
    println!("phase 1: 4 detections through both instances -> 3 actions, run by {ran_on:?}");

    for (index, (server, _, _)) in SERVERS.iter().enumerate() {
        act(&http, if index % 2 == 0 { &a } else { &b }, "unquarantine", server);
    }
    b.wait_until(30, "every server back in operation", |m| {
        SERVERS.iter().all(|(server, _, _)| state_of(m, server) == "operational")
    });

    // 2. A batch held in the middle of its actions, then one instance killed.
    let lock = NicLock::take(postgres::server(), &database);
    let ids: Vec<i64> = SERVERS
        .iter()
        .enumerate()
        .map(|(index, (server, _, _))| act(&http, if index % 2 == 0 { &a } else { &b }, "quarantine", server))
        .collect();
    // The port moves; the record of it (the NIC's position, with the journal of the steps that
    // led there, in one transaction) waits on the lock.
    a.wait_until(30, "every action of the batch running, its port moved", |m| {
        ids.iter().zip(SERVERS).all(|(id, (_, port, _))| {
            action(m, *id)["state"] == "running" && lab.port(port) == ("br-quarantine".to_string(), true)
        })
    });
    let status = a.json(&["status", "-o", "json"]);
    let leases = |name: &str| -> Vec<i64> {
        status["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["name"] == name)
            .flat_map(|i| {
                i["actions"].as_array().unwrap().iter().map(|l| l["action"].as_i64().unwrap()).collect::<Vec<_>>()
            })
            .collect()
    };
    let (held_a, held_b) = (leases("cpg-a"), leases("cpg-b"));
    assert_eq!(held_a.len() + held_b.len(), 3, "every running action is leased: {status:#}");
    let (victim, survivor, orphans, victim_name) =
        if held_a.len() >= held_b.len() { (a, b, held_a, "cpg-a") } else { (b, a, held_b, "cpg-b") };
    assert!(!orphans.is_empty());
    let killed = Instant::now();
    victim.kill();
    lock.release();
    survivor.wait_until(30, "the survivor finishing every action of the batch", |m| {
        ids.iter().all(|id| action(m, *id)["state"] == "succeeded")
    });
    let takeover = killed.elapsed();

    for id in &orphans {
        let shown = action(&survivor, *id);
        assert_eq!(shown["attempts"], 2, "taken over once: {shown:#}");
        let numbers: Vec<u64> =
            shown["messages"].as_array().unwrap().iter().map(|m| m["number"].as_u64().unwrap()).collect();
        assert!(numbers.contains(&41060), "the takeover is recorded: {numbers:?}");
        let steps = shown["steps"].as_array().unwrap();
        let moved: Vec<(&str, &str)> = steps
            .iter()
            .filter(|s| s["name"] == "ensure_port_on_bridge")
            .map(|s| (s["instance"].as_str().unwrap(), s["outcome"].as_str().unwrap()))
            .collect();
        // The killed instance moved the port but died before its record of it committed: the
        // survivor finds the port in place and records it.
        assert_eq!(moved.len(), 1, "{steps:#?}");
        assert_eq!(moved[0].1, "already_in_place", "the survivor found it in place: {steps:#?}");
        assert_ne!(moved[0].0, victim_name);
    }
    // The records equal the switch.
    for (server, port, _) in SERVERS {
        let shown = survivor.json(&["servers", "show", server, "-o", "json"]);
        assert_eq!(shown["state"], "quarantined", "{shown:#}");
        assert_eq!(lab.port(port), ("br-quarantine".to_string(), true), "{server}");
    }
    let reconciled = survivor.json(&["reconcile", "-o", "json"]);
    assert_eq!(reconciled["drifts"].as_array().map(Vec::len), Some(0), "{reconciled:#}");
    // One audit chain written by both instances: it verifies, and the takeover's state changes
    // are in it in the name of the instance that made each of them.
    let out = survivor.cordon(&["audit", "verify"]);
    assert!(out.status.success(), "{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    let survivor_name = if victim_name == "cpg-a" { "cpg-b" } else { "cpg-a" };
    let rows = survivor.json(&["audit", "list", "--limit", "10000", "-o", "json"]);
    for id in &orphans {
        let target = format!("action {id}");
        // Oldest first: the victim's claim, the survivor's takeover (backoff), its claim.
        let changes: Vec<(String, &str)> = rows
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .filter(|r| r["verb"] == "action_state" && r["target"] == target.as_str())
            .map(|r| {
                let detail = r["detail"].as_str().unwrap();
                (detail.split(',').next().unwrap().to_string(), r["instance"].as_str().unwrap())
            })
            .filter(|(detail, _)| detail.ends_with("(start)") || detail.ends_with("(backoff)"))
            .collect();
        let expected = [
            ("pending -> running (start)".to_string(), victim_name),
            ("running -> retrying (backoff)".to_string(), survivor_name),
            ("retrying -> running (start)".to_string(), survivor_name),
        ];
        assert_eq!(changes, expected, "{target}");
    }
    println!(
        "phase 2: {} of 3 running actions orphaned by SIGKILL of {victim_name}; the survivor finished the batch \
         {:.2} s after the kill (action lease {ACTION_LEASE_SECS} s)",
        orphans.len(),
        takeover.as_secs_f64()
    );
}

/// `examples/cordon.toml` with its own data folder and `database`: enough to reach the store.
fn example_with_database(dir: &Path, database: &str, password_file: Option<&Path>) -> PathBuf {
    let example = std::fs::read_to_string(repo_root().join("examples/cordon.toml")).unwrap();
    let mut manager = format!("[manager]\ndatabase = \"{database}\"\n");
    if let Some(file) = password_file {
        manager.push_str(&format!("database_password_file = \"{}\"\n", file.display()));
    }
    let config = example
        .replacen("[manager]\n", &manager, 1)
        .replace("data_dir = \"/var/lib/cordon\"", &format!("data_dir = \"{}\"", dir.join("data").display()));
    let path = dir.join("cordon.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn serve_fails(config: &Path) -> (i32, String) {
    let out = Command::new(CORDON).args(["serve", "--config"]).arg(config).output().unwrap();
    (out.status.code().unwrap_or(-1), stderr(&out))
}

#[test]
fn a_database_that_cannot_be_used_stops_the_start_with_its_number() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = example_with_database(dir.path(), &format!("postgres://cordon@127.0.0.1:{port}/cordon"), None);
    let (code, errors) = serve_fails(&config);
    assert_eq!(code, 1, "{errors}");
    assert!(errors.contains("60060") && errors.contains(&format!("127.0.0.1:{port}")), "{errors}");

    let missing = dir.path().join("no-such.password");
    let config = example_with_database(dir.path(), "postgres://cordon@127.0.0.1:1/cordon", Some(&missing));
    let (code, errors) = serve_fails(&config);
    assert!(code == 1 && errors.contains("60062"), "{errors}");

    // A database migrated by a newer Cordon.
    let url = postgres::fresh_database("cpg_newer");
    let database = url.rsplit('/').next().unwrap();
    postgres::server().psql(
        database,
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL); \
         INSERT INTO schema_migrations VALUES (999, now())",
    );
    let config = example_with_database(dir.path(), &url, None);
    let (code, errors) = serve_fails(&config);
    assert!(code == 1 && errors.contains("60061") && errors.contains("999"), "{errors}");
}
