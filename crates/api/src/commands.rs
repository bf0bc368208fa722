//! Remote commands at the HTTP edge: seed 001's main-server side (the
//! Socket.IO namespace `/proxy` that intermediaries connect to, `GET|POST
//! /socket.io/`, and the REST routes to register them and send commands
//! through them), native commands for a device's agent, and reading,
//! listing and canceling commands. The rules are `edgelink_commands`'.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use edgelink_commands::{
    CommandRequest, CreateError, CreateRequest, Destination, Hub, Intermediaries, SubmitError, TargetSpec, View,
};
use edgelink_protocol::error::ErrorCode;
use edgelink_protocol::time::rfc3339;
use edgelink_store::{CommandRow, now_ms};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use socketioxide::extract::{Data, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;

use crate::AppState;
use crate::error::{ApiError, Json};
use crate::principal::UserPrincipal;

/// The Socket.IO service api-server mounts at `/socket.io/`.
pub type SocketIoService = tower::util::BoxCloneSyncService<Request, Response, std::convert::Infallible>;

/// Largest Socket.IO message accepted from an intermediary (a result with
/// its capped output).
const MAX_PAYLOAD: u64 = 4 * 1024 * 1024;

/// Builds the Socket.IO service with the `/proxy` namespace.
pub fn socket_io(intermediaries: Arc<Intermediaries>, hub: Arc<Hub>) -> SocketIoService {
    let (svc, io) = socketioxide::SocketIo::builder().max_payload(MAX_PAYLOAD).build_svc();
    let login = {
        let intermediaries = Arc::clone(&intermediaries);
        async move |s: SocketRef, TryData(auth): TryData<Value>| -> Result<(), edgelink_commands::LoginError> {
            // The document's form: the handshake query; its Python
            // example's: the auth payload. Either is accepted.
            let auth = auth.unwrap_or(Value::Null);
            let query: Vec<(String, String)> = s
                .req_parts()
                .uri
                .query()
                .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default();
            let pick = |k: &str| {
                auth.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .or_else(|| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
                    .unwrap_or_default()
            };
            // The address the gate resolved (trusted proxies considered).
            let ip = s.req_parts().extensions.get::<crate::client_ip::ClientAddr>().map(|c| c.0);
            match intermediaries.login(&pick("proxyId"), &pick("apiKey"), ip).await {
                Ok(row) => {
                    s.extensions.insert(row);
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!(error = %e, peer = ?ip, "intermediary refused");
                    Err(e)
                }
            }
        }
    };
    let on_connect = async move |s: SocketRef| {
        let Some(row) = s.extensions.get::<edgelink_store::Intermediary>() else {
            let _ = s.disconnect();
            return;
        };
        let emitter_socket = s.clone();
        let emit: edgelink_commands::Emitter = Arc::new(move |event, data| emitter_socket.emit(event, &data).is_ok());
        let kicked = s.clone();
        let kick: edgelink_commands::Kicker = Arc::new(move || {
            let _ = kicked.clone().disconnect();
        });
        let conn = hub.connect(&row, emit, kick).await;
        let results = Arc::clone(&hub);
        s.on("command_result", async move |s: SocketRef, Data(result): Data<Value>| {
            let ok = results.result(conn, &result).await;
            let answer = if ok {
                json!({"success": true})
            } else {
                json!({"success": false, "error": "unknown commandId for this intermediary"})
            };
            let _ = s.emit("command_result_received", &answer);
        });
        let gone = Arc::clone(&hub);
        s.on_disconnect(async move || gone.disconnect(conn).await);
    };
    io.ns("/proxy", on_connect.with(login));
    tower::util::BoxCloneSyncService::new(tower::ServiceExt::<Request>::map_response(svc, |r: http::Response<_>| {
        r.map(axum::body::Body::new)
    }))
}

/// `GET|POST /socket.io/`: Engine.IO's endpoint (handshake, polling and the
/// WebSocket upgrade); intermediaries authenticate in the `/proxy`
/// namespace's handshake.
pub async fn engine_io(State(state): State<AppState>, req: Request) -> Response {
    use tower::ServiceExt;
    match state.socket_io().clone().oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}

impl From<CreateError> for ApiError {
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::TooMany => ApiError::new(ErrorCode::Conflict, e.to_string()),
            CreateError::Store(s) => s.into(),
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::NotFound => ApiError::new(ErrorCode::NotFound, "no such intermediary"),
            SubmitError::Store(s) => s.into(),
            SubmitError::Invalid(why) => ApiError::bad_request(why),
        }
    }
}

