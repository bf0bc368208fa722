//! HTTP/1.1 forwarded by heads: each message's head is parsed and
//! rewritten, and its body is copied with its own framing untouched
//! (`Content-Length` bytes, or chunks passed through as they come), on one
//! task per stream and without a full HTTP client and server.
//!
//! edge-agent serves the streams the relay opens with [`serve_stream`]:
//! one keep-alive stream maps to one keep-alive connection to the local
//! service, requests and answers flow both ways at once (an echo service
//! may answer while the request body is still arriving), and an upgrade
//! (`101`) splices the two connections. The relay's listener fronts use
//! the same [`exchange`] toward tunnel streams ([`Dial`] opens the next
//! hop's connections, [`Local`] gives the hop's own answers and answer
//! header rules). Once a request is sent, a caller that hangs up ends the
//! wait for its answer and the connection to the next hop with it.
//!
//! The framing rules are RFC 9112 §6: a request body is chunked or
//! `Content-Length` long or absent; an answer to `HEAD`, a `1xx`, `204` or
//! `304` has none; an answer without either header runs until the
//! connection closes. Ambiguous framing (both headers, several lengths, a
//! transfer coding other than a final `chunked` on a request) is refused.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Headers parsed per message at most.
pub(crate) const MAX_HEADERS: usize = 128;
/// Longest chunk-size or trailer line.
pub(crate) const MAX_LINE: usize = 4096;
/// Bytes gathered before a write: a head and a small body leave together.
pub(crate) const OUT_BATCH: usize = 16 * 1024;
/// Room first given to an answer's rewritten head.
const ANSWER_HEAD_ROOM: usize = 1024;
/// Read buffer of the stream side and of the next hop's side.
const STREAM_BUF: usize = 32 * 1024;
const UPSTREAM_BUF: usize = 64 * 1024;

/// The two deadlines of one connection (its next request head's and the
/// answer's), kept for the connection's life. tokio moves a registered
/// timer to a later deadline with one atomic store, where a timeout per
/// request registered a timer in the runtime's wheel and cancelled it
/// again, under the wheel's lock, once for the head and once for the
/// answer of every request.
pub struct Deadlines {
    head: std::pin::Pin<Box<tokio::time::Sleep>>,
    answer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl std::fmt::Debug for Deadlines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadlines").finish_non_exhaustive()
    }
}

impl Default for Deadlines {
    fn default() -> Self {
        Self::new()
    }
}

impl Deadlines {
    /// Unset deadlines (must be made on a tokio runtime with time).
    pub fn new() -> Self {
        // Set for real before each use; the first use registers them.
        let later = tokio::time::Instant::now() + Duration::from_secs(86_400);
        Deadlines { head: Box::pin(tokio::time::sleep_until(later)), answer: Box::pin(tokio::time::sleep_until(later)) }
    }
}

/// `fut`, failing with `TimedOut` once `timer` (set to the deadline by
/// the caller) has elapsed; without a timer, unlimited.
async fn within<T>(
    timer: Option<std::pin::Pin<&mut tokio::time::Sleep>>,
    fut: impl std::future::Future<Output = Result<T, H1Error>>,
) -> Result<T, H1Error> {
    let Some(mut timer) = timer else { return fut.await };
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(r) = fut.as_mut().poll(cx) {
            return std::task::Poll::Ready(r);
        }
        timer.as_mut().poll(cx).map(|()| Err(H1Error::TimedOut))
    })
    .await
}

/// Why a message could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// The head is not HTTP/1.x, or its framing is ambiguous.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// The head is larger than the limit.
    #[error("message head too large")]
    HeadTooLarge,
    /// The connection ended inside a message.
    #[error("connection ended inside a message")]
    Truncated,
    /// No head arrived in time.
    #[error("timed out waiting for a message head")]
    TimedOut,
    /// The caller closed its connection while its answer was awaited.
    #[error("the caller went away before the answer")]
    CallerGone,
    /// This end withdrew the request on seeing the answer's head
    /// ([`Instead::Withdraw`]): nothing was written to the caller.
    #[error("the answer was withdrawn")]
    Withdrawn,
    /// A socket error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A read half with a buffer of its own: heads are parsed in place and
/// bodies are copied out of it. The buffer starts small and doubles (up to
/// its maximum) whenever a read fills it, so a stream carrying small
/// requests stays small and a download soon reads in big chunks.
pub struct Reader<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    max: usize,
}

/// Initial size of every [`Reader`]'s buffer.
const INITIAL_BUF: usize = 4096;

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Wraps `inner`; the buffer grows to `max` bytes as reads fill it
    /// (heads may grow it further, to the head limit).
    pub fn new(inner: R, max: usize) -> Self {
        Reader { inner, buf: vec![0; INITIAL_BUF.min(max)], pos: 0, end: 0, max }
    }

    /// Puts `bytes` before what is buffered, as if read first.
    pub(crate) fn put_back(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut buf = Vec::with_capacity((bytes.len() + self.end - self.pos).max(self.buf.len()));
        buf.extend_from_slice(bytes);
        buf.extend_from_slice(&self.buf[self.pos..self.end]);
        let end = buf.len();
        buf.resize(buf.capacity(), 0);
        (self.buf, self.pos, self.end) = (buf, 0, end);
    }

    /// Bytes read and not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    /// Drops the first `n` buffered bytes.
    pub fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        }
    }

    /// The largest the buffer grows to by reads alone.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// The wrapped reader and what was read but not consumed.
    pub fn into_parts(self) -> (R, Vec<u8>) {
        let rest = self.buf[self.pos..self.end].to_vec();
        (self.inner, rest)
    }

    /// Gives back memory a download grew the buffer to, once it is empty
    /// (a reader kept idle in a pool holds its initial size only).
    pub(crate) fn shrink(&mut self) {
        if self.pos == self.end && self.buf.len() > INITIAL_BUF.min(self.max) {
            self.buf = vec![0; INITIAL_BUF.min(self.max)];
            self.pos = 0;
            self.end = 0;
        }
    }

    /// Reads more bytes; 0 means end of stream. Unconsumed data may grow
    /// the buffer up to `limit` bytes.
    pub(crate) async fn fill(&mut self, limit: usize) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx, limit)).await
    }

    /// [`Reader::fill`] for a poll-based caller. Safe to poll again after
    /// `Pending`: the buffer only grows while it is full.
    pub(crate) fn poll_fill(
        &mut self,
        cx: &mut std::task::Context<'_>,
        limit: usize,
    ) -> std::task::Poll<io::Result<usize>> {
        if self.end == self.buf.len() {
            if self.pos > 0 {
                self.buf.copy_within(self.pos..self.end, 0);
                self.end -= self.pos;
                self.pos = 0;
            } else if self.buf.len() < limit {
                let grown = (self.buf.len() * 2).min(limit);
                self.buf.resize(grown, 0);
            } else {
                return std::task::Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "buffer limit reached")));
            }
        }
        let room = self.buf.len() - self.end;
        let mut rb = tokio::io::ReadBuf::new(&mut self.buf[self.end..]);
        std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        self.end += n;
        if n == room && self.buf.len() < self.max {
            // More was probably waiting: read bigger next time.
            let grown = (self.buf.len() * 2).min(self.max);
            self.buf.resize(grown, 0);
        }
        std::task::Poll::Ready(Ok(n))
    }
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding, passed through as it is.
    Chunked,
    /// Until the sender closes the connection (answers only).
    UntilClose,
}

/// What forwarding needs to know of a request head.
#[derive(Debug)]
pub struct RequestInfo {
    /// The method is `HEAD` (its answer has no body whatever it says).
    pub method_head: bool,
    /// The method.
    pub method: String,
    /// The request target as received (before any rewriting).
    pub path: String,
    /// How its body is delimited.
    pub framing: Framing,
    /// It asks to upgrade the connection.
    pub upgrade: bool,
    /// The caller ends the connection after it.
    pub close: bool,
}

/// What forwarding needs to know of an answer head.
#[derive(Debug)]
struct ResponseInfo {
    status: u16,
    framing: Framing,
    close: bool,
    /// This end's own answer instead of this one (nothing of it written).
    instead: Option<Instead>,
}

/// What httparse said of a head: its length, `None` while incomplete, or
/// why it is refused.
pub(crate) fn head_len(parsed: httparse::Result<usize>, what: &'static str) -> Result<Option<usize>, H1Error> {
    match parsed {
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(H1Error::HeadTooLarge),
        Err(_) => Err(H1Error::Malformed(what)),
    }
}

