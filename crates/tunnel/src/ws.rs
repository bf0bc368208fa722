//! A WebSocket as a byte stream: RFC 6455 framing of our own.
//!
//! Binary messages carry the bytes; message and frame boundaries mean
//! nothing. Pings are answered and pongs consumed here (never surfaced as a
//! zero-length read, which yamux would take for end of stream). A Close
//! frame is end of stream and its code is kept in [`CloseInfo`]. A Text
//! message is a protocol error, as is anything RFC 6455 §5 forbids: set
//! reserved bits, unknown opcodes, masking the wrong way for the side,
//! fragmented or oversized control frames, continuations out of place, a
//! message over [`MAX_WS_MESSAGE`], a bad close code or a reason that is
//! not UTF-8.
//!
//! Payload bytes go from the socket buffer straight into the reader's
//! buffer (unmasked on the way), and written bytes are framed in place in
//! one outgoing buffer: no message is ever assembled or allocated. Both
//! buffers exist only while the tunnel is busy ([`crate::buffers`]).
//!
//! The adapter also keeps the connection honest: it sends a ping every
//! `ping_interval` and fails the read side with `TimedOut` when nothing has
//! arrived for `idle_timeout`. It can do that from `poll_read` because yamux
//! polls the read side for as long as the session lives.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use edgelink_protocol::limits::MAX_WS_MESSAGE;
use futures::{AsyncRead, AsyncWrite};
use tokio::io::ReadBuf;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::buffers;
use crate::session::Violation;

/// Which end of the WebSocket this is (RFC 6455 §5.1): a client masks what
/// it sends and must not receive masked frames; a server the other way
/// round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The end that accepted the upgrade (the relay).
    Server,
    /// The end that asked for it (the device).
    Client,
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Largest payload of a data frame this end writes: the 16-bit length form,
/// so every header is 2 or 4 bytes (plus the mask).
const OUT_FRAME_MAX: usize = u16::MAX as usize;

/// Largest payload of a control frame (RFC 6455 §5.5).
const CONTROL_MAX: usize = 125;

/// Queued bytes from which a deferred flush writes at once (a busy read
/// side must not hold back window updates, and the buffer stays within
/// its pooled size).
const FLUSH_AT: usize = 48 * 1024;

/// Written bytes waiting for the socket beyond which writers wait for it.
const WRITE_BACKLOG: usize = 2 * MAX_WS_MESSAGE;

/// Close code for a peer that broke the protocol (RFC 6455 §7.4.1).
const CLOSE_PROTOCOL_ERROR: u16 = 1002;

/// Close codes and reasons exchanged on one connection, shared between the
/// adapter (which the yamux task owns) and whoever wants to set or read them.
#[derive(Debug, Default)]
pub struct CloseInfo {
    inner: Mutex<CloseState>,
    /// A close was requested: the read side sends the Close frame and then
    /// reports end of stream, which ends the yamux session above. Read on
    /// every poll of the read side, so kept out of the lock.
    requested: AtomicBool,
}

#[derive(Debug, Default)]
struct CloseState {
    /// What we send in our Close frame, if set before closing.
    local: Option<(u16, String)>,
    /// What the peer sent in its Close frame.
    remote: Option<(u16, String)>,
    /// The read side failed because the peer was silent too long.
    timed_out: bool,
    /// The read side failed because the peer broke the protocol.
    violation: Option<Violation>,
}

impl CloseInfo {
    /// Sets the code and reason our Close frame will carry.
    pub fn set_local(&self, code: u16, reason: &str) {
        if let Ok(mut s) = self.inner.lock() {
            s.local = Some((code, reason.to_owned()));
        }
    }

    /// Asks the adapter to send the Close frame (with the reason set by
    /// [`CloseInfo::set_local`], if any) and end the byte stream. Sending
    /// the Close frame first, before any yamux GoAway, lets the peer read
    /// the reason before its session ends.
    pub fn request_close(&self) {
        self.requested.store(true, Ordering::Release);
    }

    fn close_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// The code and reason the peer closed with, if it sent a Close frame.
    pub fn remote(&self) -> Option<(u16, String)> {
        self.inner.lock().ok().and_then(|s| s.remote.clone())
    }

    /// True when the connection ended because the peer went silent.
    pub fn timed_out(&self) -> bool {
        self.inner.lock().map(|s| s.timed_out).unwrap_or(false)
    }

    /// How the peer broke the protocol, if that is why the stream ended.
    pub fn violation(&self) -> Option<Violation> {
        self.inner.lock().ok().and_then(|s| s.violation)
    }

    fn set_violation(&self, v: Violation) {
        if let Ok(mut s) = self.inner.lock() {
            s.violation.get_or_insert(v);
        }
    }

    fn take_local(&self) -> Option<(u16, String)> {
        self.inner.lock().ok().and_then(|mut s| s.local.take())
    }

    fn set_remote(&self, code: u16, reason: String) {
        if let Ok(mut s) = self.inner.lock() {
            s.remote = Some((code, reason));
        }
    }

    fn set_timed_out(&self) {
        if let Ok(mut s) = self.inner.lock() {
            s.timed_out = true;
        }
    }
}

