//! The web console: server-rendered pages on the API's listener, for people.
//!
//! Sign-in with a local account (argon2id), a session cookie (HttpOnly, SameSite=Strict,
//! `Secure` when configured) whose id is stored only as a SHA-256 hash, idle and absolute expiry,
//! and a synchronizer CSRF token on every form (the sign-in form's is bound to a pre-session
//! cookie). Pages refresh themselves when the engine records something (server-sent events).
//!
//! Architecture invariant: every console route is listed in [`CONSOLE_ROUTES`] with what it
//! needs; pages and forms go through the same engine calls as the API, as `user:<name>`.
//!
//! Architecture invariant: no page loads anything from another origin: the script and the
//! stylesheet are compiled into the binary.

pub(crate) mod html;
mod pages;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{MethodRouter, get, post};
use cordon_engine::Actor;
use cordon_model::{Role, messages};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::ApiState;
use crate::auth::{Caller, hash_token};

pub use html::escape;

/// The session cookie.
pub const SESSION_COOKIE: &str = "cordon_session";
/// The pre-session cookie that binds the sign-in form's CSRF token.
pub const LOGIN_COOKIE: &str = "cordon_login";
/// The form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
/// Forms are small; a larger body is refused before it is parsed.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// A session's activity is written at most this often (not on every page view).
const TOUCH_EVERY: chrono::Duration = chrono::Duration::seconds(15);

/// What a console route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing (sign-in, static assets).
    Open,
    /// A session of any role (sign-out).
    SignedIn,
    /// A session whose role allows this one.
    Role(Role),
}

/// One console route.
#[derive(Debug, Clone)]
pub struct ConsoleRoute {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

const fn page(method: Method, path: &'static str, access: Access) -> ConsoleRoute {
    ConsoleRoute { method, path, access }
}

/// Every route of the console. Every `POST` with a session is a form that carries the CSRF token.
pub const CONSOLE_ROUTES: &[ConsoleRoute] = &[
    page(Method::GET, "/login", Access::Open),
    page(Method::POST, "/login", Access::Open),
    page(Method::POST, "/logout", Access::SignedIn),
    page(Method::GET, "/assets/console.css", Access::Open),
    page(Method::GET, "/assets/console.js", Access::Open),
    page(Method::GET, "/", Access::Role(Role::Viewer)),
    page(Method::GET, "/servers", Access::Role(Role::Viewer)),
    page(Method::GET, "/servers/{name}", Access::Role(Role::Viewer)),
    page(Method::POST, "/servers/{name}/quarantine", Access::Role(Role::Operator)),
    page(Method::POST, "/servers/{name}/unquarantine", Access::Role(Role::Operator)),
    page(Method::POST, "/servers/{name}/reboot", Access::Role(Role::Operator)),
    page(Method::GET, "/actions", Access::Role(Role::Viewer)),
    page(Method::GET, "/actions/{id}", Access::Role(Role::Viewer)),
    page(Method::POST, "/actions/{id}/check", Access::Role(Role::Operator)),
    page(Method::POST, "/actions/{id}/retry", Access::Role(Role::Operator)),
    page(Method::POST, "/actions/{id}/approve", Access::Role(Role::Operator)),
    page(Method::POST, "/actions/{id}/reject", Access::Role(Role::Operator)),
    page(Method::GET, "/detections", Access::Role(Role::Viewer)),
    page(Method::GET, "/messages", Access::Role(Role::Viewer)),
    page(Method::GET, "/events", Access::Role(Role::Viewer)),
];

/// How sessions behave, and the console's counters.
#[derive(Debug)]
pub struct ConsoleSettings {
    /// A session unused this long ends.
    pub idle_timeout: Duration,
    /// A session ends this long after sign-in, whatever its activity.
    pub lifetime: Duration,
    /// Mark cookies `Secure` (set when the listener serves TLS).
    pub secure_cookies: bool,
    /// Signs the sign-in form's CSRF token; random per process (a restart only invalidates
    /// sign-in forms that are open at that moment).
    key: [u8; 32],
    pub sign_ins: AtomicU64,
    pub sign_in_failures: AtomicU64,
    pub csrf_rejections: AtomicU64,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings::new(Duration::from_secs(30 * 60), Duration::from_secs(12 * 3600), false)
    }
}

