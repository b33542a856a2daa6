//! Invite codes: short random room ids people can read aloud and type.
//!
//! A code is [`INVITE_CODE_LEN`] characters from [`INVITE_ALPHABET`], which
//! leaves out the look-alikes `0 O 1 I L`: 31⁸ ≈ 8.5 × 10¹¹ codes, about 39
//! bits. Each character comes from the operating system's random source by
//! rejection sampling, so every character is equally likely (no modulo bias).
//! The code is a room's name, not its lock: a room that must stay private
//! also needs a password or join tokens, and the abuse guard blocks addresses
//! that probe many unknown rooms.

/// The characters of an invite code: digits 2–9 and A–Z without I, L and O.
pub const INVITE_ALPHABET: &[u8; 31] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";

/// The length of an invite code, in characters (and bytes).
pub const INVITE_CODE_LEN: usize = 8;

/// The largest multiple of the alphabet's size that fits in a byte (248):
/// random bytes at or above it are thrown away, so `byte % 31` is uniform.
const ACCEPT_BELOW: u8 = (256 / INVITE_ALPHABET.len() * INVITE_ALPHABET.len()) as u8;

/// A fresh random invite code, e.g. `"K7QX2MPA"`.
///
/// # Panics
/// If the operating system's random source fails, which on the supported
/// platforms does not happen once the system has booted. A server cannot
/// make rooms safely without randomness; use [`try_new_invite_code`] to
/// handle the error instead.
pub fn new_invite_code() -> String {
    try_new_invite_code().expect("the operating system's random source failed")
}

/// A fresh random invite code, or the random source's error.
pub fn try_new_invite_code() -> Result<String, getrandom::Error> {
    code_from(getrandom::fill)
}

/// Builds a code from the random bytes `fill` gives, rejecting bytes that
/// would bias the choice.
fn code_from(
    mut fill: impl FnMut(&mut [u8]) -> Result<(), getrandom::Error>,
) -> Result<String, getrandom::Error> {
    let mut code = String::with_capacity(INVITE_CODE_LEN);
    // 8 of 256 byte values are rejected (3%), so one 16-byte batch nearly
    // always suffices.
    let mut buf = [0u8; 16];
    while code.len() < INVITE_CODE_LEN {
        fill(&mut buf)?;
        for &b in &buf {
            if b < ACCEPT_BELOW && code.len() < INVITE_CODE_LEN {
                let i = usize::from(b) % INVITE_ALPHABET.len();
                code.push(char::from(INVITE_ALPHABET[i]));
            }
        }
    }
    Ok(code)
}

/// Whether `s` is an invite code exactly as [`new_invite_code`] makes them:
/// [`INVITE_CODE_LEN`] characters, all from [`INVITE_ALPHABET`] (upper case).
pub fn is_invite_code(s: &str) -> bool {
    s.len() == INVITE_CODE_LEN && s.bytes().all(|b| INVITE_ALPHABET.contains(&b))
}

/// The invite code a person typed, in canonical form: surrounding spaces and
/// inner spaces or dashes removed, upper-cased. `None` if it is not a code.
/// Look-alike characters are not guessed (`O` is not turned into `0`): a code
/// never contains either, so such input is simply not a code.
pub fn normalize_invite_code(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    is_invite_code(&code).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn alphabet_has_no_look_alikes_and_no_duplicates() {
        for c in b"01OIL" {
            assert!(!INVITE_ALPHABET.contains(c), "{}", char::from(*c));
        }
        let set: HashSet<u8> = INVITE_ALPHABET.iter().copied().collect();
        assert_eq!(set.len(), INVITE_ALPHABET.len());
        assert_eq!(ACCEPT_BELOW, 248);
    }

    #[test]
    fn codes_are_well_formed_and_differ() {
        let codes: HashSet<String> = (0..200).map(|_| new_invite_code()).collect();
        assert_eq!(
            codes.len(),
            200,
            "200 random codes from 31^8 should not collide"
        );
        for code in &codes {
            assert_eq!(code.len(), INVITE_CODE_LEN);
            assert!(is_invite_code(code), "{code}");
        }
    }

    #[test]
    fn biased_bytes_are_rejected_not_wrapped() {
        // Bytes 248..=255 would map to the first 8 characters again; they must
        // be skipped. A source of only such bytes, then one good batch.
        let mut calls = 0;
        let code = code_from(|buf| {
            calls += 1;
            let v = if calls == 1 { 255 } else { 30 };
            buf.fill(v);
            Ok(())
        })
        .expect("fake source");
        assert_eq!(calls, 2);
        assert_eq!(code, "ZZZZZZZZ");
        // Boundary: 247 is accepted (247 % 31 = 30, the last character), 248 is not.
        let mut first = true;
        let code = code_from(|buf| {
            buf.fill(if first { 248 } else { 247 });
            first = false;
            Ok(())
        })
        .expect("fake source");
        assert_eq!(code, "ZZZZZZZZ");
        let code = code_from(|buf| {
            buf.fill(0);
            Ok(())
        })
        .expect("fake source");
        assert_eq!(code, "22222222");
    }

    #[test]
    fn every_character_is_reachable_and_roughly_uniform() {
        let mut counts = [0u32; 31];
        for _ in 0..500 {
            for b in new_invite_code().bytes() {
                let i = INVITE_ALPHABET
                    .iter()
                    .position(|&a| a == b)
                    .expect("in the alphabet");
                counts[i] += 1;
            }
        }
        // 4000 draws, 129 expected per character; a fair source stays far
        // inside these bounds (a byte-modulo bug would not fail this, the
        // rejection test above covers that).
        for (i, &n) in counts.iter().enumerate() {
            assert!(
                (50..260).contains(&n),
                "{}: {n}",
                char::from(INVITE_ALPHABET[i])
            );
        }
    }

    #[test]
    fn recognises_codes() {
        assert!(is_invite_code("23456789"));
        assert!(is_invite_code("ABCDEFGH"));
        assert!(!is_invite_code("2345678"), "too short");
        assert!(!is_invite_code("234567892"), "too long");
        assert!(!is_invite_code("abcdefgh"), "lower case is not canonical");
        assert!(!is_invite_code("ABCDEFG0"), "0 is not in the alphabet");
        assert!(!is_invite_code("ABCDEFGO"));
        assert!(!is_invite_code("ABCDEFGI"));
        assert!(!is_invite_code("ABCDEFGL"));
        assert!(!is_invite_code("ABCDEFG1"));
        assert!(!is_invite_code("ABCDÉFG"), "non-ASCII");
        assert!(!is_invite_code(""));
    }

    #[test]
    fn normalizes_what_people_type() {
        assert_eq!(
            normalize_invite_code(" k7qx-2mpa ").as_deref(),
            Some("K7QX2MPA")
        );
        assert_eq!(
            normalize_invite_code("K7QX 2MPA").as_deref(),
            Some("K7QX2MPA")
        );
        assert_eq!(normalize_invite_code("K7QX2MP0"), None);
        assert_eq!(normalize_invite_code("lobby"), None);
    }
}
