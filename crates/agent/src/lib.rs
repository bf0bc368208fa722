//! edge-agent: the device side of an edgelink tunnel.
//!
//! It authenticates with the device's own key (challenge/response at
//! api-server), dials remote-proxy's `/tunnel` with the access token, and
//! then serves every stream the relay opens: `/.edgelink/` paths itself,
//! everything else by forwarding to the configured local web service. It
//! sends heartbeats on streams of its own, takes its messages and hands
//! them to a local command or endpoint ([`inbox`]), refreshes its token
//! before it expires, and reconnects with capped, jittered exponential
//! backoff.
//!
//! This crate must stay small for devices: no database, no axum.
//!
//! # Entry points
//! * [`keygen`]: create the device key pair.
//! * [`run::run`]: the device loop.

pub mod backoff;
pub mod commands;
pub mod config;
pub mod credentials;
pub mod exec;
pub mod host;
pub mod inbox;
pub mod pair;
pub mod run;
pub mod serve;
pub mod tls;

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgelink_auth::agent_key::AgentKey;

pub use config::AgentConfig;

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is unusable.
    #[error("config: {0}")]
    Config(String),
    /// The server refused this device for good (unknown, revoked, wrong key).
    #[error("device refused: {0}")]
    Refused(String),
    /// The key file could not be read, written or parsed.
    #[error("key file {path}: {message}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// What the agent is doing, for tests and status displays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Getting a token or dialing.
    Connecting,
    /// The tunnel is up.
    Connected,
    /// Waiting before the next attempt.
    Backoff(Duration),
    /// The loop ended, with why.
    Stopped(String),
}

/// Generates a key pair: the private key at `path` (mode 0600, never
/// overwritten) and the public key at `path` + `.pub`. Returns the public
/// key PEM.
pub fn keygen(path: &Path) -> Result<String, AgentError> {
    let key = AgentKey::generate().map_err(|e| AgentError::Key { path: path.into(), message: e.to_string() })?;
    edgelink_auth::keyfile::write_private(path, key.private_key_pem().as_bytes())
        .map_err(|e| AgentError::Key { path: path.into(), message: e.to_string() })?;
    let public = key.public_key_pem();
    let pub_path = public_key_path(path);
    std::fs::write(&pub_path, &public).map_err(|e| AgentError::Key { path: pub_path, message: e.to_string() })?;
    Ok(public)
}

/// Where [`keygen`] writes the public key.
pub fn public_key_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// Loads the private key written by [`keygen`].
pub fn load_key(path: &Path) -> Result<AgentKey, AgentError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| AgentError::Key { path: path.into(), message: e.to_string() })?;
    AgentKey::from_pem(&text).map_err(|e| AgentError::Key { path: path.into(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_private_key_once() {
        let dir = std::env::temp_dir().join(format!("edgelink-agent-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("device.key");
        let public = keygen(&path).unwrap();
        assert_eq!(load_key(&path).unwrap().public_key_pem(), public);
        assert_eq!(std::fs::read_to_string(public_key_path(&path)).unwrap(), public);
        assert!(keygen(&path).is_err(), "an existing key must never be overwritten");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
