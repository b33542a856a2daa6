//! Room passwords: Argon2id hashing and verification.
//!
//! A room keeps only the hash, as a PHC string
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), so the parameters and
//! the salt travel with it and a hash made with older parameters still
//! verifies. Every hash gets a fresh 16-byte salt from the operating
//! system's random source.
//!
//! Hashing is deliberately slow and memory-hungry (with the defaults about
//! 19 MiB and tens of milliseconds per call in a release build): run it off
//! the async threads, and bound how many run at once.
//!
//! The comparison of the computed hash with the stored one is constant-time:
//! the `argon2` crate compares the outputs through the `phc` crate's
//! `Output`, whose equality is a constant-time comparison (`ctutils`). This
//! module adds no comparison of its own.

use argon2::{
    ARGON2ID_IDENT, Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version,
};
use std::fmt;

/// The salt length, in bytes (the length RFC 9106 recommends).
const SALT_LEN: usize = 16;

/// The most memory a hash may ask for, in KiB (1 GiB). A stored hash with
/// more is refused, so a planted hash cannot make every check allocate
/// gigabytes.
pub const MAX_MEMORY_KIB: u32 = 1024 * 1024;
/// The most passes a hash may ask for.
pub const MAX_ITERATIONS: u32 = 64;
/// The most lanes a hash may ask for.
pub const MAX_PARALLELISM: u32 = 64;

/// The Argon2id cost of new password hashes.
///
/// The default is OWASP's recommendation for Argon2id: 19 MiB of memory, 2
/// iterations, 1 lane. (Lanes are computed one after the other here: more
/// lanes change the hash, not the speed.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory per hash, in KiB (at least 8 × `parallelism`).
    pub memory_kib: u32,
    /// Passes over the memory (at least 1).
    pub iterations: u32,
    /// Lanes (at least 1).
    pub parallelism: u32,
}

impl Default for PasswordParams {
    fn default() -> Self {
        PasswordParams {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl PasswordParams {
    /// Checks that Argon2 accepts these parameters and that they are within
    /// [`MAX_MEMORY_KIB`], [`MAX_ITERATIONS`] and [`MAX_PARALLELISM`].
    pub fn validate(&self) -> Result<(), PasswordError> {
        self.argon2_params().map(|_| ())
    }

    fn argon2_params(&self) -> Result<Params, PasswordError> {
        within_caps(self.memory_kib, self.iterations, self.parallelism)
            .map_err(PasswordError::InvalidParams)?;
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| PasswordError::InvalidParams(e.to_string()))
    }
}

fn within_caps(memory_kib: u32, iterations: u32, parallelism: u32) -> Result<(), String> {
    if memory_kib > MAX_MEMORY_KIB {
        return Err(format!("memory_kib {memory_kib} is over {MAX_MEMORY_KIB}"));
    }
    if iterations > MAX_ITERATIONS {
        return Err(format!("iterations {iterations} is over {MAX_ITERATIONS}"));
    }
    if parallelism > MAX_PARALLELISM {
        return Err(format!(
            "parallelism {parallelism} is over {MAX_PARALLELISM}"
        ));
    }
    Ok(())
}

/// An Argon2id password hash in PHC string form.
///
/// `Debug` and `Display` show the algorithm and parameters but redact the
/// salt and the hash, so logging a room's settings never reveals material
/// for an offline guessing attack. [`as_str`](PasswordHash::as_str) gives the
/// whole string, for storing it.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Takes a stored PHC string, checking that it is an Argon2id hash this
    /// module would verify (parameters within the caps).
    pub fn parse(phc: &str) -> Result<Self, PasswordError> {
        parse_argon2id(phc)?;
        Ok(PasswordHash(phc.to_owned()))
    }

    /// The whole PHC string. Store it; never log it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The PHC string, by value.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The part before the salt, e.g. `$argon2id$v=19$m=19456,t=2,p=1`:
    /// the algorithm, then the `v=` and parameter fields (the only fields
    /// with a `=`; the salt and hash are unpadded B64, which has none).
    fn public_part(&self) -> &str {
        let mut end = 0;
        for (i, piece) in self.0.split('$').enumerate() {
            if i > 1 && !piece.contains('=') {
                break;
            }
            end += piece.len() + usize::from(i > 0);
        }
        self.0.get(..end).unwrap_or("")
    }
}

impl AsRef<str> for PasswordHash {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PasswordHash({}$[redacted])", self.public_part())
    }
}

