//! The front of api-server's listener (ADR 30): a device's web service at
//! `/api/v1/devices/{id}/http[/…]` forwarded by heads.
//!
//! The front reads each request head of a connection itself. A request to
//! a device's web service that has no body (HTTP/1.1, no upgrade, no
//! `Expect`) is decided here: the same gate as every route ([`admit`],
//! with the route's own access, scope and limits), the same route lookup
//! and the same rules as [`crate::device_proxy`], and then forwarded by
//! heads ([`h1::exchange`]) over a kept connection to the relay holding
//! the device: the head rewritten, the answer's headers filtered as they
//! pass, all on the task serving the connection, with no HTTP server
//! stack, router or middleware in between. Refusals and errors are written
//! here, the same answers the router gives.
//!
//! Anything else (every other route, request bodies, upgrades, a signed-out
//! browser sent to sign in, malformed heads) goes, with the rest of its
//! connection and the bytes already read, to the axum router.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, Method};
use edgelink_hop::h1::{self, Answer, Edit, Framing, H1Error, Instead, Reader, RequestInfo, Rewrite};
use edgelink_hop::listen::{self, Stream};
use edgelink_internal_api::forward::Relay;
use edgelink_protocol::paths;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::device_proxy::{self, DEVICE_CSP, Route};
use crate::error::ApiError;
use crate::principal::{self, Admitted, Gate, Principal, Refused, UserPrincipal};

/// The routes the front serves, as the router names them (the metrics
/// label; the gate of the last one is the front's).
const ROUTES: [&str; 3] =
    ["/api/v1/devices/{id}/http", "/api/v1/devices/{id}/http/", "/api/v1/devices/{id}/http/{*path}"];

/// The request headers this hop sets itself on a forwarded request, and
/// the caller's credentials (never the device's business).
const SET_HERE: &[&str] = &[
    "host",
    "cookie",
    "authorization",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-prefix",
    "forwarded",
    paths::DEVICE_AUTHORIZATION_HEADER,
];

/// The listener's shared state.
struct Front {
    state: AppState,
    gate: Gate,
}

/// Serves `listener` (with the listener `limits`) with the front before
/// `app`, until `shutdown`.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    app: Router,
    limits: listen::Limits,
    shutdown: CancellationToken,
) {
    // The gate of the device route as the route table declares it.
    let route = crate::routes::routes().into_iter().find(|r| r.path == ROUTES[2]);
    let gate = match route {
        Some(r) => Gate { state: state.clone(), access: r.access, need: r.need, limit: r.limit },
        None => {
            // Without the route there is nothing to serve by heads.
            listen::serve(listener, None, listen::router_service(app), limits, shutdown).await;
            return;
        }
    };
    let front = Arc::new(Front { state, gate });
    listen::accept(listener, None, limits, shutdown, move |io, peer, token| {
        serve(io, peer, front.clone(), app.clone(), limits.header_timeout, token)
    })
    .await;
}

/// What the front makes of a request head it may take.
struct Seen {
    /// Length of the head.
    len: usize,
    method: Method,
    /// The path (no query) and the query.
    path: String,
    query: Option<String>,
    /// The device id as the path names it.
    id: String,
    /// Which of [`ROUTES`].
    route: &'static str,
    /// The headers the gate reads.
    headers: HeaderMap,
    /// The caller closes the connection after this request.
    close: bool,
}

