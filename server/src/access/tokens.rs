//! Join tokens: JWTs an application's backend signs to let someone into a
//! room with a role.
//!
//! A token is verified with the `jsonwebtoken` crate (signatures by `ring`);
//! this module only picks the key for the token's `alg`, then checks the
//! claims against the time and room it is given. Accepted algorithms are
//! HS256 (a shared secret of at least 32 bytes) and ES256 (a P-256 public key
//! in PEM), each only when its key is configured. `none` and every other
//! algorithm are refused before any signature work, which also rules out
//! key-confusion tricks (an HS256 token "signed" with the public key).
//!
//! Claims:
//!
//! | claim  | required | meaning |
//! |--------|----------|---------|
//! | `exp`  | yes | Unix seconds; the token is refused from `exp + leeway` on |
//! | `nbf`  | no  | Unix seconds; refused before `nbf - leeway` |
//! | `room` | yes | the room id, or `"*"` for any room |
//! | `role` | yes | `host`, `editor` or `viewer` (also `leader`, `owner`, `participant`, `follower`) |
//! | `sub`  | no  | the member's identity (1–64 bytes), used for bans |
//! | `name` | no  | a display name (1–64 bytes) |
//!
//! Other claims (`iat`, `iss`, `aud`, ...) are ignored. Errors never contain
//! the token, a claim's value or a key.

use chorus_protocol::{ErrorCode, Role};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::fmt;

/// The leeway [`TokenConfig::default`] allows for clock differences.
pub const DEFAULT_LEEWAY_SECS: u64 = 60;
/// The shortest HS256 secret accepted: 32 bytes, the hash size (RFC 7518 §3.2).
pub const MIN_HS256_SECRET_LEN: usize = 32;
/// Longer tokens are refused as malformed before any decoding.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// The longest `sub` claim, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 64;
/// The longest `name` claim, in bytes (the protocol's default `max_name_len`).
pub const MAX_NAME_BYTES: usize = 64;

/// How join tokens are verified. With neither key set, every token is refused
/// with [`TokenError::NotConfigured`].
///
/// `Debug` redacts the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// The HS256 shared secret (raw bytes, at least [`MIN_HS256_SECRET_LEN`]).
    pub hs256_secret: Option<Vec<u8>>,
    /// The ES256 public key: a P-256 `PUBLIC KEY` (SubjectPublicKeyInfo) PEM.
    pub es256_public_key_pem: Option<Vec<u8>>,
    /// Seconds of clock difference tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            hs256_secret: None,
            es256_public_key_pem: None,
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }
}

impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenConfig")
            .field(
                "hs256_secret",
                &self
                    .hs256_secret
                    .as_ref()
                    .map(|_| format_args!("[redacted]")),
            )
            .field(
                "es256_public_key_pem",
                &self
                    .es256_public_key_pem
                    .as_ref()
                    .map(|pem| format!("[{} bytes]", pem.len())),
            )
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// A [`TokenConfig`] that cannot be used. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenConfigError {
    /// The HS256 secret is shorter than [`MIN_HS256_SECRET_LEN`].
    #[error("the HS256 secret is {len} bytes; it must be at least {min}")]
    Hs256SecretTooShort {
        /// The secret's length, in bytes.
        len: usize,
        /// The shortest accepted, [`MIN_HS256_SECRET_LEN`].
        min: usize,
    },
    /// The ES256 key is not a P-256 public key in PEM.
    #[error("the ES256 key is not a P-256 public key (PEM, BEGIN PUBLIC KEY)")]
    Es256KeyInvalid,
}

/// What a valid join token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinClaims {
    /// The room the token names: the room id, or `"*"` for any room.
    pub room: String,
    /// The role the member gets.
    pub role: Role,
    /// The member's identity, if the token names one (≤ 64 bytes).
    pub sub: Option<String>,
    /// When the token expires, in Unix seconds (a session may be closed then).
    pub exp: u64,
    /// A display name, if the token gives one.
    pub name: Option<String>,
}