impl fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}$[redacted]", self.public_part())
    }
}

/// Why a password could not be hashed, or a stored hash is unusable. No
/// variant carries a password or a hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// The parameters are not valid Argon2 parameters, or over the caps.
    #[error("invalid password hashing parameters: {0}")]
    InvalidParams(String),
    /// The string is not an Argon2id PHC hash.
    #[error("not an Argon2id password hash")]
    NotAHash,
    /// The operating system's random source failed (no salt).
    #[error("no random salt: the operating system's random source failed")]
    Random,
    /// Argon2 itself failed (e.g. it could not allocate its memory).
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

/// Hashes `password` with Argon2id at `params` and a fresh random salt.
///
/// Slow on purpose (see the module docs): call it from a blocking thread.
pub fn hash_password(
    password: &str,
    params: &PasswordParams,
) -> Result<PasswordHash, PasswordError> {
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.argon2_params()?);
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|_| PasswordError::Random)?;
    let hash = argon2
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| PasswordError::Hashing(e.to_string()))?;
    Ok(PasswordHash(hash.to_string()))
}

/// Whether `candidate` is the password `hash` was made from.
///
/// `hash` is a PHC string ([`PasswordHash`], or a `str`/`Arc<str>` holding
/// one); the parameters and salt in it are used. A string that is not an
/// Argon2id hash within the caps verifies nothing (`false`). The final
/// comparison is constant-time (done by the crate, see the module docs).
/// Slow on purpose: call it from a blocking thread.
pub fn verify_password<H: AsRef<str> + ?Sized>(hash: &H, candidate: &str) -> bool {
    let Ok(parsed) = parse_argon2id(hash.as_ref()) else {
        return false;
    };
    Argon2::default()
        .verify_password(candidate.as_bytes(), &parsed)
        .is_ok()
}

