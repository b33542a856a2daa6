//! API keys: the shared secrets a client presents in its hello when the
//! server requires one.
//!
//! Only SHA-256 digests of the configured keys are kept in memory. A
//! presented key is digested and compared with **every** configured digest
//! using `subtle`'s constant-time equality, without stopping at a match, so
//! the time a check takes tells nothing about which bytes (or which key)
//! matched. Comparing fixed-size digests also hides the keys' lengths. What
//! timing still shows is the number of configured keys and the length of the
//! presented key, neither of which is secret.

use chorus_protocol::ErrorCode;
use ring::digest::{SHA256, SHA256_OUTPUT_LEN, digest};
use std::fmt;
use subtle::{Choice, ConstantTimeEq};

/// The set of API keys a server accepts; any one of them lets a client in.
///
/// An empty set means no key is required. An empty string among the
/// configured keys still makes a key required but never matches anything
/// (an empty key is refused outright), so a blank entry in a configuration
/// fails closed. `Debug` prints only how many keys there are.
#[derive(Clone, Default)]
pub struct ApiKeys {
    digests: Vec<[u8; SHA256_OUTPUT_LEN]>,
}

/// Why a presented API key was refused. Both map to
/// [`ErrorCode::Unauthorized`]; neither carries the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    /// The server requires an API key and the hello carried none.
    #[error("this server requires an API key")]
    Missing,
    /// The presented key is not one of the configured keys.
    #[error("the API key is not valid")]
    Wrong,
}

impl ApiKeyError {
    /// The error code to send the client.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::Unauthorized
    }
}

impl ApiKeys {
    /// The set of `keys` (digested right away; the strings are not kept).
    pub fn new<I, S>(keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let digests = keys.into_iter().map(|k| sha256(k.as_ref())).collect();
        ApiKeys { digests }
    }

    /// Whether clients must present a key.
    pub fn is_required(&self) -> bool {
        !self.digests.is_empty()
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether no key is configured (then none is required).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Checks the key a client presented (`None`: the hello had none).
    ///
    /// With no configured keys every client passes, with or without a key.
    /// Otherwise the presented key must equal one of them; the comparison is
    /// constant-time over all configured keys (see the module docs).
    pub fn check(&self, presented: Option<&str>) -> Result<(), ApiKeyError> {
        if self.digests.is_empty() {
            return Ok(());
        }
        let presented = presented.ok_or(ApiKeyError::Missing)?;
        let candidate = sha256(presented);
        let mut matched = Choice::from(0);
        for configured in &self.digests {
            matched |= configured.ct_eq(&candidate);
        }
        // An empty key is never valid, even if one is (mis)configured.
        let non_empty = Choice::from(u8::from(!presented.is_empty()));
        if bool::from(matched & non_empty) {
            Ok(())
        } else {
            Err(ApiKeyError::Wrong)
        }
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeys([{} redacted])", self.digests.len())
    }
}

fn sha256(key: &str) -> [u8; SHA256_OUTPUT_LEN] {
    let mut out = [0u8; SHA256_OUTPUT_LEN];
    out.copy_from_slice(digest(&SHA256, key.as_bytes()).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_keys_means_no_key_required() {
        let keys = ApiKeys::new(Vec::<String>::new());
        assert!(!keys.is_required());
        assert!(keys.is_empty());
        assert_eq!(keys.check(None), Ok(()));
        assert_eq!(keys.check(Some("anything")), Ok(()));
        assert_eq!(ApiKeys::default().check(None), Ok(()));
    }

    #[test]
    fn any_configured_key_passes_and_others_do_not() {
        let keys = ApiKeys::new(["alpha-key-1", "beta-key-2"]);
        assert!(keys.is_required());
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.check(Some("alpha-key-1")), Ok(()));
        assert_eq!(keys.check(Some("beta-key-2")), Ok(()));
        assert_eq!(keys.check(None), Err(ApiKeyError::Missing));
        assert_eq!(keys.check(Some("")), Err(ApiKeyError::Wrong));
        assert_eq!(keys.check(Some("alpha-key-")), Err(ApiKeyError::Wrong));
        assert_eq!(keys.check(Some("alpha-key-11")), Err(ApiKeyError::Wrong));
        assert_eq!(keys.check(Some("ALPHA-KEY-1")), Err(ApiKeyError::Wrong));
        assert_eq!(keys.check(Some("alpha-key-1 ")), Err(ApiKeyError::Wrong));
    }

    #[test]
    fn a_blank_configured_key_fails_closed() {
        let keys = ApiKeys::new([""]);
        assert!(keys.is_required());
        assert_eq!(keys.check(None), Err(ApiKeyError::Missing));
        assert_eq!(keys.check(Some("")), Err(ApiKeyError::Wrong));
        assert_eq!(keys.check(Some("x")), Err(ApiKeyError::Wrong));
    }

    #[test]
    fn errors_map_to_unauthorized_and_debug_redacts() {
        assert_eq!(ApiKeyError::Missing.code(), ErrorCode::Unauthorized);
        assert_eq!(ApiKeyError::Wrong.code(), ErrorCode::Unauthorized);
        let keys = ApiKeys::new(["super-secret-key"]);
        let shown = format!("{keys:?}");
        assert_eq!(shown, "ApiKeys([1 redacted])");
        assert!(!shown.contains("super"));
        assert!(!ApiKeyError::Wrong.to_string().contains("super"));
    }
}
