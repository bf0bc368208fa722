//! Seed 000's "central API" surface, so a client written against that
//! document keeps working (docs/api.md, "Seed 000 compatibility"). Nodes
//! are devices: a node id the client chose is kept as the device's
//! `node_id` (unique in the deployment); every path that names a node also
//! accepts the device id. Everything here is a thin translation onto the
//! native device, telemetry and message operations.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use edgelink_auth::device_key::DevicePublicKey;
use edgelink_messages::Outgoing;
use edgelink_protocol::error::ErrorCode;
use edgelink_protocol::heartbeat::Heartbeat;
use edgelink_store::{Device, DevicePatch, DeviceQuery, NewDevice, now_ms};
use edgelink_tokens::Scope;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::AppState;
use crate::device_fields as fields;
use crate::error::{ApiError, Json, timestamp_ms};
use crate::messages::{MessageList, send_as};
use crate::principal::{DevicePrincipal, Principal};

/// When this process started (for `health`'s uptime).
static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Marks the start of the process (called when the router is built).
pub(crate) fn mark_start() {
    STARTED.get_or_init(Instant::now);
}

/// A node is `active` when its tunnel is up or it reported (heartbeat or
/// status update) within this many heartbeat intervals.
const ACTIVE_WITHIN_INTERVALS: u32 = 3;

/// Most characters of a node id: letters, digits, `.`, `_`, `-`.
const MAX_NODE_ID: usize = 64;

fn node_id(v: &str) -> Result<String, ApiError> {
    let ok = !v.is_empty()
        && v.len() <= MAX_NODE_ID
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err(ApiError::bad_request(format!("node_id must be 1 to {MAX_NODE_ID} of A-Z a-z 0-9 . _ -")));
    }
    // Device ids are UUIDs; a node id that looks like one could shadow one.
    if uuid::Uuid::parse_str(v).is_ok() {
        return Err(ApiError::bad_request("node_id must not be a UUID (device ids are)"));
    }
    Ok(v.to_owned())
}

