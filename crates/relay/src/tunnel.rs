//! `GET /tunnel`: device authentication before the upgrade, then the life
//! of one tunnel session (registry, store, heartbeats, close).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::response::Response;
use edgelink_auth::token::TokenError;
use edgelink_protocol::close::CloseReason;
use edgelink_protocol::error::ErrorCode;
use edgelink_protocol::local_origin::{self, LocalOrigin};
use edgelink_protocol::{bearer, paths};
use edgelink_store::{TunnelSession, now_ms};
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

fn token_error(e: TokenError) -> RelayError {
    let code = match e {
        TokenError::Missing => ErrorCode::TokenMissing,
        TokenError::Expired => ErrorCode::TokenExpired,
        TokenError::BadSignature | TokenError::UnknownKey => ErrorCode::SignatureInvalid,
        TokenError::Invalid => ErrorCode::TokenInvalid,
    };
    RelayError::client(code, format!("device access token refused: {e}"))
}

async fn authorize_and_upgrade(relay: &Relay, addr: SocketAddr, mut req: Request) -> Result<Response, RelayError> {
    // Authenticate before anything else so an anonymous caller learns
    // nothing and costs nothing.
    let token = bearer::token(req.headers())
        .ok_or_else(|| RelayError::client(ErrorCode::TokenMissing, "bearer token required"))?;
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

    let (upgrade_answer, upgrade) =
        edgelink_tunnel::accept(&mut req).map_err(|e| RelayError::client(ErrorCode::BadRequest, e.to_string()))?;
    // One announced local service, well formed, or none: a device whose
    // announcement is not taken keeps streams parsed by heads.
    let (local_origin, echo) = {
        let mut offered = req.headers().get_all(local_origin::HEADER).iter();
        match (offered.next(), offered.next()) {
            (Some(v), None) => match LocalOrigin::parse(v.as_bytes()) {
                Some(o) => (Some(Box::new(o)), Some(v.clone())),
                None => {
                    tracing::info!(device_id = %claims.sub, "ignoring a malformed local origin announcement");
                    (None, None)
                }
            },
            _ => (None, None),
        }
    };

    let session_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("tunnel", session_id = %session_id, device_id = %claims.sub);
    let relay2 = relay.clone();
    let id2 = session_id.clone();
    relay.tasks().spawn(
        async move {
            let relay_in = relay2.clone();
            let id_in = id2.clone();
            let device_in: Arc<str> = Arc::from(claims.sub.as_str());
            let budget = crate::control::StreamBudget::new();
            let (registered_tx, registered) = tokio::sync::watch::channel(false);
            // Every future this task awaits only once (the upgrade, the
            // store writes) is boxed: the task's own state then stays small
            // for as long as the tunnel is up (it was 8 KiB per idle tunnel
            // with them inline).
            let started = Box::pin(upgrade.into_session(&relay2.tunnel_config(), move |stream| {
                crate::control::spawn_device_stream(
                    relay_in.clone(),
                    id_in.clone(),
                    device_in.clone(),
                    &budget,
                    registered.clone(),
                    stream,
                );
            }))
            .await;
            match started {
                Ok(session) => {
                    let device = Device { id: claims.sub, owner: claims.owner, addr, local_origin };
                    run_session(relay2, session, id2, device, registered_tx).await
                }
                Err(e) => tracing::info!(error = %e, "tunnel upgrade failed"),
            }
        }
        .instrument(span),
    );

    let mut resp = upgrade_answer.map(|()| axum::body::Body::empty());
    if let Ok(v) = HeaderValue::from_str(&session_id) {
        resp.headers_mut().insert(paths::SESSION_HEADER, v);
    }
    if let Some(v) = echo {
        resp.headers_mut().insert(local_origin::HEADER, v);
    }
    Ok(resp)
}

/// The device at the other end of a session.
struct Device {
    id: String,
    owner: String,
    addr: SocketAddr,
    local_origin: Option<Box<LocalOrigin>>,
}

async fn run_session(
    relay: Relay,
    session: edgelink_tunnel::Session,
    id: String,
    device: Device,
    registered: tokio::sync::watch::Sender<bool>,
) {
    let edgelink_tunnel::Session { handle, ended } = session;
    let Device { id: device_id, owner: owner_id, addr, local_origin } = device;
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
        streams: crate::pool::idle(),
        budget: crate::pool::budget(),
        local_origin,
    });
    // The store learns of the session before it becomes visible in
    // memory: a session the internal API shows is always in the store.
    // (The record lives only for that write, not for the tunnel's life.)
    let recorded = {
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
        Box::pin(relay.store().open_session(&record)).await
    };
    if let Err(e) = recorded {
        tracing::error!(error = %e, "could not record session; closing it");
        live.close(CloseReason::Shutdown);
    } else {
        if let Some(old) = relay.registry().insert(live.clone()) {
            tracing::info!(replaced = %old.id, "new connection replaces the device's previous session");
            old.close(CloseReason::Replaced);
        }
        registered.send_replace(true);
        // A message (or command) queued while the tunnel came up found no
        // session to notify; the agent's first fetch may have run before
        // it was stored. Tell the device now if anything waits.
        let (relay, live) = (relay.clone(), Arc::clone(&live));
        tokio::spawn(async move {
            if let Ok(true) = relay.store().has_undelivered_messages(&live.device_id, now_ms()).await {
                let notice = edgelink_internal_api::Notify { topic: "messages".into() };
                crate::internal::spawn_notice(live, &notice);
            }
        });
    }
    tracing::info!(remote_addr = %addr, "tunnel up");
    metrics::counter!("edgelink_tunnels_accepted_total").increment(1);
    let open = metrics::gauge!("edgelink_tunnels_open");
    open.increment(1.0);

    let end = ended.await;
    open.decrement(1.0);
    live.streams.clear();
    relay.registry().remove(&id);
    let reason = end.close_reason();
    metrics::counter!("edgelink_tunnels_closed_total", "reason" => reason.as_str()).increment(1);
    tracing::info!(reason = reason.as_str(), ?end, "tunnel down");
    if let Err(e) = Box::pin(relay.store().close_session(&id, now_ms(), reason.as_str())).await {
        tracing::warn!(error = %e, "could not record session close");
    }
}
