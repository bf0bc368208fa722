//! Device authentication: challenge → signed response → access and refresh
//! tokens; refresh with rotation.

use std::time::Duration;

use axum::extract::State;
use axum::http::Uri;
use edgelink_auth::device_key::DevicePublicKey;
use edgelink_auth::secret;
use edgelink_protocol::challenge;
use edgelink_protocol::error::ErrorCode;
use edgelink_store::{DeviceCredentials, RefreshOutcome, now_ms};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::{ApiError, Json};

/// Prefix of refresh tokens, so leaked ones are recognisable.
pub const REFRESH_TOKEN_PREFIX: &str = "elr_";
const MAX_ID_LEN: usize = 64;
const MAX_CHALLENGE_LEN: usize = 256;
const MAX_SIGNATURE_LEN: usize = 4096;
const MAX_REFRESH_LEN: usize = 128;

/// `POST /api/v1/auth/challenge`.
#[derive(Debug, Deserialize)]
/// Unknown fields are ignored: a newer device must work with this server
/// (docs/protocol.md, "Forward compatibility").
pub struct ChallengeRequest {
    /// The device asking (`node_id` accepted for older clients).
    #[serde(alias = "node_id")]
    pub device_id: String,
}

/// Answer to a challenge request.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChallengeResponse {
    /// The text to sign, as UTF-8 bytes.
    pub challenge: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// When it expires, RFC 3339.
    pub expires_at: String,
}

/// `POST /api/v1/auth/verify`.
#[derive(Debug, Deserialize)]
/// Unknown fields are ignored: a newer device must work with this server
/// (docs/protocol.md, "Forward compatibility").
pub struct VerifyRequest {
    /// The device (`node_id` accepted for older clients).
    #[serde(alias = "node_id")]
    pub device_id: String,
    /// The challenge as received.
    pub challenge: String,
    /// Signature over the challenge's UTF-8 bytes, hex or base64.
    pub signature: String,
}

/// `POST /api/v1/auth/refresh`.
#[derive(Debug, Deserialize)]
/// Unknown fields are ignored: a newer device must work with this server
/// (docs/protocol.md, "Forward compatibility").
pub struct RefreshRequest {
    /// The refresh token from the last verify or refresh.
    pub refresh_token: String,
}

/// Tokens for a device.
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenResponse {
    /// Short-lived JWT for the tunnel.
    pub access_token: String,
    /// Single-use token for the next refresh.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// The device.
    pub device_id: String,
}

fn check_len(field: &str, value: &str, max: usize, path: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > max {
        return Err(ApiError::bad_request(format!("{field} must be 1 to {max} characters")).at(path));
    }
    Ok(())
}

/// The credentials of a device that exists and is not revoked, by its id
/// or by the node id a seed-000 client registered it with.
async fn active_device(state: &AppState, device_id: &str, path: &str) -> Result<DeviceCredentials, ApiError> {
    let unknown = || ApiError::new(ErrorCode::DeviceNotFound, "unknown device").at(path);
    let creds = match state.store().device_credentials(device_id).await? {
        Some(c) => c,
        None => {
            let id = state.store().device_id_for_node(device_id).await?.ok_or_else(unknown)?;
            state.store().device_credentials(&id).await?.ok_or_else(unknown)?
        }
    };
    if creds.revoked_at.is_some() {
        return Err(ApiError::new(ErrorCode::DeviceRevoked, "device is revoked").at(path));
    }
    Ok(creds)
}

/// Issues a single-use challenge to a known, unrevoked device.
pub async fn challenge(
    State(state): State<AppState>,
    uri: Uri,
    Json(req): Json<ChallengeRequest>,
) -> Result<NoStore<ChallengeResponse>, ApiError> {
    let path = uri.path();
    check_len("device_id", &req.device_id, MAX_ID_LEN, path)?;
    let creds = active_device(&state, &req.device_id, path).await?;
    let text = challenge::build(&creds.id, &secret::random_b64(32));
    let ttl = state.config().challenge_ttl;
    let now = now_ms();
    let expires_at = now + ttl.as_millis() as i64;
    state.store().insert_challenge(&creds.id, &text, now, expires_at).await?;
    Ok(NoStore(ChallengeResponse { challenge: text, expires_in: ttl.as_secs(), expires_at: rfc3339_ms(expires_at) }))
}

