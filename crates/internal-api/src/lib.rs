//! remote-proxy's internal API: the wire types and an HTTP client.
//!
//! api-server and the `remote-proxy sessions` operator CLI use [`Client`];
//! remote-proxy serves the same types. This crate knows nothing of tunnels
//! or databases: only the JSON that crosses the internal network.
//!
//! Endpoints (all need `Authorization: Bearer <internal secret>`):
//! * `GET /internal/sessions` → [`SessionList`]
//! * `GET /internal/session/{id}` → [`SessionSummary`] (404 when unknown
//!   or disconnected)
//! * `POST /internal/session/{id}/close` → [`CloseResult`] (404 when unknown)
//! * `ANY /internal/forward/{id}/{*path}` → the device's answer (`id` is a
//!   session id or, for a URL that survives reconnects, a device id)

pub mod forward;

use std::time::Duration;

use edgelink_protocol::error::ErrorBody;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// One live tunnel session as the internal API reports it. Field names
/// follow the original internal client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// The session id: an opaque handle, never a credential.
    pub token: String,
    /// Whether the session is live.
    pub connected: bool,
    /// When the device connected, RFC 3339.
    pub connected_at: String,
    /// The last heartbeat (or connect time), RFC 3339.
    pub last_heartbeat: String,
    /// The device's address as the relay saw it.
    pub remote_addr: String,
    /// The owner's user id.
    pub user_id: String,
    /// The device id.
    pub device_id: String,
}

/// `GET /internal/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionList {
    /// Live sessions on this relay instance.
    pub sessions: Vec<SessionSummary>,
    /// Their number.
    pub total: usize,
}

/// `POST /internal/session/{id}/close`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseResult {
    /// The closed session.
    pub token: String,
    /// Always true on 200.
    pub closed: bool,
}

/// `POST /internal/session/{id}/notify`: tells the device something is
/// waiting for it (it fetches it over the tunnel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    /// What is waiting: `messages`.
    pub topic: String,
}

/// Answer to [`Notify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyResult {
    /// The session.
    pub token: String,
    /// True when the notice was handed to the tunnel (the device may still
    /// miss it: it also fetches on connect and periodically).
    pub notified: bool,
}

/// Errors from [`Client`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The relay answered 404: no such live session.
    #[error("session not found")]
    NotFound,
    /// The relay refused the internal secret.
    #[error("unauthorized: check the internal secret")]
    Unauthorized,
    /// The relay answered with another error.
    #[error("relay answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The error body's message, or the raw body start.
        message: String,
    },
    /// The relay could not be reached or answered garbage.
    #[error("internal API call failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// The base URL is unusable.
    #[error("invalid internal API URL: {0}")]
    Url(String),
}

/// A client of one relay instance's internal API.
#[derive(Clone)]
pub struct Client {
    base: String,
    secret: SecretString,
    http: reqwest::Client,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).field("secret", &"[redacted]").finish()
    }
}

impl Client {
    /// A client for the relay at `base_url` (e.g. `http://127.0.0.1:3801`),
    /// trusting the web PKI for https.
    pub fn new(base_url: &str, secret: SecretString) -> Result<Self, Error> {
        Self::with_tls(base_url, secret, None)
    }

    /// A client for the relay at `base_url` verifying https with `tls`
    /// (`edgelink_hop::tls::client_config`, e.g. with a private CA).
    pub fn with_tls(
        base_url: &str,
        secret: SecretString,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Result<Self, Error> {
        let base = base_url.trim_end_matches('/').to_owned();
        if edgelink_protocol::origin::parse_url(&base, &["http", "https"]).is_none() {
            return Err(Error::Url(base));
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        if let Some(tls) = tls {
            builder = builder.tls_backend_preconfigured((*tls).clone());
        }
        Ok(Client { base, secret, http: builder.build()? })
    }

    /// The relay's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn call<T: serde::de::DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, Error> {
        let resp = req.bearer_auth(self.secret.expose_secret()).send().await?;
        let status = resp.status().as_u16();
        match status {
            200 => Ok(resp.json().await?),
            401 => Err(Error::Unauthorized),
            404 => Err(Error::NotFound),
            _ => {
                let text = resp.text().await.unwrap_or_default();
                let message = serde_json::from_str::<ErrorBody>(&text)
                    .map(|b| b.message)
                    .unwrap_or_else(|_| text.chars().take(200).collect());
                Err(Error::Status { status, message })
            }
        }
    }

    /// `GET /internal/sessions`.
    pub async fn list_sessions(&self) -> Result<SessionList, Error> {
        self.call(self.http.get(self.url("/internal/sessions"))).await
    }

    /// `GET /internal/session/{id}`; [`Error::NotFound`] when unknown or
    /// disconnected.
    pub async fn get_session(&self, id: &str) -> Result<SessionSummary, Error> {
        let s: SessionSummary =
            self.call(self.http.get(self.url(&format!("/internal/session/{}", encode(id))))).await?;
        if !s.connected {
            return Err(Error::NotFound);
        }
        Ok(s)
    }

    /// `POST /internal/session/{id}/close`.
    pub async fn close_session(&self, id: &str) -> Result<CloseResult, Error> {
        self.call(self.http.post(self.url(&format!("/internal/session/{}/close", encode(id))))).await
    }

    /// `POST /internal/session/{id}/notify`.
    pub async fn notify(&self, id: &str, topic: &str) -> Result<NotifyResult, Error> {
        let body = Notify { topic: topic.to_owned() };
        self.call(self.http.post(self.url(&format!("/internal/session/{}/notify", encode(id)))).json(&body)).await
    }

    /// The URL of the raw forward to `path` on session `id`'s device.
    pub fn forward_url(&self, id: &str, path: &str) -> String {
        self.url(&format!("/internal/forward/{}/{}", encode(id), path.trim_start_matches('/')))
    }
}

/// A session id as one path segment (ids are UUIDs, but the client must
/// not let a caller's string change the path).
pub(crate) fn encode(segment: &str) -> String {
    edgelink_protocol::paths::encode_segment(segment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode("abc-123"), "abc-123");
        assert_eq!(encode("../x"), "..%2Fx");
        assert_eq!(encode("a b?c"), "a%20b%3Fc");
    }

    #[test]
    fn bad_base_url_is_refused_and_secret_is_not_printed() {
        assert!(Client::new("ftp://x", SecretString::from("s")).is_err());
        let c = Client::new("http://127.0.0.1:3801/", SecretString::from("hunter2")).unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:3801");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.forward_url("s1", "/a/b?x=1"), "http://127.0.0.1:3801/internal/forward/s1/a/b?x=1");
    }
}
