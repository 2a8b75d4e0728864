//! The notifier against a real SMTP server on loopback (aiosmtpd) and a real HTTP webhook
//! receiver, on an in-memory store: what is sent to whom, retries, and what happens when
//! nothing can be delivered.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cordon_engine::{Engine, EngineEvent, EngineSettings, Topology};
use cordon_model::{ActionKind, ActionState, NetworkRole, ServerKind, messages};
use cordon_notify::{Channel, Choice, LinkSigner, Notifier, NotifySettings, SmtpSettings};
use cordon_store::{Inventory, NetworkSpec, NewAction, NicSpec, ServerSpec, SqliteStore, Store, TenantSpec};
use serde_json::Value;
use support::{SmtpSink, links};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADMIN: &str = "infra-sales@example.com";
const USER: &str = "user01@example.com";

async fn engine() -> Engine {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let nic = |mac: &str, ip: &str| NicSpec {
        mac: mac.parse().unwrap(),
        network: "office".into(),
        ip: Some(ip.parse().unwrap()),
        switch: Some("tor-1".into()),
        port: Some("p1".into()),
    };
    store
        .sync_inventory(&Inventory {
            networks: vec![
                NetworkSpec {
                    name: "office".into(),
                    role: NetworkRole::Operational,
                    subnet: "10.10.0.0/24".into(),
                    quarantine_network: Some("quarantine".into()),
                    pool: None,
                    bridge: None,
                },
                NetworkSpec {
                    name: "quarantine".into(),
                    role: NetworkRole::Quarantine,
                    subnet: "10.99.0.0/24".into(),
                    quarantine_network: None,
                    pool: Some("10.99.0.100-10.99.0.199".into()),
                    bridge: None,
                },
            ],
            tenants: vec![TenantSpec { name: "sales".into(), admin_email: ADMIN.into() }],
            servers: vec![
                ServerSpec {
                    name: "sbc-01".into(),
                    kind: ServerKind::Physical,
                    tenant: Some("sales".into()),
                    user_email: Some(USER.into()),
                    nics: vec![nic("02:00:00:00:01:01", "10.10.0.11")],
                    hypervisor: None,
                    domain: None,
                },
                ServerSpec {
                    name: "orphan".into(),
                    kind: ServerKind::Physical,
                    tenant: None,
                    user_email: None,
                    nics: vec![nic("02:00:00:00:01:09", "10.10.0.19")],
                    hypervisor: None,
                    domain: None,
                },
            ],
        })
        .await
        .unwrap();
    Engine::new(store, Topology::default(), EngineSettings::new("test-1"))
}

async fn awaiting(engine: &Engine, server: &str) -> i64 {
    let server = engine.store().server_by_name(server).await.unwrap().unwrap();
    engine
        .store()
        .create_action(&NewAction {
            kind: ActionKind::Notify,
            server_id: Some(server.id),
            address: Some("10.10.0.11".parse().unwrap()),
            state: ActionState::AwaitingApproval,
            reason: Some("ids-1 [high] CORDON TEST 1".into()),
            trigger: "policy".into(),
            requested_by: "policy".into(),
            instance: "test-1".into(),
            decided_by: Some("default".into()),
            message: None,
        })
        .await
        .unwrap()
        .id
}

fn settings(smtp_port: u16) -> NotifySettings {
    let mut settings = NotifySettings::new("test-1");
    settings.smtp = Some(SmtpSettings {
        host: "127.0.0.1".into(),
        port: smtp_port,
        security: cordon_config::SmtpSecurity::Plain,
        from: "cordon@example.com".into(),
        credentials: None,
        ca_pem: None,
    });
    settings.tenants = HashMap::from([("sales".to_string(), ADMIN.to_string())]);
    settings.retry_delays = vec![Duration::from_millis(20), Duration::from_millis(20)];
    settings.timeout = Duration::from_secs(5);
    settings
}

fn awaits(action: i64, server: &str) -> EngineEvent {
    EngineEvent::AwaitsApproval {
        action,
        kind: ActionKind::Notify,
        server: server.into(),
        reason: messages::ACTION_AWAITS_APPROVAL.render(&[
            ("kind", &"notify"),
            ("server", &server),
            ("reason", &"no rule matched"),
        ]),
    }
}

