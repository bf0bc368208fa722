//! The signed-in user's devices: list, read, change, delete, their tunnel
//! session, and their local web service through the relay that holds them.
//!
//! Every lookup goes through a store method that takes the owner's id, so
//! another user's device is indistinguishable from a missing one: 404 on
//! every route, never 403.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use edgelink_internal_api::forward::{BoxBody, ForwardError};
use edgelink_protocol::error::ErrorCode;
use edgelink_protocol::{hop, paths};
use edgelink_store::{Device, DevicePatch, DeviceQuery, TunnelSession};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::{ApiError, Json, timestamp_ms};
use crate::pairing::{check_label, check_metadata, check_name};
use crate::principal::UserPrincipal;

/// Largest page of a device listing.
pub const MAX_PAGE: i64 = 200;
const DEFAULT_PAGE: i64 = 50;

/// Content-Security-Policy on everything a device's web service returns:
/// its pages run in an opaque origin, so their scripts cannot use the
/// user's api-server session (ADR 12).
pub const DEVICE_CSP: &str = "sandbox allow-scripts allow-forms allow-popups allow-downloads allow-modals";

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
    pub capabilities: Vec<String>,
    /// Region.
    pub region: Option<String>,
    /// Metadata object.
    pub metadata: serde_json::Value,
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
        capabilities: serde_json::from_str(&d.capabilities).unwrap_or_default(),
        metadata: serde_json::from_str(&d.metadata).unwrap_or_else(|_| serde_json::json!({})),
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
    limit: Option<i64>,
    offset: Option<i64>,
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::DeviceNotFound, "no such device")
}

async fn device_of(state: &AppState, user: &UserPrincipal, id: &str) -> Result<Device, ApiError> {
    if id.len() > 64 {
        return Err(not_found());
    }
    state.store().active_device(&user.user.id, id).await?.ok_or_else(not_found)
}

/// `GET /api/v1/devices`.
pub async fn list(
    State(state): State<AppState>,
    user: UserPrincipal,
    uri: axum::http::Uri,
) -> Result<axum::Json<DeviceList>, ApiError> {
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
    let capabilities = q
        .capability
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|c| !c.is_empty())
        .map(|c| check_label("capability", c))
        .collect::<Result<Vec<_>, _>>()?;
    let query = DeviceQuery {
        device_type: q.device_type.as_deref().map(|t| check_label("type", t)).transpose()?,
        region: q.region.as_deref().map(|r| check_label("region", r)).transpose()?,
        capabilities,
        online,
        limit,
        offset,
    };
    let (devices, total) = state.store().query_devices(&user.user.id, &query).await?;
    let sessions: HashMap<String, TunnelSession> = state
        .store()
        .open_sessions_of_owner(&user.user.id)
        .await?
        .into_iter()
        .map(|s| (s.device_id.clone(), s))
        .collect();
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
        name: req.name.as_deref().map(check_name).transpose()?,
        metadata: req.metadata.as_ref().map(check_metadata).transpose()?,
        region: req.region.map(|r| r.as_deref().map(|r| check_label("region", r)).transpose()).transpose()?,
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
    state.forget_route(&user.user.id, &id);
    if let Some(session) = state.store().open_session_for_device(&user.user.id, &id).await? {
        match state.relay_client(&session.relay_url) {
            Ok(client) => {
                if let Err(e) = client.close_session(&session.id).await {
                    tracing::warn!(device_id = %id, error = %e, "closing the deleted device's tunnel failed; its next dial is refused");
                }
            }
            Err(e) => tracing::warn!(device_id = %id, error = %e.message, "cannot reach the relay to close the tunnel"),
        }
    }
    tracing::info!(device_id = %id, user_id = %user.user.id, "device deleted");
    Ok(StatusCode::NO_CONTENT)
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
    let client = state.relay_client(&s.relay_url)?;
    state.forget_route(&user.user.id, &id);
    match client.close_session(&s.id).await {
        Ok(_) | Err(edgelink_internal_api::Error::NotFound) => {}
        Err(e) => {
            tracing::warn!(relay = %s.relay_url, error = %e, "relay refused to close a session");
            return Err(ApiError::new(ErrorCode::DeviceUnavailable, "the relay holding this device did not answer"));
        }
    }
    Ok(axum::Json(serde_json::json!({ "closed": true, "session_id": s.id })))
}

/// `ANY /api/v1/devices/{id}/http[/{*path}]`: the device's local web
/// service. The caller's cookies and Authorization never reach the device;
/// hop-by-hop headers are dropped (Upgrade kept for WebSocket);
/// `X-Forwarded-*` describe the original request; `/.edgelink/` is refused.
pub async fn http(
    State(state): State<AppState>,
    user: UserPrincipal,
    Path(params): Path<HashMap<String, String>>,
    req: Request,
) -> Response {
    let path = req.uri().path().to_owned();
    match http_inner(&state, &user, params.get("id").map(String::as_str).unwrap_or(""), req).await {
        Ok(resp) => resp,
        Err(e) => e.at(&path).into_response(),
    }
}

/// Where a device's requests go: the device and its open session (from
/// the route cache or the store).
#[derive(Debug, Clone)]
pub(crate) struct Route {
    device_id: String,
    relay_url: String,
}