/// `POST /api/v1/auth/register`.
#[derive(Debug, Deserialize)]
pub struct RegisterRequest {
    /// The client's name for the node.
    pub node_id: String,
    /// Display name.
    pub name: String,
    /// Node type.
    #[serde(rename = "type", default)]
    pub node_type: Option<String>,
    /// Capabilities.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// SPKI PEM (RSA or Ed25519).
    pub public_key: String,
    /// Where the node says it can be reached (kept in metadata).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `region`, `version`, and `pairing_code` (not kept) among others.
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// Answer to a registration.
#[derive(Debug, Serialize, Deserialize)]
pub struct Registered {
    /// The node id, as registered.
    pub node_id: String,
    /// The device it is.
    pub device_id: String,
    /// `registered` (new) or `updated` (the owner's node re-registered with
    /// a new key).
    pub status: String,
}

/// `POST /api/v1/auth/register`: a pairing code in `metadata.pairing_code`,
/// or a signed-in user / API token with `pairing:create`, makes the node a
/// device of that owner. Re-registering the owner's existing node id
/// replaces its key and fields (and ends its refresh tokens); another
/// owner's node id is `409 node_id_taken`.
pub async fn register(
    State(state): State<AppState>,
    principal: Option<Principal>,
    Json(mut req): Json<RegisterRequest>,
) -> Result<(StatusCode, axum::Json<Registered>), ApiError> {
    let node = node_id(&req.node_id)?;
    let code = match req.metadata.remove("pairing_code") {
        Some(Value::String(c)) => Some(c),
        Some(_) => return Err(ApiError::bad_request("metadata.pairing_code must be a string")),
        None => None,
    };
    let name = fields::name(&req.name)?;
    let node_type = fields::label("type", req.node_type.as_deref().unwrap_or("generic"))?;
    let capabilities = fields::capabilities(&req.capabilities)?;
    let region = match req.metadata.get("region") {
        Some(Value::String(r)) => Some(fields::label("region", r)?),
        _ => None,
    };
    if let Some(endpoint) = req.endpoint.take() {
        if endpoint.len() > 2048 {
            return Err(ApiError::bad_request("endpoint must be at most 2048 bytes"));
        }
        req.metadata.insert("endpoint".into(), Value::String(endpoint));
    }
    let metadata = fields::metadata(req.metadata)?;
    let key =
        DevicePublicKey::from_pem(&req.public_key).map_err(|e| ApiError::bad_request(format!("public_key: {e}")))?;
    let mut new = NewDevice {
        owner_id: String::new(),
        name,
        device_type: node_type,
        capabilities,
        region,
        metadata,
        public_key: key.to_pem(),
        key_algorithm: key.algorithm().as_str().into(),
        node_id: Some(node.clone()),
    };
    // An existing node of the same owner is re-registered (checked again,
    // atomically, where the row is written).
    let existed = state.store().device_id_for_node(&node).await?;
    let (device, replaced) = match (code, principal) {
        (Some(code), _) => {
            let code = crate::pairing::normalise(&code).ok_or_else(|| {
                ApiError::new(ErrorCode::PairingCodeInvalid, "that is not a pairing code (8 characters like 7KQF-M2XD)")
            })?;
            let device = crate::pairing::redeem(&state, &code, &new).await?;
            let replaced = existed.as_deref() == Some(device.id.as_str());
            (device, replaced)
        }
        (None, Some(Principal::User(user))) => {
            if !user.scopes.allows(Scope::PairingCreate) {
                return Err(ApiError::new(
                    ErrorCode::InsufficientScope,
                    "registering a node needs the pairing:create scope",
                ));
            }
            new.owner_id = user.user.id.clone();
            let r =
                state.store().register_device(&new).await?.ok_or_else(|| {
                    ApiError::new(ErrorCode::NodeIdTaken, "another account's device has this node_id")
                })?;
            (r.device, r.replaced)
        }
        (None, _) => {
            return Err(ApiError::new(
                ErrorCode::TokenMissing,
                "registration needs metadata.pairing_code, or Authorization: Bearer <API token>",
            ));
        }
    };
    if replaced {
        // The old key's holder may still have a tunnel up: it ends now.
        crate::devices::close_live_tunnel(&state, &device.owner_id, &device.id).await;
    }
    tracing::info!(device_id = %device.id, user_id = %device.owner_id, replaced, "node registered");
    Ok((
        StatusCode::CREATED,
        axum::Json(Registered {
            node_id: node,
            device_id: device.id,
            status: if replaced { "updated" } else { "registered" }.into(),
        }),
    ))
}

/// `POST /api/v1/auth/login` body.
#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    /// The node (or device id).
    #[serde(alias = "device_id")]
    pub node_id: String,
}

/// `POST /api/v1/auth/login`: `{node_id}` → `{challenge, expires_in,
/// expires_at}`; then `auth/verify` as for any device.
pub async fn login(
    State(state): State<AppState>,
    uri: axum::http::Uri,
    Json(req): Json<LoginRequest>,
) -> Result<crate::device_auth::NoStore<crate::device_auth::ChallengeResponse>, ApiError> {
    crate::device_auth::challenge(
        State(state),
        uri,
        Json(crate::device_auth::ChallengeRequest { device_id: req.node_id }),
    )
    .await
}

/// One node of a listing (seed 000's fields).
#[derive(Debug, Serialize, Deserialize)]
pub struct Node {
    /// The node id (the device id for devices that were not registered
    /// with one).
    pub node_id: String,
    /// The device.
    pub device_id: String,
    /// Display name.
    pub name: String,
    /// Type.
    #[serde(rename = "type")]
    pub node_type: String,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// From registration, if given.
    pub endpoint: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// `active` (tunnel up, or reported within three heartbeat intervals)
    /// or `inactive`.
    pub status: String,
    /// What the node last said about itself (`healthy`, `maintenance`, …).
    pub reported_status: Option<String>,
    /// Its latest load.
    pub load: Option<f64>,
    /// Its latest `available_resources` (or custom metrics).
    pub available_resources: BTreeMap<String, f64>,
    /// Metadata.
    pub metadata: Value,
    /// Last report or authentication, RFC 3339.
    pub last_seen: Option<String>,
}

/// `{"nodes": [...]}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct NodeList {
    /// Matching nodes, newest first.
    pub nodes: Vec<Node>,
    /// How many match in all.
    pub total: i64,
}

