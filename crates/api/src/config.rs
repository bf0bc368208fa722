//! api-server's configuration (assembled by the binary from file, env and
//! flags; validated here).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Configuration of api-server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Database URL: `sqlite://PATH` (default) or `postgres://…`.
    pub database_url: String,
    /// PKCS#8 PEM file of the Ed25519 key that signs device tokens;
    /// generated on first start when missing.
    pub signing_key_file: PathBuf,
    /// `iss` of device access tokens (remote-proxy must expect the same).
    pub token_issuer: String,
    /// Lifetime of device access tokens.
    #[serde(with = "humantime_serde")]
    pub access_token_ttl: Duration,
    /// Lifetime of device refresh tokens.
    #[serde(with = "humantime_serde")]
    pub refresh_token_ttl: Duration,
    /// Lifetime of a device challenge (at most 60 s).
    #[serde(with = "humantime_serde")]
    pub challenge_ttl: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 3721)),
            database_url: "sqlite://edgelink.db".into(),
            signing_key_file: PathBuf::from("edgelink-signing-key.pem"),
            token_issuer: edgelink_protocol::claims::DEFAULT_ISSUER.into(),
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            challenge_ttl: Duration::from_secs(60),
        }
    }
}

impl ApiConfig {
    /// Checks the values; the message says which one is wrong and why.
    pub fn validate(&self) -> Result<(), String> {
        if self.token_issuer.trim().is_empty() {
            return Err("token_issuer must not be empty".into());
        }
        if self.access_token_ttl < Duration::from_secs(30) || self.access_token_ttl > Duration::from_secs(24 * 3600) {
            return Err("access_token_ttl must be between 30s and 24h".into());
        }
        if self.refresh_token_ttl <= self.access_token_ttl {
            return Err("refresh_token_ttl must be longer than access_token_ttl".into());
        }
        let max_challenge = Duration::from_secs(edgelink_protocol::limits::CHALLENGE_TTL_SECS as u64);
        if self.challenge_ttl.is_zero() || self.challenge_ttl > max_challenge {
            return Err("challenge_ttl must be between 1s and 60s".into());
        }
        if !(self.database_url.starts_with("sqlite:") || self.database_url.starts_with("postgres")) {
            return Err("database_url must start with sqlite:// or postgres://".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        ApiConfig::default().validate().unwrap();
        let c = ApiConfig { challenge_ttl: Duration::from_secs(600), ..ApiConfig::default() };
        assert!(c.validate().unwrap_err().contains("challenge_ttl"));
        let c = ApiConfig { database_url: "mysql://x".into(), ..ApiConfig::default() };
        assert!(c.validate().unwrap_err().contains("database_url"));
    }
}
