//! The real router, in process, on an in-memory store: every route of `ROUTES` is walked for
//! authentication and roles, and every answer is checked against docs/openapi.json (its status,
//! media type, headers and body schema), so that the document cannot drift from the code.
//!
//! The engine's topology has no switch driver and the engine never runs, so no network is
//! touched: a quarantine request that gets past the role check is refused with 60013.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use chrono::Utc;
use cordon_api::{ApiState, OPENAPI, ROUTES, hash_token, router};
use cordon_engine::{Engine, EngineSettings, NetworkPlan, Topology};
use cordon_model::messages::{self, Message};
use cordon_model::{
    ActionCommand, ActionKind, ActionState, AddressPool, NetworkRole, Role, ServerKind, ServerState, Severity,
};
use cordon_store::{
    Inventory, MessageRef, NetworkSpec, NewAction, NewMessage, NewStep, NicSpec, ServerSpec, SqliteStore, StepOutcome,
    Store, TenantSpec,
};
use serde_json::Value;
use tower::ServiceExt;

const SERVER: &str = "sbc-01";
const INSTANCE: &str = "test-1";

static DOC: LazyLock<Value> =
    LazyLock::new(|| serde_json::from_str(OPENAPI).expect("docs/openapi.json is not valid JSON"));

// ---------------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Fixture {
    app: Router,
    store: Arc<dyn Store>,
    tokens: BTreeMap<Role, String>,
    server_id: i64,
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
    /// and one token per role.
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
                nics: vec![NicSpec {
                    mac: "02:00:00:00:01:01".parse().unwrap(),
                    network: "office".into(),
                    ip: "10.10.0.11".parse().unwrap(),
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
            store.create_token(&format!("t-{role}"), role, &hash_token(&token)).await.unwrap();
            tokens.insert(role, token);
        }

        let networks = [
            NetworkPlan {
                name: "office".into(),
                role: NetworkRole::Operational,
                bridge: Some("br-office".into()),
                quarantine_network: Some("quarantine".into()),
                pool: None,
            },
            NetworkPlan {
                name: "quarantine".into(),
                role: NetworkRole::Quarantine,
                bridge: Some("br-quarantine".into()),
                quarantine_network: None,
                pool: Some(AddressPool::new("10.99.0.100-10.99.0.199".parse().unwrap(), [])),
            },
        ]
        .into_iter()
        .map(|plan| (plan.name.clone(), plan))
        .collect();
        // No switch driver at all: nothing can ever reach a network.
        let topology = Topology { networks, switches: Default::default() };
        assert!(topology.switches.is_empty());
        let engine = Engine::new(store.clone(), topology, EngineSettings::new(INSTANCE));
        Fixture { app: router(ApiState { engine }), store, tokens, server_id }
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
        let mut request = Request::builder().method(method.clone()).uri(uri);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
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
    let mut walked = 0;
    for route in ROUTES {
        let uri = concrete(route.path, seeded.running);
        let Some(needed) = route.role else {
            assert_eq!(route.path, "/healthz", "only /healthz may be open");
            continue;
        };
        walked += 1;
        let what = format!("{} {}", route.method, route.path);

        let mut refusals = vec![("no header".to_string(), None)];
        refusals.extend(malformed.iter().map(|m| (format!("malformed {m:?}"), Some(m.clone()))));
        refusals.push(("unknown token".to_string(), Some(unknown.clone())));
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
                assert!(
                    ![
                        StatusCode::UNAUTHORIZED,
                        StatusCode::FORBIDDEN,
                        StatusCode::NOT_FOUND,
                        StatusCode::METHOD_NOT_ALLOWED
                    ]
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
    assert_eq!(walked, ROUTES.len() - 1);
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

#[test]
fn document_requires_bearer_auth_except_on_healthz() {
    let schemes = DOC["components"]["securitySchemes"].as_object().expect("no securitySchemes");
    let is_bearer = |name: &str| {
        schemes.get(name).is_some_and(|s| {
            s["type"] == "http" && s["scheme"].as_str().is_some_and(|v| v.eq_ignore_ascii_case("bearer"))
        })
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
        for requirement in requirements {
            let names: Vec<&String> = requirement.as_object().unwrap().keys().collect();
            assert!(
                !names.is_empty() && names.iter().all(|n| is_bearer(n)),
                "{} {}: {requirement} is not bearer auth",
                route.method,
                route.path
            );
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
    for route in ROUTES.iter().filter(|r| r.path.ends_with("quarantine")) {
        let body = &operation(&route.method, route.path)["requestBody"];
        assert_eq!(body["required"], false, "{}: the body is optional", route.path);
        assert_eq!(body["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ActRequest");
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
        // request type has only optional fields and refuses unknown ones.
        let optional: BTreeSet<String> = match name {
            "ActionView" => ["steps", "messages"].map(String::from).into(),
            "ActRequest" => properties.clone(),
            _ => BTreeSet::new(),
        };
        assert_eq!(required, &properties - &optional, "{name}: required properties");
        if name == "ActRequest" {
            assert_eq!(schema["additionalProperties"], false, "ActRequest denies unknown fields");
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
    for number in [41001, 41002, 60002, 60003, 60013, 60020, 60021, 60040] {
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
