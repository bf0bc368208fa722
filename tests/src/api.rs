//! api-server alone, on port 0, against a given store: for the sign-in
//! tests, and for running a second instance beside a [`crate::Stack`].

use edgelink_api::{ApiConfig, AppState};
use edgelink_auth::cookie::CookieKeys;
use edgelink_auth::signing::SigningKey;
use edgelink_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A running api-server; stopped on drop.
pub struct Api {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its state (store, provider…).
    pub state: AppState,
    shutdown: CancellationToken,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Sign-in settings for a test provider: `client_id`, with `secret` for a
/// confidential client; short timeouts and no JWKS refetch throttle.
pub fn oidc_settings(issuer: &str, client_id: &str, secret: Option<&str>) -> edgelink_api::config::OidcSettings {
    edgelink_api::config::OidcSettings {
        issuer: issuer.to_owned(),
        client_id: client_id.to_owned(),
        client_secret: secret.map(secrecy::SecretString::from),
        client_auth: edgelink_oidc::ClientAuth::Basic,
        redirect_url: None,
        scopes: vec!["openid".into(), "email".into(), "profile".into()],
        http_timeout: std::time::Duration::from_secs(5),
        jwks_min_refresh_interval: std::time::Duration::ZERO,
        post_logout_redirect_url: None,
        assume_email_verified: false,
        service_audience: None,
    }
}

/// Cookie keys from fixed bytes, so tests can rotate and compare.
pub fn cookie_keys(keys: &[u8]) -> CookieKeys {
    CookieKeys::new(keys.iter().map(|b| vec![*b; 32]).collect()).expect("keys")
}

/// A listener on port 0 and its URL, for when the URL must be known
/// before the server starts (to register it at a provider).
pub async fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    (listener, url)
}

/// Starts api-server on `store` on a new port; see [`serve_on`].
pub async fn spawn(
    store: Store,
    signing_key: SigningKey,
    keys: CookieKeys,
    tweak: impl FnOnce(&mut ApiConfig, &str),
) -> Result<Api, String> {
    let (listener, url) = bind().await;
    serve_on(listener, url, store, signing_key, keys, tweak).await
}

/// Starts api-server on `listener` (reachable at `url`): its `public_url`
/// is `url` with plain-http cookies; `tweak` adjusts the rest.
pub async fn serve_on(
    listener: TcpListener,
    url: String,
    store: Store,
    signing_key: SigningKey,
    keys: CookieKeys,
    tweak: impl FnOnce(&mut ApiConfig, &str),
) -> Result<Api, String> {
    let mut config = ApiConfig { public_url: url.clone(), ..ApiConfig::default() };
    config.session.insecure_cookies = true;
    tweak(&mut config, &url);
    let state = AppState::new(store, signing_key, keys, config)?;
    let shutdown = CancellationToken::new();
    tokio::spawn(edgelink_api::serve(listener, state.clone(), shutdown.clone()));
    Ok(Api { url, state, shutdown })
}
