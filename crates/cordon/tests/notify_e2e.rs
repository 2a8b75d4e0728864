//! Notifications end to end: the real binary on the real lab, a real SMTP server on loopback
//! (aiosmtpd), a followed eve.json and a policy that holds quarantines for approval.
//!
//! The administrator receives the "awaits approval" e-mail with its links; opening one changes
//! nothing; posting "approve quarantine" quarantines the server once; a second use, another link
//! of the same action and an expired link are refused; the "quarantine done" e-mail names the
//! new network and address; after the unquarantine the user hears they may resume work.

mod common;
#[path = "../../cordon-notify/tests/support/mod.rs"]
mod smtp;

use std::io::Write;
use std::time::Duration;

use common::*;
use cordon_notify::{Choice, Link, LinkSigner};
use smtp::{SmtpSink, links};

const ADMIN: &str = "infra-sales@example.com";
const USER: &str = "user01@example.com";

fn append(path: &std::path::Path, text: &str) {
    std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
}

fn eve_alert(subject: &str, sid: u32) -> String {
    format!(
        r#"{{"timestamp":"2026-11-27T10:00:00.000000+0000","flow_id":1,"in_iface":"p-sbc-01","event_type":"alert","src_ip":"{subject}","src_port":40000,"dest_ip":"203.0.113.5","dest_port":80,"proto":"TCP","alert":{{"action":"allowed","gid":1,"signature_id":{sid},"rev":1,"signature":"CORDON NOTIFY TEST {sid}","category":"A Network Trojan was detected","severity":1}}}}"#
    ) + "\n"
}

fn server(manager: &Manager, name: &str) -> serde_json::Value {
    manager.json(&["servers", "show", name, "-o", "json"])
}

fn action(manager: &Manager, id: i64) -> serde_json::Value {
    manager.json(&["actions", "show", &id.to_string(), "-o", "json"])
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// (status, body) of a GET or POST without any token.
fn call(client: &reqwest::blocking::Client, method: &str, url: &str) -> (u16, String) {
    let request = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    };
    let response = request.send().unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().unwrap())
}

