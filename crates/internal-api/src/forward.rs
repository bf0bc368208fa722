//! Streaming forward through a relay's `ANY /internal/forward/{id}/{*path}`:
//! bodies are streamed both ways and connections to each relay are kept
//! alive and reused, so a forwarded request costs no new TCP connection.
//! Requests go by heads ([`edgelink_hop::send`]): the caller's task writes
//! the head and reads the answer itself, with no client task in between.
//! The caller prepares the request with `edgelink_hop::prepare`; an
//! upgrade the relay accepts is spliced here.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use edgelink_hop::Pending;
use edgelink_hop::send::{self, Conn, Idle, Outgoing};
use http::{HeaderValue, Request, Response, header};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Body type of forwarded requests.
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The body of a relay's answer, read from the kept connection as it is
/// polled.
pub type AnswerBody = send::Answer<RelayStream>;

/// How long to wait for a relay's TCP (and TLS) handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle connection to a relay is kept.
const POOL_IDLE: Duration = Duration::from_secs(30);
/// Idle connections kept per relay at most.
const MAX_IDLE: usize = 256;

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
    inner: Arc<Inner>,
}

struct Inner {
    /// `Bearer {secret}`; `None` when the secret is not a header value.
    auth: Option<HeaderValue>,
    timeout: Duration,
    tls: tokio_rustls::TlsConnector,
    /// Each relay's address and idle connections, by relay URL.
    relays: Mutex<HashMap<String, Arc<Relay>>>,
}

/// One relay: where it is and its idle kept connections. It opens new
/// connections for [`edgelink_hop::h1::exchange`] too (a front forwarding
/// by heads takes and puts back connections itself).
pub struct Relay {
    peer: Peer,
    idle: Idle<RelayStream>,
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").field("timeout", &self.inner.timeout).finish_non_exhaustive()
    }
}

/// Where a relay is: scheme, host and port of its internal URL.
struct Peer {
    tls: bool,
    host: String,
    port: u16,
    authority: String,
}

fn peer(relay_url: &str) -> Result<Peer, ForwardError> {
    let bad = || ForwardError::Target(format!("relay url {relay_url:?}"));
    let uri: http::Uri = relay_url.parse().map_err(|_| bad())?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(bad()),
    };
    let authority = uri.authority().ok_or_else(bad)?;
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok(Peer { tls, host, port, authority: authority.as_str().to_owned() })
}

impl Forwarder {
    /// A forwarder presenting `secret` to relays (`http://` or, verified
    /// with `tls`, `https://`); `timeout` bounds the wait for the response
    /// head (bodies and upgraded streams are not bounded).
    pub fn new(secret: SecretString, timeout: Duration, tls: Arc<rustls::ClientConfig>) -> Self {
        let auth = HeaderValue::from_str(&format!("Bearer {}", secret.expose_secret())).ok().map(|mut v| {
            v.set_sensitive(true);
            v
        });
        Forwarder {
            inner: Arc::new(Inner {
                auth,
                timeout,
                tls: tokio_rustls::TlsConnector::from(tls),
                relays: Mutex::default(),
            }),
        }
    }

    /// The relay at `relay_url` (its idle connections are shared by every
    /// request to it).
    pub fn relay(&self, relay_url: &str) -> Result<Arc<Relay>, ForwardError> {
        let mut map = self.inner.relays.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(relay) = map.get(relay_url) {
            return Ok(relay.clone());
        }
        let relay = Arc::new(Relay {
            peer: peer(relay_url)?,
            idle: Idle::new(POOL_IDLE, MAX_IDLE),
            tls: self.inner.tls.clone(),
        });
        map.insert(relay_url.to_owned(), relay.clone());
        Ok(relay)
    }

    /// The `Authorization` value relays are sent (`Bearer {secret}`);
    /// `None` when the secret is not a header value.
    pub fn authorization(&self) -> Option<&str> {
        self.inner.auth.as_ref().and_then(|v| v.to_str().ok())
    }