/// Checks the signature, spends the challenge and issues tokens.
#[tracing::instrument(skip_all, fields(device_id = %req.device_id))]
pub async fn verify(
    State(state): State<AppState>,
    uri: Uri,
    Json(req): Json<VerifyRequest>,
) -> Result<NoStore<TokenResponse>, ApiError> {
    let path = uri.path();
    check_len("device_id", &req.device_id, MAX_ID_LEN, path)?;
    check_len("challenge", &req.challenge, MAX_CHALLENGE_LEN, path)?;
    check_len("signature", &req.signature, MAX_SIGNATURE_LEN, path)?;
    let creds = active_device(&state, &req.device_id, path).await?;
    if !challenge::is_for_device(&req.challenge, &creds.id) {
        return Err(ApiError::new(ErrorCode::ChallengeInvalid, "challenge was not issued to this device").at(path));
    }
    let key = DevicePublicKey::from_pem(&creds.public_key).map_err(ApiError::internal)?;
    if key.verify_encoded(req.challenge.as_bytes(), &req.signature).is_err() {
        tracing::info!("device signature rejected");
        return Err(ApiError::new(ErrorCode::SignatureInvalid, "signature does not verify").at(path));
    }
    let now = now_ms();
    if !state.store().consume_challenge(&creds.id, &req.challenge, now).await? {
        return Err(
            ApiError::new(ErrorCode::ChallengeInvalid, "challenge is unknown, expired or already used").at(path)
        );
    }
    let family = uuid::Uuid::new_v4().to_string();
    let tokens = issue_tokens(&state, &creds.id, &creds.owner_id, Some(&family), None, now).await?;
    state.store().touch_device(&creds.id, now).await?;
    tracing::info!("device authenticated");
    Ok(NoStore(tokens))
}

