//! yamux (hashicorp's spec, as hashicorp/yamux and libp2p speak it) over
//! the WebSocket byte stream, written for the forwarding path (ADR 33).
//!
//! Streams and the connection share state instead of sending each other
//! messages: a stream's received bytes sit in its own buffer, which the
//! connection fills straight from the socket, and a stream's writes are
//! framed into the connection's outgoing buffer under its lock. The one
//! task that owns the socket ([`Connection::poll`]) parses frames and
//! writes what is queued; nothing else is spawned, and no frame costs an
//! allocation or a channel message.
//!
//! # Wire rules kept
//! * 12-byte header: version 0, type (data, window update, ping, go away),
//!   flags (SYN, ACK, FIN, RST), stream id, length; big-endian.
//! * The client opens odd ids, the server even; a stream's first frame
//!   carries SYN, the answer's first frame ACK.
//! * Every stream starts with a 256 KiB window each way; data beyond the
//!   credit granted ends the connection. Credit is granted back once half
//!   of the window has been read; a stream whose sender waits on credit
//!   while its reader keeps up gets its window doubled (up to 16 MiB,
//!   within the connection's growth room; ADR 28).
//! * Pings are answered; a go-away ends the connection. Frames for
//!   streams that are gone are dropped (as hashicorp/yamux does).
//!
//! # Locks
//! A stream's lock may be held while taking the connection's, never the
//! other way round.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use futures::io::{AsyncRead as FutRead, AsyncWrite as FutWrite};
use futures::task::AtomicWaker;

use crate::buffers;

/// Bytes of a frame header.
pub const HEADER_LEN: usize = 12;
/// Every stream's window, both ways, when it opens.
pub const INITIAL_WINDOW: u32 = 256 * 1024;
/// The largest a stream's receive window grows to.
pub const MAX_WINDOW: u32 = 16 * 1024 * 1024;
/// A stream whose reader takes half its window within this of the last
/// grant gets a bigger window (it reads faster than window / 2 per this).
const GROW_WITHIN: Duration = Duration::from_millis(2);
/// Bytes streams may queue for the socket before their writes wait.
const OUT_LIMIT: usize = 256 * 1024;
/// Bytes read from the socket at once for frame headers and small payloads.
const HEAD_READ: usize = 16 * 1024;

const TYPE_DATA: u8 = 0;
const TYPE_WINDOW_UPDATE: u8 = 1;
const TYPE_PING: u8 = 2;
const TYPE_GO_AWAY: u8 = 3;

const SYN: u16 = 1;
const ACK: u16 = 2;
const FIN: u16 = 4;
const RST: u16 = 8;

/// Go-away code for a protocol error.
const GO_AWAY_PROTOCOL_ERROR: u32 = 1;

/// Which ids this end opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Opens odd-numbered streams (the relay).
    Client,
    /// Opens even-numbered streams (the device).
    Server,
}

/// Limits of one connection.
#[derive(Debug, Clone)]
pub struct MuxConfig {
    /// Streams held at once (until both ends closed them); inbound opens
    /// beyond it are reset, outbound ones refused.
    pub max_streams: usize,
    /// Bytes of window growth all streams together may hold.
    pub window_growth: usize,
    /// Largest data frame payload written.
    pub split_send: usize,
    /// Acknowledge a peer's new stream with a frame of its own at once,
    /// rather than with the stream's first answer. hashicorp/yamux ends
    /// the whole session when a stream it opened goes unacknowledged for
    /// 75 s, so the relay acknowledges device-opened streams at once; the
    /// device's answer to a relay stream carries the ACK (one frame less
    /// per request).
    pub ack_at_once: bool,
}

/// Why a connection or an open failed.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    /// The peer broke the yamux rules.
    #[error("yamux protocol violation: {0}")]
    Protocol(&'static str),
    /// The transport failed.
    #[error("tunnel transport: {0}")]
    Io(#[from] io::Error),
    /// No stream can be opened: the connection is closed or closing.
    #[error("the connection is closed")]
    Closed,
    /// The stream limit is reached.
    #[error("too many streams")]
    TooManyStreams,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Frame type.
    pub kind: u8,
    /// SYN/ACK/FIN/RST bits.
    pub flags: u16,
    /// Stream id (0 for session frames).
    pub id: u32,
    /// Payload length (data), window delta, ping value or go-away code.
    pub len: u32,
}

impl Header {
    /// Parses a header; refuses a version other than 0 and unknown types.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Result<Header, MuxError> {
        if b[0] != 0 {
            return Err(MuxError::Protocol("unknown version"));
        }
        if b[1] > TYPE_GO_AWAY {
            return Err(MuxError::Protocol("unknown frame type"));
        }
        Ok(Header {
            kind: b[1],
            flags: u16::from_be_bytes([b[2], b[3]]),
            id: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            len: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        })
    }

    fn put(self, out: &mut Vec<u8>) {
        if out.capacity() == 0 {
            *out = buffers::take_write();
        }
        out.push(0);
        out.push(self.kind);
        out.extend_from_slice(&self.flags.to_be_bytes());
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
    }
}

/// Received bytes of one stream, in pooled 64 KiB chunks held only while
/// unread.
#[derive(Default)]
struct RecvBuf {
    chunks: VecDeque<Chunk>,
    len: usize,
}

