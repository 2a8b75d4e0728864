use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cordon_engine::{Actor, EngineError, ErrorKind, Request};
use cordon_model::{ActionKind, ActionState, Message, messages};
use cordon_store::ActionFilter;
use serde::Deserialize;

use crate::ApiState;
use crate::auth::Caller;
use crate::wire::*;

/// An error answered with its HTTP status and numbered message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: &'static Message,
    text: String,
}

impl ApiError {
    fn new(status: StatusCode, message: &'static Message, text: String) -> Self {
        ApiError { status, message, text }
    }

    pub fn unauthenticated() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, &messages::UNAUTHENTICATED, messages::UNAUTHENTICATED.text.to_string())
    }

    pub fn forbidden(text: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, &messages::FORBIDDEN, text.to_string())
    }

    pub fn bad_request(detail: &dyn std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, &messages::BAD_REQUEST, messages::BAD_REQUEST.render(&[("detail", detail)]))
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        let status = match error.kind {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, error.message, error.text)
    }
}

impl From<cordon_store::StoreError> for ApiError {
    fn from(error: cordon_store::StoreError) -> Self {
        EngineError::from(error).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorView {
                number: self.message.number,
                severity: self.message.severity().to_string(),
                text: self.text,
                remedy: self.message.remedy.to_string(),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;

pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

pub async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    let actions = state.engine.store().count_actions().await.unwrap_or_default();
    let mut text = state.engine.metrics().render_with(&actions, state.engine.breaker_status().0);
    let sources: Vec<(String, std::sync::Arc<cordon_sources::SourceCounters>)> =
        state.ingest.counters.iter().map(|(name, counters)| (name.clone(), counters.clone())).collect();
    if !sources.is_empty() {
        text.push_str(&cordon_sources::render_metrics(&sources));
    }
    if let Some(notify) = &state.notify {
        text.push_str(&notify.counters.render());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], crate::OPENAPI)
}

pub async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    let text = messages::NO_SUCH_ROUTE.render(&[("method", &method), ("path", &uri.path())]);
    ApiError::new(StatusCode::NOT_FOUND, &messages::NO_SUCH_ROUTE, text)
}

pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    let text = messages::NO_SUCH_ROUTE.render(&[("method", &method), ("path", &uri.path())]);
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, &messages::NO_SUCH_ROUTE, text)
}

pub async fn list_servers(State(state): State<ApiState>) -> ApiResult<Json<Vec<ServerView>>> {
    let store = state.engine.store();
    let servers = store.list_servers().await?;
    // The newest action of every server, from one query rather than one per server.
    let latest = store.latest_actions().await?;
    let last: HashMap<i64, &cordon_store::ActionRecord> =
        latest.iter().filter_map(|a| a.server_id.map(|id| (id, a))).collect();
    Ok(Json(servers.iter().map(|s| ServerView::new(s, last.get(&s.id).copied())).collect()))
}

