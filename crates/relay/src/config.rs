//! remote-proxy's configuration (assembled by the binary; validated here).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Configuration of remote-proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Where devices dial (`GET /tunnel`).
    pub tunnel_listen: SocketAddr,
    /// Where the internal API listens. Loopback unless you mean otherwise.
    pub internal_listen: SocketAddr,
    /// Where `GET /metrics` (Prometheus text) is served: a listener of its
    /// own, loopback by default; absent = no metrics listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Bearer secret every internal API request must carry. Required.
    #[serde(serialize_with = "redacted")]
    pub internal_secret: Option<SecretString>,
    /// This instance's id in the session registry. Defaults to
    /// `<hostname>-<internal port>`.
    pub instance_id: Option<String>,
    /// The internal API URL other services use to reach this instance.
    /// Defaults to `http(s)://<internal_listen>` (https with
    /// `internal_tls_cert`).
    pub internal_url: Option<String>,
    /// PEM certificate chain for TLS on the internal API (with
    /// `internal_tls_key`): its callers send the internal secret, which
    /// reaches every device, so across machines it needs TLS.
    pub internal_tls_cert: Option<PathBuf>,
    /// PEM private key for TLS on the internal API.
    pub internal_tls_key: Option<PathBuf>,
    /// Accept a plain-http `internal_url` off this machine (a network you
    /// trust, or TLS terminated in front of the relay).
    pub allow_insecure_internal_url: bool,
    /// Database URL: `sqlite://PATH` or `postgres://…` (the one api-server uses).
    pub database_url: String,
    /// Where api-server publishes the device token keys.
    pub jwks_url: String,
    /// Accept a plain-http `jwks_url` off this machine (whoever can change
    /// that answer can mint device tokens).
    pub allow_insecure_jwks_url: bool,
    /// How often the keys are fetched again (keys api-server no longer
    /// publishes stop being accepted then; an unknown `kid` also triggers
    /// a fetch).
    #[serde(with = "humantime_serde")]
    pub jwks_refresh_interval: Duration,
    /// Expected `iss` of device tokens.
    pub token_issuer: String,
    /// PEM certificate chain for TLS on the tunnel port (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS on the tunnel port.
    pub tls_key: Option<PathBuf>,
    /// WebSocket ping interval on tunnels.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A tunnel silent this long is declared dead (detection takes at most
    /// this plus `ping_interval`).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long a forwarded request waits for the device's response head.
    #[serde(with = "humantime_serde")]
    pub forward_timeout: Duration,
    /// How long a connection may take to send a request head (and a TLS
    /// handshake), and the longest a keep-alive connection may sit idle.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Connections each listener serves at once (upgraded tunnels do not
    /// count); beyond it, new ones wait and the log says so.
    pub max_connections: usize,
    /// How often devices are asked to send heartbeats (told in each
    /// heartbeat's answer).
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How often heartbeats are written to the database (one batch for all
    /// devices).
    #[serde(with = "humantime_serde")]
    pub telemetry_flush_interval: Duration,
    /// How long shutdown waits for tunnels to close.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// No longer used: the tunnel's WebSocket framing holds no read buffer
    /// while a tunnel is idle and reads 64 KiB at a time while it is busy.
    /// Still accepted so that existing files load; setting it logs a
    /// warning.
    pub ws_read_buffer: Option<usize>,
    /// Threads of the async runtime; unset = one per CPU. A relay that
    /// shares a small machine with other busy processes may do more on
    /// fewer threads (fewer wake-ups between them): see docs/benchmarks.md.
    pub worker_threads: Option<usize>,
    /// Device origins (each device's web service on its own origin);
    /// absent = off.
    pub devices: Option<DeviceOriginSettings>,
}

/// The public listener that serves device origins (ADR 22).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceOriginSettings {
    /// Base URL, `scheme://devices-domain[:port]`, the same as api-server's
    /// `devices_url`; device `X` is served at `scheme://X.devices-domain/`.
    pub url: String,
    /// Where the listener binds (public, like the tunnel port).
    #[serde(default = "default_devices_listen")]
    pub listen: SocketAddr,
    /// api-server's `public_url`: browsers without a pass are sent there
    /// to get one.
    pub api_url: String,
    /// api-server's session cookie keys (`session.keys`, newest first), or
    /// the file with one (`session.key_file`): passes are sealed with them.
    #[serde(default)]
    pub session_keys: Vec<String>,
    /// See `session_keys`.
    #[serde(default)]
    pub session_key_file: Option<PathBuf>,
    /// PEM certificate chain (a wildcard for the devices domain) for TLS on
    /// the listener, with `tls_key`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS on the listener.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// How long an admitted (browser session, device) is trusted before the
    /// database is asked again (sign-out and deletion take effect within it).
    #[serde(default = "default_cache_ttl", with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Addresses or CIDR blocks of load balancers in front of this
    /// listener; from them (only), `X-Forwarded-For` names the client the
    /// device app is told about.
    #[serde(default)]
    pub trusted_proxies: Vec<edgelink_protocol::net::Cidr>,
}

