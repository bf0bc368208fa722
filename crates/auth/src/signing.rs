//! api-server's token signing key and the JWKS it publishes.
//!
//! The key is Ed25519 (JWT `alg: EdDSA`). It is loaded from a PKCS#8 PEM
//! file, or generated and written there (mode 0600) when the file does not
//! exist. A file that exists but cannot be parsed is an error: replacing it
//! silently would invalidate every token in circulation and hide the fault.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, OctetKeyPairParameters,
    OctetKeyPairType, PublicKeyUse,
};
use sha2::{Digest, Sha256};

use crate::Error;
use crate::agent_key::AgentKey;
use crate::keyfile::write_private;

/// The signing key with its key id.
pub struct SigningKey {
    key: AgentKey,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(kid={})", self.kid)
    }
}

/// Whether [`SigningKey::load_or_generate`] found the file or created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// The file existed and was loaded.
    Loaded,
    /// The file did not exist; a new key was written.
    Generated,
}

impl SigningKey {
    /// Wraps an Ed25519 key; the key id is derived from the public key.
    pub fn new(key: AgentKey) -> Self {
        let digest = Sha256::digest(key.public_key_raw());
        let kid = URL_SAFE_NO_PAD.encode(&digest[..12]);
        SigningKey { key, kid }
    }

    /// A fresh key that lives only in memory (tests).
    pub fn ephemeral() -> Result<Self, Error> {
        Ok(Self::new(AgentKey::generate()?))
    }

    /// Loads the key at `path`, or generates one there if the file does not
    /// exist.
    pub fn load_or_generate(path: &Path) -> Result<(Self, KeyOrigin), Error> {
        let file_err = |source| Error::KeyFile { path: path.display().to_string(), source };
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((Self::new(AgentKey::from_pem(&text)?), KeyOrigin::Loaded)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = AgentKey::generate()?;
                write_private(path, key.private_key_pem().as_bytes()).map_err(file_err)?;
                Ok((Self::new(key), KeyOrigin::Generated))
            }
            Err(e) => Err(file_err(e)),
        }
    }

    /// The key id (`kid`) put in token headers and the JWKS.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn pkcs8_der(&self) -> &[u8] {
        self.key.pkcs8_der()
    }

    /// The public key as a JWK (OKP, Ed25519, `use: sig`, `alg: EdDSA`).
    pub fn public_jwk(&self) -> Jwk {
        Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(KeyAlgorithm::EdDSA),
                key_id: Some(self.kid.clone()),
                ..CommonParameters::default()
            },
            algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x: URL_SAFE_NO_PAD.encode(self.key.public_key_raw()),
            }),
        }
    }

    /// The JWKS document api-server serves at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> JwkSet {
        JwkSet { keys: vec![self.public_jwk()] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_is_kept_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/signing.pem");
        let (a, origin) = SigningKey::load_or_generate(&path).unwrap();
        assert_eq!(origin, KeyOrigin::Generated);
        let (b, origin) = SigningKey::load_or_generate(&path).unwrap();
        assert_eq!(origin, KeyOrigin::Loaded);
        assert_eq!(a.kid(), b.kid());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn corrupt_key_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.pem");
        std::fs::write(&path, "garbage").unwrap();
        assert!(SigningKey::load_or_generate(&path).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "garbage");
    }
}
