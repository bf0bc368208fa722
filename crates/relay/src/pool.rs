//! Keep-alive HTTP connections over tunnel streams.
//!
//! Opening a yamux stream per forwarded request costs frames (SYN, ACK,
//! FIN both ways), a new HTTP/1.1 handshake and a task on both ends. The
//! agent's stream server speaks keep-alive, so the relay keeps finished
//! streams in a pool per session and sends the next request on one of them:
//! hyper-util's pooling client over a connector whose "host" is a session id.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use hyper::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::registry::Registry;

/// The pooling client the forwarder uses.
pub type StreamClient = Client<TunnelConnector, Body>;

/// How long an idle pooled stream is kept. Shorter than the agent's
/// 30 s header timeout, which closes idle streams from its side.
const POOL_IDLE: Duration = Duration::from_secs(20);

/// Builds the client.
pub fn client(registry: Registry) -> StreamClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(64)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(TunnelConnector { registry })
}

/// Opens a tunnel stream to the session named by the URI's host.
#[derive(Clone)]
pub struct TunnelConnector {
    registry: Registry,
}

impl tower::Service<Uri> for TunnelConnector {
    type Response = TunnelIo;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<TunnelIo, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let registry = self.registry.clone();
        Box::pin(async move {
            let id = uri.host().ok_or("no session in uri")?;
            let session = registry.get(id).ok_or("tunnel session is gone")?;
            let stream = session.handle.open_stream().await?;
            Ok(TunnelIo::new(stream))
        })
    }
}

/// A tunnel stream as a hyper connection, counted in
/// `edgelink_tunnel_streams_open{opened_by="relay"}` and
/// `edgelink_relay_bytes_total{direction}` (requests, responses and
/// upgraded connections' bytes).
pub struct TunnelIo(TokioIo<Counted>);

impl TunnelIo {
    fn new(stream: edgelink_tunnel::TunnelStream) -> Self {
        let open = metrics::gauge!("edgelink_tunnel_streams_open", "opened_by" => "relay");
        open.increment(1.0);
        TunnelIo(TokioIo::new(Counted {
            inner: stream,
            window: READ_WINDOW_MIN,
            to_device: metrics::counter!("edgelink_relay_bytes_total", "direction" => "to_device"),
            from_device: metrics::counter!("edgelink_relay_bytes_total", "direction" => "from_device"),
            open,
        }))
    }
}

/// The tunnel stream is a futures-io reader, which takes an initialized
/// buffer: offering hyper's whole read buffer would zero all of it on every
/// read (3 % of the relay's CPU at c64). A read offers a window instead,
/// doubled whenever a read fills it and reset when one does not, so small
/// answers zero little and a download soon reads in big chunks.
const READ_WINDOW_MIN: usize = 4 * 1024;
const READ_WINDOW_MAX: usize = 64 * 1024;

/// A tunnel stream that counts its bytes (handles resolved once per
/// stream: an increment is an atomic add).
pub struct Counted {
    inner: edgelink_tunnel::TunnelStream,
    /// How much of the caller's buffer the next read offers (see
    /// [`READ_WINDOW_MIN`]).
    window: usize,
    to_device: metrics::Counter,
    from_device: metrics::Counter,
    open: metrics::Gauge,
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
        let want = buf.remaining().min(me.window);
        let slice = buf.initialize_unfilled_to(want);
        let n = std::task::ready!(futures::io::AsyncRead::poll_read(Pin::new(me.inner.get_mut()), cx, slice))?;
        buf.advance(n);
        me.window = if n == want { (me.window * 2).min(READ_WINDOW_MAX) } else { READ_WINDOW_MIN };
        me.from_device.increment(n as u64);
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

impl Connection for TunnelIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Read for TunnelIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl Write for TunnelIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
