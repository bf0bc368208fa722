//! Browser session cookies: a random session id with an HMAC-SHA256 tag;
//! and sealed (encrypted, authenticated) cookies for small server state
//! such as a pending sign-in.
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
use zeroize::Zeroize;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of randomness in a session id (256 bits; the spec asks ≥ 128).
pub const SESSION_ID_BYTES: usize = 32;
/// Shortest signing key accepted.
pub const MIN_KEY_BYTES: usize = 32;
const PURPOSE: &[u8] = b"edgelink-session-cookie:v1:";
const SEAL_PURPOSE: &[u8] = b"edgelink-sealed-cookie-key:v1:";
/// Largest payload [`CookieKeys::seal`] takes (a cookie is ≤ 4 KiB).
pub const MAX_PAYLOAD_BYTES: usize = 2048;

/// Errors from building a key ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No key was configured.
    #[error("at least one cookie key is required")]
    Empty,
    /// A key is not base64.
    #[error("cookie key {index} is not base64 (make one with `openssl rand -base64 32`)")]
    Encoding {
        /// Position in the configured list.
        index: usize,
    },
    /// The key file could not be read or created.
    #[error("cookie key file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// No sealing cipher could be made from a key (the crypto library
    /// refused the derived AES-256 key).
    #[error("cookie key {index} could not make a sealing key")]
    Cipher {
        /// Position in the configured list.
        index: usize,
    },
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
    /// The sealing cipher of each key, in the same order: derived once
    /// here rather than on every sealed cookie opened (a device origin
    /// opens one per request).
    ciphers: std::sync::Arc<[aws_lc_rs::aead::LessSafeKey]>,
}

/// Key material does not outlive its use in freed memory.
impl Drop for CookieKeys {
    fn drop(&mut self) {
        for k in &mut self.keys {
            k.zeroize();
        }
    }
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
        let ciphers = keys
            .iter()
            .enumerate()
            .map(|(index, k)| Self::cipher(k).ok_or(KeyError::Cipher { index }))
            .collect::<Result<std::sync::Arc<[_]>, _>>()?;
        Ok(CookieKeys { keys, ciphers })
    }

    /// A key ring from base64 strings (standard or URL-safe alphabet,
    /// padded or not), newest first.
    pub fn from_base64<S: AsRef<str>>(keys: &[S]) -> Result<Self, KeyError> {
        let decoded = keys
            .iter()
            .enumerate()
            .map(|(index, k)| decode_key(k.as_ref()).ok_or(KeyError::Encoding { index }))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(decoded)
    }

    /// The single key in `path` (base64 text), creating the file with a new
    /// random key, readable only by its owner, when it does not exist.
    /// Returns whether it was created.
    pub fn load_or_generate(path: &std::path::Path) -> Result<(Self, bool), KeyError> {
        let file_err =
            |e: &dyn std::fmt::Display| KeyError::File { path: path.display().to_string(), reason: e.to_string() };
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((Self::from_base64(&[text.trim()])?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = zeroize::Zeroizing::new([0u8; 32]);
                rand::rng().fill_bytes(key.as_mut());
                let text =
                    zeroize::Zeroizing::new(format!("{}\n", base64::engine::general_purpose::STANDARD.encode(*key)));
                crate::keyfile::write_private(path, text.as_bytes()).map_err(|e| file_err(&e))?;
                Ok((Self::new(vec![key.to_vec()])?, true))
            }
            Err(e) => Err(file_err(&e)),
        }
    }

    fn tag(key: &[u8], cookie_name: &str, id: &[u8]) -> Vec<u8> {
        Self::tag_for(PURPOSE, key, cookie_name, id)
    }

    fn tag_for(purpose: &[u8], key: &[u8], cookie_name: &str, id: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail.
        let mut mac = match HmacSha256::new_from_slice(key) {
            Ok(m) => m,
            Err(_) => return Vec::new(),
        };
        mac.update(purpose);
        mac.update(cookie_name.as_bytes());
        mac.update(b":");
        mac.update(id);
        mac.finalize().into_bytes().to_vec()
    }

    /// Keyed digests of a low-entropy secret kept at rest (a pairing code),
    /// hex HMAC-SHA-256 under each key, newest first, separated by
    /// `purpose`: without the key ring, a stolen database does not let
    /// anyone test guesses offline. Store the first; look up any.
    pub fn keyed_digests(&self, purpose: &str, value: &str) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| hex::encode(Self::tag_for(b"edgelink keyed digest v1\0", k, purpose, value.as_bytes())))
            .collect()
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

    /// A cookie value carrying `payload` encrypted and authenticated
    /// (AES-256-GCM, key derived from the newest cookie key, the cookie
    /// name as associated data): the client can neither read nor change it.
    /// `None` when the payload exceeds [`MAX_PAYLOAD_BYTES`].
    pub fn seal(&self, cookie_name: &str, payload: &[u8]) -> Option<String> {
        use aws_lc_rs::aead::{Aad, NONCE_LEN, Nonce};
        if payload.len() > MAX_PAYLOAD_BYTES {
            return None;
        }
        let key = self.ciphers.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut data = payload.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(cookie_name.as_bytes()), &mut data)
            .ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Some(URL_SAFE_NO_PAD.encode(out))
    }

    /// The payload of a value made by [`CookieKeys::seal`] under
    /// `cookie_name` with any configured key.
    pub fn open(&self, cookie_name: &str, value: &str) -> Option<Vec<u8>> {
        use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce};
        if value.len() > MAX_PAYLOAD_BYTES * 4 / 3 + 64 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(value).ok()?;
        if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        self.ciphers.iter().find_map(|key| {
            let mut data = sealed.to_vec();
            let plain = key
                .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(cookie_name.as_bytes()), &mut data)
                .ok()?;
            Some(plain.to_vec())
        })
    }

    /// The encryption key for sealed cookies, derived from a cookie key so
    /// the HMAC and the cipher never share a key.
    fn seal_key(key: &[u8]) -> Vec<u8> {
        Self::tag_for(SEAL_PURPOSE, key, "", b"")
    }

    /// The sealing cipher of a cookie key.
    fn cipher(key: &[u8]) -> Option<aws_lc_rs::aead::LessSafeKey> {
        use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
        let mut derived = Self::seal_key(key);
        let cipher = UnboundKey::new(&AES_256_GCM, &derived).ok().map(LessSafeKey::new);
        derived.zeroize();
        cipher
    }
}

