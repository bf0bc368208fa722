//! The HTTP client the OpenID library calls through: reqwest without
//! redirects, with timeouts and a response size cap.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};

/// Largest response body accepted from the provider (discovery, JWKS,
/// tokens, userinfo are all a few KiB).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// A failed request to the provider.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connection, TLS or timeout.
    #[error("{0}")]
    Transport(String),
    /// The provider answered more than [`MAX_RESPONSE_BYTES`].
    #[error("response larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
}

pub(crate) struct Http {
    client: reqwest::Client,
}

impl Http {
    pub(crate) fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .build()?;
        Ok(Http { client })
    }
}

fn transport(e: reqwest::Error) -> HttpError {
    // reqwest's Display leaves out the cause; walk the chain once.
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    HttpError::Transport(msg)
}

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let mut resp = self
                .client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(transport)?;
            if resp.content_length().is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
                return Err(HttpError::TooLarge);
            }
            let mut out = http::Response::builder().status(resp.status());
            if let Some(h) = out.headers_mut() {
                *h = std::mem::take(resp.headers_mut());
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(transport)? {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(HttpError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            out.body(body).map_err(|e| HttpError::Transport(e.to_string()))
        })
    }
}