/// `GET /api/v1/nodes` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeQuery {
    /// Exact type.
    #[serde(rename = "type")]
    node_type: Option<String>,
    /// All of these, comma-separated.
    capabilities: Option<String>,
    /// Exact region.
    region: Option<String>,
    /// `active` or `inactive`.
    status: Option<String>,
    /// Page size, 1 to 500 (default 100).
    limit: Option<i64>,
    /// Offset.
    offset: Option<i64>,
}

/// `GET /api/v1/nodes` (a user with `device:read`, or a device: its
/// owner's nodes only).
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<NodeQuery>,
) -> Result<axum::Json<NodeList>, ApiError> {
    let owner = principal.owner_id().to_owned();
    let caps: Vec<&str> = q.capabilities.as_deref().unwrap_or("").split(',').filter(|c| !c.is_empty()).collect();
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) || q.offset.is_some_and(|o| o < 0) {
        return Err(ApiError::bad_request("limit must be 1 to 500 and offset ≥ 0"));
    }
    let want_active = match q.status.as_deref() {
        None | Some("") => None,
        Some("active") => Some(true),
        Some("inactive") => Some(false),
        Some(_) => return Err(ApiError::bad_request("status must be active or inactive")),
    };
    let query = DeviceQuery {
        device_type: q.node_type.as_deref().filter(|t| !t.is_empty()).map(|t| fields::label("type", t)).transpose()?,
        region: q.region.as_deref().filter(|r| !r.is_empty()).map(|r| fields::label("region", r)).transpose()?,
        capabilities: fields::capabilities(&caps)?.0,
        limit,
        offset: q.offset.unwrap_or(0),
        ..DeviceQuery::default()
    };
    let (devices, total) = state.store().query_devices(&owner, &query).await?;
    let online: std::collections::HashSet<String> =
        state.store().open_sessions_of_owner(&owner).await?.into_iter().map(|s| s.device_id).collect();
    let latest: HashMap<String, (i64, Option<f64>, Option<Heartbeat>)> = state
        .store()
        .latest_samples(&owner)
        .await?
        .into_iter()
        .map(|l| (l.device_id, (l.at, l.load_1m, l.sample.and_then(|s| serde_json::from_str(&s).ok()))))
        .collect();
    let recent = now_ms() - (state.config().heartbeat_interval * ACTIVE_WITHIN_INTERVALS).as_millis() as i64;
    let mut nodes: Vec<Node> = devices
        .into_iter()
        .map(|d| {
            let l = latest.get(&d.id);
            let active = online.contains(&d.id) || l.is_some_and(|(at, _, _)| *at >= recent);
            node_view(d, active, l)
        })
        .collect();
    if let Some(want) = want_active {
        nodes.retain(|n| (n.status == "active") == want);
    }
    Ok(axum::Json(NodeList { nodes, total }))
}

fn node_view(d: Device, active: bool, latest: Option<&(i64, Option<f64>, Option<Heartbeat>)>) -> Node {
    let sample = latest.and_then(|(_, _, s)| s.as_ref());
    let last = latest.map(|(at, _, _)| *at).into_iter().chain(d.last_seen_at).max();
    Node {
        node_id: d.node_id.clone().unwrap_or_else(|| d.id.clone()),
        endpoint: d.metadata.0.get("endpoint").and_then(Value::as_str).map(str::to_owned),
        region: d.region,
        status: if active { "active" } else { "inactive" }.into(),
        reported_status: sample.and_then(|s| s.status.clone()),
        load: latest.and_then(|(_, l, _)| *l),
        available_resources: sample.map(|s| s.custom.clone()).unwrap_or_default(),
        metadata: Value::Object(d.metadata.0),
        last_seen: last.map(timestamp_ms),
        device_id: d.id,
        name: d.name,
        node_type: d.device_type,
        capabilities: d.capabilities.0,
    }
}

/// The calling device, which must be the node `node` names.
async fn itself(state: &AppState, device: &DevicePrincipal, node: &str) -> Result<Device, ApiError> {
    let d = state.store().owner_device_by_node(&device.owner_id, node).await?.ok_or_else(crate::devices::not_found)?;
    if d.id != device.device_id {
        return Err(ApiError::new(ErrorCode::Forbidden, "a node may only do this for itself"));
    }
    Ok(d)
}