fn default_devices_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 3802))
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(5)
}

impl DeviceOriginSettings {
    /// The keys passes are sealed with.
    pub fn cookie_keys(&self) -> Result<edgelink_auth::cookie::CookieKeys, String> {
        use edgelink_auth::cookie::CookieKeys;
        if !self.session_keys.is_empty() {
            return CookieKeys::from_base64(&self.session_keys).map_err(|e| format!("devices.session_keys: {e}"));
        }
        let path = self.session_key_file.as_ref().ok_or(
            "devices needs session_keys or session_key_file: api-server's session key material (passes are sealed with it)",
        )?;
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("devices.session_key_file {}: {e}", path.display()))?;
        CookieKeys::from_base64(&[text.trim()]).map_err(|e| format!("devices.session_key_file: {e}"))
    }

    fn validate(&self) -> Result<(), String> {
        edgelink_origins::DevicesDomain::parse(&self.url)?;
        edgelink_protocol::origin::WebOrigin::parse(&self.api_url).map_err(|e| format!("devices.api_url {e}"))?;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("devices.tls_cert and devices.tls_key must be set together".into());
        }
        if self.cache_ttl > Duration::from_secs(60) {
            return Err("devices.cache_ttl must be at most 1m".into());
        }
        self.cookie_keys().map(|_| ())
    }
}

fn redacted<S: serde::Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("[redacted]"),
        None => s.serialize_none(),
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            tunnel_listen: SocketAddr::from(([127, 0, 0, 1], 3800)),
            internal_listen: SocketAddr::from(([127, 0, 0, 1], 3801)),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9800))),
            internal_secret: None,
            instance_id: None,
            internal_url: None,
            internal_tls_cert: None,
            internal_tls_key: None,
            allow_insecure_internal_url: false,
            database_url: "sqlite://edgelink.db".into(),
            jwks_url: "http://127.0.0.1:3721/.well-known/jwks.json".into(),
            allow_insecure_jwks_url: false,
            jwks_refresh_interval: Duration::from_secs(300),
            token_issuer: edgelink_protocol::claims::DEFAULT_ISSUER.into(),
            tls_cert: None,
            tls_key: None,
            ping_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            forward_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            heartbeat_interval: Duration::from_secs(30),
            telemetry_flush_interval: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            ws_read_buffer: None,
            worker_threads: None,
            devices: None,
        }
    }
}

/// Shortest internal secret accepted.
pub const MIN_SECRET_LEN: usize = 16;
/// The most runtime threads `worker_threads` may ask for.
pub const MAX_WORKER_THREADS: usize = 1024;

impl RelayConfig {
    /// Checks the values; the message names the wrong one.
    pub fn validate(&self) -> Result<(), String> {
        match &self.internal_secret {
            None => {
                return Err("internal_secret is required (EDGELINK_RELAY__INTERNAL_SECRET or --internal-secret)".into());
            }
            Some(s) if s.expose_secret().len() < MIN_SECRET_LEN => {
                return Err(format!("internal_secret must be at least {MIN_SECRET_LEN} characters"));
            }
            Some(_) => {}
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("tls_cert and tls_key must be set together".into());
        }
        if self.ping_interval.is_zero() || self.idle_timeout <= self.ping_interval {
            return Err("idle_timeout must be longer than ping_interval (and ping_interval > 0)".into());
        }
        if self.worker_threads.is_some_and(|n| n == 0 || n > MAX_WORKER_THREADS) {
            return Err(format!("worker_threads must be between 1 and {MAX_WORKER_THREADS}"));
        }
        if self.forward_timeout.is_zero() || self.header_timeout.is_zero() {
            return Err("forward_timeout and header_timeout must be > 0".into());
        }
        if self.heartbeat_interval < Duration::from_secs(5) || self.heartbeat_interval > Duration::from_secs(3600) {
            return Err("heartbeat_interval must be between 5s and 1h".into());
        }
        if self.telemetry_flush_interval < Duration::from_millis(100)
            || self.telemetry_flush_interval > Duration::from_secs(300)
        {
            return Err("telemetry_flush_interval must be between 100ms and 5m".into());
        }
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        use edgelink_protocol::origin::check_service_url;
        check_service_url("jwks_url", &self.jwks_url, &["http", "https"], self.allow_insecure_jwks_url)?;
        if self.jwks_refresh_interval < Duration::from_secs(10) {
            return Err("jwks_refresh_interval must be at least 10s".into());
        }
        if self.internal_tls_cert.is_some() != self.internal_tls_key.is_some() {
            return Err("internal_tls_cert and internal_tls_key must be set together".into());
        }
        if let Some(u) = &self.internal_url {
            check_service_url("internal_url", u, &["http", "https"], self.allow_insecure_internal_url)?;
        }
        if let Some(d) = &self.devices {
            d.validate()?;
        }
        Ok(())
    }