#[test]
fn the_administrator_approves_by_e_mail_once_and_the_user_hears_back() {
    let sink = SmtpSink::start();
    let lab = Lab::up(&format!("n{}", std::process::id() % 100_000));
    let dir = lab.dir.path();
    let eve = dir.join("eve.json");
    std::fs::write(&eve, "").unwrap();
    let secret = dir.join("link.secret");
    write_secret(&secret, "0123456789abcdef0123456789abcdef-notify-e2e\n");
    // A fixed port, so that the links in the e-mails point at this Cordon.
    let port = free_port();
    let public_url = format!("http://127.0.0.1:{port}");
    let config = std::fs::read_to_string(lab.config()).unwrap();
    assert!(config.contains("listen = \"127.0.0.1:0\""), "{config}");
    let config = config.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""));
    std::fs::write(
        lab.config(),
        format!(
            "{config}
[[source]]
name = \"ids-1\"
type = \"suricata-eve\"
path = \"{eve}\"

[policy]
default_action = \"notify\"

[[policy.rule]]
name = \"hold quarantines for the administrator\"
sources = [\"ids-1\"]
action = \"quarantine\"
mode = \"approve\"

[notify]
smtp = \"{smtp}\"
from = \"cordon@example.com\"
public_url = \"{public_url}\"
link_secret_file = \"{secret}\"
link_ttl = \"1h\"
",
            eve = eve.display(),
            smtp = sink.url(),
            secret = secret.display(),
        ),
    )
    .unwrap();
    let manager = Manager::start(&lab.config(), &dir.join("data"));
    assert_eq!(manager.url, public_url);

    // A detection: the action waits for approval and the administrator is told.
    append(&eve, &eve_alert("10.10.0.11", 1));
    let mail = sink.wait_for(20, "awaiting approval", |m| m.subject.starts_with("[Cordon 21014]"));
    assert_eq!(mail.rcpt_tos, [ADMIN]);
    assert!(mail.subject.contains("quarantine of sbc-01 awaits approval"), "{}", mail.subject);
    for needle in ["Server:    sbc-01 (tenant sales)", "Network:   10.10.0.11 on office", "CORDON NOTIFY TEST 1"] {
        assert!(mail.body.contains(needle), "no {needle:?} in\n{}", mail.body);
    }
    let offered = links(&mail.body);
    let labels: Vec<&str> = offered.iter().map(|(label, _)| label.as_str()).collect();
    assert_eq!(labels, ["Approve quarantine", "Approve reboot", "Ignore (reject the action)"], "{}", mail.body);
    assert!(offered.iter().all(|(_, url)| url.starts_with(&format!("{public_url}/approve/"))));
    let (approve, ignore) = (offered[0].1.clone(), offered[2].1.clone());
    let actions = manager.json(&["actions", "list", "-o", "json"]);
    let id = actions[0]["id"].as_i64().unwrap();
    assert_eq!(actions[0]["state"], "awaiting_approval");

    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();

    // Opening the link (as a mail scanner would) shows a form and decides nothing.
    let (status, page) = call(&client, "GET", &approve);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<form method=\"post\">") && page.contains("Approve quarantine of sbc-01?"), "{page}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(action(&manager, id)["state"], "awaiting_approval");

    // An expired link, signed with the same secret: refused, nothing decided.
    let signer = LinkSigner::from_file(&secret, &public_url, Duration::from_secs(3600)).unwrap();
    let now = chrono_now();
    let expired = Link { expires: now - 60, ..signer.issue(id, Choice::ApproveQuarantine, ADMIN, now) };
    let expired = signer.url(&signer.sign(&expired));
    for method in ["GET", "POST"] {
        let (status, page) = call(&client, method, &expired);
        assert_eq!(status, 410, "{method}: {page}");
        assert!(page.contains("ERROR 60071"), "{page}");
    }
    // A tampered link: refused.
    let tampered = format!("{}A", approve);
    assert_eq!(call(&client, "POST", &tampered).0, 403);
    assert_eq!(action(&manager, id)["state"], "awaiting_approval");

    // Posting approves, once: the server is quarantined.
    let (status, page) = call(&client, "POST", &approve);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("approved as <b>quarantine</b>"), "{page}");
    manager.wait_until(20, "sbc-01 quarantined through the link", |m| server(m, "sbc-01")["state"] == "quarantined");
    assert_eq!(lab.port("p-sbc-01"), ("br-quarantine".to_string(), true));

    // A second use of the link, and the other links of the action: refused with 60072.
    for (method, url) in [("POST", &approve), ("POST", &ignore), ("GET", &ignore)] {
        let (status, page) = call(&client, method, url);
        assert_eq!(status, 409, "{method} {url}: {page}");
        assert!(page.contains("ERROR 60072"), "{page}");
    }
    let shown = action(&manager, id);
    assert_eq!((shown["state"].as_str(), shown["kind"].as_str()), (Some("succeeded"), Some("quarantine")));
    let approved = format!("action {id} approved as quarantine by link:{ADMIN}");
    let messages = shown["messages"].as_array().unwrap();
    assert!(messages.iter().any(|m| m["number"] == 21012 && m["text"] == approved.as_str()), "{messages:?}");
    assert!(manager.log().contains("number=21031"), "the link's decision is logged");

    // "Quarantine done", with the new network and address.
    let address = server(&manager, "sbc-01")["ip"].as_str().map(str::to_string);
    let done = sink.wait_for(20, "quarantine done", |m| m.subject.starts_with("[Cordon 21002]"));
    assert_eq!(done.rcpt_tos, [ADMIN]);
    let address = address.unwrap_or_else(|| panic!("no current address: {}", server(&manager, "sbc-01")));
    assert!(address.starts_with("10.99.0."), "{address}");
    assert!(done.subject.contains(&format!("sbc-01 is quarantined at {address} (quarantine)")), "{}", done.subject);
    assert!(
        done.body.contains(&format!(
            "Network:   {address} on quarantine (NIC 02:00:00:00:01:01; operational: 10.10.0.11 on office)"
        )),
        "{}",
        done.body
    );

    // Released: the user may resume work.
    let out = manager.cordon(&["unquarantine", "sbc-01", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let resume = sink.wait_for(20, "to the user", |m| m.rcpt_tos == [USER]);
    assert_eq!(resume.subject, "[Cordon 21004] sbc-01 is back on its network: you may resume work");
    assert!(resume.body.contains("Its address is 10.10.0.11 on office again"), "{}", resume.body);

    // Every e-mail went out once: awaiting approval, quarantine done, resume.
    let subjects: Vec<String> = sink.messages().iter().map(|m| m.subject.clone()).collect();
    assert_eq!(subjects.len(), 3, "{subjects:#?}");
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}
