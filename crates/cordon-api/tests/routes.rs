//! The real router, in process, on an in-memory store: every route of `ROUTES` is walked for
//! authentication and roles, and every answer is checked against docs/openapi.json (its status,
//! media type, headers and body schema), so that the document cannot drift from the code.
//!
//! The engine's topology has no switch driver and the engine never runs, so no network is
//! touched: a quarantine request that gets past the role check is refused with 60013. Detections
//! are only processed where a test says so (`Engine::run_detections` once, then it returns).
//!
//! The fixture has three HTTP sources: webhooks `hooks` (a source token) and `signed` (an HMAC
//! secret), and the `suricata-eve` source `ids-1`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use chrono::Utc;
use cordon_api::ingest::{IngestSettings, WebhookAuth, sign};
use cordon_api::{ApiState, OPENAPI, ROUTES, hash_token, router};
use cordon_engine::{Engine, EngineSettings, NetworkPlan, PolicySet, Topology};
use cordon_model::messages::{self, Message};
use cordon_model::{
    ActionCommand, ActionKind, ActionState, AddressPool, NetworkRole, Policy, PolicyAction, Role, ServerKind,
    ServerState, Severity, ThreatSeverity,
};
use cordon_sources::SourceCounters;
use cordon_sources::{Denied, RateLimiter};
use cordon_store::{
    Inventory, MessageRef, NetworkSpec, NewAction, NewMessage, NewStep, NicSpec, ServerSpec, SqliteStore, StepOutcome,
    Store, TenantSpec,
};
use serde_json::Value;
use tower::ServiceExt;

const SERVER: &str = "sbc-01";
const INSTANCE: &str = "test-1";
/// A webhook source that authenticates with its own bearer token.
const TOKEN_SOURCE: &str = "hooks";
const SOURCE_TOKEN: &str = "s3cret";
/// A webhook source that signs its posts with HMAC-SHA256.
const HMAC_SOURCE: &str = "signed";
const HMAC_SECRET: &[u8] = b"key";
/// A `suricata-eve` source.
const EVE_SOURCE: &str = "ids-1";
const MAX_SKEW_SECS: i64 = 300;

static DOC: LazyLock<Value> =
    LazyLock::new(|| serde_json::from_str(OPENAPI).expect("docs/openapi.json is not valid JSON"));

// ---------------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Fixture {
    app: Router,
    engine: Engine,
    store: Arc<dyn Store>,
    tokens: BTreeMap<Role, String>,
    server_id: i64,
    /// The HTTP sources' counters, as the metrics see them.
    counters: HashMap<String, Arc<SourceCounters>>,
}

/// What the router answered.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("answer is not UTF-8")
    }

    fn media_type(&self) -> Option<String> {
        let value = self.headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        Some(value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
    }

    /// The number of the error body; panics unless the answer is one.
    fn error_number(&self) -> u64 {
        let body = self.json();
        body["error"]["number"].as_u64().unwrap_or_else(|| panic!("not an error body: {body}"))
    }
}

/// Ids of the actions [`Fixture::seed_actions`] creates.
#[derive(Debug, Clone, Copy)]
struct Seeded {
    /// A running quarantine action of sbc-01, with a message, two steps and two messages.
    running: i64,
    /// An action that resolved to no server (server, reason and message null).
    orphan: i64,
}

impl Fixture {
    /// One operational network with its quarantine network, one physical server on tor-1/p1,
    /// one token per role, and the HTTP sources.
    async fn new() -> Fixture {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let inventory = Inventory {
            networks: vec![
                NetworkSpec {
                    name: "office".into(),
                    role: NetworkRole::Operational,
                    subnet: "10.10.0.0/24".into(),
                    quarantine_network: Some("quarantine".into()),
                    pool: None,
                    bridge: Some("br-office".into()),
                },
                NetworkSpec {
                    name: "quarantine".into(),
                    role: NetworkRole::Quarantine,
                    subnet: "10.99.0.0/24".into(),
                    quarantine_network: None,
                    pool: Some("10.99.0.100-10.99.0.199".into()),
                    bridge: Some("br-quarantine".into()),
                },
            ],
            tenants: vec![TenantSpec { name: "sales".into(), admin_email: "infra-sales@example.com".into() }],
            servers: vec![ServerSpec {
                name: SERVER.into(),
                kind: ServerKind::Physical,
                tenant: Some("sales".into()),
                user_email: None,
                hypervisor: None,
                domain: None,
                nics: vec![NicSpec {
                    mac: "02:00:00:00:01:01".parse().unwrap(),
                    network: "office".into(),
                    ip: Some("10.10.0.11".parse().unwrap()),
                    switch: Some("tor-1".into()),
                    port: Some("p1".into()),
                }],
            }],
        };
        store.sync_inventory(&inventory).await.unwrap();
        let server_id = store.server_by_name(SERVER).await.unwrap().unwrap().id;

        let mut tokens = BTreeMap::new();
        for &role in Role::ALL {
            let token = cordon_api::new_token();
            store.create_token(&format!("t-{role}"), role, &hash_token(&token), None).await.unwrap();
            tokens.insert(role, token);
        }

        let networks = [
            NetworkPlan {
                name: "office".into(),
                role: NetworkRole::Operational,
                bridge: Some("br-office".into()),
                vlan: None,
                quarantine_network: Some("quarantine".into()),
                pool: None,
            },
            NetworkPlan {
                name: "quarantine".into(),
                role: NetworkRole::Quarantine,
                bridge: Some("br-quarantine".into()),
                vlan: None,
                quarantine_network: None,
                pool: Some(AddressPool::new("10.99.0.100-10.99.0.199".parse().unwrap(), [])),
            },
        ]
        .into_iter()
        .map(|plan| (plan.name.clone(), plan))
        .collect();
        // No switch driver at all: nothing can ever reach a network.
        let topology = Topology { networks, ..Topology::default() };
        assert!(topology.switches.is_empty());
        let engine = Engine::new(store.clone(), topology, EngineSettings::new(INSTANCE));
        let counters: HashMap<String, Arc<SourceCounters>> = [TOKEN_SOURCE, HMAC_SOURCE, EVE_SOURCE, LIMITED_SOURCE]
            .into_iter()
            .map(|name| (name.to_string(), Arc::new(SourceCounters::default())))
            .collect();
        let ingest = IngestSettings {
            webhooks: HashMap::from([
                (TOKEN_SOURCE.to_string(), WebhookAuth::Token(SOURCE_TOKEN.to_string())),
                (HMAC_SOURCE.to_string(), WebhookAuth::Hmac(HMAC_SECRET.to_vec())),
                (LIMITED_SOURCE.to_string(), WebhookAuth::Token(LIMITED_TOKEN.to_string())),
            ]),
            eve_sources: HashSet::from([EVE_SOURCE.to_string()]),
            max_skew_secs: MAX_SKEW_SECS,
            counters: counters.clone(),
            replays: Default::default(),
            limiters: HashMap::from([(LIMITED_SOURCE.to_string(), Arc::new(RateLimiter::new(LIMITED_RATE)))]),
        };
        let app = router(ApiState {
            engine: engine.clone(),
            ingest: Arc::new(ingest),
            on_drift: Default::default(),
            notify: None,
            console: Default::default(),
        });
        Fixture { app, engine, store, tokens, server_id, counters }
    }

    /// An action held for approval, written straight into the store as the engine would.
    async fn awaiting(&self, kind: ActionKind) -> i64 {
        let text = messages::ACTION_AWAITS_APPROVAL.render(&[
            ("kind", &kind),
            ("server", &SERVER),
            ("reason", &"no rule matched; default action"),
        ]);
        self.store
            .create_action(&NewAction {
                kind,
                server_id: Some(self.server_id),
                address: Some("10.10.0.11".parse().unwrap()),
                state: ActionState::AwaitingApproval,
                reason: Some("ids-1 [high] ET MALWARE beacon".into()),
                trigger: "policy".into(),
                requested_by: "policy".into(),
                instance: INSTANCE.into(),
                decided_by: Some("default".into()),
                message: Some(MessageRef { number: messages::ACTION_AWAITS_APPROVAL.number, text }),
            })
            .await
            .unwrap()
            .id
    }

    /// Actions written straight into the store (the engine could not create one without a
    /// switch driver): a running quarantine of sbc-01 with its journal, and an orphan.
    async fn seed_actions(&self) -> Seeded {
        let store = &self.store;
        let created = store
            .create_action(&NewAction {
                kind: ActionKind::Quarantine,
                server_id: Some(self.server_id),
                address: Some("10.10.0.11".parse().unwrap()),
                state: ActionState::Pending,
                reason: Some("beacon to a known C2".into()),
                trigger: "api".into(),
                requested_by: "token:t-operator".into(),
                instance: INSTANCE.into(),
                decided_by: None,
                message: None,
            })
            .await
            .unwrap();
        let started = messages::QUARANTINE_STARTED.render(&[("server", &SERVER), ("action", &created.id)]);
        let running = store
            .transition_action(
                created.id,
                created.generation,
                ActionCommand::Start,
                Some(MessageRef { number: messages::QUARANTINE_STARTED.number, text: started.clone() }),
            )
            .await
            .unwrap();
        assert_eq!(running.state, ActionState::Running);
        store
            .record_message(&NewMessage {
                number: messages::QUARANTINE_STARTED.number,
                text: started,
                server_id: Some(self.server_id),
                action_id: Some(running.id),
                instance: INSTANCE.into(),
            })
            .await
            .unwrap();
        store
            .record_message(&NewMessage {
                number: messages::DRIVER_FAILURE.number,
                text: "driver linux-bridge failed on tor-1: no such port".into(),
                server_id: Some(self.server_id),
                action_id: Some(running.id),
                instance: INSTANCE.into(),
            })
            .await
            .unwrap();
        for (outcome, message_number) in
            [(StepOutcome::AlreadyInPlace, None), (StepOutcome::Failed, Some(messages::DRIVER_FAILURE.number))]
        {
            store
                .append_step(&NewStep {
                    action_id: running.id,
                    attempt: 1,
                    name: "ensure_port_on_bridge".into(),
                    target: "tor-1/p1".into(),
                    outcome,
                    detail: "test step".into(),
                    message_number,
                    instance: INSTANCE.into(),
                    started_at: Utc::now(),
                    finished_at: Utc::now(),
                })
                .await
                .unwrap();
        }
        let orphan = store
            .create_action(&NewAction {
                kind: ActionKind::Quarantine,
                server_id: None,
                address: Some("10.10.0.99".parse().unwrap()),
                state: ActionState::Pending,
                reason: None,
                trigger: "policy".into(),
                requested_by: "policy".into(),
                instance: INSTANCE.into(),
                decided_by: None,
                message: None,
            })
            .await
            .unwrap();
        Seeded { running: running.id, orphan: orphan.id }
    }

