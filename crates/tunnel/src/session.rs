//! The task that owns one yamux connection over a [`WsByteStream`].
//!
//! [`spawn`] starts it and returns a [`Handle`] (cheap to clone) through
//! which any task opens streams or closes the session, plus a join handle
//! that yields the [`SessionEnd`]. Streams the peer opens are passed to the
//! `on_inbound` callback, which is expected to spawn their handling.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::task::Poll;

use edgelink_protocol::close::CloseReason;
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

use crate::TunnelConfig;
use crate::ws::{CloseInfo, Side, WsByteStream};

/// Longest a close may take before the session is dropped regardless.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A yamux stream with tokio's IO traits.
pub type TunnelStream = Compat<yamux::Stream>;

/// Which end of the tunnel this is. The relay opens odd-numbered streams
/// (yamux client); the device answers them (yamux server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The relay: yamux client.
    Relay,
    /// The device: yamux server.
    Device,
}

/// Errors from a session handle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The session is closed or closing; no stream can be opened.
    #[error("tunnel session is closed")]
    Closed,
    /// yamux refused to open a stream.
    #[error("yamux: {0}")]
    Yamux(#[from] yamux::ConnectionError),
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// We closed it, with this code and reason (or without one).
    Local(Option<(u16, String)>),
    /// The peer sent a Close frame with this code and reason.
    Remote(u16, String),
    /// The peer stopped answering within the idle bound.
    TimedOut,
    /// The connection ended without a Close frame: the peer vanished, the
    /// socket was reset, or the session task itself failed.
    Lost,
    /// The peer broke the protocol; the session was ended for it.
    Violation(Violation),
}

/// How a peer broke the tunnel protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A Text message on the binary tunnel.
    TextMessage,
    /// A malformed WebSocket frame (bad opcode, masking, size, UTF-8 in a
    /// Close reason…).
    WebSocket,
    /// Bytes that are not yamux, or yamux used against its rules.
    Yamux,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Violation::TextMessage => "text message on a binary tunnel",
            Violation::WebSocket => "malformed websocket frame",
            Violation::Yamux => "malformed or illegal yamux frame",
        })
    }
}

impl SessionEnd {
    /// The registry's close reason for this end (docs/protocol.md §6): the
    /// one place where session ends become close reasons.
    pub fn close_reason(&self) -> CloseReason {
        match self {
            SessionEnd::Local(Some((code, _))) => {
                CloseReason::from_code(*code).unwrap_or(CloseReason::ClosedByOperator)
            }
            SessionEnd::Local(None) => CloseReason::Shutdown,
            SessionEnd::Remote(..) | SessionEnd::Lost => CloseReason::Disconnected,
            SessionEnd::TimedOut => CloseReason::Timeout,
            SessionEnd::Violation(_) => CloseReason::ProtocolError,
        }
    }

    /// The relay's reason when the peer closed with one of the codes of
    /// docs/protocol.md §6.
    pub fn remote_reason(&self) -> Option<CloseReason> {
        match self {
            SessionEnd::Remote(code, _) => CloseReason::from_code(*code),
            _ => None,
        }
    }
}

/// A running tunnel session: the handle to use it and the future of its end.
#[derive(Debug)]
pub struct Session {
    /// Opens streams and closes the session; cheap to clone.
    pub handle: Handle,
    /// Resolves once the session has ended.
    pub ended: Ended,
}

/// The end of a session, as a future. A session task that panicked ends
/// as [`SessionEnd::Lost`].
#[derive(Debug)]
pub struct Ended(tokio::task::JoinHandle<SessionEnd>);

impl Future for Ended {
    type Output = SessionEnd;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<SessionEnd> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|r| r.unwrap_or(SessionEnd::Lost))
    }
}

enum Command {
    Open(oneshot::Sender<Result<yamux::Stream, Error>>),
    Close(Option<(u16, String)>),
}

/// Opens streams on, and closes, one tunnel session.
#[derive(Clone, Debug)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
}

