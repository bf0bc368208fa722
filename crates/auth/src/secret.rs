//! Opaque random secrets and their hashes.
//!
//! Secrets are shown once and stored as SHA-256 hex: they are 256-bit
//! random values, so a fast hash is enough (no password stretching needed).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A new random secret: `prefix` followed by 32 random bytes, base64url.
pub fn generate(prefix: &str) -> String {
    format!("{prefix}{}", random_b64(32))
}

/// `n` random bytes as base64url without padding.
pub fn random_b64(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// The at-rest form of a secret: SHA-256, hex.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two byte strings in time independent of where they differ
/// (their lengths are not secret). Eight bytes at a time: every word's
/// difference is folded into one accumulator with no branch on it, and
/// the optimizer is kept from reasoning about the accumulator before the
/// single comparison at the end. The relay runs this on every forwarded
/// request (the internal secret), where `subtle`'s byte-at-a-time barrier
/// cost ten times as much.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, a_tail) = a.as_chunks::<8>();
    let (b_words, b_tail) = b.as_chunks::<8>();
    let mut diff = 0u64;
    for (x, y) in a_words.iter().zip(b_words) {
        diff |= u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y);
    }
    for (x, y) in a_tail.iter().zip(b_tail) {
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_unique_and_prefixed() {
        let a = generate("elr_");
        let b = generate("elr_");
        assert!(a.starts_with("elr_"));
        assert_ne!(a, b);
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), hash(&b));
    }

    #[test]
    fn ct_eq_compares() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
        // A difference in any byte, in the words or the tail, counts.
        let secret: Vec<u8> = (0..45u8).collect();
        assert!(ct_eq(&secret, &secret.clone()));
        for i in 0..secret.len() {
            let mut other = secret.clone();
            other[i] ^= 0x80;
            assert!(!ct_eq(&secret, &other), "byte {i}");
        }
    }
}
