//! A device's public key and the signature checks api-server makes with it.
//!
//! Accepted keys: Ed25519 (preferred) and RSA of 2048–8192 bits, as PEM
//! (`PUBLIC KEY` SubjectPublicKeyInfo, or `RSA PUBLIC KEY` PKCS#1). RSA
//! signatures are RSASSA-PSS with SHA-256 and MGF1-SHA-256 with any salt
//! length: clients written against the original spec sign with Python's
//! `PSS.MAX_LENGTH`, others use the digest length. Signatures arrive as hex
//! or base64 (standard or URL-safe, padded or not).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};
use sha2::{Digest, Sha256};

use crate::{Error, pem};

use crate::pem::ED25519_SPKI_PREFIX;
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;

/// The signature algorithm a device key uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// Ed25519 (RFC 8032).
    Ed25519,
    /// RSASSA-PSS with SHA-256, any salt length.
    RsaPssSha256,
}

impl KeyAlgorithm {
    /// The name stored in the database and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::Ed25519 => "ed25519",
            KeyAlgorithm::RsaPssSha256 => "rsa-pss-sha256",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<KeyAlgorithm> {
        match s {
            "ed25519" => Some(KeyAlgorithm::Ed25519),
            "rsa-pss-sha256" => Some(KeyAlgorithm::RsaPssSha256),
            _ => None,
        }
    }
}

/// A parsed device public key.
#[derive(Clone)]
pub enum DevicePublicKey {
    /// The 32 raw bytes of an Ed25519 key.
    Ed25519([u8; 32]),
    /// An RSA key.
    Rsa(Box<RsaPublicKey>),
}

impl std::fmt::Debug for DevicePublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DevicePublicKey({})", self.algorithm().as_str())
    }
}

impl DevicePublicKey {
    /// Parses a PEM public key (SPKI or PKCS#1).
    pub fn from_pem(text: &str) -> Result<Self, Error> {
        let (label, der) = pem::decode(text)?;
        match label.as_str() {
            "PUBLIC KEY" => Self::from_spki_der(&der),
            "RSA PUBLIC KEY" => {
                let key = RsaPublicKey::from_pkcs1_der(&der).map_err(|e| Error::InvalidKey(e.to_string()))?;
                Self::rsa(key)
            }
            other => Err(Error::InvalidKey(format!("unsupported PEM label {other:?}"))),
        }
    }

    /// Parses a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, Error> {
        if der.len() == 44 && der.starts_with(&ED25519_SPKI_PREFIX) {
            let mut raw = [0u8; 32];
            raw.copy_from_slice(&der[12..]);
            return Ok(DevicePublicKey::Ed25519(raw));
        }
        let key = RsaPublicKey::from_public_key_der(der)
            .map_err(|_| Error::InvalidKey("not an Ed25519 or RSA public key".into()))?;
        Self::rsa(key)
    }

    fn rsa(key: RsaPublicKey) -> Result<Self, Error> {
        let bits = key.n().bits();
        if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
            return Err(Error::InvalidKey(format!("RSA key of {bits} bits; 2048 to 8192 accepted")));
        }
        Ok(DevicePublicKey::Rsa(Box::new(key)))
    }

    /// The algorithm signatures by this key use.
    pub fn algorithm(&self) -> KeyAlgorithm {
        match self {
            DevicePublicKey::Ed25519(_) => KeyAlgorithm::Ed25519,
            DevicePublicKey::Rsa(_) => KeyAlgorithm::RsaPssSha256,
        }
    }

    /// The key as SPKI PEM: the normalised form that is stored.
    pub fn to_pem(&self) -> String {
        match self {
            DevicePublicKey::Ed25519(raw) => pem::encode("PUBLIC KEY", &pem::ed25519_spki(raw)),
            DevicePublicKey::Rsa(key) => match key.to_public_key_der() {
                Ok(doc) => pem::encode("PUBLIC KEY", doc.as_bytes()),
                Err(_) => String::new(),
            },
        }
    }

    fn signature_len(&self) -> usize {
        match self {
            DevicePublicKey::Ed25519(_) => 64,
            DevicePublicKey::Rsa(key) => key.size(),
        }
    }

    /// Checks `signature` (hex or base64 text) over `message`.
    pub fn verify_encoded(&self, message: &[u8], signature: &str) -> Result<(), Error> {
        let sig = decode_signature(signature.trim(), self.signature_len()).ok_or(Error::BadSignature)?;
        self.verify(message, &sig)
    }

    /// Checks raw `signature` bytes over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        let ok = match self {
            DevicePublicKey::Ed25519(raw) => {
                aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, raw)
                    .verify(message, signature)
                    .is_ok()
            }
            DevicePublicKey::Rsa(key) => verify_pss_sha256_any_salt(key, message, signature),
        };
        if ok { Ok(()) } else { Err(Error::BadSignature) }
    }
}

/// Decodes hex or base64 signature text of the expected length.
fn decode_signature(text: &str, expected_len: usize) -> Option<Vec<u8>> {
    if text.len() == expected_len * 2 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return hex::decode(text).ok();
    }
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        if let Ok(bytes) = engine.decode(text)
            && bytes.len() == expected_len
        {
            return Some(bytes);
        }
    }
    None
}