struct Chunk {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl RecvBuf {
    /// Room to receive into, at the end of the last chunk or in a new one.
    fn spare(&mut self) -> &mut [u8] {
        if self.chunks.back().is_none_or(|c| c.end == c.buf.len()) {
            self.chunks.push_back(Chunk { buf: buffers::take_read(), start: 0, end: 0 });
        }
        match self.chunks.back_mut() {
            Some(c) => &mut c.buf[c.end..],
            None => &mut [],
        }
    }

    /// Marks `n` bytes of [`RecvBuf::spare`] as received.
    fn commit(&mut self, n: usize) {
        if let Some(c) = self.chunks.back_mut() {
            c.end += n;
            self.len += n;
        }
    }

    fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let spare = self.spare();
            let n = spare.len().min(data.len());
            spare[..n].copy_from_slice(&data[..n]);
            self.commit(n);
            data = &data[n..];
        }
    }

    /// Moves bytes into `out`; returns how many.
    fn read_into(&mut self, out: &mut tokio::io::ReadBuf<'_>) -> usize {
        let mut moved = 0;
        while out.remaining() > 0 {
            let Some(c) = self.chunks.front_mut() else { break };
            let n = (c.end - c.start).min(out.remaining());
            out.put_slice(&c.buf[c.start..c.start + n]);
            c.start += n;
            moved += n;
            if c.start == c.end
                && let Some(c) = self.chunks.pop_front()
            {
                buffers::give_read(c.buf);
            }
        }
        self.len -= moved;
        moved
    }

    fn clear(&mut self) {
        for c in self.chunks.drain(..) {
            buffers::give_read(c.buf);
        }
        self.len = 0;
    }
}

struct StreamState {
    recv: RecvBuf,
    /// Bytes the peer may still send.
    credit: u32,
    /// The receive window's current size.
    window: u32,
    /// Bytes read by the stream's reader and not yet granted back.
    ungranted: u32,
    /// Bytes we may still send.
    send: u32,
    /// SYN or ACK for the next frame we send on this stream.
    flags_out: u16,
    local_fin: bool,
    remote_fin: bool,
    reset: bool,
    /// The [`Stream`] is gone.
    dropped: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    /// When credit was last granted (or the stream opened).
    last_grant: Instant,
}

impl StreamState {
    fn new(flags_out: u16) -> StreamState {
        StreamState {
            recv: RecvBuf::default(),
            credit: INITIAL_WINDOW,
            window: INITIAL_WINDOW,
            ungranted: 0,
            send: INITIAL_WINDOW,
            flags_out,
            local_fin: false,
            remote_fin: false,
            reset: false,
            dropped: false,
            read_waker: None,
            write_waker: None,
            last_grant: Instant::now(),
        }
    }

    fn wake_all(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }

    /// Both directions are over: the stream can be forgotten once its
    /// handle is gone.
    fn finished(&self) -> bool {
        self.reset || (self.local_fin && self.remote_fin)
    }
}

struct StreamShared {
    state: Mutex<StreamState>,
}

struct ConnState {
    /// Frames for the socket, in order.
    out: Vec<u8>,
    /// Writers waiting for `out` to drain.
    out_waiters: Vec<Waker>,
    /// Seeded per process: the peer picks the ids.
    streams: HashMap<u32, Arc<StreamShared>, foldhash::fast::RandomState>,
    next_id: u32,
    /// The connection has ended: nothing more goes out or comes in.
    closed: bool,
    /// A close was asked for (with the WebSocket close code and reason, if any).
    closing: Option<Option<(u16, String)>>,
    /// Window growth handed out to streams, bytes.
    grown: usize,
}

struct ConnShared {
    state: Mutex<ConnState>,
    /// The connection task.
    task: AtomicWaker,
    config: MuxConfig,
}

impl ConnShared {
    /// Forgets stream `id` and gives back its window growth. The stream's
    /// own lock is held by the caller (state passed in).
    fn remove(&self, conn: &mut ConnState, id: u32, st: &mut StreamState) {
        conn.streams.remove(&id);
        conn.grown = conn.grown.saturating_sub((st.window - INITIAL_WINDOW) as usize);
        st.window = INITIAL_WINDOW;
        st.recv.clear();
    }
}

/// One yamux stream, with tokio's IO traits. Dropping it before both
/// directions ended resets it (or, when only the peer had finished,
/// finishes ours).
pub struct Stream {
    id: u32,
    shared: Arc<StreamShared>,
    conn: Arc<ConnShared>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("id", &self.id).finish()
    }
}

