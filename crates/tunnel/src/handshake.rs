//! Both ends of the WebSocket handshake that starts a tunnel.
//!
//! * [`accept`] is the relay's side: it checks that a request head is a
//!   WebSocket upgrade (RFC 6455 §4.2.1), builds the `101` answer and hands
//!   back an [`Upgrade`] that becomes a [`Session`] once the connection has
//!   switched protocols. Authentication is the caller's job and comes first.
//! * [`dial`] is the device's side: URL, bearer token and TLS settings in,
//!   a running [`Session`] or a typed [`DialError`] out, with the server's
//!   JSON error body when it refused.
//!
//! The relay is always the yamux client and the device the yamux server
//! (docs/protocol.md §3), so neither function takes a [`Role`].

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use edgelink_protocol::error::ErrorBody;
use edgelink_protocol::limits::MAX_HEADER_BYTES;
use edgelink_protocol::paths;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::TunnelConfig;
use crate::session::{Role, Session, TunnelStream, spawn};

/// Largest refusal body a dial reads (the relay's JSON error bodies are
/// far smaller).
const MAX_REFUSAL_BODY: usize = 64 * 1024;

/// Why a request cannot be accepted as a tunnel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    /// Not a `GET` with `Upgrade: websocket`, `Connection: upgrade`,
    /// `Sec-WebSocket-Version: 13` and a `Sec-WebSocket-Key`.
    #[error("a WebSocket upgrade (version 13) is required")]
    NotWebSocket,
}

/// An accepted upgrade, waiting for the connection to switch protocols.
#[derive(Debug)]
pub struct Upgrade {
    on_upgrade: hyper::upgrade::OnUpgrade,
}

/// Checks `req` as a tunnel upgrade. On success returns the `101`
/// response to send (the caller may add headers) and the [`Upgrade`] to
/// turn into a session once it is sent.
pub fn accept<B>(req: &mut http::Request<B>) -> Result<(http::Response<()>, Upgrade), AcceptError> {
    let headers = req.headers();
    let is_ws = req.method() == Method::GET
        && header_has(headers, header::UPGRADE, "websocket")
        && header_has(headers, header::CONNECTION, "upgrade")
        && headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    let key =
        headers.get(header::SEC_WEBSOCKET_KEY).filter(|k| is_ws && !k.is_empty()).ok_or(AcceptError::NotWebSocket)?;
    let accept_key = derive_accept_key(key.as_bytes());
    let wants_subprotocol = header_has(headers, header::SEC_WEBSOCKET_PROTOCOL, paths::SUBPROTOCOL);

    let mut resp = http::Response::new(());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    // The accept key is base64: always a valid header value.
    if let Ok(v) = HeaderValue::from_str(&accept_key) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if wants_subprotocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(paths::SUBPROTOCOL));
    }
    Ok((resp, Upgrade { on_upgrade: hyper::upgrade::on(req) }))
}

impl Upgrade {
    /// Waits for the switch and starts the relay's side of the session.
    /// `on_inbound` is called for every stream the device opens.
    pub async fn into_session<F>(self, config: &TunnelConfig, on_inbound: F) -> Result<Session, hyper::Error>
    where
        F: FnMut(TunnelStream) + Send + 'static,
    {
        let upgraded = self.on_upgrade.await?;
        // hyper hands back what it read past the request head inside
        // `upgraded`, so there are no early bytes to pass on.
        Ok(spawn(TokioIo::new(upgraded), &[], Role::Relay, config, on_inbound))
    }
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
fn derive_accept_key(key: &[u8]) -> String {
    use sha1::Digest as _;
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut sha = sha1::Sha1::new();
    sha.update(key);
    sha.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(token))
}