/// A webhook receiver: keeps each JSON body; answers 500 to the first `fail_first` posts.
async fn webhook(fail_first: usize) -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(0usize));
    let bodies = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let (bodies, seen) = (bodies.clone(), seen.clone());
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buffer = [0u8; 4096];
                let body = loop {
                    let n = stream.read(&mut buffer).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    data.extend_from_slice(&buffer[..n]);
                    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                        .unwrap_or(0);
                    if data.len() >= end + 4 + length {
                        break data[end + 4..end + 4 + length].to_vec();
                    }
                };
                let fail = {
                    let mut seen = seen.lock().unwrap();
                    *seen += 1;
                    *seen <= fail_first
                };
                if !fail {
                    bodies.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                }
                let status = if fail { "500 Internal Server Error" } else { "204 No Content" };
                let reply = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    (url, received)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_administrator_gets_the_approval_e_mail_with_working_links() {
    let sink = SmtpSink::start();
    let engine = engine().await;
    let id = awaiting(&engine, "sbc-01").await;
    let mut settings = settings(sink.port);
    settings.links =
        Some(LinkSigner::new(vec![3u8; 32], "https://cordon.example:8443/", Duration::from_secs(3600)).unwrap());
    let (hook, posted) = webhook(0).await;
    settings.webhooks = vec![hook];
    let notifier = Notifier::new(settings).unwrap();
    let state = notifier.state();

    notifier.notify(&engine, &awaits(id, "sbc-01")).await;

    let mail = sink.wait_for(10, "to the administrator", |m| m.rcpt_tos == [ADMIN]);
    assert_eq!(mail.subject, format!("[Cordon 21014] notify of sbc-01 awaits approval (action {id})"));
    assert_eq!(mail.mail_from, "cordon@example.com");
    assert_eq!(mail.from, "Cordon <cordon@example.com>");
    assert!(mail.message_id.ends_with("@example.com>"), "{}", mail.message_id);
    for needle in ["Server:    sbc-01 (tenant sales)", "10.10.0.11 on office", "CORDON TEST 1", "What to do (21014)"] {
        assert!(mail.body.contains(needle), "no {needle:?} in\n{}", mail.body);
    }
    let found = links(&mail.body);
    let labels: Vec<&str> = found.iter().map(|(label, _)| label.as_str()).collect();
    assert_eq!(labels, ["Approve quarantine", "Approve reboot", "Ignore (reject the action)"], "{}", mail.body);
    let signer = state.links.as_ref().unwrap();
    let now = chrono::Utc::now().timestamp();
    for ((_, url), choice) in found.iter().zip([Choice::ApproveQuarantine, Choice::ApproveReboot, Choice::Ignore]) {
        let token = url.strip_prefix("https://cordon.example:8443/approve/").unwrap_or_else(|| panic!("{url}"));
        let link = signer.verify(token, now).unwrap();
        assert_eq!((link.action, link.choice, link.recipient.as_str()), (id, choice, ADMIN));
        assert!(link.expires > now + 3500);
    }

    // The webhook got the same event as JSON, without the links.
    let posted = posted.lock().unwrap().clone();
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0]["event"], "awaits_approval");
    assert_eq!(posted[0]["action"], id);
    assert_eq!(posted[0]["number"], 21014);
    assert_eq!(posted[0]["recipient"], ADMIN);
    assert_eq!(posted[0]["nics"][0]["address"], "10.10.0.11");
    assert!(!posted[0].to_string().contains("/approve/"));
    assert_eq!((state.counters.sent(Channel::Smtp), state.counters.sent(Channel::Webhook)), (1, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn users_hear_they_may_resume_and_failures_reach_the_administrator() {
    let sink = SmtpSink::start();
    let engine = engine().await;
    let notifier = Notifier::new(settings(sink.port)).unwrap();

    let released = EngineEvent::Succeeded {
        action: 1,
        kind: ActionKind::Unquarantine,
        server: "sbc-01".into(),
        detail: "back on office".into(),
    };
    notifier.notify(&engine, &released).await;
    let mail = sink.wait_for(10, "to the user", |m| m.rcpt_tos == [USER]);
    assert_eq!(mail.subject, "[Cordon 21004] sbc-01 is back on its network: you may resume work");
    assert!(mail.body.contains("Its address is 10.10.0.11 on office again"), "{}", mail.body);

    let failed = EngineEvent::Failed {
        action: 2,
        kind: ActionKind::Quarantine,
        server: Some("sbc-01".into()),
        number: 60010,
        text: "driver linux-bridge failed on tor-1: no such device".into(),
    };
    notifier.notify(&engine, &failed).await;
    let mail = sink.wait_for(10, "about the failure", |m| m.subject.starts_with("[Cordon 60010]"));
    assert_eq!(mail.rcpt_tos, [ADMIN]);
    assert!(mail.body.contains("ERROR 60010: driver linux-bridge failed on tor-1: no such device"), "{}", mail.body);
    assert!(
        mail.body.contains(&format!("Remedy (60010): {}", &messages::DRIVER_FAILURE.remedy[..40])),
        "{}",
        mail.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn temporary_refusals_are_retried_until_delivered() {
    // aiosmtpd answers 451 twice, the webhook 500 once: both get through on a later attempt.
    let sink = SmtpSink::start_failing(2);
    let engine = engine().await;
    let id = awaiting(&engine, "sbc-01").await;
    let mut settings = settings(sink.port);
    let (hook, posted) = webhook(1).await;
    settings.webhooks = vec![hook];
    let notifier = Notifier::new(settings).unwrap();
    let state = notifier.state();
    notifier.notify(&engine, &awaits(id, "sbc-01")).await;
    let mail = sink.wait_for(10, "after two refusals", |m| m.rcpt_tos == [ADMIN]);
    assert!(mail.body.contains(&format!("cordon actions reject {id}")), "no links configured: {}", mail.body);
    assert_eq!(sink.messages().len(), 1);
    assert_eq!(posted.lock().unwrap().len(), 1);
    let counters = &state.counters;
    assert_eq!((counters.sent(Channel::Smtp), counters.failed(Channel::Smtp)), (1, 0));
    assert!(counters.render().contains("cordon_notification_retries_total 3"), "{}", counters.render());
}

#[tokio::test(flavor = "multi_thread")]
async fn undeliverable_notifications_are_logged_counted_and_never_fatal() {
    // Nothing listens on this port: every attempt fails.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let engine = engine().await;
    let notifier = Notifier::new(settings(port)).unwrap();
    let state = notifier.state();
    notifier.notify(&engine, &awaits(awaiting(&engine, "sbc-01").await, "sbc-01")).await;
    assert_eq!(state.counters.failed(Channel::Smtp), 1);
    // A server without a tenant and no operator_email: nobody to write to.
    notifier.notify(&engine, &awaits(awaiting(&engine, "orphan").await, "orphan")).await;
    assert!(state.counters.render().contains("cordon_notifications_unaddressed_total 1"));
    let recorded = engine.store().recent_messages(10).await.unwrap();
    let failed =
        recorded.iter().find(|m| m.message.number == messages::NOTIFICATION_FAILED.number).expect("41030 recorded");
    assert!(failed.message.text.contains("to infra-sales@example.com after 3 attempts"), "{}", failed.message.text);
    let unaddressed = recorded
        .iter()
        .find(|m| m.message.number == messages::NOTIFICATION_NO_RECIPIENT.number)
        .expect("41031 recorded");
    assert!(unaddressed.message.text.contains("orphan has no tenant"), "{}", unaddressed.message.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_gets_what_belongs_to_no_tenant() {
    let sink = SmtpSink::start();
    let engine = engine().await;
    let mut settings = settings(sink.port);
    settings.operator_email = Some("noc@example.com".into());
    let notifier = Notifier::new(settings).unwrap();
    let unresolved = EngineEvent::Failed {
        action: 5,
        kind: ActionKind::Quarantine,
        server: None,
        number: 67198,
        text: "server not found. ip=10.10.0.99".into(),
    };
    notifier.notify(&engine, &unresolved).await;
    let mail = sink.wait_for(10, "to the operator", |m| m.rcpt_tos == ["noc@example.com"]);
    assert!(mail.subject.starts_with("[Cordon 67198]"), "{}", mail.subject);
    assert!(mail.body.contains("Remedy (67198)"), "{}", mail.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn starttls_checks_the_server_against_the_configured_ca() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = support::self_signed(certs.path());
    let sink = SmtpSink::start_tls(&cert, &key);
    let engine = engine().await;
    let tls = |ca_pem: Option<Vec<u8>>| {
        let mut settings = settings(sink.port);
        let smtp = settings.smtp.as_mut().unwrap();
        smtp.security = cordon_config::SmtpSecurity::StartTls;
        smtp.ca_pem = ca_pem;
        settings.retry_delays = Vec::new();
        Notifier::new(settings).unwrap()
    };

    // The system's CAs do not know this certificate: nothing is sent.
    let untrusting = tls(None);
    untrusting.notify(&engine, &awaits(awaiting(&engine, "sbc-01").await, "sbc-01")).await;
    assert_eq!(untrusting.state().counters.failed(Channel::Smtp), 1);
    assert!(sink.messages().is_empty());
    let recorded = engine.store().recent_messages(1).await.unwrap();
    assert!(recorded[0].message.text.contains("UnknownIssuer"), "{recorded:?}");

    // With the CA file: delivered over TLS (aiosmtpd refuses mail before STARTTLS).
    let trusting = tls(Some(std::fs::read(&cert).unwrap()));
    let id = awaiting(&engine, "sbc-01").await;
    trusting.notify(&engine, &awaits(id, "sbc-01")).await;
    let mail = sink.wait_for(10, "over STARTTLS", |m| m.rcpt_tos == [ADMIN]);
    assert!(mail.subject.contains(&format!("(action {id})")));
    assert_eq!(trusting.state().counters.sent(Channel::Smtp), 1);
}