    fn bearer(&self, role: Role) -> String {
        format!("Bearer {}", self.tokens[&role])
    }

    /// Sends one request (`authorization` is the raw header value) and checks the answer
    /// against the document's operation `method template`.
    async fn call(
        &self,
        method: Method,
        template: &str,
        uri: &str,
        authorization: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let headers: Vec<(&str, &str)> =
            authorization.map(|value| (header::AUTHORIZATION.as_str(), value)).into_iter().collect();
        self.send(method, template, uri, &headers, body).await
    }

    /// Sends one request with these headers and checks the answer against the document.
    async fn send(
        &self,
        method: Method,
        template: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let mut request = Request::builder().method(method.clone()).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(Body::from(body.unwrap_or_default().to_string())).unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let reply = Reply { status, headers, body };
        check_documented(&method, template, &reply);
        reply
    }

    async fn get(&self, template: &str, uri: &str, role: Role) -> Reply {
        self.call(Method::GET, template, uri, Some(&self.bearer(role)), None).await
    }

    async fn post(&self, template: &str, uri: &str, role: Role, body: Option<&str>) -> Reply {
        self.call(Method::POST, template, uri, Some(&self.bearer(role)), body).await
    }
}

/// The route's path with its parameters filled in.
fn concrete(template: &str, id: i64) -> String {
    template.replace("{name}", SERVER).replace("{id}", &id.to_string())
}

fn assert_error(reply: &Reply, status: StatusCode, message: &Message) {
    assert_eq!(reply.status, status, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.error_number(), u64::from(message.number), "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["error"]["severity"], message.severity().as_str());
    assert_eq!(body["error"]["remedy"], message.remedy);
}

// ---------------------------------------------------------------------------------------------
// The document as a schema checker
// ---------------------------------------------------------------------------------------------

/// Follows local `$ref`s to what they name.
fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("non-local $ref {reference}"));
        value = doc.pointer(pointer).unwrap_or_else(|| panic!("$ref {reference} resolves to nothing"));
    }
    value
}

fn types_of(schema: &Value) -> Option<Vec<&str>> {
    match schema.get("type")? {
        Value::String(t) => Some(vec![t.as_str()]),
        Value::Array(ts) => Some(ts.iter().map(|t| t.as_str().expect("type names are strings")).collect()),
        other => panic!("`type` is neither a string nor an array: {other}"),
    }
}

fn type_matches(schema: &Value, value: &Value) -> bool {
    let Some(types) = types_of(schema) else { return true };
    types.iter().any(|t| match (*t, value) {
        ("null", Value::Null)
        | ("boolean", Value::Bool(_))
        | ("string", Value::String(_))
        | ("array", Value::Array(_))
        | ("object", Value::Object(_))
        | ("number", Value::Number(_)) => true,
        ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
        _ => false,
    })
}

/// Checks `value` against `schema`: types (nullability included), enums, constants, bounds,
/// required properties, and no property that the schema does not declare.
fn conform(doc: &Value, schema: &Value, value: &Value, at: &str) {
    let schema = resolve(doc, schema);
    if let Some(branches) = schema.get("anyOf").or_else(|| schema.get("oneOf")) {
        let branches = branches.as_array().unwrap();
        let matching: Vec<&Value> =
            branches.iter().map(|b| resolve(doc, b)).filter(|b| type_matches(b, value)).collect();
        assert!(!matching.is_empty(), "{at}: {value} matches no branch of {schema}");
        for branch in matching {
            conform(doc, branch, value, at);
        }
        return;
    }
    assert!(schema.get("allOf").is_none(), "{at}: allOf is not supported by this checker");
    assert!(type_matches(schema, value), "{at}: {value} is not of type {}", schema["type"]);
    if let Some(constant) = schema.get("const") {
        assert_eq!(value, constant, "{at}");
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        assert!(allowed.contains(value), "{at}: {value} is not one of {allowed:?}");
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            assert!(n >= min, "{at}: {n} < {min}");
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
            assert!(n <= max, "{at}: {n} > {max}");
        }
    }
    match value {
        Value::Object(map) => {
            let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
                return; // a free-form object (the OpenAPI document itself)
            };
            for key in map.keys() {
                assert!(properties.contains_key(key), "{at}: property `{key}` is served but not declared");
            }
            for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                let required = required.as_str().unwrap();
                assert!(map.contains_key(required), "{at}: declared-required property `{required}` is not served");
            }
            for (key, item) in map {
                conform(doc, &properties[key], item, &format!("{at}.{key}"));
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    conform(doc, item_schema, item, &format!("{at}[{i}]"));
                }
            }
        }
        _ => {}
    }
}

/// The operation object of `method template` in the document.
fn operation(method: &Method, template: &str) -> &'static Value {
    let op = &DOC["paths"][template][method.as_str().to_ascii_lowercase()];
    assert!(op.is_object(), "{method} {template} is not in docs/openapi.json");
    op
}

/// The answer's status is documented for the operation, with its media type, its headers and
/// a schema that the body conforms to.
fn check_documented(method: &Method, template: &str, reply: &Reply) {
    let op = operation(method, template);
    let status = reply.status.as_str();
    let response = op["responses"].get(status).unwrap_or_else(|| {
        panic!("{method} {template} answered {status}, which the document does not list: {}", reply.text())
    });
    let response = resolve(&DOC, response);
    for (name, spec) in response.get("headers").and_then(Value::as_object).into_iter().flatten() {
        let value = reply.headers.get(name.as_str()).unwrap_or_else(|| panic!("{method} {template}: no {name} header"));
        if let Some(constant) = resolve(&DOC, &spec["schema"]).get("const") {
            assert_eq!(value.to_str().unwrap(), constant.as_str().unwrap(), "{method} {template}: {name}");
        }
    }
    let Some(content) = response.get("content").and_then(Value::as_object) else {
        assert!(reply.body.is_empty(), "{method} {template} {status}: a body that the document does not describe");
        return;
    };
    let media_type = reply.media_type().unwrap_or_else(|| panic!("{method} {template} {status}: no content type"));
    let media = content.get(&media_type).unwrap_or_else(|| {
        panic!("{method} {template} {status}: content type {media_type} is not documented ({:?})", content.keys())
    });
    if media_type == "application/json" {
        conform(&DOC, &media["schema"], &reply.json(), &format!("{method} {template} {status} $"));
    }
}

/// The property names a component schema declares.
fn declared(name: &str) -> BTreeSet<String> {
    let schema = &DOC["components"]["schemas"][name];
    assert!(schema.is_object(), "no component schema {name}");
    schema["properties"].as_object().unwrap().keys().cloned().collect()
}

/// The property names served in an object.
fn served(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap_or_else(|| panic!("not an object: {value}")).keys().cloned().collect()
}

fn assert_exact(name: &str, value: &Value) {
    assert_eq!(served(value), declared(name), "served {name} and its schema differ: {value}");
}

// ---------------------------------------------------------------------------------------------
// Authentication and roles, over every route
// ---------------------------------------------------------------------------------------------

#[tokio::test]
/// Every route refuses no token, a malformed, unknown, expired or revoked one (401), and every
/// role weaker than the one it needs (403).
async fn every_route_needs_a_token_and_its_role() {
    let fixture = Fixture::new().await;
    let seeded = fixture.seed_actions().await;
    let admin = fixture.tokens[&Role::Admin].clone();
    let malformed = [
        String::new(),
        "Bearer".to_string(),
        "Bearer ".to_string(),
        "Bearer    ".to_string(),
        "Basic dXNlcjpwYXNzd29yZA==".to_string(),
        format!("Token {admin}"),
        admin.clone(),
        format!("Bearer{admin}"),
    ];
    let unknown = format!("Bearer cordon_{}", "0".repeat(64));
    // Admin tokens that were real: one expired a second ago, one revoked.
    let expired = cordon_api::new_token();
    let past = Utc::now() - chrono::Duration::seconds(1);
    fixture.store.create_token("expired-admin", Role::Admin, &hash_token(&expired), Some(past)).await.unwrap();
    let revoked = cordon_api::new_token();
    let record = fixture.store.create_token("revoked-admin", Role::Admin, &hash_token(&revoked), None).await.unwrap();
    fixture.store.revoke_token(record.id).await.unwrap();
    let mut walked = 0;
    for route in ROUTES {
        let uri = concrete(route.path, seeded.running);
        let Some(needed) = route.role else {
            // The approval links carry their own credential (tests/links.rs).
            assert!(
                ["/healthz", "/approve/{token}"].contains(&route.path),
                "only /healthz and the approval links may be open"
            );
            continue;
        };
        walked += 1;
        let what = format!("{} {}", route.method, route.path);

        let mut refusals = vec![("no header".to_string(), None)];
        refusals.extend(malformed.iter().map(|m| (format!("malformed {m:?}"), Some(m.clone()))));
        refusals.push(("unknown token".to_string(), Some(unknown.clone())));
        refusals.push(("an expired admin token".to_string(), Some(format!("Bearer {expired}"))));
        refusals.push(("a revoked admin token".to_string(), Some(format!("Bearer {revoked}"))));
        for (case, authorization) in refusals {
            let reply = fixture.call(route.method.clone(), route.path, &uri, authorization.as_deref(), None).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what} with {case}");
            assert_eq!(reply.error_number(), u64::from(messages::UNAUTHENTICATED.number), "{what} with {case}");
            assert_eq!(
                reply.headers.get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()),
                Some("Bearer"),
                "{what} with {case}"
            );
        }

        for &role in Role::ALL {
            let reply = fixture.call(route.method.clone(), route.path, &uri, Some(&fixture.bearer(role)), None).await;
            if role.allows(needed) {
                // A 404 for the resource (no such hypervisor) is fine; a 404 for the route is not.
                let no_route = reply.status == StatusCode::NOT_FOUND
                    && reply.error_number() == u64::from(messages::NO_SUCH_ROUTE.number);
                assert!(
                    !no_route
                        && ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN, StatusCode::METHOD_NOT_ALLOWED]
                            .contains(&reply.status),
                    "{what} as {role} (needs {needed}) answered {}: {}",
                    reply.status,
                    reply.text()
                );
            } else {
                assert_error(&reply, StatusCode::FORBIDDEN, &messages::FORBIDDEN);
                let text = reply.json()["error"]["text"].as_str().unwrap().to_string();
                assert!(
                    text.contains(&format!("role {role}")) && text.contains(&format!("role {needed} is required")),
                    "{what} as {role}: {text}"
                );
            }
        }
    }
    assert_eq!(walked, ROUTES.iter().filter(|r| r.role.is_some()).count());
}

