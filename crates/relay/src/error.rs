//! The relay's errors and their one mapping to the JSON error body. Each
//! says which side failed: the device, the caller, or the relay itself.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use edgelink_protocol::error::{ErrorBody, ErrorCode};

/// An error answered to a tunnel dialer or an internal API caller.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The caller's request was refused (auth, bad input, unknown session).
    #[error("{message}")]
    Client {
        /// Which condition.
        code: ErrorCode,
        /// Explanation for the caller.
        message: String,
    },
    /// The device side failed: tunnel gone, stream refused, bad response.
    #[error("device: {0}")]
    Device(String),
    /// The device did not answer within the forward timeout.
    #[error("device did not answer in time")]
    DeviceTimeout,
    /// The relay is overloaded for the moment (no database connection
    /// came free in time): `503` with `Retry-After`.
    #[error("busy: try again shortly")]
    Busy,
    /// The relay itself failed (database, key fetch).
    #[error("relay: {0}")]
    Internal(String),
}

/// Seconds a caller is asked to wait when the relay is busy.
const BUSY_RETRY_SECS: u16 = 1;

impl RelayError {
    /// A caller-side error.
    pub fn client(code: ErrorCode, message: impl Into<String>) -> Self {
        RelayError::Client { code, message: message.into() }
    }

    /// The error code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            RelayError::Client { code, .. } => *code,
            RelayError::Device(_) => ErrorCode::DeviceUnavailable,
            RelayError::DeviceTimeout => ErrorCode::DeviceTimeout,
            RelayError::Busy => ErrorCode::Unavailable,
            RelayError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The status, the JSON body (with `path` in it) and the relay's
    /// headers of this error's answer; logs and counts it.
    fn render(self, path: &str) -> (StatusCode, Vec<u8>, Vec<(&'static str, String)>) {
        let code = self.code();
        let message = match &self {
            RelayError::Internal(cause) => {
                tracing::error!(error = %cause, "relay internal error");
                "internal error".to_owned()
            }
            RelayError::Busy => {
                tracing::warn!("database busy: answering 503");
                self.to_string()
            }
            RelayError::Device(cause) => {
                // The cause (stream and connection errors) is for the log;
                // the caller may be a user behind api-server.
                tracing::info!(error = %cause, "device side failed");
                "the device did not answer this request".to_owned()
            }
            other => other.to_string(),
        };
        let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        edgelink_observe::count_refusal("remote-proxy", code);
        let mut body = ErrorBody::new(code, message, path, timestamp());
        // Marks the answer as the relay's own (not the device's), so a
        // forwarding api-server can act on it.
        let mut headers = vec![(edgelink_protocol::paths::RELAY_ERROR_HEADER, code.name().to_owned())];
        if matches!(self, RelayError::Busy) {
            body.retry_after = Some(u64::from(BUSY_RETRY_SECS));
            headers.push(("retry-after", BUSY_RETRY_SECS.to_string()));
        }
        (status, serde_json::to_vec(&body).unwrap_or_default(), headers)
    }

    /// The response, with `path` in the body.
    pub fn into_response_at(self, path: &str) -> Response {
        let (status, body, headers) = self.render(path);
        let mut resp = (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response();
        for (name, value) in headers {
            if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, value);
            }
        }
        resp
    }

    /// The same answer for a hop that writes it itself
    /// ([`edgelink_hop::h1`]).
    pub fn into_answer_at(self, path: &str) -> edgelink_hop::h1::Answer {
        let (status, body, headers) = self.render(path);
        edgelink_hop::h1::Answer { status: status.as_u16(), headers, body }
    }
}

impl IntoResponse for RelayError {
    fn into_response(self) -> Response {
        self.into_response_at("")
    }
}

impl From<edgelink_store::Error> for RelayError {
    fn from(e: edgelink_store::Error) -> Self {
        match e {
            edgelink_store::Error::Busy => RelayError::Busy,
            other => RelayError::Internal(other.to_string()),
        }
    }
}

/// Milliseconds since the epoch in the one wire format.
pub use edgelink_protocol::time::rfc3339 as rfc3339_ms;

/// Now, in the one wire format.
pub fn timestamp() -> String {
    rfc3339_ms(edgelink_store::now_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_store_is_a_503_with_retry_after_not_a_500() {
        let resp = RelayError::from(edgelink_store::Error::Busy).into_response_at("/tunnel");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[axum::http::header::RETRY_AFTER], "1");
        let resp = RelayError::from(edgelink_store::Error::UnsupportedUrl).into_response_at("/tunnel");
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(resp.headers().get(axum::http::header::RETRY_AFTER).is_none());
    }
}
