//! A real clamd with a custom signature database finds a test file; its VirusEvent runs the real
//! `cordon report`, which posts the detection to a real `cordon serve`; the policy quarantines
//! the server that reported it.

mod common;
mod support;

use std::time::Duration;

use common::*;
use support::clamav::{Clamd, ndb_signature};
use support::{append_config, wait_for};

/// The body signature's name; clamd reports it with `.UNOFFICIAL` (not from the official DB).
const SIGNATURE: &str = "Cordon.Test.Canary-1";
const CANARY: &str = "CORDON-TEST-CANARY-5b1e9d";

#[test]
fn clamav_virus_event_reports_a_detection() {
    let lab = Lab::up(&format!("cv{}", std::process::id() % 100_000));
    let token_file = lab.dir.path().join("clamav.token");
    write_secret(&token_file, &format!("{}\n", support::token()));
    append_config(
        &lab.config(),
        &format!(
            r#"[[source]]
name = "clamav"
type = "webhook"
token_file = "{}"

[policy]
default_action = "notify"

[[policy.rule]]
name = "malware quarantines"
sources = ["clamav"]
action = "quarantine"
mode = "auto"
"#,
            token_file.display()
        ),
    );
    let manager = Manager::start(&lab.config(), &lab.dir.path().join("data"));

    // clamd runs VirusEvent with `sh -c` and an environment of only CLAM_VIRUSEVENT_*, so the
    // command names everything; sbc-03 is the host this "endpoint agent" runs for.
    let dir = lab.dir.path().join("clamav");
    std::fs::create_dir_all(&dir).unwrap();
    let report_log = dir.join("report.log");
    let virus_event = format!(
        "{CORDON} report --url {} --token-file {} --source clamav --address 10.10.0.13 --virus %v >>{} 2>&1",
        manager.url,
        token_file.display(),
        report_log.display()
    );
    let clamd = Clamd::start(&dir, &ndb_signature(SIGNATURE, CANARY), &virus_event);

    // A clean file: nothing found, nothing reported.
    let clean = dir.join("clean.txt");
    std::fs::write(&clean, "nothing to see here\n").unwrap();
    let out = clamd.scan(&clean);
    assert_eq!(out.status.code(), Some(0), "clean file: {}{}", stdout(&out), stderr(&out));

    // The "infected" file.
    let infected = dir.join("invoice.txt");
    std::fs::write(&infected, format!("Dear customer,\n{CANARY}\nregards\n")).unwrap();
    let out = clamd.scan(&infected);
    let virus = format!("{SIGNATURE}.UNOFFICIAL");
    assert_eq!(out.status.code(), Some(1), "infected file: {}{}\n{}", stdout(&out), stderr(&out), clamd.log());
    assert!(stdout(&out).contains(&format!("{virus} FOUND")), "{}", stdout(&out));

    let reported = wait_for(Duration::from_secs(15), Duration::from_millis(50), || {
        let listed = manager.json(&["detections", "list", "--source", "clamav", "-o", "json"]);
        // Listed as soon as it is stored; `decision` (and `server`) once the engine processed it.
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["signature"] == virus.as_str() && !d["decision"].is_null())
            .cloned()
    });
    let detection = reported.unwrap_or_else(|| {
        panic!(
            "no processed clamav detection within 15 s\n--- report.log:\n{}\n--- clamd.log:\n{}\n--- cordon serve:\n{}",
            std::fs::read_to_string(&report_log).unwrap_or_default(),
            clamd.log(),
            manager.log()
        )
    });
    assert_eq!(detection["source"], "clamav");
    assert_eq!(detection["subject"], "10.10.0.13");
    assert_eq!(detection["server"], "sbc-03");
    assert_eq!(detection["severity"], "high", "cordon report's default severity");
    let listed = manager.json(&["detections", "list", "--source", "clamav", "-o", "json"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "one scan, one detection (the clean file none): {listed:#}");

    // The policy's action for sbc-03, and its effect on the switch.
    let action = wait_for(Duration::from_secs(15), Duration::from_millis(50), || {
        let actions = manager.json(&["actions", "list", "--server", "sbc-03", "-o", "json"]);
        actions.as_array().unwrap().first().cloned()
    });
    let action = action.unwrap_or_else(|| panic!("no action for sbc-03\n{}", manager.log()));
    assert_eq!(action["kind"], "quarantine", "{action}");
    assert_eq!(action["detections"], 1, "{action}");
    let quarantined = wait_for(Duration::from_secs(15), Duration::from_millis(50), || {
        (manager.json(&["servers", "show", "sbc-03", "-o", "json"])["state"] == "quarantined").then_some(())
    });
    assert!(quarantined.is_some(), "sbc-03 quarantined\n{}", manager.log());
    assert_eq!(lab.port("p-sbc-03"), ("br-quarantine".to_string(), true));
    assert_eq!(lab.port("p-sbc-01"), ("br-office".to_string(), false));
    let report = std::fs::read_to_string(&report_log).unwrap_or_default();
    assert!(report.contains(&virus), "cordon report said what it reported: {report}");
}