struct Keepalive {
    ticker: Interval,
    idle_timeout: Duration,
    last_rx: Instant,
}

/// What the reader is in the middle of.
#[derive(Debug, Default)]
struct Inbound {
    /// Payload bytes of the current data frame not yet handed out.
    remaining: u64,
    /// The current data frame's mask key, and where in it the next byte is.
    mask: Option<[u8; 4]>,
    mask_at: usize,
    /// A Binary message has started and its final frame has not come.
    in_message: bool,
    /// Bytes of the current message so far.
    message_len: u64,
}

/// A WebSocket connection seen as a `futures::io` byte stream. `S` is the
/// socket after the upgrade handshake.
pub struct WsByteStream<S> {
    io: S,
    side: Side,
    /// Bytes read from the socket, `rpos..rend` not yet parsed. Held only
    /// while data flows.
    rbuf: Option<Box<[u8]>>,
    rpos: usize,
    rend: usize,
    inbound: Inbound,
    /// Framed bytes for the socket, `wpos..` not yet written. Held only
    /// while there is something to send.
    wbuf: Option<Vec<u8>>,
    wpos: usize,
    /// Where the data frame being filled starts in `wbuf` (its header is
    /// reserved and written when the frame is sealed).
    open_frame: Option<usize>,
    keepalive: Option<Keepalive>,
    close: Arc<CloseInfo>,
    close_sent: bool,
    eof: bool,
    /// Whether `poll_flush` may leave the socket write to the read side
    /// (true when a yamux session, which always polls reads, drives this).
    defer_flush: bool,
}

/// What one step of the read loop found.
enum Step {
    /// Payload bytes for the reader.
    Data(usize),
    /// A frame was dealt with; go on.
    Again,
    /// End of stream.
    End,
}

