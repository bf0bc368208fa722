//! Streams the relay opens: each carries one or more HTTP/1.1 requests.
//! Control paths are answered here; everything else goes to the local
//! service. One keep-alive stream is one keep-alive connection to the
//! service. When the relay accepted the local origin this agent announced
//! (it then writes every request for the service itself), a stream whose
//! first request is not for a control path is spliced to the service byte
//! for byte; otherwise requests are forwarded by heads (`edgelink_hop::h1`):
//! bodies copied with their framing, upgrades spliced through.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgelink_hop::h1::{Answer, Local, Target};
use edgelink_protocol::error::{ErrorBody, ErrorCode};
use edgelink_protocol::paths;
use edgelink_tunnel::TunnelStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::Instrument;

/// Everything a stream handler needs.
pub struct StreamContext {
    /// This device.
    pub device_id: String,
    /// Where requests go: the local service's `host:port` and timeouts.
    pub target: Target,
    /// When the agent started.
    pub started: Instant,
    /// Woken by the relay's notices (`/.edgelink/v1/notify`).
    pub wake: Arc<tokio::sync::Notify>,
}

impl StreamContext {
    /// A context forwarding to the local service at `local_authority`,
    /// under the base path `path_prefix` (`""` or `/base`, no trailing `/`).
    pub fn new(device_id: &str, local_authority: String, path_prefix: String, connect_timeout: Duration) -> Self {
        StreamContext {
            device_id: device_id.to_owned(),
            target: Target {
                authority: local_authority,
                path_prefix,
                connect_timeout,
                header_timeout: STREAM_HEADER_TIMEOUT,
            },
            started: Instant::now(),
            wake: Arc::new(tokio::sync::Notify::new()),
        }
    }
}

/// How long a relay-opened stream may sit without a request head. The
/// relay's pool keeps idle streams for less (20 s), so it closes them first.
const STREAM_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes copied at once each way on a spliced stream.
const SPLICE_BUF: usize = 32 * 1024;

/// Serves one relay-opened stream on its own task; `splice` when the relay
/// writes requests for the local service (it accepted the local origin
/// this agent announced).
pub fn spawn_stream(ctx: Arc<StreamContext>, stream: TunnelStream, splice: bool) {
    let span = tracing::debug_span!("tunnel_stream", device_id = %ctx.device_id);
    tokio::spawn(
        async move {
            if splice {
                serve_spliced(&ctx, stream).await;
            } else {
                edgelink_hop::h1::serve_stream(stream, &ctx.target, &*ctx).await;
            }
        }
        .instrument(span),
    );
}

/// What a stream's first bytes say it is.
#[derive(Debug, PartialEq, Eq)]
enum First {
    /// A request for the agent's control API (its path).
    Control,
    /// A request for the local service; its path, for an error answer.
    Local(String),
    /// Nothing came (the stream ended, or stayed silent too long).
    Nothing,
}

