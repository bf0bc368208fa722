//! The calling side of a hop forwarded by heads: a request sent on a kept
//! HTTP/1.1 connection (the relay's tunnel streams) by writing its head and
//! streaming its body, and the answer read back by parsing its head and
//! decoding its body's framing as the caller's server polls it. No client
//! task and no channel sit between the two: the task that serves the
//! caller's connection reads and writes the stream itself.
//!
//! A [`Conn`] carries one exchange at a time. When an answer ends cleanly
//! (its framing says where, the device did not ask to close, and the
//! request body was all sent) the connection is handed to the `back`
//! callback, so the caller's pool can use it for the next request.
//!
//! Request bodies known to be small leave in the head's write; any other
//! body is sent by a task of its own while the answer is read, so a device
//! may answer (or echo) before the request body ends. An answer `101` to a
//! request that asked for an upgrade splices the two connections.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Version, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::task::JoinHandle;

use crate::Pending;
use crate::h1::{self, Framing, H1Error, Reader};

/// Largest read of an answer.
const READ_MAX: usize = 64 * 1024;
/// A request body known to be at most this long leaves with its head.
const INLINE_BODY: u64 = h1::OUT_BATCH as u64;

/// One kept HTTP/1.1 connection (also what [`h1::exchange`] forwards on).
pub type Conn<S> = h1::Upstream<ReadHalf<S>, WriteHalf<S>>;

impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> h1::Upstream<ReadHalf<S>, WriteHalf<S>> {
    /// Wraps a fresh connection.
    pub fn new(stream: S) -> Self {
        let (rd, wr) = tokio::io::split(stream);
        h1::Upstream::from_halves(rd, wr, READ_MAX)
    }
}

/// Idle kept connections to one peer, newest last: taken for a request,
/// put back when its answer ended cleanly, dropped once idle too long.
pub struct Idle<S> {
    conns: std::sync::Mutex<Vec<(Conn<S>, std::time::Instant)>>,
    max_idle: std::time::Duration,
    max_conns: usize,
}

impl<S> std::fmt::Debug for Idle<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.conns.lock().map(|c| c.len()).unwrap_or_default();
        f.debug_struct("Idle").field("conns", &n).finish()
    }
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> Idle<S> {
    /// Keeps at most `max_conns` connections, each for at most `max_idle`
    /// (shorter than the peer's own idle timeout).
    pub fn new(max_idle: std::time::Duration, max_conns: usize) -> Self {
        Idle { conns: std::sync::Mutex::default(), max_idle, max_conns }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Conn<S>, std::time::Instant)>> {
        // Pushing and popping cannot leave the list half updated.
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest idle connection still open and not too old.
    pub fn take(&self) -> Option<Conn<S>> {
        loop {
            let (mut conn, since) = self.lock().pop()?;
            if since.elapsed() < self.max_idle && conn.is_open() {
                return Some(conn);
            }
        }
    }

    /// Keeps `conn` for the next request (older ones expire here).
    pub fn put(&self, conn: Conn<S>) {
        let now = std::time::Instant::now();
        let expired = {
            let mut conns = self.lock();
            let expired = Self::expired(&mut conns, now, self.max_idle);
            if conns.len() < self.max_conns {
                conns.push((conn, now));
            }
            expired
        };
        drop(expired);
    }

    /// Drops the connections kept longer than the pool keeps them.
    pub fn expire(&self) {
        let expired = Self::expired(&mut self.lock(), std::time::Instant::now(), self.max_idle);
        drop(expired);
    }

    /// Takes the connections kept `max_idle` or longer at `now` out of
    /// `conns` (to be dropped outside the lock). Connections go in newest
    /// last and come out from the end, so the old ones are at the front:
    /// the scan stops at the first young one.
    fn expired(
        conns: &mut Vec<(Conn<S>, std::time::Instant)>,
        now: std::time::Instant,
        max_idle: std::time::Duration,
    ) -> Vec<(Conn<S>, std::time::Instant)> {
        let keep = conns.iter().position(|(_, since)| now.duration_since(*since) < max_idle).unwrap_or(conns.len());
        conns.drain(..keep).collect()
    }

    /// Drops every idle connection.
    pub fn clear(&self) {
        let conns = std::mem::take(&mut *self.lock());
        drop(conns);
    }
}

/// Where a connection goes once an answer on it ended cleanly.
pub type Back<S> = Box<dyn FnOnce(Conn<S>) + Send>;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct SendError {
    /// What went wrong.
    #[source]
    pub error: H1Error,
    /// Nothing of the request but its head was consumed and nothing of an
    /// answer arrived: a kept connection may have died idle, and the same
    /// [`Outgoing`] may be sent again on a fresh one.
    pub retry: bool,
}

impl SendError {
    fn fatal(error: H1Error) -> Self {
        SendError { error, retry: false }
    }
}

/// How a request body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyOut {
    None,
    Length(u64),
    Chunked,
}

