//! api-server: the public REST API. Today it authenticates devices
//! (challenge/response, access and refresh tokens) and publishes the key
//! that signs device tokens; later issues add browser sign-in, pairing and
//! device access.
//!
//! It never holds tunnels and never opens one: remote-proxy does. It owns
//! the mapping of every error to the JSON error body ([`error::ApiError`]).
//!
//! # Entry points
//! * [`AppState::new`] and [`router`]: the axum app, for `oneshot` tests.
//! * [`serve`]: run it on a listener until shutdown.
//! * [`provision::add_device`]: the operator's `device add` command.

pub mod config;
pub mod device_auth;
pub mod error;
pub mod provision;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use edgelink_auth::signing::SigningKey;
use edgelink_auth::token::TokenIssuer;
use edgelink_store::Store;

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
    /// Validated configuration.
    config: ApiConfig,
}

impl AppState {
    /// Builds the state from a store, the signing key and the config.
    pub fn new(store: Store, signing_key: SigningKey, config: ApiConfig) -> Self {
        let issuer = TokenIssuer::new(&signing_key, &config.token_issuer, config.access_token_ttl.as_secs() as i64);
        AppState { inner: Arc::new(Inner { store, signing_key, issuer, config }) }
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
}

/// The route table: every route api-server serves, with its handler.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/api/v1/auth/challenge", post(device_auth::challenge))
        .route("/api/v1/auth/verify", post(device_auth::verify))
        .route("/api/v1/auth/refresh", post(device_auth::refresh))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .with_state(state)
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

/// Serves the API on `listener` until `shutdown` resolves, and runs the
/// periodic cleanup of expired challenges meanwhile.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let janitor = tokio::spawn(device_auth::purge_loop(state.clone()));
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let res = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    janitor.abort();
    res
}
