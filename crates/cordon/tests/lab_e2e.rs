//! End to end on the real lab: namespaces, veth, Linux bridges, `cordon serve` and the CLI.

mod common;

use common::*;

fn in_pool(address: &str) -> bool {
    let last: u8 = address.strip_prefix("10.99.0.").and_then(|x| x.parse().ok()).unwrap_or(0);
    (100..=199).contains(&last)
}

#[test]
fn quarantine_isolates_and_unquarantine_restores() {
    let lab = Lab::up(&format!("q{}", std::process::id() % 100_000));
    let manager = Manager::start(&lab.config(), &lab.dir.path().join("data"));

    assert!(lab.ping("sbc-01", "10.10.0.12"), "A reaches B on office before anything happens");

    let out = manager.cordon(&["quarantine", "sbc-01", "--reason", "e2e test", "--wait"]);
    assert!(out.status.success(), "quarantine A: {}{}\n{}", stdout(&out), stderr(&out), manager.log());
    assert!(stdout(&out).contains("succeeded"), "{}", stdout(&out));

    let a = manager.json(&["servers", "show", "sbc-01", "-o", "json"]);
    assert_eq!(a["name"], "sbc-01");
    assert_eq!(a["kind"], "physical");
    assert_eq!(a["state"], "quarantined");
    assert_eq!(a["network"], "quarantine");
    let a_quarantine_ip = a["ip"].as_str().unwrap().to_string();
    assert!(in_pool(&a_quarantine_ip), "{a_quarantine_ip} is from the pool");
    assert_eq!(a["nics"][0]["mac"], "02:00:00:00:01:01");
    assert_eq!(a["nics"][0]["network"], "quarantine");
    assert_eq!(a["nics"][0]["ip"], a_quarantine_ip.as_str());
    assert_eq!(a["nics"][0]["operational_ip"], "10.10.0.11");
    assert_eq!(lab.port("p-sbc-01"), ("br-quarantine".to_string(), true), "read independently with iproute2");

    // Still holding its office address, A cannot reach B: the port left the office bridge.
    assert!(!lab.ping("sbc-01", "10.10.0.12"), "A is cut off from office at layer 2");
    // The administrator sets the quarantine address in the guest.
    lab.set_address("sbc-01", &a_quarantine_ip);
    assert!(lab.ping("sbc-01", "10.99.0.10"), "A reaches the remediation host");
    assert!(!lab.ping("sbc-01", "10.10.0.12"), "A no longer reaches B");

    // A second quarantined server cannot reach the first.
    let out = manager.cordon(&["quarantine", "sbc-03", "--wait"]);
    assert!(out.status.success(), "quarantine C: {}", stderr(&out));
    let c = manager.json(&["servers", "show", "sbc-03", "-o", "json"]);
    let c_quarantine_ip = c["ip"].as_str().unwrap().to_string();
    assert!(in_pool(&c_quarantine_ip));
    assert_ne!(c_quarantine_ip, a_quarantine_ip, "never two servers one address");
    lab.set_address("sbc-03", &c_quarantine_ip);
    assert!(lab.ping("sbc-03", "10.99.0.10"), "C reaches the remediation host");
    assert!(!lab.ping("sbc-03", &a_quarantine_ip), "C cannot reach A: quarantine ports are isolated");

    // Release A.
    let out = manager.cordon(&["unquarantine", "sbc-01", "--wait"]);
    assert!(out.status.success(), "unquarantine A: {}", stderr(&out));
    let a = manager.json(&["servers", "show", "sbc-01", "-o", "json"]);
    assert_eq!(a["state"], "operational");
    assert_eq!(a["network"], "office");
    assert_eq!(a["ip"], "10.10.0.11");
    assert_eq!(lab.port("p-sbc-01"), ("br-office".to_string(), false));
    lab.set_address("sbc-01", "10.10.0.11");
    assert!(lab.ping("sbc-01", "10.10.0.12"), "A reaches B again");

    // The actions listing keeps its contract.
    let actions = manager.json(&["actions", "list", "-o", "json"]);
    let actions = actions.as_array().unwrap();
    assert_eq!(actions.len(), 3);
    for action in actions {
        for field in ["id", "kind", "state", "server", "address", "message", "created_at"] {
            assert!(action.get(field).is_some(), "actions list -o json lacks {field}: {action}");
        }
        assert_eq!(action["state"], "succeeded");
        assert!(action["message"]["number"].as_u64().is_some());
        assert!(action["message"]["text"].as_str().is_some());
    }
    assert_eq!(actions[0]["kind"], "unquarantine");
    assert_eq!(actions[0]["server"], "sbc-01");
    let failed = manager.json(&["actions", "list", "--state", "failed", "-o", "json"]);
    assert_eq!(failed.as_array().unwrap().len(), 0);

    // The journal of the first action names each step.
    let first = actions.last().unwrap()["id"].as_i64().unwrap().to_string();
    let shown = manager.json(&["actions", "show", &first, "-o", "json"]);
    let steps: Vec<&str> = shown["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(steps, ["ensure_quarantine_address", "ensure_port_on_bridge", "record_nic_position"]);
    assert_eq!(shown["steps"][1]["outcome"], "done");

    // Human output works too.
    let table = manager.cordon(&["servers", "list"]);
    assert!(stdout(&table).contains("sbc-03") && stdout(&table).contains("quarantined"), "{}", stdout(&table));
}

/// The newest action, shown with its steps and messages.
fn newest_action(manager: &Manager) -> serde_json::Value {
    let id = manager.json(&["actions", "list", "-o", "json"])[0]["id"].as_i64().unwrap().to_string();
    manager.json(&["actions", "show", &id, "-o", "json"])
}

fn port_step(action: &serde_json::Value) -> serde_json::Value {
    action["steps"].as_array().unwrap().iter().find(|s| s["name"] == "ensure_port_on_bridge").unwrap().clone()
}

#[test]
fn resync_after_a_port_was_moved_by_hand() {
    let lab = Lab::up(&format!("r{}", std::process::id() % 100_000));
    let manager = Manager::start(&lab.config(), &lab.dir.path().join("data"));

    // The operator moved B's port by hand (the seed's recovery procedure) ...
    lab.move_by_hand("p-sbc-02", "br-quarantine", true);
    // ... then runs `cordon quarantine` so that the records match.
    let out = manager.cordon(&["quarantine", "sbc-02", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = newest_action(&manager);
    assert_eq!(port_step(&shown)["outcome"], "already_in_place", "{shown}");
    assert!(
        shown["messages"].as_array().unwrap().iter().any(|m| m["number"] == 21005),
        "message 21005 says the port was already in place: {shown}"
    );
    assert!(shown["message"]["text"].as_str().unwrap().contains("already there"), "{shown}");
    let b = manager.json(&["servers", "show", "sbc-02", "-o", "json"]);
    assert_eq!((b["state"].as_str(), b["network"].as_str()), (Some("quarantined"), Some("quarantine")));
    assert_eq!(lab.port("p-sbc-02"), ("br-quarantine".to_string(), true));

    // The reverse: moved back by hand, then `cordon unquarantine`.
    lab.move_by_hand("p-sbc-02", "br-office", false);
    let out = manager.cordon(&["unquarantine", "sbc-02", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = newest_action(&manager);
    assert_eq!(port_step(&shown)["outcome"], "already_in_place", "{shown}");
    let b = manager.json(&["servers", "show", "sbc-02", "-o", "json"]);
    assert_eq!(
        (b["state"].as_str(), b["network"].as_str(), b["ip"].as_str()),
        (Some("operational"), Some("office"), Some("10.10.0.12"))
    );
    assert_eq!(lab.port("p-sbc-02"), ("br-office".to_string(), false));
    assert!(lab.ping("sbc-02", "10.10.0.11"));
}

#[test]
fn refusals_are_numbered_and_change_nothing() {
    let lab = Lab::up(&format!("u{}", std::process::id() % 100_000));
    let manager = Manager::start(&lab.config(), &lab.dir.path().join("data"));

    // An unknown server.
    let out = manager.cordon(&["quarantine", "no-such-server", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("ERROR 60002 server not found. name=no-such-server"), "{}", stderr(&out));

    // No token, and a wrong one.
    let out = std::process::Command::new(CORDON)
        .args(["quarantine", "sbc-01"])
        .env("CORDON_URL", &manager.url)
        .env_remove("CORDON_TOKEN")
        .env_remove("CORDON_TOKEN_FILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("60020"), "{}", stderr(&out));
    let out = std::process::Command::new(CORDON)
        .args(["servers", "list"])
        .env("CORDON_URL", &manager.url)
        .env("CORDON_TOKEN", "cordon_not-a-real-token")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("60020"), "{}", stderr(&out));

    // Already quarantined / not quarantined.
    let out = manager.cordon(&["unquarantine", "sbc-01"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("41002"), "{}", stderr(&out));
    assert!(manager.cordon(&["quarantine", "sbc-01", "--wait"]).status.success());
    let out = manager.cordon(&["quarantine", "sbc-01"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("WARNING 41001 server sbc-01 is already quarantined"), "{}", stderr(&out));

    // Checking or retrying a succeeded action is refused.
    let out = manager.cordon(&["actions", "check", "1"]);
    assert!(stderr(&out).contains("41003"), "{}", stderr(&out));
    let out = manager.cordon(&["actions", "show", "999"]);
    assert!(stderr(&out).contains("60003"), "{}", stderr(&out));

    // Only the one quarantine happened.
    assert_eq!(manager.json(&["actions", "list", "-o", "json"]).as_array().unwrap().len(), 1);
    assert_eq!(lab.port("p-sbc-02"), ("br-office".to_string(), false));
    assert_eq!(lab.port("p-sbc-03"), ("br-office".to_string(), false));

    // A malformed configuration: numbered error naming file, line and key; nothing starts.
    let bad = lab.dir.path().join("bad.toml");
    let text =
        std::fs::read_to_string(lab.config()).unwrap().replace("role = \"quarantine\"", "role = \"quarantaine\"");
    std::fs::write(&bad, text).unwrap();
    let out = std::process::Command::new(CORDON).args(["serve", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("ERROR 60001 invalid configuration"), "{err}");
    assert!(err.contains("bad.toml:") && err.contains("role"), "names file, line and key: {err}");

    // A driver failure: the switch namespace vanished. The action fails with 60010, says so,
    // and the server is not recorded as quarantined.
    std::process::Command::new("ip").args(["netns", "delete", &lab.switch()]).status().unwrap();
    let out = manager.cordon(&["quarantine", "sbc-02", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("60033") && stderr(&out).contains("60010"), "{}", stderr(&out));
    let b = manager.json(&["servers", "show", "sbc-02", "-o", "json"]);
    assert_eq!(b["state"], "quarantine_failed");
    assert_eq!(b["network"], "office", "the record did not follow a move that did not happen");

    // Looking a server up by address: found by its operational address, 67198 otherwise.
    let by_address = manager.json(&["servers", "show", "10.10.0.13", "-o", "json"]);
    assert_eq!(by_address["name"], "sbc-03");
    let out = manager.cordon(&["servers", "show", "10.10.0.99"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("ERROR 67198 server not found. ip=10.10.0.99"), "{}", stderr(&out));

    // explain
    let out = std::process::Command::new(CORDON).args(["explain", "67198"]).output().unwrap();
    assert!(out.status.success());
    assert!(stdout(&out).contains("server not found. ip={address}") && stdout(&out).contains("Remedy"));
    let out = std::process::Command::new(CORDON).args(["explain", "12345"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn status_metrics_and_drift_on_the_lab() {
    let lab = Lab::up(&format!("s{}", std::process::id() % 100_000));
    let data = lab.dir.path().join("data");
    let base = std::fs::read_to_string(lab.config()).unwrap();
    let with = |settings: &str| base.replacen("[manager]\n", &format!("[manager]\n{settings}"), 1);
    std::fs::write(lab.config(), with("reconcile_interval = \"1s\"\n")).unwrap();
    let manager = Manager::start(&lab.config(), &data);

    // Status: running, the switch checked now, actions counted.
    let status = manager.json(&["status", "-o", "json"]);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["database"].as_str().unwrap().starts_with("sqlite:"), "{status}");
    let switch = status["drivers"].as_array().unwrap().iter().find(|d| d["name"] == "tor-1").cloned().unwrap();
    assert_eq!((switch["kind"].as_str(), switch["healthy"].as_bool()), (Some("linux-bridge"), Some(true)), "{status}");
    assert!(manager.cordon(&["status"]).status.success());

    // Drift: a quarantined server's port put back by hand is found by the reconciler.
    assert!(manager.cordon(&["quarantine", "sbc-01", "--wait"]).status.success());
    lab.move_by_hand("p-sbc-01", "br-office", false);
    // Within one reconciler period (1 s here), without anyone asking.
    manager.wait_until(5, "the periodic reconciler's drift message", |m| m.log().contains("number=41009"));
    let report = manager.json(&["reconcile", "-o", "json"]);
    let drifts = report["drifts"].as_array().unwrap();
    assert_eq!(drifts.len(), 1, "{report}");
    assert_eq!((drifts[0]["server"].as_str(), drifts[0]["target"].as_str()), (Some("sbc-01"), Some("tor-1/p-sbc-01")));
    assert!(manager.log().contains("number=41009"), "the drift is logged with its number");
    assert_eq!(lab.port("p-sbc-01"), ("br-office".to_string(), false), "report changes nothing");

    // Every metric family the issue names is served.
    let token = std::fs::read_to_string(&manager.token_file).unwrap();
    let metrics = std::process::Command::new("curl")
        .args(["-sf", "-H"])
        .arg(format!("Authorization: Bearer {}", token.trim()))
        .arg(format!("{}/metrics", manager.url))
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    for family in [
        "cordon_detections_total",
        "cordon_actions",
        "cordon_driver_call_seconds",
        "cordon_time_to_contain_seconds",
        "cordon_drift_total",
        "cordon_breaker_tripped",
    ] {
        assert!(metrics.contains(&format!("# TYPE {family} ")), "{family} is missing:\n{metrics}");
    }
    assert!(metrics.contains("cordon_drift_total "), "{metrics}");
    assert!(metrics.contains("cordon_actions{kind=\"quarantine\",state=\"succeeded\"} 1"), "{metrics}");
    assert!(metrics.contains("cordon_driver_call_seconds_count{driver=\"linux-bridge\"} 1"), "{metrics}");

    // With `on_drift = "enforce"` the reconciler puts the port back into quarantine by itself.
    manager.kill();
    std::fs::write(lab.config(), with("reconcile_interval = \"1s\"\non_drift = \"enforce\"\n")).unwrap();
    let manager = Manager::start(&lab.config(), &data);
    manager
        .wait_until(15, "the port back in quarantine", |_| lab.port("p-sbc-01") == ("br-quarantine".to_string(), true));
    let actions = manager.json(&["actions", "list", "-o", "json"]);
    assert_eq!(actions[0]["requested_by"], "reconciler", "{actions}");

    // A stopped manager: status says so, non-zero.
    let url = manager.url.clone();
    let token_file = manager.token_file.clone();
    manager.kill();
    let out = std::process::Command::new(CORDON)
        .args(["status"])
        .env("CORDON_URL", &url)
        .env("CORDON_TOKEN_FILE", &token_file)
        .env_remove("CORDON_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("60031") && stderr(&out).contains("cannot reach"), "{}", stderr(&out));
}
