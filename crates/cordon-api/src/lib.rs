//! The HTTP API (JSON under `/api/v1`), its wire types and its authentication.
//!
//! Architecture invariant: handlers hold no logic of their own beyond translating between the
//! wire and the engine; every change goes through `cordon_engine::Engine`.
//!
//! Architecture invariant: every route is listed in [`ROUTES`] with the role it needs, the
//! router is built from the same handlers, and tests walk the table (and the OpenAPI document).

mod accounts;
mod auth;
pub mod console;
mod handlers;
pub mod ingest;
mod links;
mod replay;
pub mod wire;

use axum::Router;
use axum::http::Method;
use axum::routing::{delete, get, post};
use cordon_engine::Engine;
use cordon_model::Role;

pub use accounts::hash_password as console_hash_password;
pub use auth::{hash_token, new_token};

/// The OpenAPI document, checked in at docs/openapi.json and served at /api/v1/openapi.json.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// One route and the least role that may call it (`None`: no token needed).
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub role: Option<Role>,
}

const fn route(method: Method, path: &'static str, role: Option<Role>) -> RouteSpec {
    RouteSpec { method, path, role }
}

/// Every route of the API.
pub const ROUTES: &[RouteSpec] = &[
    route(Method::GET, "/healthz", None),
    route(Method::GET, "/metrics", Some(Role::Viewer)),
    route(Method::GET, "/api/v1/openapi.json", Some(Role::Viewer)),
    route(Method::GET, "/api/v1/servers", Some(Role::Viewer)),
    route(Method::GET, "/api/v1/servers/{name}", Some(Role::Viewer)),
    route(Method::POST, "/api/v1/servers/{name}/quarantine", Some(Role::Operator)),
    route(Method::POST, "/api/v1/servers/{name}/unquarantine", Some(Role::Operator)),
    route(Method::POST, "/api/v1/servers/{name}/reboot", Some(Role::Operator)),
    route(Method::GET, "/api/v1/actions", Some(Role::Viewer)),
    route(Method::GET, "/api/v1/actions/{id}", Some(Role::Viewer)),
    route(Method::POST, "/api/v1/actions/{id}/check", Some(Role::Operator)),
    route(Method::POST, "/api/v1/actions/{id}/retry", Some(Role::Operator)),
    route(Method::POST, "/api/v1/actions/{id}/approve", Some(Role::Operator)),
    route(Method::POST, "/api/v1/actions/{id}/reject", Some(Role::Operator)),
    route(Method::POST, "/api/v1/actions/{id}/cancel", Some(Role::Operator)),
    route(Method::GET, "/api/v1/detections", Some(Role::Viewer)),
    route(Method::POST, "/api/v1/detections", Some(Role::Sensor)),
    route(Method::POST, "/api/v1/sources/{name}/eve", Some(Role::Sensor)),
    route(Method::POST, "/api/v1/hypervisors/{name}/import", Some(Role::Admin)),
    route(Method::POST, "/api/v1/reconcile", Some(Role::Operator)),
    route(Method::GET, "/api/v1/status", Some(Role::Viewer)),
    route(Method::GET, "/api/v1/breaker", Some(Role::Viewer)),
    route(Method::GET, "/api/v1/audit", Some(Role::Viewer)),
    route(Method::GET, "/api/v1/audit/verify", Some(Role::Viewer)),
    route(Method::POST, "/api/v1/breaker/reset", Some(Role::Operator)),
    route(Method::GET, "/api/v1/tokens", Some(Role::Admin)),
    route(Method::POST, "/api/v1/tokens", Some(Role::Admin)),
    route(Method::POST, "/api/v1/tokens/{name}/revoke", Some(Role::Admin)),
    route(Method::GET, "/api/v1/users", Some(Role::Admin)),
    route(Method::POST, "/api/v1/users", Some(Role::Admin)),
    route(Method::POST, "/api/v1/users/{name}/password", Some(Role::Admin)),
    route(Method::DELETE, "/api/v1/users/{name}", Some(Role::Admin)),
    // The signed link is the credential (no token): see `links`.
    route(Method::GET, "/approve/{token}", None),
    route(Method::POST, "/approve/{token}", None),
];

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub engine: Engine,
    /// What the reconciler does about drift when asked through the API (as configured).
    pub on_drift: cordon_engine::OnDrift,
    /// The sources that may post detections, and their counters.
    pub ingest: std::sync::Arc<ingest::IngestSettings>,
    /// Approval links and delivery counters, when `[notify]` is configured.
    pub notify: Option<std::sync::Arc<cordon_notify::NotifyState>>,
    /// The web console's session settings and counters.
    pub console: std::sync::Arc<console::ConsoleSettings>,
}