/// `PUT /api/v1/nodes/{id}` body.
#[derive(Debug, Deserialize)]
pub struct NodeUpdate {
    /// The node's own word for its state.
    #[serde(default)]
    pub status: Option<String>,
    /// Its load.
    #[serde(default)]
    pub load: Option<f64>,
    /// Numeric resources (`cpu`, `memory`, …), kept with the latest report.
    #[serde(default)]
    pub available_resources: BTreeMap<String, f64>,
    /// Merged into the device's metadata.
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// `PUT /api/v1/nodes/{id}` (the node itself): status, load and resources
/// are recorded like a heartbeat; metadata is merged into the device's.
pub async fn update(
    State(state): State<AppState>,
    device: DevicePrincipal,
    Path(node): Path<String>,
    Json(u): Json<NodeUpdate>,
) -> Result<axum::Json<Value>, ApiError> {
    let d = itself(&state, &device, &node).await?;
    let beat = Heartbeat { status: u.status, load_1m: u.load, custom: u.available_resources, ..Heartbeat::default() };
    if let Some(problem) = beat.problem() {
        return Err(ApiError::bad_request(format!("bad update: {problem}")));
    }
    if !u.metadata.is_empty() {
        let mut merged = d.metadata.0.clone();
        merged.extend(u.metadata);
        let patch = DevicePatch { metadata: Some(fields::metadata(merged)?), ..DevicePatch::default() };
        state.store().update_device(&device.owner_id, &d.id, &patch).await?;
    }
    let now = now_ms();
    state.telemetry().record(&d.id, &device.owner_id, now, beat);
    Ok(axum::Json(serde_json::json!({
        "node_id": d.node_id.unwrap_or(d.id),
        "status": "updated",
        "updated_at": timestamp_ms(now),
    })))
}

/// `POST /api/v1/nodes/{id}/heartbeat` body (seed 000's shape).
#[derive(Debug, Deserialize)]
pub struct NodeHeartbeat {
    /// The node's own word for its state.
    #[serde(default)]
    pub status: Option<String>,
    /// `cpu_usage`, `memory_usage`, `disk_usage` (percent), `network_in`,
    /// `network_out` (bytes); other numbers are kept as custom metrics.
    #[serde(default)]
    pub metrics: BTreeMap<String, Value>,
}

/// `POST /api/v1/nodes/{id}/heartbeat` (the node itself).
pub async fn heartbeat(
    State(state): State<AppState>,
    device: DevicePrincipal,
    Path(node): Path<String>,
    Json(hb): Json<NodeHeartbeat>,
) -> Result<axum::Json<Value>, ApiError> {
    let d = itself(&state, &device, &node).await?;
    let mut beat = Heartbeat { status: hb.status, ..Heartbeat::default() };
    for (k, v) in hb.metrics {
        let Some(n) = v.as_f64() else { continue };
        match k.as_str() {
            "cpu_usage" => beat.cpu_percent = Some(n),
            "network_in" if n >= 0.0 => beat.network_in_bytes = Some(n as u64),
            "network_out" if n >= 0.0 => beat.network_out_bytes = Some(n as u64),
            "load" => beat.load_1m = Some(n),
            _ => {
                beat.custom.insert(k, n);
            }
        }
    }
    if let Some(problem) = beat.problem() {
        return Err(ApiError::bad_request(format!("bad heartbeat: {problem}")));
    }
    let now = now_ms();
    state.telemetry().record(&d.id, &device.owner_id, now, beat);
    Ok(axum::Json(serde_json::json!({
        "status": "ok",
        "server_time": timestamp_ms(now),
        "interval_secs": state.config().heartbeat_interval.as_secs(),
    })))
}

/// `POST /api/v1/messages/send` body (seed 000's shape).
#[derive(Debug, Deserialize)]
pub struct SendRequest {
    /// The sending node: must be the caller.
    #[serde(default)]
    pub from_node: Option<String>,
    /// The rest, as for `POST /api/v1/messages`.
    #[serde(flatten)]
    pub message: Outgoing,
}

/// `POST /api/v1/messages/send`: `200 {message_id, recipients}`. A device
/// may only name itself as `from_node`; a user or program names none.
pub async fn send(
    State(state): State<AppState>,
    principal: Principal,
    Json(req): Json<SendRequest>,
) -> Result<axum::Json<edgelink_messages::Sent>, ApiError> {
    match (&principal, req.from_node.as_deref().filter(|f| !f.is_empty())) {
        (_, None) => {}
        (Principal::Device(d), Some(from)) => {
            itself(&state, d, from)
                .await
                .map_err(|_| ApiError::new(ErrorCode::Forbidden, "from_node must be the calling node"))?;
        }
        (Principal::User(_), Some(_)) => {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "from_node must be the calling node; users send without it",
            ));
        }
    }
    Ok(axum::Json(send_as(&state, &principal, req.message).await?))
}