/// What the relay said when it refused a dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status of the refusal.
    pub status: u16,
    /// The error body's `error` name, when the body was one.
    pub error: Option<String>,
    /// The error body's message, or `HTTP <status>`.
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.error {
            Some(e) => write!(f, "{e}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Why a dial failed, by what the device should do next.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The relay refused the token (401): authenticate again and retry.
    #[error("tunnel refused the token: {0}")]
    Unauthorized(Refusal),
    /// The relay refused the device (403): it may not connect at all.
    #[error("tunnel refused the device: {0}")]
    Forbidden(Refusal),
    /// The tunnel URL cannot be dialled; no retry will help.
    #[error("bad tunnel url: {0}")]
    BadUrl(String),
    /// Network or server trouble (or another refusal): retry with backoff.
    #[error("could not open the tunnel: {0}")]
    Transient(String),
}

/// Dials `url` (`ws://` or `wss://…/tunnel`) with `bearer` as the device
/// access token and starts the device's side of the session. `tls`
/// verifies `wss://` servers; `timeout` bounds connect and handshake.
pub async fn dial<F>(
    url: &str,
    bearer: &str,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    config: &TunnelConfig,
    on_inbound: F,
) -> Result<Session, DialError>
where
    F: FnMut(TunnelStream) + Send + 'static,
{
    dial_with(url, bearer, None, tls, timeout, config, |_| on_inbound).await
}

/// [`dial`] announcing the device's local service (`offer`, the value of
/// `x-edgelink-local-origin`); `make_inbound` is told whether the relay
/// accepted it (it then writes requests for that service) before the
/// first stream arrives, and gives the stream handler.
pub async fn dial_with<F, M>(
    url: &str,
    bearer: &str,
    offer: Option<&str>,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    config: &TunnelConfig,
    make_inbound: M,
) -> Result<Session, DialError>
where
    F: FnMut(TunnelStream) + Send + 'static,
    M: FnOnce(bool) -> F,
{
    let target = Target::parse(url)?;
    let opened = async {
        let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| DialError::Transient(format!("connect {}:{}: {e}", target.host, target.port)))?;
        // Small frames (a request head) must not wait for more.
        let _ = tcp.set_nodelay(true);
        if target.tls {
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| DialError::BadUrl(format!("{}: {e}", target.host)))?;
            let tls = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await
                .map_err(|e| DialError::Transient(format!("TLS: {e}")))?;
            let up = upgrade_client_with(tls, url, bearer, offer).await?;
            Ok(spawn(up.io, &up.early, Role::Device, config, make_inbound(up.accepted)))
        } else {
            let up = upgrade_client_with(tcp, url, bearer, offer).await?;
            Ok(spawn(up.io, &up.early, Role::Device, config, make_inbound(up.accepted)))
        }
    };
    match tokio::time::timeout(timeout, opened).await {
        Err(_) => Err(DialError::Transient(format!("no answer within {timeout:?}"))),
        Ok(result) => result,
    }
}

/// Where a tunnel URL points.
struct Target {
    tls: bool,
    /// Host name or IP address, without IPv6 brackets.
    host: String,
    port: u16,
    /// `host[:port]` as the `Host` header carries it.
    authority: String,
    path_and_query: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, DialError> {
        let bad = |why: &str| DialError::BadUrl(format!("{url}: {why}"));
        let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(bad("the scheme must be ws or wss")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        Ok(Target { tls, host, port, authority: authority.as_str().to_owned(), path_and_query })
    }
}

/// Runs the client side of the WebSocket handshake (RFC 6455 §4.1) for
/// `url` on `io`, a connection already open to its host, with `bearer` as
/// the device access token. Returns the connection and any bytes the
/// server sent after its `101` answer, ready for [`crate::session::spawn`];
/// a refusal comes back as a [`DialError`] with the server's JSON error.
/// It has no deadline of its own: callers bound it (as [`dial`] does).
pub async fn upgrade_client<S>(io: S, url: &str, bearer: &str) -> Result<(S, Vec<u8>), DialError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let up = upgrade_client_with(io, url, bearer, None).await?;
    Ok((up.io, up.early))
}

/// A connection the server upgraded.
pub struct Upgraded<S> {
    /// The connection.
    pub io: S,
    /// Bytes the server sent after its `101`.
    pub early: Vec<u8>,
    /// The server echoed the offered local origin.
    pub accepted: bool,
}

