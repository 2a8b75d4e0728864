//! End to end through a real BMC: the lab (scripts/lab.sh), a real `cordon serve` whose sbc-02
//! and sbc-03 have a `[server.bmc]` on a real sushy-tools emulator (`sushy-emulator --fake`,
//! HTTPS with a test CA, HTTP Basic authentication), and the real `cordon` command.
//!
//! The sushy harness is the driver crate's (crates/cordon-drivers/tests/redfish_support), used
//! by path. Its venv lives under this build's `CARGO_TARGET_TMPDIR`: the first run creates it
//! (pip must reach PyPI, once), later runs reuse it. Needs root (the lab), `python3` with
//! `venv`, and `openssl`.
//!
//! Timings with `--nocapture`: `cargo test -p cordon --test redfish_e2e -- --nocapture`.

mod common;
// Only `Sushy` (and its constants) is used here; the rest serves the driver crate's tests.
#[allow(dead_code)]
#[path = "../../cordon-drivers/tests/redfish_support/mod.rs"]
mod redfish_support;

use std::time::Instant;

use common::*;
use redfish_support::{PASSWORD, SYSTEM_NAME, SYSTEM_UUID, Sushy, USERNAME};

const WRONG_PASSWORD: &str = "not-the-bmc-password";

/// A TOML basic string (a JSON string is one).
fn toml_string(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// The lab's configuration with the reboot timings and a `[server.bmc]` for sbc-02 (the right
/// password) and sbc-03 (a wrong one), both on `sushy`'s one system: sbc-02 by name (sushy
/// answers 307 to the UUID path), sbc-03 by UUID, as no two servers may share endpoint and
/// system.
fn configure(lab: &Lab, sushy: &Sushy) {
    let good = lab.dir.path().join("sbc-02.bmc");
    let bad = lab.dir.path().join("sbc-03.bmc");
    write_secret(&good, &format!("{PASSWORD}\n"));
    write_secret(&bad, &format!("{WRONG_PASSWORD}\n"));
    let bmc = |system: &str, password_file: &std::path::Path| {
        format!(
            "[server.bmc]\ndriver = \"redfish\"\nendpoint = {}\nsystem = {}\nusername = {}\npassword_file = {}\n\
             ca_file = {}\n",
            toml_string(&sushy.endpoint()),
            toml_string(system),
            toml_string(USERNAME),
            toml_string(password_file.to_str().unwrap()),
            toml_string(sushy.pki.ca().to_str().unwrap()),
        )
    };
    let mut text = std::fs::read_to_string(lab.config()).unwrap();
    // TOML: a `[server.bmc]` belongs to the `[[server]]` above it, so each goes right after its
    // server's NIC block, before the next `[[server]]` (sbc-03 is the last one of the file).
    let after = |text: &str, needle: &str| {
        assert_eq!(text.matches(needle).count(), 1, "{needle:?} once in the lab's config:\n{text}");
        text.find(needle).unwrap() + needle.len()
    };
    let at = after(&text, "\n[manager]\n");
    text.insert_str(at, "graceful_timeout = \"15s\"\nreboot_deadline = \"60s\"\n");
    let at = after(&text, "port = \"p-sbc-02\"\n");
    text.insert_str(at, &bmc(&format!("/redfish/v1/Systems/{SYSTEM_NAME}"), &good));
    let at = after(&text, "port = \"p-sbc-03\"\n");
    assert_eq!(text[at..].trim(), "", "sbc-03's NIC block ends the lab's config:\n{text}");
    text.insert_str(at, &bmc(&format!("/redfish/v1/Systems/{SYSTEM_UUID}"), &bad));
    std::fs::write(lab.config(), text).unwrap();
}

/// The action id from `reboot of X queued as action N`.
fn queued_id(out: &std::process::Output) -> String {
    let text = stdout(out);
    let id = text.lines().find_map(|line| line.split_once(" queued as action ").map(|(_, id)| id.trim().to_string()));
    id.unwrap_or_else(|| panic!("no action id in {text:?} {}", stderr(out)))
}

/// The `ensure_rebooted` step of an action (exactly one).
fn reboot_step(action: &serde_json::Value) -> serde_json::Value {
    let steps: Vec<_> = action["steps"].as_array().unwrap().iter().filter(|s| s["name"] == "ensure_rebooted").collect();
    assert_eq!(steps.len(), 1, "one ensure_rebooted step: {action:#}");
    steps[0].clone()
}

#[test]
fn reboot_through_a_real_redfish_bmc() {
    let begun = Instant::now();
    // Declared in this order, dropped in the reverse one (also on panic): the manager, then
    // sushy, then the lab (and its folder with the password files).
    let lab = Lab::up(&format!("rf{}", std::process::id() % 100_000));
    let lab_up = begun.elapsed();
    let sushy = Sushy::start("On");
    let sushy_up = sushy.startup.as_secs_f64();
    eprintln!("lab up in {:.2} s; sushy-emulator answered {sushy_up:.2} s after spawn", lab_up.as_secs_f64());
    configure(&lab, &sushy);
    let manager = Manager::start(&lab.config(), &lab.dir.path().join("data"));
    let ready = begun.elapsed();

    // sbc-01 has no BMC: refused at once, nothing recorded.
    let out = manager.cordon(&["reboot", "sbc-01", "--reason", "e2e", "--wait"]);
    assert!(!out.status.success(), "reboot of sbc-01 without a BMC: {}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("60035"), "refused with 60035: {}{}", stdout(&out), stderr(&out));
    assert!(!stdout(&out).contains("queued"), "{}", stdout(&out));
    let actions = manager.json(&["actions", "list", "-o", "json"]);
    assert_eq!(actions.as_array().unwrap().len(), 0, "a refusal records no action: {actions:#}");

    // sbc-03's BMC rejects the password: 60017, and --wait exits non-zero.
    let clock = Instant::now();
    let out = manager.cordon(&["reboot", "sbc-03", "--reason", "e2e wrong password", "--wait", "--timeout", "30"]);
    let wrong_password = clock.elapsed();
    assert!(!out.status.success(), "reboot with a wrong password: {}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("60017"), "--wait names 60017: {}{}", stdout(&out), stderr(&out));
    let id = queued_id(&out);
    let action = manager.json(&["actions", "show", &id, "-o", "json"]);
    assert_eq!(action["kind"], "reboot", "{action:#}");
    assert_eq!(action["server"], "sbc-03", "{action:#}");
    assert_eq!(action["state"], "failed", "{action:#}");
    assert_eq!(action["message"]["number"], 60017, "{action:#}");
    let step = reboot_step(&action);
    assert_eq!(step["outcome"], "failed", "{step:#}");
    assert_eq!(step["message_number"], 60017, "{step:#}");
    assert!(step["target"].as_str().unwrap().contains(SYSTEM_UUID), "{step:#}");
    assert!(step["detail"].as_str().unwrap().contains("401"), "{step:#}");

    // sbc-02: graceful restart through sushy, confirmed by the power states it went through.
    let clock = Instant::now();
    let out = manager.cordon(&["reboot", "sbc-02", "--reason", "e2e", "--wait", "--timeout", "90"]);
    let reboot = clock.elapsed();
    assert!(out.status.success(), "reboot of sbc-02: {}{}\n{}", stdout(&out), stderr(&out), manager.log());
    assert!(stdout(&out).contains("21015"), "{}", stdout(&out));
    let id = queued_id(&out);
    let action = manager.json(&["actions", "show", &id, "-o", "json"]);
    eprintln!("reboot of sbc-02 confirmed in {:.2} s: {}", reboot.as_secs_f64(), action["message"]["text"]);
    assert_eq!(action["kind"], "reboot", "{action:#}");
    assert_eq!(action["server"], "sbc-02", "{action:#}");
    assert_eq!(action["state"], "succeeded", "{action:#}");
    assert_eq!(action["message"]["number"], 21015, "{action:#}");
    let text = action["message"]["text"].as_str().unwrap();
    assert!(text.starts_with("reboot of sbc-02 confirmed: "), "{text}");
    let step = reboot_step(&action);
    assert_eq!(step["outcome"], "done", "{step:#}");
    let detail = step["detail"].as_str().unwrap();
    // "graceful via redfish: PowerState On at +0.0 s; GracefulRestart accepted (204) at ...;
    // PowerState Off at ...; PowerState On at ..." (or "forced via redfish: ..." in the rare
    // case where sushy restarts before the first read: see the driver crate's tests).
    assert!(detail.starts_with("graceful via redfish: ") || detail.starts_with("forced via redfish: "), "{detail}");
    let at = |needle: &str, from: usize| detail[from..].find(needle).map(|i| i + from);
    let requested = at("GracefulRestart accepted", 0).unwrap_or_else(|| panic!("request in {detail}"));
    let off = at("PowerState Off", requested).unwrap_or_else(|| panic!("Off after the request in {detail}"));
    at("PowerState On", off).unwrap_or_else(|| panic!("On after Off in {detail}"));
    assert!(text.contains(detail), "the message carries the observations: {text}");
    let numbers: Vec<_> = action["messages"].as_array().unwrap().iter().map(|m| m["number"].clone()).collect();
    assert!(!numbers.contains(&serde_json::json!(21016)), "sushy's system was on, not powered on: {numbers:?}");

    // sbc-01 still has no action; the password never reaches the log or the records.
    let actions = manager.json(&["actions", "list", "-o", "json"]);
    let servers: Vec<_> = actions.as_array().unwrap().iter().map(|a| a["server"].clone()).collect();
    assert_eq!(servers, [serde_json::json!("sbc-02"), serde_json::json!("sbc-03")], "{actions:#}");
    let log = manager.log();
    for secret in [PASSWORD, WRONG_PASSWORD] {
        assert!(!log.contains(secret), "the serve log leaks a BMC password");
        assert!(!actions.to_string().contains(secret), "the actions leak a BMC password");
    }
    eprintln!(
        "ready in {:.2} s; wrong password failed in {:.2} s; reboot in {:.2} s; total {:.2} s",
        ready.as_secs_f64(),
        wrong_password.as_secs_f64(),
        reboot.as_secs_f64(),
        begun.elapsed().as_secs_f64()
    );
}