/// Rotates a refresh token; a reused one revokes its family. The token
/// comes as `{"refresh_token"}` or, with no body, as `Authorization:
/// Bearer` (seed 000's client).
pub async fn refresh(
    State(state): State<AppState>,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<NoStore<TokenResponse>, ApiError> {
    let path = uri.path();
    let body = body.map_err(|e| ApiError::new(ErrorCode::PayloadTooLarge, e.body_text()).at(path))?;
    let req = if body.iter().all(u8::is_ascii_whitespace) {
        let token = edgelink_protocol::bearer::token(&headers).ok_or_else(|| {
            ApiError::bad_request("send {\"refresh_token\": …} or Authorization: Bearer <refresh token>").at(path)
        })?;
        RefreshRequest { refresh_token: token.to_owned() }
    } else {
        serde_json::from_slice::<RefreshRequest>(&body)
            .map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")).at(path))?
    };
    check_len("refresh_token", &req.refresh_token, MAX_REFRESH_LEN, path)?;
    let now = now_ms();
    let new_refresh = secret::generate(REFRESH_TOKEN_PREFIX);
    let expires = now + state.config().refresh_token_ttl.as_millis() as i64;
    let outcome = state
        .store()
        .rotate_refresh_token(&secret::hash(&req.refresh_token), &secret::hash(&new_refresh), now, expires)
        .await?;
    match outcome {
        RefreshOutcome::Rotated { device_id, owner_id } => {
            let tokens = issue_tokens(&state, &device_id, &owner_id, None, Some(new_refresh), now).await?;
            Ok(NoStore(tokens))
        }
        RefreshOutcome::Reused { device_id, owner_id } => {
            // Two holders of one token: one is a thief. Both must prove the
            // device's key again, so its live tunnel is closed too.
            tracing::warn!(device_id = %device_id, "refresh token reuse detected; token family revoked, tunnel closed");
            crate::devices::close_live_tunnel(&state, &owner_id, &device_id).await;
            Err(ApiError::new(ErrorCode::RefreshTokenReused, "refresh token already used; all its tokens are revoked")
                .at(path))
        }
        RefreshOutcome::Unknown | RefreshOutcome::Expired | RefreshOutcome::Revoked => {
            Err(ApiError::new(ErrorCode::RefreshTokenInvalid, "refresh token is unknown, expired or revoked").at(path))
        }
    }
}

/// Signs an access token and, for a new family, stores a new refresh
/// token; a rotation passes the refresh token it already stored.
async fn issue_tokens(
    state: &AppState,
    device_id: &str,
    owner_id: &str,
    new_family: Option<&str>,
    rotated_refresh: Option<String>,
    now: i64,
) -> Result<TokenResponse, ApiError> {
    let (access_token, _) = state.issuer().issue(device_id, owner_id, now / 1000).map_err(ApiError::internal)?;
    let refresh_token = match (rotated_refresh, new_family) {
        (Some(token), _) => token,
        (None, family) => {
            let token = secret::generate(REFRESH_TOKEN_PREFIX);
            let expires = now + state.config().refresh_token_ttl.as_millis() as i64;
            let family = family.map(str::to_owned).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            state.store().insert_refresh_token(&secret::hash(&token), device_id, &family, now, expires).await?;
            token
        }
    };
    Ok(TokenResponse {
        access_token,
        refresh_token,
        token_type: "Bearer".into(),
        expires_in: state.issuer().ttl_secs(),
        device_id: device_id.to_owned(),
    })
}

/// Plain JSON response (the request-side [`Json`] maps rejections).
pub struct NoStore<T>(pub T);

impl<T: Serialize> axum::response::IntoResponse for NoStore<T> {
    fn into_response(self) -> axum::response::Response {
        ([(http::header::CACHE_CONTROL, "no-store")], axum::Json(self.0)).into_response()
    }
}

use edgelink_protocol::time::rfc3339 as rfc3339_ms;

/// Deletes expired challenges and browser sessions once a minute.
pub async fn purge_loop(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        match state.store().purge_challenges(now_ms()).await {
            Ok(n) if n > 0 => tracing::debug!(purged = n, "expired challenges removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "challenge purge failed"),
        }
        match state.store().purge_pairings(now_ms()).await {
            Ok(n) if n > 0 => tracing::debug!(purged = n, "expired pairing codes removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pairing code purge failed"),
        }
        match state.store().purge_user_sessions(now_ms()).await {
            Ok(n) if n > 0 => tracing::debug!(purged = n, "expired browser sessions removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "browser session purge failed"),
        }
        // Device-origin grants live a minute; keep an hour for forensics.
        match state.store().purge_origin_grants(now_ms() - 3_600_000).await {
            Ok(n) if n > 0 => tracing::debug!(purged = n, "old device-origin grants removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "device-origin grant purge failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_bodies_ignore_unknown_fields_and_user_edits_do_not() {
        let extra = |mut v: serde_json::Value| {
            v["endpoint"] = "http://10.0.0.5".into();
            v
        };
        serde_json::from_value::<ChallengeRequest>(extra(serde_json::json!({"device_id": "d"}))).unwrap();
        let verify = serde_json::json!({"device_id": "d", "challenge": "c", "signature": "s"});
        serde_json::from_value::<VerifyRequest>(extra(verify)).unwrap();
        serde_json::from_value::<RefreshRequest>(extra(serde_json::json!({"refresh_token": "r"}))).unwrap();
        let exchange = serde_json::json!({"code": "c", "public_key": "k", "name": "n"});
        serde_json::from_value::<crate::pairing::ExchangeRequest>(extra(exchange)).unwrap();
        let beat = serde_json::json!({"cpu_percent": 1.0});
        serde_json::from_value::<edgelink_protocol::heartbeat::Heartbeat>(extra(beat)).unwrap();
        assert!(serde_json::from_value::<crate::devices::PatchRequest>(extra(serde_json::json!({}))).is_err());
    }
}
