//! A device's own Ed25519 key pair, as the agent generates and uses it.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::{Error, pem};

/// An Ed25519 private key with its public half.
pub struct AgentKey {
    pair: Ed25519KeyPair,
    /// Zeroed when dropped (aws-lc clears its own copy in `pair`).
    pkcs8: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentKey([redacted])")
    }
}

impl AgentKey {
    /// Generates a new key pair from the system's random source.
    pub fn generate() -> Result<Self, Error> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| Error::InvalidKey("key generation failed".into()))?;
        Self::from_pkcs8(doc.as_ref())
    }

    /// Loads a PKCS#8 `PRIVATE KEY` PEM.
    pub fn from_pem(text: &str) -> Result<Self, Error> {
        let (label, der) = pem::decode(text)?;
        if label != "PRIVATE KEY" {
            return Err(Error::InvalidKey(format!("expected a PRIVATE KEY PEM, got {label:?}")));
        }
        Self::from_pkcs8(&der)
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, Error> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|_| Error::InvalidKey("not an Ed25519 PKCS#8 key".into()))?;
        Ok(AgentKey { pair, pkcs8: zeroize::Zeroizing::new(der.to_vec()) })
    }

    /// The private key as PKCS#8 PEM (write it with mode 0600).
    pub fn private_key_pem(&self) -> String {
        pem::encode("PRIVATE KEY", &self.pkcs8)
    }

    /// The private key as PKCS#8 DER.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key as SPKI PEM, the form api-server stores.
    pub fn public_key_pem(&self) -> String {
        pem::encode("PUBLIC KEY", &pem::ed25519_spki(&self.public_key_raw()))
    }

    /// The public key.
    #[cfg(feature = "server")]
    pub fn public_key(&self) -> crate::device_key::DevicePublicKey {
        crate::device_key::DevicePublicKey::Ed25519(self.public_key_raw())
    }

    /// The raw 32-byte public key.
    pub fn public_key_raw(&self) -> [u8; 32] {
        let mut raw = [0u8; 32];
        raw.copy_from_slice(self.pair.public_key().as_ref());
        raw
    }

    /// Opens a secret sealed to this key for `context`
    /// ([`crate::sealed`]).
    pub fn open_sealed(&self, sealed: &str, context: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
        use aws_lc_rs::encoding::AsBigEndian;
        let seed = self.pair.seed().map_err(|_| Error::Seal("the device key has no seed"))?;
        let seed = seed.as_be_bytes().map_err(|_| Error::Seal("the device key has no seed"))?;
        crate::sealed::open(seed.as_ref(), sealed, context)
    }

    /// Signs `message`; returns the signature as standard base64.
    pub fn sign_b64(&self, message: &[u8]) -> String {
        STANDARD.encode(self.pair.sign(message).as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_keeps_the_key() {
        let key = AgentKey::generate().unwrap();
        let again = AgentKey::from_pem(&key.private_key_pem()).unwrap();
        assert_eq!(key.public_key_pem(), again.public_key_pem());
        #[cfg(feature = "server")]
        assert_eq!(key.public_key().to_pem(), key.public_key_pem());
        assert!(format!("{key:?}").contains("redacted"));
    }
}
