//! Sizes and counts both ends refuse to exceed.

/// Largest WebSocket message either end accepts. yamux frames are at most
/// 1 MiB of payload plus a 12-byte header; writers coalesce at most
/// [`MAX_WRITE_CHUNK`] per message, so this leaves room.
pub const MAX_WS_MESSAGE: usize = 2 * 1024 * 1024;

/// Largest chunk a writer puts into one WebSocket message.
pub const MAX_WRITE_CHUNK: usize = 64 * 1024;

/// yamux frames are split at this size so that header + payload fit one
/// [`MAX_WRITE_CHUNK`] message.
pub const SPLIT_SEND_SIZE: usize = 48 * 1024;

/// Streams one session may have open at once (both directions).
pub const MAX_STREAMS_PER_SESSION: usize = 256;

/// Largest request head (request line + headers) accepted on a tunnel
/// stream or on the tunnel upgrade request.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Largest body accepted on a control path (heartbeats, acks).
pub const MAX_CONTROL_BODY: usize = 64 * 1024;

/// Streams a device may have open to the relay's control API at once;
/// beyond this, a new one is closed at once (a device that opens 256
/// streams and feeds them slowly cannot make the relay hold 256 stream
/// windows).
pub const MAX_DEVICE_STREAMS: usize = 8;

/// Longest a challenge stays valid, seconds.
pub const CHALLENGE_TTL_SECS: i64 = 60;
