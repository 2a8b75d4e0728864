//! The console's pages and forms. Reads come from the store, changes go through the engine.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use cordon_engine::Request as EngineRequest;
use cordon_model::{ActionKind, ActionState, Message, Role, ServerState, messages};
use cordon_store::{ActionFilter, ActionRecord, DetectionFilter, ServerRecord};

use super::html::{badge, csrf_field, encode_query, escape, layout};
use super::{LOGIN_COOKIE, SESSION_COOKIE, Session, form_fields};
use crate::ApiState;
use crate::auth::{Caller, hash_token};
use crate::handlers::ApiError;
use crate::wire::DetectionView;

/// Query parameters; malformed ones are ignored (a filter form never fails a page).
type Params = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params.as_ref().ok().and_then(|Query(p)| p.get(name)).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// A rendered page, never cached, never framed, loading nothing from elsewhere.
fn html_response(status: StatusCode, html: String) -> Response {
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

fn page(session: &Session, current: &str, title: &str, body: &str) -> Response {
    html_response(StatusCode::OK, layout(title, current, Some(session), body))
}

/// A numbered message as a page: its number, its text and what to do about it.
pub(crate) fn message_page(session: Option<&Session>, status: StatusCode, message: &Message, text: &str) -> Response {
    let body = format!(
        r#"<h1>{severity} {number}</h1><div class="panel error" role="alert"><p class="message"><span class="mono">{number}</span> {text}</p><p class="remedy">Remedy: {remedy}</p></div><p><a href="javascript:history.back()">Back</a> · <a href="/">Overview</a></p>"#,
        severity = message.severity(),
        number = message.number,
        text = escape(text),
        remedy = escape(message.remedy),
    );
    html_response(status, layout("Error", "", session, &body))
}

pub(crate) fn error_response(session: Option<&Session>, error: ApiError) -> Response {
    let (message, text) = error.message();
    message_page(session, error.status(), message, text)
}

fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn remedy_of(number: u32) -> &'static str {
    Message::find(number).map(|m| m.remedy).unwrap_or("")
}

