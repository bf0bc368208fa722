//! Browser session cookies: a random session id with an HMAC-SHA256 tag.
//!
//! The cookie value is `base64url(id) "." base64url(tag)`, where the id is
//! 32 random bytes and the tag is HMAC-SHA256 over a purpose prefix, the
//! cookie name and the id, so a tag cannot be replayed under another cookie
//! name. Keys rotate: the newest signs, every configured key verifies, and
//! tags are compared in constant time. The server stores only a hash of the
//! id ([`SessionId::storage_hash`]), so a database dump yields no usable
//! cookie.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of randomness in a session id (256 bits; the spec asks ≥ 128).
pub const SESSION_ID_BYTES: usize = 32;
/// Shortest signing key accepted.
pub const MIN_KEY_BYTES: usize = 32;
const PURPOSE: &[u8] = b"edgelink-session-cookie:v1:";

/// Errors from building a key ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No key was configured.
    #[error("at least one cookie key is required")]
    Empty,
    /// A key is too short.
    #[error("cookie key {index} has {len} bytes; at least {MIN_KEY_BYTES} are required")]
    TooShort {
        /// Position in the configured list.
        index: usize,
        /// Its length.
        len: usize,
    },
}

/// A random session id.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId([u8; SESSION_ID_BYTES]);

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId([redacted])")
    }
}

impl SessionId {
    /// A new id from the system's random source.
    pub fn generate() -> Self {
        let mut id = [0u8; SESSION_ID_BYTES];
        rand::rng().fill_bytes(&mut id);
        SessionId(id)
    }

    /// What the server stores: SHA-256 of the id, hex.
    pub fn storage_hash(&self) -> String {
        hex::encode(Sha256::digest(self.0))
    }
}

/// The keys that sign and verify session cookies, newest first.
#[derive(Clone)]
pub struct CookieKeys {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for CookieKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CookieKeys({} keys, [redacted])", self.keys.len())
    }
}

impl CookieKeys {
    /// A key ring; the first key signs, all verify.
    pub fn new(keys: Vec<Vec<u8>>) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        if let Some((index, k)) = keys.iter().enumerate().find(|(_, k)| k.len() < MIN_KEY_BYTES) {
            return Err(KeyError::TooShort { index, len: k.len() });
        }
        Ok(CookieKeys { keys })
    }

    fn tag(key: &[u8], cookie_name: &str, id: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail.
        let mut mac = match HmacSha256::new_from_slice(key) {
            Ok(m) => m,
            Err(_) => return Vec::new(),
        };
        mac.update(PURPOSE);
        mac.update(cookie_name.as_bytes());
        mac.update(b":");
        mac.update(id);
        mac.finalize().into_bytes().to_vec()
    }

    /// The cookie value for `id` under `cookie_name`, signed with the newest key.
    pub fn sign(&self, cookie_name: &str, id: &SessionId) -> String {
        let tag = Self::tag(&self.keys[0], cookie_name, &id.0);
        format!("{}.{}", URL_SAFE_NO_PAD.encode(id.0), URL_SAFE_NO_PAD.encode(tag))
    }

    /// The session id in `value` if its tag verifies under any key.
    pub fn verify(&self, cookie_name: &str, value: &str) -> Option<SessionId> {
        // Bound the work an attacker can ask for before decoding anything.
        if value.len() > 128 {
            return None;
        }
        let (id_b64, tag_b64) = value.split_once('.')?;
        let id: [u8; SESSION_ID_BYTES] = URL_SAFE_NO_PAD.decode(id_b64).ok()?.try_into().ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag_b64).ok()?;
        let mut ok = false;
        // Every key is tried, so timing does not tell which one matched.
        for key in &self.keys {
            ok |= crate::secret::ct_eq(&Self::tag(key, cookie_name, &id), &tag);
        }
        ok.then_some(SessionId(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Vec<u8> {
        vec![b; 32]
    }

    #[test]
    fn signed_cookie_verifies_and_tampering_does_not() {
        let keys = CookieKeys::new(vec![key(1)]).unwrap();
        let id = SessionId::generate();
        let value = keys.sign("__Host-edgelink", &id);
        assert_eq!(keys.verify("__Host-edgelink", &value), Some(id.clone()));
        // Another cookie name, a flipped character, junk: refused.
        assert_eq!(keys.verify("other", &value), None);
        let mut bytes = value.clone().into_bytes();
        bytes[3] = if bytes[3] == b'A' { b'B' } else { b'A' };
        assert_eq!(keys.verify("__Host-edgelink", &String::from_utf8(bytes).unwrap()), None);
        for junk in ["", ".", "abc", "a.b", &"x".repeat(500)] {
            assert_eq!(keys.verify("__Host-edgelink", junk), None);
        }
        assert_ne!(id.storage_hash(), URL_SAFE_NO_PAD.encode(id.0));
        assert!(!format!("{id:?}{keys:?}").contains(&URL_SAFE_NO_PAD.encode(id.0)));
    }

    #[test]
    fn rotation_signs_with_newest_and_verifies_with_all() {
        let old = CookieKeys::new(vec![key(1)]).unwrap();
        let rotated = CookieKeys::new(vec![key(2), key(1)]).unwrap();
        let id = SessionId::generate();
        let old_cookie = old.sign("s", &id);
        assert_eq!(rotated.verify("s", &old_cookie), Some(id.clone()));
        let new_cookie = rotated.sign("s", &id);
        assert_ne!(new_cookie, old_cookie);
        assert_eq!(old.verify("s", &new_cookie), None, "signed with the new key");
        let unknown = CookieKeys::new(vec![key(3)]).unwrap();
        assert_eq!(unknown.verify("s", &old_cookie), None);
    }

    #[test]
    fn keys_must_exist_and_be_long_enough() {
        assert_eq!(CookieKeys::new(vec![]).unwrap_err(), KeyError::Empty);
        assert!(matches!(CookieKeys::new(vec![key(1), vec![0; 8]]), Err(KeyError::TooShort { index: 1, len: 8 })));
    }
}
