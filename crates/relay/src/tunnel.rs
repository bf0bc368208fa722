//! `GET /tunnel`: device authentication before the upgrade, then the life
//! of one tunnel session (registry, store, heartbeats, close).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use edgelink_auth::token::TokenError;
use edgelink_protocol::close::CloseReason;
use edgelink_protocol::error::ErrorCode;
use edgelink_protocol::paths;
use edgelink_store::{TunnelSession, now_ms};
use edgelink_tunnel::read_ahead::ReadAhead;
use edgelink_tunnel::{Role, SessionEnd};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
use tracing::Instrument;

use crate::Relay;
use crate::error::RelayError;
use crate::registry::LiveSession;

/// The `/tunnel` handler.
pub async fn accept(State(relay): State<Relay>, ConnectInfo(addr): ConnectInfo<SocketAddr>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    match authorize_and_upgrade(&relay, addr, req).await {
        Ok(resp) => resp,
        Err(e) => {
            log_refusal(&e);
            e.into_response_at(&path)
        }
    }
}

fn log_refusal(e: &RelayError) {
    tracing::info!(error = e.code().name(), "tunnel refused");
}

/// The bearer token of a request, if it has one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

fn token_error(e: TokenError) -> RelayError {
    let code = match e {
        TokenError::Missing => ErrorCode::TokenMissing,
        TokenError::Expired => ErrorCode::TokenExpired,
        TokenError::BadSignature | TokenError::UnknownKey => ErrorCode::SignatureInvalid,
        TokenError::Invalid => ErrorCode::TokenInvalid,
    };
    RelayError::client(code, format!("device access token refused: {e}"))
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(token))
}

async fn authorize_and_upgrade(relay: &Relay, addr: SocketAddr, mut req: Request) -> Result<Response, RelayError> {
    // Authenticate before anything else so an anonymous caller learns
    // nothing and costs nothing.
    let token =
        bearer(req.headers()).ok_or_else(|| RelayError::client(ErrorCode::TokenMissing, "bearer token required"))?;
    let claims = relay.keys().verify(token).await.map_err(token_error)?;
    let creds = relay.store().device_credentials(&claims.sub).await?;
    match creds {
        None => {
            return Err(RelayError::client(ErrorCode::DeviceRevoked, "device no longer exists"));
        }
        Some(c) if c.revoked_at.is_some() => {
            return Err(RelayError::client(ErrorCode::DeviceRevoked, "device is revoked"));
        }
        Some(c) if c.owner_id != claims.owner => {
            return Err(RelayError::client(ErrorCode::TokenInvalid, "token owner does not match the device"));
        }
        Some(_) => {}
    }

    let headers = req.headers();
    let is_ws = req.method() == axum::http::Method::GET
        && header_has(headers, header::UPGRADE, "websocket")
        && header_has(headers, header::CONNECTION, "upgrade")
        && headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| is_ws)
        .ok_or_else(|| RelayError::client(ErrorCode::BadRequest, "a WebSocket upgrade (version 13) is required"))?;
    let accept_key = derive_accept_key(key.as_bytes());
    let wants_subprotocol = header_has(headers, header::SEC_WEBSOCKET_PROTOCOL, paths::SUBPROTOCOL);
    let on_upgrade = hyper::upgrade::on(&mut req);

    let session_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("tunnel", session_id = %session_id, device_id = %claims.sub);
    let relay2 = relay.clone();
    let id2 = session_id.clone();
    relay.tasks().spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => run_session(relay2, upgraded, id2, claims.sub, claims.owner, addr).await,
                Err(e) => tracing::info!(error = %e, "tunnel upgrade failed"),
            }
        }
        .instrument(span),
    );

    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept_key) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if wants_subprotocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(paths::SUBPROTOCOL));
    }
    if let Ok(v) = HeaderValue::from_str(&session_id) {
        h.insert(paths::SESSION_HEADER, v);
    }
    Ok(resp)
}