impl<S> WsByteStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    /// Wraps `io`, a connection that has just switched to WebSocket on
    /// `side`. `early` holds bytes the peer sent right after its handshake
    /// answer (read together with it). With `keepalive`, pings are sent
    /// every `.0` and the read side fails when nothing arrived for `.1`.
    pub fn new(io: S, side: Side, early: &[u8], keepalive: Option<(Duration, Duration)>) -> Self {
        let keepalive = keepalive.map(|(every, idle_timeout)| {
            let mut ticker = tokio::time::interval_at(Instant::now() + every, every);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            Keepalive { ticker, idle_timeout, last_rx: Instant::now() }
        });
        let mut stream = WsByteStream {
            io,
            side,
            rbuf: None,
            rpos: 0,
            rend: 0,
            inbound: Inbound::default(),
            wbuf: None,
            wpos: 0,
            open_frame: None,
            keepalive,
            close: Arc::new(CloseInfo::default()),
            close_sent: false,
            eof: false,
            defer_flush: false,
        };
        if !early.is_empty() {
            let mut buf = buffers::take_read();
            // A handshake answer is read in pieces far smaller than this.
            let n = early.len().min(buf.len());
            buf[..n].copy_from_slice(&early[..n]);
            stream.rbuf = Some(buf);
            stream.rend = n;
        }
        stream
    }

    /// Lets `poll_flush` leave the socket write to the next `poll_read`
    /// that finds nothing to read. Only for a driver that keeps polling
    /// reads for as long as it writes — a yamux session does.
    pub fn defer_flush_to_reads(mut self) -> Self {
        self.defer_flush = true;
        self
    }

    /// The shared close information of this connection.
    pub fn close_info(&self) -> Arc<CloseInfo> {
        self.close.clone()
    }

    /// Bytes of socket buffers currently held (0 when idle).
    pub fn buffered_capacity(&self) -> usize {
        self.rbuf.as_ref().map_or(0, |b| b.len()) + self.wbuf.as_ref().map_or(0, |b| b.capacity())
    }

    // ---- writing ----

    fn wbuf(&mut self) -> &mut Vec<u8> {
        self.wbuf.get_or_insert_with(buffers::take_write)
    }

    fn unsent(&self) -> usize {
        self.wbuf.as_ref().map_or(0, |b| b.len() - self.wpos)
    }

    /// Header bytes reserved for an open data frame: the 16-bit length form.
    fn reserved_header(&self) -> usize {
        4 + self.mask_len()
    }

    fn mask_len(&self) -> usize {
        match self.side {
            Side::Client => 4,
            Side::Server => 0,
        }
    }

    /// Closes the data frame being filled: writes its header, masks it on
    /// the client side, and drops it when it carries nothing.
    fn seal(&mut self) {
        let Some(start) = self.open_frame.take() else {
            return;
        };
        let reserved = self.reserved_header();
        let side = self.side;
        let Some(buf) = self.wbuf.as_mut() else {
            return;
        };
        let len = buf.len() - start - reserved;
        if len == 0 {
            buf.truncate(start);
            return;
        }
        let mut payload_at = start + reserved;
        if len <= CONTROL_MAX {
            // The 7-bit length form is two bytes shorter: move the payload
            // down (at most 125 bytes) rather than leave a gap.
            buf.copy_within(payload_at.., payload_at - 2);
            buf.truncate(buf.len() - 2);
            payload_at -= 2;
        }
        let mut header = [0u8; 8];
        let n = frame_header(&mut header, OP_BINARY, len, side);
        buf[start..start + n].copy_from_slice(&header[..n]);
        debug_assert_eq!(start + n, payload_at);
        if side == Side::Client {
            let key = [header[n - 4], header[n - 3], header[n - 2], header[n - 1]];
            apply_mask(&mut buf[payload_at..], key, 0);
        }
    }

    /// Appends a whole control frame after whatever is queued.
    fn queue_control(&mut self, opcode: u8, payload: &[u8]) {
        self.seal();
        let side = self.side;
        let mut header = [0u8; 8];
        let n = frame_header(&mut header, opcode, payload.len(), side);
        let buf = self.wbuf();
        buf.extend_from_slice(&header[..n]);
        let at = buf.len();
        buf.extend_from_slice(payload);
        if side == Side::Client {
            let key = [header[n - 4], header[n - 3], header[n - 2], header[n - 1]];
            apply_mask(&mut buf[at..], key, 0);
        }
    }

    /// Queues our Close frame once, with the local reason if one was set.
    fn queue_close(&mut self, reply_to: Option<u16>) {
        if self.close_sent {
            return;
        }
        self.close_sent = true;
        let mut payload = Vec::with_capacity(CONTROL_MAX);
        match self.close.take_local() {
            Some((code, reason)) => {
                payload.extend_from_slice(&code.to_be_bytes());
                // A reason longer than a control frame allows is cut at a
                // character boundary.
                let mut end = reason.len().min(CONTROL_MAX - 2);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                payload.extend_from_slice(&reason.as_bytes()[..end]);
            }
            None => {
                if let Some(code) = reply_to {
                    payload.extend_from_slice(&code.to_be_bytes());
                }
            }
        }
        self.queue_control(OP_CLOSE, &payload);
    }

    /// Writes everything queued to the socket, then gives the buffer back.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.seal();
        if let Some(buf) = self.wbuf.as_ref() {
            while self.wpos < buf.len() {
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, &buf[self.wpos..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.wpos += n;
            }
        }
        if let Some(buf) = self.wbuf.take() {
            buffers::give_write(buf);
        }
        self.wpos = 0;
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }

    /// Runs the keepalive: queues a due ping, and fails when the peer has
    /// been silent past the bound. Never returns Pending by itself.
    fn poll_keepalive(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(ka) = self.keepalive.as_mut() else {
            return Ok(());
        };
        let mut ping = false;
        while ka.ticker.poll_tick(cx).is_ready() {
            if ka.last_rx.elapsed() > ka.idle_timeout {
                self.close.set_timed_out();
                return Err(io::Error::new(io::ErrorKind::TimedOut, "peer silent past idle timeout"));
            }
            ping = true;
        }
        if ping && !self.close_sent {
            self.queue_control(OP_PING, &[]);
        }
        Ok(())
    }

    // ---- reading ----

    /// Reads more from the socket into the read buffer. `Ready(false)` is
    /// end of stream. When the socket has nothing and nothing is buffered,
    /// the buffer is given back: the tunnel is idle.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let buf = self.rbuf.get_or_insert_with(buffers::take_read);
        if self.rpos == self.rend {
            self.rpos = 0;
            self.rend = 0;
        } else if self.rend == buf.len() {
            // Only a frame header (at most 14 bytes) or a control frame (at
            // most 131) is ever left over at the end.
            buf.copy_within(self.rpos..self.rend, 0);
            self.rend -= self.rpos;
            self.rpos = 0;
        }
        let mut fill = ReadBuf::new(&mut buf[self.rend..]);
        match Pin::new(&mut self.io).poll_read(cx, &mut fill) {
            Poll::Pending => {
                self.release_read();
                Poll::Pending
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {
                let n = fill.filled().len();
                if n == 0 {
                    return Poll::Ready(Ok(false));
                }
                self.rend += n;
                if let Some(ka) = self.keepalive.as_mut() {
                    ka.last_rx = Instant::now();
                }
                Poll::Ready(Ok(true))
            }
        }
    }

    fn release_read(&mut self) {
        if self.rpos == self.rend
            && let Some(buf) = self.rbuf.take()
        {
            buffers::give_read(buf);
            self.rpos = 0;
            self.rend = 0;
        }
    }

    /// Ends the connection for a protocol violation: records it, queues a
    /// Close 1002 and tries once to send it.
    fn violation(&mut self, cx: &mut Context<'_>, v: Violation, what: &'static str) -> io::Error {
        self.close.set_violation(v);
        if !self.close_sent {
            self.close.set_local(CLOSE_PROTOCOL_ERROR, "");
            self.queue_close(None);
            let _ = self.poll_write_out(cx);
        }
        self.eof = true;
        io::Error::new(io::ErrorKind::InvalidData, what)
    }

    /// One step of reading: hands out payload into `out` (or discards it
    /// when `out` is `None`), or parses and deals with the next frame.
    fn poll_step(&mut self, cx: &mut Context<'_>, out: Option<&mut [u8]>) -> Poll<io::Result<Step>> {
        if self.inbound.remaining > 0 {
            return self.poll_payload(cx, out);
        }
        let avail = &self.rbuf.as_deref().unwrap_or(&[])[self.rpos..self.rend];
        let header = match parse_header(avail) {
            Parsed::Incomplete => {
                if !ready!(self.poll_fill(cx))? {
                    // The peer went away mid-frame or between frames.
                    return Poll::Ready(Ok(Step::End));
                }
                return Poll::Ready(Ok(Step::Again));
            }
            Parsed::Invalid(what) => return Poll::Ready(Err(self.violation(cx, Violation::WebSocket, what))),
            Parsed::Frame(h) => h,
        };
        let masked_ok = match self.side {
            Side::Server => header.mask.is_some(),
            Side::Client => header.mask.is_none(),
        };
        if !masked_ok {
            let what = match self.side {
                Side::Server => "unmasked frame from a client",
                Side::Client => "masked frame from a server",
            };
            return Poll::Ready(Err(self.violation(cx, Violation::WebSocket, what)));
        }
        match header.opcode {
            OP_BINARY | OP_CONTINUATION => {
                let starts = header.opcode == OP_BINARY;
                if starts == self.inbound.in_message {
                    let what =
                        if starts { "new message inside a fragmented one" } else { "continuation without a message" };
                    return Poll::Ready(Err(self.violation(cx, Violation::WebSocket, what)));
                }
                let so_far = if starts { 0 } else { self.inbound.message_len };
                let message_len = so_far.saturating_add(header.len);
                if message_len > MAX_WS_MESSAGE as u64 {
                    return Poll::Ready(Err(self.violation(cx, Violation::WebSocket, "message too large")));
                }
                self.rpos += header.header_len;
                self.inbound = Inbound {
                    remaining: header.len,
                    mask: header.mask,
                    mask_at: 0,
                    in_message: !header.fin,
                    message_len,
                };
                Poll::Ready(Ok(Step::Again))
            }
            OP_TEXT => Poll::Ready(Err(self.violation(cx, Violation::TextMessage, "text message on a binary tunnel"))),
            OP_CLOSE | OP_PING | OP_PONG => {
                if !header.fin || header.len > CONTROL_MAX as u64 {
                    return Poll::Ready(Err(self.violation(cx, Violation::WebSocket, "bad control frame")));
                }
                // Control frames are handled whole; they are small.
                let total = header.header_len + header.len as usize;
                if avail.len() < total {
                    if !ready!(self.poll_fill(cx))? {
                        return Poll::Ready(Ok(Step::End));
                    }
                    return Poll::Ready(Ok(Step::Again));
                }
                let mut payload = [0u8; CONTROL_MAX];
                let payload = &mut payload[..header.len as usize];
                payload.copy_from_slice(&avail[header.header_len..total]);
                if let Some(key) = header.mask {
                    apply_mask(payload, key, 0);
                }
                self.rpos += total;
                self.control(cx, header.opcode, payload)
            }
            _ => Poll::Ready(Err(self.violation(cx, Violation::WebSocket, "unknown opcode"))),
        }
    }

    /// Deals with a whole control frame.
    fn control(&mut self, cx: &mut Context<'_>, opcode: u8, payload: &[u8]) -> Poll<io::Result<Step>> {
        match opcode {
            OP_PING => {
                if !self.close_sent {
                    if self.unsent() > WRITE_BACKLOG {
                        // A peer that pings without reading waits for us.
                        ready!(self.poll_write_out(cx))?;
                    }
                    self.queue_control(OP_PONG, payload);
                }
                Poll::Ready(Ok(Step::Again))
            }
            OP_PONG => Poll::Ready(Ok(Step::Again)),
            _ => {
                let code = match payload {
                    [] => None,
                    [a, b, reason @ ..] => {
                        let code = u16::from_be_bytes([*a, *b]);
                        let Ok(reason) = std::str::from_utf8(reason) else {
                            return Poll::Ready(Err(self.violation(
                                cx,
                                Violation::WebSocket,
                                "close reason not UTF-8",
                            )));
                        };
                        if !close_code_allowed(code) {
                            return Poll::Ready(Err(self.violation(cx, Violation::WebSocket, "bad close code")));
                        }
                        self.close.set_remote(code, reason.to_owned());
                        Some(code)
                    }
                    [_] => return Poll::Ready(Err(self.violation(cx, Violation::WebSocket, "one-byte close payload"))),
                };
                // Answer the closing handshake; a peer already gone makes
                // this fail, which ending does not care about.
                self.queue_close(code);
                let _ = self.poll_write_out(cx);
                Poll::Ready(Ok(Step::End))
            }
        }
    }

    /// Hands out payload of the current data frame.
    fn poll_payload(&mut self, cx: &mut Context<'_>, out: Option<&mut [u8]>) -> Poll<io::Result<Step>> {
        let remaining = usize::try_from(self.inbound.remaining).unwrap_or(usize::MAX);
        let avail = self.rend - self.rpos;
        if avail == 0 {
            // A reader with room for a big piece gets it straight from the
            // socket, never more than this frame's payload.
            if let Some(out) = out
                && out.len() >= buffers::READ_BUFFER / 4
            {
                self.release_read();
                let want = out.len().min(remaining);
                let mut fill = ReadBuf::new(&mut out[..want]);
                ready!(Pin::new(&mut self.io).poll_read(cx, &mut fill))?;
                let n = fill.filled().len();
                if n == 0 {
                    return Poll::Ready(Ok(Step::End));
                }
                if let Some(ka) = self.keepalive.as_mut() {
                    ka.last_rx = Instant::now();
                }
                self.unmask_out(&mut out[..n]);
                return Poll::Ready(Ok(Step::Data(n)));
            }
            if !ready!(self.poll_fill(cx))? {
                return Poll::Ready(Ok(Step::End));
            }
            return Poll::Ready(Ok(Step::Again));
        }
        let Some(buf) = self.rbuf.as_deref() else {
            return Poll::Ready(Ok(Step::Again));
        };
        let n = match out {
            Some(out) => {
                let n = out.len().min(avail).min(remaining);
                out[..n].copy_from_slice(&buf[self.rpos..self.rpos + n]);
                self.rpos += n;
                self.unmask_out(&mut out[..n]);
                return Poll::Ready(Ok(Step::Data(n)));
            }
            None => avail.min(remaining),
        };
        self.rpos += n;
        self.inbound.remaining -= n as u64;
        Poll::Ready(Ok(Step::Again))
    }

    fn unmask_out(&mut self, out: &mut [u8]) {
        if let Some(key) = self.inbound.mask {
            apply_mask(out, key, self.inbound.mask_at);
            self.inbound.mask_at = (self.inbound.mask_at + out.len()) % 4;
        }
        self.inbound.remaining -= out.len() as u64;
    }
}