impl Stream {
    /// The stream's id.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut st = lock(&this.shared.state);
        if st.recv.len > 0 {
            let n = st.recv.read_into(buf);
            st.ungranted += n as u32;
            if !st.remote_fin && !st.reset && st.ungranted >= st.window / 2 {
                let mut conn = lock(&this.conn.state);
                if conn.closed {
                    return Poll::Ready(Ok(()));
                }
                let mut delta = st.ungranted;
                // Half the window was read within GROW_WITHIN of the last
                // grant: the reader keeps up, and the window, not the
                // reader, is what holds the stream back.
                let now = Instant::now();
                let fast = now.duration_since(st.last_grant) < GROW_WITHIN;
                st.last_grant = now;
                if fast && st.window < MAX_WINDOW {
                    let grow = st.window.min(MAX_WINDOW - st.window);
                    if conn.grown + grow as usize <= this.conn.config.window_growth {
                        conn.grown += grow as usize;
                        st.window += grow;
                        delta += grow;
                    }
                }
                let flags = std::mem::take(&mut st.flags_out);
                Header { kind: TYPE_WINDOW_UPDATE, flags, id: this.id, len: delta }.put(&mut conn.out);
                st.credit += delta;
                st.ungranted = 0;
                drop(conn);
                this.conn.task.wake();
            }
            return Poll::Ready(Ok(()));
        }
        if st.remote_fin {
            return Poll::Ready(Ok(()));
        }
        if st.reset {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "tunnel stream reset")));
        }
        if !st.read_waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            st.read_waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    /// Several slices become one data frame (as far as credit and the
    /// frame size allow): a head and its body go out together.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut st = lock(&this.shared.state);
        if st.reset {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "tunnel stream reset")));
        }
        if st.local_fin {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "tunnel stream closed for writing")));
        }
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        if st.send == 0 {
            st.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = total.min(st.send as usize).min(this.conn.config.split_send);
        let mut conn = lock(&this.conn.state);
        if conn.closed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "tunnel closed")));
        }
        if conn.out.len() >= OUT_LIMIT {
            conn.out_waiters.push(cx.waker().clone());
            return Poll::Pending;
        }
        let flags = std::mem::take(&mut st.flags_out);
        Header { kind: TYPE_DATA, flags, id: this.id, len: n as u32 }.put(&mut conn.out);
        let mut left = n;
        for b in bufs {
            let k = b.len().min(left);
            conn.out.extend_from_slice(&b[..k]);
            left -= k;
            if left == 0 {
                break;
            }
        }
        drop(conn);
        st.send -= n as u32;
        drop(st);
        this.conn.task.wake();
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are with the connection, which sends them as soon
        // as it runs.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut st = lock(&this.shared.state);
        if st.local_fin || st.reset {
            return Poll::Ready(Ok(()));
        }
        st.local_fin = true;
        let mut conn = lock(&this.conn.state);
        if conn.closed {
            return Poll::Ready(Ok(()));
        }
        let flags = std::mem::take(&mut st.flags_out) | FIN;
        Header { kind: TYPE_WINDOW_UPDATE, flags, id: this.id, len: 0 }.put(&mut conn.out);
        drop(conn);
        drop(st);
        this.conn.task.wake();
        Poll::Ready(Ok(()))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let mut st = lock(&self.shared.state);
        st.dropped = true;
        st.read_waker = None;
        st.write_waker = None;
        let mut conn = lock(&self.conn.state);
        if conn.closed {
            return;
        }
        let never_sent = st.flags_out & SYN != 0;
        let frame = if st.finished() || never_sent {
            None
        } else if !st.remote_fin {
            if st.local_fin {
                // Ours is finished; wait for the peer's FIN, dropping
                // whatever it still sends (more data resets the stream).
                st.recv.clear();
                return;
            }
            st.reset = true;
            Some(RST)
        } else {
            st.local_fin = true;
            Some(FIN)
        };
        if let Some(flag) = frame {
            let flags = std::mem::take(&mut st.flags_out) | flag;
            Header { kind: TYPE_WINDOW_UPDATE, flags, id: self.id, len: 0 }.put(&mut conn.out);
        }
        self.conn.remove(&mut conn, self.id, &mut st);
        drop(conn);
        drop(st);
        if frame.is_some() {
            self.conn.task.wake();
        }
    }
}

/// Opens streams and asks for the close of one connection; cheap to clone.
#[derive(Clone)]
pub struct Control {
    conn: Arc<ConnShared>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Control")
    }
}

impl Control {
    /// A new outbound stream. Nothing is sent until it is written to (its
    /// first frame carries SYN).
    pub fn open(&self) -> Result<Stream, MuxError> {
        let mut conn = lock(&self.conn.state);
        if conn.closed || conn.closing.is_some() {
            return Err(MuxError::Closed);
        }
        if conn.streams.len() >= self.conn.config.max_streams {
            return Err(MuxError::TooManyStreams);
        }
        let id = conn.next_id;
        conn.next_id = id.checked_add(2).ok_or(MuxError::TooManyStreams)?;
        let shared = Arc::new(StreamShared { state: Mutex::new(StreamState::new(SYN)) });
        conn.streams.insert(id, shared.clone());
        Ok(Stream { id, shared, conn: self.conn.clone() })
    }

    /// Marks the connection as closing (once; false when it already was),
    /// with what the session reports as its end. New streams are refused
    /// from then on; [`Control::wake`] has the connection task act on it.
    pub fn close(&self, reason: Option<(u16, String)>) -> bool {
        let mut conn = lock(&self.conn.state);
        if conn.closing.is_some() || conn.closed {
            return false;
        }
        conn.closing = Some(reason);
        true
    }

    /// Wakes the connection task.
    pub fn wake(&self) {
        self.conn.task.wake();
    }

    /// The close asked for, if any.
    pub fn closing(&self) -> Option<Option<(u16, String)>> {
        lock(&self.conn.state).closing.clone()
    }