impl Handle {
    /// Opens a new stream to the peer. Waits while yamux has too many
    /// unacknowledged streams.
    pub async fn open_stream(&self) -> Result<TunnelStream, Error> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Open(tx)).await.map_err(|_| Error::Closed)?;
        let stream = rx.await.map_err(|_| Error::Closed)??;
        Ok(stream.compat())
    }

    /// Asks the session to close, sending `code` and `reason` in the
    /// WebSocket Close frame. Returns at once; the join handle tells when it
    /// is done.
    pub fn close(&self, code: u16, reason: &str) {
        let _ = self.tx.try_send(Command::Close(Some((code, reason.to_owned()))));
    }

    /// True once the session task has ended.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Starts the task that drives a yamux session over `io`, a connection
/// that has just switched to WebSocket (the relay is the WebSocket server,
/// the device its client); `early` holds bytes the peer sent right after
/// the handshake answer, read together with it. The relay and the agent
/// get here through [`crate::accept`] and [`crate::dial`].
///
/// `on_inbound` is called on the session task for every stream the peer
/// opens; it must not block (spawn the handling).
pub fn spawn<S, F>(io: S, early: &[u8], role: Role, config: &TunnelConfig, on_inbound: F) -> Session
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: FnMut(TunnelStream) + Send + 'static,
{
    let side = match role {
        Role::Relay => Side::Server,
        Role::Device => Side::Client,
    };
    let keepalive = Some((config.ping_interval, config.idle_timeout));
    let bytes = WsByteStream::new(io, side, early, keepalive).defer_flush_to_reads();
    let info = bytes.close_info();
    // yamux writes a frame's header and body separately and flushes after
    // each frame; the adapter frames what came until the flush as one
    // WebSocket frame, and writes to the socket once the session has
    // nothing more to read, so a burst of frames is one write.
    let socket = bytes;
    let mode = match role {
        Role::Relay => yamux::Mode::Client,
        Role::Device => yamux::Mode::Server,
    };
    let conn = yamux::Connection::new(socket, config.yamux_config(), mode);
    let (tx, rx) = mpsc::channel(64);
    let mut on_inbound = on_inbound;
    // yamux wakes its own task to yield; polled again in place, so that
    // does not cost a trip through the scheduler (and another worker).
    let driven = drive(conn, rx, info, move |s: yamux::Stream| on_inbound(s.compat()));
    let task = tokio::spawn(crate::repoll::Repoll::new(driven));
    Session { handle: Handle { tx }, ended: Ended(task) }
}

async fn drive<T, F>(
    mut conn: yamux::Connection<T>,
    mut rx: mpsc::Receiver<Command>,
    info: Arc<CloseInfo>,
    mut on_inbound: F,
) -> SessionEnd
where
    T: futures::AsyncRead + futures::AsyncWrite + Unpin,
    F: FnMut(yamux::Stream),
{
    let mut waiting: VecDeque<oneshot::Sender<Result<yamux::Stream, Error>>> = VecDeque::new();
    let mut closing: Option<Option<(u16, String)>> = None;
    // Bounds how long a close may take when the peer does not read.
    let mut close_deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let end = poll_fn(|cx| {
        loop {
            if let Some(deadline) = close_deadline.as_mut()
                && deadline.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(SessionEnd::Local(closing.clone().flatten()));
            }
            if closing.is_none() {
                let request = match rx.poll_recv(cx) {
                    Poll::Ready(Some(Command::Open(w))) => {
                        waiting.push_back(w);
                        continue;
                    }
                    Poll::Ready(Some(Command::Close(reason))) => reason,
                    // Every handle is gone: nobody can use this session.
                    Poll::Ready(None) => None,
                    Poll::Pending => {
                        if !waiting.is_empty() {
                            // Drive the connection first: yamux forgets
                            // dropped streams only while it is polled, and
                            // an open beyond its stream limit ends the
                            // whole connection.
                            if let Poll::Ready(end) = poll_inbound(&mut conn, cx, &info, &closing, &mut on_inbound) {
                                return Poll::Ready(end);
                            }
                        }
                        while !waiting.is_empty() {
                            match conn.poll_new_outbound(cx) {
                                Poll::Ready(res) => {
                                    if let Some(w) = waiting.pop_front() {
                                        // The requester may have given up; the
                                        // stream is then dropped, which resets it.
                                        let _ = w.send(res.map_err(Error::from));
                                    }
                                }
                                Poll::Pending => break,
                            }
                        }
                        return poll_inbound(&mut conn, cx, &info, &closing, &mut on_inbound);
                    }
                };
                if let Some((code, text)) = &request {
                    info.set_local(*code, text);
                }
                // The adapter sends the Close frame from its read side and
                // then reports end of stream, which ends the connection.
                info.request_close();
                closing = Some(request);
                close_deadline = Some(Box::pin(tokio::time::sleep(CLOSE_TIMEOUT)));
                continue;
            }
            return poll_inbound(&mut conn, cx, &info, &closing, &mut on_inbound);
        }
    })
    .await;
    for w in waiting {
        let _ = w.send(Err(Error::Closed));
    }
    end
}

