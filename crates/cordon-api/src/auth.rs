//! Bearer tokens: only their SHA-256 is stored; each route needs a role.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use cordon_model::{Role, messages};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::ApiState;
use crate::handlers::ApiError;

/// Who is calling, put in the request's extensions by [`require`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub origin: String,
}

/// A fresh random token (256 bits), as printed to its owner once.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("cordon_{}", hex::encode(bytes))
}

/// What the store keeps of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub(crate) fn require(state: &ApiState, role: Role, method: MethodRouter<ApiState>) -> MethodRouter<ApiState> {
    method.route_layer(from_fn_with_state((state.clone(), role), authorize))
}

async fn authorize(State((state, needed)): State<(ApiState, Role)>, mut request: Request, next: Next) -> Response {
    let origin = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip().to_string())
        .unwrap_or_else(|| "local".to_string());
    let token = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        // The scheme is case-insensitive (RFC 7235); the token is what follows one space.
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return ApiError::unauthenticated().into_response();
    };
    let record = match state.engine.store().token_by_hash(&hash_token(token)).await {
        Ok(Some(record)) => record,
        Ok(None) => return ApiError::unauthenticated().into_response(),
        Err(error) => return ApiError::from(cordon_engine::EngineError::from(error)).into_response(),
    };
    if !record.role.allows(needed) {
        let operation = format!("{} {}", request.method(), request.uri().path());
        return ApiError::forbidden(&messages::FORBIDDEN.render(&[
            ("role", &record.role),
            ("operation", &operation),
            ("needed", &needed),
        ]))
        .into_response();
    }
    request.extensions_mut().insert(Caller { name: format!("token:{}", record.name), origin });
    next.run(request).await
}

/// Counts every answered request (and the refusals) in the metrics.
pub(crate) async fn count(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    state.engine.metrics().http_request(response.status().as_u16());
    response
}
