//! Detections in, actions out, on the real lab with the real binary: CEF syslog over real UDP
//! and TCP sockets, a followed eve.json across a SIGKILL, and policy reloads.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }
}

fn append(path: &std::path::Path, text: &str) {
    std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
}

const RULES: &str = r#"
[policy]
default_action = "notify"

[[policy.rule]]
name = "serious"
sources = ["ids-1", "ddi"]
min_severity = "high"
action = "quarantine"
mode = "auto"
"#;

/// The rules without the `ddi` source, for labs that only follow EVE.
fn ids_rules() -> String {
    RULES.replace("sources = [\"ids-1\", \"ddi\"]", "sources = [\"ids-1\"]")
}

fn eve_alert(subject: &str, sid: u32, severity: u8) -> String {
    format!(
        r#"{{"timestamp":"2026-11-27T10:00:00.000000+0000","flow_id":1,"in_iface":"p-sbc-01","event_type":"alert","src_ip":"{subject}","src_port":40000,"dest_ip":"203.0.113.5","dest_port":80,"proto":"TCP","alert":{{"action":"allowed","gid":1,"signature_id":{sid},"rev":1,"signature":"CORDON TEST {sid}","category":"A Network Trojan was detected","severity":{severity}}}}}"#
    ) + "\n"
}

fn detections(manager: &Manager) -> Vec<serde_json::Value> {
    manager.json(&["detections", "list", "--limit", "10000", "-o", "json"]).as_array().unwrap().clone()
}

fn state_of(manager: &Manager, server: &str) -> String {
    manager.json(&["servers", "show", server, "-o", "json"])["state"].as_str().unwrap().to_string()
}

#[test]
fn cef_syslog_over_udp_and_tcp_quarantines_the_host_at_risk() {
    let lab = Lab::up(&format!("c{}", std::process::id() % 100_000));
    let (udp, tcp) = (free_port(true), free_port(false));
    append(
        &lab.config(),
        &format!(
            "\n[[source]]\nname = \"ddi\"\ntype = \"cef-syslog\"\nlisten_udp = \"127.0.0.1:{udp}\"\nlisten_tcp = \"127.0.0.1:{tcp}\"\nprofile = \"deep-discovery\"\n\n[[source]]\nname = \"ids-1\"\ntype = \"suricata-eve\"\npath = \"{}\"\n{RULES}",
            lab.dir.path().join("eve.json").display()
        ),
    );
    let manager = Manager::start(&lab.config(), &lab.dir.path().join("data"));

    // RFC 3164 over UDP: Deep Discovery Inspector, severity 8 (high), the host at risk is interestedIp.
    let cef = |host: &str| {
        format!(
            "CEF:0|Trend Micro|Deep Discovery Inspector|6.0.1208|20|Malware URL requested \\| Type 1|8|dvc=10.201.156.143 dvchost=ddi01 \
             rt=Nov 27 2026 10:00:00 GMT+00:00 src={host} dst=203.0.113.5 deviceDirection=1 interestedIp={host} peerIp=203.0.113.5 \
             cat=Malware act=not blocked fname=C:\\\\Users\\\\x\\=y.exe"
        )
    };
    let udp_message = format!("<134>Nov 27 10:00:00 ddi01 {}", cef("10.10.0.11"));
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.send_to(udp_message.as_bytes(), ("127.0.0.1", udp)).unwrap();
    manager.wait_until(15, "sbc-01 quarantined from a UDP CEF event", |m| state_of(m, "sbc-01") == "quarantined");

    // RFC 5424 over TCP with octet counting, then a newline-framed one with garbage before it.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    let message = format!("<134>1 2026-11-27T10:00:01Z ddi01 ddi - - - {}", cef("10.10.0.12"));
    write!(stream, "{} {message}", message.len()).unwrap();
    write!(stream, "this is not CEF\n<134>Nov 27 10:00:02 ddi01 CEF:0|broken\n").unwrap();
    writeln!(stream, "<134>Nov 27 10:00:02 ddi01 {}", cef("10.10.0.13")).unwrap();
    stream.flush().unwrap();
    manager.wait_until(15, "sbc-02 and sbc-03 quarantined from TCP CEF events", |m| {
        state_of(m, "sbc-02") == "quarantined" && state_of(m, "sbc-03") == "quarantined"
    });
    drop(stream);

    let listed = detections(&manager);
    let from_ddi: Vec<&serde_json::Value> = listed.iter().filter(|d| d["source"] == "ddi").collect();
    assert_eq!(from_ddi.len(), 3, "{listed:?}");
    for d in &from_ddi {
        assert_eq!(d["signature"], "Malware URL requested | Type 1", "the escaped header pipe is decoded");
        assert_eq!(d["severity"], "high");
        assert_eq!(d["peer"], "203.0.113.5");
        assert!(d["action_id"].as_i64().is_some());
    }
    assert_eq!(lab.port("p-sbc-02"), ("br-quarantine".to_string(), true));
    // The malformed input was counted, not lost silently.
    let metrics = std::process::Command::new("curl")
        .args(["-sf", "-H"])
        .arg(format!("Authorization: Bearer {}", std::fs::read_to_string(&manager.token_file).unwrap().trim()))
        .arg(format!("{}/metrics", manager.url))
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(metrics.contains("cordon_source_accepted_total{source=\"ddi\"} 3"), "{metrics}");
    assert!(metrics.contains("cordon_source_rejected_total{source=\"ddi\"}"), "{metrics}");
}