/// The whole API. Serve it with `into_make_service_with_connect_info::<SocketAddr>()` so that
/// the audit trail records each caller's address.
pub fn router(state: ApiState) -> Router {
    use handlers::*;
    let guarded = |role: Role, method: axum::routing::MethodRouter<ApiState>| auth::require(&state, role, method);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", guarded(Role::Viewer, get(metrics)))
        .route("/api/v1/openapi.json", guarded(Role::Viewer, get(openapi)))
        .route("/api/v1/servers", guarded(Role::Viewer, get(list_servers)))
        .route("/api/v1/servers/{name}", guarded(Role::Viewer, get(show_server)))
        .route("/api/v1/servers/{name}/quarantine", guarded(Role::Operator, post(quarantine)))
        .route("/api/v1/servers/{name}/unquarantine", guarded(Role::Operator, post(unquarantine)))
        .route("/api/v1/servers/{name}/reboot", guarded(Role::Operator, post(reboot)))
        .route("/api/v1/actions", guarded(Role::Viewer, get(list_actions)))
        .route("/api/v1/actions/{id}", guarded(Role::Viewer, get(show_action)))
        .route("/api/v1/actions/{id}/check", guarded(Role::Operator, post(check_action)))
        .route("/api/v1/actions/{id}/retry", guarded(Role::Operator, post(retry_action)))
        .route("/api/v1/actions/{id}/approve", guarded(Role::Operator, post(approve_action)))
        .route("/api/v1/actions/{id}/reject", guarded(Role::Operator, post(reject_action)))
        .route("/api/v1/actions/{id}/cancel", guarded(Role::Operator, post(cancel_action)))
        .route("/api/v1/detections", guarded(Role::Viewer, get(list_detections)).post(ingest::post_detection))
        .route("/api/v1/sources/{name}/eve", guarded(Role::Sensor, post(ingest::post_eve)))
        .route("/api/v1/hypervisors/{name}/import", guarded(Role::Admin, post(import_servers)))
        .route("/api/v1/reconcile", guarded(Role::Operator, post(reconcile)))
        .route("/api/v1/status", guarded(Role::Viewer, get(status)))
        .route("/api/v1/breaker", guarded(Role::Viewer, get(show_breaker)))
        .route("/api/v1/breaker/reset", guarded(Role::Operator, post(reset_breaker)))
        .route("/api/v1/audit", guarded(Role::Viewer, get(list_audit)))
        .route("/api/v1/audit/verify", guarded(Role::Viewer, get(verify_audit)))
        .route("/api/v1/tokens", guarded(Role::Admin, get(accounts::list_tokens).post(accounts::create_token)))
        .route("/api/v1/tokens/{name}/revoke", guarded(Role::Admin, post(accounts::revoke_token)))
        .route("/api/v1/users", guarded(Role::Admin, get(accounts::list_users).post(accounts::add_user)))
        .route("/api/v1/users/{name}/password", guarded(Role::Admin, post(accounts::set_password)))
        .route("/api/v1/users/{name}", guarded(Role::Admin, delete(accounts::remove_user)))
        .route("/approve/{token}", get(links::show).post(links::decide))
        .merge(console::router(&state))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::count))
        .with_state(state)
}
