//! The secret of an API token: `elk_` + 32 base62 characters of randomness
//! (190 bits) + 6 base62 characters of CRC-32 over them. The prefix and the
//! checksum let secret scanners recognise a leaked token without asking the
//! server, and let the server refuse a mistyped one without a lookup.

use rand::Rng;

/// Every token starts with this.
pub const PREFIX: &str = "elk_";
const RANDOM_LEN: usize = 32;
const CHECK_LEN: usize = 6;
/// Length of a whole token.
pub const TOKEN_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECK_LEN;
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn checksum(random: &str) -> String {
    let mut n = crc32fast::hash(random.as_bytes());
    let mut out = [b'0'; CHECK_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A new token secret.
pub fn generate() -> String {
    let mut rng = rand::rng();
    let random: String = (0..RANDOM_LEN).map(|_| BASE62[rng.random_range(0..BASE62.len())] as char).collect();
    format!("{PREFIX}{random}{}", checksum(&random))
}

/// True when `text` has the shape of a token (prefix, alphabet, length)
/// and its checksum matches; says nothing about whether it exists.
pub fn is_well_formed(text: &str) -> bool {
    let Some(body) = text.strip_prefix(PREFIX) else {
        return false;
    };
    if body.len() != RANDOM_LEN + CHECK_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (random, check) = body.split_at(RANDOM_LEN);
    checksum(random) == check
}

/// True when a bearer credential claims to be an API token (by its
/// prefix): the gate sends it here rather than to the JWT verifiers.
pub fn looks_like_token(text: &str) -> bool {
    text.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_tokens_are_well_formed_and_distinct() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_LEN);
        assert!(is_well_formed(&a) && looks_like_token(&a));
        // One changed character breaks the checksum.
        let mut typo = a.clone().into_bytes();
        typo[10] = if typo[10] == b'x' { b'y' } else { b'x' };
        assert!(!is_well_formed(&String::from_utf8(typo).unwrap()));
        assert!(!is_well_formed("elk_short"));
        assert!(!is_well_formed(&a.replace("elk_", "ghp_")));
    }

    proptest! {
        #[test]
        fn arbitrary_text_is_rarely_well_formed(text in "elk_[0-9A-Za-z]{38}") {
            // A random 38-character body passes the 6-character checksum
            // with probability ~2^-32; proptest's cases never should.
            prop_assert!(!is_well_formed(&text) || text == text.trim());
        }
    }
}