/// A parsed frame header.
#[derive(Debug, PartialEq, Eq)]
struct Header {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
    header_len: usize,
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Incomplete,
    Invalid(&'static str),
    Frame(Header),
}

/// Parses a frame header at the start of `b` (RFC 6455 §5.2).
fn parse_header(b: &[u8]) -> Parsed {
    let [b0, b1, rest @ ..] = b else {
        return Parsed::Incomplete;
    };
    if b0 & 0x70 != 0 {
        return Parsed::Invalid("reserved bits set");
    }
    let (len, mut at) = match b1 & 0x7f {
        126 => match rest {
            [x, y, ..] => (u64::from(u16::from_be_bytes([*x, *y])), 4),
            _ => return Parsed::Incomplete,
        },
        127 => match rest.get(..8) {
            Some(l) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(l);
                let len = u64::from_be_bytes(n);
                if len >> 63 != 0 {
                    return Parsed::Invalid("length with the top bit set");
                }
                (len, 10)
            }
            None => return Parsed::Incomplete,
        },
        short => (u64::from(short), 2),
    };
    let mask = if b1 & 0x80 != 0 {
        let Some(k) = b.get(at..at + 4) else {
            return Parsed::Incomplete;
        };
        at += 4;
        Some([k[0], k[1], k[2], k[3]])
    } else {
        None
    };
    Parsed::Frame(Header { fin: b0 & 0x80 != 0, opcode: b0 & 0x0f, mask, len, header_len: at })
}

