//! Device access tokens: short-lived EdDSA JWTs.

use std::collections::HashMap;

use edgelink_protocol::claims::{DeviceClaims, SCOPE_TUNNEL, TUNNEL_AUDIENCE};
/// A JWKS document, as api-server publishes it and the relay fetches it.
pub use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use crate::Error;
use crate::signing::SigningKey;

/// Why a bearer token was refused. Each maps to one error code at the HTTP
/// edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token was presented.
    #[error("token missing")]
    Missing,
    /// The token is malformed or its claims are wrong.
    #[error("token invalid")]
    Invalid,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// The signature does not verify, or the key is unknown.
    #[error("token signature invalid")]
    BadSignature,
    /// The token names a key id this verifier does not know (yet).
    #[error("unknown signing key")]
    UnknownKey,
}

/// Issues device access tokens.
pub struct TokenIssuer {
    key: EncodingKey,
    kid: String,
    issuer: String,
    ttl_secs: i64,
}

impl TokenIssuer {
    /// An issuer signing with `key`, writing `issuer` as `iss`, and giving
    /// tokens `ttl_secs` of life.
    pub fn new(key: &SigningKey, issuer: &str, ttl_secs: i64) -> Self {
        TokenIssuer {
            key: EncodingKey::from_ed_der(key.pkcs8_der()),
            kid: key.kid().to_owned(),
            issuer: issuer.to_owned(),
            ttl_secs,
        }
    }

    /// Lifetime of issued tokens, seconds.
    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    /// Signs a token for `device_id` owned by `owner_id`, issued at `now`
    /// (seconds since the epoch).
    pub fn issue(&self, device_id: &str, owner_id: &str, now: i64) -> Result<(String, DeviceClaims), Error> {
        let claims = DeviceClaims {
            sub: device_id.to_owned(),
            owner: owner_id.to_owned(),
            scope: SCOPE_TUNNEL.to_owned(),
            iss: self.issuer.clone(),
            aud: TUNNEL_AUDIENCE.to_owned(),
            iat: now,
            exp: now + self.ttl_secs,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| Error::Encode(e.to_string()))?;
        Ok((token, claims))
    }
}