impl ConsoleSettings {
    pub fn new(idle_timeout: Duration, lifetime: Duration, secure_cookies: bool) -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        ConsoleSettings {
            idle_timeout,
            lifetime,
            secure_cookies,
            key,
            sign_ins: AtomicU64::new(0),
            sign_in_failures: AtomicU64::new(0),
            csrf_rejections: AtomicU64::new(0),
        }
    }

    /// The console's metric families, in the text exposition format.
    pub fn render_metrics(&self) -> String {
        format!(
            "# HELP cordon_console_sign_ins_total Console sign-ins by outcome.\n\
             # TYPE cordon_console_sign_ins_total counter\n\
             cordon_console_sign_ins_total{{outcome=\"success\"}} {}\n\
             cordon_console_sign_ins_total{{outcome=\"failure\"}} {}\n\
             # HELP cordon_console_csrf_rejections_total Console forms refused for a missing or wrong CSRF token.\n\
             # TYPE cordon_console_csrf_rejections_total counter\n\
             cordon_console_csrf_rejections_total {}\n",
            self.sign_ins.load(Relaxed),
            self.sign_in_failures.load(Relaxed),
            self.csrf_rejections.load(Relaxed)
        )
    }

    fn login_token(&self, pre: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(b"cordon-login:");
        mac.update(pre.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn cookie(&self, name: &str, value: &str, path: &str, max_age: Option<u64>) -> HeaderValue {
        let mut cookie = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict");
        if let Some(age) = max_age {
            cookie.push_str(&format!("; Max-Age={age}"));
        }
        if self.secure_cookies {
            cookie.push_str("; Secure");
        }
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// The signed-in user, put in the request's extensions by the guard.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: i64,
    pub user: String,
    pub role: Role,
    pub csrf: String,
}

impl Session {
    pub fn actor(&self, origin: &str) -> Actor {
        Actor { name: format!("user:{}", self.user), origin: origin.to_string() }
    }
}

/// The console's routes, merged into the API's router.
pub(crate) fn router(state: &ApiState) -> Router<ApiState> {
    use pages::*;
    let guarded = |access: Access, method: MethodRouter<ApiState>| {
        method.route_layer(from_fn_with_state((state.clone(), access), guard))
    };
    let viewer = Access::Role(Role::Viewer);
    let operator = Access::Role(Role::Operator);
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", guarded(Access::SignedIn, post(logout)))
        .route("/assets/console.css", get(stylesheet))
        .route("/assets/console.js", get(script))
        .route("/", guarded(viewer, get(overview)))
        .route("/servers", guarded(viewer, get(servers)))
        .route("/servers/{name}", guarded(viewer, get(server)))
        .route("/servers/{name}/quarantine", guarded(operator, post(quarantine)))
        .route("/servers/{name}/unquarantine", guarded(operator, post(unquarantine)))
        .route("/servers/{name}/reboot", guarded(operator, post(reboot)))
        .route("/actions", guarded(viewer, get(actions)))
        .route("/actions/{id}", guarded(viewer, get(action)))
        .route("/actions/{id}/check", guarded(operator, post(check)))
        .route("/actions/{id}/retry", guarded(operator, post(retry)))
        .route("/actions/{id}/approve", guarded(operator, post(approve)))
        .route("/actions/{id}/reject", guarded(operator, post(reject)))
        .route("/detections", guarded(viewer, get(detections)))
        .route("/messages", guarded(viewer, get(messages_page)))
        .route("/events", guarded(viewer, get(events)))
}

/// The value of one cookie of the request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

fn origin(request: &Request) -> String {
    request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip().to_string())
        .unwrap_or_else(|| "local".to_string())
}

/// Equal in time whatever the contents (the lengths are not secret).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The live session of the request, if any: known, not idle too long, not past its lifetime.
async fn current_session(state: &ApiState, headers: &HeaderMap) -> Result<Option<Session>, crate::handlers::ApiError> {
    let Some(id) = cookie(headers, SESSION_COOKIE) else { return Ok(None) };
    let store = state.engine.store();
    let Some(record) = store.session_by_hash(&hash_token(id)).await? else { return Ok(None) };
    let now = chrono::Utc::now();
    let idle = chrono::Duration::from_std(state.console.idle_timeout).unwrap_or(chrono::Duration::MAX);
    if now >= record.expires_at || now - record.last_seen_at >= idle {
        store.delete_session(&hash_token(id)).await?;
        return Ok(None);
    }
    if now - record.last_seen_at >= TOUCH_EVERY {
        store.touch_session(record.id, now).await?;
    }
    Ok(Some(Session { id: record.id, user: record.user_name, role: record.role, csrf: record.csrf }))
}

/// Sessions, roles and CSRF tokens for every guarded console route.
async fn guard(State((state, access)): State<(ApiState, Access)>, mut request: Request, next: Next) -> Response {
    let session = match current_session(&state, request.headers()).await {
        Ok(session) => session,
        Err(error) => return pages::error_response(None, error),
    };
    let Some(session) = session else {
        if request.method() == Method::GET && request.uri().path() != "/events" {
            let next = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
            return Redirect::to(&format!("/login?next={}", html::encode_query(next))).into_response();
        }
        // A form or the event stream without a session: to the sign-in page as well.
        return Redirect::to("/login").into_response();
    };
    if let Access::Role(needed) = access
        && !session.role.allows(needed)
    {
        let operation = format!("{} {}", request.method(), request.uri().path());
        let text =
            messages::FORBIDDEN.render(&[("role", &session.role), ("operation", &operation), ("needed", &needed)]);
        return pages::message_page(Some(&session), StatusCode::FORBIDDEN, &messages::FORBIDDEN, &text);
    }
    if request.method() == Method::POST {
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
            return pages::message_page(
                Some(&session),
                StatusCode::PAYLOAD_TOO_LARGE,
                &messages::BAD_REQUEST,
                &messages::BAD_REQUEST.render(&[("detail", &"the form is too large")]),
            );
        };
        let sent = form_field(&bytes, CSRF_FIELD);
        if !sent.as_deref().is_some_and(|sent| same(sent, &session.csrf)) {
            state.console.csrf_rejections.fetch_add(1, Relaxed);
            return pages::message_page(
                Some(&session),
                StatusCode::FORBIDDEN,
                &messages::CSRF_REJECTED,
                messages::CSRF_REJECTED.text,
            );
        }
        request = Request::from_parts(parts, Body::from(bytes));
    }
    let origin = origin(&request);
    request.extensions_mut().insert(Caller { name: format!("user:{}", session.user), origin });
    request.extensions_mut().insert(session);
    next.run(request).await
}