/// Parses a PHC string that must be Argon2id, with a salt and a hash, and
/// parameters within the caps.
fn parse_argon2id(phc: &str) -> Result<argon2::PasswordHash, PasswordError> {
    let parsed = argon2::PasswordHash::new(phc).map_err(|_| PasswordError::NotAHash)?;
    if parsed.algorithm != ARGON2ID_IDENT || parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(PasswordError::NotAHash);
    }
    let params = Params::try_from(&parsed).map_err(|_| PasswordError::NotAHash)?;
    within_caps(params.m_cost(), params.t_cost(), params.p_cost())
        .map_err(PasswordError::InvalidParams)?;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Small parameters keep the many tests fast; one test uses the defaults.
    const FAST: PasswordParams = PasswordParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn defaults_are_owasps() {
        let p = PasswordParams::default();
        assert_eq!(
            (p.memory_kib, p.iterations, p.parallelism),
            (19 * 1024, 2, 1)
        );
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn the_right_password_verifies_and_others_do_not() {
        let hash = hash_password("correct horse", &FAST).expect("hash");
        assert!(hash.as_str().starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "correct horse "));
        assert!(!verify_password(&hash, "Correct horse"));
        assert!(!verify_password(&hash, ""));
        // The lead's types: a str and an Arc<str> holding the PHC string.
        assert!(verify_password(hash.as_str(), "correct horse"));
        let shared: Arc<str> = Arc::from(hash.as_str());
        assert!(verify_password(&shared, "correct horse"));
    }

    #[test]
    fn default_parameters_hash_and_verify() {
        let hash = hash_password("hunter2", &PasswordParams::default()).expect("hash");
        assert!(hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify_password(&hash, "hunter2"));
        assert!(!verify_password(&hash, "hunter3"));
    }

    #[test]
    fn every_hash_has_its_own_salt() {
        let a = hash_password("same", &FAST).expect("hash");
        let b = hash_password("same", &FAST).expect("hash");
        assert_ne!(a, b);
        assert!(verify_password(&a, "same") && verify_password(&b, "same"));
    }

    #[test]
    fn a_hash_keeps_its_own_parameters() {
        let old = hash_password(
            "pw",
            &PasswordParams {
                memory_kib: 128,
                iterations: 2,
                parallelism: 2,
            },
        )
        .expect("hash");
        assert!(old.as_str().contains("m=128,t=2,p=2"));
        assert!(verify_password(&old, "pw"));
        let parsed = PasswordHash::parse(old.as_str()).expect("parses");
        assert_eq!(parsed, old);
        assert!(verify_password(&parsed, "pw"));
    }

    #[test]
    fn debug_and_display_redact_salt_and_hash() {
        let hash = hash_password("pw", &FAST).expect("hash");
        let full = hash.as_str();
        let salt_and_hash = full.rsplitn(3, '$').take(2).collect::<Vec<_>>();
        for shown in [format!("{hash:?}"), format!("{hash}")] {
            assert!(
                shown.contains("$argon2id$v=19$m=64,t=1,p=1$[redacted]"),
                "{shown}"
            );
            for secret in &salt_and_hash {
                assert!(!shown.contains(secret), "{shown} shows {secret}");
            }
        }
        assert_eq!(
            format!("{hash:?}"),
            "PasswordHash($argon2id$v=19$m=64,t=1,p=1$[redacted])"
        );
    }

    #[test]
    fn bad_parameters_are_refused() {
        let too_little = PasswordParams {
            memory_kib: 7,
            ..FAST
        };
        assert!(matches!(
            too_little.validate(),
            Err(PasswordError::InvalidParams(_))
        ));
        assert!(matches!(
            hash_password("pw", &too_little),
            Err(PasswordError::InvalidParams(_))
        ));
        let no_passes = PasswordParams {
            iterations: 0,
            ..FAST
        };
        assert!(no_passes.validate().is_err());
        let no_lanes = PasswordParams {
            parallelism: 0,
            ..FAST
        };
        assert!(no_lanes.validate().is_err());
        // At the caps: the cap passes validation, one over does not.
        let at_cap = PasswordParams {
            memory_kib: MAX_MEMORY_KIB,
            iterations: MAX_ITERATIONS,
            parallelism: MAX_PARALLELISM,
        };
        assert_eq!(at_cap.validate(), Ok(()));
        for over in [
            PasswordParams {
                memory_kib: MAX_MEMORY_KIB + 1,
                ..at_cap
            },
            PasswordParams {
                iterations: MAX_ITERATIONS + 1,
                ..at_cap
            },
            PasswordParams {
                parallelism: MAX_PARALLELISM + 1,
                ..at_cap
            },
        ] {
            assert!(
                matches!(over.validate(), Err(PasswordError::InvalidParams(_))),
                "{over:?}"
            );
        }
    }

    #[test]
    fn strings_that_are_not_our_hashes_verify_nothing() {
        let good = hash_password("pw", &FAST).expect("hash");
        let argon2i = good.as_str().replacen("$argon2id$", "$argon2i$", 1);
        let huge = good.as_str().replacen("m=64", "m=4194304", 1);
        let (no_hash, _) = good.as_str().rsplit_once('$').expect("has fields");
        for bad in [
            "",
            "pw",
            "$argon2id$",
            "$2b$12$abcdefghijklmnopqrstuuVCrTr9sS0v3Yy0fAZrw1zrjO1J9pXi",
            argon2i.as_str(),
            huge.as_str(),
            no_hash,
        ] {
            assert!(!verify_password(bad, "pw"), "{bad}");
            assert!(PasswordHash::parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            PasswordHash::parse(&huge),
            Err(PasswordError::InvalidParams(_))
        ));
    }
}