/// The tokens of every `Connection` header of a head, split and trimmed
/// once (each header of the message is looked up in them): kept in place
/// for the usual few, so parsing a head allocates nothing for them.
pub(crate) enum ConnectionTokens<'b> {
    /// Up to [`INLINE_CONNECTION_TOKENS`], the first `.1` of the array.
    Inline([&'b [u8]; INLINE_CONNECTION_TOKENS], usize),
    /// More than that.
    Heap(Vec<&'b [u8]>),
}

/// `Connection` tokens kept without an allocation.
const INLINE_CONNECTION_TOKENS: usize = 6;

impl<'b> std::ops::Deref for ConnectionTokens<'b> {
    type Target = [&'b [u8]];

    fn deref(&self) -> &[&'b [u8]] {
        match self {
            ConnectionTokens::Inline(tokens, n) => &tokens[..*n],
            ConnectionTokens::Heap(tokens) => tokens,
        }
    }
}

impl ConnectionTokens<'_> {
    /// Whether `token` is among them (ASCII case-insensitive).
    pub(crate) fn has(&self, token: &str) -> bool {
        self.iter().any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }
}

/// The non-empty tokens of every `Connection` header.
pub(crate) fn connection_tokens<'b>(headers: &[httparse::Header<'b>]) -> ConnectionTokens<'b> {
    let mut tokens = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii))
        .filter(|t| !t.is_empty());
    let mut inline: [&'b [u8]; INLINE_CONNECTION_TOKENS] = [&[]; INLINE_CONNECTION_TOKENS];
    let mut n = 0;
    for t in tokens.by_ref() {
        if n == INLINE_CONNECTION_TOKENS {
            let mut all = inline.to_vec();
            all.push(t);
            all.extend(tokens);
            return ConnectionTokens::Heap(all);
        }
        inline[n] = t;
        n += 1;
    }
    ConnectionTokens::Inline(inline, n)
}

/// True when the sender ends the connection after this message: it says
/// `close`, or speaks HTTP/1.0 without asking for keep-alive.
pub(crate) fn wants_close(connection: &ConnectionTokens<'_>, version: u8) -> bool {
    connection.has("close") || (version == 0 && !connection.has("keep-alive"))
}

pub(crate) fn is_hop_by_hop(name: &str, connection: &ConnectionTokens<'_>, keep_upgrade: bool) -> bool {
    if keep_upgrade && name.eq_ignore_ascii_case("upgrade") {
        return false;
    }
    listed_hop_by_hop(name) || connection.has(name)
}

/// Whether `name` is one of [`crate::headers::HOP_BY_HOP`]: picked by length first, since
/// this runs for every header of every forwarded message.
fn listed_hop_by_hop(name: &str) -> bool {
    let candidates: &[&str] = match name.len() {
        2 => &["te"],
        7 => &["trailer", "upgrade"],
        10 => &["connection", "keep-alive"],
        16 => &["proxy-connection"],
        17 => &["transfer-encoding"],
        18 => &["proxy-authenticate"],
        19 => &["proxy-authorization"],
        _ => return false,
    };
    candidates.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Framing from `Transfer-Encoding` and `Content-Length` headers (RFC 9112
/// §6.1–6.3). `request` refuses what a request may not carry.
pub(crate) fn body_framing(headers: &[httparse::Header<'_>], request: bool) -> Result<Framing, H1Error> {
    let mut length: Option<u64> = None;
    let mut coding: Option<bool> = None; // Some(final coding is chunked)
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii).rfind(|t| !t.is_empty());
            coding = Some(last.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            for v in h.value.split(|b| *b == b',') {
                let v = std::str::from_utf8(v.trim_ascii()).map_err(|_| H1Error::Malformed("content-length"))?;
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(H1Error::Malformed("content-length"));
                }
                let n: u64 = v.parse().map_err(|_| H1Error::Malformed("content-length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(H1Error::Malformed("conflicting content-length"));
                }
                length = Some(n);
            }
        }
    }
    match (coding, length) {
        (Some(_), Some(_)) => Err(H1Error::Malformed("both transfer-encoding and content-length")),
        (Some(true), None) => Ok(Framing::Chunked),
        (Some(false), None) if request => Err(H1Error::Malformed("request transfer coding is not chunked")),
        (Some(false), None) => Ok(Framing::UntilClose),
        (None, Some(0)) => Ok(Framing::None),
        (None, Some(n)) => Ok(Framing::Length(n)),
        (None, None) if request => Ok(Framing::None),
        (None, None) => Ok(Framing::UntilClose),
    }
}

/// How the body of a request with these headers is delimited; refuses
/// what a request may not carry.
pub fn request_framing(headers: &[httparse::Header<'_>]) -> Result<Framing, H1Error> {
    body_framing(headers, true)
}

/// How a request head is rewritten for the next hop.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rewrite<'a> {
    /// `Host` sent on, the original kept as `X-Forwarded-Host`; `None`
    /// keeps `Host` as it is.
    pub host: Option<&'a str>,
    /// Removed from the start of the request target (a route's prefix);
    /// what is left gets a leading `/` when it lacks one.
    pub strip: &'a str,
    /// Put before an origin-form target (the next hop's base path).
    pub prefix: &'a str,
    /// Headers dropped (what authenticated the caller to this hop, what
    /// this hop sets itself).
    pub drop: &'a [&'a str],
    /// Headers added (after the dropped ones are gone).
    pub add: &'a [(&'a str, &'a str)],
}

/// Parses a request head at the start of `buf` and hands it, with its
/// length, to `f`. `Ok(None)` when the head is not complete yet.
pub fn request_head<T>(
    buf: &[u8],
    f: impl FnOnce(&httparse::Request<'_, '_>, usize) -> Result<T, H1Error>,
) -> Result<Option<T>, H1Error> {
    // Nothing read yet (the usual case at the top of a read loop).
    if buf.is_empty() {
        return Ok(None);
    }
    let mut headers = header_slots();
    let mut req = httparse::Request::new(&mut []);
    match head_len(req.parse_with_uninit_headers(buf, &mut headers), "request head")? {
        None => Ok(None),
        Some(len) => f(&req, len).map(Some),
    }
}

/// Parses an answer head at the start of `buf` (`Ok(None)` while it is
/// incomplete) and hands it and its length to `f`.
pub(crate) fn response_head<T>(
    buf: &[u8],
    f: impl FnOnce(&httparse::Response<'_, '_>, usize) -> Result<T, H1Error>,
) -> Result<Option<T>, H1Error> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut headers = header_slots();
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut headers);
    match head_len(parsed, "answer head")? {
        None => Ok(None),
        Some(len) => f(&resp, len).map(Some),
    }
}

/// Room for a head's headers, left uninitialised: httparse writes only the
/// slots it fills, so a parse does not first clear 4 KiB of them.
fn header_slots<'b>() -> [std::mem::MaybeUninit<httparse::Header<'b>>; MAX_HEADERS] {
    [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS]
}

/// True when the caller ends the connection after this request.
pub fn request_closes(req: &httparse::Request<'_, '_>) -> bool {
    wants_close(&connection_tokens(req.headers), req.version.unwrap_or(1))
}

/// True for requests a front forwarding by heads leaves to a full HTTP
/// server whatever the route: HTTP/1.0 (its answers re-framed), upgrades
/// (spliced there) and `100-continue` (answered there when the body is
/// wanted).
pub fn router_only(req: &httparse::Request<'_, '_>) -> bool {
    req.version != Some(1)
        || req.headers.iter().any(|h| h.name.eq_ignore_ascii_case("upgrade") || h.name.eq_ignore_ascii_case("expect"))
}

/// Writes `req`, rewritten for the next hop, to `out`: HTTP/1.1,
/// hop-by-hop headers dropped (an upgrade's pair kept) and the rest as
/// `rw` says. Framing headers stay as they are: the body is copied
/// unchanged. Refuses `CONNECT` and ambiguous framing.
pub fn rewrite_request(
    req: &httparse::Request<'_, '_>,
    rw: &Rewrite<'_>,
    out: &mut Vec<u8>,
) -> Result<RequestInfo, H1Error> {
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Err(H1Error::Malformed("request line"));
    };
    if method.eq_ignore_ascii_case("CONNECT") {
        return Err(H1Error::Malformed("CONNECT is not forwarded"));
    }
    let connection = connection_tokens(req.headers);
    let upgrade = req.headers.iter().any(|h| h.name.eq_ignore_ascii_case("upgrade")) && connection.has("upgrade");
    let close = wants_close(&connection, version);
    let framing = body_framing(req.headers, true)?;

    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    let target = path.strip_prefix(rw.strip).unwrap_or(path);
    if path.starts_with('/') {
        out.extend_from_slice(rw.prefix.as_bytes());
    }
    if !rw.strip.is_empty() && !target.starts_with('/') {
        out.push(b'/');
    }
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(host) = rw.host {
        put_header(out, b"host", host.as_bytes());
    }
    // The original `Host` is kept as `X-Forwarded-Host` unless one goes on
    // anyway (the caller's, not dropped, or one this hop adds).
    let is_forwarded_host = |name: &str| name.eq_ignore_ascii_case("x-forwarded-host");
    let forwarded_host = rw.host.is_some()
        && (rw.add.iter().any(|(n, _)| is_forwarded_host(n))
            || (!rw.drop.iter().any(|n| is_forwarded_host(n))
                && req.headers.iter().any(|h| is_forwarded_host(h.name))));
    for h in req.headers.iter() {
        if rw.host.is_some() && h.name.eq_ignore_ascii_case("host") {
            if !forwarded_host {
                put_header(out, b"x-forwarded-host", h.value);
            }
            continue;
        }
        if rw.drop.iter().any(|c| h.name.eq_ignore_ascii_case(c)) {
            continue;
        }
        // The body is copied as it is, so its framing header stays.
        if !h.name.eq_ignore_ascii_case("transfer-encoding") && is_hop_by_hop(h.name, &connection, upgrade) {
            continue;
        }
        put_header(out, h.name.as_bytes(), h.value);
    }
    for (name, value) in rw.add {
        put_header(out, name.as_bytes(), value.as_bytes());
    }
    if upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(RequestInfo {
        method_head: method.eq_ignore_ascii_case("HEAD"),
        method: method.to_owned(),
        path: path.to_owned(),
        framing,
        upgrade,
        close,
    })
}