/// Why a join token was refused. Messages name the rule, never the token,
/// a claim's value or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The server has no token key configured.
    #[error("this server does not accept join tokens")]
    NotConfigured,
    /// Not a JWT: wrong shape, bad encoding, not JSON, or too long.
    #[error("the join token is malformed")]
    Malformed,
    /// The token's `alg` is `none`, unknown, or not configured on this server.
    #[error("the join token's algorithm is not accepted")]
    UnsupportedAlgorithm,
    /// The signature does not verify with the configured key.
    #[error("the join token's signature is not valid")]
    BadSignature,
    /// The token expired (`at` is its `exp`, in Unix seconds).
    #[error("the join token expired at {at} (Unix seconds)")]
    Expired {
        /// The token's `exp`, in Unix seconds.
        at: u64,
    },
    /// The token's `nbf` is still in the future.
    #[error("the join token is not valid yet")]
    NotYetValid,
    /// The token is for another room.
    #[error("the join token is for another room")]
    WrongRoom,
    /// A claim is missing or has the wrong type or size; the text names the claim.
    #[error("the join token has a bad claim: {0}")]
    BadClaim(String),
}

impl TokenError {
    /// The error code to send the client: [`ErrorCode::TokenExpired`] for an
    /// expired token, [`ErrorCode::InvalidToken`] for everything else.
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::Expired { .. } => ErrorCode::TokenExpired,
            _ => ErrorCode::InvalidToken,
        }
    }
}

/// Verifies join tokens with the keys of a [`TokenConfig`].
///
/// `Debug` shows which algorithms are configured, never a key.
pub struct JoinTokenVerifier {
    hs256: Option<DecodingKey>,
    es256: Option<DecodingKey>,
    leeway_secs: u64,
}

impl fmt::Debug for JoinTokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinTokenVerifier")
            .field("hs256", &self.hs256.is_some())
            .field("es256", &self.es256.is_some())
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// The fixed start of a P-256 SubjectPublicKeyInfo in DER: SEQUENCE,
/// AlgorithmIdentifier (id-ecPublicKey, prime256v1), BIT STRING of 66 bytes
/// holding an uncompressed point (0x04 then 64 bytes).
const P256_SPKI_PREFIX: [u8; 27] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04,
];
const P256_SPKI_LEN: usize = 91;

impl JoinTokenVerifier {
    /// A verifier for `config`'s keys. Refuses a short HS256 secret and an
    /// ES256 key that is not a P-256 public key, so a bad key is a start-up
    /// error rather than every token failing later.
    pub fn new(config: &TokenConfig) -> Result<Self, TokenConfigError> {
        let hs256 = match &config.hs256_secret {
            Some(secret) if secret.len() < MIN_HS256_SECRET_LEN => {
                return Err(TokenConfigError::Hs256SecretTooShort {
                    len: secret.len(),
                    min: MIN_HS256_SECRET_LEN,
                });
            }
            Some(secret) => Some(DecodingKey::from_secret(secret)),
            None => None,
        };
        let es256 = match &config.es256_public_key_pem {
            Some(pem) => {
                if !is_p256_public_key_pem(pem) {
                    return Err(TokenConfigError::Es256KeyInvalid);
                }
                Some(DecodingKey::from_ec_pem(pem).map_err(|_| TokenConfigError::Es256KeyInvalid)?)
            }
            None => None,
        };
        Ok(JoinTokenVerifier {
            hs256,
            es256,
            leeway_secs: config.leeway_secs,
        })
    }

    /// Whether any key is configured (otherwise every token is refused).
    pub fn is_configured(&self) -> bool {
        self.hs256.is_some() || self.es256.is_some()
    }

