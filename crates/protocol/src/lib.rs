//! The edgelink tunnel protocol as data: paths, headers, token claims, close
//! codes, heartbeat payloads and the limits both ends enforce.
//!
//! This crate owns the vocabulary that the relay (`edgelink-relay`), the
//! device (`edgelink-agent`) and `api-server` must agree on. It does no IO
//! and reads no clock: every function here is pure so it can be tested with
//! plain values. `docs/protocol.md` is the prose version of this file.
//!
//! # Layout
//! * [`bearer`]: reading a bearer token from `Authorization`.
//! * [`paths`]: HTTP paths on the tunnel port and inside the tunnel.
//! * [`claims`]: the device access token's claims.
//! * [`close`]: why a tunnel was closed, as WebSocket close codes.
//! * [`heartbeat`]: the heartbeat a device sends on its own stream.
//! * [`limits`]: sizes and counts both ends refuse to exceed.
//! * [`challenge`]: the text a device signs to prove its key.
//! * [`time`]: the one wire format of instants.
//! * [`origin`]: web origins compared as browsers compare them.
//! * [`local_origin`]: the device's local service, as it announces it when it dials.
//! * [`net`]: address blocks (allowlists, trusted proxies).
//! * [`ssh`]: SSH host-key fingerprints as requests and configuration name them.
//! * [`error`]: the JSON error body every edgelink HTTP endpoint returns.

pub mod bearer;
pub mod challenge;
pub mod claims;
pub mod close;
pub mod error;
pub mod heartbeat;
pub mod limits;
pub mod local_origin;
pub mod net;
pub mod origin;
pub mod paths;
pub mod ssh;
pub mod time;

#[cfg(test)]
mod props;
