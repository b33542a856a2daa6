//! Access-control primitives: join tokens, room passwords, API keys, rate
//! budgets, the per-address abuse guard and invite codes.
//!
//! Each piece is a small sans-IO building block that the session and the room
//! shell call; none of them decides a room rule (roles, kicks, who may set a
//! password: that is `core/`). Time always comes in as an argument (an
//! [`Instant`](std::time::Instant) or Unix seconds), so every rule here is
//! tested deterministically at its limit, without sleeping.
//!
//! - [`tokens`]: verifies signed join tokens (JWT, HS256 or ES256) into [`JoinClaims`](tokens::JoinClaims).
//! - [`password`]: hashes and verifies room passwords with Argon2id (PHC strings).
//! - [`api_key`]: checks the API key a client presents in its hello, in constant time.
//! - [`rate`]: per-session token buckets for the announced `RateLimits`, and the
//!   violation counter that disconnects a client who keeps going past them.
//! - [`guard`]: the server-wide, per-address limits: connections, new
//!   connections and joins per minute, wrong-password and unknown-room blocks
//!   (kick bans are per room, in `core/`).
//! - [`invite`]: random, unambiguous 8-character invite codes.
//!
//! This module must not do I/O, read a clock, spawn tasks or depend on tokio.
//! It must never log, print or put into an error a password, token, key or
//! secret: such values travel through the server as [`Secret`], whose `Debug`
//! and `Display` print `[redacted]`. Argon2 hashing is slow on purpose (tens of
//! milliseconds); callers run it off the async threads.

pub mod api_key;
pub mod guard;
pub mod invite;
pub mod password;
pub mod rate;
pub mod tokens;

use std::fmt;
use std::time::Duration;

/// `d` in whole milliseconds, rounded up and saturating: the value for
/// `ErrorDetail::RetryAfter { retry_after_ms }`, so a client that waits that
/// long is not refused again for the same budget (a rate bucket's or a
/// block's retry-after can be a few nanoseconds).
pub fn retry_after_ms(d: Duration) -> u64 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// A password, token or key on its way through the server.
///
/// `Debug` and `Display` print `[redacted]`, so a `Secret` inside a logged
/// struct or an error message never shows its value; read it with
/// [`Secret::expose`] only where it is checked. There is deliberately no
/// `PartialEq`: compare secrets with the constant-time checks of this module.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the code that checks it. Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Unwraps the secret, e.g. to move it into a blocking hashing job.
    pub fn into_inner(self) -> String {
        self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Its length in bytes (lengths are checked against `Limits`; the length
    /// is not considered secret).
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some([redacted])");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(s.len(), 7);
        assert!(!s.is_empty());
        assert_eq!(s.into_inner(), "hunter2");
        assert!(Secret::default().is_empty());
    }
}
