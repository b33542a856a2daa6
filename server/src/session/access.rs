//! The server-wide access-control state sessions consult: API keys, the join
//! token verifier, password hashing, and the per-address abuse guard.
//!
//! This module wires the primitives of [`crate::access`] together for the
//! session; it holds no room rules (the room core decides roles, bans and
//! passwords per room) and never logs a secret.

use crate::access::api_key::ApiKeys;
use crate::access::guard::{AbuseConfig, AbuseGuard};
use crate::access::password::{PasswordParams, hash_password, verify_password};
use crate::access::tokens::{JoinTokenVerifier, TokenConfig};
use crate::core::PasswordHashString;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Access-control settings of a server.
#[derive(Clone, Default)]
pub struct AccessSettings {
    /// Keys a client must present in its hello (any one of them); empty: none needed.
    pub api_keys: Vec<String>,
    /// How join tokens are verified; with neither key set, tokens are refused.
    pub tokens: TokenConfig,
    /// Refuse joins that carry no token.
    pub require_join_token: bool,
    /// Argon2id cost of room passwords.
    pub password: PasswordParams,
    /// Per-address limits, brute-force blocks and the kick ban time.
    pub abuse: AbuseConfig,
}

impl std::fmt::Debug for AccessSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessSettings")
            .field(
                "api_keys",
                &format_args!("[{} redacted]", self.api_keys.len()),
            )
            .field("tokens", &self.tokens)
            .field("require_join_token", &self.require_join_token)
            .field("password", &self.password)
            .field("abuse", &self.abuse)
            .finish()
    }
}

/// The running form of [`AccessSettings`].
#[derive(Debug)]
pub struct AccessControl {
    pub api_keys: ApiKeys,
    pub tokens: JoinTokenVerifier,
    pub require_join_token: bool,
    pub password: PasswordParams,
    pub guard: AbuseGuard,
    /// Password hashing is slow on purpose; at most one job per core runs at
    /// once, so a flood of joins cannot take every blocking thread.
    hashing: Semaphore,
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AccessSettingError(pub String);

impl AccessControl {
    pub fn new(settings: &AccessSettings) -> Result<Self, AccessSettingError> {
        let tokens = JoinTokenVerifier::new(&settings.tokens)
            .map_err(|e| AccessSettingError(format!("join token key: {e}")))?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(AccessControl {
            api_keys: ApiKeys::new(settings.api_keys.iter().map(String::as_str)),
            tokens,
            require_join_token: settings.require_join_token,
            password: settings.password,
            guard: AbuseGuard::new(settings.abuse.clone()),
            hashing: Semaphore::new(cores),
        })
    }

    /// Hashes a new room password off the async threads.
    pub async fn hash(&self, password: String) -> Option<PasswordHashString> {
        let _slot = self.hashing.acquire().await.ok()?;
        let params = self.password;
        let hash = tokio::task::spawn_blocking(move || hash_password(&password, &params))
            .await
            .ok()?
            .ok()?;
        Some(PasswordHashString(Arc::from(hash.as_str())))
    }

    /// Checks a password against a room's hash off the async threads.
    pub async fn verify(&self, hash: &PasswordHashString, candidate: String) -> bool {
        let Ok(_slot) = self.hashing.acquire().await else {
            return false;
        };
        let hash = hash.0.clone();
        tokio::task::spawn_blocking(move || verify_password(&hash, &candidate))
            .await
            .unwrap_or(false)
    }
}