/// A head the front takes: a device route, bodiless, nothing only a full
/// server can do. `None` leaves it to the router.
fn see(req: &httparse::Request<'_, '_>, len: usize) -> Option<Seen> {
    let (method, target) = (req.method?, req.path?);
    let rest = target.strip_prefix("/api/v1/devices/")?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let id = rest.split(['/', '?']).next()?;
    let tail = path.strip_prefix("/api/v1/devices/")?.strip_prefix(id)?.strip_prefix("/http")?;
    let route = match tail {
        "" => ROUTES[0],
        "/" => ROUTES[1],
        t if t.starts_with('/') => ROUTES[2],
        _ => return None,
    };
    if id.is_empty() || h1::router_only(req) || !matches!(h1::request_framing(req.headers), Ok(Framing::None)) {
        return None;
    }
    let method = Method::from_bytes(method.as_bytes()).ok()?;
    let close = h1::request_closes(req);
    let mut headers = HeaderMap::new();
    for h in req.headers.iter() {
        let gate_reads = principal::GATE_HEADERS.iter().find(|n| h.name.eq_ignore_ascii_case(n.as_str())).cloned();
        let Some(name) = gate_reads else { continue };
        headers.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    Some(Seen {
        len,
        method,
        path: path.to_owned(),
        query: query.map(str::to_owned),
        id: id.to_owned(),
        route,
        headers,
        close,
    })
}

/// Serves one connection: takes what it can, then hands the connection to
/// `app`.
async fn serve(
    io: Stream,
    peer: SocketAddr,
    front: Arc<Front>,
    app: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) {
    let (mut rd, mut wr) = listen::front_halves(io);
    // The rewritten head, and the head as received (sent again, rewritten
    // for another relay, if the device moved): both reused per request.
    let mut head = Vec::with_capacity(1024);
    let mut orig = Vec::with_capacity(1024);
    let mut deadlines = h1::Deadlines::new();
    loop {
        let next =
            h1::next_head_until(&mut rd, &mut deadlines, header_timeout, &shutdown, |req, len| Ok(see(req, len))).await;
        let seen = match next {
            // Closed, idle too long, or a head too slow to arrive.
            Ok(None) | Err(H1Error::TimedOut) => break,
            Ok(Some(Some(seen))) => seen,
            // Not one to take here, or a head the router must refuse.
            Ok(Some(None)) | Err(_) => return listen::hand_on(rd, wr, peer, app, header_timeout, shutdown).await,
        };
        let started = Instant::now();
        let admitted = match principal::admit(
            &front.gate,
            &seen.method,
            &seen.path,
            seen.query.as_deref(),
            &seen.headers,
            Some(peer),
        )
        .await
        {
            Ok(a) => a,
            // The sign-in redirect is the router's to write.
            Err(Refused::SignIn(_)) => return listen::hand_on(rd, wr, peer, app, header_timeout, shutdown).await,
            Err(Refused::Error(e, decision)) => {
                let mut answer = e.at(&seen.path).into_answer();
                if let Some(d) = decision {
                    answer.headers.extend(principal::rate_limit_headers(&d));
                }
                rd.consume(seen.len);
                let written = write_own(&mut wr, &answer, seen.close).await;
                edgelink_observe::record_request(
                    "api-server",
                    seen.route,
                    seen.method.as_str(),
                    answer.status,
                    started,
                );
                if written.is_err() || seen.close {
                    break;
                }
                continue;
            }
        };
        let Some(Principal::User(user)) = &admitted.principal else {
            // The device route admits users only: anything else is the router's.
            return listen::hand_on(rd, wr, peer, app, header_timeout, shutdown).await;
        };
        orig.clear();
        orig.extend_from_slice(&rd.buffered()[..seen.len]);
        rd.consume(seen.len);
        let close =
            match forward(&front, &seen, user, &admitted, &orig, &mut rd, &mut wr, &mut head, &mut deadlines).await {
                Ok((status, close)) => {
                    edgelink_observe::record_request("api-server", seen.route, seen.method.as_str(), status, started);
                    close
                }
                Err(e) => {
                    tracing::debug!(error = %e, device_id = %seen.id, "forward ended with an error");
                    true
                }
            };
        if close {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

/// Writes one of this hop's own answers.
async fn write_own<W: tokio::io::AsyncWrite + Unpin>(wr: &mut W, answer: &Answer, close: bool) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(256 + answer.body.len());
    h1::write_answer(&mut out, answer, close);
    wr.write_all(&out).await?;
    wr.flush().await
}

/// An admitted request forwarded to the relay holding the device: what
/// [`crate::device_proxy`] does for a request without a body, by heads.
/// Returns the status written and whether the caller's connection ends.
#[allow(clippy::too_many_arguments)]
async fn forward<R, W>(
    front: &Front,
    seen: &Seen,
    user: &UserPrincipal,
    admitted: &Admitted,
    orig: &[u8],
    rd: &mut Reader<R>,
    wr: &mut W,
    head: &mut Vec<u8>,
    deadlines: &mut h1::Deadlines,
) -> Result<(u16, bool), H1Error>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let state = &front.state;
    let prefix = ["/api/v1/devices/", seen.id.as_str(), "/http"].concat();
    let base = DeviceAnswers {
        front,
        owner: &user.user.id,
        id: &seen.id,
        relay_url: "",
        path: &seen.path,
        prefix: &prefix,
        decision: admitted.decision,
    };
    let own = |local: &DeviceAnswers<'_>, e: ApiError| (local.own(e), seen.close);
    let local = &base;
    let (answer, close) = 'answered: {
        if seen.id.len() > 64 {
            break 'answered own(local, crate::devices::not_found());
        }
        if let Err(e) = device_proxy::device_path(&seen.path, &seen.id) {
            break 'answered own(local, e);
        }
        let proxy = state.device_proxy();
        let forwarder = match proxy.forwarder() {
            Ok(f) => f,
            Err(e) => break 'answered own(local, e),
        };
        let Some(authorization) = forwarder.authorization() else {
            break 'answered own(local, ApiError::internal("the internal secret is not a valid header value"));
        };
        let mut route: Route = match Box::pin(proxy.route(state, user, &seen.id, false)).await {
            Ok(r) => r,
            Err(e) => break 'answered own(local, e),
        };
        let client_ip = admitted.client_ip.map(crate::client_ip::ip_text);
        let origin = state.public_origin();
        let mut resent = false;
        loop {
            let relay: Arc<Relay> = match forwarder.relay(&route.relay_url) {
                Ok(r) => r,
                Err(e) => break 'answered own(local, ApiError::internal(e)),
            };
            let to = ["/internal/forward/", &paths::encode_segment(&route.device_id)].concat();
            let mut add = vec![
                ("host", relay.authority()),
                ("authorization", authorization),
                ("x-forwarded-proto", origin.scheme()),
                ("x-forwarded-host", origin.authority()),
                ("x-forwarded-prefix", prefix.as_str()),
            ];
            if let Some(ip) = &client_ip {
                add.push(("x-forwarded-for", ip));
            }
            let rw = Rewrite { strip: &prefix, prefix: &to, drop: SET_HERE, add: &add, ..Rewrite::default() };
            let info: RequestInfo = match h1::request_head(orig, |req, _| {
                head.clear();
                h1::rewrite_request(req, &rw, head)
            }) {
                Ok(Some(info)) => info,
                _ => break 'answered own(local, ApiError::bad_request("the request head could not be forwarded")),
            };
            let local = DeviceAnswers { relay_url: &route.relay_url, ..base };
            let mut upstream = relay.take();
            let exchanged = h1::exchange(rd, wr, &mut upstream, &*relay, &local, deadlines, &info, head).await;
            if let Some(conn) = upstream {
                relay.put(conn);
            }
            match exchanged {
                Ok((after, status)) => return Ok((status, after == h1::After::Close || info.close)),
                // The relay no longer holds the device: look again, and
                // send once more if another relay now holds it.
                Err(H1Error::Withdrawn) => {
                    proxy.forget_route(&user.user.id, &seen.id);
                    if !resent
                        && let Ok(fresh) = Box::pin(proxy.route(state, user, &seen.id, true)).await
                        && fresh.relay_url != route.relay_url
                    {
                        route = fresh;
                        resent = true;
                        continue;
                    }
                    break 'answered own(&local, device_proxy::moved());
                }
                Err(e) => return Err(e),
            }
        }
    };
    write_own(wr, &answer, close).await?;
    Ok((answer.status, close))
}

/// This hop's rules for a device's answers to one request: what
/// [`crate::device_proxy`] and the gate do to them on the router's path.
#[derive(Clone, Copy)]
struct DeviceAnswers<'a> {
    front: &'a Front,
    owner: &'a str,
    /// The device id as the path names it (the route cache's key).
    id: &'a str,
    /// The relay the request goes to (empty before one is chosen).
    relay_url: &'a str,
    /// The request path (no query).
    path: &'a str,
    /// `/api/v1/devices/{id}/http`.
    prefix: &'a str,
    decision: Option<edgelink_ratelimit::Decision>,
}