    /// How long a relay may take to start answering.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Sends `req` (already prepared for this hop by the caller, as
    /// `pending`) to `relay_url`'s forward of device or session `id`, at
    /// `target` (path and query on the device). A `101` is spliced to the
    /// caller and has an empty body; other answers keep their end-to-end
    /// headers only.
    pub async fn forward(
        &self,
        relay_url: &str,
        id: &str,
        target: &str,
        mut req: Request<BoxBody>,
        pending: Pending,
    ) -> Result<Response<AnswerBody>, ForwardError> {
        let relay = self.relay(relay_url)?;
        let path = format!("/internal/forward/{}/{}", crate::encode(id), target.trim_start_matches('/'));
        *req.uri_mut() = path.parse().map_err(|_| ForwardError::Target(path.clone()))?;
        *req.version_mut() = http::Version::HTTP_11;
        let auth = self.inner.auth.clone();
        let auth = auth.ok_or_else(|| ForwardError::Target("internal secret is not a valid header value".into()))?;
        req.headers_mut().insert(header::AUTHORIZATION, auth);
        let mut out = Outgoing::new(req, pending, &relay.peer.authority);
        let back = |relay: &Arc<Relay>| -> send::Back<RelayStream> {
            let relay = relay.clone();
            Box::new(move |conn| relay.put(conn))
        };
        let attempt = async {
            let kept = relay.take();
            let reused = kept.is_some();
            let conn = match kept {
                Some(c) => c,
                None => relay.connect().await?,
            };
            match send::send(conn, &mut out, back(&relay)).await {
                Err(e) if e.retry && reused => {
                    // A kept connection the relay closed meanwhile.
                    let conn = relay.connect().await?;
                    send::send(conn, &mut out, back(&relay)).await
                }
                other => other,
            }
            .map_err(|e| ForwardError::Relay(format!("{}: {e}", relay.peer.authority)))
        };
        tokio::time::timeout(self.inner.timeout, attempt)
            .await
            .map_err(|_| ForwardError::Timeout(self.inner.timeout))?
    }
}

impl Relay {
    /// `host:port` of the relay (what `Host` says to it).
    pub fn authority(&self) -> &str {
        &self.peer.authority
    }

    /// A kept connection to this relay, if one is idle and open.
    pub fn take(&self) -> Option<Conn<RelayStream>> {
        self.idle.take()
    }

    /// Keeps `conn` for the next request to this relay.
    pub fn put(&self, conn: Conn<RelayStream>) {
        self.idle.put(conn);
    }

    /// A new connection to this relay.
    pub async fn connect(&self) -> Result<Conn<RelayStream>, ForwardError> {
        let peer = &self.peer;
        let relay = |e: io::Error| ForwardError::Relay(format!("{}: {e}", peer.authority));
        let connect = async {
            let tcp = TcpStream::connect((peer.host.as_str(), peer.port)).await?;
            let _ = tcp.set_nodelay(true);
            if !peer.tls {
                return Ok(RelayStream::Plain(tcp));
            }
            let name = rustls::pki_types::ServerName::try_from(peer.host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            Ok(RelayStream::Tls(Box::new(self.tls.connect(name, tcp).await?)))
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| relay(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")))?
            .map_err(relay)?;
        Ok(Conn::new(stream))
    }
}

impl edgelink_hop::h1::Dial for Relay {
    type R = tokio::io::ReadHalf<RelayStream>;
    type W = tokio::io::WriteHalf<RelayStream>;

    async fn dial(&self) -> io::Result<Conn<RelayStream>> {
        self.connect().await.map_err(io::Error::other)
    }
}

/// A connection to a relay's internal API, plain or TLS.
pub enum RelayStream {
    /// `http://`.
    Plain(TcpStream),
    /// `https://`.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for RelayStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            RelayStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            RelayStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for RelayStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            RelayStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            RelayStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            RelayStream::Plain(s) => Pin::new(s).poll_flush(cx),
            RelayStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            RelayStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            RelayStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls_name_scheme_host_and_port() {
        let p = peer("http://127.0.0.1:3801").unwrap();
        assert!(!p.tls);
        assert_eq!((p.host.as_str(), p.port, p.authority.as_str()), ("127.0.0.1", 3801, "127.0.0.1:3801"));
        let p = peer("https://relay-1.internal/").unwrap();
        assert!(p.tls);
        assert_eq!((p.host.as_str(), p.port), ("relay-1.internal", 443));
        let p = peer("http://[::1]:9").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", 9));
        for bad in ["ftp://x", "relay:1", ""] {
            assert!(peer(bad).is_err(), "{bad}");
        }
    }
}
