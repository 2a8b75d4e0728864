//! A real Suricata on the lab switch, a real `cordon serve` following its EVE output: an alert
//! quarantines the server it names, over a file and over Cordon's unix socket; and a burst of
//! alerts for one host makes one action.

mod common;
mod support;

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use support::suricata::{Eve, Options, Suricata, ping_canary};
use support::{append_config, text_of, wait_for};

const CANARY_SID: u64 = 1_000_001;
const PORTS: &[&str] = &["p-sbc-01", "p-sbc-02", "p-sbc-03"];

fn rules() -> std::path::PathBuf {
    support::fixture("suricata/cordon-test.rules")
}

fn detections(manager: &Manager, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["detections", "list", "-o", "json"];
    all.extend_from_slice(args);
    manager.json(&all).as_array().unwrap().clone()
}

fn is_canary(detection: &serde_json::Value) -> bool {
    text_of(&detection["signature_id"]) == CANARY_SID.to_string()
}

/// What to show when a wait times out: Cordon's log, Suricata's log and its EVE output.
fn evidence(manager: &Manager, suricata: &Suricata) -> String {
    format!(
        "--- cordon serve log:\n{}\n--- suricata.log:\n{}\n--- eve.json (alerts):\n{}",
        manager.log(),
        suricata.log(),
        suricata.eve_lines().iter().filter(|l| l.contains("\"alert\"")).cloned().collect::<Vec<_>>().join("\n")
    )
}

#[test]
fn suricata_alert_quarantines_the_server() {
    let lab = Lab::up(&format!("sq{}", std::process::id() % 100_000));
    let eve_dir = lab.dir.path().join("suricata");
    append_config(
        &lab.config(),
        &format!(
            r#"[[source]]
name = "ids-1"
type = "suricata-eve"
path = "{}"

[policy]
default_action = "notify"

[[policy.rule]]
name = "ids quarantines"
sources = ["ids-1"]
min_severity = "high"
action = "quarantine"
mode = "auto"
"#,
            eve_dir.join("eve.json").display()
        ),
    );
    // Cordon first: it follows eve.json before the file exists, like tail -F (in a directory
    // that exists, as /var/log/suricata does).
    std::fs::create_dir_all(&eve_dir).unwrap();
    let manager = Manager::start(&lab.config(), &lab.dir.path().join("data"));
    let suricata = Suricata::start(
        &eve_dir,
        &Options {
            netns: &lab.switch(),
            interfaces: PORTS,
            rules: &rules(),
            eve: Eve::File,
            types: &["alert", "anomaly", "flow", "dns", "http", "tls"],
        },
    );

    assert!(lab.ping("sbc-01", "10.10.0.12"), "sbc-01 reaches sbc-02 before anything happens");
    assert!(suricata.alerts(CANARY_SID).is_empty(), "an ordinary ping raises no alert");
    assert_eq!(manager.json(&["servers", "show", "sbc-01", "-o", "json"])["state"], "operational");

    // sbc-01 "misbehaves": the rule names the sender (target:src_ip) as the host at risk.
    ping_canary(&lab.host("sbc-01"), "10.10.0.12");
    let quarantined = wait_for(Duration::from_secs(15), Duration::from_millis(25), || {
        let server = manager.json(&["servers", "show", "sbc-01", "-o", "json"]);
        (server["state"] == "quarantined").then_some(server)
    });
    let server = quarantined
        .unwrap_or_else(|| panic!("sbc-01 was not quarantined within 15 s\n{}", evidence(&manager, &suricata)));
    assert_eq!(server["network"], "quarantine", "{server}");
    assert_eq!(lab.port("p-sbc-01"), ("br-quarantine".to_string(), true), "read independently with iproute2");
    let contained_at = support::time::now_us();
    assert!(!lab.ping("sbc-01", "10.10.0.12"), "sbc-01 can no longer reach sbc-02");

    // Suricata's own timestamp of the (first) alert, to the containment seen from outside.
    let alerts = suricata.alerts(CANARY_SID);
    assert!(!alerts.is_empty(), "suricata logged the canary alert");
    let first_alert_us = alerts
        .iter()
        .filter_map(|a| support::time::parse_eve(a["timestamp"].as_str()?))
        .min()
        .expect("EVE alert timestamps are readable");

    // The detection that did it: subject 10.10.0.11, attached to the action.
    let listed = detections(&manager, &["--source", "ids-1"]);
    let canary: Vec<&serde_json::Value> = listed.iter().filter(|d| is_canary(d)).collect();
    assert!(!canary.is_empty(), "the alert is listed as a detection: {listed:#?}");
    let detection = canary.iter().find(|d| !d["action_id"].is_null()).unwrap_or_else(|| {
        panic!("a canary detection is attached to an action: {canary:#?}");
    });
    for field in [
        "id",
        "received_at",
        "observed_at",
        "source",
        "sensor",
        "subject",
        "peer",
        "signature_id",
        "signature",
        "category",
        "severity",
        "action_id",
        "server",
        "decision",
    ] {
        assert!(detection.get(field).is_some(), "detections list -o json lacks {field}: {detection}");
    }
    assert_eq!(detection["source"], "ids-1");
    assert_eq!(
        detection["subject"].as_str().and_then(|s| s.parse::<IpAddr>().ok()),
        Some("10.10.0.11".parse().unwrap())
    );
    assert_eq!(detection["peer"].as_str().and_then(|s| s.parse::<IpAddr>().ok()), Some("10.10.0.12".parse().unwrap()));
    assert_eq!(detection["signature"], "CORDON TEST ping to canary");
    assert_eq!(detection["severity"], "high");
    assert_eq!(detection["server"], "sbc-01");

    let actions = manager.json(&["actions", "list", "-o", "json"]);
    let action = actions
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == detection["action_id"])
        .unwrap_or_else(|| panic!("the detection's action {} is listed: {actions:#}", detection["action_id"]));
    assert_eq!(action["kind"], "quarantine", "{action}");
    assert_eq!(action["server"], "sbc-01", "{action}");
    assert!(action["detections"].as_u64().unwrap_or(0) >= 1, "{action}");

    // Printed, not asserted: how long containment took, and where the time went.
    let after_alert = |value: &serde_json::Value| {
        value
            .as_str()
            .and_then(support::time::parse_eve)
            .map_or("?".to_string(), |us| format!("{:.1} ms", (us - first_alert_us) as f64 / 1000.0))
    };
    println!(
        "time to contain: {:.1} ms from Suricata's alert timestamp to sbc-01 verified quarantined \
         (port on br-quarantine, isolated); after the alert: detection received {}, action created {}, \
         action last updated {}",
        (contained_at - first_alert_us) as f64 / 1000.0,
        after_alert(&detection["received_at"]),
        after_alert(&action["created_at"]),
        after_alert(&action["updated_at"]),
    );
    // sbc-02 and sbc-03 were left alone.
    assert_eq!(lab.port("p-sbc-02"), ("br-office".to_string(), false));
    assert_eq!(lab.port("p-sbc-03"), ("br-office".to_string(), false));
}