    /// The instance id in use.
    pub fn instance_id(&self) -> String {
        self.instance_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "relay".into());
            format!("{host}-{}", self.internal_listen.port())
        })
    }

    /// The advertised internal URL, given the address actually bound.
    pub fn internal_url(&self, bound: SocketAddr) -> String {
        let scheme = if self.internal_tls_cert.is_some() { "https" } else { "http" };
        self.internal_url.clone().unwrap_or_else(|| format!("{scheme}://{bound}"))
    }

    /// The tunnel settings these values imply.
    pub fn tunnel_config(&self) -> edgelink_tunnel::TunnelConfig {
        edgelink_tunnel::TunnelConfig {
            ping_interval: self.ping_interval,
            idle_timeout: self.idle_timeout,
            ..edgelink_tunnel::TunnelConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_the_internal_url_need_tls_off_this_machine() {
        let mut c = RelayConfig { internal_secret: Some("0123456789abcdef".into()), ..RelayConfig::default() };
        c.validate().unwrap();
        c.jwks_url = "http://api.example/.well-known/jwks.json".into();
        assert!(c.validate().unwrap_err().contains("allow_insecure_jwks_url"));
        c.allow_insecure_jwks_url = true;
        c.validate().unwrap();
        c.internal_url = Some("http://relay-1.internal:3801".into());
        assert!(c.validate().unwrap_err().contains("allow_insecure_internal_url"));
        c.internal_url = Some("https://relay-1.internal:3801".into());
        c.validate().unwrap();
        let bound: SocketAddr = ([0, 0, 0, 0], 3801).into();
        assert_eq!(c.internal_url(bound), "https://relay-1.internal:3801");
        c.internal_url = None;
        c.internal_tls_cert = Some("cert.pem".into());
        assert!(c.validate().unwrap_err().contains("internal_tls_key"));
        c.internal_tls_key = Some("key.pem".into());
        assert_eq!(c.internal_url(bound), "https://0.0.0.0:3801");
    }

    #[test]
    fn secret_is_required_and_redacted() {
        let mut c = RelayConfig::default();
        assert!(c.validate().unwrap_err().contains("internal_secret"));
        c.internal_secret = Some(SecretString::from("short"));
        assert!(c.validate().is_err());
        c.internal_secret = Some(SecretString::from("a-long-enough-secret"));
        c.validate().unwrap();
        let shown = serde_json::to_string(&c).unwrap();
        assert!(!shown.contains("a-long-enough-secret"));
        assert!(format!("{c:?}").contains("internal_secret"));
        assert!(!format!("{c:?}").contains("a-long-enough-secret"));
    }

    #[test]
    fn trusted_proxies_of_the_device_listener_are_read_and_checked() {
        let devices = |proxies: &str| {
            serde_json::from_str::<RelayConfig>(&format!(
                r#"{{"devices": {{"url": "https://devices.example.net", "api_url": "https://edgelink.example.com",
                    "trusted_proxies": {proxies}}}}}"#
            ))
        };
        let c = devices(r#"["10.0.0.0/8", "192.0.2.7"]"#).unwrap();
        let trusted = c.devices.unwrap().trusted_proxies;
        assert!(trusted[0].contains("10.9.8.7".parse().unwrap()) && trusted[1].contains("192.0.2.7".parse().unwrap()));
        let bad = devices(r#"["10.0.0.0/40"]"#).unwrap_err();
        assert!(bad.to_string().contains("10.0.0.0/40"), "{bad}");
        let none = serde_json::from_str::<RelayConfig>(
            r#"{"devices": {"url": "https://devices.example.net", "api_url": "https://edgelink.example.com"}}"#,
        );
        assert!(none.unwrap().devices.unwrap().trusted_proxies.is_empty(), "none by default");
    }

    #[test]
    fn worker_threads_are_bounded() {
        let mut c = RelayConfig { internal_secret: Some("0123456789abcdef".into()), ..RelayConfig::default() };
        for ok in [None, Some(1), Some(MAX_WORKER_THREADS)] {
            c.worker_threads = ok;
            c.validate().unwrap();
        }
        for bad in [0, MAX_WORKER_THREADS + 1] {
            c.worker_threads = Some(bad);
            assert!(c.validate().unwrap_err().contains("worker_threads"), "{bad}");
        }
    }
}
