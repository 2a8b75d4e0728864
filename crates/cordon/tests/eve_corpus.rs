//! A corpus from a real Suricata over varied lab traffic (HTTP both ways, DNS, TLS, ICMP,
//! IPv6, an application-layer anomaly, stats), captured at test time, and every line of it
//! through Cordon's EVE parser: alerts become detections with the right subject, everything
//! else is skipped under its own event type, nothing is malformed.

mod common;
mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use cordon_model::{Parsed, ThreatSeverity};
use support::proc::Guarded;
use support::suricata::{Eve, Options, Suricata, ping_canary};
use support::{fixture, in_netns, wait_for};

/// Runs a client command in a host namespace until it succeeds (its server may still be
/// starting), at most `timeout`.
fn retry(what: &str, timeout: Duration, mut make: impl FnMut() -> Command) {
    let ok = wait_for(timeout, Duration::from_millis(100), || {
        let out = make().stdin(Stdio::null()).output().unwrap();
        out.status.success().then_some(())
    });
    assert!(ok.is_some(), "{what} did not succeed within {timeout:?}");
}

fn server(name: &str, netns: &str, program: &str, args: &[&str], dir: &Path) -> Guarded {
    let mut command = in_netns(netns, program);
    command
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap());
    Guarded::spawn(name, &mut command)
}

fn curl(netns: &str, args: &[&str]) -> Command {
    let mut command = in_netns(netns, "curl");
    command.args(["-sS", "-o", "/dev/null", "--max-time", "2"]).args(args);
    command
}

fn ip(text: &serde_json::Value) -> Option<IpAddr> {
    text.as_str()?.parse().ok()
}