fn decode_key(k: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
    let k = k.trim();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD].iter().find_map(|e| e.decode(k).ok())
}

/// The cookies of one `Cookie` header value (`a=1; b=2`), each trimmed,
/// empty ones left out. Read as bytes: a cookie that is not visible ASCII
/// (a sibling application's UTF-8 value, say) is one pair like any other
/// and does not hide the rest of the header.
pub fn pairs(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    header.split(|b| *b == b';').map(<[u8]>::trim_ascii).filter(|p| !p.is_empty())
}

/// The name of one of [`pairs`]: what comes before its first `=`, trimmed
/// (a pair without `=` is all name).
pub fn pair_name(pair: &[u8]) -> &[u8] {
    match pair.iter().position(|b| *b == b'=') {
        Some(eq) => pair[..eq].trim_ascii(),
        None => pair,
    }
}

/// The value of cookie `name` in one `Cookie` header value, without
/// surrounding double quotes. The first pair of that name decides (browsers
/// send the most specific path first); `None` when there is none or its
/// value is not visible ASCII (every cookie edgelink sets is). The same
/// reading as [`pairs`] and [`pair_name`], without splitting pairs that
/// are not `name`'s (this runs on every request).
pub fn find<'h>(header: &'h [u8], name: &str) -> Option<&'h str> {
    let name = name.as_bytes();
    let mut rest = header;
    loop {
        let next = memchr::memchr(b';', rest);
        let pair = rest[..next.unwrap_or(rest.len())].trim_ascii_start();
        if let Some(after) = pair.strip_prefix(name)
            && let Some(value) = after.trim_ascii_start().strip_prefix(b"=")
        {
            return visible_text(value.trim_ascii());
        }
        rest = &rest[next? + 1..];
    }
}

