//! Streams the device opens: requests to the relay's control API
//! (`/.edgelink/v1/heartbeat`, `/.edgelink/v1/messages`). Each stream
//! carries HTTP/1.1.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use edgelink_protocol::error::{ErrorBody, ErrorCode};
use edgelink_protocol::heartbeat::{Heartbeat, HeartbeatAck};
use edgelink_protocol::{limits, paths};
use edgelink_store::now_ms;
use edgelink_tunnel::TunnelStream;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::Relay;
use crate::error::{rfc3339_ms, timestamp};

/// Heartbeats reach the store at most this often per session.
const HEARTBEAT_STORE_EVERY_MS: i64 = 10_000;

/// How many streams one tunnel's device may have open at once (see
/// [`limits::MAX_DEVICE_STREAMS`]).
#[derive(Clone)]
pub struct StreamBudget(Arc<Semaphore>);

impl StreamBudget {
    /// A full budget for a new tunnel.
    pub fn new() -> Self {
        StreamBudget(Arc::new(Semaphore::new(limits::MAX_DEVICE_STREAMS)))
    }
}

impl Default for StreamBudget {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves one device-opened stream on its own task, if the tunnel's budget
/// allows another; otherwise the stream is closed at once. A stream's
/// request head, and its body, must each arrive within the relay's
/// `header_timeout`, and an idle stream is closed after as long.
///
/// `registered` turns true once the session is in the registry: a device
/// may open a stream (a first heartbeat) as soon as its tunnel is up,
/// before the relay has recorded the session, and such a stream waits for
/// it (within `header_timeout`) rather than being told the session is gone.
pub fn spawn_device_stream(
    relay: Relay,
    session_id: String,
    device_id: Arc<str>,
    budget: &StreamBudget,
    registered: tokio::sync::watch::Receiver<bool>,
    stream: TunnelStream,
) {
    let Ok(permit) = budget.0.clone().try_acquire_owned() else {
        tracing::debug!(session_id = %session_id, "device opened too many streams at once; closing the newest");
        drop(stream);
        return;
    };
    let header_timeout = relay.header_timeout();
    let span = tracing::debug_span!("device_stream", session_id = %session_id);
    tokio::spawn(
        async move {
            let _permit = permit;
            let mut registered = registered;
            // Registered, or the session ended before it was (the sender is
            // gone): either way the handler finds out from the registry.
            let _ = tokio::time::timeout(header_timeout, registered.wait_for(|r| *r)).await;
            let open = metrics::gauge!("edgelink_tunnel_streams_open", "opened_by" => "device");
            open.increment(1.0);
            let _open = scopeguard(move || open.decrement(1.0));
            let svc = hyper::service::service_fn(move |req| {
                handle(relay.clone(), session_id.clone(), device_id.clone(), req)
            });
            edgelink_hop::serve(stream, svc, header_timeout).await;
        }
        .instrument(span),
    );
}

/// Runs `f` when dropped (a stream task ends however it ends).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    resp
}

fn error(code: ErrorCode, message: &str, path: &str) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::BAD_REQUEST);
    json(status, &ErrorBody::new(code, message, path, timestamp()))
}

async fn handle(
    relay: Relay,
    session_id: String,
    device_id: Arc<str>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if path == paths::HEARTBEAT {
        if method != hyper::Method::POST {
            return Ok(error(ErrorCode::MethodNotAllowed, "heartbeats are POSTed", &path));
        }
        return Ok(heartbeat(relay, session_id, req).await);
    }
    if path == paths::MESSAGES {
        if method != hyper::Method::GET {
            return Ok(error(ErrorCode::MethodNotAllowed, "messages are fetched with GET", &path));
        }
        return Ok(take_messages(relay, &device_id, req.uri().query()).await);
    }
    if let Some(id) =
        path.strip_prefix(paths::MESSAGES).and_then(|r| r.strip_prefix('/')).and_then(|r| r.strip_suffix("/ack"))
    {
        if method != hyper::Method::POST {
            return Ok(error(ErrorCode::MethodNotAllowed, "acknowledgements are POSTed", &path));
        }
        return Ok(ack_message(relay, &device_id, id, &path).await);
    }
    if let Some(rest) = path.strip_prefix(paths::COMMANDS).and_then(|r| r.strip_prefix('/')) {
        if method != hyper::Method::POST {
            return Ok(error(ErrorCode::MethodNotAllowed, "commands are claimed and reported with POST", &path));
        }
        if let Some(id) = rest.strip_suffix("/claim") {
            return Ok(claim_command(relay, &device_id, id, &path).await);
        }
        if let Some(id) = rest.strip_suffix("/result") {
            return Ok(command_result(relay, &device_id, id, req, &path).await);
        }
    }
    Ok(error(ErrorCode::NotFound, "no such control path", &path))
}