    /// True once the connection has ended.
    pub fn is_closed(&self) -> bool {
        lock(&self.conn.state).closed
    }

    /// Streams currently held.
    pub fn streams(&self) -> usize {
        lock(&self.conn.state).streams.len()
    }
}

/// The payload of a data frame still to be read.
struct Inbound {
    /// Where it goes; None: dropped.
    stream: Option<Arc<StreamShared>>,
    id: u32,
    remaining: usize,
    /// FIN/RST of the frame, applied once its payload is in.
    flags: u16,
}

/// The socket side of a yamux connection: owned and polled by one task.
pub struct Connection<T> {
    io: T,
    mode: Mode,
    shared: Arc<ConnShared>,
    /// Socket bytes `rpos..rend` not yet parsed (headers and small payloads).
    rbuf: Box<[u8]>,
    rpos: usize,
    rend: usize,
    inbound: Option<Inbound>,
    /// Frames taken from the shared queue, `wpos..` not yet written.
    wq: Vec<u8>,
    wpos: usize,
}

impl<T: FutRead + FutWrite + Unpin> Connection<T> {
    /// A connection over `io` and its control handle.
    pub fn new(io: T, mode: Mode, config: MuxConfig) -> (Connection<T>, Control) {
        let shared = Arc::new(ConnShared {
            state: Mutex::new(ConnState {
                out: Vec::new(),
                out_waiters: Vec::new(),
                streams: HashMap::default(),
                next_id: match mode {
                    Mode::Client => 1,
                    Mode::Server => 2,
                },
                closed: false,
                closing: None,
                grown: 0,
            }),
            task: AtomicWaker::new(),
            config,
        });
        let conn = Connection {
            io,
            mode,
            shared: shared.clone(),
            rbuf: Box::default(),
            rpos: 0,
            rend: 0,
            inbound: None,
            wq: Vec::new(),
            wpos: 0,
        };
        (conn, Control { conn: shared })
    }

    /// The transport.
    pub fn io_mut(&mut self) -> &mut T {
        &mut self.io
    }

    /// Drives the connection: reads and dispatches frames (new inbound
    /// streams go to `on_inbound`) and writes what streams queued.
    /// `Ready(Ok(()))` is the transport's end or the peer's go-away.
    pub fn poll(&mut self, cx: &mut Context<'_>, on_inbound: &mut dyn FnMut(Stream)) -> Poll<Result<(), MuxError>> {
        self.shared.task.register(cx.waker());
        loop {
            let wrote = self.poll_write_out(cx);
            if let Poll::Ready(Err(e)) = wrote {
                return Poll::Ready(Err(MuxError::Io(e)));
            }
            if let Poll::Ready(end) = self.poll_read_frames(cx, on_inbound) {
                return Poll::Ready(end);
            }
            if wrote.is_pending() {
                return Poll::Pending;
            }
            let more = {
                let mut conn = lock(&self.shared.state);
                if conn.out.is_empty() && conn.out.capacity() > 0 {
                    // Swapped in from `wq` after the last write: idle, so back
                    // to the pool.
                    buffers::give_write(std::mem::take(&mut conn.out));
                }
                !conn.out.is_empty()
            };
            if !more {
                self.release_idle();
                return Poll::Pending;
            }
            // Reading queued frames (acks, grants): write them, then read
            // again, which sends the socket what was framed.
        }
    }

