//! api-server: the public REST API. It authenticates devices
//! (challenge/response, access and refresh tokens), publishes the key that
//! signs device tokens, signs browser users in through their OpenID
//! provider as a backend-for-frontend (the browser only ever holds an HMAC
//! session cookie), pairs devices with one-time codes, and serves each
//! user's devices: their records and their web services.
//!
//! It never holds tunnels and never opens one: remote-proxy does. It owns
//! the mapping of every error to the JSON error body ([`error::ApiError`]).
//!
//! # Layout
//! * [`routes`]: the route table; [`principal`]: the gate that enforces it.
//! * [`browser`]: sign-in, logout and the session list;
//!   [`sessions`]: browser sessions themselves; [`cookies`]: cookie names
//!   and attributes.
//! * [`device_auth`]: challenge/verify/refresh for devices;
//!   [`pairing`]: one-time codes; [`device_fields`]: the rules of a
//!   device's user-set fields.
//! * [`devices`]: device records; [`device_proxy`]: their web services.
//! * [`provision`]: the operator commands; [`ui`]: the web UI.
//! * [`error`]: the one error→response mapping; [`config`], [`cache`],
//!   [`client_ip`], [`ratelimit`].
//!
//! # Entry points
//! * [`AppState::new`] and [`router`]: the axum app, for `oneshot` tests;
//!   [`routes::routes`] is the table it is built from, with each route's
//!   [`principal::Access`].
//! * [`serve`]: run it on a listener until shutdown.
//! * [`provision::add_device`]: the operator's `device add` command.

pub mod api_tokens;
pub mod body_deadline;
pub mod browser;
pub mod cache;
pub mod client_ip;
pub mod commands;
pub mod config;
pub mod cookies;
pub mod device_auth;
pub mod device_fields;
pub mod device_proxy;
pub mod devices;
pub mod error;
pub mod front;
pub mod messages;
pub mod node_api;
pub mod openapi;
pub mod origins;
pub mod pairing;
pub mod principal;
pub mod provision;
pub mod ratelimit;
pub mod routes;
pub mod sessions;
pub mod telemetry;
pub mod ui;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use edgelink_auth::cookie::CookieKeys;
use edgelink_auth::signing::SigningKey;
use edgelink_auth::token::{TokenIssuer, TokenVerifier};
use edgelink_oidc::Provider;
use edgelink_store::Store;

use crate::cookies::CookiePolicy;

pub use config::ApiConfig;
pub use error::ApiError;

/// Largest JSON body the API accepts.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    /// All persistence.
    store: Store,
    /// The key device tokens are signed with; its public half is the JWKS.
    signing_key: SigningKey,
    /// Signs device access tokens.
    issuer: TokenIssuer,
    /// Verifies device access tokens presented as bearer tokens.
    verifier: TokenVerifier,
    /// Signs and verifies browser cookies.
    cookie_keys: CookieKeys,
    /// The browser sign-in provider, when configured.
    oidc: Option<Provider>,
    /// `public_url` as an origin.
    public_origin: edgelink_protocol::origin::WebOrigin,
    /// Load balancers whose `X-Forwarded-For` is believed.
    trusted_proxies: Vec<client_ip::Cidr>,
    /// Per-address limits of the anonymous device endpoints.
    /// Request counts per principal and per client address, shared with
    /// the other instances through the store.
    limiter: std::sync::Arc<edgelink_ratelimit::Limiter>,
    /// Wrong pairing codes from everyone, per hour.
    pairing_budget: ratelimit::FailureBudget,
    /// Programs' API tokens.
    api_tokens: edgelink_tokens::ApiTokens,
    /// Devices' REST heartbeats, written in batches.
    telemetry: std::sync::Arc<edgelink_telemetry::Telemetry>,
    /// Store-and-forward messages.
    messages: std::sync::Arc<edgelink_messages::Messages>,
    /// Device origins' domain, when configured.
    devices_domain: Option<edgelink_origins::DevicesDomain>,
    /// Verified machine-client tokens (token → principal), for cache_ttl.
    service_cache: cache::TtlCache<String, principal::UserPrincipal>,
    /// API token uses refused for their address, since start.
    ip_refusals: std::sync::atomic::AtomicU64,
    /// Whether the "X-Forwarded-For without trusted_proxies" warning was
    /// logged (once per process).
    warned_untrusted_proxy: std::sync::atomic::AtomicBool,
    /// Browser sessions: lookup (cached), creation, ending.
    sessions: sessions::BrowserSessions,
    /// Devices' web services through their relays.
    device_proxy: device_proxy::DeviceProxy,
    /// Seed 001's intermediaries: registration and login.
    intermediaries: std::sync::Arc<edgelink_commands::Intermediaries>,
    /// Connected intermediaries and their commands.
    command_hub: std::sync::Arc<edgelink_commands::Hub>,
    /// The Socket.IO service with the `/proxy` namespace.
    socket_io: commands::SocketIoService,
    /// Validated configuration.
    config: ApiConfig,
}