#[tokio::test]
async fn healthz_needs_no_token() {
    let fixture = Fixture::new().await;
    for authorization in [None, Some("Bearer nonsense"), Some("garbage")] {
        let reply = fixture.call(Method::GET, "/healthz", "/healthz", authorization, None).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json(), serde_json::json!({ "status": "ok" }));
    }
}

#[tokio::test]
async fn metrics_are_text_and_count_refusals() {
    let fixture = Fixture::new().await;
    let refused = fixture.call(Method::GET, "/api/v1/servers", "/api/v1/servers", None, None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let forbidden = fixture.get("/metrics", "/metrics", Role::Sensor).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    let reply = fixture.get("/metrics", "/metrics", Role::Viewer).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.media_type().as_deref(), Some("text/plain"));
    let text = reply.text();
    assert!(text.contains("cordon_http_refused_total"), "{text}");
    assert!(text.contains("cordon_http_refused_total{status=\"401\"} 1"), "{text}");
    assert!(text.contains("cordon_http_refused_total{status=\"403\"} 1"), "{text}");
}

#[tokio::test]
async fn serves_the_document_byte_for_byte() {
    let fixture = Fixture::new().await;
    let reply = fixture.get("/api/v1/openapi.json", "/api/v1/openapi.json", Role::Viewer).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.media_type().as_deref(), Some("application/json"));
    assert!(reply.body == OPENAPI.as_bytes(), "the served document differs from cordon_api::OPENAPI");
    let on_disk = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json")).unwrap();
    assert!(reply.body == on_disk, "the served document differs from docs/openapi.json");
}

// ---------------------------------------------------------------------------------------------
// The document itself
// ---------------------------------------------------------------------------------------------

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn each_operation() -> impl Iterator<Item = (String, &'static str, &'static Value)> {
    DOC["paths"].as_object().expect("`paths` is an object").iter().flat_map(|(path, item)| {
        item.as_object()
            .unwrap()
            .iter()
            .filter(|(key, _)| METHODS.contains(&key.as_str()))
            .map(move |(method, op)| (method.to_ascii_uppercase(), path.as_str(), op))
    })
}

#[test]
fn document_lists_exactly_the_routes() {
    assert!(DOC["openapi"].as_str().unwrap_or_default().starts_with("3.1"), "openapi: {}", DOC["openapi"]);
    assert!(DOC["info"]["title"].is_string() && DOC["info"]["version"].is_string());
    let documented: BTreeSet<(String, String)> = each_operation().map(|(m, p, _)| (m, p.to_string())).collect();
    let routed: BTreeSet<(String, String)> =
        ROUTES.iter().map(|r| (r.method.as_str().to_string(), r.path.to_string())).collect();
    assert_eq!(routed.len(), ROUTES.len(), "ROUTES lists a route twice");
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(undocumented.is_empty(), "routes missing from docs/openapi.json: {undocumented:?}");
    assert!(unrouted.is_empty(), "operations in docs/openapi.json that ROUTES lacks: {unrouted:?}");
}

/// The one operation that also takes a webhook source's own credentials.
const WEBHOOK: (Method, &str) = (Method::POST, "/api/v1/detections");

#[test]
fn document_requires_bearer_auth_except_on_healthz() {
    let schemes = DOC["components"]["securitySchemes"].as_object().expect("no securitySchemes");
    let is_bearer = |name: &str| {
        schemes.get(name).is_some_and(|s| {
            s["type"] == "http" && s["scheme"].as_str().is_some_and(|v| v.eq_ignore_ascii_case("bearer"))
        })
    };
    let is_header = |name: &str, header: &str| {
        schemes.get(name).is_some_and(|s| s["type"] == "apiKey" && s["in"] == "header" && s["name"] == header)
    };
    // The HMAC signature: both headers together, as one requirement.
    let is_signature = |requirement: &Value| {
        let names: BTreeSet<&str> = requirement.as_object().unwrap().keys().map(String::as_str).collect();
        names.len() == 2
            && names.iter().any(|n| is_header(n, "X-Cordon-Timestamp"))
            && names.iter().any(|n| is_header(n, "X-Cordon-Signature"))
    };
    for route in ROUTES {
        let op = operation(&route.method, route.path);
        let security = op.get("security").unwrap_or(&DOC["security"]);
        let requirements =
            security.as_array().unwrap_or_else(|| panic!("{} {}: no security", route.method, route.path));
        if route.role.is_none() {
            assert!(requirements.is_empty(), "{} must be open: {security}", route.path);
            continue;
        }
        assert!(!requirements.is_empty(), "{} {} has no security", route.method, route.path);
        let webhook = (route.method.clone(), route.path) == WEBHOOK;
        for requirement in requirements {
            let names: Vec<&String> = requirement.as_object().unwrap().keys().collect();
            assert!(
                (!names.is_empty() && names.iter().all(|n| is_bearer(n))) || (webhook && is_signature(requirement)),
                "{} {}: {requirement} is not bearer auth",
                route.method,
                route.path
            );
        }
        if webhook {
            // The source's HMAC signature, the source's token and an API token: each on its own.
            assert!(requirements.iter().any(is_signature), "{}: no HMAC signature requirement", route.path);
            let bearers: Vec<&Value> = requirements.iter().filter(|r| !is_signature(r)).collect();
            assert_eq!(bearers.len(), 2, "{}: the source token and an API token: {security}", route.path);
            assert!(bearers.iter().any(|r| r.get("bearerAuth").is_some()), "{}: no API token", route.path);
        }
        // What a guarded route can always answer.
        for status in ["401", "403", "500"] {
            assert!(op["responses"].get(status).is_some(), "{} {} lists no {status}", route.method, route.path);
        }
        let unauthenticated = resolve(&DOC, &op["responses"]["401"]);
        assert!(unauthenticated["headers"].get("WWW-Authenticate").is_some(), "401 must document WWW-Authenticate");
    }
}

#[test]
fn every_ref_resolves() {
    fn walk(value: &Value, at: &str, count: &mut usize) {
        match value {
            Value::Object(map) => {
                if let Some(reference) = map.get("$ref") {
                    let reference = reference.as_str().unwrap_or_else(|| panic!("{at}: $ref is not a string"));
                    let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("{at}: non-local {reference}"));
                    assert!(DOC.pointer(pointer).is_some(), "{at}: $ref {reference} resolves to nothing");
                    *count += 1;
                }
                for (key, item) in map {
                    walk(item, &format!("{at}/{key}"), count);
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, &format!("{at}/{i}"), count);
                }
            }
            _ => {}
        }
    }
    let mut count = 0;
    walk(&DOC, "#", &mut count);
    assert!(count > 20, "only {count} $refs: is the document complete?");
}