/// A new intermediary and, this once, its key.
#[derive(Debug, Serialize)]
pub struct Created {
    /// As it will be listed (`id` is its `proxyId`).
    #[serde(flatten)]
    pub intermediary: View,
    /// Its `apiKey` (`elp_…`): shown now and never again.
    pub api_key: String,
    /// `id` again, under seed 001's name.
    #[serde(rename = "proxyId")]
    pub proxy_id: String,
    /// `api_key` again, under seed 001's name.
    #[serde(rename = "apiKey")]
    pub api_key_seed: String,
}

/// `POST /api/v1/proxies`.
pub async fn create(
    State(state): State<AppState>,
    user: UserPrincipal,
    Json(req): Json<CreateRequest>,
) -> Result<(StatusCode, axum::Json<Created>), ApiError> {
    let (row, api_key) = state.intermediaries().create(&user.user.id, &req, now_ms()).await?;
    let created = Created {
        proxy_id: row.id.clone(),
        api_key_seed: api_key.clone(),
        intermediary: edgelink_commands::view(&row, false),
        api_key,
    };
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// `GET /api/v1/proxies`.
pub async fn list(State(state): State<AppState>, user: UserPrincipal) -> Result<axum::Json<Value>, ApiError> {
    let rows = state.store().list_intermediaries(&user.user.id).await?;
    let hub = state.command_hub();
    let views: Vec<View> = rows.iter().map(|r| edgelink_commands::view(r, hub.is_connected(&r.id))).collect();
    Ok(axum::Json(json!({ "proxies": views })))
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such intermediary")
}

/// `DELETE /api/v1/proxies/{id}`: revoked; its connection here ends.
pub async fn revoke(
    State(state): State<AppState>,
    user: UserPrincipal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if id.len() > 64 || !state.store().revoke_intermediary(&user.user.id, &id, now_ms()).await? {
        return Err(not_found());
    }
    state.kick_intermediary(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/proxies/{id}/key`: a new key; the old one and the
/// connection made with it end.
pub async fn rotate(
    State(state): State<AppState>,
    user: UserPrincipal,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    if id.len() > 64 {
        return Err(not_found());
    }
    let key = state.intermediaries().rotate(&user.user.id, &id, now_ms()).await?.ok_or_else(not_found)?;
    state.kick_intermediary(&id);
    Ok(axum::Json(json!({ "id": id, "api_key": key, "proxyId": id, "apiKey": key })))
}

/// `POST …/commands`: an SSH server in the intermediary's network, the
/// credentials (kept in memory only), the command and its timeout.
#[derive(Deserialize)]
pub struct CommandBody {
    host: String,
    #[serde(default = "default_port")]
    port: u16,
    username: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    private_key: Option<String>,
    #[serde(default)]
    passphrase: Option<String>,
    #[serde(default)]
    host_key: Option<String>,
    command: String,
    #[serde(default = "default_timeout")]
    timeout_ms: u64,
    #[serde(default)]
    server_id: Option<u64>,
}

fn command_body(body: Value) -> Result<CommandBody, ApiError> {
    serde_json::from_value(body).map_err(|e| ApiError::bad_request(format!("invalid command: {e}")))
}

fn default_port() -> u16 {
    22
}

fn default_timeout() -> u64 {
    30_000
}

impl CommandBody {
    fn into_request(self) -> CommandRequest {
        CommandRequest {
            target: TargetSpec {
                host: self.host,
                port: self.port,
                username: self.username,
                password: self.password.map(Into::into),
                private_key: self.private_key.map(Into::into),
                passphrase: self.passphrase.map(Into::into),
                host_key: self.host_key,
            },
            command: self.command,
            timeout: Duration::from_millis(self.timeout_ms),
            server_id: self.server_id,
        }
    }
}

/// `POST /api/v1/proxies/{id}/commands` → `202 {command_id, …}`.
pub async fn command_to_one(
    State(state): State<AppState>,
    user: UserPrincipal,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    // Ownership first: another user's intermediary is 404 whatever the body.
    if id.len() > 64 || state.store().intermediary(&user.user.id, &id).await?.is_none() {
        return Err(not_found());
    }
    let body = command_body(body)?;
    let row = state.command_hub().submit(&user.user.id, Destination::Intermediary(id), body.into_request()).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(command_view(&row))))
}

/// `POST /api/v1/proxy-groups/{group}/commands` → `202`: any connected
/// member runs it, another one if it drops before answering.
pub async fn command_to_group(
    State(state): State<AppState>,
    user: UserPrincipal,
    Path(group): Path<String>,
    Json(body): Json<Value>,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let known = state.store().list_intermediaries(&user.user.id).await?.iter().any(|i| i.group_name == group);
    if group.is_empty() || group.len() > 100 || !known {
        return Err(not_found());
    }
    let body = command_body(body)?;
    let row = state.command_hub().submit(&user.user.id, Destination::Group(group), body.into_request()).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(command_view(&row))))
}

impl From<edgelink_commands::native::NativeError> for ApiError {
    fn from(e: edgelink_commands::native::NativeError) -> Self {
        use edgelink_commands::native::NativeError;
        match e {
            NativeError::Invalid(why) => ApiError::bad_request(why),
            NativeError::KeyUnsupported(why) => ApiError::new(ErrorCode::Conflict, why),
            e @ NativeError::NotCancelable(_) => ApiError::new(ErrorCode::Conflict, e.to_string()),
            NativeError::NotFound => ApiError::new(ErrorCode::NotFound, "no such command"),
            NativeError::Send(s) => s.into(),
            NativeError::Store(s) => s.into(),
        }
    }
}

/// `POST /api/v1/devices/{id}/commands` → `202`: a command for the
/// device's own agent (run only if its `commands_allow` admits it).
pub async fn command_to_device(
    State(state): State<AppState>,
    user: UserPrincipal,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    // Ownership first: another user's device is 404 whatever the body.
    let device = crate::devices::device_of(&state, &user, &id).await?;
    let body: edgelink_commands::native::DeviceCommand =
        serde_json::from_value(body).map_err(|e| ApiError::bad_request(format!("invalid command: {e}")))?;
    let sender = crate::messages::user_sender(&user);
    let row = edgelink_commands::native::submit(state.store(), state.messages(), &user.user.id, &sender, &device, body)
        .await?;
    crate::messages::notify_recipients(&state, &user.user.id, std::slice::from_ref(&device.id));
    Ok((StatusCode::ACCEPTED, axum::Json(command_view(&row))))
}

/// `GET /api/v1/devices/{id}/commands`: the device's last 50 native
/// commands, newest first.
pub async fn device_commands(
    State(state): State<AppState>,
    user: UserPrincipal,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let device = crate::devices::device_of(&state, &user, &id).await?;
    let rows = state.store().list_device_commands(&user.user.id, &device.id, 50).await?;
    Ok(axum::Json(json!({ "commands": rows.iter().map(command_view).collect::<Vec<_>>() })))
}

/// `POST /api/v1/commands/{id}/cancel`: a command no one has taken yet
/// is `canceled` (never runs); a running native command is stopped by its
/// agent (the answer shows it still `running` with `cancel_requested_at`;
/// it ends `canceled`); a running intermediary command answers `409`.
pub async fn cancel_command(
    State(state): State<AppState>,
    user: UserPrincipal,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    if id.len() > 64 {
        return Err(ApiError::new(ErrorCode::NotFound, "no such command"));
    }
    let sender = crate::messages::user_sender(&user);
    let row = edgelink_commands::native::cancel(state.store(), state.messages(), &user.user.id, &sender, &id).await?;
    if row.status == "canceled" {
        state.command_hub().forget(&id);
    } else if let Some(device_id) = &row.device_id {
        crate::messages::notify_recipients(&state, &user.user.id, std::slice::from_ref(device_id));
    }
    Ok(axum::Json(command_view(&row)))
}

/// `?wait=30s`.
#[derive(Deserialize)]
pub struct WaitQuery {
    #[serde(default)]
    wait: Option<String>,
}

/// `GET /api/v1/commands/{id}[?wait=30s]`: long-polls up to 60 s for
/// the command to end.
pub async fn get_command(
    State(state): State<AppState>,
    user: UserPrincipal,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let missing = || ApiError::new(ErrorCode::NotFound, "no such command");
    if id.len() > 64 {
        return Err(missing());
    }
    let wait = match q.wait.as_deref() {
        None | Some("") => Duration::ZERO,
        Some(w) => parse_wait(w)
            .ok_or_else(|| ApiError::bad_request("wait must be a duration such as 30s or 500ms"))?
            .min(Duration::from_secs(60)),
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Subscribed before reading, so an end between the two is seen.
        let mut ended = state.command_hub().subscribe();
        let row = state.store().command(&user.user.id, &id).await?.ok_or_else(missing)?;
        if !matches!(row.status.as_str(), "pending" | "running") || tokio::time::Instant::now() >= deadline {
            return Ok(axum::Json(command_view(&row)));
        }
        let this = async {
            loop {
                match ended.recv().await {
                    Ok(done) if done == id => return,
                    Ok(_) => {}
                    // Missed some: read the state again.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => std::future::pending().await,
                }
            }
        };
        // A device's agent reports through its relay, which writes the
        // store directly (no notice reaches api-server): read again every
        // 5 ms while the command is young, every 50 ms after its first
        // quarter second (most commands end fast; long ones need no
        // millisecond precision).
        let step = match row.device_id {
            Some(_) => {
                let age = now_ms().saturating_sub(row.started_at.unwrap_or(row.created_at));
                let every = if age < 250 { 5 } else { 50 };
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(every))
            }
            None => deadline,
        };
        let _ = tokio::time::timeout_at(step, this).await;
    }
}

fn command_view(row: &CommandRow) -> Value {
    json!({
        "command_id": row.id,
        "status": row.status,
        "device_id": row.device_id,
        "args": row.args.as_deref().and_then(|a| serde_json::from_str::<Value>(a).ok()).and_then(|a| a.get("args").cloned()),
        "proxy_id": row.intermediary_id,
        "group": row.group_name,
        "ran_on": row.ran_on,
        "host": row.host,
        "port": row.port,
        "username": row.username,
        "host_key": row.host_key,
        "command": row.command,
        "timeout_ms": row.timeout_ms,
        "stdout": row.stdout,
        "stderr": row.stderr,
        "stdout_truncated": row.stdout_truncated,
        "stderr_truncated": row.stderr_truncated,
        "exit_code": row.exit_code,
        "error": row.error,
        "created_at": rfc3339(row.created_at),
        "started_at": row.started_at.map(rfc3339),
        "finished_at": row.finished_at.map(rfc3339),
        "cancel_requested_at": row.cancel_requested_at.map(rfc3339),
    })
}

/// `30s`, `500ms` or plain seconds.
fn parse_wait(w: &str) -> Option<Duration> {
    if let Some(ms) = w.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    w.strip_suffix('s').unwrap_or(w).parse().ok().map(Duration::from_secs)
}