/// Writes one `name: value` header line to `out`.
pub fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Parses an answer head at the start of `buf` and writes it, rewritten
/// (HTTP/1.1, hop-by-hop headers dropped but for the framing and an
/// upgrade's pair), to `out`. `Ok(None)` when the head is not complete.
fn rewrite_response<L: Local + ?Sized>(
    buf: &[u8],
    request: &RequestInfo,
    local: &L,
    out: &mut Vec<u8>,
) -> Result<Option<(usize, ResponseInfo)>, H1Error> {
    response_head(buf, |resp, len| Ok((len, rewrite_answer(resp, request, local, out)?)))
}

/// Writes a parsed answer head, rewritten, to `out` (see
/// [`rewrite_response`]).
fn rewrite_answer<L: Local + ?Sized>(
    resp: &httparse::Response<'_, '_>,
    request: &RequestInfo,
    local: &L,
    out: &mut Vec<u8>,
) -> Result<ResponseInfo, H1Error> {
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Err(H1Error::Malformed("status line"));
    };
    let connection = connection_tokens(resp.headers);
    let switched = status == 101 && request.upgrade;
    let mut framing = if request.method_head || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::None
    } else {
        body_framing(resp.headers, false)?
    };
    if switched {
        framing = Framing::None;
    }
    let close = framing == Framing::UntilClose || wants_close(&connection, version);
    // Interim answers are skipped whatever this end thinks of them.
    if (status >= 200 || switched)
        && let Some(instead) = local.instead(status, resp.headers)
    {
        return Ok(ResponseInfo { status, framing, close, instead: Some(instead) });
    }

    out.extend_from_slice(b"HTTP/1.1 ");
    // httparse takes exactly three digits.
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        let framing_header =
            h.name.eq_ignore_ascii_case("transfer-encoding") || h.name.eq_ignore_ascii_case("content-length");
        if framing_header {
            put_header(out, h.name.as_bytes(), h.value);
            continue;
        }
        if is_hop_by_hop(h.name, &connection, switched) {
            continue;
        }
        match local.answer_header(h.name, h.value) {
            Edit::Keep => put_header(out, h.name.as_bytes(), h.value),
            Edit::Drop => {}
            Edit::Replace(value) => put_header(out, h.name.as_bytes(), &value),
        }
    }
    local.extra_headers(out);
    if switched {
        out.extend_from_slice(b"connection: upgrade\r\n");
    } else if framing == Framing::UntilClose || request.close {
        // The body ends when this connection closes, or the caller asked
        // to close it after this answer: say so to the caller.
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(ResponseInfo { status, framing, close, instead: None })
}

/// Bytes waiting to be written, so a head and a small body (or many small
/// chunks) leave in one write: on a tunnel stream every write is a frame.
struct Out {
    buf: Vec<u8>,
}

impl Out {
    fn new() -> Self {
        Out { buf: Vec::new() }
    }

    async fn put<W: AsyncWrite + Unpin>(&mut self, dst: &mut W, bytes: &[u8]) -> io::Result<()> {
        if self.buf.len() + bytes.len() > OUT_BATCH {
            self.send(dst).await?;
            if bytes.len() > OUT_BATCH {
                return dst.write_all(bytes).await;
            }
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    async fn send<W: AsyncWrite + Unpin>(&mut self, dst: &mut W) -> io::Result<()> {
        if !self.buf.is_empty() {
            dst.write_all(&self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }

    async fn flush<W: AsyncWrite + Unpin>(&mut self, dst: &mut W) -> io::Result<()> {
        self.send(dst).await?;
        dst.flush().await
    }
}

/// Copies `n` bytes from `src` to `dst`.
async fn copy_exact<R, W>(src: &mut Reader<R>, dst: &mut W, out: &mut Out, mut n: u64) -> Result<(), H1Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    while n > 0 {
        if src.buffered().is_empty() && src.fill(src.max).await? == 0 {
            return Err(H1Error::Truncated);
        }
        let k = src.buffered().len().min(usize::try_from(n).unwrap_or(usize::MAX));
        out.put(dst, &src.buffered()[..k]).await?;
        src.consume(k);
        n -= k as u64;
        if n > 0 {
            // Let what arrived so far go on while waiting for the rest.
            out.send(dst).await?;
        }
    }
    Ok(())
}

/// Reads until the buffer holds a whole line; its length with its `\n`.
pub(crate) fn poll_line<R: AsyncRead + Unpin>(
    src: &mut Reader<R>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<Result<usize, H1Error>> {
    loop {
        if let Some(i) = src.buffered().iter().position(|b| *b == b'\n') {
            return std::task::Poll::Ready(Ok(i + 1));
        }
        if src.buffered().len() >= MAX_LINE {
            return std::task::Poll::Ready(Err(H1Error::Malformed("chunk line too long")));
        }
        if std::task::ready!(src.poll_fill(cx, src.max.max(MAX_LINE)))? == 0 {
            return std::task::Poll::Ready(Err(H1Error::Truncated));
        }
    }
}

/// Reads one line (through its `\n`) into the buffer; returns its length.
async fn line<R: AsyncRead + Unpin>(src: &mut Reader<R>) -> Result<usize, H1Error> {
    std::future::poll_fn(|cx| poll_line(src, cx)).await
}

/// The size of a chunk from its size line (`HEX[;ext]\r\n`).
pub(crate) fn chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let hex = line.split(|b| *b == b';').next().unwrap_or_default().trim_ascii();
    if hex.is_empty() || hex.len() > 15 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return Err(H1Error::Malformed("chunk size"));
    }
    let hex = std::str::from_utf8(hex).map_err(|_| H1Error::Malformed("chunk size"))?;
    u64::from_str_radix(hex, 16).map_err(|_| H1Error::Malformed("chunk size"))
}

/// Copies a chunked body, chunk lines, data and trailers as they are.
async fn copy_chunked<R, W>(src: &mut Reader<R>, dst: &mut W, out: &mut Out) -> Result<(), H1Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let n = line(src).await?;
        let size = chunk_size(&src.buffered()[..n])?;
        out.put(dst, &src.buffered()[..n]).await?;
        src.consume(n);
        if size == 0 {
            // Trailer fields, then the empty line.
            loop {
                let n = line(src).await?;
                let empty = src.buffered()[..n].trim_ascii().is_empty();
                out.put(dst, &src.buffered()[..n]).await?;
                src.consume(n);
                if empty {
                    return Ok(());
                }
            }
        }
        copy_exact(src, dst, out, size).await?;
        let n = line(src).await?;
        if !src.buffered()[..n].trim_ascii().is_empty() {
            return Err(H1Error::Malformed("chunk data longer than its size"));
        }
        out.put(dst, &src.buffered()[..n]).await?;
        src.consume(n);
    }
}

/// Copies everything until `src` ends.
async fn copy_to_end<R, W>(src: &mut Reader<R>, dst: &mut W, out: &mut Out) -> Result<(), H1Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        if src.buffered().is_empty() && src.fill(src.max).await? == 0 {
            return Ok(());
        }
        out.put(dst, src.buffered()).await?;
        let n = src.buffered().len();
        src.consume(n);
        out.send(dst).await?;
    }
}

async fn copy_body<R, W>(src: &mut Reader<R>, dst: &mut W, out: &mut Out, framing: Framing) -> Result<(), H1Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match framing {
        Framing::None => Ok(()),
        Framing::Length(n) => copy_exact(src, dst, out, n).await,
        Framing::Chunked => copy_chunked(src, dst, out).await,
        Framing::UntilClose => copy_to_end(src, dst, out).await,
    }
}

/// Reads a body to its end and drops it.
async fn discard_body<R: AsyncRead + Unpin>(src: &mut Reader<R>, framing: Framing) -> Result<(), H1Error> {
    let mut sink = tokio::io::sink();
    let mut out = Out::new();
    copy_body(src, &mut sink, &mut out, framing).await
}

/// An answer the hop gives itself (JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Headers besides the content type and length.
    pub headers: Vec<(&'static str, String)>,
    /// The JSON body.
    pub body: Vec<u8>,
}

impl Answer {
    /// A JSON answer with no other headers.
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Answer { status, headers: Vec::new(), body }
    }
}