/// Drives the connection by polling for inbound streams, until it is
/// pending or ended.
fn poll_inbound<T, F>(
    conn: &mut yamux::Connection<T>,
    cx: &mut std::task::Context<'_>,
    info: &CloseInfo,
    closing: &Option<Option<(u16, String)>>,
    on_inbound: &mut F,
) -> Poll<SessionEnd>
where
    T: futures::AsyncRead + futures::AsyncWrite + Unpin,
    F: FnMut(yamux::Stream),
{
    loop {
        match conn.poll_next_inbound(cx) {
            Poll::Ready(Some(Ok(stream))) => {
                // While closing, new streams are refused by dropping them.
                if closing.is_none() {
                    on_inbound(stream);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                return Poll::Ready(match closing {
                    Some(reason) => SessionEnd::Local(reason.clone()),
                    None => ended(info, Some(e)),
                });
            }
            Poll::Ready(None) => {
                return Poll::Ready(match closing {
                    Some(reason) => SessionEnd::Local(reason.clone()),
                    None => ended(info, None),
                });
            }
            Poll::Pending => return Poll::Pending,
        }
    }
}

/// Why the connection ended, from what the adapter saw and yamux's error.
fn ended(info: &CloseInfo, error: Option<yamux::ConnectionError>) -> SessionEnd {
    if info.timed_out() {
        return SessionEnd::TimedOut;
    }
    if let Some(v) = info.violation() {
        return SessionEnd::Violation(v);
    }
    if let Some((code, reason)) = info.remote() {
        return SessionEnd::Remote(code, reason);
    }
    match error {
        // yamux reports the transport's read errors as decode errors too;
        // those are the connection going away, not bad frames.
        Some(yamux::ConnectionError::Decode(yamux::FrameDecodeError::Io(e))) => {
            tracing::debug!(error = %e, "tunnel connection lost");
            SessionEnd::Lost
        }
        Some(
            yamux::ConnectionError::Decode(_)
            | yamux::ConnectionError::TooManyStreams
            | yamux::ConnectionError::InvalidWindowUpdate,
        ) => SessionEnd::Violation(Violation::Yamux),
        Some(e) => {
            tracing::debug!(error = %e, "tunnel connection lost");
            SessionEnd::Lost
        }
        None => SessionEnd::Lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::Role as WsRole;

    async fn connected(config: &TunnelConfig) -> (Handle, Ended, Handle, Ended) {
        let (a, b) = tokio::io::duplex(1024 * 1024);
        let relay = spawn(a, &[], Role::Relay, config, |s| {
            tokio::spawn(echo(s));
        });
        let device = spawn(b, &[], Role::Device, config, |s| {
            tokio::spawn(echo(s));
        });
        (relay.handle, relay.ended, device.handle, device.ended)
    }

    async fn echo(mut s: TunnelStream) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = s.shutdown().await;
    }

    #[tokio::test]
    async fn streams_open_both_ways_and_carry_bytes() {
        let config = TunnelConfig::default();
        let (relay, _rt, device, _dt) = connected(&config).await;
        for h in [&relay, &device] {
            let mut s = h.open_stream().await.unwrap();
            let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            let (mut r, mut w) = tokio::io::split(&mut s);
            let send = async {
                w.write_all(&payload).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let recv = r.read_to_end(&mut got);
            let (_, n) = tokio::join!(send, recv);
            n.unwrap();
            assert_eq!(got, payload);
        }
    }

    #[tokio::test]
    async fn close_sends_code_to_peer() {
        let config = TunnelConfig::default();
        let (relay, relay_task, _device, device_task) = connected(&config).await;
        relay.close(4001, "closed_by_operator");
        assert_eq!(relay_task.await, SessionEnd::Local(Some((4001, "closed_by_operator".into()))));
        assert_eq!(device_task.await, SessionEnd::Remote(4001, "closed_by_operator".into()));
        assert!(matches!(relay.open_stream().await, Err(Error::Closed)));
    }

    #[tokio::test]
    async fn garbage_bytes_end_the_session_without_panicking() {
        let config = TunnelConfig::default();
        let (a, b) = tokio::io::duplex(64 * 1024);
        // The relay's side, as tungstenite: the device is the WebSocket client.
        let mut raw = WebSocketStream::from_raw_socket(a, WsRole::Server, None).await;
        let session = spawn(b, &[], Role::Device, &config, |_| {});
        use futures::SinkExt;
        raw.send(tokio_tungstenite::tungstenite::Message::Binary(bytes::Bytes::from_static(
            b"\xff\xff\xff\xff not a yamux header at all",
        )))
        .await
        .unwrap();
        let end = tokio::time::timeout(Duration::from_secs(5), session.ended).await.unwrap();
        assert_eq!(end, SessionEnd::Violation(Violation::Yamux));
        assert_eq!(end.close_reason(), CloseReason::ProtocolError);
    }

    #[tokio::test]
    async fn a_text_message_ends_the_session_as_a_violation() {
        let config = TunnelConfig::default();
        let (a, b) = tokio::io::duplex(64 * 1024);
        // The relay's side, as tungstenite: the device is the WebSocket client.
        let mut raw = WebSocketStream::from_raw_socket(a, WsRole::Server, None).await;
        let session = spawn(b, &[], Role::Device, &config, |_| {});
        use futures::SinkExt;
        raw.send(tokio_tungstenite::tungstenite::Message::text("hello")).await.unwrap();
        let end = tokio::time::timeout(Duration::from_secs(5), session.ended).await.unwrap();
        assert_eq!(end, SessionEnd::Violation(Violation::TextMessage));
    }

    #[tokio::test]
    async fn a_vanished_peer_is_lost_and_close_reasons_map_in_one_place() {
        let config = TunnelConfig::default();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let session = spawn(b, &[], Role::Device, &config, |_| {});
        drop(a);
        let end = tokio::time::timeout(Duration::from_secs(5), session.ended).await.unwrap();
        assert_eq!(end, SessionEnd::Lost);
        assert_eq!(end.close_reason(), CloseReason::Disconnected);
        assert_eq!(SessionEnd::TimedOut.close_reason(), CloseReason::Timeout);
        assert_eq!(SessionEnd::Local(Some((4000, "replaced".into()))).close_reason(), CloseReason::Replaced);
        assert_eq!(SessionEnd::Local(None).close_reason(), CloseReason::Shutdown);
        assert_eq!(SessionEnd::Remote(1000, String::new()).close_reason(), CloseReason::Disconnected);
        assert_eq!(SessionEnd::Remote(4002, "device_revoked".into()).remote_reason(), Some(CloseReason::DeviceRevoked));
    }
}