/// `POST /.edgelink/v1/commands/{id}/claim`: the device takes its pending
/// native command `id` (now running) and gets what to run.
async fn claim_command(relay: Relay, device_id: &str, id: &str, path: &str) -> Response<Full<Bytes>> {
    match relay.store().claim_device_command(device_id, id, now_ms()).await {
        Ok(Some(row)) => {
            let extra: serde_json::Value =
                row.args.as_deref().and_then(|a| serde_json::from_str(a).ok()).unwrap_or_default();
            let mut answer = serde_json::json!({
                "command_id": row.id,
                "command": row.command,
                "args": extra.get("args").cloned().unwrap_or_else(|| serde_json::json!([])),
                "env": extra.get("env").cloned().unwrap_or_else(|| serde_json::json!({})),
                "timeout_ms": row.timeout_ms,
            });
            // An SSH target: its credential is sealed to this device's key
            // (ADR 27); the relay passes it on unopened.
            if let Some(sealed) = row.secret_sealed.as_deref() {
                answer["target"] = serde_json::json!({
                    "host": row.host,
                    "port": row.port,
                    "username": row.username,
                    "host_key": row.host_key,
                    "secret_sealed": sealed,
                });
            }
            json(StatusCode::OK, &answer)
        }
        Ok(None) => error(ErrorCode::NotFound, "no pending command with this id for this device", path),
        Err(e) => {
            tracing::warn!(error = %e, "could not claim a command");
            error(ErrorCode::Unavailable, "commands are unavailable right now; try again", path)
        }
    }
}

/// How the agent reports a native command's end.
#[derive(serde::Deserialize)]
struct Reported {
    #[serde(default)]
    stdout: String,
    #[serde(default)]
    stderr: String,
    #[serde(default)]
    exit_code: Option<i32>,
    /// Why it did not run (refused by the device's policy, …).
    #[serde(default)]
    error: Option<String>,
    /// Its owner's cancel stopped it.
    #[serde(default)]
    canceled: bool,
    /// stdout went past the device's output cap.
    #[serde(default)]
    stdout_truncated: bool,
    /// stderr went past the device's output cap.
    #[serde(default)]
    stderr_truncated: bool,
}

/// `POST /.edgelink/v1/commands/{id}/result`: how the device's running
/// command `id` ended.
async fn command_result(
    relay: Relay,
    device_id: &str,
    id: &str,
    req: Request<Incoming>,
    path: &str,
) -> Response<Full<Bytes>> {
    // Two capped outputs and a little more.
    const MAX: usize = 4 * 1024 * 1024;
    let Ok(body) = Limited::new(req.into_body(), MAX).collect().await else {
        return error(ErrorCode::PayloadTooLarge, "the result is too large", path);
    };
    let Ok(r) = serde_json::from_slice::<Reported>(&body.to_bytes()) else {
        return error(ErrorCode::BadRequest, "the result is not the expected JSON", path);
    };
    let end = edgelink_store::CommandEnd {
        status: if r.canceled {
            "canceled"
        } else if r.error.is_none() && r.exit_code == Some(0) {
            "succeeded"
        } else {
            "failed"
        },
        ran_on: None,
        stdout: Some(r.stdout),
        stderr: Some(r.stderr),
        exit_code: r.exit_code,
        error: r.error,
        stdout_truncated: Some(r.stdout_truncated),
        stderr_truncated: Some(r.stderr_truncated),
    };
    match relay.store().finish_device_command(device_id, id, &end, now_ms()).await {
        Ok(true) => json(StatusCode::OK, &serde_json::json!({ "command_id": id, "status": end.status })),
        Ok(false) => error(ErrorCode::NotFound, "no running command with this id for this device", path),
        Err(e) => {
            tracing::warn!(error = %e, "could not record a command's result");
            error(ErrorCode::Unavailable, "the result could not be recorded; send it again", path)
        }
    }
}