#[test]
fn document_parameters_match_paths() {
    for (method, path, op) in each_operation() {
        let in_path: BTreeSet<&str> =
            path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
        let parameters: Vec<&Value> =
            op.get("parameters").and_then(Value::as_array).into_iter().flatten().map(|p| resolve(&DOC, p)).collect();
        let declared: BTreeSet<&str> =
            parameters.iter().filter(|p| p["in"] == "path").map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(in_path, declared, "{method} {path}: path parameters");
        for p in parameters.iter().filter(|p| p["in"] == "path") {
            assert_eq!(p["required"], true, "{method} {path}: path parameter {} must be required", p["name"]);
        }
    }
    let query: BTreeSet<&str> = operation(&Method::GET, "/api/v1/actions")["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(query, BTreeSet::from(["state", "server", "limit"]));
    let query: BTreeSet<&str> = operation(&Method::GET, "/api/v1/detections")["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(query, BTreeSet::from(["source", "action", "limit"]));
    for route in ROUTES.iter().filter(|r| r.path.ends_with("quarantine")) {
        let body = &operation(&route.method, route.path)["requestBody"];
        assert_eq!(body["required"], false, "{}: the body is optional", route.path);
        assert_eq!(body["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ActRequest");
    }
    for (path, required, schema) in
        [("/api/v1/actions/{id}/approve", false, "ApproveRequest"), ("/api/v1/detections", true, "DetectionPost")]
    {
        let body = &operation(&Method::POST, path)["requestBody"];
        assert_eq!(body["required"], required, "{path}: is the body required?");
        assert_eq!(body["content"]["application/json"]["schema"]["$ref"], format!("#/components/schemas/{schema}"));
    }
    let eve = &operation(&Method::POST, "/api/v1/sources/{name}/eve")["requestBody"]["content"];
    assert!(eve.get("application/x-ndjson").is_some(), "EVE is posted as NDJSON");
    // Routes that read no body document none.
    for path in ["/api/v1/actions/{id}/reject", "/api/v1/breaker/reset"] {
        assert!(operation(&Method::POST, path).get("requestBody").is_none(), "{path} reads no body");
    }
    let metrics = &operation(&Method::GET, "/metrics")["responses"]["200"]["content"];
    assert!(metrics.get("text/plain").is_some(), "/metrics answers text/plain");
}

/// The enum values of a schema (a component, then a path into its properties).
fn enum_of(schema: &Value) -> BTreeSet<String> {
    resolve(&DOC, schema)["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("no enum in {schema}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn texts<T: Copy>(all: &[T], text: fn(T) -> &'static str) -> BTreeSet<String> {
    all.iter().map(|&v| text(v).to_string()).collect()
}

#[test]
fn document_schemas_match_the_wire_types() {
    let schemas = &DOC["components"]["schemas"];
    for name in [
        "ServerView",
        "NicView",
        "ActionBrief",
        "ActionView",
        "StepView",
        "MessageView",
        "TimedMessageView",
        "ActRequest",
        "SubmitResponse",
        "ErrorBody",
        "ErrorView",
        "ApproveRequest",
        "DetectionView",
        "DetectionPost",
        "IngestResponse",
        "BreakerView",
    ] {
        let schema = &schemas[name];
        assert_eq!(schema["type"], "object", "{name}");
        let properties = declared(name);
        let required: BTreeSet<String> = schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        // serde serializes every field except ActionView's skipped `steps` and `messages`; the
        // request types refuse unknown fields, and require only what has no serde default.
        let optional: BTreeSet<String> = match name {
            "ActionView" => ["steps", "messages"].map(String::from).into(),
            "ActRequest" | "ApproveRequest" => properties.clone(),
            "DetectionPost" => &properties - &["source", "subject", "signature", "severity"].map(String::from).into(),
            _ => BTreeSet::new(),
        };
        assert_eq!(required, &properties - &optional, "{name}: required properties");
        if ["ActRequest", "ApproveRequest", "DetectionPost"].contains(&name) {
            assert_eq!(schema["additionalProperties"], false, "{name} denies unknown fields");
        }
    }
    let states = texts(ActionState::ALL, ActionState::as_str);
    let kinds = texts(ActionKind::ALL, ActionKind::as_str);
    assert_eq!(enum_of(&schemas["ActionView"]["properties"]["state"]), states);
    assert_eq!(enum_of(&schemas["ActionBrief"]["properties"]["state"]), states);
    assert_eq!(enum_of(&schemas["ActionView"]["properties"]["kind"]), kinds);
    assert_eq!(enum_of(&schemas["ActionBrief"]["properties"]["kind"]), kinds);
    assert_eq!(enum_of(&schemas["ServerView"]["properties"]["state"]), texts(ServerState::ALL, ServerState::as_str));
    assert_eq!(enum_of(&schemas["ServerView"]["properties"]["kind"]), texts(ServerKind::ALL, ServerKind::as_str));
    let severities = [Severity::Info, Severity::Warning, Severity::Error];
    assert_eq!(enum_of(&schemas["ErrorView"]["properties"]["severity"]), texts(&severities, Severity::as_str));
    let outcomes = [StepOutcome::Done, StepOutcome::AlreadyInPlace, StepOutcome::Failed];
    assert_eq!(enum_of(&schemas["StepView"]["properties"]["outcome"]), texts(&outcomes, StepOutcome::as_str));
    let list = operation(&Method::GET, "/api/v1/actions")["parameters"].as_array().unwrap();
    let state_parameter = list.iter().find(|p| p["name"] == "state").unwrap();
    assert_eq!(enum_of(&state_parameter["schema"]), states);
    let threats = texts(ThreatSeverity::ALL, ThreatSeverity::as_str);
    assert_eq!(enum_of(&schemas["DetectionView"]["properties"]["severity"]), threats);
    assert_eq!(enum_of(&schemas["DetectionPost"]["properties"]["severity"]), threats);
    // Approve as any kind but `notify` and `unquarantine` (422), or as the action's own (null).
    let approvable: BTreeSet<String> = ActionKind::ALL
        .iter()
        .filter(|k| !matches!(k, ActionKind::Notify | ActionKind::Unquarantine))
        .map(|k| k.as_str().to_string())
        .collect();
    let as_kind = &schemas["ApproveRequest"]["properties"]["as"];
    let allowed = as_kind["enum"].as_array().unwrap();
    assert!(allowed.contains(&Value::Null) && type_matches(as_kind, &Value::Null), "`as` may be null");
    let named: BTreeSet<String> = allowed.iter().filter_map(Value::as_str).map(String::from).collect();
    assert_eq!(named, approvable);
}

/// The request types, as the CLI serializes them, conform to their schemas with every property.
#[test]
fn request_types_serialize_as_documented() {
    use cordon_api::wire::{ActRequest, ApproveRequest, DetectionPost};
    let approve = serde_json::to_value(ApproveRequest { as_kind: Some("quarantine_reboot".into()) }).unwrap();
    assert_exact("ApproveRequest", &approve);
    conform(&DOC, &DOC["components"]["schemas"]["ApproveRequest"], &approve, "ApproveRequest");
    let act = serde_json::to_value(ActRequest { reason: Some("beacon".into()) }).unwrap();
    assert_exact("ActRequest", &act);
    let post = serde_json::to_value(detection_post(TOKEN_SOURCE, "10.10.0.11")).unwrap();
    assert_exact("DetectionPost", &post);
    conform(&DOC, &DOC["components"]["schemas"]["DetectionPost"], &post, "DetectionPost");
    let example =
        &operation(&Method::POST, "/api/v1/detections")["requestBody"]["content"]["application/json"]["example"];
    let parsed: DetectionPost = serde_json::from_value(example.clone()).expect("the documented example is refused");
    assert_eq!(parsed.source, TOKEN_SOURCE);
}

/// Every five-digit message number that the document mentions is in the catalogue.
#[test]
fn document_mentions_only_real_message_numbers() {
    fn walk(value: &Value, found: &mut BTreeSet<u32>) {
        match value {
            Value::String(text) => {
                for run in text.split(|c: char| !c.is_ascii_digit()) {
                    if run.len() == 5 && matches!(run.as_bytes()[0], b'2' | b'4' | b'6') {
                        found.insert(run.parse().unwrap());
                    }
                }
            }
            Value::Object(map) => map.values().for_each(|v| walk(v, found)),
            Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
            _ => {}
        }
    }
    let mut found = BTreeSet::new();
    walk(&DOC, &mut found);
    for number in [21010, 21012, 21013, 21014, 41001, 41002, 41003, 41005, 60002, 60003, 60013, 60020, 60021, 60040] {
        assert!(found.contains(&number), "the document never mentions {number}");
    }
    for number in found {
        assert!(Message::find(number).is_some(), "the document mentions {number}, which is no message");
    }
}

// ---------------------------------------------------------------------------------------------
// Served JSON against the document
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn served_servers_match_their_schema() {
    let fixture = Fixture::new().await;
    let seeded = fixture.seed_actions().await;

    let reply = fixture.get("/api/v1/servers/{name}", &format!("/api/v1/servers/{SERVER}"), Role::Viewer).await;
    assert_eq!(reply.status, StatusCode::OK);
    let server = reply.json();
    assert_exact("ServerView", &server);
    assert_eq!(server["name"], SERVER);
    assert_eq!(server["tenant"], "sales");
    assert_eq!(server["user_email"], Value::Null);
    assert_eq!(server["network"], "office");
    assert_eq!(server["ip"], "10.10.0.11");
    let nics = server["nics"].as_array().unwrap();
    assert_eq!(nics.len(), 1);
    assert_exact("NicView", &nics[0]);
    assert_eq!(nics[0]["switch"], "tor-1");
    assert_eq!(nics[0]["port"], "p1");
    assert_exact("ActionBrief", &server["last_action"]);
    assert_eq!(server["last_action"]["id"], seeded.running);
    assert_eq!(server["last_action"]["state"], "running");

    let reply = fixture.get("/api/v1/servers", "/api/v1/servers", Role::Viewer).await;
    assert_eq!(reply.status, StatusCode::OK);
    let list = reply.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_exact("ServerView", &list[0]);
    assert_exact("NicView", &list[0]["nics"][0]);
    assert_exact("ActionBrief", &list[0]["last_action"]);
    assert_eq!(list[0], server);
}

#[tokio::test]
async fn served_server_without_action_matches_its_schema() {
    let fixture = Fixture::new().await;
    let reply = fixture.get("/api/v1/servers/{name}", &format!("/api/v1/servers/{SERVER}"), Role::Viewer).await;
    assert_eq!(reply.status, StatusCode::OK);
    let server = reply.json();
    assert_exact("ServerView", &server);
    assert_eq!(server["last_action"], Value::Null);
    assert_eq!(server["state"], "operational");
}

#[tokio::test]
async fn served_actions_match_their_schema() {
    let fixture = Fixture::new().await;
    let seeded = fixture.seed_actions().await;

    let uri = format!("/api/v1/actions/{}", seeded.running);
    let reply = fixture.get("/api/v1/actions/{id}", &uri, Role::Viewer).await;
    assert_eq!(reply.status, StatusCode::OK);
    let action = reply.json();
    // With steps and messages, ActionView has every declared property.
    assert_exact("ActionView", &action);
    assert_exact("MessageView", &action["message"]);
    assert_eq!(action["message"]["number"], messages::QUARANTINE_STARTED.number);
    assert_eq!(action["server"], SERVER);
    assert_eq!(action["attempts"], 1);
    let steps = action["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    for step in steps {
        assert_exact("StepView", step);
    }
    assert_eq!(steps[0]["outcome"], "already_in_place");
    assert_eq!(steps[0]["message_number"], Value::Null);
    assert_eq!(steps[1]["message_number"], messages::DRIVER_FAILURE.number);
    let timed = action["messages"].as_array().unwrap();
    assert_eq!(timed.len(), 2);
    for message in timed {
        assert_exact("TimedMessageView", message);
    }

    let uri = format!("/api/v1/actions/{}", seeded.orphan);
    let orphan = fixture.get("/api/v1/actions/{id}", &uri, Role::Viewer).await.json();
    assert_exact("ActionView", &orphan);
    assert_eq!(orphan["server"], Value::Null);
    assert_eq!(orphan["reason"], Value::Null);
    assert_eq!(orphan["message"], Value::Null);
    assert_eq!(orphan["steps"], serde_json::json!([]));

    // In a list, `steps` and `messages` are omitted: everything else is there.
    let reply = fixture.get("/api/v1/actions", "/api/v1/actions", Role::Viewer).await;
    assert_eq!(reply.status, StatusCode::OK);
    let list = reply.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let mut brief = declared("ActionView");
    brief.remove("steps");
    brief.remove("messages");
    for item in list {
        assert_eq!(served(item), brief, "{item}");
    }
    assert_eq!(list[0]["id"], seeded.orphan, "newest first");

    for (query, expected) in [
        ("?state=running", vec![seeded.running]),
        ("?state=pending", vec![seeded.orphan]),
        ("?state=failed", vec![]),
        (&format!("?server={SERVER}"), vec![seeded.running]),
        ("?limit=1", vec![seeded.orphan]),
        ("?state=running&server=sbc-01&limit=10", vec![seeded.running]),
    ] {
        let reply = fixture.get("/api/v1/actions", &format!("/api/v1/actions{query}"), Role::Viewer).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}");
        let ids: Vec<i64> = reply.json().as_array().unwrap().iter().map(|a| a["id"].as_i64().unwrap()).collect();
        assert_eq!(ids, expected, "{query}");
    }
}

#[tokio::test]
async fn served_submit_response_matches_its_schema() {
    let fixture = Fixture::new().await;
    let seeded = fixture.seed_actions().await;
    let template = "/api/v1/servers/{name}/quarantine";
    let uri = format!("/api/v1/servers/{SERVER}/quarantine");
    // The open quarantine action is returned: 200, not a new one.
    let reply = fixture.post(template, &uri, Role::Operator, Some(r#"{"reason":"again"}"#)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let submitted = reply.json();
    assert_exact("SubmitResponse", &submitted);
    // A submitted action carries no journal: `steps` and `messages` are omitted.
    let mut without_journal = declared("ActionView");
    without_journal.remove("steps");
    without_journal.remove("messages");
    assert_eq!(served(&submitted["action"]), without_journal);
    assert_exact("MessageView", &submitted["message"]);
    assert_eq!(submitted["existing"], true);
    assert_eq!(submitted["action"]["id"], seeded.running);
    assert_eq!(submitted["message"]["number"], messages::ACTION_ALREADY_OPEN.number);
}

#[tokio::test]
async fn served_error_bodies_match_their_schema() {
    let fixture = Fixture::new().await;
    let reply = fixture.get("/api/v1/servers/{name}", "/api/v1/servers/nope", Role::Viewer).await;
    assert_error(&reply, StatusCode::NOT_FOUND, &messages::SERVER_NOT_FOUND);
    let body = reply.json();
    assert_exact("ErrorBody", &body);
    assert_exact("ErrorView", &body["error"]);
    assert_eq!(body["error"]["text"], "server not found. name=nope");

    let reply = fixture.call(Method::GET, "/api/v1/servers", "/api/v1/servers", None, None).await;
    assert_exact("ErrorBody", &reply.json());
    assert_exact("ErrorView", &reply.json()["error"]);
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_action_queries_are_refused() {
    let fixture = Fixture::new().await;
    let list = "/api/v1/actions";
    let reply = fixture.get(list, "/api/v1/actions?state=bogus", Role::Viewer).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, &messages::BAD_REQUEST);
    assert!(reply.json()["error"]["text"].as_str().unwrap().contains("bogus"));

    let reply = fixture.get(list, "/api/v1/actions?server=nope", Role::Viewer).await;
    assert_error(&reply, StatusCode::NOT_FOUND, &messages::SERVER_NOT_FOUND);

    // Refused by the query parser, still with a numbered error body.
    for query in ["?bogus=1", "?limit=abc", "?limit=-1"] {
        let reply = fixture.get(list, &format!("/api/v1/actions{query}"), Role::Viewer).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, &messages::BAD_REQUEST);
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let fixture = Fixture::new().await;
    let token = &fixture.tokens[&Role::Viewer];
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let authorization = format!("{scheme} {token}");
        let reply = fixture.call(Method::GET, "/api/v1/servers", "/api/v1/servers", Some(&authorization), None).await;
        assert_eq!(reply.status, StatusCode::OK, "{scheme}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_numbered_errors() {
    let fixture = Fixture::new().await;
    for (method, uri, status) in [
        (Method::GET, "/api/v1/nothing-here", StatusCode::NOT_FOUND),
        (Method::DELETE, "/api/v1/servers", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, fixture.bearer(Role::Admin))
            .body(Body::empty())
            .unwrap();
        let response = fixture.app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), status, "{uri}");
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["number"], messages::NO_SUCH_ROUTE.number, "{uri}");
    }
}

#[tokio::test]
async fn bad_action_ids_are_refused() {
    let fixture = Fixture::new().await;
    let seeded = fixture.seed_actions().await;
    let missing = seeded.running.max(seeded.orphan) + 1000;

    let reply = fixture.get("/api/v1/actions/{id}", "/api/v1/actions/abc", Role::Viewer).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, &messages::BAD_REQUEST);
    let reply = fixture.get("/api/v1/actions/{id}", &format!("/api/v1/actions/{missing}"), Role::Viewer).await;
    assert_error(&reply, StatusCode::NOT_FOUND, &messages::ACTION_NOT_FOUND);
    assert_eq!(reply.json()["error"]["text"], format!("action not found. id={missing}"));

    for verb in ["check", "retry"] {
        let template = format!("/api/v1/actions/{{id}}/{verb}");
        let reply = fixture.post(&template, &format!("/api/v1/actions/abc/{verb}"), Role::Operator, None).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, &messages::BAD_REQUEST);
        let reply = fixture.post(&template, &format!("/api/v1/actions/{missing}/{verb}"), Role::Operator, None).await;
        assert_error(&reply, StatusCode::NOT_FOUND, &messages::ACTION_NOT_FOUND);
        // A running action can be neither checked nor retried.
        let uri = format!("/api/v1/actions/{}/{verb}", seeded.running);
        let reply = fixture.post(&template, &uri, Role::Operator, None).await;
        assert_error(&reply, StatusCode::CONFLICT, &messages::ACTION_STATE_FORBIDS);
    }
}

#[tokio::test]
async fn bad_submissions_are_refused() {
    let fixture = Fixture::new().await;
    let quarantine = "/api/v1/servers/{name}/quarantine";
    let uri = format!("/api/v1/servers/{SERVER}/quarantine");

    for body in [r#"{"reason":"#, "not json", r#"{"reason":"x","force":true}"#, r#"{"reason":5}"#, "[]"] {
        let reply = fixture.post(quarantine, &uri, Role::Operator, Some(body)).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, &messages::BAD_REQUEST);
    }
    let reply = fixture.post(quarantine, &uri, Role::Operator, Some(r#"{"reason":"x","force":true}"#)).await;
    assert!(reply.json()["error"]["text"].as_str().unwrap().contains("force"), "{}", reply.text());

    // Well-formed (or empty) bodies reach the engine, which has no switch driver: 60013.
    for body in [None, Some(""), Some("  \n"), Some("{}"), Some(r#"{"reason":null}"#), Some(r#"{"reason":"ids"}"#)] {
        let reply = fixture.post(quarantine, &uri, Role::Operator, body).await;
        assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, &messages::NO_MOVABLE_NIC);
    }
    assert!(fixture.store.list_actions(&Default::default()).await.unwrap().is_empty(), "no action was created");

    let reply = fixture.post(quarantine, "/api/v1/servers/nope/quarantine", Role::Operator, None).await;
    assert_error(&reply, StatusCode::NOT_FOUND, &messages::SERVER_NOT_FOUND);

    let unquarantine = "/api/v1/servers/{name}/unquarantine";
    let reply =
        fixture.post(unquarantine, &format!("/api/v1/servers/{SERVER}/unquarantine"), Role::Operator, None).await;
    assert_error(&reply, StatusCode::CONFLICT, &messages::NOT_QUARANTINED);
    let reply = fixture.post(unquarantine, "/api/v1/servers/nope/unquarantine", Role::Operator, None).await;
    assert_error(&reply, StatusCode::NOT_FOUND, &messages::SERVER_NOT_FOUND);
}

#[tokio::test]
async fn quarantining_a_quarantined_server_is_a_conflict() {
    let fixture = Fixture::new().await;
    fixture.store.set_server_state(fixture.server_id, ServerState::Quarantined).await.unwrap();
    let reply = fixture
        .post("/api/v1/servers/{name}/quarantine", &format!("/api/v1/servers/{SERVER}/quarantine"), Role::Admin, None)
        .await;
    assert_error(&reply, StatusCode::CONFLICT, &messages::ALREADY_QUARANTINED);
}

#[tokio::test]
async fn a_server_is_found_by_address_too() {
    let fixture = Fixture::new().await;
    let template = "/api/v1/servers/{name}";
    let reply = fixture.get(template, "/api/v1/servers/10.10.0.11", Role::Viewer).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_exact("ServerView", &reply.json());
    assert_eq!(reply.json()["name"], SERVER);
    let reply = fixture.get(template, "/api/v1/servers/10.10.0.99", Role::Viewer).await;
    assert_error(&reply, StatusCode::NOT_FOUND, &messages::SERVER_NOT_FOUND_BY_ADDRESS);
    assert_eq!(reply.json()["error"]["text"], "server not found. ip=10.10.0.99");
}

// ---------------------------------------------------------------------------------------------
// Detections: the webhook, Suricata EVE, the list
// ---------------------------------------------------------------------------------------------

const DETECTIONS: &str = "/api/v1/detections";
const EVE: &str = "/api/v1/sources/{name}/eve";

/// A detection of sbc-01 (`subject`) with every field set but `file`.
fn detection_post(source: &str, subject: &str) -> cordon_api::wire::DetectionPost {
    cordon_api::wire::DetectionPost {
        source: source.into(),
        subject: subject.into(),
        peer: Some("203.0.113.7".into()),
        signature: "ET MALWARE beacon to a known C2".into(),
        signature_id: Some("2027865".into()),
        category: Some("A Network Trojan was detected".into()),
        severity: "high".into(),
        observed_at: Some("2025-01-31T09:15:02Z".into()),
        sensor: Some("edr-1".into()),
        file: None,
    }
}

fn detection_body(source: &str) -> String {
    serde_json::to_string(&detection_post(source, "10.10.0.11")).unwrap()
}

/// `X-Cordon-Timestamp` and `X-Cordon-Signature` of `body`, signed at `at` (Unix seconds).
fn signature_headers(secret: &[u8], at: i64, body: &str) -> (String, String) {
    let timestamp = at.to_string();
    let signature = format!("sha256={}", sign(secret, &timestamp, body.as_bytes()));
    (timestamp, signature)
}

const TIMESTAMP: &str = "x-cordon-timestamp";
const SIGNATURE: &str = "x-cordon-signature";

impl Fixture {
    async fn post_detection(&self, headers: &[(&str, &str)], body: &str) -> Reply {
        self.send(Method::POST, DETECTIONS, DETECTIONS, headers, Some(body)).await
    }

    async fn post_eve(&self, source: &str, role: Role, body: &str) -> Reply {
        self.post(EVE, &format!("/api/v1/sources/{source}/eve"), role, Some(body)).await
    }

    /// `GET /api/v1/detections{query}` as a viewer; every item checked against DetectionView.
    async fn detections(&self, query: &str) -> Vec<Value> {
        let reply = self.get(DETECTIONS, &format!("{DETECTIONS}{query}"), Role::Viewer).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text());
        let list = reply.json().as_array().unwrap().clone();
        for item in &list {
            assert_exact("DetectionView", item);
        }
        list
    }

    async fn action_json(&self, id: i64) -> Value {
        let reply = self.get("/api/v1/actions/{id}", &format!("/api/v1/actions/{id}"), Role::Viewer).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()
    }
}

/// An accepted post: its counts, and the ids it committed.
fn accepted(reply: &Reply, received: u64, accepted: u64, skipped: u64, rejected: u64) -> Vec<i64> {
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    let answer = reply.json();
    assert_exact("IngestResponse", &answer);
    let counts = [&answer["received"], &answer["accepted"], &answer["skipped"], &answer["rejected"]];
    assert_eq!(counts.map(|n| n.as_u64().unwrap()), [received, accepted, skipped, rejected], "{answer}");
    assert_eq!(answer["errors"].as_array().unwrap().len() as u64, rejected.min(10), "{answer}");
    let ids: Vec<i64> = answer["ids"].as_array().unwrap().iter().map(|id| id.as_i64().unwrap()).collect();
    assert_eq!(ids.len() as u64, accepted, "{answer}");
    ids
}

#[tokio::test]
async fn webhook_detections_are_accepted_with_the_sources_credentials() {
    let fixture = Fixture::new().await;
    let mut posted = Vec::new();

    // The source's own token (the scheme is case-insensitive here too).
    for scheme in ["Bearer", "bearer"] {
        let body = detection_body(TOKEN_SOURCE);
        let authorization = format!("{scheme} {SOURCE_TOKEN}");
        let reply = fixture.post_detection(&[("authorization", &authorization)], &body).await;
        posted.extend(accepted(&reply, 1, 1, 0, 0));
    }

    // The source's HMAC signature: now, and anywhere within the allowed skew.
    let now = Utc::now().timestamp();
    for at in [now, now - (MAX_SKEW_SECS - 10), now + (MAX_SKEW_SECS - 10)] {
        let body = detection_body(HMAC_SOURCE);
        let (timestamp, signature) = signature_headers(HMAC_SECRET, at, &body);
        let reply = fixture.post_detection(&[(TIMESTAMP, &timestamp), (SIGNATURE, &signature)], &body).await;
        posted.extend(accepted(&reply, 1, 1, 0, 0));
    }

    // An API token that may post detections, for either source.
    for role in [Role::Sensor, Role::Admin] {
        for source in [TOKEN_SOURCE, HMAC_SOURCE] {
            let reply =
                fixture.post_detection(&[("authorization", &fixture.bearer(role))], &detection_body(source)).await;
            posted.extend(accepted(&reply, 1, 1, 0, 0));
        }
    }

    // Listed newest first, as posted, not processed yet (the engine does not run here).
    let all = fixture.detections("").await;
    let listed: Vec<i64> = all.iter().map(|d| d["id"].as_i64().unwrap()).collect();
    posted.reverse();
    assert_eq!(listed, posted);
    let hooks = fixture.detections(&format!("?source={TOKEN_SOURCE}")).await;
    assert_eq!(hooks.len(), 4);
    assert!(hooks.iter().all(|d| d["source"] == TOKEN_SOURCE));
    let first = hooks.last().unwrap();
    assert_eq!(first["subject"], "10.10.0.11");
    assert_eq!(first["peer"], "203.0.113.7");
    assert_eq!(first["signature"], "ET MALWARE beacon to a known C2");
    assert_eq!(first["signature_id"], "2027865");
    assert_eq!(first["category"], "A Network Trojan was detected");
    assert_eq!(first["severity"], "high");
    assert_eq!(first["sensor"], "edr-1");
    assert_eq!(first["observed_at"], "2025-01-31T09:15:02.000Z");
    for unprocessed in ["action_id", "server", "decision"] {
        assert_eq!(first[unprocessed], Value::Null, "{unprocessed}");
    }
    assert_eq!(fixture.detections(&format!("?source={HMAC_SOURCE}&limit=2")).await.len(), 2);

    let hooks = fixture.counters[TOKEN_SOURCE].snapshot();
    assert_eq!((hooks.received, hooks.accepted, hooks.rejected), (4, 4, 0));
    assert_eq!(hooks.bytes, 4 * detection_body(TOKEN_SOURCE).len() as u64);
    let signed = fixture.counters[HMAC_SOURCE].snapshot();
    assert_eq!((signed.received, signed.accepted, signed.rejected), (5, 5, 0));
}

#[tokio::test]
async fn webhook_credentials_are_checked() {
    let fixture = Fixture::new().await;
    let now = Utc::now().timestamp();
    let hooks = detection_body(TOKEN_SOURCE);
    let signed = detection_body(HMAC_SOURCE);
    let (timestamp, signature) = signature_headers(HMAC_SECRET, now, &signed);
    let (stale, stale_signature) = signature_headers(HMAC_SECRET, now - MAX_SKEW_SECS - 1, &signed);
    let (early, early_signature) = signature_headers(HMAC_SECRET, now + MAX_SKEW_SECS + 60, &signed);
    let (_, wrong_key) = signature_headers(b"not the key", now, &signed);
    let (_, other_body) = signature_headers(HMAC_SECRET, now, &detection_body("signed "));
    let (_, token_source_signed) = signature_headers(HMAC_SECRET, now, &hooks);
    let source_token = format!("Bearer {SOURCE_TOKEN}");
    let sensor = fixture.bearer(Role::Sensor);
    let unsigned = signature.strip_prefix("sha256=").unwrap().to_string();
    let next_second = (now + 1).to_string();
    let nope = detection_body("nope");

    /// What is tried, the headers sent, the body.
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        ("no credentials", vec![], &hooks),
        ("a wrong source token", vec![("authorization", "Bearer s3cret-not")], &hooks),
        ("the source token under another scheme", vec![("authorization", "Token s3cret")], &hooks),
        ("the token of another source", vec![("authorization", &source_token)], &signed),
        ("a signature made with another key", vec![(TIMESTAMP, &timestamp), (SIGNATURE, &wrong_key)], &signed),
        ("the signature of another body", vec![(TIMESTAMP, &timestamp), (SIGNATURE, &other_body)], &signed),
        ("a signature without `sha256=`", vec![(TIMESTAMP, &timestamp), (SIGNATURE, &unsigned)], &signed),
        ("a signature that is not hex", vec![(TIMESTAMP, &timestamp), (SIGNATURE, "sha256=xyz")], &signed),
        ("a signature without a timestamp", vec![(SIGNATURE, &signature)], &signed),
        ("a timestamp that is no number", vec![(TIMESTAMP, "now"), (SIGNATURE, &signature)], &signed),
        ("another timestamp than signed", vec![(TIMESTAMP, &next_second), (SIGNATURE, &signature)], &signed),
        ("a stale timestamp", vec![(TIMESTAMP, &stale), (SIGNATURE, &stale_signature)], &signed),
        ("a timestamp too far ahead", vec![(TIMESTAMP, &early), (SIGNATURE, &early_signature)], &signed),
        // Extreme timestamps must not overflow the skew check (no panic, just a refusal).
        ("the smallest timestamp", vec![(TIMESTAMP, "-9223372036854775808"), (SIGNATURE, &signature)], &signed),
        ("the largest timestamp", vec![(TIMESTAMP, "9223372036854775807"), (SIGNATURE, &signature)], &signed),
        // A source with a token has no secret: a signature proves nothing for it.
        ("a signature for a token source", vec![(TIMESTAMP, &timestamp), (SIGNATURE, &token_source_signed)], &hooks),
        // A signature that is present decides alone, even next to an API token.
        (
            "a bad signature next to a sensor token",
            vec![("authorization", &sensor), (TIMESTAMP, &timestamp), (SIGNATURE, &wrong_key)],
            &signed,
        ),
        // The source is read from the body: another source's token does not carry over.
        ("a source token for an unknown source", vec![("authorization", &source_token)], &nope),
    ];
    let mut denied: std::collections::HashMap<&str, u64> = Default::default();
    for (case, headers, body) in cases {
        let source = [TOKEN_SOURCE, HMAC_SOURCE].into_iter().find(|s| body == detection_body(s));
        *denied.entry(source.unwrap_or("none")).or_default() += 1;
        let reply = fixture.post_detection(&headers, body).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, &messages::UNAUTHENTICATED);
        assert_eq!(reply.headers.get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()), Some("Bearer"), "{case}");
    }

    // An API token whose role may not post detections.
    for role in [Role::Viewer, Role::Operator] {
        *denied.entry(TOKEN_SOURCE).or_default() += 1;
        let reply = fixture.post_detection(&[("authorization", &fixture.bearer(role))], &hooks).await;
        assert_error(&reply, StatusCode::FORBIDDEN, &messages::FORBIDDEN);
        let text = reply.json()["error"]["text"].as_str().unwrap().to_string();
        assert!(text.contains(&format!("role {role}")) && text.contains("role sensor is required"), "{text}");
    }

    // Nothing was stored or read before authentication; each refusal is counted as denied
    // (reason auth) for the source the body names.
    assert!(fixture.store.list_detections(&Default::default()).await.unwrap().is_empty());
    for source in [TOKEN_SOURCE, HMAC_SOURCE] {
        let snapshot = fixture.counters[source].snapshot();
        assert_eq!((snapshot.received, snapshot.accepted, snapshot.rejected, snapshot.bytes), (0, 0, 0, 0));
        assert_eq!(snapshot.denied(Denied::Auth), denied[source], "{source}");
        assert_eq!(snapshot.denied(Denied::Replay), 0, "{source}");
    }
}

