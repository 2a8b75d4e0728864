//! The audit trail end to end: a real `cordon serve` on the lab records who quarantined what and
//! every state change; `cordon audit verify` passes on the untouched database and names the row
//! after someone edits the SQLite file directly (an edited row, a deleted row, two swapped rows).

mod common;

use common::*;

fn sqlite(db: &std::path::Path, sql: &str) -> String {
    let out = run("sqlite3", &[db.to_str().unwrap(), sql]);
    assert!(out.status.success(), "sqlite3 {sql}: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn the_audit_trail_records_everything_and_verify_names_tampered_rows() {
    let lab = Lab::up(&format!("au{}", std::process::id() % 100_000));
    let data = lab.dir.path().join("data");
    let manager = Manager::start(&lab.config(), &data);
    for args in
        [&["quarantine", "sbc-01", "--reason", "audit e2e", "--wait"][..], &["unquarantine", "sbc-01", "--wait"][..]]
    {
        let out = manager.cordon(args);
        assert!(out.status.success(), "{args:?}: {}{}", stderr(&out), manager.log());
    }

    // Who did what, from where and why; and the engine's state changes, in order.
    let rows = manager.json(&["audit", "list", "--limit", "1000", "-o", "json"]);
    let rows: Vec<&serde_json::Value> = rows.as_array().unwrap().iter().rev().collect();
    let lines: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {} {} {}", r["actor"].as_str().unwrap(), r["origin"], r["verb"], r["target"]))
        .collect();
    let quarantine =
        lines.iter().position(|l| l.contains("token:admin \"127.0.0.1\" \"quarantine\" \"server sbc-01\""));
    assert!(quarantine.is_some(), "the operator's request with its origin: {lines:#?}");
    let reason = rows.iter().find(|r| r["verb"] == "action_created").unwrap();
    assert!(reason["detail"].as_str().unwrap().contains("audit e2e"), "why: {reason}");
    for verb in ["action_created", "action_state", "nic_position", "server_state"] {
        assert!(rows.iter().any(|r| r["verb"] == verb), "{verb} is audited: {lines:#?}");
    }
    assert!(
        rows.iter().any(|r| r["verb"] == "server_state" && r["detail"] == "unquarantining -> operational"),
        "{lines:#?}"
    );
    let table = manager.cordon(&["audit", "list"]);
    assert!(stdout(&table).starts_with("ID  AT"), "{}", stdout(&table));

    let out = manager.cordon(&["audit", "verify"]);
    assert!(out.status.success(), "untouched: {}{}", stdout(&out), stderr(&out));
    let total = rows.len();
    assert!(stdout(&out).contains(&format!("21095 the audit trail verifies: {total} rows")), "{}", stdout(&out));

    // Someone with the database file covers their tracks; each case starts from the original.
    let db = data.join("cordon.db");
    sqlite(&db, "CREATE TABLE audit_saved AS SELECT * FROM audit");
    let restore = "DELETE FROM audit; INSERT INTO audit SELECT * FROM audit_saved;";
    let cases = [
        ("an edited row", "UPDATE audit SET detail = 'nothing happened' WHERE id = 3".to_string(), 3),
        ("a deleted row", "DELETE FROM audit WHERE id = 3".to_string(), 4),
        (
            "two swapped rows",
            "UPDATE audit SET id = -2 WHERE id = 2; UPDATE audit SET id = 2 WHERE id = 3; UPDATE audit SET id = 3 WHERE id = -2"
                .to_string(),
            2,
        ),
    ];
    for (case, sql, row) in cases {
        sqlite(&db, &format!("{restore} {sql}"));
        let out = manager.cordon(&["audit", "verify"]);
        assert!(!out.status.success(), "{case}: verify must fail: {}", stdout(&out));
        let said = stderr(&out);
        assert!(said.contains("60094") && said.contains(&format!("broken at row {row}:")), "{case}: {said}");
        let json = manager.cordon(&["audit", "verify", "-o", "json"]);
        assert!(!json.status.success(), "{case}");
        let verdict: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        assert_eq!(verdict["ok"], false, "{case}");
        assert_eq!(verdict["broken_at"], row, "{case}");
    }
    sqlite(&db, restore);
    assert!(manager.cordon(&["audit", "verify"]).status.success(), "restored");
}