/// `GET /.edgelink/v1/messages?limit=N`: the device's unread messages,
/// highest priority first, then oldest (at most `limit`, default 100).
/// The device is the tunnel's (known before its session is registered).
async fn take_messages(relay: Relay, device_id: &str, query: Option<&str>) -> Response<Full<Bytes>> {
    let path = paths::MESSAGES;
    let limit = match query.unwrap_or("").split('&').find_map(|kv| kv.strip_prefix("limit=")) {
        None => 100,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=edgelink_messages::MAX_TAKE).contains(&n) => n,
            _ => return error(ErrorCode::BadRequest, "limit must be 1 to 500", path),
        },
    };
    match relay.messages().take(device_id, limit, now_ms()).await {
        Ok(messages) => json(StatusCode::OK, &serde_json::json!({ "messages": messages })),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the device's messages");
            error(ErrorCode::Unavailable, "messages are unavailable right now; try again", path)
        }
    }
}

/// `POST /.edgelink/v1/messages/{id}/ack`: the device handled `id`.
async fn ack_message(relay: Relay, device_id: &str, id: &str, path: &str) -> Response<Full<Bytes>> {
    match relay.messages().ack(device_id, id, now_ms()).await {
        Ok(edgelink_messages::Ack::Read) => json(StatusCode::OK, &serde_json::json!({ "id": id, "status": "read" })),
        Ok(edgelink_messages::Ack::Expired) => {
            error(ErrorCode::MessageExpired, "this message expired before it was read", path)
        }
        Ok(edgelink_messages::Ack::Unknown) => error(ErrorCode::NotFound, "no such message for this device", path),
        Err(e) => {
            tracing::warn!(error = %e, "could not acknowledge a message");
            error(ErrorCode::Unavailable, "acknowledgement failed; send it again", path)
        }
    }
}

async fn heartbeat(relay: Relay, session_id: String, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = paths::HEARTBEAT;
    let body = Limited::new(req.into_body(), limits::MAX_CONTROL_BODY).collect();
    let body = match tokio::time::timeout(relay.header_timeout(), body).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => {
            return error(ErrorCode::PayloadTooLarge, "heartbeat body too large", path);
        }
        Err(_) => return error(ErrorCode::RequestTimeout, "heartbeat body too slow", path),
    };
    let beat: Heartbeat = if body.is_empty() {
        Heartbeat::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return error(ErrorCode::BadRequest, &format!("bad heartbeat: {e}"), path);
            }
        }
    };
    if let Some(problem) = beat.problem() {
        return error(ErrorCode::BadRequest, &format!("bad heartbeat: {problem}"), path);
    }
    let Some(session) = relay.registry().get(&session_id) else {
        return error(ErrorCode::SessionNotFound, "session is closing", path);
    };
    let now = now_ms();
    session.last_heartbeat.store(now, Ordering::Relaxed);
    let stored = session.heartbeat_stored_at.load(Ordering::Relaxed);
    if now - stored >= HEARTBEAT_STORE_EVERY_MS
        && session.heartbeat_stored_at.compare_exchange(stored, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        && let Err(e) = relay.store().session_heartbeat(&session_id, now).await
    {
        tracing::warn!(error = %e, "could not store heartbeat");
    }
    tracing::debug!(cpu = ?beat.cpu_percent, "heartbeat");
    relay.telemetry().record(&session.device_id, &session.owner_id, now, beat);
    let ack = HeartbeatAck {
        session: session_id,
        server_time: rfc3339_ms(now),
        interval_secs: Some(relay.heartbeat_interval().as_secs()),
    };
    json(StatusCode::OK, &ack)
}
