//! A client of api-server's REST API (docs/api.md) for programs: every call
//! carries `Authorization: Bearer <API token>`, answers are JSON, errors
//! are the API's error body as a typed [`Error`]. [`table`] renders
//! answers for people (the `edgelink` command).

pub mod table;

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// api-server answered with its error body.
    #[error("{message} ({error}, HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Machine name (`insufficient_scope`, …).
        error: String,
        /// What the server said.
        message: String,
    },
    /// No answer, or not one from api-server.
    #[error("cannot reach {0}")]
    Transport(String),
    /// The server URL is not http(s).
    #[error("--server must be an http(s) URL, not {0:?}")]
    Url(String),
}

impl Error {
    /// True for 401/403: the token is wrong, expired, revoked or lacks a
    /// scope.
    pub fn is_auth(&self) -> bool {
        matches!(self, Error::Api { status: 401 | 403, .. })
    }
}

/// api-server at one base URL, with one API token.
pub struct Client {
    base: String,
    token: SecretString,
    http: reqwest::Client,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).field("token", &"[redacted]").finish()
    }
}

impl Client {
    /// A client of `server` (e.g. `https://edge.example.com`).
    pub fn new(server: &str, token: SecretString) -> Result<Self, Error> {
        let base = server.trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(Error::Url(base));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::Transport(e.to_string()))?;
        Ok(Client { base, token, http })
    }

    /// `method path` with an optional JSON body; the answer's JSON (null
    /// for 204).
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value, Error> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(self.token.expose_secret());
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| Error::Transport(format!("{}: {e}", self.base)))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| Error::Transport(e.to_string()))?;
        if (200..300).contains(&status) {
            return Ok(if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::Null) });
        }
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Err(Error::Api {
            status,
            error: body["error"].as_str().unwrap_or("unknown").to_owned(),
            message: body["message"].as_str().unwrap_or(text.trim()).to_owned(),
        })
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Result<Value, Error> {
        self.call(reqwest::Method::GET, path, None).await
    }
}

/// `s` as one path segment (ids are UUID-like; nothing may add a segment).
pub fn segment(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')).collect()
}
