//! remote-proxy: holds device tunnels and serves the internal API.
//!
//! Devices dial `GET /tunnel` on the tunnel port with a device access token;
//! the relay checks it (and the device's state in the store) before the
//! WebSocket upgrade, then runs a yamux session over it as the yamux client.
//! The internal API lists and closes sessions and forwards raw HTTP to a
//! device. This crate never talks to the OIDC provider and never issues
//! tokens; it only verifies them with api-server's published keys.
//!
//! # Layout
//! * [`config`]: the relay's configuration, [`RelayConfig`].
//! * [`tunnel`]: `/tunnel`, authentication and each session's lifecycle.
//! * [`control`]: streams the device opens (heartbeats).
//! * [`registry`]: live sessions in memory.
//! * [`internal`], [`forward`]: the internal API; [`front`]: its listener's
//!   connections, forwarding by heads before the router; [`pool`]:
//!   keep-alive HTTP connections over tunnel streams.
//! * [`keys`]: device-token keys from api-server's JWKS.
//! * [`origin`]: the device-origin listener (each device's web service on
//!   its own origin, ADR 22).
//! * [`listener`]: accept loops (TLS optional) and graceful shutdown.
//!
//! # Entry point
//! [`run`] with two bound listeners and a cancellation token;
//! [`run_with_devices`] with the device-origin listener too.

pub mod config;
pub mod control;
pub mod error;
pub mod forward;
pub mod front;
pub mod internal;
pub mod keys;
pub mod listener;
pub mod origin;
pub mod pool;
pub mod registry;
pub mod tunnel;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use edgelink_protocol::close::CloseReason;
use edgelink_store::{Store, now_ms};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::RelayConfig;
pub use error::RelayError;
use keys::KeySet;
use registry::Registry;

/// Shared state of the relay. Cheap to clone.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

struct Inner {
    /// Validated configuration.
    config: RelayConfig,
    /// Persistence: device state and the stored session registry.
    store: Store,
    /// Verifies device access tokens.
    keys: KeySet,
    /// Live sessions of this instance.
    registry: Registry,
    /// This instance's id in the stored registry.
    instance_id: String,
    /// This instance's internal API URL, as others reach it.
    internal_url: String,
    /// Tunnel timings and buffers.
    tunnel: edgelink_tunnel::TunnelConfig,
    /// Session tasks, so shutdown can wait for them.
    tasks: TaskTracker,
    /// Devices' heartbeats, written in batches.
    telemetry: Arc<edgelink_telemetry::Telemetry>,
    /// Devices take and acknowledge their messages over the tunnel.
    messages: edgelink_messages::Messages,
    /// Device origins, when configured.
    origins: Option<origin::Origins>,
}

impl Relay {
    fn new(config: RelayConfig, store: Store, internal_addr: SocketAddr, origins: Option<origin::Origins>) -> Self {
        let keys = KeySet::new(&config.jwks_url, &config.token_issuer);
        let instance_id = config.instance_id();
        let internal_url = config.internal_url(internal_addr);
        let tunnel = config.tunnel_config();
        let registry = Registry::default();
        let telemetry = Arc::new(edgelink_telemetry::Telemetry::new(store.clone()));
        // Sending (and its limits) is api-server's; the relay only hands out
        // and acknowledges.
        let messages = edgelink_messages::Messages::new(store.clone(), edgelink_messages::Limits::default());
        Relay {
            inner: Arc::new(Inner {
                config,
                store,
                keys,
                registry,
                instance_id,
                internal_url,
                tunnel,
                tasks: TaskTracker::new(),
                telemetry,
                messages,
                origins,
            }),
        }
    }

    /// Devices' heartbeats.
    pub fn telemetry(&self) -> &edgelink_telemetry::Telemetry {
        &self.inner.telemetry
    }

    /// Device origins, when configured.
    pub fn origins(&self) -> Option<&origin::Origins> {
        self.inner.origins.as_ref()
    }

