//! Keep-alive HTTP connections over tunnel streams.
//!
//! Opening a yamux stream per forwarded request costs frames (SYN, ACK,
//! FIN both ways) and a task on the agent. The agent's stream server
//! speaks keep-alive, so each session keeps its finished streams in a small
//! pool ([`Idle`]) and the next request goes on one of them. A request is
//! sent by heads ([`edgelink_hop::send`]): the task serving the caller's
//! connection writes the head to the stream and decodes the answer as its
//! server polls the body; no client task or channel sits in between.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Request, Response, header};
use edgelink_hop::Pending;
use edgelink_hop::send::{self, Conn, Outgoing};
use edgelink_protocol::error::ErrorCode;
use edgelink_protocol::local_origin::LocalOrigin;

use crate::error::RelayError;
use crate::registry::LiveSession;

/// How long an idle pooled stream is kept. Shorter than the agent's
/// 30 s header timeout, which closes idle streams from its side.
pub(crate) const POOL_IDLE: Duration = Duration::from_secs(20);
/// Idle streams kept per session at most.
const MAX_IDLE: usize = 64;

/// A kept connection over one tunnel stream.
pub type TunnelConn = Conn<Counted>;

/// A session's idle keep-alive streams.
pub type Idle = send::Idle<Counted>;

/// An empty pool for a new session.
pub fn idle() -> Idle {
    Idle::new(POOL_IDLE, MAX_IDLE)
}

/// Streams the relay has open to one device at once, at most: the
/// protocol's per-session limit less the device's own control streams. A
/// request beyond waits (within its forward timeout) for one to end. The
/// tunnel allows more (`TunnelConfig::mux_config`), so streams the relay
/// has let go of but the tunnel still counts (the device has not closed
/// its side yet) never push an open beyond the tunnel's limit.
pub const RELAY_STREAMS: usize =
    edgelink_protocol::limits::MAX_STREAMS_PER_SESSION - edgelink_protocol::limits::MAX_DEVICE_STREAMS;

/// A new session's stream budget.
pub fn budget() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(RELAY_STREAMS))
}

/// A new tunnel stream of `session`, as a kept connection (it holds one of
/// the session's [`budget`] until it is dropped).
pub(crate) async fn open(session: &LiveSession) -> Result<TunnelConn, RelayError> {
    let permit =
        session.budget.clone().acquire_owned().await.map_err(|_| RelayError::Device("tunnel closed".into()))?;
    let stream = session.handle.open_stream().await.map_err(|e| RelayError::Device(e.to_string()))?;
    Ok(Conn::new(Counted::new(stream, permit)))
}

/// Sends `req` (already prepared as `pending`; its URI's path and query
/// are the device-side target) to the device over a kept stream of
/// `session`, or a new one, and returns the answer with its body still
/// streaming. The answer head must arrive within `timeout`; a kept stream
/// found dead is replaced once.
///
/// A request for the agent's control API goes on a stream of its own,
/// never kept: a device that splices its streams to its local service
/// (docs/protocol.md §5) tells the two apart by a stream's first request.
/// Any other request to such a device is written for its local service.
pub async fn exchange(
    session: &Arc<LiveSession>,
    mut req: Request<Body>,
    pending: Pending,
    timeout: Duration,
) -> Result<Response<Body>, RelayError> {
    let control = edgelink_protocol::paths::is_control_path(req.uri().path());
    if !control && let Some(o) = session.local_origin.as_deref() {
        for_local_service(&mut req, o)?;
    }
    let mut out = Outgoing::new(req, pending, &session.id);
    let attempt = async {
        let kept = if control { None } else { session.streams.take() };
        let reused = kept.is_some();
        let conn = match kept {
            Some(c) => c,
            None => open(session).await?,
        };
        let back = || -> send::Back<Counted> { if control { Box::new(drop::<TunnelConn>) } else { back_to(session) } };
        match send::send(conn, &mut out, back()).await {
            Err(e) if e.retry && reused => {
                tracing::debug!(error = %e, "kept stream died; retrying on a new one");
                let conn = open(session).await?;
                send::send(conn, &mut out, back()).await
            }
            other => other,
        }
        .map_err(|e| RelayError::Device(e.to_string()))
    };
    let resp = tokio::time::timeout(timeout, attempt).await.map_err(|_| RelayError::DeviceTimeout)??;
    Ok(resp.map(Body::new))
}

/// `req` as the device's local service `o` takes it: its `Host` (the
/// original kept as `X-Forwarded-Host` unless the request has one) and its
/// base path before the target.
fn for_local_service<B>(req: &mut Request<B>, o: &LocalOrigin) -> Result<(), RelayError> {
    let bad = |_| RelayError::client(ErrorCode::BadRequest, "bad target path");
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    // Only an origin-form target takes the base path (as the agent did).
    if !o.prefix.is_empty() && target.starts_with('/') {
        *req.uri_mut() = format!("{}{target}", o.prefix).parse().map_err(bad)?;
    }
    let host = HeaderValue::from_str(&o.authority).map_err(|_| RelayError::Device("bad local origin".into()))?;
    let headers = req.headers_mut();
    match headers.insert(header::HOST, host) {
        Some(original) if !headers.contains_key(X_FORWARDED_HOST) => {
            headers.insert(X_FORWARDED_HOST, original);
        }
        _ => {}
    }
    Ok(())
}

const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

fn back_to(session: &Arc<LiveSession>) -> send::Back<Counted> {
    let session = session.clone();
    Box::new(move |conn| {
        if !session.handle.is_closed() {
            session.streams.put(conn);
        }
    })
}

/// A tunnel stream that counts its bytes (handles resolved once per
/// stream: an increment is an atomic add), in
/// `edgelink_tunnel_streams_open{opened_by="relay"}` and
/// `edgelink_relay_bytes_total{direction}` (requests, answers and upgraded
/// connections' bytes).
pub struct Counted {
    inner: edgelink_tunnel::TunnelStream,
    to_device: metrics::Counter,
    from_device: metrics::Counter,
    open: metrics::Gauge,
    _budget: tokio::sync::OwnedSemaphorePermit,
}

impl Counted {
    fn new(stream: edgelink_tunnel::TunnelStream, budget: tokio::sync::OwnedSemaphorePermit) -> Self {
        let open = metrics::gauge!("edgelink_tunnel_streams_open", "opened_by" => "relay");
        open.increment(1.0);
        Counted {
            inner: stream,
            to_device: metrics::counter!("edgelink_relay_bytes_total", "direction" => "to_device"),
            from_device: metrics::counter!("edgelink_relay_bytes_total", "direction" => "from_device"),
            open,
            _budget: budget,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut me.inner).poll_read(cx, buf))?;
        me.from_device.increment((buf.filled().len() - before) as u64);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        let poll = Pin::new(&mut me.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            me.to_device.increment(n as u64);
        }
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        let poll = Pin::new(&mut me.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = poll {
            me.to_device.increment(n as u64);
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
