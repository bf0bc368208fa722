//! The one place where errors become HTTP responses.

use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use edgelink_protocol::error::{ErrorBody, ErrorCode};

/// An error on its way to the client. Handlers return it; the path is
/// filled in by [`ApiError::at`] or left empty when unknown.
#[derive(Debug)]
pub struct ApiError {
    /// What went wrong, as a code.
    pub code: ErrorCode,
    /// Message for the client; for 5xx a generic text.
    pub message: String,
    /// The request path, when known.
    pub path: String,
    /// Seconds to wait before trying again (`Retry-After`), for 429/503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a client-facing message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), path: String::new(), retry_after: None }
    }

    /// Tells the client when to try again (at least 1 s).
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait.as_secs().max(1));
        self
    }

    /// Sets the request path shown in the body.
    pub fn at(mut self, path: &str) -> Self {
        self.path = path.to_owned();
        self
    }

    /// 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// 503 with `message`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// 500; `cause` is logged once here and never sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }
}

/// How long a caller is asked to wait when the database is busy.
const BUSY_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

impl From<edgelink_store::Error> for ApiError {
    fn from(e: edgelink_store::Error) -> Self {
        match e {
            edgelink_store::Error::NotFound => ApiError::new(ErrorCode::NotFound, "not found"),
            edgelink_store::Error::Conflict => ApiError::new(ErrorCode::Conflict, "already exists"),
            edgelink_store::Error::Busy => {
                tracing::warn!("database busy: answering 503");
                ApiError::new(ErrorCode::Unavailable, "busy: try again shortly").retry_after(BUSY_RETRY)
            }
            other => ApiError::internal(other),
        }
    }
}

impl ApiError {
    /// Its status and body (the refusal counted).
    fn render(self) -> (StatusCode, ErrorBody) {
        let status = StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        edgelink_observe::count_refusal("api-server", self.code);
        let mut body = ErrorBody::new(self.code, self.message, self.path, timestamp());
        body.retry_after = self.retry_after;
        (status, body)
    }

    /// The same answer as [`IntoResponse`] gives, for a front that writes
    /// answers itself.
    pub(crate) fn into_answer(self) -> edgelink_hop::h1::Answer {
        let (status, body) = self.render();
        let mut headers = Vec::new();
        if let Some(secs) = body.retry_after {
            headers.push(("retry-after", secs.to_string()));
        }
        // An error body always serializes; an empty one still says the status.
        let body = serde_json::to_vec(&body).unwrap_or_default();
        edgelink_hop::h1::Answer { status: status.as_u16(), headers, body }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.render();
        let retry_after = body.retry_after;
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(secs) = retry_after {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        resp
    }
}

/// A time in Unix milliseconds in the one wire format.
pub use edgelink_protocol::time::rfc3339 as timestamp_ms;

/// Now, in the one wire format.
pub fn timestamp() -> String {
    timestamp_ms(edgelink_store::now_ms())
}

/// Fallback for unknown routes.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route").at(uri.path())
}

/// Fallback for a known route with the wrong method.
pub async fn method_not_allowed(uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed").at(uri.path())
}

/// JSON body extractor whose rejections use the error body.
pub struct Json<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let path = req.uri().path().to_owned();
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => {
                let code = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ErrorCode::PayloadTooLarge
                } else {
                    ErrorCode::BadRequest
                };
                Err(ApiError::new(code, rejection.body_text()).at(&path))
            }
        }
    }
}