    /// Devices' messages.
    pub fn messages(&self) -> &edgelink_messages::Messages {
        &self.inner.messages
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Live sessions.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    fn keys(&self) -> &KeySet {
        &self.inner.keys
    }

    fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    /// This instance's internal API URL.
    pub fn internal_url(&self) -> &str {
        &self.inner.internal_url
    }

    fn tunnel_config(&self) -> edgelink_tunnel::TunnelConfig {
        self.inner.tunnel.clone()
    }

    fn forward_timeout(&self) -> Duration {
        self.inner.config.forward_timeout
    }

    fn heartbeat_interval(&self) -> Duration {
        self.inner.config.heartbeat_interval
    }

    fn header_timeout(&self) -> Duration {
        self.inner.config.header_timeout
    }

    fn secret_matches(&self, given: &[u8]) -> bool {
        match &self.inner.config.internal_secret {
            Some(s) => edgelink_auth::secret::ct_eq(given, s.expose_secret().as_bytes()),
            None => false,
        }
    }
}

/// `GET /readyz`: the relay can take tunnels only while its database
/// answers (sessions are written there before they are used). The port is
/// public: it says nothing more (how many tunnels there are is for
/// operators, on the internal API's `/internal/sessions`).
async fn ready(axum::extract::State(relay): axum::extract::State<Relay>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match relay.store().ping().await {
        Ok(()) => axum::Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(_) => RelayError::client(edgelink_protocol::error::ErrorCode::Unavailable, "database unreachable")
            .into_response_at("/readyz"),
    }
}

/// The tunnel port's routes.
pub fn tunnel_router(relay: Relay) -> Router {
    Router::new()
        .route(edgelink_protocol::paths::TUNNEL, get(tunnel::accept))
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }))
        .route("/readyz", get(ready))
        .fallback(|uri: axum::http::Uri| async move {
            RelayError::client(edgelink_protocol::error::ErrorCode::NotFound, "no such route")
                .into_response_at(uri.path())
        })
        .layer(axum::middleware::from_fn_with_state("remote-proxy", edgelink_observe::track))
        .with_state(relay)
}

/// Runs remote-proxy on the two listeners until `shutdown` is cancelled,
/// then stops accepting, closes every tunnel with `shutdown` and records
/// them as disconnected.
pub async fn run(
    config: RelayConfig,
    store: Store,
    tunnel_listener: TcpListener,
    internal_listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    run_with_devices(config, store, tunnel_listener, internal_listener, None, shutdown).await
}

