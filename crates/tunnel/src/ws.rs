//! A WebSocket as a byte stream.
//!
//! Binary messages carry the bytes; message boundaries mean nothing. Pings
//! and pongs are consumed here (never surfaced as a zero-length read, which
//! yamux would take for end of stream). A Close frame is end of stream and
//! its code is kept in [`CloseInfo`]. A Text message is a protocol error.
//!
//! The adapter also keeps the connection honest: it sends a ping every
//! `ping_interval` and fails the read side with `TimedOut` when nothing has
//! arrived for `idle_timeout`. It can do that from `poll_read` because yamux
//! polls the read side for as long as the session lives.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use edgelink_protocol::limits::MAX_WRITE_CHUNK;
use futures::{AsyncRead, AsyncWrite, Sink, Stream};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::session::Violation;

/// Close codes and reasons exchanged on one connection, shared between the
/// adapter (which the yamux task owns) and whoever wants to set or read them.
#[derive(Debug, Default)]
pub struct CloseInfo {
    inner: Mutex<CloseState>,
}

#[derive(Debug, Default)]
struct CloseState {
    /// What we send in our Close frame, if set before closing.
    local: Option<(u16, String)>,
    /// A close was requested: the read side sends the Close frame and then
    /// reports end of stream, which ends the yamux session above.
    requested: bool,
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
        if let Ok(mut s) = self.inner.lock() {
            s.requested = true;
        }
    }

    fn close_requested(&self) -> bool {
        self.inner.lock().map(|s| s.requested).unwrap_or(false)
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
    ping_due: bool,
    flush_due: bool,
}

/// A WebSocket connection seen as a `futures::io` byte stream.
pub struct WsByteStream<S> {
    ws: WebSocketStream<S>,
    /// Bytes of the current Binary message not yet handed to the reader.
    pending: Bytes,
    /// Written bytes not yet sent: they become one Binary message at the
    /// next flush (yamux flushes after each frame, so one frame is one
    /// message). Allocated on demand and handed over on send, so an idle
    /// tunnel holds no write buffer.
    outgoing: BytesMut,
    keepalive: Option<Keepalive>,
    close: Arc<CloseInfo>,
    close_sent: bool,
    eof: bool,
    /// Whether `poll_flush` may leave the socket flush to the read side
    /// (true when a yamux session, which always polls reads, drives this).
    defer_flush: bool,
    /// Messages were handed to tungstenite but not yet flushed to the
    /// socket. yamux flushes after every frame; the real flush waits until
    /// the read side has nothing more (the session is about to go idle),
    /// so all frames of one busy moment leave in one socket write.
    unflushed: bool,
}

impl<S> WsByteStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    /// Wraps `ws`. With `keepalive`, pings are sent every `.0` and the read
    /// side fails when nothing arrived for `.1`.
    pub fn new(ws: WebSocketStream<S>, keepalive: Option<(Duration, Duration)>) -> Self {
        let keepalive = keepalive.map(|(every, idle_timeout)| {
            let mut ticker = tokio::time::interval_at(Instant::now() + every, every);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            Keepalive { ticker, idle_timeout, last_rx: Instant::now(), ping_due: false, flush_due: false }
        });
        WsByteStream {
            ws,
            pending: Bytes::new(),
            outgoing: BytesMut::new(),
            keepalive,
            close: Arc::new(CloseInfo::default()),
            close_sent: false,
            eof: false,
            defer_flush: false,
            unflushed: false,
        }
    }

    /// Lets `poll_flush` leave the socket flush to the next `poll_read`
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

    /// Runs the keepalive: sends a due ping, and fails when the peer has
    /// been silent past the bound. Never returns Pending by itself.
    fn poll_keepalive(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(ka) = self.keepalive.as_mut() else {
            return Ok(());
        };
        while ka.ticker.poll_tick(cx).is_ready() {
            if ka.last_rx.elapsed() > ka.idle_timeout {
                self.close.set_timed_out();
                return Err(io::Error::new(io::ErrorKind::TimedOut, "peer silent past idle timeout"));
            }
            ka.ping_due = true;
        }
        if ka.ping_due {
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    Pin::new(&mut self.ws).start_send(Message::Ping(Bytes::new())).map_err(ws_err)?;
                    ka.ping_due = false;
                    ka.flush_due = true;
                }
                Poll::Ready(Err(e)) => return Err(ws_err(e)),
                Poll::Pending => {}
            }
        }
        if ka.flush_due {
            match Pin::new(&mut self.ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => ka.flush_due = false,
                Poll::Ready(Err(e)) => return Err(ws_err(e)),
                Poll::Pending => {}
            }
        }
        Ok(())
    }
}