/// A request with its head encoded, ready to [`send`].
pub struct Outgoing<B> {
    head: Vec<u8>,
    body: Option<B>,
    framing: BodyOut,
    head_method: bool,
    pending: Pending,
}

impl<B> Outgoing<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Encodes `req`, already [`prepare`](crate::prepare)d as `pending`,
    /// for the next hop: its URI's path and query are the target, its
    /// headers go as they are (`host` set to `default_host` when it has
    /// none) and the body's framing is decided here, from its size when
    /// known (`Content-Length`), chunked otherwise.
    pub fn new(req: Request<B>, pending: Pending, default_host: &str) -> Self {
        let (parts, body) = req.into_parts();
        let framing = if body.is_end_stream() {
            BodyOut::None
        } else {
            match body.size_hint().exact() {
                Some(0) => BodyOut::None,
                Some(n) => BodyOut::Length(n),
                None => BodyOut::Chunked,
            }
        };
        let target = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut head = Vec::with_capacity(256 + parts.headers.len() * 32);
        head.extend_from_slice(parts.method.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        if !parts.headers.contains_key(header::HOST) {
            h1::put_header(&mut head, b"host", default_host.as_bytes());
        }
        for (name, value) in &parts.headers {
            if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
                continue;
            }
            h1::put_header(&mut head, name.as_str().as_bytes(), value.as_bytes());
        }
        match framing {
            BodyOut::None => {}
            BodyOut::Length(n) => h1::put_header(&mut head, b"content-length", n.to_string().as_bytes()),
            BodyOut::Chunked => h1::put_header(&mut head, b"transfer-encoding", b"chunked"),
        }
        head.extend_from_slice(b"\r\n");
        Outgoing {
            head,
            body: (framing != BodyOut::None).then_some(body),
            framing,
            head_method: parts.method == http::Method::HEAD,
            pending,
        }
    }
}

fn body_error<E: Into<Box<dyn std::error::Error + Send + Sync>>>(e: E) -> H1Error {
    H1Error::Io(io::Error::other(e))
}

/// Sends `out` on `conn` and reads the answer's head. The answer's body
/// reads from `conn` as it is polled; when it ends cleanly the connection
/// goes to `back`. A `101` is spliced to the caller and has no body.
pub async fn send<S, B>(
    mut conn: Conn<S>,
    out: &mut Outgoing<B>,
    back: Back<S>,
) -> Result<Response<Answer<S>>, SendError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Only a connection that failed under an unanswered request (closed,
    // reset) is worth another try.
    let bodyless = out.body.is_none();
    let fail = |error: H1Error| {
        let retry = bodyless && matches!(error, H1Error::Io(_) | H1Error::Truncated);
        SendError { error, retry }
    };
    // A short body known in advance leaves in the head's write.
    let mut first = None;
    if let (BodyOut::Length(n), Some(body)) = (out.framing, out.body.as_mut())
        && n <= INLINE_BODY
    {
        let mut buf = Vec::with_capacity(out.head.len() + n as usize);
        buf.extend_from_slice(&out.head);
        while let Some(data) = next_data(body).await.map_err(SendError::fatal)? {
            buf.extend_from_slice(&data);
        }
        if buf.len() - out.head.len() != n as usize {
            return Err(SendError::fatal(H1Error::Malformed("request body length differs from its content-length")));
        }
        out.body = None;
        first = Some(buf);
    }
    let head = first.as_deref().unwrap_or(&out.head);
    conn.wr.write_all(head).await.map_err(|e| fail(e.into()))?;
    conn.wr.flush().await.map_err(|e| fail(e.into()))?;
    let Conn { mut rd, wr } = conn;
    let mut writer = match out.body.take() {
        Some(body) => Writer::Pumping(tokio::spawn(pump(wr, body, out.framing))),
        None => Writer::Idle(wr),
    };

    let read = read_head(&mut rd, out.head_method, out.pending.is_upgrade()).await;
    let (status, headers, framing, close) = match read {
        Ok(h) => h,
        Err(e) => {
            writer.abort();
            if !rd.buffered().is_empty() {
                // Part of an answer came: not a connection that died idle.
                return Err(SendError::fatal(e));
            }
            return Err(fail(e));
        }
    };
    let switched = status == StatusCode::SWITCHING_PROTOCOLS;
    let mut resp =
        Response::new(Answer { rd: None, writer: Writer::Gone, state: State::Done, keep: false, back: None });
    *resp.status_mut() = status;
    *resp.version_mut() = Version::HTTP_11;
    *resp.headers_mut() = headers;
    if switched {
        let Writer::Idle(wr) = writer else {
            writer.abort();
            return Err(SendError::fatal(H1Error::Malformed("an upgrade with a request body")));
        };
        let Some(caller) = out.pending.caller.take() else {
            return Err(SendError::fatal(H1Error::Malformed("switched protocols without being asked")));
        };
        splice(caller, rd, wr);
        return Ok(resp);
    }
    let state = match framing {
        Framing::None => State::End,
        Framing::Length(n) => State::Length(n),
        Framing::Chunked => State::ChunkSize,
        Framing::UntilClose => State::UntilClose,
    };
    let mut answer = Answer { rd: Some(rd), writer, state, keep: !close, back: Some(back) };
    if state == State::End {
        // No body: the caller's server will not poll for one, so the
        // connection goes back now (if the request body is all sent).
        answer.finish(&mut Context::from_waker(Waker::noop()));
    }
    *resp.body_mut() = answer;
    Ok(resp)
}

