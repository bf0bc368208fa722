//! The keys that sign device tokens, fetched from api-server's JWKS and
//! refreshed when a token names a key id not seen yet.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use edgelink_auth::token::{TokenError, TokenVerifier};
use edgelink_protocol::claims::DeviceClaims;

/// Fetches are at most this frequent, so garbage `kid`s cannot make the
/// relay hammer api-server.
const MIN_REFETCH: Duration = Duration::from_secs(5);

/// A [`TokenVerifier`] kept in step with a JWKS URL.
pub struct KeySet {
    url: String,
    http: reqwest::Client,
    verifier: RwLock<TokenVerifier>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl KeySet {
    /// A key set for tokens from `issuer`, keys at `url`.
    pub fn new(url: &str, issuer: &str) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        KeySet {
            url: url.to_owned(),
            http,
            verifier: RwLock::new(TokenVerifier::new(issuer)),
            last_fetch: tokio::sync::Mutex::new(None),
        }
    }

    /// Verifies `token`, fetching the JWKS first if its key is unknown.
    pub async fn verify(&self, token: &str) -> Result<DeviceClaims, TokenError> {
        match self.verify_cached(token) {
            Err(TokenError::UnknownKey) => {}
            other => return other,
        }
        self.refresh().await;
        match self.verify_cached(token) {
            Err(TokenError::UnknownKey) => Err(TokenError::BadSignature),
            other => other,
        }
    }

    fn verify_cached(&self, token: &str) -> Result<DeviceClaims, TokenError> {
        match self.verifier.read() {
            Ok(v) => v.verify(token),
            Err(_) => Err(TokenError::Invalid),
        }
    }

    /// Fetches the JWKS unless that was done moments ago.
    pub async fn refresh(&self) {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < MIN_REFETCH) {
            return;
        }
        *last = Some(Instant::now());
        let fetched = async {
            let resp = self.http.get(&self.url).send().await?.error_for_status()?;
            resp.json::<edgelink_auth::token::JwkSet>().await
        }
        .await;
        match fetched {
            Ok(jwks) => {
                if let Ok(mut v) = self.verifier.write() {
                    let n = v.add_jwks(&jwks);
                    tracing::info!(keys = n, "device token keys loaded");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, url = %self.url, "could not fetch device token keys")
            }
        }
    }
}
