//! API tokens and console accounts: created, revoked and removed here so that each change is
//! recorded (numbered message) and audited with who did it, like every other change.
//!
//! Secrets never reach the engine: the API hashes tokens (SHA-256) and passwords (argon2id)
//! before calling it.

use cordon_model::{Role, messages};
use cordon_store::{MessageRef, StoreError, Timestamp, TokenRecord, UserRecord};

use crate::{Actor, Engine, EngineError, ErrorKind};

impl Engine {
    /// Stores a new token (its hash) and records who created it.
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        hash: &str,
        expires_at: Option<Timestamp>,
        actor: &Actor,
    ) -> Result<TokenRecord, EngineError> {
        let token =
            self.store().create_token(name, role, hash, expires_at).await.map_err(|e| taken(e, "token", name))?;
        let expires = expires_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        let expires = expires.as_deref().unwrap_or("never");
        let message = EngineError::message_ref(
            &messages::TOKEN_CREATED,
            &[("name", &name), ("role", &role), ("expires", &expires), ("actor", &actor.name)],
        );
        self.account_change(&message, actor, "token_create", &format!("token {name}"), &format!("role {role}")).await?;
        Ok(token)
    }

    /// Revokes a token named `selector`, or else numbered `selector`.
    pub async fn revoke_token(&self, selector: &str, actor: &Actor) -> Result<TokenRecord, EngineError> {
        let tokens = self.store().list_tokens().await?;
        let found = tokens
            .iter()
            .find(|t| t.name == selector)
            .or_else(|| selector.parse::<i64>().ok().and_then(|id| tokens.iter().find(|t| t.id == id)))
            .ok_or_else(|| {
                EngineError::new(ErrorKind::NotFound, &messages::TOKEN_NOT_FOUND, &[("token", &selector)])
            })?;
        let token = self.store().revoke_token(found.id).await?;
        let message =
            EngineError::message_ref(&messages::TOKEN_REVOKED, &[("name", &token.name), ("actor", &actor.name)]);
        self.account_change(&message, actor, "token_revoke", &format!("token {}", token.name), "").await?;
        Ok(token)
    }

    pub async fn add_user(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
        actor: &Actor,
    ) -> Result<UserRecord, EngineError> {
        let user = self.store().create_user(name, role, password_hash).await.map_err(|e| taken(e, "user", name))?;
        let message = EngineError::message_ref(
            &messages::USER_ADDED,
            &[("user", &name), ("role", &role), ("actor", &actor.name)],
        );
        self.account_change(&message, actor, "user_add", &format!("user {name}"), &format!("role {role}")).await?;
        Ok(user)
    }

    /// Replaces a user's password; the user's sessions end.
    pub async fn set_password(
        &self,
        name: &str,
        password_hash: &str,
        actor: &Actor,
    ) -> Result<UserRecord, EngineError> {
        self.store().set_user_password(name, password_hash).await.map_err(|e| unknown_user(e, name))?;
        let user = self
            .store()
            .user_by_name(name)
            .await?
            .ok_or_else(|| unknown_user(StoreError::NotFound { what: name.to_string() }, name))?;
        let message =
            EngineError::message_ref(&messages::USER_PASSWORD_CHANGED, &[("user", &name), ("actor", &actor.name)]);
        self.account_change(&message, actor, "user_passwd", &format!("user {name}"), "").await?;
        Ok(user)
    }

    /// Removes a user and the user's sessions.
    pub async fn remove_user(&self, name: &str, actor: &Actor) -> Result<UserRecord, EngineError> {
        let user = self
            .store()
            .user_by_name(name)
            .await?
            .ok_or_else(|| unknown_user(StoreError::NotFound { what: name.to_string() }, name))?;
        self.store().remove_user(name).await.map_err(|e| unknown_user(e, name))?;
        let message = EngineError::message_ref(&messages::USER_REMOVED, &[("user", &name), ("actor", &actor.name)]);
        self.account_change(&message, actor, "user_remove", &format!("user {name}"), "").await?;
        Ok(user)
    }

    /// Records a sign-in, a failed sign-in or a sign-out (message and audit row).
    pub async fn record_sign_in(&self, message: &MessageRef, actor: &Actor, verb: &str) -> Result<(), EngineError> {
        self.account_change(message, actor, verb, &format!("console {}", actor.name), "").await
    }

    async fn account_change(
        &self,
        message: &MessageRef,
        actor: &Actor,
        verb: &str,
        target: &str,
        detail: &str,
    ) -> Result<(), EngineError> {
        self.note(message, None, None).await?;
        self.audit(actor, verb, target, detail).await
    }
}

fn taken(error: StoreError, what: &str, name: &str) -> EngineError {
    match error {
        StoreError::AlreadyExists { .. } => {
            EngineError::new(ErrorKind::Conflict, &messages::NAME_TAKEN, &[("what", &format!("{what} {name}"))])
        }
        other => other.into(),
    }
}

fn unknown_user(error: StoreError, name: &str) -> EngineError {
    match error {
        StoreError::NotFound { .. } => {
            EngineError::new(ErrorKind::NotFound, &messages::USER_NOT_FOUND, &[("user", &name)])
        }
        other => other.into(),
    }
}
