//! The keys that sign device tokens, fetched from api-server's JWKS: at
//! start, every `jwks_refresh_interval`, and when a token names a key id
//! not seen yet. Each fetch replaces the set, so a key api-server stopped
//! publishing (rotated out, or compromised and removed) stops being
//! accepted at the next refresh.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use edgelink_auth::token::{TokenError, TokenVerifier};
use edgelink_protocol::claims::DeviceClaims;

/// Fetches are at most this frequent, so garbage `kid`s cannot make the
/// relay hammer api-server.
const MIN_REFETCH: Duration = Duration::from_secs(5);

/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 64 * 1024;

/// A [`TokenVerifier`] kept in step with a JWKS URL.
pub struct KeySet {
    url: String,
    http: reqwest::Client,
    verifier: RwLock<TokenVerifier>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    min_refetch: Duration,
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
            min_refetch: MIN_REFETCH,
        }
    }

    /// Refreshes every `every` until `stop`.
    pub async fn refresh_every(&self, every: Duration, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => self.refresh().await,
            }
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
        if last.is_some_and(|t| t.elapsed() < self.min_refetch) {
            return;
        }
        *last = Some(Instant::now());
        let fetched = async {
            let resp = self.http.get(&self.url).send().await.map_err(|e| e.to_string())?;
            let resp = resp.error_for_status().map_err(|e| e.to_string())?;
            let body = resp.bytes().await.map_err(|e| e.to_string())?;
            if body.len() > MAX_JWKS_BYTES {
                return Err(format!("JWKS larger than {MAX_JWKS_BYTES} bytes"));
            }
            serde_json::from_slice::<edgelink_auth::token::JwkSet>(&body).map_err(|e| e.to_string())
        }
        .await;
        match fetched {
            Ok(jwks) => {
                if let Ok(mut v) = self.verifier.write() {
                    let n = v.replace_jwks(&jwks);
                    if n == 0 {
                        tracing::warn!(url = %self.url, "the JWKS has no usable key; keeping the keys we have");
                    } else {
                        tracing::debug!(keys = n, "device token keys loaded");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, url = %self.url, "could not fetch device token keys")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use edgelink_auth::signing::SigningKey;
    use edgelink_auth::token::{JwkSet, TokenIssuer};

    use super::*;

    #[tokio::test]
    async fn keys_no_longer_published_are_retired_at_the_next_refresh() {
        let old = SigningKey::ephemeral().unwrap();
        let new = SigningKey::ephemeral().unwrap();
        let published: Arc<Mutex<JwkSet>> = Arc::new(Mutex::new(old.jwks()));
        let served = published.clone();
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let set = served.lock().unwrap().clone();
                async move { axum::Json(set) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let mut keys = KeySet::new(&url, "iss");
        keys.min_refetch = Duration::ZERO;
        let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let (old_token, _) = TokenIssuer::new(&old, "iss", 300).issue("d", "u", now()).unwrap();
        let (new_token, _) = TokenIssuer::new(&new, "iss", 300).issue("d", "u", now()).unwrap();
        keys.verify(&old_token).await.unwrap();

        // Rotation: api-server publishes both, then only the new key.
        *published.lock().unwrap() = JwkSet { keys: vec![old.public_jwk(), new.public_jwk()] };
        keys.verify(&new_token).await.unwrap();
        keys.verify(&old_token).await.unwrap();
        *published.lock().unwrap() = new.jwks();
        keys.refresh().await;
        assert_eq!(keys.verify(&old_token).await, Err(TokenError::BadSignature), "a retired key still works");
        keys.verify(&new_token).await.unwrap();

        // A broken document changes nothing.
        *published.lock().unwrap() = JwkSet { keys: vec![] };
        keys.refresh().await;
        keys.verify(&new_token).await.unwrap();
    }
}