/// Writes the header of a final frame with `len` payload bytes into `out`
/// (with a fresh mask key on the client side, as its last four bytes) and
/// returns its length. `len` is at most [`OUT_FRAME_MAX`].
fn frame_header(out: &mut [u8; 8], opcode: u8, len: usize, side: Side) -> usize {
    let mask_bit = if side == Side::Client { 0x80 } else { 0 };
    out[0] = 0x80 | opcode;
    let mut n = if len <= CONTROL_MAX {
        out[1] = mask_bit | len as u8;
        2
    } else {
        out[1] = mask_bit | 126;
        out[2..4].copy_from_slice(&(len.min(OUT_FRAME_MAX) as u16).to_be_bytes());
        4
    };
    if side == Side::Client {
        // RFC 6455 §5.3: an unpredictable key for every frame.
        out[n..n + 4].copy_from_slice(&rand::random::<[u8; 4]>());
        n += 4;
    }
    n
}

/// XORs `data` with `key`, starting at byte `at` of the key (RFC 6455 §5.3).
fn apply_mask(data: &mut [u8], key: [u8; 4], at: usize) {
    let k = [key[at % 4], key[(at + 1) % 4], key[(at + 2) % 4], key[(at + 3) % 4]];
    let wide = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= k[i % 4];
    }
}

/// Close codes a peer may send (RFC 6455 §7.4, and the IANA registry's
/// 1012–1014): never the reserved 1004–1006 and 1015.
fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