impl<S> WsByteStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    /// Writes everything tungstenite holds to the socket.
    fn poll_flush_socket(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(Pin::new(&mut self.ws).poll_flush(cx)).map_err(ws_err)?;
        self.unflushed = false;
        Poll::Ready(Ok(()))
    }

    /// Hands the coalesced bytes to tungstenite as one Binary message.
    fn poll_send_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.outgoing.is_empty() {
            return Poll::Ready(Ok(()));
        }
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(ws_err)?;
        // Hand over the whole buffer, spare capacity included: keeping the
        // spare part here would pin the allocation for an idle tunnel.
        let message = Message::Binary(std::mem::take(&mut self.outgoing).freeze());
        Pin::new(&mut self.ws).start_send(message).map_err(ws_err)?;
        self.unflushed = true;
        Poll::Ready(Ok(()))
    }

    /// Sends our Close frame once (with the local reason if one was set)
    /// and flushes it. Errors mean the peer is already gone, which is what
    /// closing wants anyway, so they are not reported.
    fn poll_send_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.close_sent {
            if ready!(Pin::new(&mut self.ws).poll_ready(cx)).is_ok() {
                let frame = self
                    .close
                    .take_local()
                    .map(|(code, reason)| CloseFrame { code: CloseCode::from(code), reason: reason.into() });
                let _ = Pin::new(&mut self.ws).start_send(Message::Close(frame));
            }
            self.close_sent = true;
        }
        let _ = ready!(Pin::new(&mut self.ws).poll_flush(cx));
        Poll::Ready(Ok(()))
    }
}

fn ws_err(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "websocket closed")
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<S> AsyncRead for WsByteStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.eof && this.close.close_requested() {
            ready!(this.poll_send_close(cx))?;
            this.pending = Bytes::new();
            // Finish the closing handshake: wait for the peer's Close (or
            // the end of the connection), discarding data in between, so
            // the peer gets to read our reason before the socket goes.
            loop {
                match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
            this.eof = true;
            return Poll::Ready(Ok(0));
        }
        this.poll_keepalive(cx)?;
        loop {
            if !this.pending.is_empty() {
                let n = buf.len().min(this.pending.len());
                buf[..n].copy_from_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(n));
            }
            if this.eof {
                return Poll::Ready(Ok(0));
            }
            let next = match Pin::new(&mut this.ws).poll_next(cx) {
                Poll::Ready(next) => next,
                Poll::Pending => {
                    // Nothing more to read: the writer side is done for
                    // this round too, so push out what it queued.
                    if this.unflushed {
                        ready!(this.poll_flush_socket(cx))?;
                    }
                    return Poll::Pending;
                }
            };
            let msg = match next {
                None => {
                    this.eof = true;
                    return Poll::Ready(Ok(0));
                }
                Some(Err(e)) => {
                    // The peer going away (even abruptly) is not a
                    // violation; malformed frames are.
                    let gone = matches!(
                        e,
                        tungstenite::Error::Io(_)
                            | tungstenite::Error::ConnectionClosed
                            | tungstenite::Error::AlreadyClosed
                            | tungstenite::Error::Protocol(
                                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake
                            )
                    );
                    if !gone {
                        this.close.set_violation(Violation::WebSocket);
                    }
                    return Poll::Ready(Err(ws_err(e)));
                }
                Some(Ok(m)) => m,
            };
            if let Some(ka) = this.keepalive.as_mut() {
                ka.last_rx = Instant::now();
            }
            match msg {
                Message::Binary(b) => this.pending = b,
                // Control frames are not data: keep polling instead of
                // returning an empty read (which means EOF to the reader).
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                Message::Close(frame) => {
                    if let Some(f) = frame {
                        this.close.set_remote(u16::from(f.code), f.reason.to_string());
                    }
                    // tungstenite queued the Close reply; push it out now so
                    // the peer's closing handshake completes.
                    let _ = Pin::new(&mut this.ws).poll_flush(cx);
                    this.eof = true;
                }
                Message::Text(_) => {
                    this.close.set_violation(Violation::TextMessage);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text message on a binary tunnel",
                    )));
                }
            }
        }
    }
}

