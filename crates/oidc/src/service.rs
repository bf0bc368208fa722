//! Machine clients: access tokens the provider issues with the
//! client-credentials grant (RFC 6749 §4.4) as JWTs (RFC 9068), verified
//! with the provider's keys for a configured audience. Their scopes come
//! from the `scope` claim (a space-separated string or an array).

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::{OidcError, Provider};

/// A verified machine client's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceToken {
    /// `sub` (for client-credentials tokens, the client), or `client_id`.
    pub subject: String,
    /// Scope names as granted.
    pub scopes: Vec<String>,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
}

/// Why a bearer JWT is not a good service token.
#[derive(Debug, thiserror::Error)]
pub enum ServiceTokenError {
    /// The provider could not be reached.
    #[error(transparent)]
    Unavailable(#[from] OidcError),
    /// Not a JWT from this provider for this audience, expired, badly signed…
    #[error("access token rejected: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeClaim {
    Text(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    client_id: Option<String>,
    scope: Option<ScopeClaim>,
    exp: i64,
}

/// Signature algorithms a provider may use for access tokens: asymmetric
/// only (an `HS256` token signed with a public key, or `none`, never).
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fn invalid(e: impl std::fmt::Display) -> ServiceTokenError {
    ServiceTokenError::Invalid(e.to_string())
}

impl Provider {
    /// Verifies a machine client's access token for `audience`: signed by
    /// one of the provider's keys (refetched once for an unknown `kid`),
    /// issued by it, for `audience`, unexpired.
    pub async fn verify_access_token(&self, token: &str, audience: &str) -> Result<ServiceToken, ServiceTokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(invalid)?;
        if !ASYMMETRIC.contains(&header.alg) {
            return Err(invalid(format!("algorithm {:?} is not accepted", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| invalid("no kid"))?;
        let mut d = self.discovered().await?;
        let mut refetched = false;
        let jwk = loop {
            let set: JwkSet = serde_json::to_value(&d.jwks)
                .and_then(serde_json::from_value)
                .map_err(|e| invalid(format!("provider keys: {e}")))?;
            if let Some(k) = set.find(&kid) {
                break k.clone();
            }
            if refetched {
                return Err(invalid("unknown key id"));
            }
            refetched = true;
            match self.refresh_jwks(&d).await {
                Some(fresh) => d = fresh,
                None => return Err(invalid("unknown key id")),
            }
        };
        let key = DecodingKey::from_jwk(&jwk).map_err(invalid)?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[self.issuer()]);
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.leeway = 30;
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &v).map_err(invalid)?.claims;
        let subject = claims.sub.or(claims.client_id).ok_or_else(|| invalid("no sub or client_id"))?;
        let scopes = match claims.scope {
            None => Vec::new(),
            Some(ScopeClaim::Text(s)) => s.split_whitespace().map(str::to_owned).collect(),
            Some(ScopeClaim::List(v)) => v,
        };
        Ok(ServiceToken { subject, scopes, expires_at: claims.exp })
    }
}