/// EMSA-PSS-VERIFY (RFC 8017 §9.1.2) with SHA-256 and MGF1-SHA-256, where
/// the salt length is read from the encoded message instead of fixed in
/// advance. Everything here is public data, so no constant-time care is
/// needed.
fn verify_pss_sha256_any_salt(key: &RsaPublicKey, message: &[u8], signature: &[u8]) -> bool {
    const H_LEN: usize = 32;
    let k = key.size();
    if signature.len() != k {
        return false;
    }
    let s = BigUint::from_bytes_be(signature);
    if &s >= key.n() {
        return false;
    }
    let m = s.modpow(key.e(), key.n());
    let mod_bits = key.n().bits();
    let em_bits = mod_bits - 1;
    let em_len = em_bits.div_ceil(8);
    let m_bytes = m.to_bytes_be();
    if m_bytes.len() > em_len || em_len < H_LEN + 2 {
        return false;
    }
    let mut em = vec![0u8; em_len - m_bytes.len()];
    em.extend_from_slice(&m_bytes);
    if em[em_len - 1] != 0xbc {
        return false;
    }
    let db_len = em_len - H_LEN - 1;
    let (masked_db, rest) = em.split_at(db_len);
    let h = &rest[..H_LEN];
    let unused_bits = 8 * em_len - em_bits;
    let top_mask = 0xffu8.checked_shr(unused_bits as u32).unwrap_or(0);
    if masked_db[0] & !top_mask != 0 {
        return false;
    }
    let mut db = mgf1_sha256(h, db_len);
    for (d, m) in db.iter_mut().zip(masked_db) {
        *d ^= m;
    }
    db[0] &= top_mask;
    let Some(sep) = db.iter().position(|&b| b != 0) else {
        return false;
    };
    if db[sep] != 0x01 {
        return false;
    }
    let salt = &db[sep + 1..];
    let mut hasher = Sha256::new();
    hasher.update([0u8; 8]);
    hasher.update(Sha256::digest(message));
    hasher.update(salt);
    hasher.finalize()[..] == *h
}

fn mgf1_sha256(seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter: u32 = 0;
    while out.len() < len {
        let mut hasher = Sha256::new();
        hasher.update(seed);
        hasher.update(counter.to_be_bytes());
        out.extend_from_slice(&hasher.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::RsaPrivateKey;
    use rsa::pss::Pss;

    fn rsa_key() -> RsaPrivateKey {
        let mut rng = rsa::rand_core::OsRng;
        RsaPrivateKey::new(&mut rng, 2048).unwrap()
    }

    #[test]
    fn rsa_pss_any_salt_length_verifies() {
        let private = rsa_key();
        let public = DevicePublicKey::rsa(private.to_public_key()).unwrap();
        let msg = b"edgelink-device-auth:v1:dev:nonce";
        let digest = Sha256::digest(msg);
        let em_len = (2048 - 1usize).div_ceil(8);
        let mut rng = rsa::rand_core::OsRng;
        for salt in [0usize, 20, 32, 64, em_len - 32 - 2] {
            let sig = private.sign_with_rng(&mut rng, Pss::new_with_salt::<Sha256>(salt), &digest).unwrap();
            public.verify(msg, &sig).unwrap_or_else(|_| panic!("salt {salt}"));
            public.verify_encoded(msg, &hex::encode(&sig)).unwrap();
            public.verify_encoded(msg, &STANDARD.encode(&sig)).unwrap();
            assert!(public.verify(b"other message", &sig).is_err());
            let mut bad = sig.clone();
            bad[10] ^= 1;
            assert!(public.verify(msg, &bad).is_err());
        }
    }

    #[test]
    fn rsa_pem_forms_parse_and_normalise() {
        let private = rsa_key();
        let spki = private.to_public_key().to_public_key_der().unwrap();
        let pem = pem::encode("PUBLIC KEY", spki.as_bytes());
        let key = DevicePublicKey::from_pem(&pem).unwrap();
        assert_eq!(key.algorithm(), KeyAlgorithm::RsaPssSha256);
        assert_eq!(key.to_pem(), pem);
        use rsa::pkcs1::EncodeRsaPublicKey;
        let pkcs1 = private.to_public_key().to_pkcs1_der().unwrap();
        let key = DevicePublicKey::from_pem(&pem::encode("RSA PUBLIC KEY", pkcs1.as_bytes())).unwrap();
        assert_eq!(key.to_pem(), pem);
    }

    #[test]
    fn small_rsa_keys_are_refused() {
        let mut rng = rsa::rand_core::OsRng;
        let small = RsaPrivateKey::new(&mut rng, 1024).unwrap();
        let der = small.to_public_key().to_public_key_der().unwrap();
        assert!(DevicePublicKey::from_spki_der(der.as_bytes()).is_err());
    }

    #[test]
    fn ed25519_round_trip() {
        let key = crate::agent_key::AgentKey::generate().unwrap();
        let public = DevicePublicKey::from_pem(&key.public_key_pem()).unwrap();
        assert_eq!(public.algorithm(), KeyAlgorithm::Ed25519);
        let sig = key.sign_b64(b"hello");
        public.verify_encoded(b"hello", &sig).unwrap();
        assert!(public.verify_encoded(b"hellO", &sig).is_err());
        assert!(public.verify_encoded(b"hello", "zz").is_err());
        assert!(public.verify_encoded(b"hello", "").is_err());
    }

    #[test]
    fn garbage_keys_are_errors() {
        assert!(DevicePublicKey::from_pem("").is_err());
        assert!(DevicePublicKey::from_pem(&pem::encode("PUBLIC KEY", b"junk")).is_err());
        assert!(DevicePublicKey::from_pem(&pem::encode("PRIVATE KEY", b"junk")).is_err());
    }
}
