//! The fronts of the internal and the device-origin listeners (ADR 25).
//!
//! A front reads each request head of a connection itself. A request it
//! can forward (the internal secret or an admitted pass, a live session on
//! this relay, no upgrade and no `100-continue`, HTTP/1.1, not a control
//! path) goes by heads ([`edgelink_hop::h1::exchange`]): its head
//! rewritten, its body copied with its framing onto a kept tunnel stream,
//! the answer copied back the same way (its headers filtered), all on the
//! task serving the connection. Anything else (other routes, refusals,
//! redirects to sign in, upgrades, malformed heads, a tunnel held by
//! another relay) goes, with the rest of its connection and the bytes
//! already read, to the listener's axum router, which answers as it always
//! did.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use edgelink_hop::h1::{self, After, Answer, Dial, Edit, H1Error, Reader, RequestInfo, Rewrite};
use edgelink_hop::listen::{self, Stream};
use edgelink_origins::{AUTH_PATH, Pass};
use edgelink_protocol::net::client_ip;
use edgelink_protocol::paths;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_util::sync::CancellationToken;

use crate::Relay;
use crate::error::RelayError;
use crate::pool::{self, Counted, TunnelConn};
use crate::registry::LiveSession;

/// A request the front forwards now: its head length, what it is, the
/// session it goes to and the route the router would have matched (the
/// metrics label). Its rewritten head is in the caller's buffer.
pub struct Taken {
    len: usize,
    info: RequestInfo,
    session: Arc<LiveSession>,
    route: &'static str,
}

/// What a front makes of a request head.
pub enum Seen<F> {
    /// Forwarded now.
    Forward(Taken),
    /// Forwarded if an asynchronous check of these facts says so.
    Check(F),
    /// The router's.
    Pass,
}

/// A request a check admitted: where it goes and how its head changes.
pub struct Checked {
    session: Arc<LiveSession>,
    route: &'static str,
    drop: &'static [&'static str],
    add: Vec<(&'static str, String)>,
}

/// One listener's rules.
pub trait Door: Send + Sync + 'static {
    /// What a head leaves for [`Door::check`].
    type Facts: Send;
    /// The `service` label of the listener's request metrics.
    const SERVICE: &'static str;
    /// Decides on a head (and for [`Seen::Forward`] writes the rewritten
    /// head to `head`).
    fn see(&self, req: &httparse::Request<'_, '_>, len: usize, head: &mut Vec<u8>) -> Seen<Self::Facts>;
    /// The asynchronous half of a decision; `None` hands the request on.
    fn check(&self, facts: Self::Facts, peer: SocketAddr) -> impl Future<Output = Option<Checked>> + Send;
    /// The relay's own answers and answer-header rules for this listener.
    fn answers(&self) -> &Answers;
}

/// Serves `listener` (TLS optional, with the listener `limits`) with
/// `door` in front of `app`, until `shutdown`.
pub async fn run<D: Door>(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: listen::Limits,
    shutdown: CancellationToken,
    door: D,
    app: Router,
) {
    let door = Arc::new(door);
    listen::accept(listener, tls, limits, shutdown, move |io, peer, token| {
        serve(io, peer, door.clone(), app.clone(), limits.header_timeout, token)
    })
    .await;
}

