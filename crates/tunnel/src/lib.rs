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
//! * [`mux`]: yamux of our own (hashicorp's wire format), streams sharing
//!   state with the connection instead of messaging it.
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
pub mod mux;
mod repoll;
pub mod session;
pub mod ws;

use std::time::Duration;

pub use handshake::{AcceptError, DialError, Refusal, Upgrade, accept, dial, dial_with};
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
    /// streams may grow into, together: a stream's window doubles (up to
    /// [`mux::MAX_WINDOW`]) while its reader takes half of it within 2 ms
    /// of the last grant (bulk transfers), and only within this room.
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
    /// The yamux limits both ends use. A stream counts until both ends
    /// have closed it; the relay keeps its own opens within `max_streams`
    /// and the connection allows [`YAMUX_HEADROOM`] times that, for
    /// streams one end has let go of and the other not yet.
    pub fn mux_config(&self, role: session::Role) -> mux::MuxConfig {
        mux::MuxConfig {
            max_streams: self.max_streams * YAMUX_HEADROOM,
            window_growth: self.window_growth,
            split_send: edgelink_protocol::limits::SPLIT_SEND_SIZE,
            ack_at_once: role == session::Role::Relay,
        }
    }
}