/// [`upgrade_client`] offering the device's local origin (`offer`, see
/// `edgelink_protocol::local_origin`); `accepted` says whether the relay
/// echoed it.
pub async fn upgrade_client_with<S>(
    mut io: S,
    url: &str,
    bearer: &str,
    offer: Option<&str>,
) -> Result<Upgraded<S>, DialError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let target = Target::parse(url)?;
    if HeaderValue::from_str(bearer).is_err() {
        return Err(DialError::Unauthorized(refusal(401, None)));
    }
    // Whatever the relay makes of it, it cannot end the header line.
    let offer = offer.filter(|o| o.bytes().all(|b| (0x20..0x7f).contains(&b)));
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    let mut head = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Protocol: {}\r\n\
         Authorization: Bearer {bearer}\r\n",
        target.path_and_query,
        target.authority,
        paths::SUBPROTOCOL,
    );
    if let Some(o) = offer {
        head.push_str(edgelink_protocol::local_origin::HEADER);
        head.push_str(": ");
        head.push_str(o);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let lost = |e: std::io::Error| DialError::Transient(format!("handshake: {e}"));
    io.write_all(head.as_bytes()).await.map_err(lost)?;
    io.flush().await.map_err(lost)?;

    let mut buf = Vec::with_capacity(4096);
    loop {
        if buf.len() >= MAX_HEADER_BYTES {
            return Err(DialError::Transient("handshake answer head too large".into()));
        }
        let mut chunk = [0u8; 4096];
        let n = io.read(&mut chunk).await.map_err(lost)?;
        if n == 0 {
            return Err(DialError::Transient("connection closed during the handshake".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut answer = httparse::Response::new(&mut headers);
        let head_len = match answer.parse(&buf) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(n)) => n,
            Err(e) => return Err(DialError::Transient(format!("bad handshake answer: {e}"))),
        };
        let status = answer.code.unwrap_or(0);
        let get = |name: &'static str| values(answer.headers, name);
        let has_token = |name: &'static str, token: &str| {
            get(name)
                .filter_map(|v| std::str::from_utf8(v).ok())
                .flat_map(|v| v.split(','))
                .any(|v| v.trim().eq_ignore_ascii_case(token))
        };
        if status != 101 {
            let length = get("content-length")
                .filter_map(|v| std::str::from_utf8(v).ok())
                .find_map(|v| v.trim().parse::<usize>().ok());
            let chunked = has_token("transfer-encoding", "chunked");
            let body = refusal_body(&mut io, buf.split_off(head_len), length, chunked).await;
            let r = refusal(status, body.as_deref());
            return Err(match status {
                401 => DialError::Unauthorized(r),
                403 => DialError::Forbidden(r),
                _ => DialError::Transient(r.to_string()),
            });
        }
        let accepted = get("sec-websocket-accept").any(|v| v == derive_accept_key(key.as_bytes()).as_bytes());
        let protocol_ok = get("sec-websocket-protocol").all(|v| v == paths::SUBPROTOCOL.as_bytes());
        if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") || !accepted || !protocol_ok {
            return Err(DialError::Transient("the server's 101 answer is not a WebSocket handshake".into()));
        }
        let accepted = offer.is_some_and(|o| {
            let mut echoed = get(edgelink_protocol::local_origin::HEADER);
            matches!((echoed.next(), echoed.next()), (Some(v), None) if v == o.as_bytes())
        });
        let early = buf.split_off(head_len);
        return Ok(Upgraded { io, early, accepted });
    }
}

/// The values of the headers called `name`.
fn values<'h>(headers: &'h [httparse::Header<'h>], name: &'static str) -> impl Iterator<Item = &'h [u8]> + 'h {
    headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
}