/// Serves one connection: forwards by heads while it can, then hands the
/// connection to `app`.
async fn serve<D: Door>(
    io: Stream,
    peer: SocketAddr,
    door: Arc<D>,
    app: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) {
    let (mut rd, mut wr) = listen::front_halves(io);
    let mut head = Vec::with_capacity(1024);
    let mut deadlines = h1::Deadlines::new();
    loop {
        let next = h1::next_head_until(&mut rd, &mut deadlines, header_timeout, &shutdown, |req, len| {
            Ok(door.see(req, len, &mut head))
        })
        .await;
        let taken = match next {
            // Closed, idle too long, or a head too slow to arrive.
            Ok(None) | Err(H1Error::TimedOut) => break,
            Ok(Some(Seen::Forward(taken))) => Some(taken),
            Ok(Some(Seen::Check(facts))) => match door.check(facts, peer).await {
                Some(checked) => rewrite(&rd, checked, &mut head),
                None => None,
            },
            Ok(Some(Seen::Pass)) | Err(_) => None,
        };
        // Not one to forward here, or a head the router must refuse.
        let Some(Taken { len, info, session, route }) = taken else {
            return listen::hand_on(rd, wr, peer, app, header_timeout, shutdown).await;
        };
        rd.consume(len);
        let started = Instant::now();
        let mut upstream = session.streams.take();
        let exchanged = h1::exchange(
            &mut rd,
            &mut wr,
            &mut upstream,
            &Open(&session),
            door.answers(),
            &mut deadlines,
            &info,
            &head,
        )
        .await;
        if let Some(conn) = upstream
            && !session.handle.is_closed()
        {
            session.streams.put(conn);
        }
        match exchanged {
            Ok((after, status)) => {
                edgelink_observe::record_request(D::SERVICE, route, &info.method, status, started);
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

/// The buffered head (still unconsumed) rewritten as a check said.
fn rewrite<R>(rd: &Reader<R>, checked: Checked, head: &mut Vec<u8>) -> Option<Taken>
where
    R: tokio::io::AsyncRead + Unpin,
{
    let add: Vec<(&str, &str)> = checked.add.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let rw = Rewrite { drop: checked.drop, add: &add, ..for_device(&checked.session) };
    let parsed = h1::request_head(rd.buffered(), |req, len| {
        head.clear();
        Ok((len, h1::rewrite_request(req, &rw, head)?))
    });
    let (len, info) = parsed.ok()??;
    Some(Taken { len, info, session: checked.session, route: checked.route })
}

/// The rewrite every request to `session`'s device gets: none, or, when the
/// device announced its local service, that service's `Host` and base path
/// (the device then splices the stream to it as it is).
fn for_device(session: &LiveSession) -> Rewrite<'_> {
    match session.local_origin.as_deref() {
        Some(o) => Rewrite { host: Some(&o.authority), prefix: &o.prefix, ..Rewrite::default() },
        None => Rewrite::default(),
    }
}

/// A live session on this relay, by session or device id.
fn live(relay: &Relay, id: &str) -> Option<Arc<LiveSession>> {
    relay.registry().by_session_or_device(id).filter(|s| !s.handle.is_closed())
}

/// The internal API's `/internal/forward/{id}/…`.
pub struct Internal {
    relay: Relay,
    answers: Answers,
}

impl Internal {
    /// The internal listener's door.
    pub fn new(relay: Relay) -> Self {
        let answers = Answers { timeout: relay.forward_timeout(), device_origin: false };
        Internal { relay, answers }
    }
}

const FORWARD: &str = "/internal/forward/";

impl Door for Internal {
    type Facts = ();
    const SERVICE: &'static str = "remote-proxy-internal";

    fn see(&self, req: &httparse::Request<'_, '_>, len: usize, head: &mut Vec<u8>) -> Seen<()> {
        let Some(path) = req.path else { return Seen::Pass };
        let Some(rest) = path.strip_prefix(FORWARD) else { return Seen::Pass };
        let id_len = rest.find(['/', '?']).unwrap_or(rest.len());
        let (id, tail) = rest.split_at(id_len);
        if id.is_empty() || h1::router_only(req) || !authorized(&self.relay, req.headers) {
            return Seen::Pass;
        }
        // Another relay's device-origin request with the app's own
        // Authorization: the router gives it back (forward.rs).
        if req.headers.iter().any(|h| h.name.eq_ignore_ascii_case(paths::DEVICE_AUTHORIZATION_HEADER)) {
            return Seen::Pass;
        }
        let target_path = tail.split('?').next().unwrap_or("");
        if paths::is_control_path(if target_path.is_empty() { "/" } else { target_path }) {
            return Seen::Pass;
        }
        let Some(session) = live(&self.relay, id) else { return Seen::Pass };
        let route = match target_path {
            "" => "/internal/forward/{id}",
            "/" => "/internal/forward/{id}/",
            _ => "/internal/forward/{id}/{*path}",
        };
        let rw = Rewrite { strip: &path[..FORWARD.len() + id.len()], drop: &["authorization"], ..for_device(&session) };
        head.clear();
        match h1::rewrite_request(req, &rw, head) {
            Ok(info) => Seen::Forward(Taken { len, info, session, route }),
            Err(_) => Seen::Pass,
        }
    }

    async fn check(&self, (): (), _peer: SocketAddr) -> Option<Checked> {
        None
    }

    fn answers(&self) -> &Answers {
        &self.answers
    }
}

/// Exactly one `Authorization: Bearer` header, with the internal secret.
fn authorized(relay: &Relay, headers: &[httparse::Header<'_>]) -> bool {
    let mut found = headers.iter().filter(|h| h.name.eq_ignore_ascii_case("authorization"));
    let (Some(h), None) = (found.next(), found.next()) else { return false };
    // Bytes, not text: the secret is compared as it came.
    match h.value.trim_ascii().split_at_checked(6) {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case(b"bearer") && token.first() == Some(&b' ') => {
            relay.secret_matches(token.trim_ascii())
        }
        _ => false,
    }
}

/// Device origins: `{device}.{devices domain}/…` with an admitted pass.
pub struct Devices {
    relay: Relay,
    answers: Answers,
}

impl Devices {
    /// The device listener's door.
    pub fn new(relay: Relay) -> Self {
        let answers = Answers { timeout: relay.forward_timeout(), device_origin: true };
        Devices { relay, answers }
    }
}

/// What a device-origin head leaves for the gate.
pub struct OriginFacts {
    pass: Pass,
    device_id: String,
    forwarded_host: String,
    cookie: Option<String>,
    session: Arc<LiveSession>,
    /// `X-Forwarded-For` values, read only when a load balancer is trusted.
    forwarded_for: Vec<Vec<u8>>,
}

/// Headers the relay sets itself on a device-origin request.
const ORIGIN_SET: &[&str] = &[
    "cookie",
    "x-forwarded-for",
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-proto",
    paths::DEVICE_AUTHORIZATION_HEADER,
];

impl Door for Devices {
    type Facts = OriginFacts;
    const SERVICE: &'static str = "remote-proxy-devices";

    fn see(&self, req: &httparse::Request<'_, '_>, _len: usize, _head: &mut Vec<u8>) -> Seen<OriginFacts> {
        let Some(o) = self.relay.origins() else { return Seen::Pass };
        let (Some(path), Some(method)) = (req.path, req.method) else { return Seen::Pass };
        let path_only = path.split('?').next().unwrap_or(path);
        if h1::router_only(req) || path_only == AUTH_PATH || !path.starts_with('/') || paths::is_control_path(path_only)
        {
            return Seen::Pass;
        }
        // Only the headers the decision reads.
        const READ: [(&str, HeaderName); 4] = [
            ("host", header::HOST),
            ("cookie", header::COOKIE),
            ("origin", header::ORIGIN),
            ("sec-fetch-site", HeaderName::from_static("sec-fetch-site")),
        ];
        let mut headers = HeaderMap::new();
        for h in req.headers.iter() {
            let Some(name) = READ.iter().find(|(n, _)| h.name.eq_ignore_ascii_case(n)).map(|(_, name)| name.clone())
            else {
                continue;
            };
            let Ok(value) = HeaderValue::from_bytes(h.value) else { return Seen::Pass };
            headers.append(name, value);
        }
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        let Some(device_id) = o.domain.device_of_host(host) else { return Seen::Pass };
        let now = edgelink_store::now_ms();
        let Some(pass) =
            edgelink_origins::cookie(&headers, o.cookie).and_then(|v| Pass::open(&o.keys, o.cookie, v, now))
        else {
            return Seen::Pass;
        };
        let origin = o.domain.origin(&device_id);
        let Ok(method) = Method::from_bytes(method.as_bytes()) else { return Seen::Pass };
        if !edgelink_origins::same_origin_ok(&headers, &method, false, &origin) {
            return Seen::Pass;
        }
        // Held by another relay: the router forwards it there.
        let Some(session) = self.relay.registry().by_device(&device_id).filter(|s| !s.handle.is_closed()) else {
            return Seen::Pass;
        };
        edgelink_origins::strip_pass(&mut headers);
        // The device's own cookies go on as they came; ones that are not
        // UTF-8 at all are the router's to carry (this path writes text).
        let cookie = match headers.get(header::COOKIE).map(|v| std::str::from_utf8(v.as_bytes())) {
            None => None,
            Some(Ok(v)) => Some(v.to_owned()),
            Some(Err(_)) => return Seen::Pass,
        };
        let forwarded_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(&origin).to_owned();
        let forwarded_for = if o.trusted_proxies.is_empty() {
            Vec::new()
        } else {
            let xff = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"));
            xff.map(|h| h.value.to_vec()).collect()
        };
        Seen::Check(OriginFacts { pass, device_id, forwarded_host, cookie, session, forwarded_for })
    }

    async fn check(&self, f: OriginFacts, peer: SocketAddr) -> Option<Checked> {
        let o = self.relay.origins()?;
        // A refusal, and a gate that cannot decide, are the router's to say.
        if !o.gate.admits(&f.pass, &f.device_id, edgelink_store::now_ms()).await.ok()? {
            return None;
        }
        // The device learns who is asking from the connection the relay
        // saw, or the address a trusted load balancer names (what a browser
        // sends in these headers is not believed).
        let proto = if o.domain.is_secure() { "https" } else { "http" };
        let client = client_ip(&o.trusted_proxies, peer.ip(), || f.forwarded_for.iter().map(Vec::as_slice));
        let mut add = vec![
            ("x-forwarded-for", client.to_string()),
            ("x-forwarded-host", f.forwarded_host),
            ("x-forwarded-proto", proto.to_owned()),
        ];
        // The pass is the user's credential for edgelink: never the device's.
        if let Some(cookie) = f.cookie {
            add.push(("cookie", cookie));
        }
        Some(Checked { session: f.session, route: crate::origin::ROUTE, drop: ORIGIN_SET, add })
    }

    fn answers(&self) -> &Answers {
        &self.answers
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

/// The relay's own answers when the device fails, and what of a device's
/// answer passes.
pub struct Answers {
    timeout: Duration,
    /// For a device origin: only allowlisted headers, cookies host-only.
    device_origin: bool,
}

impl h1::Local for Answers {
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

    fn answer_header(&self, name: &str, value: &[u8]) -> Edit {
        // Only the relay's own errors carry this marker.
        if name.eq_ignore_ascii_case(paths::RELAY_ERROR_HEADER) {
            return Edit::Drop;
        }
        if !self.device_origin {
            return Edit::Keep;
        }
        if name.eq_ignore_ascii_case("set-cookie") {
            // Cookies only for this origin; the pass is not the device's to set.
            return match HeaderValue::from_bytes(value).ok().and_then(|v| edgelink_origins::rewrite_set_cookie(&v)) {
                Some(v) => Edit::Replace(v.as_bytes().to_vec()),
                None => {
                    tracing::info!("device tried to set an edgelink cookie; dropped");
                    Edit::Drop
                }
            };
        }
        if edgelink_hop::headers::device_response_allowed(name) { Edit::Keep } else { Edit::Drop }
    }
}