/// What the serving end decides for itself.
pub trait Local: Send + Sync {
    /// An answer for a request this end serves itself (its control paths);
    /// `None` forwards it.
    fn answer(&self, method: &str, path: &str) -> Option<Answer>;
    /// The answer when the next hop cannot be reached or fails before
    /// answering (`TimedOut` when it did not answer within
    /// [`Local::answer_timeout`]).
    fn failure(&self, error: &H1Error, path: &str) -> Answer;
    /// How long the next hop may take to start answering; `None` waits.
    fn answer_timeout(&self) -> Option<Duration> {
        None
    }
    /// What becomes of an end-to-end answer header of the next hop's
    /// (framing and hop-by-hop headers are dealt with before): kept as it
    /// is unless this end says otherwise.
    fn answer_header(&self, _name: &str, _value: &[u8]) -> Edit {
        Edit::Keep
    }
    /// Whether this end passes on a final answer of the next hop's at all,
    /// from its head: `None` passes it (header by header as
    /// [`Local::answer_header`] says), an [`Instead`] does not.
    fn instead(&self, _status: u16, _headers: &[httparse::Header<'_>]) -> Option<Instead> {
        None
    }
    /// Writes the headers this end adds to every answer it passes on
    /// (`name: value\r\n` each).
    fn extra_headers(&self, _out: &mut Vec<u8>) {}
}

/// What [`Local::instead`] does with an answer it does not pass on. Its
/// body is read and dropped (the connection to the next hop stays in step)
/// or, when only its end delimits it, the connection is closed.
#[derive(Debug, Clone)]
pub enum Instead {
    /// This answer goes to the caller instead.
    Answer(Answer),
    /// Nothing goes to the caller: the exchange ends with
    /// [`H1Error::Withdrawn`] and the request (which must have had no
    /// body) may be sent again, elsewhere.
    Withdraw,
}

/// What [`Local::answer_header`] does with a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Passed on as it is.
    Keep,
    /// Not passed on.
    Drop,
    /// Passed on with this value instead.
    Replace(Vec<u8>),
}

/// Where forwarded requests go.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` to connect to and to send as `Host`.
    pub authority: String,
    /// Prepended to every forwarded request's path (the base path of the
    /// service's URL, without a trailing `/`; empty for none).
    pub path_prefix: String,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// How long a stream may wait for its next request head.
    pub header_timeout: Duration,
}

/// A kept connection to the next hop: its read side buffered.
pub struct Upstream<R, W> {
    pub(crate) rd: Reader<R>,
    pub(crate) wr: W,
}

impl<R: AsyncRead + Unpin, W> Upstream<R, W> {
    /// A connection from its two halves; reads grow to `max` bytes.
    pub fn from_halves(rd: R, wr: W, max: usize) -> Self {
        Upstream { rd: Reader::new(rd, max), wr }
    }

    /// False when the other end has closed this idle connection (or sent
    /// something unasked): it must not carry a request.
    pub fn is_open(&mut self) -> bool {
        if !self.rd.buffered().is_empty() {
            return false;
        }
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        matches!(self.rd.poll_fill(&mut cx, self.rd.max), std::task::Poll::Pending)
    }
}

/// Opens connections to the next hop.
pub trait Dial: Sync {
    /// The read half of a connection.
    type R: AsyncRead + Unpin + Send;
    /// The write half of a connection.
    type W: AsyncWrite + Unpin + Send;
    /// A new connection.
    fn dial(&self) -> impl std::future::Future<Output = io::Result<Upstream<Self::R, Self::W>>> + Send;
}

impl Dial for Target {
    type R = OwnedReadHalf;
    type W = OwnedWriteHalf;

    async fn dial(&self) -> io::Result<Upstream<OwnedReadHalf, OwnedWriteHalf>> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        let _ = tcp.set_nodelay(true);
        let (rd, wr) = tcp.into_split();
        Ok(Upstream::from_halves(rd, wr, UPSTREAM_BUF))
    }
}