impl<S> AsyncRead for WsByteStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.eof {
            return Poll::Ready(Ok(0));
        }
        if this.close.close_requested() {
            // Send our Close (after whatever was queued), then finish the
            // closing handshake: wait for the peer's Close or the end of
            // the connection, discarding data in between, so the peer gets
            // to read our reason before the socket goes.
            this.queue_close(None);
            if ready!(this.poll_write_out(cx)).is_err() {
                this.eof = true;
                return Poll::Ready(Ok(0));
            }
            loop {
                match ready!(this.poll_step(cx, None)) {
                    Ok(Step::End) | Err(_) => break,
                    Ok(Step::Data(_) | Step::Again) => {}
                }
            }
            this.eof = true;
            return Poll::Ready(Ok(0));
        }
        this.poll_keepalive(cx)?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            let step = match this.poll_step(cx, Some(&mut *buf)) {
                Poll::Ready(step) => step?,
                Poll::Pending => {
                    // Nothing more to read: the writer side is done for
                    // this round too, so push out what it queued.
                    if this.unsent() > 0 || this.open_frame.is_some() {
                        ready!(this.poll_write_out(cx))?;
                    }
                    return Poll::Pending;
                }
            };
            match step {
                Step::Data(n) => return Poll::Ready(Ok(n)),
                Step::Again => {}
                Step::End => {
                    this.eof = true;
                    return Poll::Ready(Ok(0));
                }
            }
        }
    }
}

impl<S> AsyncWrite for WsByteStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.close_sent {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "websocket closed")));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.unsent() >= WRITE_BACKLOG {
            ready!(this.poll_write_out(cx))?;
        }
        let reserved = this.reserved_header();
        let start = match this.open_frame {
            Some(start) => start,
            None => {
                let buf = this.wbuf();
                let start = buf.len();
                buf.resize(start + reserved, 0);
                this.open_frame = Some(start);
                start
            }
        };
        let buf = this.wbuf();
        let room = OUT_FRAME_MAX - (buf.len() - start - reserved);
        let n = room.min(data.len());
        buf.extend_from_slice(&data[..n]);
        if n == room {
            this.seal();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.seal();
        if this.defer_flush && this.unsent() < FLUSH_AT {
            // The read side writes when it runs dry.
            return Poll::Ready(Ok(()));
        }
        this.poll_write_out(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Data written before the close still goes out; a peer that is
        // already gone makes this fail, which closing does not care about.
        this.queue_close(None);
        if ready!(this.poll_write_out(cx)).is_err() {
            return Poll::Ready(Ok(()));
        }
        let _ = ready!(Pin::new(&mut this.io).poll_shutdown(cx));
        Poll::Ready(Ok(()))
    }
}

