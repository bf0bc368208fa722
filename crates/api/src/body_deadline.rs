//! A deadline on request bodies: a body that has not fully arrived within
//! `body_timeout` of its head is cut off and the request answered `408`
//! (`request_timeout`) with the connection closed, so slow senders cannot
//! hold connections (and the connection cap) with half-sent bodies. The
//! device web-service path streams bodies of any size at the pace of both
//! ends and is left to its own limits; so are WebSocket upgrades and
//! requests without a body.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use edgelink_protocol::error::ErrorCode;
use http_body::{Frame, SizeHint};

use crate::error::ApiError;

/// The body read ran out of time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within its deadline")]
struct TimedOut;

/// `inner`, failing once `sleep` fires before it has ended.
struct Deadline {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    fired: Arc<AtomicBool>,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {}
            ready => return ready,
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            this.fired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(TimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `req` has a body this deadline applies to.
fn applies(req: &Request) -> bool {
    let headers = req.headers();
    let has_body = headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() != "0");
    let streamed = req
        .uri()
        .path()
        .strip_prefix("/api/v1/devices/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(_, tail)| tail == "http" || tail.starts_with("http/"));
    has_body && !streamed && !headers.contains_key(http::header::UPGRADE)
}

/// The middleware (state: the deadline).
pub async fn enforce(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    if !applies(&req) {
        return next.run(req).await;
    }
    let path = req.uri().path().to_owned();
    let fired = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let body = Body::new(Deadline { inner: body, sleep: Box::pin(tokio::time::sleep(limit)), fired: fired.clone() });
    let resp = next.run(Request::from_parts(parts, body)).await;
    if !fired.load(Ordering::Relaxed) {
        return resp;
    }
    tracing::info!(path = %path, timeout_ms = limit.as_millis() as u64, "request body too slow; answered 408");
    let mut resp =
        ApiError::new(ErrorCode::RequestTimeout, format!("the request body did not arrive within {limit:?}"))
            .at(&path)
            .into_response();
    resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn request(path: &str, headers: &[(&str, &str)]) -> Request {
        let mut b = http::Request::builder().method("POST").uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn only_bodies_outside_the_device_stream_path_get_a_deadline() {
        assert!(applies(&request("/api/v1/messages", &[("content-length", "10")])));
        assert!(applies(&request("/api/v1/messages", &[("transfer-encoding", "chunked")])));
        assert!(!applies(&request("/api/v1/messages", &[("content-length", "0")])));
        assert!(!applies(&request("/api/v1/messages", &[])));
        assert!(!applies(&request("/api/v1/devices/d1/http/upload", &[("content-length", "10")])));
        assert!(!applies(&request("/api/v1/devices/d1/http", &[("content-length", "10")])));
        assert!(applies(&request("/api/v1/devices/d1/commands", &[("content-length", "10")])));
        assert!(!applies(&request("/ws", &[("content-length", "10"), ("upgrade", "websocket")])));
    }

    /// One frame, then nothing ever again.
    struct Stalled(bool);

    impl http_body::Body for Stalled {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if std::mem::replace(&mut self.0, true) {
                return Poll::Pending;
            }
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"part")))))
        }
    }

    #[tokio::test]
    async fn a_body_that_stalls_fails_at_the_deadline_and_a_complete_one_passes() {
        let deadline = |inner: Body, fired: &Arc<AtomicBool>| Deadline {
            inner,
            sleep: Box::pin(tokio::time::sleep(Duration::from_millis(100))),
            fired: fired.clone(),
        };
        let fired = Arc::new(AtomicBool::new(false));
        let err = deadline(Body::new(Stalled(false)), &fired).collect().await.expect_err("timed out");
        assert!(err.to_string().contains("deadline"), "{err}");
        assert!(fired.load(Ordering::Relaxed));

        let fired = Arc::new(AtomicBool::new(false));
        assert_eq!(deadline(Body::from("whole"), &fired).collect().await.unwrap().to_bytes(), "whole");
        assert!(!fired.load(Ordering::Relaxed));
    }
}