async fn run_session(
    relay: Relay,
    upgraded: hyper::upgrade::Upgraded,
    id: String,
    device_id: String,
    owner_id: String,
    addr: SocketAddr,
) {
    let cfg = relay.tunnel_config();
    // Socket reads go through a read-ahead buffer that exists only while
    // data flows: tungstenite's own buffer can then be small (idle memory)
    // without making bulk transfers read the socket in small pieces.
    let io = ReadAhead::new(TokioIo::new(upgraded), edgelink_tunnel::READ_AHEAD);
    let ws = WebSocketStream::from_raw_socket(io, WsRole::Server, Some(cfg.websocket_config())).await;
    let relay_in = relay.clone();
    let id_in = id.clone();
    let (handle, task) = edgelink_tunnel::session::spawn(ws, Role::Relay, &cfg, move |stream| {
        crate::control::spawn_device_stream(relay_in.clone(), id_in.clone(), stream);
    });
    let now = now_ms();
    let live = Arc::new(LiveSession {
        id: id.clone(),
        device_id: device_id.clone(),
        owner_id: owner_id.clone(),
        remote_addr: addr.to_string(),
        connected_at: now,
        last_heartbeat: AtomicI64::new(now),
        heartbeat_stored_at: AtomicI64::new(now),
        handle,
    });
    let record = TunnelSession {
        id: id.clone(),
        device_id,
        owner_id,
        relay_id: relay.instance_id().to_owned(),
        relay_url: relay.internal_url().to_owned(),
        remote_addr: addr.to_string(),
        connected_at: now,
        last_heartbeat: now,
        disconnected_at: None,
        close_reason: None,
    };
    // The store learns of the session before it becomes visible in
    // memory: a session the internal API shows is always in the store.
    if let Err(e) = relay.store().open_session(&record).await {
        tracing::error!(error = %e, "could not record session; closing it");
        live.close(CloseReason::Shutdown);
    } else if let Some(old) = relay.registry().insert(live.clone()) {
        tracing::info!(replaced = %old.id, "new connection replaces the device's previous session");
        old.close(CloseReason::Replaced);
    }
    tracing::info!(remote_addr = %addr, "tunnel up");

    let end = task.await.unwrap_or_else(|e| SessionEnd::Broken(e.to_string()));
    relay.registry().remove(&id);
    let reason = close_reason(&end);
    tracing::info!(reason = reason.as_str(), ?end, "tunnel down");
    if let Err(e) = relay.store().close_session(&id, now_ms(), reason.as_str()).await {
        tracing::warn!(error = %e, "could not record session close");
    }
}

/// Why a session ended, in registry terms.
pub fn close_reason(end: &SessionEnd) -> CloseReason {
    match end {
        SessionEnd::Local(Some((code, _))) => CloseReason::from_code(*code).unwrap_or(CloseReason::ClosedByOperator),
        SessionEnd::Local(None) => CloseReason::Shutdown,
        SessionEnd::Remote(..) => CloseReason::Disconnected,
        SessionEnd::TimedOut => CloseReason::Timeout,
        SessionEnd::Broken(msg) => {
            let m = msg.to_ascii_lowercase();
            if m.contains("decode") || m.contains("invalid") || m.contains("protocol") || m.contains("text message") {
                CloseReason::ProtocolError
            } else {
                CloseReason::Disconnected
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer  xyz "));
        assert_eq!(bearer(&h), Some("xyz"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn end_reasons_map_to_close_reasons() {
        assert_eq!(close_reason(&SessionEnd::TimedOut), CloseReason::Timeout);
        assert_eq!(close_reason(&SessionEnd::Local(Some((4000, "replaced".into())))), CloseReason::Replaced);
        assert_eq!(close_reason(&SessionEnd::Remote(1000, String::new())), CloseReason::Disconnected);
        assert_eq!(
            close_reason(&SessionEnd::Broken("text message on a binary tunnel".into())),
            CloseReason::ProtocolError
        );
    }
}