/// One field of an `application/x-www-form-urlencoded` body.
fn form_field(body: &Bytes, name: &str) -> Option<String> {
    form_fields(body).into_iter().find(|(key, _)| key == name).map(|(_, value)| value)
}

/// Every field of a form body, decoded; a malformed pair is skipped.
fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    body.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let mut split = pair.splitn(2, |&b| b == b'=');
            let key = html::decode_form(split.next().unwrap_or_default());
            let value = html::decode_form(split.next().unwrap_or_default());
            (key, value)
        })
        .collect()
}

/// Server-sent events: one `change` event whenever the engine records a numbered message
/// (every change of an action's state records one). A slow page misses events, never blocks
/// the engine, and is told to refresh all the same.
async fn events(State(state): State<ApiState>) -> impl IntoResponse {
    let receiver = state.engine.subscribe();
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match receiver.recv().await {
                Ok(cordon_engine::EngineEvent::Recorded { number, action, .. }) => {
                    let data = format!(
                        "{{\"number\":{number},\"action\":{}}}",
                        action.map_or("null".into(), |a| a.to_string())
                    );
                    return Some((
                        Ok::<_, std::convert::Infallible>(Event::default().event("change").data(data)),
                        receiver,
                    ));
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => {
                    return Some((Ok(Event::default().event("change").data("{\"lagged\":true}")), receiver));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// What a failed sign-in records: the name tried (never the password) and where from.
async fn record_failure(state: &ApiState, user: &str, origin: &str) {
    state.console.sign_in_failures.fetch_add(1, Relaxed);
    // The name is untrusted: keep it short and printable in the record.
    let shown: String = user.chars().filter(|c| !c.is_control()).take(64).collect();
    let text = messages::SIGN_IN_FAILED.render(&[("user", &shown), ("origin", &origin)]);
    let actor = Actor { name: format!("user:{shown}"), origin: origin.to_string() };
    let message = cordon_store::MessageRef { number: messages::SIGN_IN_FAILED.number, text };
    if let Err(error) = state.engine.record_sign_in(&message, &actor, "sign_in_failed").await {
        tracing::warn!(%error, "could not record a failed sign-in");
    }
}

pub(crate) fn bytes_response(content_type: &'static str, body: &'static [u8]) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}
