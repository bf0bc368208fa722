//! The SSH hop: running a command on a server over SSH, for the agent's
//! commands to servers in its network and for seed 001's intermediary
//! (`execute_command`).
//!
//! * [`Pool`] keeps one authenticated connection per (host, port, user,
//!   credential, pinned key) and runs commands on channels of it, at most
//!   [`CHANNELS_PER_CONNECTION`] at once (OpenSSH's `MaxSessions` is 10).
//!   A connection found closed is replaced; one idle for longer than the
//!   configured time is closed; a reused connection that cannot open a
//!   channel is replaced once before the command fails.
//! * Host keys are pinned: a server's key must match the fingerprint the
//!   request names or one the pool is configured with for that address;
//!   any other key (including every key when none is pinned) is refused.
//! * Limits: one deadline covers connecting, authenticating and running; at
//!   the deadline the command is sent `KILL` and its channel closed.
//!   Output beyond the cap is read and dropped, and the outcome says so.
//! * Secrets: passwords and keys are held as [`SecretString`], never in an
//!   error's text or a log line.

mod pool;
#[cfg(feature = "testing")]
pub mod testing;

use std::time::Duration;

pub use pool::{CHANNELS_PER_CONNECTION, Pool, PoolConfig};
use secrecy::SecretString;

/// How the client proves who it is.
#[derive(Clone)]
pub enum Credential {
    /// Password authentication.
    Password(SecretString),
    /// A private key in OpenSSH or PEM form (Ed25519 or ECDSA), with its
    /// passphrase if it is encrypted.
    PrivateKey {
        /// The key's text.
        key: SecretString,
        /// The passphrase of an encrypted key.
        passphrase: Option<SecretString>,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Password(_) => "Password(..)",
            Credential::PrivateKey { .. } => "PrivateKey(..)",
        })
    }
}

/// A server to run a command on.
#[derive(Clone, Debug)]
pub struct Target {
    /// Host name or address.
    pub host: String,
    /// SSH port (22 in most networks).
    pub port: u16,
    /// The account to log in as.
    pub username: String,
    /// Password or private key.
    pub credential: Credential,
    /// The server's host-key fingerprint as OpenSSH prints it
    /// (`SHA256:…`); when absent, the pool's configured pins decide.
    pub host_key: Option<String>,
}

/// Limits of one command.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// From the call to the command's end, connecting included.
    pub timeout: Duration,
    /// Bytes kept of stdout and of stderr, each.
    pub output_cap: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { timeout: Duration::from_secs(30), output_cap: 1024 * 1024 }
    }
}

/// What a command did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Its standard output (invalid UTF-8 replaced), at most the cap.
    pub stdout: String,
    /// Its standard error, likewise.
    pub stderr: String,
    /// Its exit status, when it exited by itself.
    pub exit_code: Option<u32>,
    /// The signal that ended it, when one did (`KILL` after a timeout).
    pub signal: Option<String>,
    /// True when stdout was longer than the cap.
    pub stdout_truncated: bool,
    /// True when stderr was longer than the cap.
    pub stderr_truncated: bool,
    /// True when the deadline ended it.
    pub timed_out: bool,
    /// True when it was stopped on request (killed, or never started).
    pub canceled: bool,
}

/// Why a command could not be run. The text names the server and the
/// reason, never a credential.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No TCP connection (refused, unreachable, name unknown).
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The socket error.
        reason: String,
    },
    /// The server's host key is not the pinned one, or none is pinned.
    #[error("host key of {addr} is {fingerprint}: {why}")]
    HostKey {
        /// `host:port`.
        addr: String,
        /// The key the server presented.
        fingerprint: String,
        /// Why it was refused.
        why: &'static str,
    },
    /// The server refused the credential.
    #[error("authentication as {user} on {addr} failed")]
    Auth {
        /// `host:port`.
        addr: String,
        /// The account.
        user: String,
    },
    /// The private key could not be read (format, passphrase, algorithm).
    #[error("the private key cannot be used: {0}")]
    Key(String),
    /// The deadline passed before the command started.
    #[error("no connection to {addr} within {timeout:?}")]
    Timeout {
        /// `host:port`.
        addr: String,
        /// The command's deadline.
        timeout: Duration,
    },
    /// The SSH session failed (protocol error, connection lost, the
    /// server refused the channel or the command).
    #[error("ssh session with {addr} failed: {reason}")]
    Session {
        /// `host:port`.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The request itself is unusable (empty host or command, port 0).
    #[error("invalid request: {0}")]
    Invalid(&'static str),
}

pub use edgelink_protocol::ssh::{normalize_fingerprint, parse_pins};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_print() {
        let c = Credential::Password(SecretString::from("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
        let t = Target {
            host: "h".into(),
            port: 22,
            username: "u".into(),
            credential: Credential::PrivateKey { key: "-----BEGIN".into(), passphrase: Some("pp".into()) },
            host_key: None,
        };
        let shown = format!("{t:?}");
        assert!(!shown.contains("BEGIN") && !shown.contains("pp\""), "{shown}");
    }
}