#[tokio::test]
async fn a_replayed_signature_is_refused_and_counted() {
    let fixture = Fixture::new().await;
    let now = Utc::now().timestamp();
    let body = detection_body(HMAC_SOURCE);
    let (timestamp, signature) = signature_headers(HMAC_SECRET, now, &body);
    let headers = [(TIMESTAMP, timestamp.as_str()), (SIGNATURE, signature.as_str())];
    accepted(&fixture.post_detection(&headers, &body).await, 1, 1, 0, 0);

    // The same request again, byte for byte, within the skew: a replay.
    for _ in 0..2 {
        let reply = fixture.post_detection(&headers, &body).await;
        assert_error(&reply, StatusCode::CONFLICT, &messages::WEBHOOK_REPLAY);
    }
    // The same body signed anew (another timestamp) is a new request.
    let (timestamp, signature) = signature_headers(HMAC_SECRET, now - 1, &body);
    let reply = fixture.post_detection(&[(TIMESTAMP, &timestamp), (SIGNATURE, &signature)], &body).await;
    accepted(&reply, 1, 1, 0, 0);

    assert_eq!(fixture.store.list_detections(&Default::default()).await.unwrap().len(), 2);
    let snapshot = fixture.counters[HMAC_SOURCE].snapshot();
    assert_eq!((snapshot.received, snapshot.accepted), (2, 2));
    assert_eq!(snapshot.denied(Denied::Replay), 2);
    let metrics = fixture.get("/metrics", "/metrics", Role::Viewer).await.text();
    assert!(
        metrics.contains(&format!("cordon_source_denied_total{{source=\"{HMAC_SOURCE}\",reason=\"replay\"}} 2")),
        "{metrics}"
    );
}