#[test]
fn time_to_contain_is_exported_after_a_quarantine_from_eve() {
    let lab = Lab::up(&format!("cbn{}", std::process::id() % 100_000));
    let eve = lab.dir.path().join("eve.json");
    append(
        &lab.config(),
        &format!(
            "\n[[source]]\nname = \"ids-1\"\ntype = \"suricata-eve\"\npath = \"{}\"\n{}",
            eve.display(),
            ids_rules()
        ),
    );
    std::fs::write(&eve, "").unwrap();
    let manager = Manager::start(&lab.config(), &lab.dir.path().join("data"));
    let metrics = || {
        let out = std::process::Command::new("curl")
            .args(["-sf", "-H"])
            .arg(format!("Authorization: Bearer {}", std::fs::read_to_string(&manager.token_file).unwrap().trim()))
            .arg(format!("{}/metrics", manager.url))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Both families exist before anything was contained, with no observation.
    let before = metrics();
    assert!(before.contains("# TYPE cordon_time_to_contain_seconds histogram"), "{before}");
    assert!(before.contains("cordon_time_to_contain_seconds_count 0"), "{before}");
    assert!(before.contains("cordon_alert_to_contain_seconds_count 0"), "{before}");

    // An operator's quarantine is not a detection: not observed.
    let out = manager.cordon(&["quarantine", "sbc-02", "--reason", "by hand", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(metrics().contains("cordon_time_to_contain_seconds_count 0"));

    // A high-severity alert stamped now by the sensor: one observation in each histogram.
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f+0000");
    append(&eve, &eve_alert("10.10.0.11", 7001, 1).replace("2026-11-27T10:00:00.000000+0000", &now.to_string()));
    manager.wait_until(15, "sbc-01 quarantined", |m| state_of(m, "sbc-01") == "quarantined");
    assert_eq!(lab.port("p-sbc-01"), ("br-quarantine".to_string(), true));
    let after = metrics();
    assert!(after.contains("cordon_time_to_contain_seconds_count 1"), "{after}");
    assert!(after.contains("cordon_time_to_contain_seconds_bucket{le=\"+Inf\"} 1"), "{after}");
    assert!(after.contains("cordon_alert_to_contain_seconds_count 1"), "{after}");
}

#[test]
fn a_followed_eve_file_survives_sigkill_without_loss_or_duplicates() {
    let lab = Lab::up(&format!("k{}", std::process::id() % 100_000));
    let eve = lab.dir.path().join("eve.json");
    append(
        &lab.config(),
        &format!(
            "\n[[source]]\nname = \"ids-1\"\ntype = \"suricata-eve\"\npath = \"{}\"\n{}",
            eve.display(),
            ids_rules()
        ),
    );
    std::fs::write(&eve, "").unwrap();
    let data = lab.dir.path().join("data");
    let manager = Manager::start(&lab.config(), &data);

    // Low-severity alerts (a notify, attached to one action) interleaved with other events.
    let total = 400u32;
    let writer = {
        let eve = eve.clone();
        std::thread::spawn(move || {
            for sid in 1..=total {
                let mut text = eve_alert("10.10.0.13", sid, 3);
                if sid % 3 == 0 {
                    text.push_str(
                        r#"{"timestamp":"2026-11-27T10:00:00.000000+0000","event_type":"stats","stats":{"uptime":1}}"#,
                    );
                    text.push('\n');
                }
                append(&eve, &text);
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };
    manager.wait_until(20, "the first detections", |m| detections(m).len() >= 50);
    manager.kill();
    std::thread::sleep(Duration::from_millis(300));
    let manager = Manager::start(&lab.config(), &data);
    writer.join().unwrap();
    manager.wait_until(30, "every alert", |m| detections(m).len() >= total as usize);
    std::thread::sleep(Duration::from_millis(500));
    let listed = detections(&manager);
    let mut sids: Vec<u32> = listed.iter().map(|d| d["signature_id"].as_str().unwrap().parse().unwrap()).collect();
    sids.sort_unstable();
    assert_eq!(sids, (1..=total).collect::<Vec<_>>(), "every alert exactly once across the SIGKILL");
    let actions = manager.json(&["actions", "list", "-o", "json"]);
    let actions = actions.as_array().unwrap();
    assert_eq!(actions.len(), 1, "one incident, one action: {actions:?}");
    assert_eq!(
        (actions[0]["kind"].as_str(), actions[0]["state"].as_str()),
        (Some("notify"), Some("awaiting_approval"))
    );
    assert_eq!(actions[0]["detections"], total);
}

#[test]
fn the_policy_reloads_when_the_file_changes_and_a_bad_file_keeps_the_old_one() {
    let lab = Lab::up(&format!("p{}", std::process::id() % 100_000));
    let eve = lab.dir.path().join("eve.json");
    let base = std::fs::read_to_string(lab.config()).unwrap()
        + &format!("\n[[source]]\nname = \"ids-1\"\ntype = \"suricata-eve\"\npath = \"{}\"\n", eve.display());
    std::fs::write(lab.config(), format!("{base}\n[policy]\ndefault_action = \"notify\"\n")).unwrap();
    let manager = Manager::start(&lab.config(), &lab.dir.path().join("data"));

    append_new(&eve, &eve_alert("10.10.0.11", 1, 1));
    manager.wait_until(15, "a notify for sbc-01", |m| detections(m).first().is_some_and(|d| d["action_id"].is_i64()));
    let first = manager.json(&["actions", "list", "-o", "json"])[0].clone();
    assert_eq!((first["kind"].as_str(), first["state"].as_str()), (Some("notify"), Some("awaiting_approval")));

    // A good file: the rule quarantines from now on.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(lab.config(), format!("{base}{}", ids_rules())).unwrap();
    manager.wait_until(15, "the reload (21011)", |m| m.log().contains("number=21011"));
    append_new(&eve, &eve_alert("10.10.0.12", 2, 1));
    manager.wait_until(15, "sbc-02 quarantined by the reloaded policy", |m| state_of(m, "sbc-02") == "quarantined");

    // A bad file: refused with 41006, the previous policy stays in force.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(
        lab.config(),
        format!("{base}{}", ids_rules()).replace("action = \"quarantine\"", "action = \"quarantine-please\""),
    )
    .unwrap();
    manager.wait_until(15, "the refused reload (41006)", |m| m.log().contains("number=41006"));
    append_new(&eve, &eve_alert("10.10.0.13", 3, 1));
    manager
        .wait_until(15, "sbc-03 quarantined by the policy still in force", |m| state_of(m, "sbc-03") == "quarantined");
    assert!(manager.log().contains("quarantine-please"), "the refusal names the bad value");
}

fn append_new(path: &std::path::Path, text: &str) {
    std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
}
