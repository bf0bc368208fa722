//! The signed-in user's device records: list, read, change, delete, and
//! their tunnel session. Their web service is [`crate::device_proxy`].
//!
//! Every lookup goes through a store method that takes the owner's id, so
//! another user's device is indistinguishable from a missing one: 404 on
//! every route, never 403.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use edgelink_protocol::error::ErrorCode;
use edgelink_store::{Capabilities, Device, DevicePatch, DeviceQuery, Metadata, TunnelSession};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::device_fields as fields;
use crate::error::{ApiError, Json, timestamp_ms};
use crate::principal::UserPrincipal;

/// Largest page of a device listing.
pub const MAX_PAGE: i64 = 200;
const DEFAULT_PAGE: i64 = 50;

/// A device's live tunnel, as its owner sees it.
#[derive(Debug, Serialize, Deserialize)]
pub struct SessionView {
    /// Session id.
    pub id: String,
    /// RFC 3339.
    pub connected_at: String,
    /// RFC 3339.
    pub last_heartbeat: String,
    /// The device's address as the relay saw it.
    pub remote_addr: String,
}

impl From<&TunnelSession> for SessionView {
    fn from(s: &TunnelSession) -> Self {
        SessionView {
            id: s.id.clone(),
            connected_at: timestamp_ms(s.connected_at),
            last_heartbeat: timestamp_ms(s.last_heartbeat),
            remote_addr: s.remote_addr.clone(),
        }
    }
}

/// A device as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeviceView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Type.
    #[serde(rename = "type")]
    pub device_type: String,
    /// Capabilities.
    pub capabilities: Capabilities,
    /// Region.
    pub region: Option<String>,
    /// Metadata object.
    pub metadata: Metadata,
    /// `online` or `offline`.
    pub status: String,
    /// The live tunnel, when online.
    pub session: Option<SessionView>,
    /// RFC 3339.
    pub created_at: String,
    /// Last authentication, RFC 3339.
    pub last_seen_at: Option<String>,
}

fn view(d: Device, session: Option<&TunnelSession>) -> DeviceView {
    DeviceView {
        capabilities: d.capabilities,
        metadata: d.metadata,
        status: if session.is_some() { "online" } else { "offline" }.into(),
        session: session.map(SessionView::from),
        created_at: timestamp_ms(d.created_at),
        last_seen_at: d.last_seen_at.map(timestamp_ms),
        id: d.id,
        name: d.name,
        device_type: d.device_type,
        region: d.region,
    }
}

/// A page of devices.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeviceList {
    /// This page.
    pub devices: Vec<DeviceView>,
    /// Matching devices in all.
    pub total: i64,
    /// Page size used.
    pub limit: i64,
    /// Offset used.
    pub offset: i64,
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(rename = "type")]
    device_type: Option<String>,
    /// Comma-separated; all must be present.
    capability: Option<String>,
    region: Option<String>,
    status: Option<String>,
    /// RFC 3339: authenticated or heartbeating after it.
    seen_after: Option<String>,
    /// Latest one-minute load average below this.
    load_below: Option<f64>,
    limit: Option<i64>,
    offset: Option<i64>,
}

pub(crate) fn not_found() -> ApiError {
    ApiError::new(ErrorCode::DeviceNotFound, "no such device")
}

pub(crate) async fn device_of(state: &AppState, user: &UserPrincipal, id: &str) -> Result<Device, ApiError> {
    if id.len() > 64 {
        return Err(not_found());
    }
    state.store().active_device(&user.user.id, id).await?.ok_or_else(not_found)
}

/// `GET /api/v1/devices`: the user's devices, or (with a device token)
/// the devices of the device's owner.
pub async fn list(
    State(state): State<AppState>,
    principal: crate::principal::Principal,
    uri: axum::http::Uri,
) -> Result<axum::Json<DeviceList>, ApiError> {
    let owner_id = principal.owner_id().to_owned();
    let q: ListQuery = axum::extract::Query::try_from_uri(&uri)
        .map(|axum::extract::Query(q)| q)
        .map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    let offset = q.offset.unwrap_or(0);
    if !(1..=MAX_PAGE).contains(&limit) || offset < 0 {
        return Err(ApiError::bad_request(format!("limit must be 1 to {MAX_PAGE} and offset ≥ 0")));
    }
    let online = match q.status.as_deref() {
        None | Some("") => None,
        Some("online") => Some(true),
        Some("offline") => Some(false),
        Some(_) => return Err(ApiError::bad_request("status must be online or offline")),
    };
    let capabilities = q.capability.as_deref().unwrap_or("").split(',').filter(|c| !c.is_empty()).collect::<Vec<_>>();
    let Capabilities(capabilities) = fields::capabilities(&capabilities)?;
    let query = DeviceQuery {
        device_type: q.device_type.as_deref().map(|t| fields::label("type", t)).transpose()?,
        region: q.region.as_deref().map(|r| fields::label("region", r)).transpose()?,
        capabilities,
        online,
        seen_after: q
            .seen_after
            .as_deref()
            .map(|s| {
                edgelink_protocol::time::parse_rfc3339(s)
                    .ok_or_else(|| ApiError::bad_request("seen_after must be an RFC 3339 time"))
            })
            .transpose()?,
        load_below: q
            .load_below
            .map(|l| if l.is_finite() { Ok(l) } else { Err(ApiError::bad_request("load_below must be a number")) })
            .transpose()?,
        limit,
        offset,
    };
    let (devices, total) = state.store().query_devices(&owner_id, &query).await?;
    let sessions: HashMap<String, TunnelSession> =
        state.store().open_sessions_of_owner(&owner_id).await?.into_iter().map(|s| (s.device_id.clone(), s)).collect();
    let devices = devices
        .into_iter()
        .map(|d| {
            let s = sessions.get(&d.id);
            view(d, s)
        })
        .collect();
    Ok(axum::Json(DeviceList { devices, total, limit, offset }))
}