impl AppState {
    /// Builds the state from a store, the token signing key, the cookie
    /// keys and the config. The binary runs [`ApiConfig::validate`] first;
    /// this only refuses what it cannot build (public_url, OIDC settings),
    /// so tests may use values outside the operator limits (short TTLs).
    pub fn new(
        store: Store,
        signing_key: SigningKey,
        cookie_keys: CookieKeys,
        config: ApiConfig,
    ) -> Result<Self, String> {
        let issuer = TokenIssuer::new(&signing_key, &config.token_issuer, config.access_token_ttl.as_secs() as i64);
        let verifier = TokenVerifier::new(&config.token_issuer).with_signing_key(&signing_key);
        let oidc = config.oidc_config().map(Provider::new).transpose().map_err(|e| e.to_string())?;
        let public_origin = config.public_origin()?;
        let trusted_proxies = config.trusted_proxies.clone();
        let limiter = std::sync::Arc::new(edgelink_ratelimit::Limiter::new(Some(store.clone())));
        let pairing_budget = ratelimit::FailureBudget::per_hour(config.pairing_failures_per_hour);
        let api_tokens = edgelink_tokens::ApiTokens::new(store.clone(), cookie_keys.clone(), config.cache_ttl);
        let telemetry = std::sync::Arc::new(edgelink_telemetry::Telemetry::new(store.clone()));
        let messages = std::sync::Arc::new(edgelink_messages::Messages::new(store.clone(), config.messages.limits()));
        let device_proxy = device_proxy::DeviceProxy::new(&config)?;
        let intermediaries =
            std::sync::Arc::new(edgelink_commands::Intermediaries::new(store.clone(), cookie_keys.clone()));
        let command_hub = edgelink_commands::Hub::new(store.clone());
        let socket_io = commands::socket_io(intermediaries.clone(), command_hub.clone());
        let sessions = sessions::BrowserSessions::new(
            store.clone(),
            config.cache_ttl,
            config.session.idle_timeout,
            config.session.absolute_lifetime,
        );
        Ok(AppState {
            inner: Arc::new(Inner {
                store,
                signing_key,
                issuer,
                verifier,
                cookie_keys,
                oidc,
                public_origin,
                trusted_proxies,
                limiter,
                pairing_budget,
                warned_untrusted_proxy: Default::default(),
                api_tokens,
                telemetry,
                messages,
                devices_domain: origins::domain(&config),
                service_cache: cache::TtlCache::new(config.cache_ttl, 10_000),
                ip_refusals: Default::default(),
                sessions,
                device_proxy,
                intermediaries,
                command_hub,
                socket_io,
                config,
            }),
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    fn issuer(&self) -> &TokenIssuer {
        &self.inner.issuer
    }

    fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    fn token_verifier(&self) -> &TokenVerifier {
        &self.inner.verifier
    }

    fn cookie_keys(&self) -> &CookieKeys {
        &self.inner.cookie_keys
    }

    fn cookie_policy(&self) -> CookiePolicy {
        CookiePolicy { secure: !self.inner.config.session.insecure_cookies }
    }

    fn public_origin(&self) -> &edgelink_protocol::origin::WebOrigin {
        &self.inner.public_origin
    }

    /// The caller's address (see [`client_ip`]).
    fn client_ip(&self, peer: Option<std::net::SocketAddr>, headers: &http::HeaderMap) -> Option<std::net::IpAddr> {
        if self.inner.trusted_proxies.is_empty()
            && headers.contains_key(&client_ip::X_FORWARDED_FOR)
            && !self.inner.warned_untrusted_proxy.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                peer = ?peer.map(|p| p.ip()),
                "requests arrive with X-Forwarded-For but trusted_proxies is empty: if a load balancer is in \
                 front, every client behind it shares one rate-limit bucket (one guessing client blocks pairing \
                 for all); list it in trusted_proxies"
            );
        }
        client_ip::client_ip(&self.inner.trusted_proxies, peer, headers)
    }

    /// Browser sessions.
    pub(crate) fn sessions(&self) -> &sessions::BrowserSessions {
        &self.inner.sessions
    }

    /// Devices' web services through their relays.
    pub(crate) fn device_proxy(&self) -> &device_proxy::DeviceProxy {
        &self.inner.device_proxy
    }

    fn telemetry(&self) -> &edgelink_telemetry::Telemetry {
        &self.inner.telemetry
    }

    fn devices_domain(&self) -> Option<&edgelink_origins::DevicesDomain> {
        self.inner.devices_domain.as_ref()
    }

    fn messages(&self) -> &edgelink_messages::Messages {
        &self.inner.messages
    }

    fn service_cache(&self) -> &cache::TtlCache<String, principal::UserPrincipal> {
        &self.inner.service_cache
    }

    fn intermediaries(&self) -> &edgelink_commands::Intermediaries {
        &self.inner.intermediaries
    }

    fn command_hub(&self) -> &edgelink_commands::Hub {
        &self.inner.command_hub
    }

    fn socket_io(&self) -> &commands::SocketIoService {
        &self.inner.socket_io
    }

    /// Ends the connections of intermediary `id` here (revoked or rotated).
    fn kick_intermediary(&self, id: &str) {
        self.inner.command_hub.kick(id);
    }

    fn api_tokens(&self) -> &edgelink_tokens::ApiTokens {
        &self.inner.api_tokens
    }

    /// Counts an API token refused for its address; returns the total.
    fn count_ip_refusal(&self) -> u64 {
        self.inner.ip_refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    fn pairing_budget(&self) -> &ratelimit::FailureBudget {
        &self.inner.pairing_budget
    }

    fn limiter(&self) -> &edgelink_ratelimit::Limiter {
        &self.inner.limiter
    }

    /// Requests per minute of an anonymous route's per-address limit.
    fn per_minute(&self, limit: ratelimit::Limit) -> u32 {
        match limit {
            ratelimit::Limit::PairingExchange => self.inner.config.pairing_exchange_per_minute,
            ratelimit::Limit::DeviceAuth | ratelimit::Limit::IntermediaryHandshake => {
                self.inner.config.device_auth_per_minute
            }
        }
    }

    /// The browser sign-in provider, when configured.
    pub fn oidc(&self) -> Option<&Provider> {
        self.inner.oidc.as_ref()
    }
}

/// The axum app: exactly the routes of [`routes::routes`], each behind its
/// access gate.
pub fn router(state: AppState) -> Router {
    node_api::mark_start();
    let mut router = Router::new();
    for route in routes::routes() {
        let path = route.path;
        router = router.route(path, route.into_method_router(&state));
    }
    router
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(axum::middleware::from_fn_with_state(state.config().body_timeout, body_deadline::enforce))
        .layer(axum::middleware::from_fn_with_state("api-server", edgelink_observe::track))
        .layer(axum::middleware::from_fn(request_span))
        .with_state(state)
}

/// One span per request: method, path (never the query, which may carry
/// a sign-in code) and the device id when the path names one.
async fn request_span(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use tracing::Instrument;
    let path = req.uri().path();
    let device_id = path.strip_prefix("/api/v1/devices/").and_then(|r| r.split('/').next()).unwrap_or("");
    let span = tracing::info_span!("request", method = %req.method(), path = %path, device_id = %device_id);
    next.run(req).instrument(span).await
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn ready(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    state.store().ping().await.map_err(|_| ApiError::unavailable("database unreachable"))?;
    Ok(axum::Json(serde_json::json!({ "status": "ready" })))
}

async fn jwks(axum::extract::State(state): axum::extract::State<AppState>) -> impl axum::response::IntoResponse {
    ([(http::header::CACHE_CONTROL, "public, max-age=300")], axum::Json(state.inner.signing_key.jwks()))
}

/// Serves the API on `listener` until `shutdown` is cancelled, and runs
/// the periodic cleanup of expired challenges meanwhile.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    // Discover the provider in the background: a provider that is down
    // or slow must not delay start (login answers 503 until it is up).
    let warm = state.clone();
    tokio::spawn(async move {
        if let Some(p) = warm.oidc() {
            p.warm_up().await;
        }
    });
    let janitor = tokio::spawn(device_auth::purge_loop(state.clone()));
    let syncer = state.inner.limiter.spawn_sync(state.config().rate_limits.sync_interval);
    let flusher = state.inner.telemetry.spawn(state.config().telemetry_flush_interval);
    let last_flush = state.inner.telemetry.clone();
    let sweeper = state.inner.messages.spawn_sweeper(state.config().messages.sweep_interval);
    // Commands whose intermediary never took them, or never answered.
    let command_sweeper = {
        let hub = state.inner.command_hub.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                hub.sweep().await;
            }
        })
    };
    // Once a day, a log line for each API token that expires within a week.
    let reminder = {
        let state = state.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = state.api_tokens().log_expiring(edgelink_store::now_ms()).await {
                    tracing::warn!(error = %e, "could not check for expiring API tokens");
                }
                tokio::time::sleep(std::time::Duration::from_secs(24 * 3600)).await;
            }
        })
    };
    let limits = edgelink_hop::listen::Limits {
        header_timeout: state.config().header_timeout,
        max_connections: state.config().max_connections,
        grace: std::time::Duration::from_secs(10),
    };
    // The shared accept loop: TCP_NODELAY, head and idle timeouts, a head
    // size limit and a connection cap (slow clients cannot exhaust it).
    // A device's web service by heads in front of the router (ADR 30).
    let app = router(state.clone());
    front::run(listener, state.clone(), app, limits, shutdown).await;
    janitor.abort();
    reminder.abort();
    syncer.abort();
    flusher.abort();
    sweeper.abort();
    command_sweeper.abort();
    if let Err(e) = last_flush.flush().await {
        tracing::warn!(error = %e, "could not write the last telemetry batch");
    }
    Ok(())
}

#[cfg(test)]
mod props;
