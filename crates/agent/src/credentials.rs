//! Getting and keeping a device access token: challenge → signature →
//! tokens, and refresh before expiry.

use std::time::Duration;

use edgelink_auth::agent_key::AgentKey;
use edgelink_protocol::error::{ErrorBody, ErrorCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::time::Instant;

/// A refusal the agent must not retry (the device is unknown, revoked, or
/// its key is not the registered one), or one worth retrying later.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Retrying will not help.
    #[error("refused: {0}")]
    Permanent(String),
    /// The refresh token is spent, expired or revoked: authenticate anew.
    #[error("stale refresh token: {0}")]
    Stale(String),
    /// The server or network failed; try again later.
    #[error("temporary failure: {0}")]
    Transient(String),
}

/// Tokens for the tunnel.
pub struct Tokens {
    /// The bearer for `GET /tunnel`.
    pub access: SecretString,
    /// For the next refresh.
    pub refresh: SecretString,
    /// When the access token expires.
    pub expires_at: Instant,
    /// Its lifetime when issued.
    pub lifetime: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

impl Tokens {
    /// True while the access token has at least a fifth of its life (and
    /// 10 s) left.
    pub fn fresh(&self) -> bool {
        let margin = (self.lifetime / 5).max(Duration::from_secs(10));
        Instant::now() + margin < self.expires_at
    }

    /// When to refresh: with a fifth of the lifetime left.
    pub fn refresh_at(&self) -> Instant {
        self.expires_at - (self.lifetime / 5).max(Duration::from_secs(10)).min(self.lifetime / 2)
    }
}

#[derive(Deserialize)]
struct ChallengeResponse {
    challenge: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    refresh_token: String,
    expires_in: i64,
}

/// Talks to api-server's device-auth endpoints.
pub struct AuthClient {
    http: reqwest::Client,
    api_url: String,
    device_id: String,
}

impl AuthClient {
    /// A client for `api_url`, authenticating `device_id`.
    pub fn new(http: reqwest::Client, api_url: &str, device_id: &str) -> Self {
        AuthClient { http, api_url: api_url.trim_end_matches('/').to_owned(), device_id: device_id.to_owned() }
    }

    async fn post<T: for<'de> Deserialize<'de>>(&self, path: &str, body: serde_json::Value) -> Result<T, AuthError> {
        let resp = self
            .http
            .post(format!("{}{}", self.api_url, path))
            .json(&body)
            .send()
            .await
            .map_err(|e| AuthError::Transient(format!("{path}: {e}")))?;
        let status = resp.status();
        if status.is_success() {
            return resp.json().await.map_err(|e| AuthError::Transient(format!("{path}: bad response: {e}")));
        }
        let body: Option<ErrorBody> = resp.json().await.ok();
        let kind = body.as_ref().and_then(ErrorBody::kind);
        let message = body.map(|b| format!("{} ({})", b.message, b.error)).unwrap_or_else(|| status.to_string());
        Err(match kind {
            Some(
                ErrorCode::DeviceNotFound
                | ErrorCode::DeviceRevoked
                | ErrorCode::SignatureInvalid
                | ErrorCode::BadRequest,
            ) => AuthError::Permanent(message),
            Some(ErrorCode::RefreshTokenInvalid | ErrorCode::RefreshTokenReused) => AuthError::Stale(message),
            _ => AuthError::Transient(message),
        })
    }

    /// Proves the key and gets new tokens.
    pub async fn authenticate(&self, key: &AgentKey) -> Result<Tokens, AuthError> {
        let c: ChallengeResponse =
            self.post("/api/v1/auth/challenge", serde_json::json!({ "device_id": self.device_id })).await?;
        let signature = key.sign_b64(c.challenge.as_bytes());
        let t: TokenResponse = self
            .post(
                "/api/v1/auth/verify",
                serde_json::json!({ "device_id": self.device_id, "challenge": c.challenge, "signature": signature }),
            )
            .await?;
        Ok(to_tokens(t))
    }

    /// Rotates the refresh token.
    pub async fn refresh(&self, tokens: &Tokens) -> Result<Tokens, AuthError> {
        let t: TokenResponse = self
            .post("/api/v1/auth/refresh", serde_json::json!({ "refresh_token": tokens.refresh.expose_secret() }))
            .await?;
        Ok(to_tokens(t))
    }

    /// Fresh tokens: `current` if still fresh, else refreshed, else a new
    /// authentication.
    pub async fn ensure(&self, key: &AgentKey, current: Option<Tokens>) -> Result<Tokens, AuthError> {
        match current {
            Some(t) if t.fresh() => Ok(t),
            Some(t) => match self.refresh(&t).await {
                Ok(new) => Ok(new),
                // A refused refresh token is not the device being refused:
                // the challenge says whether the device is still welcome.
                Err(AuthError::Stale(_) | AuthError::Permanent(_)) => self.authenticate(key).await,
                Err(e @ AuthError::Transient(_)) => Err(e),
            },
            None => self.authenticate(key).await,
        }
    }
}

fn to_tokens(t: TokenResponse) -> Tokens {
    let lifetime = Duration::from_secs(t.expires_in.max(1) as u64);
    Tokens {
        access: SecretString::from(t.access_token),
        refresh: SecretString::from(t.refresh_token),
        expires_at: Instant::now() + lifetime,
        lifetime,
    }
}
