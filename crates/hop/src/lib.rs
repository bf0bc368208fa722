//! The one recipe every HTTP hop of a forwarded request follows:
//! api-server's device route, the relay's internal forward and the agent's
//! call to the local service all use it, so what a hop lets through is
//! decided here and hardened here.
//!
//! A hop [`prepare`]s the request it received (detects an upgrade and keeps
//! the caller's side of it, strips hop-by-hop headers and the caller's
//! credentials for this hop, pins HTTP/1.1) and [`send`]s it on: the answer
//! comes back with its hop-by-hop headers stripped, as HTTP/1.1 so each
//! hop's keep-alive connection stays open whatever version the next hop
//! spoke, and a `101` splices both upgraded connections.
//!
//! It knows HTTP (and TLS on a listener) and nothing else: no tunnels,
//! tokens or routing.
//!
//! # Layout
//! * [`headers`]: hop-by-hop header rules ([`headers::strip`],
//!   [`headers::is_upgrade`]).
//! * [`prepare`], [`Pending`]: the recipe's first half.
//! * [`serve`]: HTTP/1.1 served on one stream (a tunnel stream) with the
//!   limits every edgelink stream server applies.
//! * [`h1`]: HTTP/1.1 forwarded by heads (edge-agent's streams): heads
//!   parsed and rewritten, bodies copied with their framing.
//! * [`send`]: the calling side by heads (the relay's tunnel streams): a
//!   request written on a kept connection, its answer decoded as it is
//!   polled, the connection handed back for the next one.
//! * [`listen`]: the accept loop of every edgelink TCP listener, with
//!   head and idle timeouts, a head size limit and a connection cap.
//! * [`tls`]: server and client TLS configs (one private CA optional).

pub mod h1;
pub mod headers;
pub mod listen;
pub mod send;
pub mod tls;

use std::time::Duration;

use http::{HeaderName, Request, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};

/// Bytes copied per direction per read on spliced upgrades.
const SPLICE_BUF: usize = 64 * 1024;

/// What [`prepare`] kept of a request for [`finish`]: the caller's side of
/// an upgrade, when it asked for one.
#[derive(Debug, Default)]
pub struct Pending {
    caller: Option<OnUpgrade>,
}

impl Pending {
    /// True when the request asks to upgrade the connection.
    pub fn is_upgrade(&self) -> bool {
        self.caller.is_some()
    }
}

/// Prepares `req` for the next hop. Removes hop-by-hop headers (keeping
/// `Upgrade` and `Connection: upgrade` for an upgrade) and every header in
/// `credentials` (what authenticated the caller to this hop is never the
/// next hop's business), and pins HTTP/1.1.
pub fn prepare<B>(req: &mut Request<B>, credentials: &[HeaderName]) -> Pending {
    let upgrade = headers::is_upgrade(req.headers());
    let caller = upgrade.then(|| hyper::upgrade::on(&mut *req));
    let h = req.headers_mut();
    headers::strip(h, upgrade);
    for name in credentials {
        h.remove(name);
    }
    *req.version_mut() = Version::HTTP_11;
    Pending { caller }
}

/// Serves HTTP/1.1 (keep-alive, upgrades) on one stream with `service`,
/// until the peer closes it: a request head must arrive within
/// `header_timeout` and fit in the protocol's header limit.
pub async fn serve<I, S>(io: I, service: S, header_timeout: Duration)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_header_size(edgelink_protocol::limits::MAX_HEADER_BYTES);
    if let Err(e) = builder.serve_connection(TokioIo::new(io), service).with_upgrades().await {
        tracing::debug!(error = %e, "stream ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Response, header};
    use http_body::Body;

    fn request(upgrade: bool) -> Request<()> {
        let mut b = Request::get("/x")
            .version(Version::HTTP_10)
            .header(header::AUTHORIZATION, "Bearer caller-secret")
            .header(header::COOKIE, "session=1")
            .header("keep-alive", "timeout=5")
            .header("x-app", "kept");
        if upgrade {
            b = b.header(header::CONNECTION, "Upgrade").header(header::UPGRADE, "websocket");
        } else {
            b = b.header(header::CONNECTION, "close, x-app-private").header("x-app-private", "1");
        }
        b.body(()).unwrap()
    }

    #[test]
    fn prepare_strips_hop_by_hop_and_credentials_and_pins_http11() {
        let mut req = request(false);
        let pending = prepare(&mut req, &[header::AUTHORIZATION, header::COOKIE]);
        assert!(!pending.is_upgrade());
        let h = req.headers();
        for gone in ["authorization", "cookie", "keep-alive", "connection", "x-app-private"] {
            assert!(h.get(gone).is_none(), "{gone} must not reach the next hop");
        }
        assert_eq!(h["x-app"], "kept");
        assert_eq!(req.version(), Version::HTTP_11);
    }

    #[test]
    fn prepare_keeps_an_upgrade_and_only_the_named_credentials() {
        let mut req = request(true);
        let pending = prepare(&mut req, &[header::AUTHORIZATION]);
        assert!(pending.is_upgrade());
        let h = req.headers();
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert!(h.get(header::AUTHORIZATION).is_none());
        assert_eq!(h[header::COOKIE], "session=1");
    }

    #[tokio::test]
    async fn an_upgrade_is_spliced_through_a_hop() {
        use http_body_util::Empty;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        // The next hop: an HTTP server that upgrades and echoes.
        let next = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let next_addr = next.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = next.accept().await.unwrap();
            let svc = hyper::service::service_fn(|mut req: Request<hyper::body::Incoming>| async move {
                let on = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    let mut io = TokioIo::new(on.await.unwrap());
                    let mut buf = [0u8; 4];
                    io.read_exact(&mut buf).await.unwrap();
                    io.write_all(&buf).await.unwrap();
                });
                let resp = Response::builder()
                    .status(101)
                    .header(header::CONNECTION, "upgrade")
                    .header(header::UPGRADE, "echo")
                    .body(Empty::<bytes::Bytes>::new())
                    .unwrap();
                Ok::<_, std::convert::Infallible>(resp)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades()
                .await;
        });

        // The hop under test, served with `serve`.
        let hop = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hop_addr = hop.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = hop.accept().await.unwrap();
            let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| async move {
                let pending = prepare(&mut req, &[header::AUTHORIZATION]);
                assert!(req.headers().get(header::AUTHORIZATION).is_none());
                let tcp = tokio::net::TcpStream::connect(next_addr).await.unwrap();
                let mut out = send::Outgoing::new(req, pending, "next");
                let resp = send::send(send::Conn::new(tcp), &mut out, Box::new(drop)).await.unwrap();
                assert!(resp.body().is_end_stream(), "a 101 has no body");
                Ok::<_, std::convert::Infallible>(resp.map(|_| Empty::<bytes::Bytes>::new()))
            });
            serve(tcp, svc, Duration::from_secs(5)).await;
        });

        let mut caller = tokio::net::TcpStream::connect(hop_addr).await.unwrap();
        caller
            .write_all(
                b"GET / HTTP/1.1\r\nhost: x\r\nauthorization: Bearer s\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
            )
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            caller.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("upgrade: echo"), "{head}");
        caller.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        caller.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
    }
}