impl<S> AsyncWrite for WsByteStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.outgoing.len() >= MAX_WRITE_CHUNK {
            ready!(this.poll_send_outgoing(cx))?;
        }
        let n = buf.len().min(MAX_WRITE_CHUNK - this.outgoing.len());
        if this.outgoing.capacity() == 0 {
            this.outgoing.reserve(n.max(4096));
        }
        this.outgoing.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_outgoing(cx))?;
        if this.defer_flush {
            // The read side flushes when it runs dry (see `unflushed`).
            return Poll::Ready(Ok(()));
        }
        this.poll_flush_socket(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Data written before the close still goes out; a peer that is
        // already gone makes this fail, which closing does not care about.
        let _ = ready!(this.poll_send_outgoing(cx));
        ready!(this.poll_send_close(cx))?;
        match ready!(Pin::new(&mut this.ws).poll_close(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(ws_err(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{AsyncReadExt, AsyncWriteExt, SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::Role;

    async fn pair() -> (WebSocketStream<tokio::io::DuplexStream>, WebSocketStream<tokio::io::DuplexStream>) {
        let (a, b) = tokio::io::duplex(256 * 1024);
        let a = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let b = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
        (a, b)
    }

    #[tokio::test]
    async fn binary_messages_become_one_byte_stream_and_pings_are_skipped() {
        let (mut raw, server) = pair().await;
        let mut bytes = WsByteStream::new(server, None);
        raw.send(Message::Binary(Bytes::from_static(b"hel"))).await.unwrap();
        raw.send(Message::Ping(Bytes::new())).await.unwrap();
        raw.send(Message::Binary(Bytes::from_static(b"lo"))).await.unwrap();
        raw.send(Message::Close(None)).await.unwrap();
        let mut out = Vec::new();
        bytes.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"hello");
    }

    #[tokio::test]
    async fn text_message_is_a_protocol_error() {
        let (mut raw, server) = pair().await;
        let mut bytes = WsByteStream::new(server, None);
        raw.send(Message::text("nope")).await.unwrap();
        let mut buf = [0u8; 8];
        let err = bytes.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn close_code_is_recorded_both_ways() {
        let (client, server) = pair().await;
        let mut a = WsByteStream::new(client, None);
        let mut b = WsByteStream::new(server, None);
        b.close_info().set_local(4001, "closed_by_operator");
        b.close_info().request_close();
        let info_a = a.close_info();
        let closer = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            b.read(&mut buf).await
        });
        let mut out = Vec::new();
        a.read_to_end(&mut out).await.unwrap();
        assert_eq!(closer.await.unwrap().unwrap(), 0);
        assert_eq!(info_a.remote(), Some((4001, "closed_by_operator".to_owned())));
    }

    #[tokio::test]
    async fn writes_arrive_as_binary_messages() {
        let (mut raw, server) = pair().await;
        let mut bytes = WsByteStream::new(server, None);
        bytes.write_all(b"abc").await.unwrap();
        bytes.flush().await.unwrap();
        match raw.next().await.unwrap().unwrap() {
            Message::Binary(b) => assert_eq!(&b[..], b"abc"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn writes_until_a_flush_become_one_message() {
        let (mut raw, server) = pair().await;
        let mut bytes = WsByteStream::new(server, None);
        bytes.write_all(b"header").await.unwrap();
        bytes.write_all(b"+body").await.unwrap();
        bytes.flush().await.unwrap();
        bytes.write_all(&vec![1u8; MAX_WRITE_CHUNK + 10]).await.unwrap();
        bytes.flush().await.unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            match raw.next().await.unwrap().unwrap() {
                Message::Binary(b) => got.push(b),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(&got[0][..], b"header+body");
        assert_eq!(got[1].len(), MAX_WRITE_CHUNK);
        assert_eq!(got[2].len(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_peer_times_out_within_the_bound() {
        let (_raw, server) = pair().await;
        let mut bytes = WsByteStream::new(server, Some((Duration::from_secs(1), Duration::from_secs(3))));
        let info = bytes.close_info();
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let err = bytes.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(info.timed_out());
        assert!(started.elapsed() <= Duration::from_secs(4), "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn pings_keep_a_responsive_peer_alive() {
        let (client, server) = pair().await;
        // The peer only reads (tungstenite answers pings while reading).
        let peer = tokio::spawn(async move {
            let mut c = client;
            while let Some(Ok(_)) = c.next().await {}
        });
        let mut bytes = WsByteStream::new(server, Some((Duration::from_secs(1), Duration::from_secs(3))));
        let mut buf = [0u8; 8];
        let res = tokio::time::timeout(Duration::from_secs(20), bytes.read(&mut buf)).await;
        assert!(res.is_err(), "read should still be pending, got {res:?}");
        peer.abort();
    }
}