    /// Verifies `token` for a join of `room_id` at `now_unix_secs`.
    ///
    /// Checks, in order: a key is configured; the token's shape and size; its
    /// `alg` is configured; the signature; the claims' types; `exp` (refused
    /// from `exp + leeway` on); `nbf` (refused before `nbf - leeway`); `room`
    /// is `room_id` or `"*"`; `role`, `sub` and `name`.
    pub fn verify(
        &self,
        token: &str,
        room_id: &str,
        now_unix_secs: u64,
    ) -> Result<JoinClaims, TokenError> {
        if !self.is_configured() {
            return Err(TokenError::NotConfigured);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let (alg, key) = match header_alg(token)?.as_str() {
            "HS256" => (Algorithm::HS256, self.hs256.as_ref()),
            "ES256" => (Algorithm::ES256, self.es256.as_ref()),
            _ => (Algorithm::HS256, None),
        };
        let key = key.ok_or(TokenError::UnsupportedAlgorithm)?;

        // jsonwebtoken checks the alg and the signature; the time and claim
        // rules are ours (it would read the system clock for `exp`).
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey | ErrorKind::Crypto(_) => {
                    TokenError::BadSignature
                }
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenError::UnsupportedAlgorithm
                }
                _ => TokenError::Malformed,
            })?
            .claims;

        let exp = numeric_date(&claims, "exp")?
            .ok_or_else(|| TokenError::BadClaim("exp is required".into()))?;
        let nbf = numeric_date(&claims, "nbf")?;
        if now_unix_secs >= exp.saturating_add(self.leeway_secs) {
            return Err(TokenError::Expired { at: exp });
        }
        if nbf.is_some_and(|nbf| nbf > now_unix_secs.saturating_add(self.leeway_secs)) {
            return Err(TokenError::NotYetValid);
        }

        let room = string_claim(&claims, "room", usize::MAX)?
            .ok_or_else(|| TokenError::BadClaim("room is required".into()))?;
        if room != "*" && room != room_id {
            return Err(TokenError::WrongRoom);
        }
        let role = string_claim(&claims, "role", usize::MAX)?
            .ok_or_else(|| TokenError::BadClaim("role is required".into()))?;
        let role = Role::from_name(&role)
            .ok_or_else(|| TokenError::BadClaim("role must be host, editor or viewer".into()))?;
        let sub = string_claim(&claims, "sub", MAX_SUBJECT_BYTES)?;
        let name = string_claim(&claims, "name", MAX_NAME_BYTES)?;
        Ok(JoinClaims {
            room,
            role,
            sub,
            exp,
            name,
        })
    }
}

/// The `alg` of a token's header, read without trusting anything else in it.
fn header_alg(token: &str) -> Result<String, TokenError> {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    struct Header {
        alg: String,
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    let header: Header = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    Ok(header.alg)
}

/// A NumericDate claim: a non-negative number of seconds (a fraction is
/// dropped). `Ok(None)` when absent.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, TokenError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    if let Some(secs) = value.as_u64() {
        return Ok(Some(secs));
    }
    match value.as_f64() {
        // `as` saturates; a NumericDate past u64 is "never" anyway.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(secs) if secs.is_finite() && secs >= 0.0 => Ok(Some(secs as u64)),
        _ => Err(TokenError::BadClaim(format!(
            "{name} must be a non-negative number of seconds"
        ))),
    }
}

/// A string claim of 1 to `max_len` bytes without control characters.
/// `Ok(None)` when absent.
fn string_claim(
    claims: &Map<String, Value>,
    name: &str,
    max_len: usize,
) -> Result<Option<String>, TokenError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let Some(s) = value.as_str() else {
        return Err(TokenError::BadClaim(format!("{name} must be a string")));
    };
    if s.is_empty() || s.len() > max_len {
        return Err(TokenError::BadClaim(if max_len == usize::MAX {
            format!("{name} must not be empty")
        } else {
            format!("{name} must be 1 to {max_len} bytes")
        }));
    }
    if s.chars().any(char::is_control) {
        return Err(TokenError::BadClaim(format!(
            "{name} must not contain control characters"
        )));
    }
    Ok(Some(s.to_owned()))
}