/// [`run`], also serving device origins on `devices_listener` (required
/// when `config.devices` is set).
pub async fn run_with_devices(
    config: RelayConfig,
    store: Store,
    tunnel_listener: TcpListener,
    internal_listener: TcpListener,
    devices_listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    config.validate().map_err(RelayError::Internal)?;
    if config.ws_read_buffer.is_some() {
        tracing::warn!(
            "ws_read_buffer no longer has an effect (tunnel buffers exist only while data flows); remove it"
        );
    }
    let origins = match &config.devices {
        None => None,
        Some(d) => {
            let secret =
                config.internal_secret.clone().ok_or_else(|| RelayError::Internal("no internal secret".into()))?;
            let tls = edgelink_hop::tls::client_config(None).map_err(|e| RelayError::Internal(e.to_string()))?;
            let forwarder = edgelink_internal_api::forward::Forwarder::new(secret, config.forward_timeout, tls);
            Some(origin::Origins::new(d, store.clone(), forwarder).map_err(RelayError::Internal)?)
        }
    };
    let devices_tls = match config.devices.as_ref().and_then(|d| d.tls_cert.clone().zip(d.tls_key.clone())) {
        Some((cert, key)) => Some(listener::tls_acceptor("devices.tls_cert", &cert, &key)?),
        None => None,
    };
    if origins.is_some() != devices_listener.is_some() {
        return Err(RelayError::Internal("device origins need both config.devices and a devices listener".into()));
    }
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(listener::tls_acceptor("tls_cert", cert, key)?),
        _ => None,
    };
    let internal_tls = match (&config.internal_tls_cert, &config.internal_tls_key) {
        (Some(cert), Some(key)) => Some(listener::tls_acceptor("internal_tls_cert", cert, key)?),
        _ => None,
    };
    let internal_addr = internal_listener.local_addr().map_err(|e| RelayError::Internal(e.to_string()))?;
    // The URL callers will use, defaulted from the bound address: plain
    // http across machines would carry the internal secret in the clear.
    edgelink_protocol::origin::check_service_url(
        "internal_url",
        &config.internal_url(internal_addr),
        &["http", "https"],
        config.allow_insecure_internal_url,
    )
    .map_err(RelayError::Internal)?;
    let jwks_every = config.jwks_refresh_interval;
    let relay = Relay::new(config, store, internal_addr, origins);
    let grace = relay.inner.config.shutdown_grace;
    let limits = edgelink_hop::listen::Limits {
        header_timeout: relay.inner.config.header_timeout,
        max_connections: relay.inner.config.max_connections,
        grace,
    };

    // A previous life of this instance may have died without recording
    // its sessions' end.
    let stale = relay
        .store()
        .close_sessions_of_relay(relay.instance_id(), now_ms(), CloseReason::RelayRestarted.as_str())
        .await?;
    if stale > 0 {
        tracing::info!(sessions = stale, "closed sessions left open by a previous run");
    }
    relay.keys().refresh().await;
    let flusher = relay.inner.telemetry.spawn(relay.inner.config.telemetry_flush_interval);
    let stop_refreshing = CancellationToken::new();
    let refresher = {
        let relay = relay.clone();
        let stop = stop_refreshing.clone();
        tokio::spawn(async move { relay.keys().refresh_every(jwks_every, stop).await })
    };
    // Kept streams idle too long are let go even when no request comes to
    // take or return one (a device splicing its streams holds a connection
    // to its service for each): one task for every session, so an idle
    // tunnel holds no timer of its own.
    let sweeper = {
        let relay = relay.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(pool::POOL_IDLE);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                for s in relay.registry().snapshot() {
                    s.streams.expire();
                }
            }
        })
    };
    tracing::info!(instance_id = relay.instance_id(), internal_url = relay.internal_url(), "remote-proxy ready");

    let stop_accepting = CancellationToken::new();
    use edgelink_hop::listen::{router_service, serve};
    let tunnel_task = tokio::spawn(serve(
        tunnel_listener,
        tls,
        router_service(tunnel_router(relay.clone())),
        limits,
        stop_accepting.clone(),
    ));
    // The internal and device listeners forward by heads in front of
    // their routers.
    let internal_task = tokio::spawn(front::run(
        internal_listener,
        internal_tls,
        limits,
        stop_accepting.clone(),
        front::Internal::new(relay.clone()),
        internal::router(relay.clone()),
    ));
    let devices_task = devices_listener.map(|l| {
        tokio::spawn(front::run(
            l,
            devices_tls,
            limits,
            stop_accepting.clone(),
            front::Devices::new(relay.clone()),
            origin::router(relay.clone()),
        ))
    });

    shutdown.cancelled().await;
    tracing::info!(sessions = relay.registry().len(), "shutting down");
    stop_accepting.cancel();
    for s in relay.registry().all() {
        s.close(CloseReason::Shutdown);
    }
    relay.tasks().close();
    if tokio::time::timeout(grace, relay.tasks().wait()).await.is_err() {
        tracing::warn!("some tunnels did not close within the grace period");
    }
    stop_refreshing.cancel();
    flusher.abort();
    sweeper.abort();
    if let Err(e) = relay.telemetry().flush().await {
        tracing::warn!(error = %e, "could not write the last telemetry batch");
    }
    let _ = tokio::join!(tunnel_task, internal_task, refresher);
    if let Some(t) = devices_task {
        let _ = t.await;
    }
    relay.store().close_sessions_of_relay(relay.instance_id(), now_ms(), CloseReason::Shutdown.as_str()).await?;
    Ok(())
}