/// Reads a stream's first bytes into `read` until its request line says
/// whether it is for a control path.
async fn first_request<S: AsyncRead + Unpin>(stream: &mut S, read: &mut Vec<u8>) -> First {
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(first) = classify(read) {
            return first;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return if read.is_empty() { First::Nothing } else { classify_now(read) },
            Ok(n) => read.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The decision once enough of the request line is in (`None`: read more).
fn classify(read: &[u8]) -> Option<First> {
    let prefix = paths::CONTROL_PREFIX.as_bytes();
    let line_end = read.iter().position(|&b| b == b'\r' || b == b'\n');
    let line = &read[..line_end.unwrap_or(read.len())];
    let Some(space) = line.iter().position(|&b| b == b' ') else {
        // A method is short: a long first word is no request the relay sent.
        return (line_end.is_some() || line.len() > 32).then(|| classify_now(read));
    };
    let target = &line[space + 1..];
    if target.len() < prefix.len() && line_end.is_none() && target.iter().all(|&b| b != b' ') {
        return None;
    }
    Some(classify_now(read))
}

/// The decision on what is in.
fn classify_now(read: &[u8]) -> First {
    let line = read.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let target = words.nth(1).unwrap_or_default();
    if target.starts_with(paths::CONTROL_PREFIX.as_bytes()) {
        return First::Control;
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    First::Local(String::from_utf8_lossy(path).into_owned())
}

/// A stream on a tunnel whose relay writes requests for the local service:
/// a control request is served here by heads; anything else is copied
/// both ways, as it is, to and from a new connection to the service.
async fn serve_spliced<S>(ctx: &StreamContext, mut stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut read = Vec::with_capacity(1024);
    let first = match tokio::time::timeout(STREAM_HEADER_TIMEOUT, first_request(&mut stream, &mut read)).await {
        Ok(first) => first,
        Err(_) => First::Nothing,
    };
    let path = match first {
        First::Nothing => return,
        First::Control => return edgelink_hop::h1::serve_stream_after(stream, &read, &ctx.target, ctx).await,
        First::Local(path) => path,
    };
    let connect = tokio::net::TcpStream::connect(&ctx.target.authority);
    let mut local = match tokio::time::timeout(ctx.target.connect_timeout, connect).await {
        Ok(Ok(tcp)) => tcp,
        failed => {
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "connect timed out".to_owned(),
            };
            tracing::info!(error = %why, "local service failed");
            let path = if path.starts_with('/') { path.as_str() } else { "/" };
            let answer = error(ErrorCode::DeviceUnavailable, &format!("local service: {why}"), path);
            let mut out = Vec::new();
            edgelink_hop::h1::write_answer(&mut out, &answer, true);
            if stream.write_all(&out).await.is_ok() && stream.shutdown().await.is_ok() {
                // The relay lets go of the stream once it has read the
                // answer; whatever of the request still comes is dropped.
                let drain = async {
                    let mut sink = [0u8; 4096];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                };
                let _ = tokio::time::timeout(STREAM_HEADER_TIMEOUT, drain).await;
            }
            return;
        }
    };
    let _ = local.set_nodelay(true);
    if local.write_all(&read).await.is_err() {
        return;
    }
    drop(read);
    // The relay ending its side (FIN) ends the request side to the service;
    // the relay letting go of the stream (RST: it gave up on the answer, or
    // the stream was idle) ends the service's connection at once.
    match tokio::io::copy_bidirectional_with_sizes(&mut stream, &mut local, SPLICE_BUF, SPLICE_BUF).await {
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "spliced stream ended with an error"),
    }
}

fn json(status: u16, body: Vec<u8>) -> Answer {
    Answer::json(status, body)
}

fn error(code: ErrorCode, message: &str, path: &str) -> Answer {
    let ts = edgelink_protocol::time::rfc3339(chrono::Utc::now().timestamp_millis());
    json(code.status(), serde_json::to_vec(&ErrorBody::new(code, message, path, ts)).unwrap_or_default())
}

impl Local for StreamContext {
    fn answer(&self, method: &str, path: &str) -> Option<Answer> {
        let path = path.split('?').next().unwrap_or(path);
        if !paths::is_control_path(path) {
            return None;
        }
        if path == paths::AGENT_INFO && method == "GET" {
            let info = serde_json::json!({
                "device_id": self.device_id,
                "agent_version": env!("CARGO_PKG_VERSION"),
                "uptime_secs": self.started.elapsed().as_secs(),
            });
            return Some(json(200, info.to_string().into_bytes()));
        }
        if path == paths::NOTIFY && method == "POST" {
            // Whatever the topic, the inbox looks (messages are the only one).
            self.wake.notify_one();
            return Some(json(200, br#"{"status":"ok"}"#.to_vec()));
        }
        Some(error(ErrorCode::NotFound, "no such control path", path))
    }

    fn failure(&self, failed: &edgelink_hop::h1::H1Error, path: &str) -> Answer {
        let message = failed.to_string();
        tracing::info!(error = %message, "local service failed");
        let path = path.split('?').next().unwrap_or(path);
        error(ErrorCode::DeviceUnavailable, &format!("local service: {message}"), path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;
    use tokio::net::TcpListener;

    #[test]
    fn the_first_request_line_tells_control_from_local() {
        let c = |s: &str| classify(s.as_bytes());
        assert_eq!(c("GET /.edgelink/v1/info HTTP/1.1\r\n"), Some(First::Control));
        assert_eq!(c("POST /.edgelink/v1/notify"), Some(First::Control));
        assert_eq!(c("GET /app/x?y=1 HTTP/1.1\r\n"), Some(First::Local("/app/x".into())));
        assert_eq!(c("GET /x HTTP/1.1"), Some(First::Local("/x".into())));
        // Too little to tell: read more.
        assert_eq!(c(""), None);
        assert_eq!(c("GE"), None);
        assert_eq!(c("GET /.edge"), None);
        assert_eq!(c("GET /.edgelink"), None);
        assert_eq!(c("GET /.edgelink HTTP/1.1"), Some(First::Local("/.edgelink".into())));
        // No request the relay writes: the service answers it.
        assert_eq!(c(&"X".repeat(40)), Some(First::Local(String::new())));
        assert_eq!(c("\r\n"), Some(First::Local(String::new())));
        // A stream that ends early is decided on what came.
        assert_eq!(classify_now(b"GET /.edgelink/"), First::Control);
        assert_eq!(classify_now(b"GET /.e"), First::Local("/.e".into()));
    }

    /// A local service that answers every request on a connection with the
    /// bytes it got so far and closes after `answers` of them.
    async fn service(answers: usize) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            for _ in 0..answers {
                while !got.ends_with(b"\r\n\r\n") {
                    let n = conn.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "the request came whole");
                    got.extend_from_slice(&chunk[..n]);
                }
                let body = format!("{}", got.len());
                let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                conn.write_all(answer.as_bytes()).await.unwrap();
                got.extend_from_slice(b"|");
            }
            got
        });
        (authority, task)
    }

    fn context(authority: String) -> Arc<StreamContext> {
        Arc::new(StreamContext::new("dev-1", authority, "/base".into(), Duration::from_secs(2)))
    }

    async fn read_answer(io: &mut DuplexStream) -> String {
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = tokio::time::timeout(Duration::from_secs(5), io.read(&mut chunk)).await.unwrap().unwrap();
            got.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= len {
                    return text;
                }
            }
            assert!(n > 0, "the stream ended mid-answer: {text}");
        }
    }

    #[tokio::test]
    async fn a_spliced_stream_carries_requests_and_answers_as_they_are() {
        let (authority, service) = service(2).await;
        let ctx = context(authority);
        let (mut relay, device) = tokio::io::duplex(64 * 1024);
        let served = tokio::spawn(async move { serve_spliced(&ctx, device).await });
        // Written for the service already: nothing is added, nothing taken.
        let first = "GET /x?y=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Odd:  spaced \r\n\r\n";
        relay.write_all(first.as_bytes()).await.unwrap();
        let answer = read_answer(&mut relay).await;
        assert_eq!(answer, format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", first.len()));
        let second = "GET /y HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        relay.write_all(second.as_bytes()).await.unwrap();
        read_answer(&mut relay).await;
        let got = service.await.unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), format!("{first}|{second}|"));
        // The service closed its connection: the stream ends.
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), relay.read_to_end(&mut rest)).await.unwrap().unwrap();
        assert!(rest.is_empty());
        drop(relay);
        tokio::time::timeout(Duration::from_secs(5), served).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_control_request_on_a_spliced_tunnel_is_the_agents() {
        let ctx = context("127.0.0.1:1".into());
        let (mut relay, device) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move { serve_spliced(&ctx, device).await });
        relay.write_all(b"GET /.edgelink/v1/info HTTP/1.1\r\nHost: relay\r\n\r\n").await.unwrap();
        let answer = read_answer(&mut relay).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("\"device_id\":\"dev-1\""), "{answer}");
    }

    #[tokio::test]
    async fn a_service_that_cannot_be_reached_is_a_502_and_the_end_of_the_stream() {
        // A port nothing listens on.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().to_string();
        let ctx = context(closed);
        let (mut relay, device) = tokio::io::duplex(64 * 1024);
        let served = tokio::spawn(async move { serve_spliced(&ctx, device).await });
        relay.write_all(b"POST /base/a?b=1 HTTP/1.1\r\nHost: x\r\ncontent-length: 3\r\n\r\nabc").await.unwrap();
        let answer = read_answer(&mut relay).await;
        assert!(answer.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{answer}");
        assert!(answer.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{answer}");
        let body: serde_json::Value = serde_json::from_str(answer.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!((body["error"].as_str(), body["path"].as_str()), (Some("device_unavailable"), Some("/base/a")));
        drop(relay);
        tokio::time::timeout(Duration::from_secs(5), served).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_silent_stream_is_let_go() {
        tokio::time::pause();
        let ctx = context("127.0.0.1:1".into());
        let (_relay, device) = tokio::io::duplex(1024);
        let served = tokio::spawn(async move { serve_spliced(&ctx, device).await });
        // The paused clock jumps to the next deadline: the stream's own.
        tokio::time::timeout(STREAM_HEADER_TIMEOUT + Duration::from_secs(1), served).await.unwrap().unwrap();
    }
}