fn message_cell(message: Option<&cordon_store::MessageRef>) -> String {
    match message {
        Some(m) => format!(
            r#"<div class="message"><span class="mono">{}</span> {}</div><div class="remedy">{}</div>"#,
            m.number,
            escape(&m.text),
            escape(remedy_of(m.number))
        ),
        None => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Sign-in and sign-out
// ---------------------------------------------------------------------------------------------

fn login_page(state: &ApiState, next: &str, error: Option<&str>, status: StatusCode) -> Response {
    let pre = super::random_hex();
    let token = state.console.login_token(&pre);
    let alert = match error {
        Some(text) => format!(r#"<div class="panel error" role="alert">{}</div>"#, escape(text)),
        None => String::new(),
    };
    let body = format!(
        r#"<div class="login panel"><h1>Sign in to Cordon</h1>{alert}<form method="post" action="/login">
<input type="hidden" name="csrf" value="{token}"><input type="hidden" name="next" value="{next}">
<label>Name <input name="user" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Sign in</button></form></div>"#,
        next = escape(next)
    );
    let mut response = html_response(status, layout("Sign in", "/login", None, &body));
    response.headers_mut().append(header::SET_COOKIE, state.console.cookie(LOGIN_COOKIE, &pre, "/login", Some(3600)));
    response
}

/// Only a local path may follow a sign-in (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') && !n.starts_with("/login") => {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

pub async fn login_form(State(state): State<ApiState>, headers: HeaderMap, params: Params) -> Response {
    if let Ok(Some(_)) = super::current_session(&state, &headers).await {
        return Redirect::to(&safe_next(param(&params, "next"))).into_response();
    }
    login_page(&state, &safe_next(param(&params, "next")), None, StatusCode::OK)
}

pub async fn login(
    State(state): State<ApiState>,
    connect: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let origin = connect.map(|Extension(c)| c.0.ip().to_string()).unwrap_or_else(|| "local".into());
    if body.len() > super::MAX_FORM_BYTES {
        return message_page(None, StatusCode::PAYLOAD_TOO_LARGE, &messages::BAD_REQUEST, "the form is too large");
    }
    let fields: HashMap<String, String> = form_fields(&body).into_iter().collect();
    let next = safe_next(fields.get("next").map(String::as_str));
    // The form's token must be the one signed for this browser's pre-session cookie.
    let bound = match (super::cookie(&headers, LOGIN_COOKIE), fields.get(super::CSRF_FIELD)) {
        (Some(pre), Some(sent)) => super::same(sent, &state.console.login_token(pre)),
        _ => false,
    };
    if !bound {
        state.console.csrf_rejections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return message_page(None, StatusCode::FORBIDDEN, &messages::CSRF_REJECTED, messages::CSRF_REJECTED.text);
    }
    let user = fields.get("user").map(|u| u.trim().to_string()).unwrap_or_default();
    let password = fields.get("password").cloned().unwrap_or_default();
    let record = match state.engine.store().user_by_name(&user).await {
        Ok(record) => record,
        Err(error) => return error_response(None, error.into()),
    };
    // An unknown name costs the same argon2 verification as a wrong password.
    let phc =
        record.as_ref().map(|r| r.password_hash.clone()).unwrap_or_else(|| crate::accounts::decoy_hash().to_string());
    let verified = crate::accounts::verify_blocking(password, phc).await;
    let Some(record) = record.filter(|_| verified) else {
        super::record_failure(&state, &user, &origin).await;
        let text = "Unknown name or wrong password.";
        return login_page(&state, &next, Some(text), StatusCode::UNAUTHORIZED);
    };
    let id = super::random_hex();
    let lifetime = chrono::Duration::from_std(state.console.lifetime).unwrap_or(chrono::Duration::hours(12));
    let new = cordon_store::NewSession {
        hash: hash_token(&id),
        user_id: record.id,
        csrf: super::random_hex(),
        expires_at: chrono::Utc::now() + lifetime,
    };
    if let Err(error) = state.engine.store().create_session(&new).await {
        return error_response(None, error.into());
    }
    state.console.sign_ins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let text = messages::USER_SIGNED_IN.render(&[("user", &record.name), ("role", &record.role), ("origin", &origin)]);
    let actor = cordon_engine::Actor { name: format!("user:{}", record.name), origin };
    let message = cordon_store::MessageRef { number: messages::USER_SIGNED_IN.number, text };
    if let Err(error) = state.engine.record_sign_in(&message, &actor, "sign_in").await {
        tracing::warn!(%error, "could not record a sign-in");
    }
    let mut response = Redirect::to(&next).into_response();
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, state.console.cookie(SESSION_COOKIE, &id, "/", None));
    headers.append(header::SET_COOKIE, state.console.cookie(LOGIN_COOKIE, "", "/login", Some(0)));
    response
}

pub async fn logout(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
) -> Response {
    if let Some(id) = super::cookie(&headers, SESSION_COOKIE)
        && let Err(error) = state.engine.store().delete_session(&hash_token(id)).await
    {
        return error_response(Some(&session), error.into());
    }
    let text = messages::USER_SIGNED_OUT.render(&[("user", &session.user)]);
    let message = cordon_store::MessageRef { number: messages::USER_SIGNED_OUT.number, text };
    let actor = session.actor("console");
    if let Err(error) = state.engine.record_sign_in(&message, &actor, "sign_out").await {
        tracing::warn!(%error, "could not record a sign-out");
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(header::SET_COOKIE, state.console.cookie(SESSION_COOKIE, "", "/", Some(0)));
    response
}

pub async fn stylesheet() -> Response {
    super::bytes_response("text/css; charset=utf-8", include_bytes!("console.css"))
}

pub async fn script() -> Response {
    super::bytes_response("text/javascript; charset=utf-8", include_bytes!("console.js"))
}

// ---------------------------------------------------------------------------------------------
// Overview
// ---------------------------------------------------------------------------------------------

fn detections_table(detections: &[DetectionView]) -> String {
    if detections.is_empty() {
        return r#"<p class="muted">No detections.</p>"#.to_string();
    }
    let mut rows = String::new();
    for d in detections {
        let server = match &d.server {
            Some(s) => format!(r#"<a href="/servers/{}">{}</a>"#, encode_query(s), escape(s)),
            None => r#"<span class="muted">none</span>"#.to_string(),
        };
        let action = match d.action_id {
            Some(id) => format!(r##"<a href="/actions/{id}">#{id}</a>"##),
            None => String::new(),
        };
        let _ = write!(
            rows,
            r#"<tr><td class="mono">{}</td><td>{}</td><td>{}</td><td class="mono">{}</td><td>{}</td><td>{}</td><td class="hide-narrow">{}</td><td>{}</td></tr>"#,
            escape(&d.received_at.replace('T', " ").trim_end_matches('Z').chars().take(19).collect::<String>()),
            escape(&d.source),
            badge(&d.severity),
            escape(&d.subject),
            escape(&d.signature),
            server,
            escape(d.decision.as_deref().unwrap_or("pending")),
            action
        );
    }
    format!(
        r#"<div class="table-wrap"><table><thead><tr><th>Received</th><th>Source</th><th>Severity</th><th>Subject</th><th>Signature</th><th>Server</th><th class="hide-narrow">Decision</th><th>Action</th></tr></thead><tbody>{rows}</tbody></table></div>"#
    )
}

fn actions_table(actions: &[ActionRecord], session: &Session, with_buttons: bool) -> String {
    if actions.is_empty() {
        return r#"<p class="muted">No actions.</p>"#.to_string();
    }
    let mut rows = String::new();
    for a in actions {
        let server = match &a.server_name {
            Some(s) => format!(r#"<a href="/servers/{}">{}</a>"#, encode_query(s), escape(s)),
            None => format!(
                r#"<span class="muted">{}</span>"#,
                escape(&a.address.map(|x| x.to_string()).unwrap_or_else(|| "none".into()))
            ),
        };
        let buttons = if with_buttons { action_buttons(a, session) } else { String::new() };
        let _ = write!(
            rows,
            r##"<tr data-action="{id}"><td><a href="/actions/{id}">#{id}</a></td><td>{}</td><td>{}</td><td>{server}</td><td>{}</td><td>{}</td><td class="mono hide-narrow">{}</td><td>{buttons}</td></tr>"##,
            badge(a.state.as_str()),
            escape(a.kind.as_str()),
            escape(&a.trigger),
            message_cell(a.message.as_ref()),
            time(&a.updated_at),
            id = a.id,
        );
    }
    format!(
        r#"<div class="table-wrap"><table><thead><tr><th>Action</th><th>State</th><th>Kind</th><th>Server</th><th>Trigger</th><th>Message and remedy</th><th class="hide-narrow">Updated</th><th></th></tr></thead><tbody>{rows}</tbody></table></div>"#
    )
}

/// The buttons an action's state allows, for a user whose role allows them.
fn action_buttons(action: &ActionRecord, session: &Session) -> String {
    if !session.role.allows(Role::Operator) {
        return String::new();
    }
    let verbs: &[(&str, &str, &str)] = match action.state {
        ActionState::Failed => &[("retry", "Retry", ""), ("check", "Check", "secondary")],
        ActionState::Retrying => &[("check", "Check", "secondary")],
        ActionState::AwaitingApproval => &[("approve", "Approve", ""), ("reject", "Reject", "danger")],
        _ => &[],
    };
    let mut out = String::new();
    for (verb, label, class) in verbs {
        let _ = write!(
            out,
            r#"<form method="post" action="/actions/{id}/{verb}" data-live class="inline">{csrf}<button type="submit" class="{class}" data-verb="{verb}">{label}</button></form> "#,
            id = action.id,
            csrf = csrf_field(session),
        );
    }
    out
}

pub async fn overview(State(state): State<ApiState>, Extension(session): Extension<Session>) -> Response {
    match overview_body(&state, &session).await {
        Ok(body) => page(&session, "/", "Overview", &body),
        Err(error) => error_response(Some(&session), error),
    }
}

async fn overview_body(state: &ApiState, session: &Session) -> Result<String, ApiError> {
    let store = state.engine.store();
    let servers = store.list_servers().await?;
    let mut per_state: BTreeMap<usize, (ServerState, u64)> = BTreeMap::new();
    for server in servers.iter().filter(|s| !s.retired) {
        let index = ServerState::ALL.iter().position(|s| *s == server.state).unwrap_or(usize::MAX);
        per_state.entry(index).or_insert((server.state, 0)).1 += 1;
    }
    let mut state_list = String::new();
    for (server_state, count) in per_state.values() {
        let _ = write!(
            state_list,
            r#"<li><a href="/servers?state={s}">{}</a><span>{count}</span></li>"#,
            badge(server_state.as_str()),
            s = server_state.as_str()
        );
    }
    let (mut open, mut failed) = (0u64, 0u64);
    for (_, action_state, count) in store.count_actions().await? {
        if action_state.is_open() {
            open += count;
        } else if action_state == ActionState::Failed {
            failed += count;
        }
    }
    let (tripped, recent) = state.engine.breaker_status();
    let policy = state.engine.policy();
    let breaker = if tripped { badge("tripped") } else { badge("closed") };
    let breaker = breaker.replace("s-idle", if tripped { "s-bad" } else { "s-ok" });
    let detections: Vec<DetectionView> = store
        .list_detections(&DetectionFilter { limit: Some(10), ..Default::default() })
        .await?
        .iter()
        .map(DetectionView::from)
        .collect();
    let attention: Vec<ActionRecord> = store
        .list_actions(&ActionFilter { limit: Some(200), ..Default::default() })
        .await?
        .into_iter()
        .filter(|a| a.state.is_open() || a.state == ActionState::Failed)
        .take(10)
        .collect();
    Ok(format!(
        r#"<h1>Overview</h1><div class="cards">
<div class="card" id="servers-per-state"><div class="label">Servers per state</div><ul>{state_list}</ul></div>
<div class="card" id="open-actions"><div class="label">Open actions</div><div class="value"><a href="/actions?state=open">{open}</a></div></div>
<div class="card" id="failed-actions"><div class="label">Failed actions</div><div class="value"><a href="/actions?state=failed">{failed}</a></div></div>
<div class="card" id="breaker"><div class="label">Circuit breaker</div><div class="value">{breaker}</div><div class="muted">{recent} of {max} automatic actions in {window} s</div></div>
</div><h2>Open and failed actions</h2>{actions}<h2>Recent detections</h2>{detections}"#,
        max = policy.policy.max_auto_actions,
        window = policy.policy.window_secs,
        actions = actions_table(&attention, session, true),
        detections = detections_table(&detections),
    ))
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

fn nic_lines(server: &ServerRecord) -> String {
    let mut out = String::new();
    for nic in &server.nics {
        let ip = nic.current_ip.map(|ip| ip.to_string()).unwrap_or_else(|| "no address".into());
        let _ = write!(out, r#"<div class="mono">{} {}</div>"#, escape(&nic.current_network), escape(&ip));
    }
    out
}

pub async fn servers(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    params: Params,
) -> Response {
    let store = state.engine.store();
    let result = async {
        let servers = store.list_servers().await?;
        let latest = store.latest_actions().await?;
        Ok::<_, ApiError>((servers, latest))
    }
    .await;
    let (servers, latest) = match result {
        Ok(found) => found,
        Err(error) => return error_response(Some(&session), error),
    };
    let last: HashMap<i64, &ActionRecord> = latest.iter().filter_map(|a| a.server_id.map(|id| (id, a))).collect();
    let query = param(&params, "q").unwrap_or_default().to_lowercase();
    let wanted_state = param(&params, "state");
    let mut rows = String::new();
    let mut shown = 0;
    for server in servers.iter().filter(|s| !s.retired) {
        if wanted_state.is_some_and(|w| w != server.state.as_str()) {
            continue;
        }
        let haystack = format!(
            "{} {} {} {}",
            server.name,
            server.tenant.as_deref().unwrap_or(""),
            server.kind,
            server
                .nics
                .iter()
                .map(|n| format!("{} {}", n.current_network, n.current_ip.map(|i| i.to_string()).unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(" ")
        )
        .to_lowercase();
        if !query.is_empty() && !haystack.contains(&query) {
            continue;
        }
        shown += 1;
        let last_action = match last.get(&server.id) {
            Some(a) => format!(
                r##"<a href="/actions/{id}">#{id} {}</a> {}"##,
                escape(a.kind.as_str()),
                badge(a.state.as_str()),
                id = a.id
            ),
            None => r#"<span class="muted">none</span>"#.into(),
        };
        let _ = write!(
            rows,
            r#"<tr data-server="{n}"><td><a href="/servers/{u}">{n}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{last_action}</td></tr>"#,
            escape(server.kind.as_str()),
            escape(server.tenant.as_deref().unwrap_or("")),
            badge(server.state.as_str()),
            nic_lines(server),
            n = escape(&server.name),
            u = encode_query(&server.name),
        );
    }
    let mut options = String::from(r#"<option value="">any</option>"#);
    for s in ServerState::ALL {
        let selected = if wanted_state == Some(s.as_str()) { " selected" } else { "" };
        let _ = write!(options, r#"<option value="{0}"{selected}>{0}</option>"#, s.as_str());
    }
    let body = format!(
        r#"<h1>Servers</h1><form class="filters" method="get" action="/servers" role="search">
<label>Search <input name="q" value="{q}" placeholder="name, tenant, network, address"></label>
<label>State <select name="state">{options}</select></label><button type="submit" class="secondary">Filter</button></form>
<p class="muted">{shown} servers</p>
<div class="table-wrap"><table><thead><tr><th>Name</th><th>Kind</th><th>Tenant</th><th>State</th><th>Network and address per NIC</th><th>Last action</th></tr></thead><tbody>{rows}</tbody></table></div>"#,
        q = escape(&query),
    );
    page(&session, "/servers", "Servers", &body)
}

pub async fn server(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> Response {
    match server_body(&state, &session, &name).await {
        Ok(body) => page(&session, "/servers", &name, &body),
        Err(error) => error_response(Some(&session), error),
    }
}

async fn server_body(state: &ApiState, session: &Session, name: &str) -> Result<String, ApiError> {
    let store = state.engine.store();
    let server = store.server_by_name(name).await?.ok_or_else(|| {
        ApiError::from(cordon_engine::EngineError::new(
            cordon_engine::ErrorKind::NotFound,
            &messages::SERVER_NOT_FOUND,
            &[("name", &name)],
        ))
    })?;
    let mut nics = String::new();
    for nic in &server.nics {
        let place = match (&nic.switch, &nic.port) {
            (Some(switch), Some(port)) => format!("{switch}/{port}"),
            _ => String::new(),
        };
        let quarantine = state.engine.quarantine_network_of(&nic.network).unwrap_or_else(|| "none".into());
        let _ = write!(
            nics,
            r#"<tr data-mac="{mac}"><td class="mono">{mac}</td><td class="nic-network">{}</td><td class="mono nic-address">{}</td><td>{}</td><td class="mono">{}</td><td>{}</td><td class="mono hide-narrow">{}</td></tr>"#,
            escape(&nic.current_network),
            escape(&nic.current_ip.map(|ip| ip.to_string()).unwrap_or_else(|| "none".into())),
            escape(&nic.network),
            escape(&nic.operational_ip.map(|ip| ip.to_string()).unwrap_or_else(|| "not configured".into())),
            escape(&quarantine),
            escape(&place),
            mac = escape(&nic.mac.to_string()),
        );
    }
    let buttons = if session.role.allows(Role::Operator) && !server.retired {
        server_buttons(state, session, &server)
    } else {
        String::new()
    };
    let actions =
        store.list_actions(&ActionFilter { server_id: Some(server.id), limit: Some(50), ..Default::default() }).await?;
    let detections: Vec<DetectionView> = store
        .list_detections(&DetectionFilter { limit: Some(2000), ..Default::default() })
        .await?
        .iter()
        .filter(|d| d.server_id == Some(server.id))
        .take(50)
        .map(DetectionView::from)
        .collect();
    Ok(format!(
        r#"<h1>{name} <span id="server-state">{state}</span></h1>
<div class="panel"><dl class="facts"><dt>Kind</dt><dd>{kind}</dd><dt>Tenant</dt><dd>{tenant}</dd><dt>User</dt><dd>{user}</dd><dt>Hypervisor</dt><dd>{hv}</dd><dt>Updated</dt><dd>{updated}</dd></dl></div>
{buttons}
<h2>Network interfaces</h2><div class="table-wrap"><table id="nics"><thead><tr><th>MAC</th><th>Network now</th><th>Address now</th><th>Operational network</th><th>Operational address</th><th>Quarantine network</th><th class="hide-narrow">Switch port</th></tr></thead><tbody>{nics}</tbody></table></div>
<h2>Actions</h2>{actions}<h2>Detections</h2>{detections}"#,
        name = escape(&server.name),
        state = badge(server.state.as_str()),
        kind = escape(server.kind.as_str()),
        tenant = escape(server.tenant.as_deref().unwrap_or("none")),
        user = escape(server.user_email.as_deref().unwrap_or("none")),
        hv = escape(&match (&server.hypervisor, &server.domain) {
            (Some(h), Some(d)) => format!("{h} (domain {d})"),
            _ => "none (physical or not imported)".into(),
        }),
        updated = time(&server.updated_at),
        actions = actions_table(&actions, session, true),
        detections = detections_table(&detections),
    ))
}

/// Quarantine, unquarantine and reboot, each behind a confirmation that says what will happen.
fn server_buttons(state: &ApiState, session: &Session, server: &ServerRecord) -> String {
    let moves: Vec<String> = server
        .nics
        .iter()
        .map(|n| {
            let to = state.engine.quarantine_network_of(&n.network).unwrap_or_else(|| "its quarantine network".into());
            format!("{} from {} to {}", n.mac, n.network, to)
        })
        .collect();
    let back: Vec<String> = server
        .nics
        .iter()
        .map(|n| {
            let ip = n.operational_ip.map(|i| i.to_string()).unwrap_or_else(|| "no address".into());
            format!("{} to {} ({ip})", n.mac, n.network)
        })
        .collect();
    let name = &server.name;
    let choices = [
        (
            "quarantine",
            "Quarantine…",
            "danger",
            format!(
                "Cordon moves every NIC of {name} to its quarantine network ({}) and gives it an address from the quarantine pool. The server loses its operational network at once; the move is verified and recorded.",
                moves.join("; ")
            ),
        ),
        (
            "unquarantine",
            "Unquarantine…",
            "",
            format!(
                "Cordon moves every NIC of {name} back to its operational network ({}) and releases its quarantine address. Only do this once the server is clean.",
                back.join("; ")
            ),
        ),
        (
            "reboot",
            "Reboot…",
            "secondary",
            format!(
                "Cordon restarts {name} through its hypervisor or BMC: gracefully first, forced after the graceful timeout. Work not saved on the server is lost."
            ),
        ),
    ];
    let mut out = String::from(r#"<div class="actions-bar" id="server-actions">"#);
    for (verb, label, class, what) in choices {
        let _ = write!(
            out,
            r#"<details class="confirm" data-verb="{verb}"><summary>{label}</summary><p>{what}</p><form method="post" action="/servers/{u}/{verb}" data-live>{csrf}<p><label>Reason <input name="reason" placeholder="recorded with the action"></label></p><button type="submit" class="{class}" data-confirm="{verb}">Confirm {verb} of {n}</button></form></details>"#,
            what = escape(&what),
            u = encode_query(name),
            n = escape(name),
            csrf = csrf_field(session),
        );
    }
    out.push_str("</div>");
    out
}

async fn submit(
    state: ApiState,
    session: Session,
    caller: Caller,
    name: String,
    body: Bytes,
    kind: ActionKind,
) -> Response {
    let reason = form_fields(&body)
        .into_iter()
        .find(|(k, _)| k == "reason")
        .map(|(_, v)| v.trim().to_string())
        .filter(|r| !r.is_empty());
    let request = EngineRequest {
        kind,
        server: name.clone(),
        reason,
        trigger: "console".into(),
        actor: cordon_engine::Actor { name: caller.name, origin: caller.origin },
    };
    match state.engine.request(request).await {
        Ok(_) => Redirect::to(&format!("/servers/{}", encode_query(&name))).into_response(),
        Err(error) => error_response(Some(&session), error.into()),
    }
}

pub async fn quarantine(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    submit(state, session, caller, name, body, ActionKind::Quarantine).await
}

pub async fn unquarantine(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    submit(state, session, caller, name, body, ActionKind::Unquarantine).await
}

pub async fn reboot(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    submit(state, session, caller, name, body, ActionKind::Reboot).await
}

// ---------------------------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------------------------

pub async fn actions(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    params: Params,
) -> Response {
    let store = state.engine.store();
    let wanted = param(&params, "state");
    let server_name = param(&params, "server");
    let result = async {
        let server_id = match server_name {
            Some(name) => Some(store.server_by_name(name).await?.map(|s| s.id).unwrap_or(-1)),
            None => None,
        };
        let exact = wanted.and_then(|w| w.parse::<ActionState>().ok());
        let filter = ActionFilter { state: exact, server_id, limit: Some(500) };
        Ok::<_, ApiError>(store.list_actions(&filter).await?)
    }
    .await;
    let mut list = match result {
        Ok(list) => list,
        Err(error) => return error_response(Some(&session), error),
    };
    if wanted == Some("open") {
        list.retain(|a| a.state.is_open());
    }
    let mut options = String::from(r#"<option value="">any</option>"#);
    for s in std::iter::once("open").chain(ActionState::ALL.iter().map(|s| s.as_str())) {
        let selected = if wanted == Some(s) { " selected" } else { "" };
        let _ = write!(options, r#"<option value="{s}"{selected}>{s}</option>"#);
    }
    let body = format!(
        r#"<h1>Actions</h1><form class="filters" method="get" action="/actions">
<label>State <select name="state">{options}</select></label><label>Server <input name="server" value="{server}"></label>
<button type="submit" class="secondary">Filter</button></form><p class="muted">{count} actions</p>{table}"#,
        server = escape(server_name.unwrap_or("")),
        count = list.len(),
        table = actions_table(&list, &session, true),
    );
    page(&session, "/actions", "Actions", &body)
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse::<i64>().map_err(|_| ApiError::bad_request(&format!("`{id}` is not an action id")))
}

pub async fn action(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    match action_body(&state, &session, &id).await {
        Ok(body) => page(&session, "/actions", &format!("Action {id}"), &body),
        Err(error) => error_response(Some(&session), error),
    }
}

async fn action_body(state: &ApiState, session: &Session, id: &str) -> Result<String, ApiError> {
    let id = parse_id(id)?;
    let store = state.engine.store();
    let action = store.action(id).await?.ok_or_else(|| {
        ApiError::from(cordon_engine::EngineError::new(
            cordon_engine::ErrorKind::NotFound,
            &messages::ACTION_NOT_FOUND,
            &[("action", &id)],
        ))
    })?;
    let mut steps = String::new();
    for step in store.steps(id).await? {
        let s = &step.step;
        let took = (s.finished_at - s.started_at).num_milliseconds();
        let _ = write!(
            steps,
            r#"<tr><td class="num">{}</td><td class="num">{}</td><td class="mono">{}</td><td class="mono">{}</td><td>{}</td><td>{}</td><td class="mono">{}</td><td class="mono hide-narrow">{}</td><td class="num">{took} ms</td></tr>"#,
            step.seq,
            s.attempt,
            escape(&s.name),
            escape(&s.target),
            badge(s.outcome.as_str()),
            escape(&s.detail),
            s.message_number.map(|n| n.to_string()).unwrap_or_default(),
            time(&s.started_at),
        );
    }
    let steps = if steps.is_empty() {
        r#"<p class="muted">No steps yet.</p>"#.to_string()
    } else {
        format!(
            r#"<div class="table-wrap"><table id="steps"><thead><tr><th class="num">#</th><th class="num">Attempt</th><th>Step</th><th>Target</th><th>Outcome</th><th>Detail</th><th>Message</th><th class="hide-narrow">Started</th><th class="num">Took</th></tr></thead><tbody>{steps}</tbody></table></div>"#
        )
    };
    let mut history = String::new();
    for m in store.messages_for_action(id).await? {
        let number = m.message.number;
        let _ = write!(
            history,
            r#"<tr><td class="mono">{}</td><td><span class="mono">{number}</span> {}</td><td class="remedy">{}</td></tr>"#,
            time(&m.created_at),
            escape(&m.message.text),
            escape(remedy_of(number)),
        );
    }
    let detections: Vec<DetectionView> = store
        .list_detections(&DetectionFilter { action_id: Some(id), limit: Some(100), ..Default::default() })
        .await?
        .iter()
        .map(DetectionView::from)
        .collect();
    let server = match &action.server_name {
        Some(s) => format!(r#"<a href="/servers/{}">{}</a>"#, encode_query(s), escape(s)),
        None => escape(&action.address.map(|a| a.to_string()).unwrap_or_else(|| "none".into())),
    };
    let message = match &action.message {
        Some(m) => format!(
            r#"<div class="panel{}" id="action-message"><p class="message"><strong class="mono">{}</strong> {}</p><p class="remedy">Remedy: {}</p></div>"#,
            if action.state == ActionState::Failed { " error" } else { "" },
            m.number,
            escape(&m.text),
            escape(remedy_of(m.number))
        ),
        None => String::new(),
    };
    Ok(format!(
        r#"<h1>Action #{id} <span id="action-state">{state}</span></h1>{message}
<div class="actions-bar" id="action-buttons">{buttons}</div>
<div class="panel"><dl class="facts"><dt>Kind</dt><dd>{kind}</dd><dt>Server</dt><dd>{server}</dd><dt>Trigger</dt><dd>{trigger}</dd><dt>Requested by</dt><dd>{by}</dd><dt>Reason</dt><dd>{reason}</dd><dt>Decided by</dt><dd>{decided}</dd><dt>Attempts</dt><dd>{attempts}</dd><dt>Created</dt><dd>{created}</dd><dt>Updated</dt><dd>{updated}</dd></dl></div>
<h2>Steps</h2>{steps}<h2>Messages</h2><div class="table-wrap"><table><thead><tr><th>At</th><th>Message</th><th>Remedy</th></tr></thead><tbody>{history}</tbody></table></div>
<h2>Detections</h2>{detections}"#,
        state = badge(action.state.as_str()),
        buttons = action_buttons(&action, session),
        kind = escape(action.kind.as_str()),
        trigger = escape(&action.trigger),
        by = escape(&action.requested_by),
        reason = escape(action.reason.as_deref().unwrap_or("none")),
        decided = escape(action.decided_by.as_deref().unwrap_or("none")),
        attempts = action.attempts,
        created = time(&action.created_at),
        updated = time(&action.updated_at),
        detections = detections_table(&detections),
    ))
}

async fn operator(state: ApiState, session: Session, caller: Caller, id: String, verb: &str) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(error) => return error_response(Some(&session), error),
    };
    let actor = cordon_engine::Actor { name: caller.name, origin: caller.origin };
    let result = match verb {
        "check" => state.engine.check(id, &actor).await,
        "retry" => state.engine.retry(id, &actor).await,
        "approve" => state.engine.approve(id, &actor, None).await,
        _ => state.engine.reject(id, &actor).await,
    };
    match result {
        Ok(_) => Redirect::to(&format!("/actions/{id}")).into_response(),
        Err(error) => error_response(Some(&session), error.into()),
    }
}

macro_rules! operator_route {
    ($name:ident, $verb:literal) => {
        pub async fn $name(
            State(state): State<ApiState>,
            Extension(session): Extension<Session>,
            Extension(caller): Extension<Caller>,
            Path(id): Path<String>,
        ) -> Response {
            operator(state, session, caller, id, $verb).await
        }
    };
}

operator_route!(check, "check");
operator_route!(retry, "retry");
operator_route!(approve, "approve");
operator_route!(reject, "reject");

// ---------------------------------------------------------------------------------------------
// Detections and messages
// ---------------------------------------------------------------------------------------------

pub async fn detections(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    params: Params,
) -> Response {
    let source = param(&params, "source").map(String::from);
    let action_id = param(&params, "action").and_then(|a| a.trim_start_matches('#').parse::<i64>().ok());
    let severity = param(&params, "severity");
    let query = param(&params, "q").unwrap_or_default().to_lowercase();
    let filter = DetectionFilter { source: source.clone(), action_id, limit: Some(500) };
    let list: Vec<DetectionView> = match state.engine.store().list_detections(&filter).await {
        Ok(list) => list.iter().map(DetectionView::from).collect(),
        Err(error) => return error_response(Some(&session), error.into()),
    };
    let list: Vec<DetectionView> = list
        .into_iter()
        .filter(|d| severity.is_none_or(|s| d.severity == s))
        .filter(|d| {
            query.is_empty()
                || format!("{} {} {}", d.subject, d.signature, d.server.as_deref().unwrap_or(""))
                    .to_lowercase()
                    .contains(&query)
        })
        .collect();
    let mut options = String::from(r#"<option value="">any</option>"#);
    for s in cordon_model::ThreatSeverity::ALL {
        let selected = if severity == Some(s.as_str()) { " selected" } else { "" };
        let _ = write!(options, r#"<option value="{0}"{selected}>{0}</option>"#, s.as_str());
    }
    let body = format!(
        r#"<h1>Detections</h1><form class="filters" method="get" action="/detections">
<label>Search <input name="q" value="{q}" placeholder="address, signature, server"></label>
<label>Source <input name="source" value="{source}"></label><label>Severity <select name="severity">{options}</select></label>
<label>Action <input name="action" value="{action}" size="6"></label><button type="submit" class="secondary">Filter</button></form>
<p class="muted">{count} detections (newest first)</p>{table}"#,
        q = escape(&query),
        source = escape(source.as_deref().unwrap_or("")),
        action = action_id.map(|a| a.to_string()).unwrap_or_default(),
        count = list.len(),
        table = detections_table(&list),
    );
    page(&session, "/detections", "Detections", &body)
}

pub async fn messages_page(
    State(state): State<ApiState>,
    Extension(session): Extension<Session>,
    params: Params,
) -> Response {
    let severity = param(&params, "severity");
    let number = param(&params, "number").and_then(|n| n.parse::<u32>().ok());
    let query = param(&params, "q").unwrap_or_default().to_lowercase();
    let list = match state.engine.store().recent_messages(1000).await {
        Ok(list) => list,
        Err(error) => return error_response(Some(&session), error.into()),
    };
    let mut rows = String::new();
    let mut count = 0;
    for m in &list {
        let n = m.message.number;
        let level = match n / 10_000 {
            2 => "info",
            4 => "warning",
            _ => "error",
        };
        if severity.is_some_and(|s| s != level) || number.is_some_and(|x| x != n) {
            continue;
        }
        if !query.is_empty() && !m.message.text.to_lowercase().contains(&query) {
            continue;
        }
        count += 1;
        let class = match level {
            "info" => "s-info",
            "warning" => "s-warn",
            _ => "s-bad",
        };
        let action = m.message.action_id.map(|a| format!(r##"<a href="/actions/{a}">#{a}</a>"##)).unwrap_or_default();
        let _ = write!(
            rows,
            r#"<tr><td class="mono">{}</td><td><span class="state {class}">{level}</span></td><td class="mono">{n}</td><td>{}<div class="remedy">{}</div></td><td>{action}</td></tr>"#,
            time(&m.created_at),
            escape(&m.message.text),
            escape(remedy_of(n)),
        );
    }
    let mut options = String::from(r#"<option value="">any</option>"#);
    for s in ["info", "warning", "error"] {
        let selected = if severity == Some(s) { " selected" } else { "" };
        let _ = write!(options, r#"<option value="{s}"{selected}>{s}</option>"#);
    }
    let body = format!(
        r#"<h1>Messages</h1><form class="filters" method="get" action="/messages">
<label>Search <input name="q" value="{q}"></label><label>Severity <select name="severity">{options}</select></label>
<label>Number <input name="number" value="{number}" size="6"></label><button type="submit" class="secondary">Filter</button></form>
<p class="muted">{count} messages (newest first)</p>
<div class="table-wrap"><table><thead><tr><th>At</th><th>Severity</th><th>Number</th><th>Text and remedy</th><th>Action</th></tr></thead><tbody>{rows}</tbody></table></div>"#,
        q = escape(&query),
        number = number.map(|n| n.to_string()).unwrap_or_default(),
    );
    page(&session, "/messages", "Messages", &body)
}