#[test]
fn suricata_writes_to_cordons_unix_socket() {
    let lab = Lab::up(&format!("ss{}", std::process::id() % 100_000));
    let socket = lab.dir.path().join("eve.sock");
    append_config(
        &lab.config(),
        &format!(
            r#"[[source]]
name = "ids-1"
type = "suricata-eve"
socket = "{}"

[policy]
default_action = "notify"
"#,
            socket.display()
        ),
    );
    let manager = Manager::start(&lab.config(), &lab.dir.path().join("data"));
    // Suricata connects at start: the socket must be there first.
    let listening = wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        use std::os::unix::fs::FileTypeExt;
        std::fs::metadata(&socket).ok().filter(|m| m.file_type().is_socket())
    });
    assert!(listening.is_some(), "cordon serve did not create {}\n{}", socket.display(), manager.log());

    let suricata = Suricata::start(
        &lab.dir.path().join("suricata"),
        &Options {
            netns: &lab.switch(),
            interfaces: &["p-sbc-01"],
            rules: &rules(),
            eve: Eve::UnixStream(socket.clone()),
            types: &["alert", "flow"],
        },
    );
    assert!(
        suricata.log().contains("unix_stream") && !suricata.eve.exists(),
        "eve-log goes to the socket, not a file:\n{}",
        suricata.log()
    );

    ping_canary(&lab.host("sbc-01"), "10.10.0.12");
    let arrived = wait_for(Duration::from_secs(10), Duration::from_millis(25), || {
        detections(&manager, &["--source", "ids-1"]).into_iter().find(is_canary)
    });
    let detection = arrived.unwrap_or_else(|| {
        panic!(
            "no detection arrived over the socket within 10 s\n{}\n--- suricata.log:\n{}",
            manager.log(),
            suricata.log()
        )
    });
    assert_eq!(detection["source"], "ids-1");
    assert_eq!(detection["subject"], "10.10.0.11");
    assert_eq!(detection["signature"], "CORDON TEST ping to canary");
    assert_eq!(detection["severity"], "high");
    // default_action = notify: nothing moved.
    assert_eq!(lab.port("p-sbc-01"), ("br-office".to_string(), false));
}

