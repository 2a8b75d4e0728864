//! Admin routes for API tokens and console accounts, and password hashing (argon2id).
//!
//! Secrets are hashed here, before the engine sees them: a token's SHA-256, a password's
//! argon2id PHC string. Neither the token nor the password is ever stored or logged.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use cordon_engine::Actor;
use cordon_model::{Role, messages};
use serde::de::DeserializeOwned;

use crate::ApiState;
use crate::auth::{Caller, hash_token, new_token};
use crate::handlers::ApiError;
use crate::wire::{PasswordRequest, TokenCreated, TokenRequest, TokenView, UserRequest, UserView};

/// Shorter passwords are refused.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longer ones too (argon2 takes any length; a megabyte "password" is an attack, not a secret).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// The argon2id PHC string of a password (random salt, the crate's default parameters).
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    check_password(password)?;
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| ApiError::internal(&format!("cannot hash the password: {e}")))
}

/// Whether `password` matches the stored PHC string; a malformed string never matches.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A hash of no one's password: verified against when the user is unknown, so that a sign-in
/// takes as long for an unknown name as for a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        Argon2::default().hash_password(new_token().as_bytes()).map(|h| h.to_string()).unwrap_or_default()
    })
}

fn check_password(password: &str) -> Result<(), ApiError> {
    let refused = |detail: String| {
        ApiError::unprocessable(&messages::PASSWORD_REFUSED, messages::PASSWORD_REFUSED.render(&[("detail", &detail)]))
    };
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(refused(format!("shorter than {MIN_PASSWORD_CHARS} characters")));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(refused(format!("longer than {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(())
}

/// A name for a token or an account: what the audit trail and URLs can carry unambiguously.
fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
        && !name.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(&format!(
            "name `{name}`: use 1 to 64 letters, digits, `-`, `_`, `.` or `@`, not only digits"
        )))
    }
}

fn parse_role(role: &str) -> Result<Role, ApiError> {
    role.parse::<Role>().map_err(|e| ApiError::bad_request(&e))
}

fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(&e))
}

fn actor(caller: Caller) -> Actor {
    Actor { name: caller.name, origin: caller.origin }
}

pub async fn list_tokens(State(state): State<ApiState>) -> Result<Json<Vec<TokenView>>, ApiError> {
    let tokens = state.engine.store().list_tokens().await?;
    Ok(Json(tokens.iter().map(TokenView::from).collect()))
}

pub async fn create_token(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    let request: TokenRequest = body(&bytes)?;
    check_name(&request.name)?;
    let role = parse_role(&request.role)?;
    let expires_at = match request.expires_in_secs {
        Some(0) => return Err(ApiError::bad_request(&"expires_in_secs must be positive")),
        Some(secs) => Some(
            i64::try_from(secs)
                .ok()
                .and_then(chrono::Duration::try_seconds)
                .and_then(|d| chrono::Utc::now().checked_add_signed(d))
                .ok_or_else(|| ApiError::bad_request(&"expires_in_secs is too large"))?,
        ),
        None => None,
    };
    let secret = new_token();
    let token =
        state.engine.create_token(&request.name, role, &hash_token(&secret), expires_at, &actor(caller)).await?;
    Ok((StatusCode::CREATED, Json(TokenCreated { token: TokenView::from(&token), secret })))
}

pub async fn revoke_token(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<TokenView>, ApiError> {
    let token = state.engine.revoke_token(&name, &actor(caller)).await?;
    Ok(Json(TokenView::from(&token)))
}

pub async fn list_users(State(state): State<ApiState>) -> Result<Json<Vec<UserView>>, ApiError> {
    let users = state.engine.store().list_users().await?;
    Ok(Json(users.iter().map(UserView::from).collect()))
}

pub async fn add_user(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let request: UserRequest = body(&bytes)?;
    check_name(&request.name)?;
    let role = parse_role(&request.role)?;
    let hash = hash_blocking(request.password).await?;
    let user = state.engine.add_user(&request.name, role, &hash, &actor(caller)).await?;
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

pub async fn set_password(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Result<Json<UserView>, ApiError> {
    let request: PasswordRequest = body(&bytes)?;
    let hash = hash_blocking(request.password).await?;
    let user = state.engine.set_password(&name, &hash, &actor(caller)).await?;
    Ok(Json(UserView::from(&user)))
}

pub async fn remove_user(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    let user = state.engine.remove_user(&name, &actor(caller)).await?;
    Ok(Json(UserView::from(&user)))
}

/// argon2 takes tens of milliseconds of CPU on purpose: off the async workers.
pub(crate) async fn hash_blocking(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ApiError::internal(&format!("password hashing stopped: {e}")))?
}

pub(crate) async fn verify_blocking(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || verify_password(&password, &phc)).await.unwrap_or(false)
}
