//! The internal API on :3801: session list, lookup, close, and the raw
//! forward. Every request needs the internal bearer secret.

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use edgelink_internal_api::{CloseResult, Notify, NotifyResult, SessionList};
use edgelink_protocol::close::CloseReason;
use edgelink_protocol::error::ErrorCode;

use tracing::Instrument;

use crate::Relay;
use crate::error::RelayError;

/// The internal API's routes.
pub fn router(relay: Relay) -> Router {
    Router::new()
        .route("/internal/sessions", get(list))
        .route("/internal/session/{id}", get(show))
        .route("/internal/session/{id}/close", post(close))
        .route("/internal/session/{id}/notify", post(notify))
        .route("/internal/forward/{id}", any(crate::forward::forward))
        .route("/internal/forward/{id}/", any(crate::forward::forward))
        .route("/internal/forward/{id}/{*path}", any(crate::forward::forward))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state("remote-proxy-internal", edgelink_observe::track))
        .layer(axum::middleware::from_fn_with_state(relay.clone(), require_secret))
        .with_state(relay)
}

/// Refuses any request without the internal secret (compared in constant
/// time). Runs before routing, so unknown paths are 401 too.
async fn require_secret(State(relay): State<Relay>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    // One span per request, with the session or device id the path names.
    let target = path.strip_prefix("/internal/").and_then(|r| r.split('/').nth(1)).unwrap_or("");
    let span = tracing::info_span!("internal", method = %req.method(), path = %path, target_id = %target);
    match edgelink_protocol::bearer::token(req.headers()) {
        None => RelayError::client(ErrorCode::TokenMissing, "internal secret required").into_response_at(&path),
        Some(given) if !relay.secret_matches(given.as_bytes()) => {
            RelayError::client(ErrorCode::TokenInvalid, "internal secret does not match").into_response_at(&path)
        }
        Some(_) => next.run(req).instrument(span).await,
    }
}

async fn not_found(uri: axum::http::Uri) -> Response {
    RelayError::client(ErrorCode::NotFound, "no such route").into_response_at(uri.path())
}

async fn list(State(relay): State<Relay>) -> axum::Json<SessionList> {
    let sessions: Vec<_> = relay.registry().all().iter().map(|s| s.summary()).collect();
    axum::Json(SessionList { total: sessions.len(), sessions })
}

async fn show(State(relay): State<Relay>, Path(id): Path<String>, uri: axum::http::Uri) -> Response {
    match relay.registry().get(&id) {
        Some(s) if !s.handle.is_closed() => axum::Json(s.summary()).into_response(),
        _ => RelayError::client(ErrorCode::SessionNotFound, "no such live session").into_response_at(uri.path()),
    }
}

async fn close(State(relay): State<Relay>, Path(id): Path<String>, uri: axum::http::Uri) -> Response {
    match relay.registry().get(&id) {
        Some(s) => {
            tracing::info!(session_id = %id, device_id = %s.device_id, "session closed through the internal API");
            s.close(CloseReason::ClosedByOperator);
            axum::Json(CloseResult { token: id, closed: true }).into_response()
        }
        None => RelayError::client(ErrorCode::SessionNotFound, "no such live session").into_response_at(uri.path()),
    }
}

/// Sends `notice` to the device of `session` in the background (false
/// when it cannot be encoded). A lost notice costs latency only.
pub(crate) fn spawn_notice(session: std::sync::Arc<crate::registry::LiveSession>, notice: &Notify) -> bool {
    let request = axum::http::Request::post(edgelink_protocol::paths::NOTIFY)
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(serde_json::to_vec(notice).unwrap_or_default()));
    let Ok(request) = request else {
        return false;
    };
    tokio::spawn(async move {
        let sent = crate::pool::exchange(&session, request, edgelink_hop::Pending::default(), NOTIFY_TIMEOUT).await;
        match sent {
            Ok(resp) => {
                // Drain so the stream goes back to the pool.
                let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                metrics::counter!("edgelink_relay_notifies_total", "result" => "sent").increment(1);
            }
            Err(RelayError::DeviceTimeout) => {
                metrics::counter!("edgelink_relay_notifies_total", "result" => "timeout").increment(1);
                tracing::debug!(device_id = %session.device_id, "notice timed out");
            }
            Err(e) => {
                metrics::counter!("edgelink_relay_notifies_total", "result" => "failed").increment(1);
                tracing::debug!(device_id = %session.device_id, error = %e, "notice not delivered");
            }
        }
    });
    true
}

/// How long a notice may take to reach the device.
const NOTIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `POST /internal/session/{id}/notify` (a session or device id): sends
/// `POST /.edgelink/v1/notify` to the device in the background and answers
/// at once. A lost notice costs latency only: devices also fetch on connect
/// and periodically (ADR 20).
async fn notify(
    State(relay): State<Relay>,
    Path(id): Path<String>,
    uri: axum::http::Uri,
    axum::Json(body): axum::Json<Notify>,
) -> Response {
    let Some(session) = relay.registry().by_session_or_device(&id) else {
        return RelayError::client(ErrorCode::SessionNotFound, "no such live session").into_response_at(uri.path());
    };
    if body.topic.is_empty() || body.topic.len() > 64 {
        return RelayError::client(ErrorCode::BadRequest, "topic must be 1 to 64 bytes").into_response_at(uri.path());
    }
    let token = session.id.clone();
    if !spawn_notice(session, &body) {
        return RelayError::client(ErrorCode::BadRequest, "bad notice").into_response_at(uri.path());
    }
    axum::Json(NotifyResult { token, notified: true }).into_response()
}