async fn route(state: &AppState, user: &UserPrincipal, id: &str, fresh: bool) -> Result<Route, ApiError> {
    let key = (user.user.id.clone(), id.to_owned());
    if !fresh && let Some(r) = state.route_cache().get(&key) {
        return Ok(r);
    }
    let device = device_of(state, user, id).await?;
    let session = state
        .store()
        .open_session_for_device(&user.user.id, &device.id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::DeviceUnavailable, "the device is offline"))?;
    let r = Route { device_id: device.id, relay_url: session.relay_url };
    state.route_cache().insert(key, r.clone());
    Ok(r)
}

fn relay_error(resp: &axum::http::Response<hyper::body::Incoming>) -> Option<&str> {
    resp.headers().get(paths::RELAY_ERROR_HEADER).and_then(|v| v.to_str().ok())
}

async fn http_inner(state: &AppState, user: &UserPrincipal, id: &str, mut req: Request) -> Result<Response, ApiError> {
    if id.len() > 64 {
        return Err(not_found());
    }
    let prefix = format!("/api/v1/devices/{id}/http");
    let rest = req.uri().path().strip_prefix(&prefix).unwrap_or("");
    let mut target = if rest.is_empty() { "/".to_owned() } else { rest.to_owned() };
    if paths::is_control_path(&target) {
        // Checked after ownership below would leak existence; the path
        // alone decides, for everyone, before any lookup.
        return Err(ApiError::new(ErrorCode::Forbidden, "the agent's control paths are not reachable"));
    }
    if let Some(q) = req.uri().query() {
        target.push('?');
        target.push_str(q);
    }
    let mut route = route(state, user, id, false).await?;
    let forwarder = state
        .forwarder()
        .ok_or_else(|| ApiError::unavailable("api-server is not configured to reach relays (relay_internal_secret)"))?;

    let upgrade = hop::is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let peer = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0);
    let peer = state.client_ip(peer, req.headers());
    let (mut parts, body) = req.into_parts();
    let headers = &mut parts.headers;
    hop::strip(headers, upgrade);
    headers.remove(header::COOKIE);
    headers.remove(header::AUTHORIZATION);
    for h in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-prefix", "forwarded"] {
        headers.remove(h);
    }
    let origin = state.public_origin();
    let (proto, host) = origin.split_once("://").unwrap_or(("https", origin));
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    if let Some(ip) = peer {
        set("x-forwarded-for", &ip.to_string());
    }
    set("x-forwarded-proto", proto);
    set("x-forwarded-host", host);
    set("x-forwarded-prefix", &prefix);
    // A request without a body can be sent again if the cached route turns
    // out stale (the tunnel moved to another relay).
    let bodiless = !upgrade
        && !parts.headers.contains_key(header::TRANSFER_ENCODING)
        && parts.headers.get(header::CONTENT_LENGTH).is_none_or(|v| v == "0");
    // Taken on use: a request is resent at most once.
    let mut retry_parts = bodiless.then(|| (parts.method.clone(), parts.uri.clone(), parts.headers.clone()));
    let body: BoxBody = body.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>).boxed_unsync();
    let mut out = Some(axum::http::Request::from_parts(parts, body));
    let mut client_upgrade = client_upgrade;

    let resp = loop {
        let req = match out.take() {
            Some(r) => r,
            None => break None,
        };
        let resp = forwarder
            .forward(&route.relay_url, &route.device_id, &target, req, client_upgrade.take())
            .await
            .map_err(|e| match e {
                ForwardError::Timeout(_) => {
                    ApiError::new(ErrorCode::DeviceTimeout, "the device did not answer in time")
                }
                ForwardError::Relay(reason) => {
                    state.forget_route(&user.user.id, id);
                    tracing::warn!(relay = %route.relay_url, error = %reason, "relay unreachable");
                    ApiError::new(ErrorCode::DeviceUnavailable, "the relay holding this device is unreachable")
                }
                ForwardError::Target(reason) => ApiError::internal(reason),
            })?;
        match relay_error(&resp) {
            Some("token_missing" | "token_invalid") => {
                tracing::error!(relay = %route.relay_url, "the relay refused api-server's internal secret");
                return Err(ApiError::new(ErrorCode::DeviceUnavailable, "api-server cannot reach this device's relay"));
            }
            Some("session_not_found") => {
                // The relay no longer holds the device: look again, and
                // resend once if the request can be resent.
                state.forget_route(&user.user.id, id);
                if let Some((method, uri, headers)) = retry_parts.take()
                    && let Ok(fresh) = self::route(state, user, id, true).await
                    && fresh.relay_url != route.relay_url
                {
                    route = fresh;
                    let mut again = axum::http::Request::new(BoxBody::default());
                    *again.method_mut() = method;
                    *again.uri_mut() = uri;
                    *again.headers_mut() = headers;
                    out = Some(again);
                    continue;
                }
                return Err(ApiError::new(ErrorCode::DeviceUnavailable, "the device is offline"));
            }
            _ => break Some(resp),
        }
    };
    let resp = resp.ok_or_else(|| ApiError::internal("forward loop ended without an answer"))?;
    let (mut parts, body) = resp.into_parts();
    if parts.status != StatusCode::SWITCHING_PROTOCOLS {
        hop::strip(&mut parts.headers, false);
    }
    parts.version = axum::http::Version::HTTP_11;
    parts.headers.remove(paths::RELAY_ERROR_HEADER);
    // Cookies from a device would land on api-server's origin: dropped.
    parts.headers.remove(header::SET_COOKIE);
    parts.headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DEVICE_CSP));
    parts.headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    Ok(Response::from_parts(parts, Body::new(body)))
}