#[test]
fn a_real_suricata_corpus_is_fully_accounted_for() {
    let started = Instant::now();
    let lab = Lab::up(&format!("ec{}", std::process::id() % 100_000));
    let (a, b, c) = (lab.host("sbc-01"), lab.host("sbc-02"), lab.host("sbc-03"));
    let work = lab.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    // A self-signed certificate for the TLS server (made here, nothing kept in the repository).
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=canary.cordon.test",
            "-days",
            "2",
            "-keyout",
            &work.join("key.pem").display().to_string(),
            "-out",
            &work.join("cert.pem").display().to_string(),
        ],
    );

    let mut suricata = Suricata::start(
        &lab.dir.path().join("suricata"),
        &Options {
            netns: &lab.switch(),
            interfaces: &["p-sbc-01", "p-sbc-02", "p-sbc-03"],
            rules: &fixture("suricata/cordon-test.rules"),
            eve: Eve::File,
            types: &["alert", "anomaly", "http", "dns", "tls", "flow", "stats"],
        },
    );

    // IPv6 (ULA) on sbc-01 and sbc-02, added while Suricata watches (MLD, neighbour discovery).
    run("ip", &["-n", &a, "addr", "add", "fd00::11/64", "dev", "eth0", "nodad"]);
    run("ip", &["-n", &b, "addr", "add", "fd00::12/64", "dev", "eth0", "nodad"]);

    // Servers: HTTP on sbc-02 (dual stack) and on sbc-01, DNS on sbc-03, TLS on sbc-02.
    let dir = work.as_path();
    let _http_b = server("http-b", &b, "python3", &["-m", "http.server", "80", "--bind", "::"], dir);
    let _http_a = server("http-a", &a, "python3", &["-m", "http.server", "80", "--bind", "10.10.0.11"], dir);
    let dns_responder = fixture("dns_responder.py").display().to_string();
    let _dns_c = server("dns-c", &c, "python3", &[&dns_responder, "10.10.0.13"], dir);
    let _tls_b = server(
        "tls-b",
        &b,
        "openssl",
        &["s_server", "-accept", "443", "-cert", "cert.pem", "-key", "key.pem", "-www", "-quiet"],
        dir,
    );

    // HTTP both ways: sbc-01 asks sbc-02 for /cordon-canary (rule without target), sbc-02 asks
    // sbc-01 for /reverse-canary (rule with target:dest_ip), and plain HTTP over IPv6.
    let wait = Duration::from_secs(10);
    retry("curl sbc-01 → sbc-02", wait, || curl(&a, &["http://10.10.0.12/cordon-canary"]));
    retry("curl sbc-02 → sbc-01", wait, || curl(&b, &["http://10.10.0.11/reverse-canary"]));
    retry("curl sbc-01 → [fd00::12]", wait, || curl(&a, &["-g", "http://[fd00::12]/over-ipv6"]));
    // DNS: a query for canary.cordon.test (rule without target).
    let dns_query = fixture("dns_query.py").display().to_string();
    retry("dns query", wait, || {
        let mut command = in_netns(&a, "python3");
        command.args([&dns_query, "canary.cordon.test", "10.10.0.13"]);
        command
    });
    // TLS with SNI canary.cordon.test (rule with target:dest_ip).
    retry("tls sbc-01 → sbc-02", wait, || {
        curl(&a, &["-k", "--resolve", "canary.cordon.test:443:10.10.0.12", "https://canary.cordon.test/"])
    });
    // ICMP with the canary, over IPv4 (target:src_ip) and IPv6 (target:dest_ip).
    ping_canary(&a, "10.10.0.12");
    ping_canary(&a, "fd00::12");
    // A malformed HTTP request: application-layer anomalies.
    let bad_http = fixture("bad_http.py").display().to_string();
    retry("malformed http", wait, || {
        let mut command = in_netns(&a, "python3");
        command.args([&bad_http, "10.10.0.12", "80"]);
        command
    });

    // Stats come every second; let at least two intervals pass, then stop Suricata so that
    // it logs the flows it still holds.
    let alerts_seen = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
        (suricata.events().iter().filter(|e| e["event_type"] == "alert").count() >= 6).then_some(())
    });
    assert!(alerts_seen.is_some(), "the canary alerts reached eve.json:\n{}", suricata.log());
    let elapsed = suricata.started_at.elapsed();
    if elapsed < Duration::from_millis(2_200) {
        std::thread::sleep(Duration::from_millis(2_200) - elapsed);
    }
    suricata.stop();

    // Every line through the parser.
    let lines = suricata.eve_lines();
    let context = cordon_ingest::Context { source: "ids-corpus", received_at_us: 0 };
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    let (mut with_target, mut without_target, mut ipv6_alerts) = (0, 0, 0);
    let mut ipv6_events = 0;
    let mut sids = std::collections::BTreeSet::new();
    for (number, line) in lines.iter().enumerate() {
        let where_ = format!("eve.json line {}: {line}", number + 1);
        let event: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {where_}"));
        let event_type = event["event_type"].as_str().unwrap_or_else(|| panic!("no event_type: {where_}")).to_string();
        *by_kind.entry(event_type.clone()).or_default() += 1;
        let src = ip(&event["src_ip"]);
        if src.is_some_and(|s| s.is_ipv6()) {
            ipv6_events += 1;
        }
        match cordon_ingest::eve::parse_line(line.as_bytes(), &context) {
            Parsed::Detection(detection) => {
                assert_eq!(event_type, "alert", "only alerts become detections: {where_}");
                let alert = &event["alert"];
                let src = src.unwrap_or_else(|| panic!("an alert has src_ip: {where_}"));
                let target = ip(&alert["target"]["ip"]);
                let expected = target.unwrap_or(src);
                assert_eq!(
                    detection.subject, expected,
                    "subject: target.ip if the rule names one, else src_ip: {where_}"
                );
                assert_eq!(detection.src_ip, Some(src), "{where_}");
                assert_eq!(detection.dest_ip, ip(&event["dest_ip"]), "{where_}");
                assert_eq!(detection.target_ip, target, "{where_}");
                let sid = alert["signature_id"].as_u64().unwrap();
                assert_eq!(detection.signature_id.as_deref(), Some(sid.to_string().as_str()), "{where_}");
                assert_eq!(detection.signature, alert["signature"].as_str().unwrap(), "{where_}");
                let severity = match alert["severity"].as_u64() {
                    Some(1) => ThreatSeverity::High,
                    Some(2) => ThreatSeverity::Medium,
                    Some(3) => ThreatSeverity::Low,
                    other => panic!("the test rules have priorities 1..3, got {other:?}: {where_}"),
                };
                assert_eq!(detection.severity, severity, "{where_}");
                assert_eq!(detection.source, "ids-corpus");
                let timestamp = support::time::parse_eve(event["timestamp"].as_str().unwrap());
                assert!(timestamp.is_some(), "{where_}");
                assert_eq!(detection.observed_at_us, timestamp, "observed_at is Suricata's timestamp: {where_}");
                if target.is_some() {
                    with_target += 1;
                } else {
                    without_target += 1;
                }
                if src.is_ipv6() {
                    ipv6_alerts += 1;
                }
                sids.insert(sid);
            }
            Parsed::Skipped { kind } => {
                assert_ne!(event_type, "alert", "an alert must not be skipped: {where_}");
                assert_eq!(kind, event_type, "skipped under its own event type: {where_}");
            }
            Parsed::Malformed { reason } => panic!("a real Suricata line was rejected ({reason}): {where_}"),
        }
    }

    println!("EVE corpus: {} lines from a real Suricata", lines.len());
    for (kind, count) in &by_kind {
        println!("  {kind:<10} {count}");
    }
    println!(
        "  alerts: {with_target} with target, {without_target} without, {ipv6_alerts} over IPv6; \
         {ipv6_events} IPv6 events in all; signature ids {sids:?}"
    );

    // The corpus really covers what it claims.
    for kind in ["alert", "http", "dns", "tls", "flow", "stats", "anomaly"] {
        assert!(by_kind.get(kind).copied().unwrap_or(0) > 0, "the corpus has {kind} events: {by_kind:?}");
    }
    assert!(with_target > 0 && without_target > 0, "alerts with and without target");
    assert!(ipv6_alerts > 0, "an alert over IPv6");
    assert_eq!(
        sids.into_iter().collect::<Vec<_>>(),
        [1_000_001, 1_000_002, 1_000_003, 1_000_004, 1_000_005, 1_000_006],
        "every test rule fired"
    );
    println!("corpus test took {:?}", started.elapsed());
}
