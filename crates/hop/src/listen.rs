//! The accept loop of every edgelink HTTP listener (api-server, the relay's
//! tunnel port and internal API): plain or TLS TCP, HTTP/1.1 with upgrades,
//! and the limits a slow or greedy client must not get past.
//!
//! * A request head must arrive within `header_timeout` and fit in
//!   [`edgelink_protocol::limits::MAX_HEADER_BYTES`]; hyper starts that
//!   timer when it starts waiting for a head, so it also closes a
//!   keep-alive connection left idle that long between requests.
//! * A TLS handshake must finish within `header_timeout` too.
//! * At most `max_connections` connections are served at once; at the cap
//!   the loop stops accepting (new clients wait in the kernel's backlog)
//!   and says so in the log, once per minute at most.
//! * On shutdown, idle connections close, busy ones finish their request
//!   (upgraded ones are the caller's to end), for at most `grace`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a listener allows each client.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to send a request head (and a TLS handshake); also the longest
    /// a keep-alive connection may sit idle between requests.
    pub header_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long shutdown waits for busy connections.
    pub grace: Duration,
}

/// A connection a listener accepted: plain TCP or TLS over it.
pub type Stream = Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>;

/// Serves HTTP/1.1 on `listener` with the service `make_service` builds for
/// each connection's peer address, until `shutdown`.
pub async fn serve<F, S, B>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    make_service: F,
    limits: Limits,
    shutdown: CancellationToken,
) where
    F: Fn(SocketAddr) -> S + Send + Sync + 'static,
    S: hyper::service::Service<hyper::Request<Incoming>, Response = hyper::Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let header_timeout = limits.header_timeout;
    accept(listener, tls, limits, shutdown, move |io, peer, token| {
        connection(TokioIo::new(io), make_service(peer), header_timeout, token)
    })
    .await;
}