/// Whether `pem` holds exactly one `PUBLIC KEY` block whose DER is a P-256
/// SubjectPublicKeyInfo (checked here because `jsonwebtoken` accepts any EC
/// curve's key and would then fail every ES256 signature).
fn is_p256_public_key_pem(pem: &[u8]) -> bool {
    use base64::Engine as _;
    let Ok(text) = std::str::from_utf8(pem) else {
        return false;
    };
    let Some((_, rest)) = text.split_once("-----BEGIN PUBLIC KEY-----") else {
        return false;
    };
    let Some((body, _)) = rest.split_once("-----END PUBLIC KEY-----") else {
        return false;
    };
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) else {
        return false;
    };
    der.len() == P256_SPKI_LEN && der.starts_with(&P256_SPKI_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";
    const NOW: u64 = 1_700_000_000;

    fn hs_verifier(leeway_secs: u64) -> JoinTokenVerifier {
        JoinTokenVerifier::new(&TokenConfig {
            hs256_secret: Some(SECRET.to_vec()),
            es256_public_key_pem: None,
            leeway_secs,
        })
        .expect("valid config")
    }

    fn sign_hs(claims: &Value, secret: &[u8]) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .expect("sign")
    }

    fn hs(claims: Value) -> String {
        sign_hs(&claims, SECRET)
    }

    fn base_claims() -> Value {
        json!({ "exp": NOW + 3600, "room": "lobby", "role": "editor" })
    }

    fn with(mut claims: Value, key: &str, value: Value) -> Value {
        claims[key] = value;
        claims
    }

    fn without(mut claims: Value, key: &str) -> Value {
        if let Some(map) = claims.as_object_mut() {
            map.remove(key);
        }
        claims
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    struct EcKeys {
        private_pem: String,
        public_pem: String,
    }

    fn ec_keys(alg: &'static rcgen::SignatureAlgorithm) -> EcKeys {
        let pair = rcgen::KeyPair::generate_for(alg).expect("generate key");
        EcKeys {
            private_pem: pair.serialize_pem(),
            public_pem: pair.public_key_pem(),
        }
    }

    fn es_verifier(public_pem: &str) -> JoinTokenVerifier {
        JoinTokenVerifier::new(&TokenConfig {
            hs256_secret: None,
            es256_public_key_pem: Some(public_pem.as_bytes().to_vec()),
            leeway_secs: 0,
        })
        .expect("valid ES256 config")
    }

    fn sign_es(claims: &Value, private_pem: &str) -> String {
        encode(
            &Header::new(Algorithm::ES256),
            claims,
            &EncodingKey::from_ec_pem(private_pem.as_bytes()).expect("EC private key"),
        )
        .expect("sign")
    }

    #[test]
    fn a_valid_hs256_token_gives_its_claims() {
        let v = hs_verifier(60);
        let claims = with(
            with(base_claims(), "sub", json!("user-42")),
            "name",
            json!("Ada"),
        );
        let got = v.verify(&hs(claims), "lobby", NOW).expect("valid");
        assert_eq!(
            got,
            JoinClaims {
                room: "lobby".into(),
                role: Role::Editor,
                sub: Some("user-42".into()),
                exp: NOW + 3600,
                name: Some("Ada".into()),
            }
        );
        // Optional claims may be absent; unknown claims are ignored.
        let minimal = with(with(base_claims(), "iat", json!(NOW)), "aud", json!("x"));
        let got = v.verify(&hs(minimal), "lobby", NOW).expect("valid");
        assert_eq!((got.sub, got.name), (None, None));
    }

    #[test]
    fn roles_and_their_aliases() {
        let v = hs_verifier(0);
        for (name, role) in [
            ("host", Role::Host),
            ("leader", Role::Host),
            ("owner", Role::Host),
            ("editor", Role::Editor),
            ("participant", Role::Editor),
            ("viewer", Role::Viewer),
            ("follower", Role::Viewer),
        ] {
            let token = hs(with(base_claims(), "role", json!(name)));
            assert_eq!(
                v.verify(&token, "lobby", NOW).expect(name).role,
                role,
                "{name}"
            );
        }
        for bad in [
            json!("admin"),
            json!("Host"),
            json!(""),
            json!(2),
            json!(null),
        ] {
            let token = hs(with(base_claims(), "role", bad.clone()));
            assert!(
                matches!(v.verify(&token, "lobby", NOW), Err(TokenError::BadClaim(_))),
                "{bad}"
            );
        }
        let token = hs(without(base_claims(), "role"));
        assert_eq!(
            v.verify(&token, "lobby", NOW),
            Err(TokenError::BadClaim("role is required".into()))
        );
    }

    #[test]
    fn room_must_match_or_be_a_wildcard() {
        let v = hs_verifier(0);
        let token = hs(base_claims());
        assert_eq!(v.verify(&token, "other", NOW), Err(TokenError::WrongRoom));
        assert_eq!(v.verify(&token, "Lobby", NOW), Err(TokenError::WrongRoom));
        assert_eq!(v.verify(&token, "", NOW), Err(TokenError::WrongRoom));
        let any = hs(with(base_claims(), "room", json!("*")));
        for room in ["lobby", "other", "K7QX2MPA"] {
            assert_eq!(v.verify(&any, room, NOW).expect(room).room, "*");
        }
        for bad in [json!(""), json!(7), json!(["lobby"])] {
            let token = hs(with(base_claims(), "room", bad.clone()));
            assert!(
                matches!(v.verify(&token, "lobby", NOW), Err(TokenError::BadClaim(_))),
                "{bad}"
            );
        }
        let token = hs(without(base_claims(), "room"));
        assert_eq!(
            v.verify(&token, "lobby", NOW),
            Err(TokenError::BadClaim("room is required".into()))
        );
    }

    #[test]
    fn expiry_at_the_limit_with_and_without_leeway() {
        let exp = NOW;
        let token = hs(with(base_claims(), "exp", json!(exp)));
        // No leeway: valid through exp - 1, expired at exp.
        let strict = hs_verifier(0);
        assert!(strict.verify(&token, "lobby", exp - 1).is_ok());
        assert_eq!(
            strict.verify(&token, "lobby", exp),
            Err(TokenError::Expired { at: exp })
        );
        // 60 s leeway: valid through exp + 59, expired at exp + 60.
        let lenient = hs_verifier(60);
        assert!(lenient.verify(&token, "lobby", exp + 59).is_ok());
        assert_eq!(
            lenient.verify(&token, "lobby", exp + 60),
            Err(TokenError::Expired { at: exp })
        );
        // Expiry is checked before the room: an expired token says so.
        assert_eq!(
            strict.verify(&token, "other", exp),
            Err(TokenError::Expired { at: exp })
        );
        // A huge exp does not overflow.
        let forever = hs(with(base_claims(), "exp", json!(u64::MAX)));
        assert!(lenient.verify(&forever, "lobby", NOW).is_ok());
        // A fractional NumericDate is accepted, the fraction dropped.
        let frac = hs(with(base_claims(), "exp", json!(NOW as f64 + 0.5)));
        assert_eq!(
            strict
                .verify(&frac, "lobby", NOW - 1)
                .expect("fraction")
                .exp,
            NOW
        );
    }

    #[test]
    fn not_before_at_the_limit() {
        let nbf = NOW;
        let token = hs(with(base_claims(), "nbf", json!(nbf)));
        let strict = hs_verifier(0);
        assert_eq!(
            strict.verify(&token, "lobby", nbf - 1),
            Err(TokenError::NotYetValid)
        );
        assert!(strict.verify(&token, "lobby", nbf).is_ok());
        let lenient = hs_verifier(60);
        assert_eq!(
            lenient.verify(&token, "lobby", nbf - 61),
            Err(TokenError::NotYetValid)
        );
        assert!(lenient.verify(&token, "lobby", nbf - 60).is_ok());
    }

    #[test]
    fn exp_is_required_and_times_must_be_numbers() {
        let v = hs_verifier(0);
        let token = hs(without(base_claims(), "exp"));
        assert_eq!(
            v.verify(&token, "lobby", NOW),
            Err(TokenError::BadClaim("exp is required".into()))
        );
        for (claim, bad) in [
            ("exp", json!("tomorrow")),
            ("exp", json!(-5)),
            ("exp", json!(null)),
            ("nbf", json!("now")),
            ("nbf", json!(-1.5)),
            ("nbf", json!({})),
        ] {
            let token = hs(with(base_claims(), claim, bad.clone()));
            assert!(
                matches!(v.verify(&token, "lobby", NOW), Err(TokenError::BadClaim(ref m)) if m.starts_with(claim)),
                "{claim}: {bad}"
            );
        }
    }

    #[test]
    fn subject_and_name_sizes_at_the_limit() {
        let v = hs_verifier(0);
        for (claim, max) in [("sub", MAX_SUBJECT_BYTES), ("name", MAX_NAME_BYTES)] {
            let at = hs(with(base_claims(), claim, json!("x".repeat(max))));
            assert!(
                v.verify(&at, "lobby", NOW).is_ok(),
                "{claim} of {max} bytes"
            );
            // Bytes, not characters: 32 two-byte characters are 64 bytes.
            let multibyte = hs(with(base_claims(), claim, json!("é".repeat(max / 2))));
            assert!(
                v.verify(&multibyte, "lobby", NOW).is_ok(),
                "{claim} multibyte"
            );
            for bad in [
                json!("x".repeat(max + 1)),
                json!("é".repeat(max / 2 + 1)),
                json!(""),
                json!("line\nbreak"),
                json!(42),
            ] {
                let token = hs(with(base_claims(), claim, bad));
                assert!(
                    matches!(v.verify(&token, "lobby", NOW), Err(TokenError::BadClaim(ref m)) if m.starts_with(claim)),
                    "{claim}"
                );
            }
        }
    }

    #[test]
    fn signatures_must_verify() {
        let v = hs_verifier(0);
        let other_secret = b"another-secret-of-at-least-32-bytes!";
        let forged = sign_hs(&base_claims(), other_secret);
        assert_eq!(
            v.verify(&forged, "lobby", NOW),
            Err(TokenError::BadSignature)
        );

        // Change the payload of a valid token: the signature no longer covers it.
        let token = hs(base_claims());
        let parts: Vec<&str> = token.split('.').collect();
        let elevated = b64(
            json!({ "exp": NOW + 3600, "room": "lobby", "role": "host" })
                .to_string()
                .as_bytes(),
        );
        let tampered = format!("{}.{}.{}", parts[0], elevated, parts[2]);
        assert_eq!(
            v.verify(&tampered, "lobby", NOW),
            Err(TokenError::BadSignature)
        );

        // No signature at all.
        let unsigned = format!("{}.{}.", parts[0], parts[1]);
        assert_eq!(
            v.verify(&unsigned, "lobby", NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn alg_none_and_unconfigured_algorithms_are_refused() {
        let v = hs_verifier(0);
        let payload = b64(base_claims().to_string().as_bytes());
        for header in [
            json!({ "alg": "none", "typ": "JWT" }),
            json!({ "alg": "None" }),
            json!({ "alg": "NONE" }),
            json!({ "alg": "" }),
            json!({ "alg": "HS512" }),
            json!({ "alg": "RS256" }),
            json!({ "alg": "ES256" }),
            json!({ "alg": "EdDSA" }),
        ] {
            let h = b64(header.to_string().as_bytes());
            for sig in ["", "c2ln"] {
                let token = format!("{h}.{payload}.{sig}");
                assert_eq!(
                    v.verify(&token, "lobby", NOW),
                    Err(TokenError::UnsupportedAlgorithm),
                    "{header} sig {sig:?}"
                );
            }
        }
        // A real HS384 token, correctly signed with the right secret: refused.
        let hs384 = encode(
            &Header::new(Algorithm::HS384),
            &base_claims(),
            &EncodingKey::from_secret(SECRET),
        )
        .expect("sign");
        assert_eq!(
            v.verify(&hs384, "lobby", NOW),
            Err(TokenError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn malformed_tokens() {
        let v = hs_verifier(0);
        let good = hs(base_claims());
        let parts: Vec<&str> = good.split('.').collect();
        let not_json = b64(b"not json");
        let array_claims = format!("{}.{}.{}", parts[0], b64(b"[1,2]"), parts[2]);
        for bad in [
            String::new(),
            "abc".into(),
            "a.b".into(),
            format!("{good}.extra"),
            format!("!!.{}.{}", parts[1], parts[2]),
            format!("{not_json}.{}.{}", parts[1], parts[2]),
            format!("{}.{}.{}", b64(b"{\"typ\":\"JWT\"}"), parts[1], parts[2]),
            format!("{}.{}.{}", b64(b"{\"alg\":7}"), parts[1], parts[2]),
            "x".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert_eq!(
                v.verify(&bad, "lobby", NOW),
                Err(TokenError::Malformed),
                "{bad:.40}"
            );
        }
        // The signature is checked before the payload is decoded, so a bad
        // payload or signature under a good header is a bad signature.
        for bad in [
            format!("{}.!!.{}", parts[0], parts[2]),
            format!("{}.{}.!!", parts[0], parts[1]),
            array_claims,
        ] {
            assert_eq!(
                v.verify(&bad, "lobby", NOW),
                Err(TokenError::BadSignature),
                "{bad:.40}"
            );
        }
        // Signed correctly, but the claims are not a JSON object.
        let signed_array = sign_hs(&json!([1, 2]), SECRET);
        assert_eq!(
            v.verify(&signed_array, "lobby", NOW),
            Err(TokenError::Malformed)
        );
        let signed_string = sign_hs(&json!("lobby"), SECRET);
        assert_eq!(
            v.verify(&signed_string, "lobby", NOW),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn es256_tokens_verify_with_the_public_key() {
        let keys = ec_keys(&rcgen::PKCS_ECDSA_P256_SHA256);
        let v = es_verifier(&keys.public_pem);
        let token = sign_es(&base_claims(), &keys.private_pem);
        let got = v.verify(&token, "lobby", NOW).expect("valid ES256");
        assert_eq!(got.role, Role::Editor);

        // Another key pair's signature does not verify.
        let other = ec_keys(&rcgen::PKCS_ECDSA_P256_SHA256);
        let forged = sign_es(&base_claims(), &other.private_pem);
        assert_eq!(
            v.verify(&forged, "lobby", NOW),
            Err(TokenError::BadSignature)
        );

        // Key confusion: an HS256 token whose "secret" is the public key PEM.
        let confused = sign_hs(&base_claims(), keys.public_pem.as_bytes());
        assert_eq!(
            v.verify(&confused, "lobby", NOW),
            Err(TokenError::UnsupportedAlgorithm)
        );

        // Both algorithms configured: each token verifies with its own key.
        let both = JoinTokenVerifier::new(&TokenConfig {
            hs256_secret: Some(SECRET.to_vec()),
            es256_public_key_pem: Some(keys.public_pem.clone().into_bytes()),
            leeway_secs: 0,
        })
        .expect("both");
        assert!(both.verify(&token, "lobby", NOW).is_ok());
        assert!(both.verify(&hs(base_claims()), "lobby", NOW).is_ok());
        assert_eq!(
            both.verify(&confused, "lobby", NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn configuration_is_checked_up_front() {
        let none = JoinTokenVerifier::new(&TokenConfig::default()).expect("empty config");
        assert!(!none.is_configured());
        assert_eq!(
            none.verify(&hs(base_claims()), "lobby", NOW),
            Err(TokenError::NotConfigured)
        );
        assert_eq!(TokenConfig::default().leeway_secs, DEFAULT_LEEWAY_SECS);

        let short = TokenConfig {
            hs256_secret: Some(vec![7; MIN_HS256_SECRET_LEN - 1]),
            ..TokenConfig::default()
        };
        assert_eq!(
            JoinTokenVerifier::new(&short).expect_err("short secret"),
            TokenConfigError::Hs256SecretTooShort { len: 31, min: 32 }
        );
        let exact = TokenConfig {
            hs256_secret: Some(vec![7; MIN_HS256_SECRET_LEN]),
            ..TokenConfig::default()
        };
        assert!(
            JoinTokenVerifier::new(&exact)
                .expect("32 bytes")
                .is_configured()
        );

        let p384 = ec_keys(&rcgen::PKCS_ECDSA_P384_SHA384);
        let ed25519 = ec_keys(&rcgen::PKCS_ED25519);
        let p256 = ec_keys(&rcgen::PKCS_ECDSA_P256_SHA256);
        for bad in [
            p384.public_pem.as_str(),
            ed25519.public_pem.as_str(),
            p256.private_pem.as_str(),
            "",
            "-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----\n",
        ] {
            let config = TokenConfig {
                es256_public_key_pem: Some(bad.as_bytes().to_vec()),
                ..TokenConfig::default()
            };
            assert_eq!(
                JoinTokenVerifier::new(&config).expect_err("not a P-256 public key"),
                TokenConfigError::Es256KeyInvalid,
                "{bad:.60}"
            );
        }
    }

    #[test]
    fn errors_and_debug_never_show_tokens_or_keys() {
        let v = hs_verifier(0);
        let secret_text = String::from_utf8_lossy(SECRET).into_owned();
        let config = TokenConfig {
            hs256_secret: Some(SECRET.to_vec()),
            ..TokenConfig::default()
        };
        let shown = format!("{config:?} {v:?}");
        assert!(!shown.contains(&secret_text), "{shown}");
        assert!(!shown.contains("0123456789"), "{shown}");
        assert!(shown.contains("[redacted]"));

        let sub = "secret-subject-value";
        let tokens = [
            hs(with(base_claims(), "sub", json!(sub))),
            hs(with(
                with(base_claims(), "sub", json!(sub)),
                "exp",
                json!(1),
            )),
            hs(with(
                with(base_claims(), "sub", json!(sub)),
                "role",
                json!("admin-secret"),
            )),
            hs(with(
                base_claims(),
                "sub",
                json!(format!("{sub}{}", "x".repeat(64))),
            )),
        ];
        for token in &tokens {
            for room in ["lobby", "other"] {
                if let Err(e) = v.verify(token, room, NOW) {
                    let text = format!("{e} {e:?}");
                    assert!(!text.contains(token.as_str()), "{text}");
                    assert!(!text.contains(sub), "{text}");
                    assert!(!text.contains("admin-secret"), "{text}");
                    assert!(!text.contains(&secret_text), "{text}");
                }
            }
        }
    }

    #[test]
    fn error_codes() {
        assert_eq!(
            TokenError::Expired { at: 1 }.code(),
            ErrorCode::TokenExpired
        );
        for e in [
            TokenError::NotConfigured,
            TokenError::Malformed,
            TokenError::UnsupportedAlgorithm,
            TokenError::BadSignature,
            TokenError::NotYetValid,
            TokenError::WrongRoom,
            TokenError::BadClaim("x".into()),
        ] {
            assert_eq!(e.code(), ErrorCode::InvalidToken, "{e}");
        }
    }
}