/// Reads a refusal's body: `length` bytes, or until the server closes
/// (at most [`MAX_REFUSAL_BODY`]); a chunked body is not read.
async fn refusal_body<S>(io: &mut S, mut body: Vec<u8>, length: Option<usize>, chunked: bool) -> Option<Vec<u8>>
where
    S: AsyncRead + Unpin,
{
    if chunked {
        return None;
    }
    let want = length.unwrap_or(MAX_REFUSAL_BODY).min(MAX_REFUSAL_BODY);
    let mut chunk = [0u8; 4096];
    while body.len() < want {
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(want);
    Some(body)
}

fn refusal(status: u16, body: Option<&[u8]>) -> Refusal {
    match body.and_then(|b| serde_json::from_slice::<ErrorBody>(b).ok()) {
        Some(b) => Refusal { status, error: Some(b.error), message: b.message },
        None => Refusal { status, error: None, message: format!("HTTP {status}") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgelink_protocol::error::ErrorCode;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn upgrade_request() -> http::Request<()> {
        http::Request::get("/tunnel")
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "keep-alive, Upgrade")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
            .header(header::SEC_WEBSOCKET_PROTOCOL, paths::SUBPROTOCOL)
            .body(())
            .unwrap()
    }

    #[test]
    fn accept_answers_with_the_rfc6455_accept_key_and_the_subprotocol() {
        let mut req = upgrade_request();
        let (resp, _upgrade) = accept(&mut req).unwrap();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        // The example of RFC 6455 §1.3.
        assert_eq!(resp.headers()[header::SEC_WEBSOCKET_ACCEPT], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(resp.headers()[header::SEC_WEBSOCKET_PROTOCOL], paths::SUBPROTOCOL);
        assert_eq!(resp.headers()[header::UPGRADE], "websocket");
    }

    #[test]
    fn accept_refuses_what_is_not_a_websocket_upgrade() {
        type Spoil = Box<dyn Fn(&mut http::Request<()>)>;
        let cases: Vec<(&str, Spoil)> = vec![
            ("POST", Box::new(|r| *r.method_mut() = Method::POST)),
            ("no Upgrade", Box::new(|r| drop(r.headers_mut().remove(header::UPGRADE)))),
            ("h2c", Box::new(|r| drop(r.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("h2c"))))),
            ("no Connection", Box::new(|r| drop(r.headers_mut().remove(header::CONNECTION)))),
            (
                "version 8",
                Box::new(|r| {
                    drop(r.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8")))
                }),
            ),
            ("no key", Box::new(|r| drop(r.headers_mut().remove(header::SEC_WEBSOCKET_KEY)))),
            (
                "empty key",
                Box::new(|r| drop(r.headers_mut().insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("")))),
            ),
        ];
        for (what, spoil) in cases {
            let mut req = upgrade_request();
            spoil(&mut req);
            assert_eq!(accept(&mut req).err(), Some(AcceptError::NotWebSocket), "{what}");
        }
        let mut req = upgrade_request();
        req.headers_mut().remove(header::SEC_WEBSOCKET_PROTOCOL);
        let (resp, _) = accept(&mut req).unwrap();
        assert!(resp.headers().get(header::SEC_WEBSOCKET_PROTOCOL).is_none());
    }

    fn tls() -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Arc::new(cfg)
    }

    /// A one-shot HTTP server on port 0 answering `status` with `body`.
    async fn refusing_server(status: u16, body: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = tcp.read(&mut buf).await;
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tcp.write_all(reply.as_bytes()).await;
        });
        format!("ws://{addr}/tunnel")
    }

    fn body(code: ErrorCode, message: &str) -> &'static str {
        let b = ErrorBody::new(code, message, "/tunnel", "2026-01-01T00:00:00Z".into());
        Box::leak(serde_json::to_string(&b).unwrap().into_boxed_str())
    }

    async fn dial_to(url: &str) -> Result<Session, DialError> {
        dial(url, "token", tls(), Duration::from_secs(5), &TunnelConfig::default(), |_| {}).await
    }

    #[tokio::test]
    async fn dial_sorts_refusals_by_what_the_device_should_do() {
        let url = refusing_server(401, body(ErrorCode::TokenExpired, "token expired")).await;
        match dial_to(&url).await {
            Err(DialError::Unauthorized(r)) => {
                assert_eq!(r.status, 401);
                assert_eq!(r.error.as_deref(), Some("token_expired"));
                assert_eq!(r.message, "token expired");
            }
            other => panic!("{other:?}"),
        }
        let url = refusing_server(403, body(ErrorCode::DeviceRevoked, "device is revoked")).await;
        assert!(
            matches!(dial_to(&url).await, Err(DialError::Forbidden(r)) if r.error.as_deref() == Some("device_revoked"))
        );
        let url = refusing_server(503, "not json").await;
        assert!(matches!(dial_to(&url).await, Err(DialError::Transient(m)) if m.contains("503")));
        assert!(matches!(dial_to("http://x/tunnel").await, Err(DialError::BadUrl(_))));
        assert!(matches!(dial_to("not a url").await, Err(DialError::BadUrl(_))));
        // Nothing listens there.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        assert!(matches!(dial_to(&format!("ws://{closed}/tunnel")).await, Err(DialError::Transient(_))));
    }

    /// A one-shot server answering the upgrade with `answer(key)`.
    async fn answering_server(answer: fn(&str) -> Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = tcp.read(&mut buf).await.unwrap();
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let key =
                head.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")).unwrap_or_default().trim().to_owned();
            assert!(head.starts_with("GET /tunnel HTTP/1.1\r\n"), "{head}");
            assert!(head.contains("\r\nAuthorization: Bearer token\r\n"), "{head}");
            let _ = tcp.write_all(&answer(&key)).await;
            let _ = tcp.read(&mut buf).await;
        });
        format!("ws://{addr}/tunnel")
    }

    #[tokio::test]
    async fn the_client_handshake_checks_the_accept_key_and_keeps_early_bytes() {
        let url = answering_server(|key| {
            let mut a = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            )
            .into_bytes();
            a.extend_from_slice(&[0x82, 0x01, b'x']);
            a
        })
        .await;
        let tcp =
            tokio::net::TcpStream::connect(url.trim_start_matches("ws://").trim_end_matches("/tunnel")).await.unwrap();
        let (_tcp, early) = upgrade_client(tcp, &url, "token").await.unwrap();
        assert_eq!(early, [0x82, 0x01, b'x']);

        for answer in [
            (|_: &str| {
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n".to_vec()
            }) as fn(&str) -> Vec<u8>,
            |key: &str| {
                format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n", derive_accept_key(key.as_bytes())).into_bytes()
            },
            |key: &str| {
                format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: other\r\n\r\n", derive_accept_key(key.as_bytes())).into_bytes()
            },
        ] {
            let url = answering_server(answer).await;
            let tcp = tokio::net::TcpStream::connect(url.trim_start_matches("ws://").trim_end_matches("/tunnel"))
                .await
                .unwrap();
            assert!(matches!(upgrade_client(tcp, &url, "token").await, Err(DialError::Transient(_))));
        }
        // A token that would break the head is refused before anything is sent.
        let (io, _peer) = tokio::io::duplex(64);
        assert!(matches!(upgrade_client(io, "ws://x/tunnel", "bad\r\ntoken").await, Err(DialError::Unauthorized(_))));
    }

    #[tokio::test]
    async fn dial_and_accept_make_a_working_session() {
        use hyper::server::conn::http1;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<Session>();
        let tx = std::sync::Mutex::new(Some(tx));
        let tx = Arc::new(tx);
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                let tx = tx.clone();
                async move {
                    let (resp, upgrade) = accept(&mut req).unwrap();
                    tokio::spawn(async move {
                        let s = upgrade.into_session(&TunnelConfig::default(), |_| {}).await.unwrap();
                        let _ = tx.lock().unwrap().take().unwrap().send(s);
                    });
                    Ok::<_, std::convert::Infallible>(resp.map(|()| http_body_util::Empty::<bytes::Bytes>::new()))
                }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).with_upgrades().await;
        });
        let device = dial(
            &format!("ws://{addr}/tunnel"),
            "token",
            tls(),
            Duration::from_secs(5),
            &TunnelConfig::default(),
            |mut s: TunnelStream| {
                tokio::spawn(async move {
                    let mut buf = [0u8; 5];
                    s.read_exact(&mut buf).await.unwrap();
                    s.write_all(&buf).await.unwrap();
                    s.shutdown().await.unwrap();
                });
            },
        )
        .await
        .unwrap();
        let relay = rx.await.unwrap();
        let mut s = relay.handle.open_stream().await.unwrap();
        s.write_all(b"hello").await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        relay.handle.close(4003, "shutdown");
        assert_eq!(device.ended.await.remote_reason(), Some(edgelink_protocol::close::CloseReason::Shutdown));
    }
}