/// The accept loop alone: each connection (its TLS handshake done) goes to
/// `handle` with its peer address and the shutdown token, on a task of its
/// own, within the listener's connection cap.
pub async fn accept<H, Fut>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    shutdown: CancellationToken,
    handle: H,
) where
    H: Fn(Stream, SocketAddr, CancellationToken) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handle = Arc::new(handle);
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let local = listener.local_addr().ok();
    let mut last_warning: Option<Instant> = None;
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(
                        listener = ?local,
                        max_connections = limits.max_connections,
                        "connection limit reached: new connections wait until one closes"
                    );
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                }
            }
        };
        let (tcp, addr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            res = listener.accept() => match res {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off a
                    // little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let token = shutdown.clone();
        match tls.clone() {
            None => {
                // Boxed: a connection's future is large (its forwarding
                // state), and spawning moves it several times.
                let conn = Box::pin(handle(Either::Left(tcp), addr, token));
                connections.spawn(async move {
                    let _permit = permit;
                    conn.await;
                });
            }
            Some(acceptor) => {
                let handle = handle.clone();
                connections.spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => Box::pin(handle(Either::Right(stream), addr, token)).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, %addr, "tls handshake failed"),
                        Err(_) => tracing::debug!(%addr, "tls handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    connections.close();
    let _ = tokio::time::timeout(limits.grace, connections.wait()).await;
}

/// A connection some of whose bytes were already read: they are read again
/// first (a front that looked at a request head and handed the connection
/// on to [`connection`]).
pub struct Prefixed<S> {
    read: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, with `read` put back in front of it.
    pub fn new(read: Vec<u8>, inner: S) -> Self {
        Prefixed { read, pos: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        if me.pos < me.read.len() {
            let n = (me.read.len() - me.pos).min(buf.remaining());
            buf.put_slice(&me.read[me.pos..me.pos + n]);
            me.pos += n;
            if me.pos == me.read.len() {
                me.read = Vec::new();
                me.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut me.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
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

/// The per-connection services of an axum `Router`, with the peer address
/// as `ConnectInfo<SocketAddr>` (what `into_make_service_with_connect_info`
/// gives under `axum::serve`).
#[cfg(feature = "axum")]
pub fn router_service(app: axum::Router) -> impl Fn(SocketAddr) -> RouterService {
    move |peer| RouterService { app: app.clone(), peer }
}

/// One connection's service: see [`router_service`].
#[cfg(feature = "axum")]
#[derive(Clone)]
pub struct RouterService {
    app: axum::Router,
    peer: SocketAddr,
}

#[cfg(feature = "axum")]
impl hyper::service::Service<hyper::Request<Incoming>> for RouterService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = tower::util::Oneshot<axum::Router, axum::extract::Request>;

    fn call(&self, mut req: hyper::Request<Incoming>) -> Self::Future {
        use tower::ServiceExt;
        req.extensions_mut().insert(axum::extract::ConnectInfo(self.peer));
        self.app.clone().oneshot(req.map(axum::body::Body::new))
    }
}

/// Serves HTTP/1.1 (keep-alive, upgrades) with `svc` on one accepted
/// connection, with the listener's head limits, until it ends or
/// `shutdown` (then gracefully).
pub async fn connection<I, S, B>(io: I, svc: S, header_timeout: Duration, shutdown: CancellationToken)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<hyper::Request<Incoming>, Response = hyper::Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_header_size(edgelink_protocol::limits::MAX_HEADER_BYTES);
    let conn = builder.serve_connection(io, svc).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Read buffer of a connection a front reads heads from (it starts small
/// and grows).
const FRONT_BUF: usize = 32 * 1024;

/// An accepted connection split for a front that reads its request heads
/// itself: the read half buffered, the write half.
pub fn front_halves(io: Stream) -> (crate::h1::Reader<tokio::io::ReadHalf<Stream>>, tokio::io::WriteHalf<Stream>) {
    let (rd, wr) = tokio::io::split(io);
    (crate::h1::Reader::new(rd, FRONT_BUF), wr)
}

/// Hands a connection a front has read from (its read half, with what
/// was read and not consumed, and its write half) to `app`, which reads
/// those bytes first.
#[cfg(feature = "axum")]
pub async fn hand_on(
    rd: crate::h1::Reader<tokio::io::ReadHalf<Stream>>,
    wr: tokio::io::WriteHalf<Stream>,
    peer: SocketAddr,
    app: axum::Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) {
    let (rd, read) = rd.into_parts();
    let io = TokioIo::new(Prefixed::new(read, rd.unsplit(wr)));
    connection(io, router_service(app)(peer), header_timeout, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn hello_server(limits: Limits) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let svc = |_peer| {
            hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(b"hi"),
                )))
            })
        };
        tokio::spawn(serve(listener, None, svc, limits, stop.clone()));
        (addr, stop)
    }

    const LIMITS: Limits =
        Limits { header_timeout: Duration::from_millis(300), max_connections: 2, grace: Duration::from_secs(1) };

    /// Reads until the server closes; how long that took.
    async fn closed_after(s: &mut tokio::net::TcpStream) -> Duration {
        let start = Instant::now();
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
                Ok(Ok(_)) => {}
                Err(_) => panic!("the server kept the connection open"),
            }
        }
    }

    #[tokio::test]
    async fn half_sent_heads_idle_keep_alives_and_huge_heads_are_closed() {
        let (addr, stop) = hello_server(LIMITS).await;
        // Half a head, never finished.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        assert!(closed_after(&mut s).await < Duration::from_secs(2));
        // Nothing at all.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(closed_after(&mut s).await < Duration::from_secs(2));
        // One request answered, then idle on keep-alive.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        assert!(closed_after(&mut s).await < Duration::from_secs(2));
        // A head larger than the limit.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(200 * 1024));
        let _ = s.write_all(big.as_bytes()).await;
        let n = s.read(&mut buf).await.unwrap_or(0);
        assert!(n == 0 || buf[..n].starts_with(b"HTTP/1.1 431"), "{}", String::from_utf8_lossy(&buf[..n]));
        stop.cancel();
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_for_a_free_slot() {
        let limits = Limits { header_timeout: Duration::from_secs(30), ..LIMITS };
        let (addr, stop) = hello_server(limits).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
            let mut buf = [0u8; 256];
            assert!(s.read(&mut buf).await.unwrap() > 0);
            held.push(s);
        }
        // The third is connected by the kernel but not served.
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        third.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 256];
        assert!(tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await.is_err());
        // One closes: the third is served.
        drop(held.pop());
        let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf)).await.unwrap().unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        stop.cancel();
    }
}