#[tokio::test]
async fn bad_webhook_posts_are_refused_and_later_ones_accepted() {
    let fixture = Fixture::new().await;
    let source_token = format!("Bearer {SOURCE_TOKEN}");
    let sensor = fixture.bearer(Role::Sensor);

    // A source that is not a configured webhook (an EVE source is not one either): only an API
    // token gets that far.
    for source in ["nope", EVE_SOURCE] {
        let reply = fixture.post_detection(&[("authorization", &sensor)], &detection_body(source)).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, &messages::BAD_REQUEST);
        let text = reply.json()["error"]["text"].as_str().unwrap().to_string();
        assert!(text.contains(&format!("`{source}` is not a configured webhook source")), "{text}");
    }

    // Bodies that name the source, so that its token authenticates them, but are no detection.
    let good = serde_json::to_value(detection_post(TOKEN_SOURCE, "10.10.0.11")).unwrap();
    let with = |key: &str, value: Value| {
        let mut body = good.clone();
        body[key] = value;
        body.to_string()
    };
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("subject");
    let named = [
        (missing.to_string(), "subject"),
        (with("force", Value::Bool(true)), "force"),
        (with("severity", serde_json::json!(3)), "invalid type: integer `3`"),
        (with("severity", serde_json::json!("urgent")), "urgent"),
        (with("subject", serde_json::json!("sbc-01")), "sbc-01"),
        (with("peer", serde_json::json!("nowhere")), "nowhere"),
        (with("observed_at", serde_json::json!("yesterday")), "yesterday"),
        (with("signature", serde_json::json!("  ")), "signature"),
    ];
    for (body, detail) in &named {
        let reply = fixture.post_detection(&[("authorization", &source_token)], body).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, &messages::BAD_REQUEST);
        let text = reply.json()["error"]["text"].as_str().unwrap().to_string();
        assert!(text.contains(detail), "{body}: {text}");
    }
    // Bodies that name no source: refused after an API token authenticated them.
    for body in ["", "not json", "[]", r#"{"source":"hooks","#, "{}"] {
        let reply = fixture.post_detection(&[("authorization", &sensor)], body).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, &messages::BAD_REQUEST);
    }

    // The source is not held against: its next good detection is accepted.
    let reply = fixture.post_detection(&[("authorization", &source_token)], &good.to_string()).await;
    let ids = accepted(&reply, 1, 1, 0, 0);
    let listed = fixture.detections(&format!("?source={TOKEN_SOURCE}")).await;
    assert_eq!(listed.iter().map(|d| d["id"].as_i64().unwrap()).collect::<Vec<_>>(), ids);
    let counted = fixture.counters[TOKEN_SOURCE].snapshot();
    let refused = named.len() as u64;
    assert_eq!((counted.received, counted.accepted, counted.rejected), (refused + 1, 1, refused));
}

