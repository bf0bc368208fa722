//! The task that owns one yamux connection over a [`WsByteStream`].
//!
//! [`spawn`] starts it and returns a [`Handle`] (cheap to clone) through
//! which any task opens streams or closes the session, plus a join handle
//! that yields the [`SessionEnd`]. Streams the peer opens are passed to the
//! `on_inbound` callback, which is expected to spawn their handling.

use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::task::Poll;

use edgelink_protocol::close::CloseReason;

use crate::TunnelConfig;
use crate::mux::{Connection, Control, Mode, MuxError};
use crate::ws::{CloseInfo, Side, WsByteStream};

/// Longest a close may take before the session is dropped regardless.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A yamux stream with tokio's IO traits.
pub type TunnelStream = crate::mux::Stream;

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
    /// The session holds as many streams as it may.
    #[error("too many streams on the tunnel")]
    TooManyStreams,
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

/// Opens streams on, and closes, one tunnel session. The session closes
/// (as [`SessionEnd::Local`] without a reason) once every handle is gone.
#[derive(Clone, Debug)]
pub struct Handle {
    control: Control,
    info: Arc<CloseInfo>,
    _guard: Arc<LastHandle>,
}

/// Closes the session when the last [`Handle`] goes.
#[derive(Debug)]
struct LastHandle {
    control: Control,
    info: Arc<CloseInfo>,
}

impl Drop for LastHandle {
    fn drop(&mut self) {
        if self.control.close(None) {
            self.info.request_close();
            self.control.wake();
        }
    }
}

impl Handle {
    /// Opens a new stream to the peer. Nothing is sent until the stream is
    /// written to; its first frame opens it.
    pub async fn open_stream(&self) -> Result<TunnelStream, Error> {
        self.control.open().map_err(|e| match e {
            MuxError::TooManyStreams => Error::TooManyStreams,
            _ => Error::Closed,
        })
    }

    /// Asks the session to close, sending `code` and `reason` in the
    /// WebSocket Close frame. Returns at once; the join handle tells when it
    /// is done.
    pub fn close(&self, code: u16, reason: &str) {
        if self.control.close(Some((code, reason.to_owned()))) {
            self.info.set_local(code, reason);
            // The adapter sends the Close frame from its read side and
            // then reports end of stream, which ends the connection.
            self.info.request_close();
            self.control.wake();
        }
    }

    /// True once the session task has ended.
    pub fn is_closed(&self) -> bool {
        self.control.is_closed()
    }

    /// Streams the session holds now (both directions, until both ends
    /// have closed them).
    pub fn streams(&self) -> usize {
        self.control.streams()
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
    // The connection writes frames as they come and flushes; the adapter
    // frames what came until the flush as one WebSocket frame, and writes
    // to the socket once the session has nothing more to read, so a burst
    // of frames is one write.
    let bytes = WsByteStream::new(io, side, early, keepalive).defer_flush_to_reads();
    let info = bytes.close_info();
    let mode = match role {
        Role::Relay => Mode::Client,
        Role::Device => Mode::Server,
    };
    let (conn, control) = Connection::new(bytes, mode, config.mux_config(role));
    let handle = Handle {
        control: control.clone(),
        info: info.clone(),
        _guard: Arc::new(LastHandle { control: control.clone(), info: info.clone() }),
    };
    // A stream's wake of the connection while it is being polled is
    // polled again in place, not sent through the scheduler.
    let task = tokio::spawn(crate::repoll::Repoll::new(drive(conn, control, info, on_inbound)));
    Session { handle, ended: Ended(task) }
}

async fn drive<T, F>(mut conn: Connection<T>, control: Control, info: Arc<CloseInfo>, mut on_inbound: F) -> SessionEnd
where
    T: futures::AsyncRead + futures::AsyncWrite + Unpin,
    F: FnMut(TunnelStream),
{
    // Bounds how long a close may take when the peer does not read.
    let mut close_deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    poll_fn(|cx| {
        loop {
            if close_deadline.is_none() && control.closing().is_some() {
                close_deadline = Some(Box::pin(tokio::time::sleep(CLOSE_TIMEOUT)));
            }
            if let Some(deadline) = close_deadline.as_mut()
                && deadline.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(SessionEnd::Local(control.closing().flatten()));
            }
            match conn.poll(cx, &mut on_inbound) {
                Poll::Ready(result) => {
                    return Poll::Ready(match control.closing() {
                        Some(reason) => SessionEnd::Local(reason),
                        None => ended(&info, result.err()),
                    });
                }
                // A close asked for while the connection was polled starts
                // its deadline now.
                Poll::Pending if close_deadline.is_none() && control.closing().is_some() => {}
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

/// Why the connection ended, from what the adapter saw and the
/// connection's error.
fn ended(info: &CloseInfo, error: Option<MuxError>) -> SessionEnd {
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
        Some(MuxError::Protocol(what)) => {
            tracing::debug!(what, "tunnel peer broke the yamux rules");
            SessionEnd::Violation(Violation::Yamux)
        }
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
