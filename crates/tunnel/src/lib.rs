//! The tunnel transport: a WebSocket carried as a byte stream, with a yamux
//! session on top.
//!
//! This crate is the only place that knows about WebSocket framing and yamux,
//! including both ends of the upgrade handshake. It knows nothing about
//! tokens, what streams carry, or the store: the relay hands [`accept`] a
//! request it has already authenticated, the agent hands [`dial`] a URL and
//! a token, and both get back a [`Session`]: a [`Handle`] to open streams
//! and a future of the typed [`SessionEnd`].
//!
//! # Layout
//! * [`handshake`]: [`accept`] (relay) and [`dial`] (device), with typed
//!   refusals.
//! * [`ws`]: [`ws::WsByteStream`], RFC 6455 framing of our own as a byte
//!   stream, with keepalive pings and an idle bound.
//! * [`session`]: the task that owns a yamux connection, and how a session
//!   ended ([`SessionEnd::close_reason`] maps it to docs/protocol.md §6).
//! * [`buffers`]: socket buffers held only while a tunnel is busy (idle
//!   tunnels cost little memory), reused per thread.
//! * [`TunnelConfig`]: timing and buffer settings shared by both ends.
//!
//! # Invariants
//! * One task owns and polls each yamux connection; everything else talks to
//!   it through [`session::Handle`].
//! * A silent peer is declared dead within `idle_timeout + ping_interval`.

pub mod buffers;
pub mod handshake;
mod repoll;
pub mod session;
pub mod ws;

use std::time::Duration;

pub use handshake::{AcceptError, DialError, Refusal, Upgrade, accept, dial};
pub use session::{Ended, Handle, Role, Session, SessionEnd, TunnelStream, Violation};
pub use ws::{CloseInfo, Side, WsByteStream};

/// Settings both ends of a tunnel use.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// How often a WebSocket ping is sent.
    pub ping_interval: Duration,
    /// The peer is declared dead when nothing (data, ping or pong) arrived
    /// for this long. Checked at each ping tick.
    pub idle_timeout: Duration,
    /// Streams one session may hold at once.
    pub max_streams: usize,
    /// Bytes beyond each stream's 256 KiB that the receive windows of busy
    /// streams may grow into, together: yamux doubles a stream's window
    /// while its sender runs out of credit within two round trips (bulk
    /// transfers), and only within this room. The connection's receive
    /// window is `max_streams × headroom × 256 KiB` plus this.
    pub window_growth: usize,
}

/// yamux's stream limit over `TunnelConfig::max_streams`.
pub const YAMUX_HEADROOM: usize = 4;

/// Socket read size of a busy tunnel ([`buffers`]).
pub const READ_AHEAD: usize = 64 * 1024;

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            ping_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            max_streams: edgelink_protocol::limits::MAX_STREAMS_PER_SESSION,
            window_growth: 64 * 1024 * 1024,
        }
    }
}

impl TunnelConfig {
    /// The yamux settings both ends use. yamux counts a stream until both
    /// ends have closed it, and ends the whole connection when an open
    /// goes beyond its limit; the relay keeps its own opens within
    /// `max_streams` and yamux gets [`YAMUX_HEADROOM`] times that, for
    /// streams one end has let go of and the other not yet.
    pub fn yamux_config(&self) -> yamux::Config {
        let mut cfg = yamux::Config::default();
        let streams = self.max_streams * YAMUX_HEADROOM;
        // The window must be set before the stream count can be lowered or
        // raised: each setter asserts window >= streams * 256 KiB. Every
        // stream's 256 KiB, plus room for grown windows: without the
        // room (as when the limit was exactly streams × 256 KiB) no window
        // can grow and a bulk stream is held to 256 KiB per round trip.
        let window = streams * 256 * 1024 + self.window_growth;
        cfg.set_max_connection_receive_window(Some(window));
        cfg.set_max_num_streams(streams);
        cfg.set_split_send_size(edgelink_protocol::limits::SPLIT_SEND_SIZE);
        cfg
    }
}