/// Suricata EVE lines: two alerts (one with CRLF, one with the `target` keyword), three other
/// events, a blank line and four lines that are no event.
const EVE_LINES: &str = concat!(
    r#"{"timestamp":"2025-01-31T09:15:02.123456+0000","flow_id":1,"event_type":"alert","src_ip":"10.10.0.11","src_port":49152,"dest_ip":"203.0.113.7","dest_port":443,"proto":"TCP","host":"ids-sensor-1","alert":{"action":"allowed","gid":1,"signature_id":2027865,"rev":3,"signature":"ET MALWARE beacon","category":"A Network Trojan was detected","severity":1}}"#,
    "\r\n",
    r#"{"timestamp":"2025-01-31T09:15:03.000000+0000","event_type":"flow","src_ip":"10.10.0.12","dest_ip":"10.10.0.13","flow":{"pkts_toserver":3}}"#,
    "\n",
    "this is not JSON\n",
    r#"{"event_type":"dns","src_ip":"10.10.0.12","dns":{"type":"query","rrname":"example.com"}}"#,
    "\n",
    "[1,2,3]\n",
    "   \n",
    r#"{"timestamp":"2025-01-31T09:15:04.000000+0000","event_type":"alert","src_ip":"198.51.100.9","dest_ip":"10.10.0.11","alert":{"signature_id":2100498,"signature":"GPL ATTACK_RESPONSE id check returned root","category":"Potentially Bad Traffic","severity":2,"source":{"ip":"198.51.100.9"},"target":{"ip":"10.10.0.11"}}}"#,
    "\n",
    r#"{"event_type":"alert","alert":{"signature":"an alert without src_ip"}}"#,
    "\n",
    r#"{"src_ip":"10.10.0.11"}"#,
    "\n",
    r#"{"event_type":"stats","stats":{"uptime":30}}"#,
);

#[tokio::test]
async fn eve_lines_are_counted_and_their_alerts_listed() {
    let fixture = Fixture::new().await;
    let reply = fixture.post_eve(EVE_SOURCE, Role::Sensor, EVE_LINES).await;
    let ids = accepted(&reply, 9, 2, 3, 4);
    let errors = reply.json()["errors"].clone();
    assert!(errors.as_array().unwrap().iter().any(|e| e.as_str().unwrap().contains("src_ip")), "{errors}");

    let listed = fixture.detections(&format!("?source={EVE_SOURCE}")).await;
    assert_eq!(listed.iter().map(|d| d["id"].as_i64().unwrap()).collect::<Vec<_>>(), [ids[1], ids[0]]);
    let (targeted, beacon) = (&listed[0], &listed[1]);
    assert_eq!(beacon["source"], EVE_SOURCE);
    assert_eq!(beacon["subject"], "10.10.0.11");
    assert_eq!(beacon["peer"], "203.0.113.7");
    assert_eq!(beacon["sensor"], "ids-sensor-1");
    assert_eq!(beacon["signature_id"], "2027865");
    assert_eq!(beacon["signature"], "ET MALWARE beacon");
    assert_eq!(beacon["severity"], "high");
    assert_eq!(beacon["observed_at"], "2025-01-31T09:15:02.123Z");
    // With the `target` keyword, the target is the subject whichever side it is on.
    assert_eq!(targeted["subject"], "10.10.0.11");
    assert_eq!(targeted["peer"], "198.51.100.9");
    assert_eq!(targeted["severity"], "medium");
    assert_eq!(targeted["sensor"], Value::Null);

    for (query, expected) in [
        (format!("?source={EVE_SOURCE}&limit=1"), vec![ids[1]]),
        (format!("?source={TOKEN_SOURCE}"), vec![]),
        ("?source=nope".to_string(), vec![]),
        ("?action=1".to_string(), vec![]),
        ("?limit=0".to_string(), vec![]),
        ("?limit=100000".to_string(), vec![ids[1], ids[0]]),
    ] {
        let found: Vec<i64> = fixture.detections(&query).await.iter().map(|d| d["id"].as_i64().unwrap()).collect();
        assert_eq!(found, expected, "{query}");
    }

    let counted = fixture.counters[EVE_SOURCE].snapshot();
    assert_eq!((counted.received, counted.accepted, counted.skipped, counted.rejected), (9, 2, 3, 4));
    assert_eq!(counted.bytes, EVE_LINES.len() as u64);
    let kinds: Vec<(&str, u64)> = counted.skipped_by_kind.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    assert_eq!(kinds, [("dns", 1), ("flow", 1), ("stats", 1)]);
    let metrics = fixture.get("/metrics", "/metrics", Role::Viewer).await.text();
    assert!(metrics.contains(r#"cordon_source_accepted_total{source="ids-1"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"cordon_source_skipped_total{source="ids-1",kind="flow"} 1"#), "{metrics}");

    // An empty body is no error; nothing to count.
    accepted(&fixture.post_eve(EVE_SOURCE, Role::Admin, "").await, 0, 0, 0, 0);
    // Only a `suricata-eve` source takes EVE.
    for source in ["nope", TOKEN_SOURCE] {
        let reply = fixture.post_eve(source, Role::Sensor, EVE_LINES).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, &messages::BAD_REQUEST);
        assert!(reply.text().contains("is not a configured suricata-eve source"), "{}", reply.text());
    }
    assert_eq!(fixture.detections("").await.len(), 2);
}

#[tokio::test]
async fn bad_detection_queries_are_refused() {
    let fixture = Fixture::new().await;
    for query in ["?bogus=1", "?action=abc", "?limit=abc", "?limit=-1", "?state=pending"] {
        let reply = fixture.get(DETECTIONS, &format!("{DETECTIONS}{query}"), Role::Viewer).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, &messages::BAD_REQUEST);
    }
}

// ---------------------------------------------------------------------------------------------
// Approval and the circuit breaker
// ---------------------------------------------------------------------------------------------

const APPROVE: &str = "/api/v1/actions/{id}/approve";
const REJECT: &str = "/api/v1/actions/{id}/reject";

fn command_uri(template: &str, id: impl std::fmt::Display) -> String {
    template.replace("{id}", &id.to_string())
}