/// `value` without surrounding double quotes, if it is visible ASCII.
fn visible_text(value: &[u8]) -> Option<&str> {
    let value = match value {
        [b'"', inner @ .., b'"'] => inner,
        v => v,
    };
    // `fold`, not `all`: no early exit, so the check runs on whole words.
    let visible = value.iter().fold(true, |ok, b| ok & b.is_ascii_graphic());
    if !visible {
        return None;
    }
    std::str::from_utf8(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_digests_depend_on_key_purpose_and_value() {
        let ring = CookieKeys::new(vec![vec![1; 32], vec![2; 32]]).unwrap();
        let d = ring.keyed_digests("pairing", "7KQFM2XD");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].len(), 64);
        assert_ne!(d[0], d[1]);
        assert_eq!(CookieKeys::new(vec![vec![2; 32]]).unwrap().keyed_digests("pairing", "7KQFM2XD")[0], d[1]);
        assert_ne!(ring.keyed_digests("other", "7KQFM2XD")[0], d[0]);
        assert_ne!(ring.keyed_digests("pairing", "7KQFM2XE")[0], d[0]);
        assert_ne!(d[0], crate::secret::hash("7KQFM2XD"), "not a bare hash");
    }

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
    fn sealed_payloads_round_trip_unreadable_and_bound_to_name_and_keys() {
        let keys = CookieKeys::new(vec![key(1)]).unwrap();
        let secret = b"{\"v\":\"pkce-verifier\"}";
        let v = keys.seal("login", secret).unwrap();
        assert_eq!(keys.open("login", &v).unwrap(), secret);
        assert!(!String::from_utf8_lossy(&URL_SAFE_NO_PAD.decode(&v).unwrap()).contains("pkce-verifier"));
        assert_ne!(keys.seal("login", secret).unwrap(), v, "a fresh nonce each time");
        assert_eq!(keys.open("other", &v), None);
        let mut raw = URL_SAFE_NO_PAD.decode(&v).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(keys.open("login", &URL_SAFE_NO_PAD.encode(raw)), None);
        assert_eq!(keys.open("login", "AAAA"), None);
        assert!(keys.seal("login", &[0; MAX_PAYLOAD_BYTES + 1]).is_none());
        let rotated = CookieKeys::new(vec![key(2), key(1)]).unwrap();
        assert_eq!(rotated.open("login", &v).unwrap(), secret);
        assert_eq!(CookieKeys::new(vec![key(2)]).unwrap().open("login", &v), None);
        let id = SessionId::generate();
        assert_eq!(keys.open("login", &keys.sign("login", &id)), None);
    }

    #[test]
    fn keys_come_from_base64_or_a_generated_private_file() {
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let keys = CookieKeys::from_base64(&[b64.as_str(), &URL_SAFE_NO_PAD.encode([9u8; 40])]).unwrap();
        assert_eq!(keys.keys.len(), 2);
        assert!(matches!(CookieKeys::from_base64(&["not base64!"]), Err(KeyError::Encoding { index: 0 })));
        assert!(matches!(CookieKeys::from_base64(&["c2hvcnQ="]), Err(KeyError::TooShort { .. })));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.key");
        let (a, created) = CookieKeys::load_or_generate(&path).unwrap();
        assert!(created);
        let (b, created) = CookieKeys::load_or_generate(&path).unwrap();
        assert!(!created);
        let id = SessionId::generate();
        assert_eq!(b.verify("s", &a.sign("s", &id)), Some(id));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn keys_must_exist_and_be_long_enough() {
        assert_eq!(CookieKeys::new(vec![]).unwrap_err(), KeyError::Empty);
        assert!(matches!(CookieKeys::new(vec![key(1), vec![0; 8]]), Err(KeyError::TooShort { index: 1, len: 8 })));
    }

    #[test]
    fn cookie_headers_are_read_pair_by_pair_as_bytes() {
        let h = "lang=espa\u{f1}ol; theme=\"dark mode\";  edgelink_session=\"abc.def\" ;; flag; x = 1".as_bytes();
        assert_eq!(find(h, "edgelink_session"), Some("abc.def"));
        assert_eq!(find(h, "x"), Some("1"));
        assert_eq!(find(h, "lang"), None, "not visible ASCII");
        assert_eq!(find(h, "theme"), None, "a space inside");
        assert_eq!(find(h, "flag"), None, "no value");
        assert_eq!(find(h, "edgelink"), None);
        assert_eq!(find(b"a=1; a=2", "a"), Some("1"), "the first wins");
        assert_eq!(find(b"a=1; a=2", "A"), None, "names are case-sensitive");
        assert_eq!(find(b"a=", "a"), Some(""));
        // Bytes that are not UTF-8 at all.
        assert_eq!(find(b"junk=\xff\xfe; a=ok", "a"), Some("ok"));
        let names: Vec<&[u8]> = pairs(h).map(pair_name).collect();
        assert_eq!(names, [&b"lang"[..], b"theme", b"edgelink_session", b"flag", b"x"]);
        assert_eq!(pairs(b" ; ;").count(), 0);
    }

    proptest::proptest! {
        /// `find` reads a header as `pairs` and `pair_name` do: the first
        /// pair that has an `=` and the name decides.
        #[test]
        fn find_agrees_with_pairs(header in proptest::collection::vec(
            proptest::sample::select(vec![b'a', b'b', b'=', b';', b' ', b'"', b'x', 0xff]), 0..40)) {
            let reference = pairs(&header)
                .filter(|p| p.contains(&b'='))
                .find(|p| pair_name(p) == b"a")
                .and_then(|p| visible_text(p[p.iter().position(|b| *b == b'=').unwrap_or(0) + 1..].trim_ascii()));
            proptest::prop_assert_eq!(find(&header, "a"), reference);
        }
    }
}