/// 1,000 EVE alert lines for one host, as a sensor would post them.
fn burst(count: usize, src: &str) -> String {
    let now = support::time::now_us();
    let mut body = String::new();
    for i in 0..count {
        let event = serde_json::json!({
            "timestamp": support::time::format_eve(now - 1_000 + i as i64),
            "flow_id": 1_700_000_000_000_000u64 + i as u64,
            "in_iface": "p-sbc-02",
            "event_type": "alert",
            "src_ip": src,
            "src_port": 40_000 + (i % 20_000),
            "dest_ip": "10.10.0.13",
            "dest_port": 80,
            "proto": "TCP",
            "pkt_src": "wire/pcap",
            "alert": {
                "action": "allowed",
                "gid": 1,
                "signature_id": 1_000_100 + (i % 5),
                "rev": 1,
                "signature": format!("CORDON TEST burst {}", i % 5),
                "category": "A Network Trojan was detected",
                "severity": 1
            },
            "direction": "to_server",
            "host": "ids-lab"
        });
        body.push_str(&event.to_string());
        body.push('\n');
    }
    body
}

#[test]
fn many_alerts_for_one_host_make_one_action() {
    const COUNT: usize = 1_000;
    let lab = Lab::up(&format!("sm{}", std::process::id() % 100_000));
    append_config(
        &lab.config(),
        &format!(
            r#"[[source]]
name = "ids-1"
type = "suricata-eve"
path = "{}"

[policy]
default_action = "notify"

[[policy.rule]]
name = "ids quarantines"
sources = ["ids-1"]
min_severity = "high"
action = "quarantine"
mode = "auto"
"#,
            lab.dir.path().join("never-written-eve.json").display()
        ),
    );
    let data = lab.dir.path().join("data");
    let manager = Manager::start(&lab.config(), &data);
    let body = lab.dir.path().join("burst.ndjson");
    std::fs::write(&body, burst(COUNT, "10.10.0.12")).unwrap();
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();

    let started = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-X", "POST", "-H", "Content-Type: application/x-ndjson", "-H"])
        .arg(format!("Authorization: Bearer {}", token.trim()))
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .args(["-w", "\n%{http_code}"])
        .arg(format!("{}/api/v1/sources/ids-1/eve", manager.url))
        .output()
        .unwrap();
    let text = stdout(&out);
    let (answer, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    assert!(code.starts_with('2'), "POST eve: HTTP {code} {answer} {}\n{}", stderr(&out), manager.log());
    let answer: serde_json::Value = serde_json::from_str(answer).unwrap();
    assert_eq!(answer["accepted"], COUNT, "{answer}");
    println!("posted {COUNT} EVE alerts in {:?}", started.elapsed());

    // One action for sbc-02 carrying all of them, and it runs to the end.
    let done = wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
        let actions = manager.json(&["actions", "list", "--server", "sbc-02", "-o", "json"]);
        let actions = actions.as_array().unwrap().clone();
        assert!(actions.len() <= 1, "one host, one action: {actions:#?}");
        let action = actions.into_iter().next()?;
        (action["detections"].as_u64() == Some(COUNT as u64) && action["state"] == "succeeded").then_some(action)
    });
    let action = done.unwrap_or_else(|| {
        panic!(
            "no single succeeded action with {COUNT} detections for sbc-02 within 20 s: {:#}\n{}",
            manager.json(&["actions", "list", "-o", "json"]),
            manager.log()
        )
    });
    assert_eq!(action["kind"], "quarantine", "{action}");
    let all_actions = manager.json(&["actions", "list", "-o", "json"]);
    assert_eq!(all_actions.as_array().unwrap().len(), 1, "no other action at all: {all_actions:#}");
    assert_eq!(manager.json(&["servers", "show", "sbc-02", "-o", "json"])["state"], "quarantined");
    assert_eq!(lab.port("p-sbc-02"), ("br-quarantine".to_string(), true));

    let action_id = text_of(&action["id"]);
    let listed = detections(&manager, &["--source", "ids-1", "--limit", "5000"]);
    let for_host: Vec<&serde_json::Value> = listed.iter().filter(|d| d["subject"] == "10.10.0.12").collect();
    assert_eq!(for_host.len(), COUNT, "every alert is listed as a detection of sbc-02");
    assert!(
        for_host.iter().all(|d| text_of(&d["action_id"]) == action_id && d["server"] == "sbc-02"),
        "all {COUNT} are attached to action {action_id}"
    );
    let of_action = detections(&manager, &["--action", &action_id, "--limit", "5000"]);
    assert_eq!(of_action.len(), COUNT, "detections list --action {action_id}");
}