/// Writes `answer` (JSON, sized) to `out`; `close` says the connection ends
/// after it.
pub fn write_answer(out: &mut Vec<u8>, answer: &Answer, close: bool) {
    let reason = http::StatusCode::from_u16(answer.status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    out.extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", answer.status).as_bytes());
    put_header(out, b"date", httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    out.extend_from_slice(b"content-type: application/json\r\n");
    out.extend_from_slice(format!("content-length: {}\r\n", answer.body.len()).as_bytes());
    for (name, value) in &answer.headers {
        put_header(out, name.as_bytes(), value.as_bytes());
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&answer.body);
}

/// Serves the requests of one stream until it ends: each is answered by
/// `local` or forwarded to `target`, the answer written back.
pub async fn serve_stream<S, L>(stream: S, target: &Target, local: &L)
where
    S: AsyncRead + AsyncWrite + Unpin,
    L: Local + ?Sized,
{
    serve_stream_after(stream, &[], target, local).await;
}

/// [`serve_stream`] on a stream whose first bytes, `read`, were already
/// taken from it.
pub async fn serve_stream_after<S, L>(stream: S, read: &[u8], target: &Target, local: &L)
where
    S: AsyncRead + AsyncWrite + Unpin,
    L: Local + ?Sized,
{
    let (rd, mut wr) = tokio::io::split(stream);
    let mut rd = Reader::new(rd, STREAM_BUF);
    rd.put_back(read);
    let mut upstream = None;
    if let Err(e) = serve_loop(&mut rd, &mut wr, &mut upstream, target, local).await {
        tracing::debug!(error = %e, "stream ended with an error");
    }
    let _ = wr.shutdown().await;
}

/// Reads the next request head, within `timeout`, and hands it to `f`
/// (which may rewrite it; nothing is consumed). `Ok(None)` when the
/// connection ended, or stayed idle for `timeout`, between requests.
pub async fn next_head<R, T>(
    rd: &mut Reader<R>,
    deadlines: &mut Deadlines,
    timeout: Duration,
    mut f: impl FnMut(&httparse::Request<'_, '_>, usize) -> Result<T, H1Error>,
) -> Result<Option<T>, H1Error>
where
    R: AsyncRead + Unpin,
{
    let limit = edgelink_protocol::limits::MAX_HEADER_BYTES;
    deadlines.head.as_mut().reset(tokio::time::Instant::now() + timeout);
    let read = within(Some(deadlines.head.as_mut()), async {
        loop {
            if let Some(parsed) = request_head(rd.buffered(), &mut f)? {
                return Ok(Some(parsed));
            }
            if rd.buffered().len() >= limit {
                return Err(H1Error::HeadTooLarge);
            }
            if rd.fill(limit).await? == 0 {
                return if rd.buffered().is_empty() { Ok(None) } else { Err(H1Error::Truncated) };
            }
        }
    })
    .await;
    match read {
        Err(H1Error::TimedOut) if rd.buffered().is_empty() => Ok(None),
        other => other,
    }
}

/// [`next_head`] on a front's connection, which ends (`Ok(None)`) as soon
/// as `shutdown` is cancelled while no request is under way on it.
pub async fn next_head_until<R, T>(
    rd: &mut Reader<R>,
    deadlines: &mut Deadlines,
    timeout: Duration,
    shutdown: &tokio_util::sync::CancellationToken,
    f: impl FnMut(&httparse::Request<'_, '_>, usize) -> Result<T, H1Error>,
) -> Result<Option<T>, H1Error>
where
    R: AsyncRead + Unpin,
{
    let idle = rd.buffered().is_empty();
    tokio::select! {
        biased;
        _ = shutdown.cancelled(), if idle => Ok(None),
        next = next_head(rd, deadlines, timeout, f) => next,
    }
}

async fn serve_loop<R, W, L>(
    rd: &mut Reader<R>,
    wr: &mut W,
    upstream: &mut Option<Upstream<OwnedReadHalf, OwnedWriteHalf>>,
    target: &Target,
    local: &L,
) -> Result<(), H1Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    L: Local + ?Sized,
{
    let mut head = Vec::with_capacity(1024);
    let mut deadlines = Deadlines::new();
    let rw = Rewrite { host: Some(&target.authority), prefix: &target.path_prefix, ..Rewrite::default() };
    loop {
        head.clear();
        let next = next_head(rd, &mut deadlines, target.header_timeout, |req, len| {
            head.clear();
            Ok((len, rewrite_request(req, &rw, &mut head)?))
        })
        .await;
        let (len, req) = match next {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(()),
            Err(e) => {
                let status = match e {
                    H1Error::HeadTooLarge => 431,
                    H1Error::TimedOut => return Err(e),
                    _ => 400,
                };
                let answer = local.failure(&e, "/");
                let mut out = Vec::new();
                write_answer(&mut out, &Answer { status, ..answer }, true);
                let _ = wr.write_all(&out).await;
                return Err(e);
            }
        };
        rd.consume(len);

        if let Some(answer) = local.answer(&req.method, &req.path) {
            discard_body(rd, req.framing).await?;
            let mut out = Vec::new();
            write_answer(&mut out, &answer, req.close);
            wr.write_all(&out).await?;
            wr.flush().await?;
            if req.close {
                return Ok(());
            }
            continue;
        }

        match exchange(rd, wr, upstream, target, local, &mut deadlines, &req, &head).await? {
            (After::KeepAlive, _) if !req.close => {}
            _ => return Ok(()),
        }
    }
}

/// What the caller's connection does after an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// It may carry the next request.
    KeepAlive,
    /// It ends here.
    Close,
}

/// Forwards one request (its rewritten `head`, then its body from `rd`)
/// on `upstream`, or a connection `dial` opens, and writes the answer back
/// to `wr`; returns what the caller's connection does next and the status
/// written. `upstream` is left holding the connection when it can carry
/// another request. Failures before an answer started are `local`'s
/// failure answers; an answer `101` to an upgrade splices the two. The
/// answer's deadline ([`Local::answer_timeout`]) is one of `deadlines`.
#[allow(clippy::too_many_arguments)]
pub async fn exchange<R, W, D, L>(
    rd: &mut Reader<R>,
    wr: &mut W,
    upstream: &mut Option<Upstream<D::R, D::W>>,
    dial: &D,
    local: &L,
    deadlines: &mut Deadlines,
    req: &RequestInfo,
    head: &[u8],
) -> Result<(After, u16), H1Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    D: Dial,
    L: Local + ?Sized,
{
    let timed = match local.answer_timeout() {
        Some(t) => {
            deadlines.answer.as_mut().reset(tokio::time::Instant::now() + t);
            true
        }
        None => false,
    };
    let timer = &mut deadlines.answer;
    // At most twice: a kept connection found dead under the request is
    // replaced once by a new one (which is not retried).
    loop {
        // A kept connection the next hop has closed meanwhile is replaced.
        if upstream.as_mut().is_some_and(|u| !u.is_open()) || req.upgrade {
            *upstream = None;
        }
        let reused = upstream.is_some();
        let up = match upstream {
            Some(u) => u,
            None => {
                match within(timed.then_some(timer.as_mut()), async { dial.dial().await.map_err(H1Error::Io) }).await {
                    Ok(u) => upstream.insert(u),
                    Err(e) => return fail(rd, wr, req, local, &e).await,
                }
            }
        };
        if let Err(e) = up.wr.write_all(head).await {
            *upstream = None;
            if reused && req.framing == Framing::None {
                continue;
            }
            return fail(rd, wr, req, local, &e.into()).await;
        }

        // The request body and the answer flow at the same time; once the
        // body is sent, a caller that hangs up ends the wait for the answer
        // (and with it this connection to the next hop, so the next hop
        // learns of it too).
        let mut answer_started = false;
        let body_sent = std::sync::atomic::AtomicBool::new(false);
        let both = {
            let Upstream { rd: urd, wr: uwr } = &mut *up;
            let send_body = async {
                let mut out = Out::new();
                let copied = async {
                    copy_body(rd, uwr, &mut out, req.framing).await?;
                    out.flush(uwr).await?;
                    Ok::<(), H1Error>(())
                };
                if let Err(e) = copied.await {
                    return e;
                }
                body_sent.store(true, std::sync::atomic::Ordering::Relaxed);
                hung_up(rd).await;
                H1Error::CallerGone
            };
            let answer = relay_answer(urd, wr, req, local, timed.then_some(timer.as_mut()), &mut answer_started);
            let (mut send_body, mut answer) = (std::pin::pin!(send_body), std::pin::pin!(answer));
            let (mut send_error, mut answered) = (None, None);
            std::future::poll_fn(|cx| {
                if send_error.is_none()
                    && let std::task::Poll::Ready(e) = send_body.as_mut().poll(cx)
                {
                    if matches!(e, H1Error::CallerGone) {
                        return std::task::Poll::Ready(Err(e));
                    }
                    send_error = Some(e);
                }
                if answered.is_none()
                    && let std::task::Poll::Ready(a) = answer.as_mut().poll(cx)
                {
                    answered = Some(a);
                }
                // The answer is written and the request body sent (or failed).
                if answered.is_some() && (body_sent.load(std::sync::atomic::Ordering::Relaxed) || send_error.is_some())
                {
                    let sent = send_error.take().map_or(Ok(()), Err);
                    return std::task::Poll::Ready(Ok((sent, answered.take())));
                }
                std::task::Poll::Pending
            })
            .await
        };
        let (sent, answered) = match both {
            Ok((sent, Some(answered))) => (sent, answered),
            Ok((_, None)) | Err(_) => {
                *upstream = None;
                return Err(H1Error::CallerGone);
            }
        };
        return match answered {
            Ok(resp) if resp.status == 101 && req.upgrade => {
                sent?;
                let Some(up) = upstream.take() else { return Ok((After::Close, 101)) };
                splice_upgraded(rd, wr, up).await;
                Ok((After::Close, 101))
            }
            Ok(resp) => {
                if resp.close {
                    *upstream = None;
                }
                // A request body the next hop did not read to its end leaves
                // this connection out of step: it ends here.
                if sent.is_err() {
                    *upstream = None;
                    return Ok((After::Close, resp.status));
                }
                let after = if resp.framing == Framing::UntilClose { After::Close } else { After::KeepAlive };
                Ok((after, resp.status))
            }
            Err(e) => {
                *upstream = None;
                if answer_started || matches!(e, H1Error::Withdrawn) {
                    return Err(e);
                }
                if reused && req.framing == Framing::None && matches!(e, H1Error::Truncated | H1Error::Io(_)) {
                    // The kept connection died under the request: once more
                    // on a new one (nothing of the request body was consumed).
                    continue;
                }
                // Whether or not the request body was all sent, the caller's
                // next bytes can no longer be trusted to start a request.
                send_failure(wr, local, &req.path, &e, true).await
            }
        };
    }
}

/// Resolves when the caller closes its side (or its connection fails)
/// while nothing more of it is buffered; bytes of a next request mean it
/// is still there, and it is not looked at again.
async fn hung_up<R: AsyncRead + Unpin>(rd: &mut Reader<R>) {
    if rd.buffered().is_empty() && matches!(rd.fill(rd.max).await, Ok(0) | Err(_)) {
        return;
    }
    std::future::pending::<()>().await
}

/// Reads the next hop's answer (skipping interim `1xx` ones but a `101`)
/// and writes it, rewritten, to `wr`; its head must arrive by `deadline`.
async fn relay_answer<R, W, L>(
    urd: &mut Reader<R>,
    wr: &mut W,
    req: &RequestInfo,
    local: &L,
    deadline: Option<std::pin::Pin<&mut tokio::time::Sleep>>,
    started: &mut bool,
) -> Result<ResponseInfo, H1Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    L: Local + ?Sized,
{
    let limit = edgelink_protocol::limits::MAX_HEADER_BYTES;
    // The rewritten head is written straight into the outgoing buffer, so
    // it and a small body leave in one write with no copy in between.
    let mut out = Out { buf: Vec::with_capacity(ANSWER_HEAD_ROOM) };
    let resp = within(deadline, async {
        loop {
            out.buf.clear();
            let (len, resp) = loop {
                if let Some(parsed) = rewrite_response(urd.buffered(), req, local, &mut out.buf)? {
                    break parsed;
                }
                out.buf.clear();
                if urd.buffered().len() >= limit {
                    return Err(H1Error::HeadTooLarge);
                }
                if urd.fill(limit).await? == 0 {
                    return Err(H1Error::Truncated);
                }
            };
            urd.consume(len);
            // Interim answers stop here: the caller's client waits for the
            // final one anyway.
            if !(100..200).contains(&resp.status) || (resp.status == 101 && req.upgrade) {
                return Ok(resp);
            }
        }
    })
    .await?;
    if let Some(instead) = resp.instead {
        let Instead::Answer(answer) = instead else { return Err(H1Error::Withdrawn) };
        // Read past the answer not passed on, so the connection can carry
        // the next request (one delimited by its end cannot).
        let close = resp.close || resp.framing == Framing::UntilClose || discard_body(urd, resp.framing).await.is_err();
        *started = true;
        out.buf.clear();
        write_answer(&mut out.buf, &answer, req.close);
        out.flush(wr).await?;
        return Ok(ResponseInfo { status: answer.status, framing: Framing::None, close, instead: None });
    }
    *started = true;
    if let Framing::Length(n) = resp.framing {
        // Room for a small body beside its head: one allocation, not a
        // second one when the body is added.
        out.buf.reserve(usize::try_from(n).unwrap_or(OUT_BATCH).min(OUT_BATCH));
    }
    copy_body(urd, wr, &mut out, resp.framing).await?;
    out.flush(wr).await?;
    Ok(resp)
}

/// The next hop could not be reached: the request body is read and
/// dropped (so the caller's connection stays in step) and `local`'s
/// failure answer sent.
async fn fail<R, W, L>(
    rd: &mut Reader<R>,
    wr: &mut W,
    req: &RequestInfo,
    local: &L,
    error: &H1Error,
) -> Result<(After, u16), H1Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    L: Local + ?Sized,
{
    let in_step = discard_body(rd, req.framing).await.is_ok();
    send_failure(wr, local, &req.path, error, !in_step).await
}

async fn send_failure<W, L>(
    wr: &mut W,
    local: &L,
    path: &str,
    error: &H1Error,
    close: bool,
) -> Result<(After, u16), H1Error>
where
    W: AsyncWrite + Unpin,
    L: Local + ?Sized,
{
    let mut out = Vec::new();
    let answer = local.failure(error, path);
    write_answer(&mut out, &answer, close);
    wr.write_all(&out).await?;
    wr.flush().await?;
    Ok((if close { After::Close } else { After::KeepAlive }, answer.status))
}

/// Copies bytes both ways between an upgraded connection and the next
/// hop's until either side ends (buffered bytes first).
async fn splice_upgraded<R, W, UR, UW>(rd: &mut Reader<R>, wr: &mut W, up: Upstream<UR, UW>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    UR: AsyncRead + Unpin,
    UW: AsyncWrite + Unpin,
{
    let Upstream { rd: mut urd, wr: mut uwr } = up;
    let to_service = async {
        let mut out = Out::new();
        let r = copy_to_end(rd, &mut uwr, &mut out).await;
        let _ = uwr.shutdown().await;
        r
    };
    let to_caller = async {
        let mut out = Out::new();
        let r = copy_to_end(&mut urd, wr, &mut out).await;
        let _ = wr.flush().await;
        r
    };
    let _ = tokio::join!(to_service, to_caller);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hop_by_hop_list_is_recognised_by_length_and_name() {
        for h in crate::headers::HOP_BY_HOP {
            assert!(listed_hop_by_hop(h), "{h}");
            assert!(listed_hop_by_hop(&h.to_ascii_uppercase()), "{h}");
        }
        for other in ["content-length", "host", "tf", "trailers", "x-upgrade", "connectionx", ""] {
            assert!(!listed_hop_by_hop(other), "{other}");
        }
    }
    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt, Full};
    use hyper::body::{Frame, Incoming};
    use hyper_util::rt::TokioIo;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;

    fn headers<'a>(list: &'a [(&'a str, &'a [u8])]) -> Vec<httparse::Header<'a>> {
        list.iter().map(|(n, v)| httparse::Header { name: n, value: v }).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connections_deadlines_hold_however_often_they_move() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut rd = Reader::new(server, 1024);
        let mut deadlines = Deadlines::new();
        let head = |_: &httparse::Request<'_, '_>, len: usize| Ok(len);
        // Heads in time, each moving the deadline later.
        for wait in [100, 900, 300] {
            let send = async {
                tokio::time::sleep(Duration::from_millis(wait)).await;
                client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
            };
            let (got, ()) = tokio::join!(next_head(&mut rd, &mut deadlines, Duration::from_secs(1), head), send);
            let len = got.unwrap().expect("a head");
            rd.consume(len);
        }
        // A longer wait, then a shorter one than what is left of it: the
        // shorter deadline is the one kept.
        let send = async {
            tokio::time::sleep(Duration::from_secs(4)).await;
            client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        };
        let (got, ()) = tokio::join!(next_head(&mut rd, &mut deadlines, Duration::from_secs(5), head), send);
        rd.consume(got.unwrap().expect("a head"));
        let started = tokio::time::Instant::now();
        let idle = next_head(&mut rd, &mut deadlines, Duration::from_secs(1), head).await;
        assert!(matches!(idle, Ok(None)), "idle connection ends quietly: {idle:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        // Half a head when the deadline passes is an error.
        client.write_all(b"GET / HT").await.unwrap();
        let cut = next_head(&mut rd, &mut deadlines, Duration::from_secs(2), head).await;
        assert!(matches!(cut, Err(H1Error::TimedOut)), "{cut:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(body_framing(&headers(&[("Transfer-Encoding", b"gzip, chunked")]), true).unwrap(), Framing::Chunked);
        assert_eq!(body_framing(&headers(&[("content-length", b"12")]), true).unwrap(), Framing::Length(12));
        assert_eq!(body_framing(&headers(&[("content-length", b"0")]), true).unwrap(), Framing::None);
        assert_eq!(body_framing(&headers(&[("content-length", b"7, 7")]), true).unwrap(), Framing::Length(7));
        assert_eq!(body_framing(&headers(&[]), true).unwrap(), Framing::None);
        assert_eq!(body_framing(&headers(&[]), false).unwrap(), Framing::UntilClose);
        assert_eq!(body_framing(&headers(&[("transfer-encoding", b"gzip")]), false).unwrap(), Framing::UntilClose);
        for bad in [
            &[("transfer-encoding", &b"chunked"[..]), ("content-length", &b"3"[..])][..],
            &[("content-length", &b"3"[..]), ("content-length", &b"4"[..])][..],
            &[("content-length", &b"-1"[..])][..],
            &[("content-length", &b"+5"[..])][..],
            &[("transfer-encoding", &b"gzip"[..])][..],
        ] {
            assert!(body_framing(&headers(bad), true).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn chunk_sizes_parse_strictly() {
        assert_eq!(chunk_size(b"1a\r\n").unwrap(), 26);
        assert_eq!(chunk_size(b"0;name=value\r\n").unwrap(), 0);
        assert_eq!(chunk_size(b"FF \r\n").unwrap(), 255);
        for bad in [&b"\r\n"[..], b"zz\r\n", b"-1\r\n", b"1000000000000000\r\n", b"0x10\r\n"] {
            assert!(chunk_size(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[tokio::test]
    async fn chunked_bodies_are_copied_as_they_are_and_bad_framing_is_refused() {
        let body = b"5;ext=1\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let mut src = Reader::new(&body[..], 64);
        let mut dst = Vec::new();
        let mut out = Out::new();
        copy_chunked(&mut src, &mut dst, &mut out).await.unwrap();
        out.flush(&mut dst).await.unwrap();
        assert_eq!(dst, &body[..body.len() - 4], "copied unchanged, up to the end of the message");
        assert_eq!(src.buffered(), b"NEXT", "the next message stays");

        let long_line = format!("1;{}\r\na\r\n0\r\n\r\n", "x".repeat(MAX_LINE));
        let too_long = copy_chunked(&mut Reader::new(long_line.as_bytes(), 64), &mut Vec::new(), &mut Out::new()).await;
        assert!(matches!(too_long, Err(H1Error::Malformed(_))), "{too_long:?}");
        let overrun = b"2\r\nabc\r\n0\r\n\r\n";
        let overrun = copy_chunked(&mut Reader::new(&overrun[..], 64), &mut Vec::new(), &mut Out::new()).await;
        assert!(matches!(overrun, Err(H1Error::Malformed(_))), "{overrun:?}");
        let cut = b"5\r\nhel";
        let cut = copy_chunked(&mut Reader::new(&cut[..], 64), &mut Vec::new(), &mut Out::new()).await;
        assert!(matches!(cut, Err(H1Error::Truncated)), "{cut:?}");
    }

    fn rewrite(raw: &[u8], rw: &Rewrite<'_>, out: &mut Vec<u8>) -> Result<Option<(usize, RequestInfo)>, H1Error> {
        request_head(raw, |req, len| Ok((len, rewrite_request(req, rw, out)?)))
    }

    fn to(host: &str) -> Rewrite<'_> {
        Rewrite { host: Some(host), ..Rewrite::default() }
    }

    #[test]
    fn request_heads_are_rewritten_for_the_next_hop() {
        let raw = b"POST /a%2Fb?x=1 HTTP/1.0\r\nHost: s-1\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\n\
Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic x\r\nContent-Length: 3\r\nX-App: kept\r\n\r\nabc";
        let mut out = Vec::new();
        let (len, info) = rewrite(raw, &to("127.0.0.1:9"), &mut out).unwrap().unwrap();
        assert_eq!(&raw[len..], b"abc");
        let head = String::from_utf8(out).unwrap();
        assert!(head.starts_with("POST /a%2Fb?x=1 HTTP/1.1\r\nhost: 127.0.0.1:9\r\n"), "{head}");
        assert!(head.contains("x-forwarded-host: s-1\r\n"), "{head}");
        assert!(head.contains("X-App: kept\r\n") && head.contains("Content-Length: 3\r\n"), "{head}");
        for gone in ["Connection", "X-Private", "Keep-Alive", "TE:", "Proxy-Authorization"] {
            assert!(!head.contains(gone), "{gone} must not pass: {head}");
        }
        assert_eq!(info.framing, Framing::Length(3));
        assert!(!info.close, "HTTP/1.0 with keep-alive stays open");

        let mut out = Vec::new();
        let raw = b"GET /ws HTTP/1.1\r\nhost: s\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n";
        let (_, info) = rewrite(raw, &to("h:1"), &mut out).unwrap().unwrap();
        let head = String::from_utf8(out).unwrap();
        assert!(info.upgrade);
        assert!(head.contains("upgrade: websocket\r\n") && head.contains("connection: upgrade\r\n"), "{head}");

        let mut out = Vec::new();
        assert!(rewrite(b"GET / HTTP/1.1\r\nhost: s\r\n", &to("h:1"), &mut out).unwrap().is_none());
        assert!(rewrite(b"CONNECT h:1 HTTP/1.1\r\n\r\n", &to("h:1"), &mut out).is_err());
        assert!(rewrite(b"\x16\x03\x01 not http\r\n\r\n", &to("h:1"), &mut out).is_err());
    }

    #[test]
    fn a_route_prefix_and_the_callers_credentials_are_removed() {
        let rw = Rewrite {
            strip: "/internal/forward/d1",
            drop: &["authorization"],
            add: &[("x-forwarded-proto", "https")],
            ..Rewrite::default()
        };
        for (target, sent) in [("/internal/forward/d1/a/b?x=1", "/a/b?x=1"), ("/internal/forward/d1?x=1", "/?x=1")] {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer s\r\nCookie: c=1\r\n\r\n");
            let mut out = Vec::new();
            rewrite(raw.as_bytes(), &rw, &mut out).unwrap().unwrap();
            let head = String::from_utf8(out).unwrap();
            assert!(head.starts_with(&format!("GET {sent} HTTP/1.1\r\n")), "{head}");
            assert!(head.contains("Host: relay\r\n") && head.contains("Cookie: c=1\r\n"), "{head}");
            assert!(!head.contains("Authorization") && !head.contains("x-forwarded-host"), "{head}");
            assert!(head.ends_with("x-forwarded-proto: https\r\n\r\n"), "{head}");
        }
    }

    #[test]
    fn the_original_host_is_forwarded_once_whoever_sets_it() {
        let host = |head: &str, name: &str| {
            head.lines().filter(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:"))).count()
        };
        let raw = b"GET /x HTTP/1.1\r\nHost: dev.example\r\nX-Forwarded-Host: forged\r\n\r\n";
        // The caller's header passes when nothing drops it; none is added.
        let mut out = Vec::new();
        rewrite(raw, &to("h:1"), &mut out).unwrap().unwrap();
        let head = String::from_utf8(out).unwrap();
        assert!(head.contains("X-Forwarded-Host: forged\r\n") && host(&head, "x-forwarded-host") == 1, "{head}");
        // Dropped and set by this hop (a device origin): only this hop's.
        let rw = Rewrite {
            host: Some("h:1"),
            prefix: "/base",
            drop: &["x-forwarded-host"],
            add: &[("x-forwarded-host", "dev.example")],
            ..Rewrite::default()
        };
        let mut out = Vec::new();
        rewrite(raw, &rw, &mut out).unwrap().unwrap();
        let head = String::from_utf8(out).unwrap();
        assert!(head.starts_with("GET /base/x HTTP/1.1\r\nhost: h:1\r\n"), "{head}");
        assert!(!head.contains("forged") && host(&head, "x-forwarded-host") == 1, "{head}");
        assert_eq!(host(&head, "host"), 1, "{head}");
        // Dropped and not set: the original host goes on.
        let rw = Rewrite { host: Some("h:1"), drop: &["x-forwarded-host"], ..Rewrite::default() };
        let mut out = Vec::new();
        rewrite(raw, &rw, &mut out).unwrap().unwrap();
        let head = String::from_utf8(out).unwrap();
        assert!(head.contains("x-forwarded-host: dev.example\r\n") && host(&head, "x-forwarded-host") == 1, "{head}");
    }

    #[test]
    fn every_connection_header_counts_however_many_there_are() {
        for n in [1, 4, 5, 9] {
            let mut raw = String::from("GET / HTTP/1.1\r\n");
            for i in 0..n {
                raw.push_str(&format!("Connection: x-private-{i}\r\nX-Private-{i}: secret\r\n"));
            }
            raw.push_str("Connection: close\r\nX-App: kept\r\n\r\n");
            let mut out = Vec::new();
            let (_, info) = rewrite(raw.as_bytes(), &Rewrite::default(), &mut out).unwrap().unwrap();
            let head = String::from_utf8(out).unwrap();
            assert!(!head.contains("secret") && !head.to_ascii_lowercase().contains("connection"), "{n}: {head}");
            assert!(head.contains("X-App: kept") && info.close, "{n}: {head}");
        }
    }

    #[test]
    fn a_route_prefix_can_be_swapped_for_the_next_hops() {
        let rw = Rewrite { strip: "/api/v1/devices/d1/http", prefix: "/internal/forward/d1", ..Rewrite::default() };
        for (target, sent) in [
            ("/api/v1/devices/d1/http/a?x=1", "/internal/forward/d1/a?x=1"),
            ("/api/v1/devices/d1/http", "/internal/forward/d1/"),
            ("/api/v1/devices/d1/http?x", "/internal/forward/d1/?x"),
        ] {
            let raw = format!("GET {target} HTTP/1.1\r\n\r\n");
            let mut out = Vec::new();
            rewrite(raw.as_bytes(), &rw, &mut out).unwrap().unwrap();
            let head = String::from_utf8(out).unwrap();
            assert!(head.starts_with(&format!("GET {sent} HTTP/1.1\r\n")), "{head}");
        }
    }

    /// Opens nothing: the exchange must use the kept connection it is given.
    struct NoDial;

    impl Dial for NoDial {
        type R = tokio::io::ReadHalf<tokio::io::DuplexStream>;
        type W = tokio::io::WriteHalf<tokio::io::DuplexStream>;

        async fn dial(&self) -> io::Result<Upstream<Self::R, Self::W>> {
            Err(io::Error::other("no new connections here"))
        }
    }

    /// Replaces answers marked `x-marker: answer`, withdraws those marked
    /// `withdraw`, and adds a header to those it passes on.
    struct Marker;

    impl Local for Marker {
        fn answer(&self, _method: &str, _path: &str) -> Option<Answer> {
            None
        }
        fn failure(&self, _error: &H1Error, _path: &str) -> Answer {
            Answer::json(502, b"{}".to_vec())
        }
        fn instead(&self, _status: u16, headers: &[httparse::Header<'_>]) -> Option<Instead> {
            match headers.iter().find(|h| h.name.eq_ignore_ascii_case("x-marker"))?.value {
                b"answer" => Some(Instead::Answer(Answer::json(503, b"{\"own\":1}".to_vec()))),
                b"withdraw" => Some(Instead::Withdraw),
                _ => None,
            }
        }
        fn extra_headers(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(b"x-added: 1\r\n");
        }
    }

    #[tokio::test]
    async fn an_answer_can_be_replaced_withdrawn_or_added_to() {
        use tokio::io::AsyncWriteExt as _;
        for marker in ["", "answer", "withdraw"] {
            let (near, mut far) = tokio::io::duplex(4096);
            let (urd, uwr) = tokio::io::split(near);
            let mut upstream = Some(Upstream::from_halves(urd, uwr, 4096));
            let marked = if marker.is_empty() { String::new() } else { format!("x-marker: {marker}\r\n") };
            let answer = format!("HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\n{marked}\r\nbody");
            let next_hop = tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n = far.read(&mut buf).await.unwrap();
                far.write_all(answer.as_bytes()).await.unwrap();
                (String::from_utf8_lossy(&buf[..n]).into_owned(), far)
            });
            let (caller, mut caller_far) = tokio::io::duplex(4096);
            let (crd, mut cwr) = tokio::io::split(caller);
            let mut rd = Reader::new(crd, 1024);
            let req = RequestInfo {
                method_head: false,
                method: "GET".into(),
                path: "/x".into(),
                framing: Framing::None,
                upgrade: false,
                close: false,
            };
            let head = b"GET /x HTTP/1.1\r\n\r\n";
            let result =
                exchange(&mut rd, &mut cwr, &mut upstream, &NoDial, &Marker, &mut Deadlines::new(), &req, head).await;
            let (sent, _far) = next_hop.await.unwrap();
            assert_eq!(sent.as_bytes(), head);
            drop((rd, cwr));
            let mut written = String::new();
            caller_far.read_to_string(&mut written).await.unwrap();
            match marker {
                "" => {
                    assert_eq!(result.unwrap(), (After::KeepAlive, 404));
                    assert_eq!(written, "HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\nx-added: 1\r\n\r\nbody");
                    assert!(upstream.is_some(), "kept for the next request");
                }
                "answer" => {
                    assert_eq!(result.unwrap(), (After::KeepAlive, 503));
                    assert!(written.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{written}");
                    assert!(written.ends_with("\r\n\r\n{\"own\":1}") && !written.contains("x-added"), "{written}");
                    assert!(upstream.is_some(), "the replaced answer's body was read past");
                }
                _ => {
                    assert!(matches!(result, Err(H1Error::Withdrawn)), "{result:?}");
                    assert_eq!(written, "", "nothing reaches the caller");
                    assert!(upstream.is_none());
                }
            }
        }
    }

    struct Agentish;

    impl Local for Agentish {
        fn answer(&self, method: &str, path: &str) -> Option<Answer> {
            (path == "/.control" && method == "GET").then(|| Answer::json(200, b"{\"local\":true}".to_vec()))
        }
        fn failure(&self, error: &H1Error, _path: &str) -> Answer {
            Answer::json(502, format!("{{\"error\":{:?}}}", error.to_string()).into_bytes())
        }
    }

    /// The local service: echoes bodies as they stream, answers HEAD and
    /// 204, upgrades `/ws` to an echo, and counts its connections.
    async fn service() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let conns = Arc::new(AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
                        let host = req.headers().get("host").cloned();
                        let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
                        let fwd = req.headers().get("x-forwarded-host").cloned();
                        let mut resp = match req.uri().path() {
                            "/ws" => {
                                let on = hyper::upgrade::on(&mut req);
                                tokio::spawn(async move {
                                    let mut io = TokioIo::new(on.await.unwrap());
                                    let mut buf = [0u8; 5];
                                    io.read_exact(&mut buf).await.unwrap();
                                    io.write_all(&buf).await.unwrap();
                                });
                                Response::builder()
                                    .status(101)
                                    .header("connection", "upgrade")
                                    .header("upgrade", "echo")
                                    .body(http_body_util::Either::Left(Full::new(Bytes::new())))
                                    .unwrap()
                            }
                            "/empty" => Response::builder()
                                .status(204)
                                .body(http_body_util::Either::Left(Full::new(Bytes::new())))
                                .unwrap(),
                            _ => Response::new(http_body_util::Either::Right(req.into_body())),
                        };
                        if let Some(h) = host {
                            resp.headers_mut().insert("x-seen-host", h);
                        }
                        if let Some(h) = fwd {
                            resp.headers_mut().insert("x-seen-forwarded-host", h);
                        }
                        if let Ok(v) = http::HeaderValue::from_str(&path) {
                            resp.headers_mut().insert("x-seen-path", v);
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        (addr, conns)
    }

    /// A hyper client on one end of a duplex whose other end `serve_stream`
    /// serves (the relay's side of a tunnel stream).
    async fn caller(
        authority: String,
    ) -> hyper::client::conn::http1::SendRequest<http_body_util::combinators::BoxBody<Bytes, std::io::Error>> {
        caller_with_prefix(authority, "").await
    }

    async fn caller_with_prefix(
        authority: String,
        prefix: &str,
    ) -> hyper::client::conn::http1::SendRequest<http_body_util::combinators::BoxBody<Bytes, std::io::Error>> {
        let path_prefix = prefix.to_owned();
        let (a, b) = tokio::io::duplex(256 * 1024);
        tokio::spawn(async move {
            let target = Target {
                authority,
                path_prefix,
                connect_timeout: Duration::from_secs(2),
                header_timeout: Duration::from_secs(5),
            };
            serve_stream(b, &target, &Agentish).await;
        });
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(a)).await.unwrap();
        tokio::spawn(conn.with_upgrades());
        send
    }

    fn body(bytes: &'static [u8]) -> http_body_util::combinators::BoxBody<Bytes, std::io::Error> {
        Full::new(Bytes::from_static(bytes)).map_err(|e| match e {}).boxed()
    }

    #[tokio::test]
    async fn keep_alive_requests_share_one_service_connection() {
        let (addr, conns) = service().await;
        let mut send = caller(addr.clone()).await;
        for i in 0..5 {
            let req = Request::post("/echo").header("host", "s-1").body(body(b"hello")).unwrap();
            let resp = send.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200, "request {i}");
            assert_eq!(resp.headers()["x-seen-host"], addr.as_str());
            assert_eq!(resp.headers()["x-seen-forwarded-host"], "s-1");
            assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "hello");
        }
        let resp = send.send_request(Request::head("/echo").body(body(b"")).unwrap()).await.unwrap();
        assert_eq!(resp.status(), 200);
        let resp = send.send_request(Request::get("/empty").body(body(b"")).unwrap()).await.unwrap();
        assert_eq!(resp.status(), 204);
        let resp = send.send_request(Request::get("/.control").body(body(b"")).unwrap()).await.unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "{\"local\":true}");
        assert_eq!(conns.load(Ordering::SeqCst), 1, "one keep-alive connection to the service");
    }

    #[tokio::test]
    async fn a_service_base_path_prefixes_every_forwarded_path_but_not_control_paths() {
        let (addr, _) = service().await;
        let mut send = caller_with_prefix(addr, "/base").await;
        let resp = send.send_request(Request::get("/a/b?x=1").body(body(b"")).unwrap()).await.unwrap();
        assert_eq!(resp.headers()["x-seen-path"], "/base/a/b?x=1");
        let resp = send.send_request(Request::get("/.control").body(body(b"")).unwrap()).await.unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "{\"local\":true}");
    }

    #[tokio::test]
    async fn bodies_stream_both_ways_at_once_chunked_and_sized() {
        let (addr, _) = service().await;
        let mut send = caller(addr).await;
        // 8 MiB in uneven chunks, echoed while it is still being sent: the
        // service answers before the request ends, so forwarding must run
        // both directions at the same time.
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        tokio::spawn(async move {
            for i in 0..512u32 {
                let chunk: Vec<u8> = (0..16_384 + i % 7).map(|j| (j % 251) as u8).collect();
                if tx.send(Bytes::from(chunk)).await.is_err() {
                    return;
                }
            }
        });
        let stream = ChannelBody(rx).boxed();
        let resp = send.send_request(Request::post("/echo").body(stream).unwrap()).await.unwrap();
        assert_eq!(
            resp.headers().get("transfer-encoding").map(|v| v.as_bytes()),
            Some(&b"chunked"[..]),
            "{:?}",
            resp.headers()
        );
        let got = resp.into_body().collect().await.unwrap().to_bytes();
        let want: usize = (0..512u32).map(|i| 16_384 + (i % 7) as usize).sum();
        assert_eq!(got.len(), want);
        // The stream is still usable afterwards.
        let resp = send.send_request(Request::post("/echo").body(body(b"again")).unwrap()).await.unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "again");
    }

    /// A request body fed from a channel, chunk by chunk.
    struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

    impl hyper::body::Body for ChannelBody {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test]
    async fn upgrades_are_spliced_and_unreachable_services_fail_cleanly() {
        let (addr, _) = service().await;
        let mut send = caller(addr).await;
        let req =
            Request::get("/ws").header("connection", "upgrade").header("upgrade", "echo").body(body(b"")).unwrap();
        let mut resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 101);
        let mut io = TokioIo::new(hyper::upgrade::on(&mut resp).await.unwrap());
        io.write_all(b"ping!").await.unwrap();
        let mut got = [0u8; 5];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping!");

        // Nothing listens there: a failure answer, and the stream stays in step.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone = closed.local_addr().unwrap().to_string();
        drop(closed);
        let mut send = caller(gone).await;
        for _ in 0..2 {
            let resp = send.send_request(Request::post("/x").body(body(b"body")).unwrap()).await.unwrap();
            assert_eq!(resp.status(), 502);
            let text = resp.into_body().collect().await.unwrap().to_bytes();
            assert!(text.starts_with(b"{\"error\":"), "{text:?}");
        }
    }

    #[tokio::test]
    async fn ambiguous_request_framing_is_refused_before_anything_is_forwarded() {
        let (addr, conns) = service().await;
        let (mut a, b) = tokio::io::duplex(64 * 1024);
        let target = Target {
            authority: addr,
            path_prefix: String::new(),
            connect_timeout: Duration::from_secs(2),
            header_timeout: Duration::from_secs(5),
        };
        tokio::spawn(async move { serve_stream(b, &target, &Agentish).await });
        // A smuggling attempt: both framings at once.
        a.write_all(b"POST / HTTP/1.1\r\nhost: s\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n")
            .await
            .unwrap();
        let mut all = Vec::new();
        a.read_to_end(&mut all).await.unwrap();
        let text = String::from_utf8(all).unwrap();
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert_eq!(conns.load(Ordering::SeqCst), 0, "nothing reached the service");
    }

    #[tokio::test]
    async fn an_answer_delimited_by_close_closes_the_stream_and_heads_are_bounded() {
        // An HTTP/1.0-style service: no length, the body ends at close.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = tcp.read(&mut buf).await.unwrap();
            tcp.write_all(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end").await.unwrap();
        });
        let (mut a, b) = tokio::io::duplex(64 * 1024);
        let target = Target {
            authority: addr,
            path_prefix: String::new(),
            connect_timeout: Duration::from_secs(2),
            header_timeout: Duration::from_secs(5),
        };
        let server = tokio::spawn(async move { serve_stream(b, &target, &Agentish).await });
        a.write_all(b"GET / HTTP/1.1\r\nhost: s\r\n\r\n").await.unwrap();
        let mut all = Vec::new();
        a.read_to_end(&mut all).await.unwrap();
        let text = String::from_utf8(all).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nuntil the end"), "{text}");
        server.await.unwrap();

        // A head past the limit is refused with 431 and the stream closed.
        let (mut a, b) = tokio::io::duplex(256 * 1024);
        let target = Target {
            authority: "127.0.0.1:9".into(),
            path_prefix: String::new(),
            connect_timeout: Duration::from_secs(2),
            header_timeout: Duration::from_secs(5),
        };
        tokio::spawn(async move { serve_stream(b, &target, &Agentish).await });
        let big =
            format!("GET / HTTP/1.1\r\nx-big: {}\r\n\r\n", "a".repeat(edgelink_protocol::limits::MAX_HEADER_BYTES));
        let writer = tokio::spawn(async move {
            let _ = a.write_all(big.as_bytes()).await;
            let mut all = Vec::new();
            let _ = a.read_to_end(&mut all).await;
            all
        });
        let all = writer.await.unwrap();
        assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 431"), "{}", String::from_utf8_lossy(&all));
    }
}