    /// Gives buffers back while nothing flows (idle tunnels hold none).
    fn release_idle(&mut self) {
        if self.wpos == self.wq.len() && self.wq.capacity() > 0 {
            buffers::give_write(std::mem::take(&mut self.wq));
            self.wpos = 0;
        }
        if self.rpos == self.rend && !self.rbuf.is_empty() {
            buffers::give_read(std::mem::take(&mut self.rbuf));
            self.rpos = 0;
            self.rend = 0;
        }
    }

    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.wpos == self.wq.len() {
                self.wq.clear();
                self.wpos = 0;
                let waiters = {
                    let mut conn = lock(&self.shared.state);
                    if conn.out.is_empty() {
                        break;
                    }
                    std::mem::swap(&mut conn.out, &mut self.wq);
                    std::mem::take(&mut conn.out_waiters)
                };
                for w in waiters {
                    w.wake();
                }
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.wq[self.wpos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Reads frames until the socket has nothing more.
    fn poll_read_frames(
        &mut self,
        cx: &mut Context<'_>,
        on_inbound: &mut dyn FnMut(Stream),
    ) -> Poll<Result<(), MuxError>> {
        loop {
            if let Some(inbound) = self.inbound.as_mut() {
                if inbound.remaining > 0 {
                    let buffered = self.rend - self.rpos;
                    if buffered > 0 {
                        let n = buffered.min(inbound.remaining);
                        if let Some(s) = &inbound.stream {
                            let mut st = lock(&s.state);
                            st.recv.push(&self.rbuf[self.rpos..self.rpos + n]);
                            if let Some(w) = st.read_waker.take() {
                                w.wake();
                            }
                        }
                        self.rpos += n;
                        inbound.remaining -= n;
                    } else if let Some(s) = &inbound.stream {
                        // Big payloads go from the socket into the
                        // stream's buffer directly.
                        let mut st = lock(&s.state);
                        let spare = st.recv.spare();
                        let want = spare.len().min(inbound.remaining);
                        let n = ready!(Pin::new(&mut self.io).poll_read(cx, &mut spare[..want]))?;
                        if n == 0 {
                            return Poll::Ready(Ok(()));
                        }
                        st.recv.commit(n);
                        if let Some(w) = st.read_waker.take() {
                            w.wake();
                        }
                        inbound.remaining -= n;
                    } else {
                        if ready!(self.poll_fill(cx))? == 0 {
                            return Poll::Ready(Ok(()));
                        }
                        continue;
                    }
                }
                if inbound.remaining == 0
                    && let Some(inbound) = self.inbound.take()
                {
                    self.finish_data(inbound);
                }
                continue;
            }
            if self.rend - self.rpos < HEADER_LEN {
                if ready!(self.poll_fill(cx))? == 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let mut raw = [0u8; HEADER_LEN];
            raw.copy_from_slice(&self.rbuf[self.rpos..self.rpos + HEADER_LEN]);
            self.rpos += HEADER_LEN;
            let header = Header::parse(&raw)?;
            match header.kind {
                TYPE_DATA | TYPE_WINDOW_UPDATE => self.on_stream_frame(header, on_inbound)?,
                TYPE_PING => {
                    if header.flags & SYN != 0 {
                        let mut conn = lock(&self.shared.state);
                        Header { kind: TYPE_PING, flags: ACK, id: 0, len: header.len }.put(&mut conn.out);
                    }
                }
                _ => return Poll::Ready(Ok(())),
            }
        }
    }

    /// Reads more socket bytes behind what is buffered; the count read.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.is_empty() {
            self.rbuf = buffers::take_read();
        }
        if self.rpos == self.rend {
            self.rpos = 0;
            self.rend = 0;
        } else if self.rend + HEADER_LEN > HEAD_READ {
            self.rbuf.copy_within(self.rpos..self.rend, 0);
            self.rend -= self.rpos;
            self.rpos = 0;
        }
        let end = HEAD_READ.min(self.rbuf.len());
        let n = ready!(Pin::new(&mut self.io).poll_read(cx, &mut self.rbuf[self.rend..end]))?;
        self.rend += n;
        Poll::Ready(Ok(n))
    }

    fn on_stream_frame(&mut self, h: Header, on_inbound: &mut dyn FnMut(Stream)) -> Result<(), MuxError> {
        if h.id == 0 {
            return Err(MuxError::Protocol("stream frame on stream 0"));
        }
        let data_len = if h.kind == TYPE_DATA { h.len as usize } else { 0 };
        let mut conn = lock(&self.shared.state);
        let known = conn.streams.get(&h.id).cloned();
        let stream = match known {
            Some(s) if h.flags & SYN != 0 => {
                drop(s);
                return Err(MuxError::Protocol("SYN for an open stream"));
            }
            Some(s) => {
                drop(conn);
                s
            }
            None if h.flags & SYN != 0 => {
                let ours = match self.mode {
                    Mode::Client => !h.id.is_multiple_of(2),
                    Mode::Server => h.id.is_multiple_of(2),
                };
                if ours {
                    return Err(MuxError::Protocol("SYN with an id of ours"));
                }
                if conn.closing.is_some() || conn.streams.len() >= self.shared.config.max_streams {
                    Header { kind: TYPE_WINDOW_UPDATE, flags: RST, id: h.id, len: 0 }.put(&mut conn.out);
                    drop(conn);
                    self.skip(data_len);
                    return Ok(());
                }
                let flags_out = if self.shared.config.ack_at_once {
                    Header { kind: TYPE_WINDOW_UPDATE, flags: ACK, id: h.id, len: 0 }.put(&mut conn.out);
                    0
                } else {
                    ACK
                };
                let shared = Arc::new(StreamShared { state: Mutex::new(StreamState::new(flags_out)) });
                conn.streams.insert(h.id, shared.clone());
                drop(conn);
                on_inbound(Stream { id: h.id, shared: shared.clone(), conn: self.shared.clone() });
                shared
            }
            None => {
                // A stream that is gone (or never was): drop its frames.
                drop(conn);
                self.skip(data_len);
                return Ok(());
            }
        };
        let mut st = lock(&stream.state);
        if h.kind == TYPE_WINDOW_UPDATE {
            st.send = st.send.checked_add(h.len).ok_or(MuxError::Protocol("send window overflow"))?;
            if let Some(w) = st.write_waker.take() {
                w.wake();
            }
        }
        if data_len > 0 {
            if h.len > st.credit {
                return Err(MuxError::Protocol("data beyond the receive window"));
            }
            st.credit -= h.len;
            let keep = !st.dropped && !st.reset && !st.remote_fin;
            if !keep && st.dropped && !st.reset {
                // Data for a stream we let go of: stop the peer.
                st.reset = true;
                let mut conn = lock(&self.shared.state);
                Header { kind: TYPE_WINDOW_UPDATE, flags: RST, id: h.id, len: 0 }.put(&mut conn.out);
                self.shared.remove(&mut conn, h.id, &mut st);
            }
            drop(st);
            self.inbound =
                Some(Inbound { stream: keep.then_some(stream), id: h.id, remaining: data_len, flags: h.flags });
            return Ok(());
        }
        self.apply_end_flags(h.id, h.flags, &mut st);
        Ok(())
    }

    /// The payload of a data frame is in: apply its FIN or RST.
    fn finish_data(&mut self, inbound: Inbound) {
        if let Some(stream) = inbound.stream {
            let mut st = lock(&stream.state);
            self.apply_end_flags(inbound.id, inbound.flags, &mut st);
        } else if inbound.flags & (FIN | RST) != 0 {
            let found = lock(&self.shared.state).streams.get(&inbound.id).cloned();
            if let Some(stream) = found {
                let mut st = lock(&stream.state);
                self.apply_end_flags(inbound.id, inbound.flags, &mut st);
            }
        }
    }

    fn apply_end_flags(&self, id: u32, flags: u16, st: &mut StreamState) {
        if flags & (FIN | RST) == 0 {
            return;
        }
        if flags & RST != 0 {
            st.reset = true;
        }
        if flags & FIN != 0 {
            st.remote_fin = true;
        }
        st.wake_all();
        if st.dropped && st.finished() {
            let mut conn = lock(&self.shared.state);
            self.shared.remove(&mut conn, id, st);
        }
    }

    /// Drops `n` payload bytes.
    fn skip(&mut self, n: usize) {
        if n > 0 {
            self.inbound = Some(Inbound { stream: None, id: 0, remaining: n, flags: 0 });
        }
    }

    /// Queues a go-away for a protocol error (sent if the socket still
    /// takes it).
    pub fn go_away_protocol_error(&mut self) {
        let mut conn = lock(&self.shared.state);
        Header { kind: TYPE_GO_AWAY, flags: 0, id: 0, len: GO_AWAY_PROTOCOL_ERROR }.put(&mut conn.out);
    }
}

impl<T> Drop for Connection<T> {
    fn drop(&mut self) {
        let streams = {
            let mut conn = lock(&self.shared.state);
            conn.closed = true;
            conn.out = Vec::new();
            for w in conn.out_waiters.drain(..) {
                w.wake();
            }
            std::mem::take(&mut conn.streams)
        };
        for s in streams.into_values() {
            let mut st = lock(&s.state);
            // Reads still get what arrived, and EOF after a FIN (a read
            // looks at the peer's FIN before a reset); writes fail, also
            // those waiting for credit that will never come.
            st.reset = true;
            st.wake_all();
        }
        if !self.rbuf.is_empty() {
            buffers::give_read(std::mem::take(&mut self.rbuf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::sync::mpsc;
    use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

    fn config() -> MuxConfig {
        MuxConfig { max_streams: 8, window_growth: 64 * 1024 * 1024, split_send: 48 * 1024, ack_at_once: false }
    }

    type Ended = tokio::task::JoinHandle<Result<(), MuxError>>;

    /// A connection over `io` on its own task; inbound streams come out of
    /// the receiver.
    fn run(io: DuplexStream, mode: Mode, config: MuxConfig) -> (Control, mpsc::UnboundedReceiver<Stream>, Ended) {
        let (mut conn, control) = Connection::<Compat<DuplexStream>>::new(io.compat(), mode, config);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut on_inbound = move |s: Stream| {
                let _ = tx.send(s);
            };
            poll_fn(|cx| conn.poll(cx, &mut on_inbound)).await
        });
        (control, rx, task)
    }

    /// Waits (at most 5 s) until `check` holds: the connection tasks act
    /// on a drop when they next run.
    async fn eventually(what: &str, check: impl Fn() -> bool) {
        for _ in 0..500 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not within 5 s: {what}");
    }

    fn frame(kind: u8, flags: u16, id: u32, len: u32) -> Vec<u8> {
        let mut out = Vec::new();
        Header { kind, flags, id, len }.put(&mut out);
        out
    }

    async fn read_header(raw: &mut DuplexStream) -> Header {
        let mut b = [0u8; HEADER_LEN];
        tokio::time::timeout(Duration::from_secs(5), raw.read_exact(&mut b)).await.unwrap().unwrap();
        Header::parse(&b).unwrap()
    }

    #[test]
    fn headers_round_trip_and_unknown_versions_and_types_are_refused() {
        let h = Header { kind: TYPE_WINDOW_UPDATE, flags: SYN | ACK, id: 0x0102_0304, len: 0x0a0b_0c0d };
        let mut out = Vec::new();
        h.put(&mut out);
        assert_eq!(&out[..], &[0, 1, 0, 3, 1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d]);
        let raw: [u8; HEADER_LEN] = out[..].try_into().unwrap();
        assert_eq!(Header::parse(&raw).unwrap(), h);
        let mut bad = raw;
        bad[0] = 1;
        assert!(matches!(Header::parse(&bad), Err(MuxError::Protocol(_))));
        let mut bad = raw;
        bad[1] = 4;
        assert!(matches!(Header::parse(&bad), Err(MuxError::Protocol(_))));
    }

    #[tokio::test]
    async fn streams_carry_megabytes_both_ways_and_half_close_keeps_the_other_direction() {
        let (a, b) = tokio::io::duplex(256 * 1024);
        let (client, _client_in, _ct) = run(a, Mode::Client, config());
        let (server, mut server_in, _st) = run(b, Mode::Server, config());
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();

        let mut s = client.open().unwrap();
        assert_eq!(s.id(), 1);
        let upload = payload.clone();
        let writer = tokio::spawn(async move {
            s.write_all(&upload).await.unwrap();
            s.shutdown().await.unwrap();
            // Our direction is done; the answer still comes.
            let mut back = Vec::new();
            s.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut peer = server_in.recv().await.unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert!(got == payload, "bytes differ");
        peer.write_all(&payload).await.unwrap();
        peer.shutdown().await.unwrap();
        assert!(writer.await.unwrap() == payload, "answer differs");
        drop(peer);
        // Both ends forget streams both sides closed and dropped.
        eventually("both ends forget the stream", || client.streams() == 0 && server.streams() == 0).await;
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_buffers_after_traffic() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (client, _ci, _ct) = run(a, Mode::Client, config());
        let (_server, mut server_in, _st) = run(b, Mode::Server, config());
        let mut s = client.open().unwrap();
        s.write_all(&[1u8; 100_000]).await.unwrap();
        let mut peer = server_in.recv().await.unwrap();
        let mut got = vec![0u8; 100_000];
        peer.read_exact(&mut got).await.unwrap();
        drop((s, peer));
        eventually("no buffer and no stream held", || {
            let conn = lock(&client.conn.state);
            (conn.out.capacity(), conn.streams.len()) == (0, 0)
        })
        .await;
    }

    #[tokio::test]
    async fn the_server_opens_even_streams_and_the_client_accepts_them() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (_client, mut client_in, _ct) = run(a, Mode::Client, config());
        let (server, _server_in, _st) = run(b, Mode::Server, config());
        let mut s = server.open().unwrap();
        assert_eq!(s.id(), 2);
        s.write_all(b"ping").await.unwrap();
        let mut peer = client_in.recv().await.unwrap();
        let mut buf = [0u8; 4];
        peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        peer.write_all(b"pong").await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    }

    #[tokio::test]
    async fn a_fast_reader_gets_a_bigger_window_and_it_is_given_back() {
        let (a, b) = tokio::io::duplex(1024 * 1024);
        let (client, _ci, _ct) = run(a, Mode::Client, config());
        let (server, mut server_in, _st) = run(b, Mode::Server, config());
        let mut s = client.open().unwrap();
        let writer = tokio::spawn(async move {
            let chunk = vec![7u8; 64 * 1024];
            for _ in 0..256 {
                s.write_all(&chunk).await.unwrap();
            }
            s.shutdown().await.unwrap();
            s
        });
        let mut peer = server_in.recv().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        loop {
            let n = peer.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            total += n;
        }
        assert_eq!(total, 16 * 1024 * 1024);
        let window = lock(&peer.shared.state).window;
        assert!(window > INITIAL_WINDOW, "window stayed at {window}");
        assert!(lock(&server.conn.state).grown > 0);
        drop(writer.await.unwrap());
        drop(peer);
        eventually("growth given back with the stream", || lock(&server.conn.state).grown == 0).await;
    }

    #[tokio::test]
    async fn dropping_an_open_stream_resets_it_and_after_the_peers_fin_finishes_it() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (client, _ci, _ct) = run(a, Mode::Client, config());
        let (_server, mut server_in, _st) = run(b, Mode::Server, config());

        let mut s = client.open().unwrap();
        s.write_all(b"x").await.unwrap();
        let mut peer = server_in.recv().await.unwrap();
        drop(s);
        let mut buf = [0u8; 8];
        assert_eq!(peer.read(&mut buf).await.unwrap(), 1);
        let err = peer.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert!(peer.write_all(b"late").await.is_err());

        let mut s = client.open().unwrap();
        s.shutdown().await.unwrap();
        let mut peer = server_in.recv().await.unwrap();
        assert_eq!(peer.read(&mut buf).await.unwrap(), 0, "the FIN opened it and ended it");
        drop(peer);
        // The peer finished ours when it let go after our FIN: EOF, not reset.
        assert_eq!(s.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn pings_are_answered_and_frames_for_unknown_streams_are_dropped() {
        let (mut raw, b) = tokio::io::duplex(64 * 1024);
        let (_server, mut server_in, _st) = run(b, Mode::Server, config());
        raw.write_all(&frame(TYPE_PING, SYN, 0, 0xdead_beef)).await.unwrap();
        assert_eq!(read_header(&mut raw).await, Header { kind: TYPE_PING, flags: ACK, id: 0, len: 0xdead_beef });
        // Data for a stream that never opened, then a real open: the first
        // is skipped, the second arrives.
        let mut bytes = frame(TYPE_DATA, 0, 9, 3);
        bytes.extend_from_slice(b"abc");
        bytes.extend(frame(TYPE_DATA, SYN, 11, 2));
        bytes.extend_from_slice(b"ok");
        raw.write_all(&bytes).await.unwrap();
        let mut s = server_in.recv().await.unwrap();
        assert_eq!(s.id(), 11);
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ok");
        // Its first answer carries ACK.
        s.write_all(b"yes").await.unwrap();
        assert_eq!(read_header(&mut raw).await, Header { kind: TYPE_DATA, flags: ACK, id: 11, len: 3 });
    }

    #[tokio::test]
    async fn with_ack_at_once_a_new_stream_is_acknowledged_before_any_answer() {
        let (mut raw, a) = tokio::io::duplex(64 * 1024);
        let (_client, mut client_in, _ct) = run(a, Mode::Client, MuxConfig { ack_at_once: true, ..config() });
        raw.write_all(&frame(TYPE_WINDOW_UPDATE, SYN, 2, 0)).await.unwrap();
        assert_eq!(read_header(&mut raw).await, Header { kind: TYPE_WINDOW_UPDATE, flags: ACK, id: 2, len: 0 });
        let mut s = client_in.recv().await.unwrap();
        s.write_all(b"no flags now").await.unwrap();
        assert_eq!(read_header(&mut raw).await, Header { kind: TYPE_DATA, flags: 0, id: 2, len: 12 });
    }

    #[tokio::test]
    async fn opens_beyond_the_stream_limit_are_reset_and_refused() {
        let (mut raw, b) = tokio::io::duplex(64 * 1024);
        let limited = MuxConfig { max_streams: 2, ..config() };
        let (server, mut server_in, _st) = run(b, Mode::Server, limited);
        for id in [1u32, 3, 5] {
            raw.write_all(&frame(TYPE_WINDOW_UPDATE, SYN, id, 0)).await.unwrap();
        }
        assert_eq!(read_header(&mut raw).await, Header { kind: TYPE_WINDOW_UPDATE, flags: RST, id: 5, len: 0 });
        let (first, second) = (server_in.recv().await.unwrap(), server_in.recv().await.unwrap());
        assert_eq!((first.id(), second.id()), (1, 3));
        assert!(matches!(server.open(), Err(MuxError::TooManyStreams)));
    }

    #[tokio::test]
    async fn protocol_violations_end_the_connection() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("data beyond the window", {
                let mut b = frame(TYPE_DATA, SYN, 1, INITIAL_WINDOW + 1);
                b.extend(vec![0u8; INITIAL_WINDOW as usize + 1]);
                b
            }),
            ("SYN with our parity", frame(TYPE_WINDOW_UPDATE, SYN, 2, 0)),
            ("duplicate SYN", [frame(TYPE_WINDOW_UPDATE, SYN, 1, 0), frame(TYPE_WINDOW_UPDATE, SYN, 1, 0)].concat()),
            ("stream frame on stream 0", frame(TYPE_DATA, 0, 0, 0)),
            ("window overflow", [frame(TYPE_WINDOW_UPDATE, SYN, 1, u32::MAX)].concat()),
            ("bad version", {
                let mut b = frame(TYPE_DATA, SYN, 1, 0);
                b[0] = 2;
                b
            }),
        ];
        for (what, bytes) in cases {
            let (mut raw, b) = tokio::io::duplex(1024 * 1024);
            let (_server, _server_in, ended) = run(b, Mode::Server, config());
            let _ = raw.write_all(&bytes).await;
            let end = tokio::time::timeout(Duration::from_secs(5), ended).await.unwrap().unwrap();
            assert!(matches!(end, Err(MuxError::Protocol(_))), "{what}: {end:?}");
        }
    }

    #[tokio::test]
    async fn a_writer_waiting_for_credit_fails_when_the_connection_ends() {
        let (mut raw, b) = tokio::io::duplex(1024 * 1024);
        let (_server, mut server_in, ended) = run(b, Mode::Server, config());
        // The peer opens a stream, sends "hi" and its FIN, and never
        // grants credit.
        let mut bytes = frame(TYPE_DATA, SYN | FIN, 1, 2);
        bytes.extend_from_slice(b"hi");
        raw.write_all(&bytes).await.unwrap();
        let mut s = server_in.recv().await.unwrap();
        let writer = tokio::spawn(async move {
            let r = s.write_all(&vec![0u8; INITIAL_WINDOW as usize + 1]).await;
            let mut got = Vec::new();
            let read = s.read_to_end(&mut got).await;
            (r, read.map(|_| got))
        });
        // The writer has used all its credit once the window's bytes are here.
        let mut sent = 0u32;
        while sent < INITIAL_WINDOW {
            let h = read_header(&mut raw).await;
            if h.kind == TYPE_DATA {
                let mut body = vec![0u8; h.len as usize];
                raw.read_exact(&mut body).await.unwrap();
                sent += h.len;
            }
        }
        assert_eq!(sent, INITIAL_WINDOW);
        drop(raw);
        let _ = tokio::time::timeout(Duration::from_secs(5), ended).await.unwrap();
        let (write, read) = tokio::time::timeout(Duration::from_secs(5), writer).await.unwrap().unwrap();
        assert_eq!(write.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(read.unwrap(), b"hi", "what arrived before the FIN is still read, then EOF");
    }

    #[tokio::test]
    async fn when_the_connection_ends_streams_fail_and_opens_are_refused() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (client, _ci, ct) = run(a, Mode::Client, config());
        let (_server, mut server_in, st) = run(b, Mode::Server, config());
        let mut s = client.open().unwrap();
        s.write_all(b"x").await.unwrap();
        let _peer = server_in.recv().await.unwrap();
        st.abort();
        let _ = st.await;
        let mut buf = [0u8; 4];
        let err = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert!(tokio::time::timeout(Duration::from_secs(5), ct).await.unwrap().unwrap().is_ok());
        assert!(client.is_closed());
        assert!(matches!(client.open(), Err(MuxError::Closed)));
    }
}