/// Reads an answer head (interim `1xx` answers skipped but for an asked
/// `101`): its status, end-to-end headers, framing and whether the
/// connection ends after it.
async fn read_head<R: AsyncRead + Unpin>(
    rd: &mut Reader<R>,
    head_method: bool,
    upgrade: bool,
) -> Result<(StatusCode, HeaderMap, Framing, bool), H1Error> {
    let limit = edgelink_protocol::limits::MAX_HEADER_BYTES;
    loop {
        let parsed = h1::response_head(rd.buffered(), |resp, len| {
            let (Some(code), Some(version)) = (resp.code, resp.version) else {
                return Err(H1Error::Malformed("status line"));
            };
            let status = StatusCode::from_u16(code).map_err(|_| H1Error::Malformed("status code"))?;
            if code == 101 && !upgrade {
                return Err(H1Error::Malformed("switched protocols without being asked"));
            }
            if status.is_informational() && code != 101 {
                Ok((len, None))
            } else {
                Ok((len, Some(answer_parts(status, version, resp.headers, head_method)?)))
            }
        })?;
        match parsed {
            Some((len, Some(parts))) => {
                rd.consume(len);
                return Ok(parts);
            }
            // An interim answer: the caller's client waits for the final one.
            Some((len, None)) => rd.consume(len),
            None => {
                if rd.buffered().len() >= limit {
                    return Err(H1Error::HeadTooLarge);
                }
                if rd.fill(limit).await? == 0 {
                    return Err(H1Error::Truncated);
                }
            }
        }
    }
}

/// An answer head's status, end-to-end headers (an upgrade's pair kept),
/// framing and whether the connection ends after it.
fn answer_parts(
    status: StatusCode,
    version: u8,
    raw: &[httparse::Header<'_>],
    head_method: bool,
) -> Result<(StatusCode, HeaderMap, Framing, bool), H1Error> {
    let connection = h1::connection_tokens(raw);
    let switched = status == StatusCode::SWITCHING_PROTOCOLS;
    let code = status.as_u16();
    let framing = if switched || head_method || status.is_informational() || code == 204 || code == 304 {
        Framing::None
    } else {
        h1::body_framing(raw, false)?
    };
    let close = framing == Framing::UntilClose || h1::wants_close(&connection, version);
    let mut headers = HeaderMap::with_capacity(raw.len());
    for h in raw {
        let content_length = h.name.eq_ignore_ascii_case("content-length");
        if !content_length && h1::is_hop_by_hop(h.name, &connection, switched) {
            continue;
        }
        // A body the caller's server re-frames: its length is the body's.
        if content_length && matches!(framing, Framing::Chunked | Framing::UntilClose) {
            continue;
        }
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| H1Error::Malformed("header name"))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| H1Error::Malformed("header value"))?;
        headers.append(name, value);
    }
    if switched {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    Ok((status, headers, framing, close))
}

