//! Credentials of edgelink: how a device proves its key, the access tokens
//! api-server issues to devices, and the opaque secrets (refresh tokens)
//! stored only as hashes.
//!
//! This crate does no IO except reading and writing key files
//! ([`keyfile`], [`signing::SigningKey::load_or_generate`],
//! [`cookie::CookieKeys::load_or_generate`]). It knows nothing about HTTP or
//! SQL.
//!
//! Without the `server` feature only what a device needs is built (its own
//! key pair and key files): edge-agent links no RSA, JWT or HMAC code.
//!
//! # Layout
//! * [`device_key`]: a device's public key (Ed25519 or RSA) and signature
//!   checks, including RSA-PSS with any salt length.
//! * [`agent_key`]: generating and using a device's Ed25519 key pair.
//! * [`cookie`]: browser session cookies (HMAC-SHA256, key rotation).
//! * [`signing`]: api-server's token signing key, the JWKS it publishes.
//! * [`token`]: issuing and verifying device access tokens.
//! * [`secret`]: random opaque secrets, their hashes, constant-time compare.
//! * [`pem`]: the small PEM codec the key types share.
//! * [`sealed`]: secrets sealed to one device's key (SSH credentials of
//!   native commands).
//! * [`keyfile`]: writing private key files (mode 0600, never overwritten).

pub mod agent_key;
#[cfg(feature = "server")]
pub mod cookie;
#[cfg(feature = "server")]
pub mod device_key;
pub mod keyfile;
pub mod pem;
pub mod sealed;
#[cfg(feature = "server")]
pub mod secret;
#[cfg(feature = "server")]
pub mod signing;
#[cfg(feature = "server")]
pub mod token;

/// Errors from this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A public or private key could not be parsed.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A signature was malformed or did not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// A key file could not be read or written.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A token could not be created.
    #[error("token encoding failed: {0}")]
    Encode(String),
    /// A secret could not be sealed to a device or opened.
    #[error("sealed secret: {0}")]
    Seal(&'static str),
}

#[cfg(all(test, feature = "server"))]
mod props;