/// `GET /api/v1/devices/{id}`.
pub async fn get(
    State(state): State<AppState>,
    user: UserPrincipal,
    Path(id): Path<String>,
) -> Result<axum::Json<DeviceView>, ApiError> {
    let device = device_of(&state, &user, &id).await?;
    let session = state.store().open_session_for_device(&user.user.id, &id).await?;
    Ok(axum::Json(view(device, session.as_ref())))
}

/// `PATCH /api/v1/devices/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchRequest {
    name: Option<String>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// `null` clears it; absent leaves it.
    #[serde(default, deserialize_with = "double_option")]
    region: Option<Option<String>>,
}

fn double_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `PATCH /api/v1/devices/{id}`: name, metadata, region.
pub async fn patch(
    State(state): State<AppState>,
    user: UserPrincipal,
    Path(id): Path<String>,
    Json(req): Json<PatchRequest>,
) -> Result<axum::Json<DeviceView>, ApiError> {
    device_of(&state, &user, &id).await?;
    let patch = DevicePatch {
        name: req.name.as_deref().map(fields::name).transpose()?,
        metadata: req.metadata.map(fields::metadata).transpose()?,
        region: req.region.map(|r| r.as_deref().map(|r| fields::label("region", r)).transpose()).transpose()?,
    };
    let device = state.store().update_device(&user.user.id, &id, &patch).await?.ok_or_else(not_found)?;
    let session = state.store().open_session_for_device(&user.user.id, &id).await?;
    Ok(axum::Json(view(device, session.as_ref())))
}

/// `DELETE /api/v1/devices/{id}`: revokes the device and its refresh tokens
/// (its access tokens are refused from now on, at the relay's next dial
/// too) and closes its live tunnel.
pub async fn delete(
    State(state): State<AppState>,
    user: UserPrincipal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    device_of(&state, &user, &id).await?;
    if !state.store().revoke_device(&user.user.id, &id).await? {
        return Err(not_found());
    }
    close_live_tunnel(&state, &user.user.id, &id).await;
    tracing::info!(device_id = %id, user_id = %user.user.id, "device deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Closes `owner_id`'s device's live tunnel, if it has one, at the relay
/// that holds it (a deleted device, a stolen refresh token). Failures are
/// logged: the device's next dial is checked anyway.
pub(crate) async fn close_live_tunnel(state: &AppState, owner_id: &str, device_id: &str) {
    state.device_proxy().forget_route(owner_id, device_id);
    let session = match state.store().open_session_for_device(owner_id, device_id).await {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(device_id, error = %e, "cannot look up the device's tunnel to close it");
            return;
        }
    };
    match state.device_proxy().relay_client(&session.relay_url) {
        Ok(client) => {
            if let Err(e) = client.close_session(&session.id).await {
                tracing::warn!(device_id, error = %e, "closing the device's tunnel failed");
            }
        }
        Err(e) => tracing::warn!(device_id, error = %e.message, "cannot reach the relay to close the tunnel"),
    }
}

async fn open_session_of(state: &AppState, user: &UserPrincipal, id: &str) -> Result<TunnelSession, ApiError> {
    device_of(state, user, id).await?;
    state
        .store()
        .open_session_for_device(&user.user.id, id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::SessionNotFound, "the device is offline"))
}

/// `GET /api/v1/devices/{id}/session`.
pub async fn session(
    State(state): State<AppState>,
    user: UserPrincipal,
    Path(id): Path<String>,
) -> Result<axum::Json<SessionView>, ApiError> {
    let s = open_session_of(&state, &user, &id).await?;
    Ok(axum::Json(SessionView::from(&s)))
}

/// `POST /api/v1/devices/{id}/session/close`: the relay closes the tunnel;
/// the agent reconnects on its own.
pub async fn close_session(
    State(state): State<AppState>,
    user: UserPrincipal,
    Path(id): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let s = open_session_of(&state, &user, &id).await?;
    let client = state.device_proxy().relay_client(&s.relay_url)?;
    state.device_proxy().forget_route(&user.user.id, &id);
    match client.close_session(&s.id).await {
        Ok(_) | Err(edgelink_internal_api::Error::NotFound) => {}
        Err(e) => {
            tracing::warn!(relay = %s.relay_url, error = %e, "relay refused to close a session");
            return Err(ApiError::new(ErrorCode::DeviceUnavailable, "the relay holding this device did not answer"));
        }
    }
    Ok(axum::Json(serde_json::json!({ "closed": true, "session_id": s.id })))
}