pub async fn show_server(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<Json<ServerView>> {
    let store = state.engine.store();
    // A name first; failing that, an address (operational or current) of a managed server.
    let server = match store.server_by_name(&name).await? {
        Some(server) => server,
        None => match name.parse::<std::net::IpAddr>() {
            Ok(address) => store.server_by_address(address).await?.ok_or_else(|| {
                ApiError::from(EngineError::new(
                    ErrorKind::NotFound,
                    &messages::SERVER_NOT_FOUND_BY_ADDRESS,
                    &[("address", &address)],
                ))
            })?,
            Err(_) => {
                return Err(
                    EngineError::new(ErrorKind::NotFound, &messages::SERVER_NOT_FOUND, &[("name", &name)]).into()
                );
            }
        },
    };
    let last =
        store.list_actions(&ActionFilter { server_id: Some(server.id), limit: Some(1), ..Default::default() }).await?;
    Ok(Json(ServerView::new(&server, last.first())))
}

pub async fn quarantine(
    state: State<ApiState>,
    caller: Extension<Caller>,
    name: Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<SubmitResponse>)> {
    submit(state, caller, name, body, ActionKind::Quarantine).await
}

pub async fn unquarantine(
    state: State<ApiState>,
    caller: Extension<Caller>,
    name: Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<SubmitResponse>)> {
    submit(state, caller, name, body, ActionKind::Unquarantine).await
}

pub async fn reboot(
    state: State<ApiState>,
    caller: Extension<Caller>,
    name: Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<SubmitResponse>)> {
    submit(state, caller, name, body, ActionKind::Reboot).await
}

async fn submit(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
    kind: ActionKind,
) -> ApiResult<(StatusCode, Json<SubmitResponse>)> {
    // An empty body is allowed: the reason is optional.
    let request: ActRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ActRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(&e))?
    };
    let submitted = state
        .engine
        .request(Request {
            kind,
            server: name,
            reason: request.reason,
            trigger: "api".into(),
            actor: Actor { name: caller.name, origin: caller.origin },
        })
        .await?;
    let status = if submitted.existing { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((
        status,
        Json(SubmitResponse {
            action: ActionView::from(&submitted.action),
            existing: submitted.existing,
            message: MessageView { number: submitted.message.number, text: submitted.message.text },
        }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionQuery {
    state: Option<String>,
    server: Option<String>,
    limit: Option<u32>,
}

pub async fn list_actions(
    State(state): State<ApiState>,
    query: Result<Query<ActionQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<ActionView>>> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(&rejection.body_text()))?;
    let store = state.engine.store();
    let action_state =
        query.state.as_deref().map(str::parse::<ActionState>).transpose().map_err(|e| ApiError::bad_request(&e))?;
    let server_id = match &query.server {
        Some(name) => match store.server_by_name(name).await? {
            Some(server) => Some(server.id),
            None => {
                return Err(
                    EngineError::new(ErrorKind::NotFound, &messages::SERVER_NOT_FOUND, &[("name", name)]).into()
                );
            }
        },
        None => None,
    };
    let filter = ActionFilter { state: action_state, server_id, limit: Some(query.limit.unwrap_or(500).min(5000)) };
    let actions = store.list_actions(&filter).await?;
    Ok(Json(actions.iter().map(ActionView::from).collect()))
}

fn parse_id(id: &str) -> ApiResult<i64> {
    id.parse::<i64>().map_err(|_| ApiError::bad_request(&format!("`{id}` is not an action id")))
}

fn action_not_found(id: i64) -> ApiError {
    EngineError::new(ErrorKind::NotFound, &messages::ACTION_NOT_FOUND, &[("action", &id)]).into()
}

pub async fn show_action(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<ActionView>> {
    let id = parse_id(&id)?;
    let store = state.engine.store();
    let action = store.action(id).await?.ok_or_else(|| action_not_found(id))?;
    let mut view = ActionView::from(&action);
    view.steps = Some(store.steps(id).await?.iter().map(StepView::from).collect());
    view.messages = Some(store.messages_for_action(id).await?.iter().map(TimedMessageView::from).collect());
    Ok(Json(view))
}

pub async fn check_action(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<ActionView>> {
    let id = parse_id(&id)?;
    let action = state.engine.check(id, &Actor { name: caller.name, origin: caller.origin }).await?;
    Ok(Json(ActionView::from(&action)))
}

pub async fn retry_action(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<ActionView>> {
    let id = parse_id(&id)?;
    let action = state.engine.retry(id, &Actor { name: caller.name, origin: caller.origin }).await?;
    Ok(Json(ActionView::from(&action)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionQuery {
    source: Option<String>,
    action: Option<i64>,
    limit: Option<u32>,
}

pub async fn list_detections(
    State(state): State<ApiState>,
    query: Result<Query<DetectionQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<DetectionView>>> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(&rejection.body_text()))?;
    let filter = cordon_store::DetectionFilter {
        source: query.source,
        action_id: query.action,
        limit: Some(query.limit.unwrap_or(100).min(10_000)),
    };
    let detections = state.engine.store().list_detections(&filter).await?;
    Ok(Json(detections.iter().map(DetectionView::from).collect()))
}

pub async fn approve_action(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<ActionView>> {
    let id = parse_id(&id)?;
    let request: ApproveRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ApproveRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(&e))?
    };
    let as_kind =
        request.as_kind.as_deref().map(str::parse::<ActionKind>).transpose().map_err(|e| ApiError::bad_request(&e))?;
    let action = state.engine.approve(id, &Actor { name: caller.name, origin: caller.origin }, as_kind).await?;
    Ok(Json(ActionView::from(&action)))
}

pub async fn reject_action(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<ActionView>> {
    let id = parse_id(&id)?;
    let action = state.engine.reject(id, &Actor { name: caller.name, origin: caller.origin }).await?;
    Ok(Json(ActionView::from(&action)))
}

fn breaker_view(state: &ApiState) -> BreakerView {
    let (tripped, recent) = state.engine.breaker_status();
    let policy = state.engine.policy();
    BreakerView {
        tripped,
        recent,
        max_auto_actions: policy.policy.max_auto_actions,
        window_secs: policy.policy.window_secs,
    }
}

pub async fn show_breaker(State(state): State<ApiState>) -> Json<BreakerView> {
    Json(breaker_view(&state))
}

pub async fn reset_breaker(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<BreakerView>> {
    state.engine.reset_breaker(&Actor { name: caller.name, origin: caller.origin }).await?;
    Ok(Json(breaker_view(&state)))
}

pub async fn import_servers(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<ImportView>> {
    let request: ImportRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ImportRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(&e))?
    };
    let actor = Actor { name: caller.name, origin: caller.origin };
    let report = state.engine.import_from_hypervisor(&name, request.apply, &actor).await?;
    Ok(Json(ImportView::from(&report)))
}

pub async fn cancel_action(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<ActionView>> {
    let id = parse_id(&id)?;
    let action = state.engine.cancel(id, &Actor { name: caller.name, origin: caller.origin }).await?;
    Ok(Json(ActionView::from(&action)))
}

pub async fn reconcile(State(state): State<ApiState>) -> ApiResult<Json<ReconcileView>> {
    let report = state.engine.reconcile(state.on_drift).await?;
    Ok(Json(ReconcileView::from(&report)))
}

pub async fn status(State(state): State<ApiState>) -> ApiResult<Json<StatusView>> {
    let engine = &state.engine;
    let mut actions = std::collections::BTreeMap::new();
    for (_, action_state, count) in engine.store().count_actions().await? {
        *actions.entry(action_state.to_string()).or_insert(0) += count;
    }
    let drivers = engine
        .driver_health()
        .await
        .into_iter()
        .map(|d| DriverHealthView { name: d.name, kind: d.kind, healthy: d.healthy, detail: d.detail })
        .collect();
    let mut sources: Vec<SourceStatusView> = state
        .ingest
        .counters
        .iter()
        .map(|(name, counters)| {
            let snapshot = counters.snapshot();
            SourceStatusView {
                name: name.clone(),
                received: snapshot.received,
                accepted: snapshot.accepted,
                skipped: snapshot.skipped,
                rejected: snapshot.rejected,
            }
        })
        .collect();
    sources.sort_by(|a, b| a.name.cmp(&b.name));
    let started = engine.started_at();
    let time = |us: i64| {
        chrono::DateTime::from_timestamp_micros(us)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let live_after = chrono::Utc::now()
        - chrono::Duration::from_std(engine.settings().action_lease).unwrap_or(chrono::Duration::seconds(15));
    let instances = engine
        .store()
        .instances()
        .await
        .map_err(cordon_engine::EngineError::from)?
        .into_iter()
        .map(|i| InstanceView {
            live: i.heartbeat_at >= live_after,
            name: i.name,
            address: i.address,
            started_at: i.started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            heartbeat_at: i.heartbeat_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            actions: i
                .actions
                .into_iter()
                .map(|(action, until)| ActionLeaseView { action, until: time(until) })
                .collect(),
            leases: i.leases.into_iter().map(|(name, until)| NamedLeaseView { name, until: time(until) }).collect(),
        })
        .collect();
    Ok(Json(StatusView {
        version: env!("CARGO_PKG_VERSION").to_string(),
        instance: engine.instance().to_string(),
        started_at: started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        uptime_secs: (chrono::Utc::now() - started).num_seconds().max(0) as u64,
        database: engine.settings().database.clone(),
        actions,
        breaker: breaker_view(&state),
        drivers,
        sources,
        instances,
    }))
}
