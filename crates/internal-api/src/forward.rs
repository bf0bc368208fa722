//! Streaming forward through a relay's `ANY /internal/forward/{id}/{*path}`:
//! bodies are streamed both ways and connections to each relay are pooled
//! and kept alive, so a forwarded request costs no new TCP connection. The
//! caller prepares the request and finishes the answer (upgrades included)
//! with `edgelink_hop`.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use secrecy::{ExposeSecret, SecretString};

/// Body type of forwarded requests.
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Why a forward failed before the device answered.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The relay could not be reached or the connection broke.
    #[error("relay unreachable: {0}")]
    Relay(String),
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The relay URL or target path is not usable.
    #[error("bad target: {0}")]
    Target(String),
}

/// Forwards requests to relays. Cheap to clone.
#[derive(Clone)]
pub struct Forwarder {
    client: HyperClient<HttpsConnector<HttpConnector>, BoxBody>,
    secret: SecretString,
    timeout: Duration,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl Forwarder {
    /// A forwarder presenting `secret` to relays (`http://` or, verified
    /// with `tls`, `https://`); `timeout` bounds the wait for the response
    /// head (bodies and upgraded streams are not bounded).
    pub fn new(secret: SecretString, timeout: Duration, tls: std::sync::Arc<rustls::ClientConfig>) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(connector);
        Forwarder { client, secret, timeout }
    }

    /// Sends `req` (already prepared for this hop by the caller) to
    /// `relay_url`'s forward of device or session `id`, at `target` (path
    /// and query on the device).
    pub async fn forward(
        &self,
        relay_url: &str,
        id: &str,
        target: &str,
        mut req: Request<BoxBody>,
    ) -> Result<Response<hyper::body::Incoming>, ForwardError> {
        let uri = format!(
            "{}/internal/forward/{}/{}",
            relay_url.trim_end_matches('/'),
            crate::encode(id),
            target.trim_start_matches('/')
        );
        *req.uri_mut() = uri.parse().map_err(|_| ForwardError::Target(uri.clone()))?;
        *req.version_mut() = http::Version::HTTP_11;
        let auth = HeaderValue::from_str(&format!("Bearer {}", self.secret.expose_secret()))
            .map_err(|_| ForwardError::Target("internal secret is not a valid header value".into()))?;
        req.headers_mut().insert(header::AUTHORIZATION, auth);
        tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| ForwardError::Timeout(self.timeout))?
            .map_err(|e| ForwardError::Relay(error_chain(&e)))
    }
}

/// An error and its causes on one line (hyper-util's top-level message
/// alone says little).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