/// Sends a request body with its framing, then hands the write half back.
async fn pump<S, B>(mut wr: WriteHalf<S>, mut body: B, framing: BodyOut) -> Result<WriteHalf<S>, H1Error>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut left = match framing {
        BodyOut::Length(n) => Some(n),
        _ => None,
    };
    let mut chunk = Vec::new();
    while let Some(data) = next_data(&mut body).await? {
        if data.is_empty() {
            continue;
        }
        match &mut left {
            Some(left) => {
                *left = left.checked_sub(data.len() as u64).ok_or(H1Error::Malformed("request body too long"))?;
                wr.write_all(&data).await?;
            }
            None if data.len() <= h1::OUT_BATCH => {
                chunk.clear();
                chunk.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                chunk.extend_from_slice(&data);
                chunk.extend_from_slice(b"\r\n");
                wr.write_all(&chunk).await?;
            }
            None => {
                wr.write_all(format!("{:x}\r\n", data.len()).as_bytes()).await?;
                wr.write_all(&data).await?;
                wr.write_all(b"\r\n").await?;
            }
        }
    }
    match left {
        Some(0) => {}
        Some(_) => return Err(H1Error::Truncated),
        None => wr.write_all(b"0\r\n\r\n").await?,
    }
    wr.flush().await?;
    Ok(wr)
}

/// The body's next data (trailers are not passed on); `None` at its end.
async fn next_data<B>(body: &mut B) -> Result<Option<Bytes>, H1Error>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(body_error(e)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// Once the caller's upgrade completes, copies bytes both ways between it
/// and the connection (what was read past the `101` first).
fn splice<S>(caller: hyper::upgrade::OnUpgrade, rd: Reader<ReadHalf<S>>, wr: WriteHalf<S>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    tokio::spawn(async move {
        let Ok(upgraded) = caller.await else {
            tracing::debug!("caller's upgrade did not complete");
            return;
        };
        let mut up = hyper_util::rt::TokioIo::new(upgraded);
        let (rd, early) = rd.into_parts();
        if !early.is_empty() && up.write_all(&early).await.is_err() {
            return;
        }
        let mut stream = rd.unsplit(wr);
        let _ =
            tokio::io::copy_bidirectional_with_sizes(&mut up, &mut stream, crate::SPLICE_BUF, crate::SPLICE_BUF).await;
    });
}

/// Who holds the write half while the answer is read.
enum Writer<S> {
    Idle(WriteHalf<S>),
    Pumping(JoinHandle<Result<WriteHalf<S>, H1Error>>),
    Gone,
}

impl<S> Writer<S> {
    fn abort(&mut self) {
        if let Writer::Pumping(task) = self {
            task.abort();
        }
        *self = Writer::Gone;
    }

    /// The write half, if the request was all sent.
    fn finished(&mut self, cx: &mut Context<'_>) -> Option<WriteHalf<S>> {
        match std::mem::replace(self, Writer::Gone) {
            Writer::Idle(wr) => Some(wr),
            Writer::Pumping(mut task) => match Pin::new(&mut task).poll(cx) {
                Poll::Ready(Ok(Ok(wr))) => Some(wr),
                Poll::Ready(_) => None,
                Poll::Pending => {
                    // The answer ended before the request did: this
                    // connection is out of step and is not kept.
                    task.abort();
                    None
                }
            },
            Writer::Gone => None,
        }
    }
}

/// Where the answer's body decoding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes left.
    Length(u64),
    /// A chunk-size line next.
    ChunkSize,
    /// This many bytes of chunk data left.
    Chunk(u64),
    /// The line ending a chunk's data next.
    ChunkEnd,
    /// Trailer lines, then the empty line.
    Trailers,
    /// Everything until the connection closes.
    UntilClose,
    /// The body is complete; the connection is still to be handed back.
    End,
    /// Nothing more.
    Done,
}

/// An answer's body, read from the connection as it is polled.
pub struct Answer<S> {
    rd: Option<Reader<ReadHalf<S>>>,
    writer: Writer<S>,
    state: State,
    keep: bool,
    back: Option<Back<S>>,
}