impl<S> Drop for WsByteStream<S> {
    fn drop(&mut self) {
        if let Some(buf) = self.rbuf.take() {
            buffers::give_read(buf);
        }
        if let Some(buf) = self.wbuf.take() {
            buffers::give_write(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::{AsyncReadExt, AsyncWriteExt, SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// Our `side` against tungstenite (an independent implementation) on
    /// the other side.
    async fn against_tungstenite(side: Side) -> (WebSocketStream<DuplexStream>, WsByteStream<DuplexStream>) {
        let (a, b) = tokio::io::duplex(256 * 1024);
        let peer_role = match side {
            Side::Server => Role::Client,
            Side::Client => Role::Server,
        };
        let peer = WebSocketStream::from_raw_socket(a, peer_role, None).await;
        (peer, WsByteStream::new(b, side, &[], None))
    }

    /// Our `side` against raw bytes.
    fn against_bytes(side: Side) -> (DuplexStream, WsByteStream<DuplexStream>) {
        let (a, b) = tokio::io::duplex(256 * 1024);
        (a, WsByteStream::new(b, side, &[], None))
    }

    /// A frame as a client sends it: masked with a fixed key.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![first];
        match payload.len() {
            n @ 0..=125 => f.push(0x80 | n as u8),
            n @ 126..=65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&key);
        let at = f.len();
        f.extend_from_slice(payload);
        apply_mask(&mut f[at..], key, 0);
        f
    }

    #[tokio::test]
    async fn binary_messages_become_one_byte_stream_and_pings_are_answered() {
        let (mut peer, mut ours) = against_tungstenite(Side::Server).await;
        peer.send(Message::Binary(Bytes::from_static(b"hel"))).await.unwrap();
        peer.send(Message::Ping(Bytes::from_static(b"p1"))).await.unwrap();
        peer.send(Message::Binary(Bytes::from_static(b""))).await.unwrap();
        peer.send(Message::Binary(Bytes::from_static(b"lo"))).await.unwrap();
        peer.send(Message::Close(None)).await.unwrap();
        let mut out = Vec::new();
        ours.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"hello");
        assert_eq!(peer.next().await.unwrap().unwrap(), Message::Pong(Bytes::from_static(b"p1")));
        // Our reply to the peer's Close completes its closing handshake.
        assert!(matches!(peer.next().await.unwrap().unwrap(), Message::Close(_)));
    }

    #[tokio::test]
    async fn both_sides_interoperate_with_tungstenite_and_big_payloads_keep_their_bytes() {
        for side in [Side::Server, Side::Client] {
            let (mut peer, mut ours) = against_tungstenite(side).await;
            let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
            let sent = data.clone();
            let writer = tokio::spawn(async move {
                ours.write_all(&sent).await.unwrap();
                ours.flush().await.unwrap();
                let mut back = vec![0u8; 200_001];
                ours.read_exact(&mut back).await.unwrap();
                back
            });
            let mut got = Vec::new();
            while got.len() < data.len() {
                match peer.next().await.unwrap().unwrap() {
                    Message::Binary(b) => {
                        assert!(b.len() <= OUT_FRAME_MAX, "{side:?}: frame of {}", b.len());
                        got.extend_from_slice(&b);
                    }
                    other => panic!("{side:?}: unexpected {other:?}"),
                }
            }
            assert_eq!(got, data, "{side:?}");
            // Odd sizes, so unmasking resumes mid-key across reads.
            peer.send(Message::Binary(data[..1].to_vec().into())).await.unwrap();
            peer.send(Message::Binary(data[1..200_001].to_vec().into())).await.unwrap();
            assert_eq!(writer.await.unwrap(), data[..200_001], "{side:?}");
        }
    }

    #[tokio::test]
    async fn writes_until_a_flush_become_one_frame_and_short_frames_use_the_short_length() {
        for side in [Side::Server, Side::Client] {
            let (mut peer, mut ours) = against_tungstenite(side).await;
            ours.write_all(b"header").await.unwrap();
            ours.write_all(b"+body").await.unwrap();
            ours.flush().await.unwrap();
            ours.write_all(&[1u8; 200]).await.unwrap();
            ours.flush().await.unwrap();
            ours.write_all(&vec![2u8; OUT_FRAME_MAX + 10]).await.unwrap();
            ours.flush().await.unwrap();
            let mut got = Vec::new();
            for _ in 0..4 {
                match peer.next().await.unwrap().unwrap() {
                    Message::Binary(b) => got.push(b),
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(&got[0][..], b"header+body");
            assert_eq!(got[1].len(), 200);
            assert_eq!(got[2].len(), OUT_FRAME_MAX);
            assert_eq!(got[3].len(), 10);
        }
        // On the wire: a 7-bit length for 11 bytes, no mask from a server.
        let (mut raw, mut ours) = against_bytes(Side::Server);
        ours.write_all(b"header+body").await.unwrap();
        ours.flush().await.unwrap();
        let mut wire = [0u8; 13];
        raw.read_exact(&mut wire).await.unwrap();
        assert_eq!(&wire[..2], &[0x82, 11]);
        assert_eq!(&wire[2..], b"header+body");
    }

    #[tokio::test]
    async fn a_fragmented_message_with_a_ping_inside_reads_as_its_bytes() {
        let (mut raw, mut ours) = against_bytes(Side::Server);
        let mut wire = client_frame(0x02, b"ab"); // Binary, not final
        wire.extend(client_frame(0x89, b"ping-data")); // Ping between fragments
        wire.extend(client_frame(0x00, b"cd")); // continuation, not final
        wire.extend(client_frame(0x80, b"ef")); // continuation, final
        raw.write_all(&wire).await.unwrap();
        let mut got = [0u8; 6];
        ours.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abcdef");
        // The pong carries the ping's payload, unmasked from a server.
        let mut pending = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(50), ours.read(&mut pending)).await;
        assert!(read.is_err(), "nothing more to read");
        let mut pong = [0u8; 11];
        raw.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong[..2], &[0x8A, 9]);
        assert_eq!(&pong[2..], b"ping-data");
        assert_eq!(ours.buffered_capacity(), 0, "an idle stream holds no buffers");
    }

    #[tokio::test]
    async fn frames_rfc6455_forbids_end_the_stream_with_close_1002() {
        let long_len = {
            let mut f = vec![0x82, 0x80 | 127];
            f.extend_from_slice(&(1u64 << 63).to_be_bytes());
            f.extend_from_slice(&[0; 4]);
            f
        };
        let mut too_big = vec![0x82, 0x80 | 127];
        too_big.extend_from_slice(&(MAX_WS_MESSAGE as u64 + 1).to_be_bytes());
        too_big.extend_from_slice(&[0; 4]);
        let cases: Vec<(&str, Side, Vec<u8>)> = vec![
            ("unmasked frame to a server", Side::Server, vec![0x82, 0x01, b'x']),
            ("masked frame to a client", Side::Client, client_frame(0x82, b"x")),
            ("reserved bit", Side::Server, client_frame(0x82 | 0x40, b"x")),
            ("unknown opcode", Side::Server, client_frame(0x83, b"x")),
            ("long ping", Side::Server, client_frame(0x89, &[0; 126])),
            ("fragmented ping", Side::Server, client_frame(0x09, b"x")),
            ("continuation first", Side::Server, client_frame(0x80, b"x")),
            ("binary inside a fragmented message", Side::Server, {
                let mut w = client_frame(0x02, b"a");
                w.extend(client_frame(0x82, b"b"));
                w
            }),
            ("close code 1005", Side::Server, client_frame(0x88, &1005u16.to_be_bytes())),
            ("close code 999", Side::Server, client_frame(0x88, &999u16.to_be_bytes())),
            ("one-byte close", Side::Server, client_frame(0x88, &[3])),
            ("close reason not UTF-8", Side::Server, client_frame(0x88, &[0x03, 0xe8, 0xff, 0xfe])),
            ("length with the top bit", Side::Server, long_len),
            ("message over the limit", Side::Server, too_big),
        ];
        for (what, side, wire) in cases {
            let (mut raw, mut ours) = against_bytes(side);
            let info = ours.close_info();
            raw.write_all(&wire).await.unwrap();
            let mut buf = [0u8; 64];
            // Payload of a fragment before the bad frame may come first.
            let err = loop {
                match ours.read(&mut buf).await {
                    Ok(n) => assert!(n > 0, "{what}: end of stream instead of an error"),
                    Err(e) => break e,
                }
            };
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}");
            assert_eq!(info.violation(), Some(Violation::WebSocket), "{what}");
            let mut close = [0u8; 4];
            raw.read_exact(&mut close).await.unwrap();
            let expected = if side == Side::Server { [0x88, 0x02, 0x03, 0xea] } else { [0x88, 0x82, 0, 0] };
            assert_eq!(close[..2], expected[..2], "{what}: {close:?}");
            assert_eq!(ours.read(&mut buf).await.unwrap(), 0, "{what}: ended");
        }
    }

    #[tokio::test]
    async fn text_message_is_a_protocol_error() {
        let (mut peer, mut ours) = against_tungstenite(Side::Server).await;
        let info = ours.close_info();
        peer.send(Message::text("nope")).await.unwrap();
        let mut buf = [0u8; 8];
        let err = ours.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(info.violation(), Some(Violation::TextMessage));
    }

    #[tokio::test]
    async fn close_code_is_recorded_both_ways() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let mut client = WsByteStream::new(a, Side::Client, &[], None);
        let mut server = WsByteStream::new(b, Side::Server, &[], None);
        server.close_info().set_local(4001, "closed_by_operator");
        server.close_info().request_close();
        let info_client = client.close_info();
        let closer = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            server.read(&mut buf).await
        });
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        assert_eq!(closer.await.unwrap().unwrap(), 0);
        assert_eq!(info_client.remote(), Some((4001, "closed_by_operator".to_owned())));
        assert!(client.write_all(b"late").await.is_err(), "no data after our Close");
    }

    #[tokio::test]
    async fn bytes_read_with_the_handshake_answer_come_first() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let mut server = WsByteStream::new(a, Side::Server, &[], None);
        server.write_all(b"first").await.unwrap();
        server.flush().await.unwrap();
        let mut raw = b;
        let mut early = [0u8; 7];
        raw.read_exact(&mut early).await.unwrap();
        let mut client = WsByteStream::new(raw, Side::Client, &early, None);
        server.write_all(b"+second").await.unwrap();
        server.flush().await.unwrap();
        let mut got = [0u8; 12];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"first+second");
    }

    #[test]
    fn headers_parse_in_every_length_form_and_wait_for_their_bytes() {
        assert_eq!(parse_header(&[0x82]), Parsed::Incomplete);
        assert_eq!(
            parse_header(&[0x82, 5]),
            Parsed::Frame(Header { fin: true, opcode: 2, mask: None, len: 5, header_len: 2 })
        );
        assert_eq!(parse_header(&[0x02, 126, 1]), Parsed::Incomplete);
        assert_eq!(
            parse_header(&[0x02, 126, 1, 0]),
            Parsed::Frame(Header { fin: false, opcode: 2, mask: None, len: 256, header_len: 4 })
        );
        assert_eq!(parse_header(&[0x82, 0x80 | 127, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3]), Parsed::Incomplete);
        assert_eq!(
            parse_header(&[0x82, 0x80 | 127, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4]),
            Parsed::Frame(Header { fin: true, opcode: 2, mask: Some([1, 2, 3, 4]), len: 65536, header_len: 14 })
        );
    }

    #[test]
    fn masking_twice_from_any_offset_gives_the_bytes_back() {
        let key = [0x12, 0x34, 0x56, 0x78];
        let data: Vec<u8> = (0..37u8).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        // Masking in two pieces, the second resuming at its key offset,
        // equals masking at once.
        let mut pieces = data.clone();
        let (x, y) = pieces.split_at_mut(13);
        apply_mask(x, key, 0);
        apply_mask(y, key, 13);
        assert_eq!(pieces, whole);
        assert_eq!(whole[0], data[0] ^ 0x12);
        assert_eq!(whole[5], data[5] ^ 0x34);
        apply_mask(&mut whole, key, 0);
        assert_eq!(whole, data);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_peer_times_out_within_the_bound() {
        let (_raw, server) = tokio::io::duplex(1024);
        let mut ours =
            WsByteStream::new(server, Side::Server, &[], Some((Duration::from_secs(1), Duration::from_secs(3))));
        let info = ours.close_info();
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let err = ours.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(info.timed_out());
        assert!(started.elapsed() <= Duration::from_secs(4), "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn pings_keep_a_responsive_peer_alive() {
        let (peer, server) = tokio::io::duplex(64 * 1024);
        let peer = WebSocketStream::from_raw_socket(peer, Role::Client, None).await;
        // The peer only reads (tungstenite answers pings while reading).
        let peer = tokio::spawn(async move {
            let mut c = peer;
            while let Some(Ok(_)) = c.next().await {}
        });
        let mut ours =
            WsByteStream::new(server, Side::Server, &[], Some((Duration::from_secs(1), Duration::from_secs(3))));
        let mut buf = [0u8; 8];
        let res = tokio::time::timeout(Duration::from_secs(20), ours.read(&mut buf)).await;
        assert!(res.is_err(), "read should still be pending, got {res:?}");
        peer.abort();
    }
}
