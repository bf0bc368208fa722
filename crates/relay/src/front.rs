//! The internal listener's front. A request for `/internal/forward/…` that
//! carries the internal secret, names a live session, asks for no upgrade
//! and no `100-continue`, and is not for a control path is forwarded by
//! heads ([`edgelink_hop::h1::exchange`]): its head rewritten (the route's
//! prefix and the caller's `Authorization` removed), its body copied with
//! its framing onto a kept tunnel stream of the session, the answer copied
//! back the same way, all on the task serving the connection. Everything
//! else (other routes, refusals, upgrades, malformed heads) goes, with
//! the rest of its connection and the bytes already read, to the internal
//! API's router, which answers as it always did (ADR 25).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use edgelink_hop::h1::{self, After, Answer, Dial, H1Error, Reader, RequestInfo, Rewrite};
use edgelink_hop::listen::{self, Prefixed, Stream};
use edgelink_protocol::paths;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_util::sync::CancellationToken;

use crate::Relay;
use crate::error::RelayError;
use crate::pool::{self, Counted, TunnelConn};
use crate::registry::LiveSession;

/// The route the forward serves, as the router names it (metrics label).
const ROUTE: &str = "/internal/forward/{id}/{*path}";
const PREFIX: &str = "/internal/forward/";
/// Read buffer of a caller's connection (it starts small and grows).
const CALLER_BUF: usize = 32 * 1024;

/// Serves one internal-API connection: forwards by heads while it can,
/// then hands the connection to `app`.
pub async fn serve(
    io: Stream,
    peer: SocketAddr,
    relay: Relay,
    app: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) {
    let (rd, mut wr) = tokio::io::split(io);
    let mut rd = Reader::new(rd, CALLER_BUF);
    let mut head = Vec::with_capacity(1024);
    loop {
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled(), if rd.buffered().is_empty() => Ok(None),
            next = h1::next_head(&mut rd, header_timeout, |req, len| Ok(decide(&relay, req, len, &mut head))) => next,
        };
        let (len, info, session) = match next {
            // Closed, idle too long, or a head too slow to arrive.
            Ok(None) | Err(H1Error::TimedOut) => break,
            Ok(Some(Some(taken))) => taken,
            // Not one to forward here, or a head the router must refuse.
            Ok(Some(None)) | Err(_) => return hand_on(rd, wr, peer, app, header_timeout, shutdown).await,
        };
        rd.consume(len);
        let started = Instant::now();
        let failures = Failures { timeout: relay.forward_timeout() };
        let mut upstream = session.streams.take();
        let exchanged = h1::exchange(&mut rd, &mut wr, &mut upstream, &Open(&session), &failures, &info, &head).await;
        if let Some(conn) = upstream
            && !session.handle.is_closed()
        {
            session.streams.put(conn);
        }
        match exchanged {
            Ok((after, status)) => {
                edgelink_observe::record_request("remote-proxy-internal", ROUTE, &info.method, status, started);
                if after == After::Close || info.close {
                    break;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, device_id = %session.device_id, "forward ended with an error");
                break;
            }
        }
    }
    let _ = wr.shutdown().await;
}

/// The connection, with what was read of it, to the router.
async fn hand_on(
    rd: Reader<ReadHalf<Stream>>,
    wr: WriteHalf<Stream>,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) {
    let (rd, read) = rd.into_parts();
    let io = TokioIo::new(Prefixed::new(read, rd.unsplit(wr)));
    listen::connection(io, listen::router_service(app)(peer), header_timeout, shutdown).await;
}

/// A request this front forwards: its head length, what it is and the
/// session it goes to; its rewritten head is in `head`. `None` for any
/// other (the router answers it, and frames it for HTTP/1.0 callers).
fn decide(
    relay: &Relay,
    req: &httparse::Request<'_, '_>,
    len: usize,
    head: &mut Vec<u8>,
) -> Option<(usize, RequestInfo, Arc<LiveSession>)> {
    // HTTP/1.0 callers get their answers re-framed by the router.
    if req.version != Some(1) {
        return None;
    }
    let path = req.path?;
    let rest = path.strip_prefix(PREFIX)?;
    let id_len = rest.find(['/', '?']).unwrap_or(rest.len());
    let (id, tail) = rest.split_at(id_len);
    if id.is_empty() || !authorized(relay, req.headers) {
        return None;
    }
    // What the router leaves to itself: upgrades (spliced there) and
    // `100-continue` (answered there when the body is wanted).
    if req.headers.iter().any(|h| h.name.eq_ignore_ascii_case("upgrade") || h.name.eq_ignore_ascii_case("expect")) {
        return None;
    }
    let target_path = tail.split('?').next().unwrap_or("");
    if paths::is_control_path(if target_path.is_empty() { "/" } else { target_path }) {
        return None;
    }
    let session =
        relay.registry().get(id).or_else(|| relay.registry().by_device(id)).filter(|s| !s.handle.is_closed())?;
    let rw = Rewrite { strip: &path[..PREFIX.len() + id.len()], credentials: &["authorization"], ..Rewrite::default() };
    head.clear();
    let info = h1::rewrite_request(req, &rw, head).ok()?;
    Some((len, info, session))
}

/// Exactly one `Authorization: Bearer` header, with the internal secret.
fn authorized(relay: &Relay, headers: &[httparse::Header<'_>]) -> bool {
    let mut found = headers.iter().filter(|h| h.name.eq_ignore_ascii_case("authorization"));
    let (Some(h), None) = (found.next(), found.next()) else { return false };
    let Ok(value) = std::str::from_utf8(h.value) else { return false };
    match value.trim().split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => relay.secret_matches(token.trim()),
        _ => false,
    }
}

/// Opens a new tunnel stream of a session.
struct Open<'a>(&'a LiveSession);

impl Dial for Open<'_> {
    type R = ReadHalf<Counted>;
    type W = WriteHalf<Counted>;

    async fn dial(&self) -> std::io::Result<TunnelConn> {
        pool::open(self.0).await.map_err(std::io::Error::other)
    }
}

/// The relay's own answers when the device fails.
struct Failures {
    timeout: Duration,
}

impl h1::Local for Failures {
    fn answer(&self, _method: &str, _path: &str) -> Option<Answer> {
        None
    }

    fn failure(&self, error: &H1Error, path: &str) -> Answer {
        let path = path.split('?').next().unwrap_or(path);
        match error {
            H1Error::TimedOut => RelayError::DeviceTimeout,
            other => RelayError::Device(other.to_string()),
        }
        .into_answer_at(path)
    }

    fn answer_timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }

    fn hidden_answer_headers(&self) -> &[&'static str] {
        // Only the relay's own errors carry this marker.
        &[paths::RELAY_ERROR_HEADER]
    }
}