impl DeviceAnswers<'_> {
    /// One of this hop's errors as an answer, with what the gate adds.
    fn own(&self, e: ApiError) -> Answer {
        let mut answer = e.at(self.path).into_answer();
        if let Some(d) = &self.decision {
            answer.headers.extend(principal::rate_limit_headers(d));
        }
        answer.headers.push(("cache-control", "private, no-store".to_owned()));
        answer
    }
}

impl h1::Local for DeviceAnswers<'_> {
    fn answer(&self, _method: &str, _path: &str) -> Option<Answer> {
        None
    }

    fn failure(&self, error: &H1Error, _path: &str) -> Answer {
        let e = match error {
            H1Error::TimedOut => device_proxy::timed_out(),
            other => {
                self.front.state.device_proxy().forget_route(self.owner, self.id);
                device_proxy::relay_unreachable(self.relay_url, other)
            }
        };
        self.own(e)
    }

    fn answer_timeout(&self) -> Option<Duration> {
        self.front.state.device_proxy().forwarder().ok().map(|f| f.timeout())
    }

    fn answer_header(&self, name: &str, value: &[u8]) -> Edit {
        // The answer is on api-server's origin: only content headers pass
        // (no cookies, CORS, NEL, HSTS, …; the relay's marker neither),
        // and a redirect stays under this device's prefix.
        if !edgelink_hop::headers::device_response_allowed(name) {
            return Edit::Drop;
        }
        if !name.eq_ignore_ascii_case("location") {
            return Edit::Keep;
        }
        let origin = self.front.state.public_origin();
        let confined =
            HeaderValue::from_bytes(value).ok().and_then(|v| device_proxy::confine(&v, origin, self.prefix, self.path));
        match confined {
            Some(v) => Edit::Replace(v.as_bytes().to_vec()),
            None => Edit::Drop,
        }
    }

    fn instead(&self, _status: u16, headers: &[httparse::Header<'_>]) -> Option<Instead> {
        let marker = headers.iter().find(|h| h.name.eq_ignore_ascii_case(paths::RELAY_ERROR_HEADER))?;
        let value = HeaderValue::from_bytes(marker.value).ok()?;
        let code = value.to_str().ok()?;
        Some(match device_proxy::relay_refusal(code, self.relay_url) {
            Some(e) => Instead::Answer(self.own(e)),
            None => Instead::Withdraw,
        })
    }

    fn extra_headers(&self, out: &mut Vec<u8>) {
        // Nothing is cached outside this user's browser session, and the
        // device's pages run in an opaque origin (ADR 12).
        h1::put_header(out, b"cache-control", b"private, no-store");
        h1::put_header(out, b"content-security-policy", DEVICE_CSP.as_bytes());
        h1::put_header(out, b"x-content-type-options", b"nosniff");
        if let Some(d) = &self.decision {
            principal::put_rate_limit_headers(out, d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(head: &str) -> Option<Seen> {
        let raw = head.replace('\n', "\r\n") + "\r\n";
        h1::request_head(raw.as_bytes(), |req, len| Ok(see(req, len))).unwrap().flatten()
    }

    #[test]
    fn bodiless_device_requests_are_taken_with_the_headers_the_gate_reads() {
        let s = seen("GET /api/v1/devices/d1/http/a/b?x=1 HTTP/1.1\nHost: h\nCookie: s=1\nX-App: y\n").unwrap();
        assert_eq!((s.id.as_str(), s.route, s.path.as_str()), ("d1", ROUTES[2], "/api/v1/devices/d1/http/a/b"));
        assert_eq!(s.query.as_deref(), Some("x=1"));
        assert_eq!(s.headers.len(), 1, "only what the gate reads");
        assert_eq!(s.headers["cookie"], "s=1");
        assert!(!s.close);
        assert_eq!(seen("GET /api/v1/devices/d1/http HTTP/1.1\n").unwrap().route, ROUTES[0]);
        assert_eq!(seen("HEAD /api/v1/devices/d1/http/ HTTP/1.1\n").unwrap().route, ROUTES[1]);
        let s = seen("GET /api/v1/devices/d1/http?q HTTP/1.1\n").unwrap();
        assert_eq!((s.route, s.query.as_deref()), (ROUTES[0], Some("q")));
        assert!(seen("DELETE /api/v1/devices/d1/http/x HTTP/1.1\nContent-Length: 0\n").is_some());
        assert!(seen("GET /api/v1/devices/d1/http/x HTTP/1.1\nConnection: keep-alive, Close\n").unwrap().close);
    }

    #[test]
    fn bodies_upgrades_other_versions_and_other_routes_go_to_the_router() {
        for head in [
            "POST /api/v1/devices/d1/http/x HTTP/1.1\nContent-Length: 3\n",
            "POST /api/v1/devices/d1/http/x HTTP/1.1\nTransfer-Encoding: chunked\n",
            "POST /api/v1/devices/d1/http/x HTTP/1.1\nContent-Length: 1\nContent-Length: 2\n",
            "GET /api/v1/devices/d1/http/x HTTP/1.0\n",
            "GET /api/v1/devices/d1/http/ws HTTP/1.1\nConnection: upgrade\nUpgrade: websocket\n",
            "PUT /api/v1/devices/d1/http/x HTTP/1.1\nExpect: 100-continue\nContent-Length: 0\n",
            "GET /api/v1/devices/d1/httpx HTTP/1.1\n",
            "GET /api/v1/devices/d1 HTTP/1.1\n",
            "GET /api/v1/devices/d1/session HTTP/1.1\n",
            "GET /api/v1/devices//http/x HTTP/1.1\n",
            "GET /api/v1/devices HTTP/1.1\n",
            "GET /healthz HTTP/1.1\n",
            "GET http://h/api/v1/devices/d1/http/x HTTP/1.1\n",
        ] {
            assert!(seen(head).is_none(), "{head}");
        }
    }
}
