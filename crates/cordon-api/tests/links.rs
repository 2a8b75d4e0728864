//! `/approve/{token}`, in process on an in-memory store: GET never acts, POST acts once, and bad,
//! expired or spent links are refused with their numbered messages; every answer is documented
//! in docs/openapi.json. With two instances on one PostgreSQL database, a link sent by one
//! works on the other, once.

#[path = "../../cordon-store/tests/support/postgres.rs"]
mod postgres;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use cordon_api::ingest::IngestSettings;
use cordon_api::{ApiState, OPENAPI, router};
use cordon_engine::{Engine, EngineSettings, Topology};
use cordon_model::{ActionKind, ActionState, NetworkRole, ServerKind, messages};
use cordon_notify::{Choice, Counters, Link, LinkSigner, NotifyState};
use cordon_store::{Inventory, NetworkSpec, NewAction, NicSpec, ServerSpec, SqliteStore, Store, TenantSpec};
use tower::ServiceExt;

const ADMIN: &str = "infra-sales@example.com";
const SECRET: [u8; 32] = [42u8; 32];

struct Fixture {
    app: Router,
    engine: Engine,
    state: Arc<NotifyState>,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Fixture {
    async fn new(links: bool) -> Fixture {
        Fixture::on(links, Arc::new(SqliteStore::open_in_memory().unwrap()), "test-1").await
    }

    /// An instance named `instance` on `store`, with its own signer (its own memory of used
    /// links) made from the shared secret.
    async fn on(links: bool, store: Arc<dyn Store>, instance: &str) -> Fixture {
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
                servers: vec![ServerSpec {
                    name: "sbc-01".into(),
                    kind: ServerKind::Physical,
                    tenant: Some("sales".into()),
                    user_email: None,
                    nics: vec![NicSpec {
                        mac: "02:00:00:00:01:01".parse().unwrap(),
                        network: "office".into(),
                        ip: Some("10.10.0.11".parse().unwrap()),
                        switch: Some("tor-1".into()),
                        port: Some("p1".into()),
                    }],
                    hypervisor: None,
                    domain: None,
                }],
            })
            .await
            .unwrap();
        let engine = Engine::new(store, Topology::default(), EngineSettings::new(instance));
        let signer = LinkSigner::new(SECRET.to_vec(), "https://cordon.example", Duration::from_secs(3600)).unwrap();
        let state = Arc::new(NotifyState { links: links.then_some(signer), counters: Counters::default() });
        let ingest = IngestSettings {
            webhooks: HashMap::new(),
            eve_sources: HashSet::new(),
            max_skew_secs: 300,
            counters: HashMap::new(),
        };
        let app = router(ApiState {
            engine: engine.clone(),
            ingest: Arc::new(ingest),
            on_drift: Default::default(),
            notify: Some(state.clone()),
        });
        Fixture { app, engine, state }
    }

    async fn awaiting(&self) -> i64 {
        let server = self.engine.store().server_by_name("sbc-01").await.unwrap().unwrap();
        self.engine
            .store()
            .create_action(&NewAction {
                kind: ActionKind::Notify,
                server_id: Some(server.id),
                address: Some("10.10.0.11".parse().unwrap()),
                state: ActionState::AwaitingApproval,
                reason: Some("ids-1 [high] <script>alert(1)</script>".into()),
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

    fn token(&self, action: i64, choice: Choice) -> String {
        let signer = self.state.links.as_ref().unwrap();
        signer.sign(&signer.issue(action, choice, ADMIN, chrono::Utc::now().timestamp()))
    }

    async fn call(&self, method: Method, token: &str) -> Reply {
        let request = Request::builder().method(method.clone()).uri(format!("/approve/{token}"));
        let request = request.body(Body::empty()).unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body: Bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let reply = Reply { status, headers, body: String::from_utf8(body.to_vec()).unwrap() };
        documented(&method, &reply);
        reply
    }

    async fn state_of(&self, action: i64) -> (ActionState, ActionKind) {
        let action = self.engine.store().action(action).await.unwrap().unwrap();
        (action.state, action.kind)
    }
}

/// The answer's status is documented for the operation, as HTML.
fn documented(method: &Method, reply: &Reply) {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
    let op = &doc["paths"]["/approve/{token}"][method.as_str().to_ascii_lowercase()];
    assert_eq!(op["security"], serde_json::json!([]), "the link is the credential");
    let response = &op["responses"][reply.status.as_str()];
    assert!(response.is_object(), "{method} /approve/{{token}} answered {}, not documented", reply.status);
    assert!(response["content"]["text/html"].is_object());
    assert_eq!(reply.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(reply.headers[header::REFERRER_POLICY], "no-referrer");
    assert!(reply.body.starts_with("<!DOCTYPE html>"));
}

fn assert_refused(reply: &Reply, status: StatusCode, number: u32) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert!(reply.body.contains(&format!("ERROR {number}")), "no {number} in {}", reply.body);
}

#[tokio::test]
async fn get_shows_a_form_and_changes_nothing() {
    let fixture = Fixture::new(true).await;
    let id = fixture.awaiting().await;
    let token = fixture.token(id, Choice::ApproveQuarantine);
    for _ in 0..3 {
        let reply = fixture.call(Method::GET, &token).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert!(reply.body.contains("<form method=\"post\">"), "{}", reply.body);
        assert!(reply.body.contains("Approve quarantine of sbc-01?"), "{}", reply.body);
        assert!(reply.body.contains(ADMIN));
        assert!(reply.body.contains("&lt;script&gt;") && !reply.body.contains("<script>"), "escaped: {}", reply.body);
    }
    assert_eq!(fixture.state_of(id).await, (ActionState::AwaitingApproval, ActionKind::Notify));
}

#[tokio::test]
async fn post_approves_once_and_every_later_use_is_refused() {
    let fixture = Fixture::new(true).await;
    let id = fixture.awaiting().await;
    let approve = fixture.token(id, Choice::ApproveQuarantine);
    let ignore = fixture.token(id, Choice::Ignore);

    let reply = fixture.call(Method::POST, &approve).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body.contains("approved as <b>quarantine</b>"), "{}", reply.body);
    assert_eq!(fixture.state_of(id).await, (ActionState::Pending, ActionKind::Quarantine));
    let audit = fixture.engine.store().list_audit(10).await.unwrap();
    assert!(audit.iter().any(|a| a.entry.actor == format!("link:{ADMIN}") && a.entry.verb == "approve"), "{audit:?}");

    // The same link again, another link of the action, and a GET of either: 409 with 60072.
    let again = fixture.call(Method::POST, &approve).await;
    assert_refused(&again, StatusCode::CONFLICT, messages::LINK_ALREADY_USED.number);
    assert!(again.body.contains("it is pending"), "{}", again.body);
    assert_refused(&fixture.call(Method::POST, &ignore).await, StatusCode::CONFLICT, 60072);
    assert_refused(&fixture.call(Method::GET, &ignore).await, StatusCode::CONFLICT, 60072);
    assert_eq!(fixture.state_of(id).await, (ActionState::Pending, ActionKind::Quarantine));
    assert!(fixture.state.counters.render().contains("cordon_approval_links_refused_total 3"));
}

#[tokio::test]
async fn ignore_rejects_and_reboot_approves_as_reboot() {
    let fixture = Fixture::new(true).await;
    let rejected = fixture.awaiting().await;
    let reply = fixture.call(Method::POST, &fixture.token(rejected, Choice::Ignore)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body.contains("is rejected"));
    assert_eq!(fixture.state_of(rejected).await.0, ActionState::Rejected);

    let rebooted = fixture.awaiting().await;
    let reply = fixture.call(Method::POST, &fixture.token(rebooted, Choice::ApproveReboot)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(fixture.state_of(rebooted).await, (ActionState::Pending, ActionKind::Reboot));
}

#[tokio::test]
async fn expired_tampered_foreign_and_unknown_links_are_refused() {
    let fixture = Fixture::new(true).await;
    let id = fixture.awaiting().await;
    let signer = fixture.state.links.as_ref().unwrap();
    let now = chrono::Utc::now().timestamp();

    let expired = Link { expires: now - 1, ..signer.issue(id, Choice::ApproveQuarantine, ADMIN, now) };
    for method in [Method::GET, Method::POST] {
        let reply = fixture.call(method, &signer.sign(&expired)).await;
        assert_refused(&reply, StatusCode::GONE, messages::LINK_EXPIRED.number);
        assert!(reply.body.contains(&format!("approval link for action {id} expired at")), "{}", reply.body);
    }

    let token = fixture.token(id, Choice::ApproveQuarantine);
    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let other = LinkSigner::new(vec![1u8; 32], "https://x", Duration::from_secs(60)).unwrap();
    let foreign = other.sign(&other.issue(id, Choice::ApproveQuarantine, ADMIN, now));
    for bad in [tampered.as_str(), foreign.as_str(), "not-a-token", "AAAA"] {
        for method in [Method::GET, Method::POST] {
            assert_refused(&fixture.call(method, bad).await, StatusCode::FORBIDDEN, messages::LINK_INVALID.number);
        }
    }
    assert_eq!(fixture.state_of(id).await.0, ActionState::AwaitingApproval, "nothing was decided");

    let missing = fixture.token(9999, Choice::ApproveQuarantine);
    assert_refused(&fixture.call(Method::POST, &missing).await, StatusCode::NOT_FOUND, 60003);

    // The good link still works after all that.
    assert_eq!(fixture.call(Method::POST, &token).await.status, StatusCode::OK);
}

#[tokio::test]
async fn without_links_configured_the_route_says_so() {
    let fixture = Fixture::new(false).await;
    let id = fixture.awaiting().await;
    let signer = LinkSigner::new(SECRET.to_vec(), "https://x", Duration::from_secs(60)).unwrap();
    let token = signer.sign(&signer.issue(id, Choice::ApproveQuarantine, ADMIN, chrono::Utc::now().timestamp()));
    for method in [Method::GET, Method::POST] {
        assert_refused(&fixture.call(method, &token).await, StatusCode::NOT_FOUND, messages::LINKS_DISABLED.number);
    }
    assert_eq!(fixture.state_of(id).await.0, ActionState::AwaitingApproval);
}

#[tokio::test]
async fn a_link_sent_by_one_instance_works_once_on_any_instance() {
    let url = postgres::fresh_database("cpg_links");
    let store_a: Arc<dyn Store> = Arc::new(cordon_store::PostgresStore::connect(&url, None).await.unwrap());
    let store_b: Arc<dyn Store> = Arc::new(cordon_store::PostgresStore::connect(&url, None).await.unwrap());
    let a = Fixture::on(true, store_a, "cpg-a").await;
    let b = Fixture::on(true, store_b, "cpg-b").await;
    let id = a.awaiting().await;
    // Instance a sent the e-mail; the administrator's click reaches instance b.
    let approve = a.token(id, Choice::ApproveQuarantine);
    let reply = b.call(Method::GET, &approve).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let reply = b.call(Method::POST, &approve).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(a.state_of(id).await, (ActionState::Pending, ActionKind::Quarantine));
    let audit = a.engine.store().list_audit(10).await.unwrap();
    assert!(audit.iter().any(|e| e.entry.verb == "approve" && e.entry.instance == "cpg-b"), "{audit:?}");
    // The same link on instance a, which never saw it used: still spent.
    assert_refused(&a.call(Method::POST, &approve).await, StatusCode::CONFLICT, 60072);
    assert_refused(&b.call(Method::POST, &b.token(id, Choice::Ignore)).await, StatusCode::CONFLICT, 60072);
}