/// An action answered by a command: an ActionView without its journal.
fn commanded(reply: &Reply) -> Value {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let action = reply.json();
    let mut without_journal = declared("ActionView");
    without_journal.remove("steps");
    without_journal.remove("messages");
    assert_eq!(served(&action), without_journal, "{action}");
    action
}

#[tokio::test]
async fn actions_awaiting_approval_are_approved_or_rejected() {
    let fixture = Fixture::new().await;
    let notify = fixture.awaiting(ActionKind::Notify).await;
    let waiting = fixture.action_json(notify).await;
    assert_exact("ActionView", &waiting);
    assert_eq!(waiting["state"], "awaiting_approval");
    assert_eq!(waiting["kind"], "notify");
    assert_eq!(waiting["decided_by"], "default");
    assert_eq!(waiting["detections"], 0);
    assert_eq!(waiting["message"]["number"], messages::ACTION_AWAITS_APPROVAL.number);

    // Refused bodies change nothing.
    for (body, status) in [
        (r#"{"as":"notify"}"#, StatusCode::UNPROCESSABLE_ENTITY),
        (r#"{"as":"unquarantine"}"#, StatusCode::UNPROCESSABLE_ENTITY),
        (r#"{"as":"bogus"}"#, StatusCode::BAD_REQUEST),
        (r#"{"as":5}"#, StatusCode::BAD_REQUEST),
        (r#"{"as":"quarantine","now":true}"#, StatusCode::BAD_REQUEST),
        ("not json", StatusCode::BAD_REQUEST),
    ] {
        let reply = fixture.post(APPROVE, &command_uri(APPROVE, notify), Role::Operator, Some(body)).await;
        assert_error(&reply, status, &messages::BAD_REQUEST);
    }
    assert_eq!(fixture.action_json(notify).await, waiting);

    // Approved without `as`: a `notify` action becomes a quarantine.
    let reply = fixture.post(APPROVE, &command_uri(APPROVE, notify), Role::Operator, None).await;
    let approved = commanded(&reply);
    assert_eq!(approved["state"], "pending");
    assert_eq!(approved["kind"], "quarantine");
    assert_eq!(approved["decided_by"], "default");
    assert_eq!(approved["message"]["number"], messages::ACTION_APPROVED.number);
    assert_eq!(approved["message"]["text"], format!("action {notify} approved as quarantine by token:t-operator"));
    let journal = fixture.action_json(notify).await;
    let numbers: Vec<&Value> = journal["messages"].as_array().unwrap().iter().map(|m| &m["number"]).collect();
    assert_eq!(numbers, [messages::ACTION_APPROVED.number]);

    // Once approved, it can be neither approved nor rejected again.
    for template in [APPROVE, REJECT] {
        let reply = fixture.post(template, &command_uri(template, notify), Role::Operator, None).await;
        assert_error(&reply, StatusCode::CONFLICT, &messages::ACTION_STATE_FORBIDS);
        assert!(reply.text().contains("is pending"), "{}", reply.text());
    }

    // Approved as another kind, or explicitly as its own (`as` null).
    for (kind, body, expected) in [
        (ActionKind::Quarantine, r#"{"as":"quarantine_reboot"}"#, "quarantine_reboot"),
        (ActionKind::Notify, r#"{"as":"reboot"}"#, "reboot"),
        (ActionKind::Reboot, r#"{"as":null}"#, "reboot"),
        (ActionKind::QuarantineReboot, "  ", "quarantine_reboot"),
    ] {
        let id = fixture.awaiting(kind).await;
        let reply = fixture.post(APPROVE, &command_uri(APPROVE, id), Role::Admin, Some(body)).await;
        let approved = commanded(&reply);
        assert_eq!(
            (approved["state"].as_str(), approved["kind"].as_str()),
            (Some("pending"), Some(expected)),
            "{body}"
        );
    }

    // Rejected: final, nothing done.
    let rejected = fixture.awaiting(ActionKind::Quarantine).await;
    let reply = fixture.post(REJECT, &command_uri(REJECT, rejected), Role::Operator, None).await;
    let action = commanded(&reply);
    assert_eq!(action["state"], "rejected");
    assert_eq!(action["kind"], "quarantine");
    assert_eq!(action["message"]["number"], messages::ACTION_REJECTED.number);
    assert_eq!(action["message"]["text"], format!("action {rejected} rejected by token:t-operator"));
    for template in [APPROVE, REJECT] {
        let reply = fixture.post(template, &command_uri(template, rejected), Role::Operator, None).await;
        assert_error(&reply, StatusCode::CONFLICT, &messages::ACTION_STATE_FORBIDS);
    }

    // Neither applies to an action that never awaited approval.
    let seeded = fixture.seed_actions().await;
    for template in [APPROVE, REJECT] {
        let reply = fixture.post(template, &command_uri(template, seeded.running), Role::Operator, None).await;
        assert_error(&reply, StatusCode::CONFLICT, &messages::ACTION_STATE_FORBIDS);
        let reply = fixture.post(template, &command_uri(template, "abc"), Role::Operator, None).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, &messages::BAD_REQUEST);
        let reply = fixture.post(template, &command_uri(template, 9999), Role::Operator, None).await;
        assert_error(&reply, StatusCode::NOT_FOUND, &messages::ACTION_NOT_FOUND);
    }
}

#[tokio::test]
async fn the_circuit_breaker_holds_automatic_actions_until_reset() {
    let fixture = Fixture::new().await;
    let breaker = || fixture.get("/api/v1/breaker", "/api/v1/breaker", Role::Viewer);
    let reply = breaker().await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_exact("BreakerView", &reply.json());
    let closed = serde_json::json!({ "tripped": false, "recent": 0, "max_auto_actions": 50, "window_secs": 600 });
    assert_eq!(reply.json(), closed);

    // A policy that allows no automatic action: the first one trips the breaker and waits.
    let policy =
        Policy { default_action: PolicyAction::Quarantine, max_auto_actions: 0, window_secs: 60, ..Default::default() };
    fixture.engine.set_policy(PolicySet { policy, servers: Default::default() });
    let alert = r#"{"event_type":"alert","src_ip":"10.10.0.11","dest_ip":"203.0.113.7","alert":{"signature_id":1,"signature":"ET MALWARE beacon","severity":1}}"#;
    let ids = accepted(&fixture.post_eve(EVE_SOURCE, Role::Sensor, alert).await, 1, 1, 0, 0);
    fixture.engine.run_detections(std::future::ready(())).await;

    let tripped = serde_json::json!({ "tripped": true, "recent": 0, "max_auto_actions": 0, "window_secs": 60 });
    assert_eq!(breaker().await.json(), tripped);
    let detection = fixture.detections(&format!("?source={EVE_SOURCE}")).await.remove(0);
    assert_eq!(detection["id"], ids[0]);
    assert_eq!(detection["server"], SERVER);
    let held = detection["action_id"].as_i64().expect("the detection started an action");
    assert!(
        detection["decision"].as_str().unwrap().starts_with(&format!("new action {held} (default)")),
        "{detection}"
    );
    assert_eq!(fixture.detections(&format!("?action={held}")).await, std::slice::from_ref(&detection));
    let action = fixture.action_json(held).await;
    assert_eq!(action["state"], "awaiting_approval");
    assert_eq!(action["kind"], "quarantine");
    assert_eq!(action["trigger"], "policy");
    assert_eq!(action["decided_by"], "default");
    assert_eq!(action["detections"], 1);
    assert_eq!(action["message"]["number"], messages::ACTION_AWAITS_APPROVAL.number);
    assert!(action["message"]["text"].as_str().unwrap().contains("circuit breaker has tripped"), "{action}");

    // Reset: closed and nothing counted; the held action still waits for a decision.
    let reply = fixture.post("/api/v1/breaker/reset", "/api/v1/breaker/reset", Role::Operator, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_exact("BreakerView", &reply.json());
    let reset = serde_json::json!({ "tripped": false, "recent": 0, "max_auto_actions": 0, "window_secs": 60 });
    assert_eq!(reply.json(), reset);
    assert_eq!(breaker().await.json(), reset);
    assert_eq!(fixture.action_json(held).await["state"], "awaiting_approval");
    let approved = commanded(&fixture.post(APPROVE, &command_uri(APPROVE, held), Role::Operator, None).await);
    assert_eq!((approved["state"].as_str(), approved["detections"].as_u64()), (Some("pending"), Some(1)));

    // Resetting a closed breaker is harmless.
    let reply = fixture.post("/api/v1/breaker/reset", "/api/v1/breaker/reset", Role::Admin, None).await;
    assert_eq!(reply.json(), reset);
    let audited = fixture.store.list_audit(10).await.unwrap();
    assert_eq!(audited.iter().filter(|a| a.entry.verb == "breaker_reset").count(), 2);
}

/// A webhook source with `max_rate = 3`.
const LIMITED_SOURCE: &str = "limited";
const LIMITED_TOKEN: &str = "s3cret-limited";
const LIMITED_RATE: u32 = 3;

#[tokio::test]
async fn a_source_over_its_max_rate_is_refused_with_429_and_counted() {
    let fixture = Fixture::new().await;
    let authorization = format!("Bearer {LIMITED_TOKEN}");
    let body = detection_body(LIMITED_SOURCE);
    // The burst is one second's worth; the next posts within that second are refused.
    for _ in 0..LIMITED_RATE {
        accepted(&fixture.post_detection(&[("authorization", &authorization)], &body).await, 1, 1, 0, 0);
    }
    for _ in 0..2 {
        let reply = fixture.post_detection(&[("authorization", &authorization)], &body).await;
        assert_error(&reply, StatusCode::TOO_MANY_REQUESTS, &messages::RATE_LIMITED);
    }
    let snapshot = fixture.counters[LIMITED_SOURCE].snapshot();
    assert_eq!((snapshot.accepted, snapshot.denied(Denied::RateLimit)), (u64::from(LIMITED_RATE), 2));
    // Other sources are not limited by it.
    accepted(
        &fixture
            .post_detection(&[("authorization", &format!("Bearer {SOURCE_TOKEN}"))], &detection_body(TOKEN_SOURCE))
            .await,
        1,
        1,
        0,
        0,
    );
    // A second later the bucket has refilled.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    accepted(&fixture.post_detection(&[("authorization", &authorization)], &body).await, 1, 1, 0, 0);
}
