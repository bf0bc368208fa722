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
use edgelink_auth::cookie::CookieKeys;
use edgelink_auth::device_key::DevicePublicKey;
use edgelink_protocol::error::ErrorCode;
use edgelink_store::{NewDevice, PairingRefusal, now_ms};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::device_fields as fields;
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

/// Why no code was issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The user already holds the allowed number of unused codes.
    #[error("already {0} unused pairing codes; use one or wait for them to expire")]
    TooMany(u32),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] edgelink_store::Error),
}

/// A code the user can give a device, with its expiry (ms).
#[derive(Debug, Clone)]
pub struct Issued {
    /// As shown to people: `XXXX-XXXX`.
    pub code: String,
    /// When it stops working, Unix ms.
    pub expires_at: i64,
}

/// What is stored of a (normalised) code: an HMAC under the deployment's
/// key ring (`session.keys`), newest key first. A code has 40 bits: a bare
/// hash of it would fall to an offline search in seconds with a copy of the
/// database.
pub fn digests(keys: &CookieKeys, code: &str) -> Vec<String> {
    keys.keyed_digests("pairing-code", code)
}

/// Issues a pairing code for `user_id`, alive `ttl`, unless they already
/// hold `max_live` unused ones: the one way codes are made (the web UI's
/// `POST /api/v1/pairings` and `api-server pairing create`).
pub async fn issue(
    store: &edgelink_store::Store,
    keys: &CookieKeys,
    user_id: &str,
    ttl: std::time::Duration,
    max_live: u32,
) -> Result<Issued, IssueError> {
    let code = new_code();
    let hash = digests(keys, &normalise(&code).unwrap_or_default()).swap_remove(0);
    let now = now_ms();
    let expires_at = now + ttl.as_millis() as i64;
    match store.create_pairing(user_id, &hash, now, expires_at, i64::from(max_live)).await? {
        Some(_) => Ok(Issued { code, expires_at }),
        None => Err(IssueError::TooMany(max_live)),
    }
}

/// `POST /api/v1/pairings`: a new code for the signed-in user.
pub async fn create(
    State(state): State<AppState>,
    user: UserPrincipal,
) -> Result<(StatusCode, axum::Json<PairingCreated>), ApiError> {
    let cfg = state.config();
    let Issued { code, expires_at } =
        issue(state.store(), state.cookie_keys(), &user.user.id, cfg.pairing_ttl, cfg.max_live_pairings)
            .await
            .map_err(|e| match e {
                IssueError::TooMany(_) => ApiError::new(ErrorCode::RateLimited, format!("you {e}")),
                IssueError::Store(e) => e.into(),
            })?;
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
/// Unknown fields are ignored: a newer device must work with this server
/// (docs/protocol.md, "Forward compatibility").
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

/// `POST /api/v1/pairings/exchange` (anonymous, rate limited): 201 with the
/// new device, or a clear error; nothing is created on any error.
pub async fn exchange(
    State(state): State<AppState>,
    Json(req): Json<ExchangeRequest>,
) -> Result<(StatusCode, axum::Json<ExchangeResponse>), ApiError> {
    // While the budget of wrong codes is spent, no code is even looked up
    // (`redeem` checks it first).
    let code = normalise(&req.code).ok_or_else(|| {
        ApiError::new(ErrorCode::PairingCodeInvalid, "that is not a pairing code (8 characters like 7KQF-M2XD)")
    })?;
    let name = fields::name(&req.name)?;
    let device_type = fields::label("type", req.device_type.as_deref().unwrap_or("generic"))?;
    let capabilities = fields::capabilities(&req.capabilities)?;
    let region = req.region.as_deref().map(|r| fields::label("region", r)).transpose()?;
    let metadata = fields::metadata(req.metadata.unwrap_or_default())?;
    let key =
        DevicePublicKey::from_pem(&req.public_key).map_err(|e| ApiError::bad_request(format!("public_key: {e}")))?;
    let new = NewDevice {
        owner_id: String::new(),
        name,
        device_type,
        capabilities,
        region,
        metadata,
        public_key: key.to_pem(),
        key_algorithm: key.algorithm().as_str().into(),
        node_id: None,
    };
    let device = redeem(&state, &code, &new).await?;
    tracing::info!(device_id = %device.id, user_id = %device.owner_id, "device paired");
    Ok((
        StatusCode::CREATED,
        axum::Json(ExchangeResponse {
            device_id: device.id,
            name: device.name,
            api_url: state.public_origin().to_string(),
            tunnel_url: state.config().agent_tunnel_url.clone(),
        }),
    ))
}

/// Spends the (normalised) `code` on `new`: the code owner's new device,
/// or their device with the same `new.node_id` re-registered. Checks the
/// global budget of wrong codes first and charges it for an unknown one.
pub(crate) async fn redeem(state: &AppState, code: &str, new: &NewDevice) -> Result<edgelink_store::Device, ApiError> {
    state.pairing_budget().check().map_err(|wait| {
        ApiError::new(ErrorCode::RateLimited, "too many wrong pairing codes recently, from everywhere; try again later")
            .retry_after(wait)
    })?;
    // A code issued under an older key of the ring is found by its digest
    // under that key.
    let mut outcome = Err(PairingRefusal::Unknown);
    for digest in digests(state.cookie_keys(), code) {
        outcome = state.store().exchange_pairing(&digest, now_ms(), new).await?;
        if !matches!(outcome, Err(PairingRefusal::Unknown)) {
            break;
        }
    }
    let device = match outcome {
        Ok(d) => d,
        Err(PairingRefusal::Unknown) => {
            state.pairing_budget().fail();
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
        Err(PairingRefusal::NodeIdTaken) => {
            return Err(ApiError::new(ErrorCode::NodeIdTaken, "another account's device already has this node_id"));
        }
    };
    Ok(device)
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
}
