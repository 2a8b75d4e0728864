//! Detections posted over HTTP: webhooks (and `cordon report`) one at a time, and Suricata EVE
//! as NDJSON. A sensor is told "accepted" only once its detections are committed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use cordon_ingest::webhook;
use cordon_model::{Parsed, Role, messages};
use cordon_sources::Denied;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ApiState;
use crate::auth::hash_token;
use crate::handlers::ApiError;
use crate::replay::{ReplayGuard, Verdict};
use crate::wire::IngestResponse;

/// How a webhook source proves who it is.
#[derive(Clone)]
pub enum WebhookAuth {
    /// `Authorization: Bearer <the token in token_file>`.
    Token(String),
    /// `X-Cordon-Timestamp: <unix seconds>` and `X-Cordon-Signature: sha256=<hex of
    /// HMAC-SHA256(secret, timestamp + "." + body)>`.
    Hmac(Vec<u8>),
}

impl std::fmt::Debug for WebhookAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        f.write_str(match self {
            WebhookAuth::Token(_) => "Token(..)",
            WebhookAuth::Hmac(_) => "Hmac(..)",
        })
    }
}

/// The sources that may post over HTTP.
#[derive(Debug, Clone, Default)]
pub struct IngestSettings {
    pub webhooks: HashMap<String, WebhookAuth>,
    /// Sources of type `suricata-eve`, which accept NDJSON at `/api/v1/sources/{name}/eve`.
    pub eve_sources: HashSet<String>,
    /// How far a signed timestamp may be from now.
    pub max_skew_secs: i64,
    /// Per-source counters, shared with the metrics.
    pub counters: HashMap<String, Arc<cordon_sources::SourceCounters>>,
    /// Signatures accepted within the skew window, to refuse replays.
    pub replays: Arc<ReplayGuard>,
    /// `max_rate` of the sources that have one: over it, HTTP posts get 429 (message 41094).
    pub limiters: HashMap<String, Arc<cordon_sources::RateLimiter>>,
}

/// Takes `events` from the source's `max_rate`; over it, the post is refused (429) and counted.
fn within_rate(state: &ApiState, source: &str, events: u64) -> Result<(), ApiError> {
    let Some(limiter) = state.ingest.limiters.get(source) else { return Ok(()) };
    // A post bigger than one second's worth takes the whole bucket (else it could never pass).
    if limiter.try_take(events.min(u64::from(limiter.per_second()))) {
        return Ok(());
    }
    if let Some(counters) = state.ingest.counters.get(source) {
        counters.add_denied(Denied::RateLimit);
    }
    let what = format!("a post of {events} events was refused (429)");
    let text = messages::RATE_LIMITED.render(&[("source", &source), ("rate", &limiter.per_second()), ("what", &what)]);
    tracing::debug!(number = messages::RATE_LIMITED.number, source, "{text}");
    Err(ApiError::refused(StatusCode::TOO_MANY_REQUESTS, &messages::RATE_LIMITED, text))
}

type HmacSha256 = Hmac<Sha256>;

/// The signature a sender computes: hex of HMAC-SHA256(secret, "<timestamp>.<body>").
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else { return String::new() };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The signature's bytes when it is the right one for this timestamp and body.
fn verify(secret: &[u8], timestamp: &str, body: &[u8], signature_hex: &str) -> Option<[u8; 32]> {
    let expected: [u8; 32] = hex::decode(signature_hex).ok()?.try_into().ok()?;
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected).is_ok().then_some(expected)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
}

/// Constant-time comparison, so that a token cannot be guessed byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks an API token with a role that may post detections (sensor, or admin).
async fn api_token_allows(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = bearer(headers) else { return Err(ApiError::unauthenticated()) };
    match state.engine.store().token_by_hash(&hash_token(token)).await? {
        Some(record) if record.role.allows(Role::Sensor) => Ok(()),
        Some(record) => Err(ApiError::forbidden(&messages::FORBIDDEN.render(&[
            ("role", &record.role),
            ("operation", &"post detections"),
            ("needed", &Role::Sensor),
        ]))),
        None => Err(ApiError::unauthenticated()),
    }
}

/// A webhook's own credentials, or else an API token with the sensor role. A refusal is counted
/// against the source (`cordon_source_denied_total`) when the body names a configured one.
async fn authenticate_webhook(
    state: &ApiState,
    source: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let denied = |why: Denied| {
        if let Some(counters) = state.ingest.counters.get(source) {
            counters.add_denied(why);
        }
    };
    let result = match state.ingest.webhooks.get(source) {
        Some(WebhookAuth::Hmac(secret)) if headers.contains_key("x-cordon-signature") => {
            check_signature(state, source, secret, headers, body)
        }
        Some(WebhookAuth::Token(expected))
            if bearer(headers).is_some_and(|t| same(t.as_bytes(), expected.as_bytes())) =>
        {
            Ok(())
        }
        _ => api_token_allows(state, headers).await.map_err(|error| (Denied::Auth, error)),
    };
    result.map_err(|(why, error)| {
        denied(why);
        error
    })
}

