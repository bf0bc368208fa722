//! Pairing: a signed-in user creates a one-time code; a device exchanges
//! it (with its public key) and becomes that user's device.
//!
//! Codes are 8 characters of an alphabet without look-alikes (no 0/O,
//! 1/I/L), shown as `7KQF-M2XD`; input is case-insensitive and ignores
//! dashes and spaces. About 39 bits, alive for `pairing_ttl`, exchanged at
//! most once, and exchanges are rate limited per client address. Only
//! SHA-256 of the normalised code is stored.

use axum::extract::State;
use axum::http::StatusCode;
use edgelink_auth::device_key::DevicePublicKey;
use edgelink_auth::secret;
use edgelink_protocol::error::ErrorCode;
use edgelink_store::{NewDevice, PairingRefusal, now_ms};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::{ApiError, Json, timestamp_ms};
use crate::principal::UserPrincipal;

/// The code alphabet: digits and capitals without 0, 1, I, L, O.
pub const ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// Characters in a code.
pub const CODE_LEN: usize = 8;

/// A new random code, formatted `XXXX-XXXX`.
pub fn new_code() -> String {
    let mut rng = rand::rng();
    let chars: String = (0..CODE_LEN).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("{}-{}", &chars[..4], &chars[4..])
}

/// The canonical form of a typed code, or None if it cannot be one.
pub fn normalise(code: &str) -> Option<String> {
    if code.len() > 32 {
        return None;
    }
    let c: String = code.chars().filter(|c| *c != '-' && !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect();
    (c.len() == CODE_LEN && c.bytes().all(|b| ALPHABET.contains(&b))).then_some(c)
}

/// Answer to `POST /api/v1/pairings`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PairingCreated {
    /// The code to give the device (shown once).
    pub code: String,
    /// When it stops working, RFC 3339.
    pub expires_at: String,
    /// Seconds until then.
    pub expires_in: u64,
    /// The command that pairs a device with it.
    pub command: String,
}

/// `POST /api/v1/pairings`: a new code for the signed-in user.
pub async fn create(
    State(state): State<AppState>,
    user: UserPrincipal,
) -> Result<(StatusCode, axum::Json<PairingCreated>), ApiError> {
    let cfg = state.config();
    let code = new_code();
    let hash = secret::hash(&normalise(&code).unwrap_or_default());
    let now = now_ms();
    let expires_at = now + cfg.pairing_ttl.as_millis() as i64;
    let created =
        state.store().create_pairing(&user.user.id, &hash, now, expires_at, i64::from(cfg.max_live_pairings)).await?;
    if created.is_none() {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "you already have {} unused pairing codes; use one or wait for them to expire",
                cfg.max_live_pairings
            ),
        ));
    }
    tracing::info!(user_id = %user.user.id, "pairing code created");
    Ok((
        StatusCode::CREATED,
        axum::Json(PairingCreated {
            command: format!("edge-agent pair --server {} --code {code}", state.public_origin()),
            code,
            expires_at: timestamp_ms(expires_at),
            expires_in: cfg.pairing_ttl.as_secs(),
        }),
    ))
}

/// `POST /api/v1/pairings/exchange`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRequest {
    /// The code as typed.
    pub code: String,
    /// The device's public key, SPKI PEM (Ed25519 or RSA).
    pub public_key: String,
    /// Display name.
    pub name: String,
    /// Device type (default `generic`).
    #[serde(default, rename = "type", alias = "device_type")]
    pub device_type: Option<String>,
    /// Capabilities, e.g. `["http", "ssh"]`.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Free-form JSON object (≤ 8 KiB).
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Region label.
    #[serde(default)]
    pub region: Option<String>,
}

/// What a paired device needs to know.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExchangeResponse {
    /// Its id.
    pub device_id: String,
    /// Its name.
    pub name: String,
    /// Where it authenticates (challenge/verify/refresh).
    pub api_url: String,
    /// Where it dials its tunnel.
    pub tunnel_url: String,
}

/// Checks the user-controlled device fields shared by exchange and PATCH.
pub(crate) fn check_name(name: &str) -> Result<String, ApiError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 128 || n.chars().any(char::is_control) {
        return Err(ApiError::bad_request("name must be 1 to 128 printable characters"));
    }
    Ok(n.to_owned())
}