/// Verifies device access tokens against a set of Ed25519 public keys.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl TokenVerifier {
    /// A verifier accepting tokens from `issuer` for the tunnel audience.
    pub fn new(issuer: &str) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[TUNNEL_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        TokenVerifier { keys: HashMap::new(), validation }
    }

    /// Adds the public key of `key`.
    pub fn with_signing_key(mut self, key: &SigningKey) -> Self {
        let _ = self.add_jwks(&key.jwks());
        self
    }

    /// Adds every Ed25519 signing key in a JWKS document (keys of other
    /// types or uses, or without a `kid`, are skipped); returns how many.
    pub fn add_jwks(&mut self, jwks: &JwkSet) -> usize {
        let mut added = 0;
        for jwk in &jwks.keys {
            let (Some(kid), AlgorithmParameters::OctetKeyPair(okp)) = (&jwk.common.key_id, &jwk.algorithm) else {
                continue;
            };
            let for_signing = matches!(jwk.common.public_key_use, None | Some(PublicKeyUse::Signature))
                && matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::EdDSA));
            if okp.curve != EllipticCurve::Ed25519 || !for_signing {
                continue;
            }
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                self.keys.insert(kid.clone(), key);
                added += 1;
            }
        }
        added
    }

    /// Makes the keys of `jwks` the only ones trusted (keys no longer
    /// published are retired at once); returns how many there are. A
    /// document without a usable key changes nothing and returns 0, so a
    /// broken answer cannot lock every device out.
    pub fn replace_jwks(&mut self, jwks: &JwkSet) -> usize {
        let mut fresh = TokenVerifier { keys: HashMap::new(), validation: self.validation.clone() };
        let n = fresh.add_jwks(jwks);
        if n > 0 {
            self.keys = fresh.keys;
        }
        n
    }

    /// True when a key with this id is known.
    pub fn knows(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// The key id a token names, if its header parses.
    pub fn kid_of(token: &str) -> Option<String> {
        jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid)
    }

    /// Verifies `token` and returns its claims.
    pub fn verify(&self, token: &str) -> Result<DeviceClaims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        let key = self.keys.get(&kid).ok_or(TokenError::UnknownKey)?;
        let data = jsonwebtoken::decode::<DeviceClaims>(token, key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                _ => TokenError::Invalid,
            }
        })?;
        if !data.claims.has_scope(SCOPE_TUNNEL) {
            return Err(TokenError::Invalid);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    }

    #[test]
    fn issued_token_verifies_with_the_published_jwks() {
        let key = SigningKey::ephemeral().unwrap();
        let issuer = TokenIssuer::new(&key, "edgelink-api", 300);
        let (token, claims) = issuer.issue("dev-1", "user-1", now()).unwrap();
        let mut verifier = TokenVerifier::new("edgelink-api");
        assert_eq!(verifier.verify(&token), Err(TokenError::UnknownKey));
        assert_eq!(verifier.add_jwks(&key.jwks()), 1);
        // A rotation retires the old key; an empty document changes nothing.
        let mut rotated = verifier.clone();
        let next = SigningKey::ephemeral().unwrap();
        assert_eq!(rotated.replace_jwks(&JwkSet { keys: vec![] }), 0);
        assert!(rotated.knows(key.kid()));
        assert_eq!(rotated.replace_jwks(&next.jwks()), 1);
        assert!(!rotated.knows(key.kid()) && rotated.knows(next.kid()));
        assert_eq!(rotated.verify(&token), Err(TokenError::UnknownKey));
        // Keys for other uses, curves or without an id are skipped.
        let mut odd = key.jwks();
        odd.keys[0].common.key_id = None;
        let mut enc = key.public_jwk();
        enc.common.public_key_use = Some(PublicKeyUse::Encryption);
        odd.keys.push(enc);
        assert_eq!(TokenVerifier::new("edgelink-api").add_jwks(&odd), 0);
        let published = serde_json::to_value(key.jwks()).unwrap();
        assert_eq!(published["keys"][0]["kty"], "OKP");
        assert_eq!(published["keys"][0]["crv"], "Ed25519");
        assert_eq!(published["keys"][0]["use"], "sig");
        assert_eq!(published["keys"][0]["kid"], key.kid());
        assert_eq!(verifier.verify(&token).unwrap(), claims);
        assert_eq!(TokenVerifier::kid_of(&token).as_deref(), Some(key.kid()));
    }

    #[test]
    fn expired_tampered_foreign_and_wrong_issuer_tokens_are_refused() {
        let key = SigningKey::ephemeral().unwrap();
        let verifier = TokenVerifier::new("edgelink-api").with_signing_key(&key);
        let issuer = TokenIssuer::new(&key, "edgelink-api", 300);

        let (old, _) = issuer.issue("d", "u", now() - 3600).unwrap();
        assert_eq!(verifier.verify(&old), Err(TokenError::Expired));

        let (good, _) = issuer.issue("d", "u", now()).unwrap();
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let mut sig = parts[2].clone().into_bytes();
        sig[5] = if sig[5] == b'A' { b'B' } else { b'A' };
        parts[2] = String::from_utf8(sig).unwrap();
        assert_eq!(verifier.verify(&parts.join(".")), Err(TokenError::BadSignature));

        let other = SigningKey::ephemeral().unwrap();
        let (foreign, _) = TokenIssuer::new(&other, "edgelink-api", 300).issue("d", "u", now()).unwrap();
        assert_eq!(verifier.verify(&foreign), Err(TokenError::UnknownKey));

        let (wrong_iss, _) = TokenIssuer::new(&key, "someone-else", 300).issue("d", "u", now()).unwrap();
        assert_eq!(verifier.verify(&wrong_iss), Err(TokenError::Invalid));

        assert_eq!(verifier.verify(""), Err(TokenError::Missing));
        assert_eq!(verifier.verify("not.a.jwt"), Err(TokenError::Invalid));
    }

    #[test]
    fn alg_none_is_refused() {
        let key = SigningKey::ephemeral().unwrap();
        let verifier = TokenVerifier::new("edgelink-api").with_signing_key(&key);
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(format!(r#"{{"alg":"none","kid":"{}"}}"#, key.kid()));
        let body = b64.encode(format!(
            r#"{{"sub":"d","owner":"u","scope":"tunnel","iss":"edgelink-api","aud":"edgelink-tunnel","iat":0,"exp":{},"jti":"x"}}"#,
            now() + 100
        ));
        assert_eq!(verifier.verify(&format!("{header}.{body}.")), Err(TokenError::Invalid));
    }
}
