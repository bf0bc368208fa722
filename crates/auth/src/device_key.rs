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
use rsa::PublicKey;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey};
use rsa::signature::Verifier;
use rsa::traits::PublicKeyParts;

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
    Rsa(Box<PublicKey>),
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
                let key = PublicKey::from_pkcs1_der(&der).map_err(|e| Error::InvalidKey(e.to_string()))?;
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
        let key = PublicKey::from_public_key_der(der)
            .map_err(|_| Error::InvalidKey("not an Ed25519 or RSA public key".into()))?;
        Self::rsa(key)
    }

    fn rsa(key: PublicKey) -> Result<Self, Error> {
        let bits = key.n().as_ref().bit_width() as usize;
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
            DevicePublicKey::Rsa(key) => {
                // RSASSA-PSS, SHA-256, MGF1-SHA-256, the salt length read
                // from the signature (Python's PSS.MAX_LENGTH, the digest
                // length, anything in between).
                let verifier = rsa::pss::VerifyingKey::<rsa::sha2::Sha256>::new_with_auto_salt_len((**key).clone());
                rsa::pss::Signature::try_from(signature).is_ok_and(|sig| verifier.verify(message, &sig).is_ok())
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixture from `testdata/` (made with openssl; see its README).
    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata").join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn rsa_pss_verifies_at_every_accepted_size_and_salt_length() {
        let msg = fixture("message.txt");
        for bits in [2048, 3072, 4096, 8192] {
            let pem = String::from_utf8(fixture(&format!("rsa-{bits}.pub.pem"))).unwrap();
            let public = DevicePublicKey::from_pem(&pem).unwrap_or_else(|e| panic!("{bits}: {e}"));
            assert_eq!(public.algorithm(), KeyAlgorithm::RsaPssSha256);
            let pkcs1 = String::from_utf8(fixture(&format!("rsa-{bits}.pkcs1.pem"))).unwrap();
            assert_eq!(DevicePublicKey::from_pem(&pkcs1).unwrap().to_pem(), public.to_pem(), "{bits}");
            for salt in ["digest", "max", "0"] {
                let sig = fixture(&format!("rsa-{bits}.salt-{salt}.sig"));
                public.verify(&msg, &sig).unwrap_or_else(|_| panic!("{bits} bits, salt {salt}"));
                public.verify_encoded(&msg, &hex::encode(&sig)).unwrap();
                public.verify_encoded(&msg, &STANDARD.encode(&sig)).unwrap();
                assert!(public.verify(b"other message", &sig).is_err());
                let mut bad = sig.clone();
                bad[10] ^= 1;
                assert!(public.verify(&msg, &bad).is_err(), "{bits} {salt}");
                assert!(public.verify(&msg, &sig[1..]).is_err());
            }
        }
    }

    #[test]
    fn rsa_keys_outside_2048_to_8192_bits_are_refused() {
        let small = String::from_utf8(fixture("rsa-1024.pub.pem")).unwrap();
        let e = DevicePublicKey::from_pem(&small).unwrap_err().to_string();
        assert!(e.contains("1024") && e.contains("2048 to 8192"), "{e}");
        let small = String::from_utf8(fixture("rsa-1024.pkcs1.pem")).unwrap();
        assert!(DevicePublicKey::from_pem(&small).is_err());
    }

    #[test]
    fn rsa_pem_forms_normalise_to_spki() {
        let pem = String::from_utf8(fixture("rsa-2048.pub.pem")).unwrap();
        let key = DevicePublicKey::from_pem(&pem).unwrap();
        assert_eq!(key.to_pem(), pem);
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