impl<S> Drop for Answer<S> {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> Answer<S> {
    /// The body ended cleanly: the connection goes back when it can carry
    /// another request.
    fn finish(&mut self, cx: &mut Context<'_>) {
        self.state = State::Done;
        let wr = self.writer.finished(cx);
        if let (true, Some(mut rd), Some(wr), Some(back)) = (self.keep, self.rd.take(), wr, self.back.take()) {
            rd.shrink();
            back(Conn { rd, wr });
        }
    }

    fn broken(&mut self, e: H1Error) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        self.state = State::Done;
        self.writer.abort();
        self.rd = None;
        Poll::Ready(Some(Err(e)))
    }
}

/// Up to `n` buffered bytes (reading first when none are); `None` at the
/// end of the connection.
fn poll_data<R: AsyncRead + Unpin>(
    rd: &mut Reader<R>,
    cx: &mut Context<'_>,
    n: u64,
) -> Poll<Result<Option<Bytes>, H1Error>> {
    if rd.buffered().is_empty() && ready!(rd.poll_fill(cx, rd.max()))? == 0 {
        return Poll::Ready(Ok(None));
    }
    let k = rd.buffered().len().min(usize::try_from(n).unwrap_or(usize::MAX));
    let data = Bytes::copy_from_slice(&rd.buffered()[..k]);
    rd.consume(k);
    Poll::Ready(Ok(Some(data)))
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> Body for Answer<S> {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let me = self.get_mut();
        loop {
            let Some(rd) = me.rd.as_mut() else {
                if me.state == State::End {
                    me.state = State::Done;
                }
                return Poll::Ready(None);
            };
            let step = match me.state {
                State::Done => return Poll::Ready(None),
                State::End | State::Length(0) => {
                    me.finish(cx);
                    return Poll::Ready(None);
                }
                State::Length(n) | State::Chunk(n) => match ready!(poll_data(rd, cx, n)) {
                    Ok(Some(data)) => {
                        let left = n - data.len() as u64;
                        me.state = match me.state {
                            State::Chunk(_) if left == 0 => State::ChunkEnd,
                            State::Chunk(_) => State::Chunk(left),
                            _ => State::Length(left),
                        };
                        if me.state == State::Length(0) {
                            me.finish(cx);
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(None) => Err(H1Error::Truncated),
                    Err(e) => Err(e),
                },
                State::UntilClose => match ready!(poll_data(rd, cx, u64::MAX)) {
                    Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(None) => {
                        me.keep = false;
                        me.finish(cx);
                        return Poll::Ready(None);
                    }
                    Err(e) => Err(e),
                },
                State::ChunkSize | State::ChunkEnd | State::Trailers => match ready!(h1::poll_line(rd, cx)) {
                    Err(e) => Err(e),
                    Ok(n) => {
                        let line = &rd.buffered()[..n];
                        let empty = line.trim_ascii().is_empty();
                        let next = match me.state {
                            State::ChunkSize => match h1::chunk_size(line) {
                                Ok(0) => Ok(State::Trailers),
                                Ok(size) => Ok(State::Chunk(size)),
                                Err(e) => Err(e),
                            },
                            State::ChunkEnd if empty => Ok(State::ChunkSize),
                            State::ChunkEnd => Err(H1Error::Malformed("chunk data longer than its size")),
                            // Trailer fields are not passed on.
                            _ if empty => Ok(State::End),
                            _ => Ok(State::Trailers),
                        };
                        rd.consume(n);
                        next.map(|s| me.state = s)
                    }
                },
            };
            if let Err(e) = step {
                return me.broken(e);
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, DuplexStream};

    type Kept = Arc<Mutex<Option<Conn<DuplexStream>>>>;

    fn pair() -> (Conn<DuplexStream>, DuplexStream) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        (Conn::new(a), b)
    }

    #[tokio::test]
    async fn expiring_lets_go_of_connections_kept_too_long_only() {
        let long = Idle::new(std::time::Duration::from_secs(3600), 4);
        let (conn, _peer) = pair();
        long.put(conn);
        long.expire();
        assert!(long.take().is_some(), "a young connection stays");
        // Kept for no time at all: every one is too old at once.
        let none = Idle::new(std::time::Duration::ZERO, 4);
        let (conn, mut peer2) = pair();
        none.put(conn);
        none.expire();
        assert!(none.take().is_none());
        // Its peer sees it go.
        let mut buf = [0u8; 1];
        assert_eq!(peer2.read(&mut buf).await.unwrap(), 0);
    }

    fn keeper() -> (Kept, Back<DuplexStream>) {
        let kept: Kept = Arc::default();
        let k = kept.clone();
        (kept, Box::new(move |c| *k.lock().unwrap() = Some(c)))
    }

    fn get(path: &str) -> Outgoing<Full<Bytes>> {
        Outgoing::new(Request::get(path).body(Full::new(Bytes::new())).unwrap(), Pending::default(), "s-1")
    }

    /// Reads from the device end until `end` has been seen.
    async fn read_until(dev: &mut DuplexStream, end: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        while !got.windows(end.len()).any(|w| w == end) {
            let mut b = [0u8; 1024];
            let n = dev.read(&mut b).await.unwrap();
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&b[..n]);
        }
        got
    }

    async fn body_of(resp: Response<Answer<DuplexStream>>) -> Result<Bytes, H1Error> {
        resp.into_body().collect().await.map(|c| c.to_bytes())
    }

    #[tokio::test]
    async fn a_length_answer_is_read_and_the_connection_comes_back_for_the_next() {
        let (conn, mut dev) = pair();
        let (kept, back) = keeper();
        let mut out = get("/a?b=1");
        let exchange = tokio::spawn(async move {
            let resp = send(conn, &mut out, back).await.unwrap();
            (resp.status(), resp.headers().clone(), body_of(resp).await.unwrap())
        });
        let req = read_until(&mut dev, b"\r\n\r\n").await;
        let req = String::from_utf8(req).unwrap();
        assert!(req.starts_with("GET /a?b=1 HTTP/1.1\r\nhost: s-1\r\n"), "{req}");
        assert!(!req.contains("content-length") && !req.contains("transfer-encoding"), "{req}");
        dev.write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-App: 1\r\nKeep-Alive: timeout=5\r\n\r\nhello")
            .await
            .unwrap();
        let (status, headers, body) = exchange.await.unwrap();
        assert_eq!(status, 200, "the interim 100 is skipped");
        assert_eq!(&body[..], b"hello");
        assert_eq!(headers["x-app"], "1");
        assert_eq!(headers["content-length"], "5");
        assert!(headers.get("keep-alive").is_none(), "hop-by-hop headers stay behind");

        let conn = kept.lock().unwrap().take().expect("the connection is handed back");
        let (kept, back) = keeper();
        let mut out = get("/second");
        let exchange = tokio::spawn(async move { body_of(send(conn, &mut out, back).await.unwrap()).await });
        read_until(&mut dev, b"GET /second HTTP/1.1\r\n").await;
        dev.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
        assert!(exchange.await.unwrap().unwrap().is_empty());
        assert!(kept.lock().unwrap().is_some(), "an answer without a body hands back at once");
    }

    #[tokio::test]
    async fn chunked_answers_are_decoded_and_trailers_dropped() {
        let (conn, mut dev) = pair();
        let (kept, back) = keeper();
        let mut out = get("/c");
        let exchange = tokio::spawn(async move {
            let resp = send(conn, &mut out, back).await.unwrap();
            assert!(resp.headers().get("transfer-encoding").is_none());
            body_of(resp).await
        });
        read_until(&mut dev, b"\r\n\r\n").await;
        dev.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n1\r\n!\r\n0\r\nx-t: 1\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!(&exchange.await.unwrap().unwrap()[..], b"hello!");
        assert!(kept.lock().unwrap().is_some());

        for (bad, want_truncated) in [
            (&b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n"[..], false),
            (&b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"[..], false),
            (&b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nhalf"[..], true),
        ] {
            let (conn, mut dev) = pair();
            let (kept, back) = keeper();
            let mut out = get("/bad");
            let exchange = tokio::spawn(async move { body_of(send(conn, &mut out, back).await.unwrap()).await });
            read_until(&mut dev, b"\r\n\r\n").await;
            dev.write_all(bad).await.unwrap();
            drop(dev);
            let got = exchange.await.unwrap();
            match got {
                Err(H1Error::Truncated) => assert!(want_truncated),
                Err(H1Error::Malformed(_)) => assert!(!want_truncated),
                other => panic!("{other:?} for {:?}", String::from_utf8_lossy(bad)),
            }
            assert!(kept.lock().unwrap().is_none(), "a broken answer's connection is not kept");
        }
    }

    #[tokio::test]
    async fn an_answer_until_close_or_asking_to_close_is_not_kept() {
        for (answer, body) in [
            (&b"HTTP/1.1 200 OK\r\n\r\nuntil the end"[..], &b"until the end"[..]),
            (&b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"[..], &b"ok"[..]),
        ] {
            let (conn, mut dev) = pair();
            let (kept, back) = keeper();
            let mut out = get("/");
            let exchange = tokio::spawn(async move { body_of(send(conn, &mut out, back).await.unwrap()).await });
            read_until(&mut dev, b"\r\n\r\n").await;
            dev.write_all(answer).await.unwrap();
            drop(dev);
            assert_eq!(&exchange.await.unwrap().unwrap()[..], body);
            assert!(kept.lock().unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn head_answers_keep_their_length_and_have_no_body() {
        let (conn, mut dev) = pair();
        let (kept, back) = keeper();
        let mut out =
            Outgoing::new(Request::head("/h").body(Full::new(Bytes::new())).unwrap(), Pending::default(), "s");
        let exchange = tokio::spawn(async move {
            let resp = send(conn, &mut out, back).await.unwrap();
            assert_eq!(resp.headers()["content-length"], "1000");
            body_of(resp).await
        });
        read_until(&mut dev, b"\r\n\r\n").await;
        dev.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n").await.unwrap();
        assert!(exchange.await.unwrap().unwrap().is_empty());
        assert!(kept.lock().unwrap().is_some());
    }

    #[tokio::test]
    async fn bodies_go_inline_with_their_length_or_streamed_chunked() {
        // Known and short: one write with the head.
        let (conn, mut dev) = pair();
        let (_kept, back) = keeper();
        let req = Request::post("/p").body(Full::new(Bytes::from_static(b"abc"))).unwrap();
        let mut out = Outgoing::new(req, Pending::default(), "s");
        let exchange = tokio::spawn(async move { body_of(send(conn, &mut out, back).await.unwrap()).await });
        let got = read_until(&mut dev, b"\r\n\r\nabc").await;
        assert!(String::from_utf8_lossy(&got).contains("content-length: 3\r\n"));
        dev.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
        exchange.await.unwrap().unwrap();

        // Of unknown length: chunked, while the answer already streams.
        let (conn, mut dev) = pair();
        let (kept, back) = keeper();
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(4);
        let req = Request::post("/echo").body(body).unwrap();
        let mut out = Outgoing::new(req, Pending::default(), "s");
        let (head_tx, head_rx) = tokio::sync::oneshot::channel();
        let exchange = tokio::spawn(async move {
            let resp = send(conn, &mut out, back).await.unwrap();
            let _ = head_tx.send(resp.status());
            body_of(resp).await
        });
        tx.send_data(Bytes::from_static(b"part1")).await.unwrap();
        let got = read_until(&mut dev, b"5\r\npart1\r\n").await;
        assert!(String::from_utf8_lossy(&got).contains("transfer-encoding: chunked\r\n"));
        dev.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nec").await.unwrap();
        assert_eq!(head_rx.await.unwrap(), 200, "the answer starts before the request body ends");
        tx.send_data(Bytes::from_static(b"part2")).await.unwrap();
        drop(tx);
        read_until(&mut dev, b"5\r\npart2\r\n0\r\n\r\n").await;
        dev.write_all(b"ho").await.unwrap();
        assert_eq!(&exchange.await.unwrap().unwrap()[..], b"echo");
        assert!(kept.lock().unwrap().is_some(), "request and answer both complete: kept");
    }

    #[tokio::test]
    async fn a_connection_that_died_idle_may_be_retried() {
        let (mut conn, dev) = pair();
        assert!(conn.is_open());
        drop(dev);
        assert!(!conn.is_open(), "a closed idle connection is seen as closed");
        let (_kept, back) = keeper();
        let mut out = get("/");
        let err = send(conn, &mut out, back).await.err().expect("no answer");
        assert!(err.retry, "{err}");

        let (conn, mut dev) = pair();
        let (_kept, back) = keeper();
        let exchange = tokio::spawn(async move { send(conn, &mut get("/"), back).await.err() });
        read_until(&mut dev, b"\r\n\r\n").await;
        dev.write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n").await.unwrap();
        let err = exchange.await.unwrap().expect("an unasked 101 is refused");
        assert!(!err.retry);
    }
}