/// `GET /api/v1/messages/pending/{node_id}` (the node itself).
pub async fn pending(
    State(state): State<AppState>,
    device: DevicePrincipal,
    Path(node): Path<String>,
) -> Result<axum::Json<MessageList>, ApiError> {
    let d = itself(&state, &device, &node).await?;
    let messages = state.messages().take(&d.id, 100, now_ms()).await?;
    Ok(axum::Json(MessageList { messages }))
}

/// `GET /api/v1/metrics`: the caller's owner's devices and messages in the
/// Prometheus text format (never another owner's data; the operators'
/// process metrics are on the metrics listener).
pub async fn owner_metrics(State(state): State<AppState>, principal: Principal) -> Result<Response, ApiError> {
    let owner = principal.owner_id().to_owned();
    let (devices, _) =
        state.store().query_devices(&owner, &DeviceQuery { limit: 1000, ..DeviceQuery::default() }).await?;
    let online: std::collections::HashSet<String> =
        state.store().open_sessions_of_owner(&owner).await?.into_iter().map(|s| s.device_id).collect();
    let latest = state.store().latest_samples(&owner).await?;
    let counts = state.store().message_counts(&owner, now_ms()).await?;
    let text = edgelink_observe::render_local(|| {
        let up = devices.iter().filter(|d| online.contains(&d.id)).count();
        metrics::gauge!("edgelink_devices", "status" => "online").set(up as f64);
        metrics::gauge!("edgelink_devices", "status" => "offline").set((devices.len() - up) as f64);
        for (status, n) in &counts {
            metrics::gauge!("edgelink_messages", "status" => status.clone()).set(*n as f64);
        }
        // This owner's devices only, at most 1,000 of them.
        for l in &latest {
            let beat: Option<Heartbeat> = l.sample.as_deref().and_then(|s| serde_json::from_str(s).ok());
            let id = l.device_id.clone();
            metrics::gauge!("edgelink_device_last_report_timestamp_seconds", "device_id" => id.clone())
                .set(l.at as f64 / 1000.0);
            if let Some(load) = l.load_1m {
                metrics::gauge!("edgelink_device_load", "device_id" => id.clone()).set(load);
            }
            if let Some(cpu) = beat.as_ref().and_then(|b| b.cpu_percent) {
                metrics::gauge!("edgelink_device_cpu_percent", "device_id" => id.clone()).set(cpu);
            }
            if let Some(m) = beat.as_ref().and_then(|b| b.memory_used_bytes) {
                metrics::gauge!("edgelink_device_memory_used_bytes", "device_id" => id).set(m as f64);
            }
        }
    });
    Ok(([(header::CONTENT_TYPE, edgelink_observe::CONTENT_TYPE)], text).into_response())
}

/// `GET /api/v1/health` (public): `{status, uptime, version}`, uptime in
/// seconds; `503` with `status: "unhealthy"` when the database is down.
pub async fn health(State(state): State<AppState>) -> Response {
    let uptime = STARTED.get().map(|s| s.elapsed().as_secs()).unwrap_or(0);
    let ok = state.store().ping().await.is_ok();
    let body = serde_json::json!({
        "status": if ok { "healthy" } else { "unhealthy" },
        "uptime": uptime,
        "version": env!("CARGO_PKG_VERSION"),
    });
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}