pub(crate) fn check_label(what: &str, v: &str) -> Result<String, ApiError> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok { Ok(v.to_owned()) } else { Err(ApiError::bad_request(format!("{what} must be 1 to 64 of [A-Za-z0-9-_.:]"))) }
}

pub(crate) fn check_metadata(m: &serde_json::Map<String, serde_json::Value>) -> Result<String, ApiError> {
    let text = serde_json::to_string(m).map_err(ApiError::internal)?;
    if text.len() > 8 * 1024 {
        return Err(ApiError::bad_request("metadata must be at most 8 KiB of JSON"));
    }
    Ok(text)
}

/// `POST /api/v1/pairings/exchange` (anonymous, rate limited): 201 with the
/// new device, or a clear error; nothing is created on any error.
pub async fn exchange(
    State(state): State<AppState>,
    Json(req): Json<ExchangeRequest>,
) -> Result<(StatusCode, axum::Json<ExchangeResponse>), ApiError> {
    let code = normalise(&req.code).ok_or_else(|| {
        ApiError::new(ErrorCode::PairingCodeInvalid, "that is not a pairing code (8 characters like 7KQF-M2XD)")
    })?;
    let name = check_name(&req.name)?;
    let device_type = check_label("type", req.device_type.as_deref().unwrap_or("generic"))?;
    if req.capabilities.len() > 32 {
        return Err(ApiError::bad_request("at most 32 capabilities"));
    }
    let capabilities = req.capabilities.iter().map(|c| check_label("capability", c)).collect::<Result<Vec<_>, _>>()?;
    let region = req.region.as_deref().map(|r| check_label("region", r)).transpose()?;
    let metadata = check_metadata(&req.metadata.unwrap_or_default())?;
    let key =
        DevicePublicKey::from_pem(&req.public_key).map_err(|e| ApiError::bad_request(format!("public_key: {e}")))?;
    let new = NewDevice {
        owner_id: String::new(),
        name,
        device_type,
        capabilities: serde_json::to_string(&capabilities).map_err(ApiError::internal)?,
        region,
        metadata,
        public_key: key.to_pem(),
        key_algorithm: key.algorithm().as_str().into(),
    };
    let device = match state.store().exchange_pairing(&secret::hash(&code), now_ms(), &new).await? {
        Ok(d) => d,
        Err(PairingRefusal::Unknown) => {
            return Err(ApiError::new(
                ErrorCode::PairingCodeInvalid,
                "unknown pairing code; check it or create a new one",
            ));
        }
        Err(PairingRefusal::Expired) => {
            return Err(ApiError::new(
                ErrorCode::PairingCodeExpired,
                "this pairing code has expired; create a new one",
            ));
        }
        Err(PairingRefusal::Used) => {
            return Err(ApiError::new(ErrorCode::PairingCodeUsed, "this pairing code was already used"));
        }
    };
    tracing::info!(device_id = %device.id, user_id = %device.owner_id, "device paired");
    Ok((
        StatusCode::CREATED,
        axum::Json(ExchangeResponse {
            device_id: device.id,
            name: device.name,
            api_url: state.public_origin().to_owned(),
            tunnel_url: state.config().agent_tunnel_url.clone(),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_typable_and_normalise() {
        for _ in 0..100 {
            let c = new_code();
            assert_eq!(c.len(), 9);
            assert_eq!(&c[4..5], "-");
            let n = normalise(&c).unwrap();
            assert_eq!(normalise(&n.to_lowercase()), Some(n.clone()));
            assert_eq!(normalise(&format!(" {} {} ", &n[..4], &n[4..])), Some(n));
        }
        for bad in ["", "ABCD", "ABCD-EFG0", "ABCD-EFGI", "ABCDEFGHJ", &"A".repeat(100)] {
            assert_eq!(normalise(bad), None, "{bad}");
        }
    }

    #[test]
    fn labels_and_names_are_bounded() {
        assert!(check_label("type", "camera.v2:x-y_z").is_ok());
        assert!(check_label("type", "a b").is_err());
        assert!(check_label("type", "").is_err());
        assert!(check_name("  cam  ").unwrap() == "cam");
        assert!(check_name("a\u{0}b").is_err());
        assert!(check_name(&"x".repeat(129)).is_err());
    }
}