/// An HMAC-signed request: right signature, timestamp within the skew, never seen before.
fn check_signature(
    state: &ApiState,
    source: &str,
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), (Denied, ApiError)> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let timestamp = header("x-cordon-timestamp");
    let signature = header("x-cordon-signature");
    let refused = || (Denied::Auth, ApiError::unauthenticated());
    let signature = signature.strip_prefix("sha256=").ok_or_else(refused)?;
    let seconds = timestamp.parse::<i64>().map_err(|_| refused())?;
    let now = chrono::Utc::now().timestamp();
    let skew = state.ingest.max_skew_secs;
    if now.abs_diff(seconds) > skew.unsigned_abs() {
        return Err(refused());
    }
    let signature = verify(secret, &timestamp, body, signature).ok_or_else(refused)?;
    match state.ingest.replays.check(signature, seconds, now, skew) {
        Verdict::Fresh => Ok(()),
        Verdict::Replay => {
            let text = messages::WEBHOOK_REPLAY.render(&[("source", &source), ("timestamp", &seconds)]);
            tracing::warn!(number = messages::WEBHOOK_REPLAY.number, source, "{text}");
            Err((Denied::Replay, ApiError::refused(StatusCode::CONFLICT, &messages::WEBHOOK_REPLAY, text)))
        }
        Verdict::Full => {
            let text = messages::WEBHOOK_REPLAY_CACHE_FULL.render(&[("source", &source)]);
            tracing::warn!(number = messages::WEBHOOK_REPLAY_CACHE_FULL.number, source, "{text}");
            Err((
                Denied::RateLimit,
                ApiError::refused(StatusCode::SERVICE_UNAVAILABLE, &messages::WEBHOOK_REPLAY_CACHE_FULL, text),
            ))
        }
    }
}

/// `POST /api/v1/detections`: one detection as JSON from a webhook source.
pub async fn post_detection(
    State(state): State<ApiState>,
    request: Request,
) -> Result<(StatusCode, Json<IngestResponse>), ApiError> {
    let headers = request.headers().clone();
    let body: Bytes = axum::body::to_bytes(request.into_body(), webhook::MAX_BODY_BYTES)
        .await
        .map_err(|e| ApiError::bad_request(&format!("body unreadable or over 1 MiB: {e}")))?;
    // The source is named inside the body, so read it before authenticating against it; nothing
    // is stored before authentication succeeds.
    let post = webhook::parse_post(&body);
    let source = match &post {
        Ok(post) => post.source.clone(),
        Err(_) => webhook::source_of(&body).unwrap_or_default(),
    };
    authenticate_webhook(&state, &source, &headers, &body).await?;
    within_rate(&state, &source, 1)?;
    let counters = state.ingest.counters.get(&source).cloned();
    if let Some(counters) = &counters {
        counters.add_received(1);
        counters.add_bytes(body.len() as u64);
    }
    let reject = |detail: String| {
        if let Some(counters) = &counters {
            counters.add_rejected();
        }
        tracing::debug!(source = %source, "{}", messages::INPUT_REJECTED.render(&[("source", &source), ("detail", &detail)]));
        ApiError::bad_request(&detail)
    };
    let post = post.map_err(reject)?;
    if !state.ingest.webhooks.contains_key(&post.source) {
        return Err(reject(format!("`{}` is not a configured webhook source", post.source)));
    }
    let detection = webhook::to_detection(&post, chrono::Utc::now().timestamp_micros()).map_err(reject)?;
    let ids = state.engine.accept_detections(&[detection], None).await?;
    if let Some(counters) = &counters {
        counters.add_accepted(ids.len() as u64);
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(IngestResponse { received: 1, accepted: 1, skipped: 0, rejected: 0, ids, errors: vec![] }),
    ))
}

/// `POST /api/v1/sources/{name}/eve`: Suricata EVE lines (NDJSON) for a `suricata-eve` source.
pub async fn post_eve(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<IngestResponse>), ApiError> {
    if !state.ingest.eve_sources.contains(&name) {
        return Err(ApiError::bad_request(&format!("`{name}` is not a configured suricata-eve source")));
    }
    let lines = body.split(|b| *b == b'\n').filter(|line| !line.iter().all(u8::is_ascii_whitespace)).count();
    within_rate(&state, &name, lines as u64)?;
    let counters = state.ingest.counters.get(&name).cloned();
    let received_at_us = chrono::Utc::now().timestamp_micros();
    let context = cordon_ingest::Context { source: &name, received_at_us };
    let mut response =
        IngestResponse { received: 0, accepted: 0, skipped: 0, rejected: 0, ids: vec![], errors: vec![] };
    let mut detections = Vec::new();
    for line in body.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        response.received += 1;
        match cordon_ingest::eve::parse_line(line, &context) {
            Parsed::Detection(detection) => detections.push(*detection),
            Parsed::Skipped { kind } => {
                response.skipped += 1;
                if let Some(counters) = &counters {
                    counters.add_skipped(&kind);
                }
            }
            Parsed::Malformed { reason } => {
                response.rejected += 1;
                if response.errors.len() < 10 {
                    response.errors.push(reason);
                }
            }
        }
    }
    let ids = state.engine.accept_detections(&detections, None).await?;
    response.accepted = ids.len() as u64;
    response.ids = ids;
    if let Some(counters) = &counters {
        counters.add_received(response.received);
        counters.add_bytes(body.len() as u64);
        counters.add_accepted(response.accepted);
        for _ in 0..response.rejected {
            counters.add_rejected();
        }
    }
    Ok((StatusCode::ACCEPTED, Json(response)))
}
