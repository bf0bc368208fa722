//! api-server's configuration (assembled by the binary from file, env and
//! flags; validated here).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use edgelink_oidc::ClientAuth;
use edgelink_protocol::origin::WebOrigin;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Configuration of api-server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// How long a connection may take to send a request head, and the
    /// longest a keep-alive connection may sit idle between requests.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// How long a request body may take to arrive after its head (the
    /// device web-service path excepted: it streams); slower ones are
    /// answered 408 and their connection closed.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Connections served at once; beyond it, new ones wait (the log says
    /// so). Upgraded WebSockets do not count once switched.
    pub max_connections: usize,
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
    /// The origin browsers use to reach api-server, `scheme://host[:port]`
    /// (no path). Builds the OIDC redirect URL and is the only `Origin`
    /// accepted on cookie-authenticated unsafe requests.
    pub public_url: String,
    /// Browser sign-in; absent = browser sign-in off (login answers 503).
    pub oidc: Option<OidcSettings>,
    /// The tunnel URL devices are told to dial when they pair
    /// (`ws://` or `wss://…/tunnel` of remote-proxy as devices reach it).
    pub agent_tunnel_url: String,
    /// Lifetime of a pairing code.
    #[serde(with = "humantime_serde")]
    pub pairing_ttl: Duration,
    /// Unused, unexpired pairing codes a user may hold at once.
    pub max_live_pairings: u32,
    /// Pairing exchanges accepted per client address per minute (burst
    /// the same).
    pub pairing_exchange_per_minute: u32,
    /// Wrong pairing codes accepted per hour from all clients together;
    /// when spent, every exchange is refused until it refills (a guessing
    /// botnet gains nothing from more addresses). See docs/operations.md.
    pub pairing_failures_per_hour: u32,
    /// Device challenge/verify/refresh calls per client address per minute
    /// (devices of a site may share one address behind NAT).
    pub device_auth_per_minute: u32,
    /// Addresses or CIDR blocks of load balancers in front of api-server;
    /// from them (only), `X-Forwarded-For` names the client for rate
    /// limits, the session list and what devices are told.
    pub trusted_proxies: Vec<crate::client_ip::Cidr>,
    /// remote-proxy's internal secret (the same on every relay instance);
    /// without it, reaching devices and closing tunnels answer 503.
    #[serde(serialize_with = "redact_opt")]
    pub relay_internal_secret: Option<SecretString>,
    /// PEM file of a private CA that signed the relays' internal API
    /// certificates (`https://` internal URLs); the web PKI is trusted too.
    pub relay_ca_file: Option<PathBuf>,
    /// Accept a plain `ws://` `agent_tunnel_url` off this machine (devices
    /// would send their tokens in the clear).
    pub allow_insecure_agent_tunnel_url: bool,
    /// How long a forwarded request waits for the device's response head.
    #[serde(with = "humantime_serde")]
    pub device_timeout: Duration,
    /// How long a session lookup and a device's route are kept in memory
    /// (0 = always read the database). Changes through another instance are
    /// seen within this time; through this one, at once.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// How often devices are asked to send heartbeats (REST heartbeats;
    /// the relays say the same for the tunnel).
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How often REST heartbeats are written to the database, in one batch.
    #[serde(with = "humantime_serde")]
    pub telemetry_flush_interval: Duration,
    /// Browser session cookies.
    pub session: SessionSettings,
    /// Requests per principal per hour.
    pub rate_limits: RateLimitSettings,
    /// Store-and-forward messages to devices.
    pub messages: MessageSettings,
    /// Base URL of device origins, `scheme://devices-domain[:port]` (e.g.
    /// `https://devices.example.net`): each device's web service is then at
    /// `scheme://{device-id}.devices-domain/` on remote-proxy's device
    /// listener, and "Open" goes there. Absent: devices open through the
    /// path route only.
    pub devices_url: Option<String>,
    /// Where `GET /metrics` (Prometheus text) is served: a listener of its
    /// own, loopback by default; absent = no metrics listener.
    pub metrics_listen: Option<SocketAddr>,
}

/// Limits of store-and-forward messages.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessageSettings {
    /// Most bytes of a message's content, as JSON (at most 60 KiB: the
    /// whole request must fit the 64 KiB JSON body limit).
    pub max_content_bytes: usize,
    /// Unread, unexpired messages a device may hold; sends beyond it are
    /// refused with `429002 message_queue_full`.
    pub max_unread_per_device: u32,
    /// Time to live of a message that does not say.
    #[serde(with = "humantime_serde")]
    pub default_ttl: Duration,
    /// Longest time to live a sender may ask for.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// How often expired messages are marked (and counted) as expired.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

impl Default for MessageSettings {
    fn default() -> Self {
        let l = edgelink_messages::Limits::default();
        MessageSettings {
            max_content_bytes: l.max_content_bytes,
            max_unread_per_device: l.max_unread_per_device,
            default_ttl: l.default_ttl,
            max_ttl: l.max_ttl,
            sweep_interval: Duration::from_secs(10),
        }
    }
}

impl MessageSettings {
    /// The limits the message service enforces.
    pub fn limits(&self) -> edgelink_messages::Limits {
        edgelink_messages::Limits {
            max_content_bytes: self.max_content_bytes,
            max_unread_per_device: self.max_unread_per_device,
            default_ttl: self.default_ttl,
            max_ttl: self.max_ttl,
        }
    }
}

/// Requests each principal may make per hour (fixed windows, shared by all
/// api-server instances through the database).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Per API token.
    pub token_per_hour: u32,
    /// Per signed-in user (all their browser sessions together).
    pub session_per_hour: u32,
    /// Per device (its access token on device routes).
    pub device_per_hour: u32,
    /// Per machine client (client-credentials token).
    pub service_per_hour: u32,
    /// How often each instance shares its counts (and learns the others').
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            token_per_hour: 1000,
            session_per_hour: 20_000,
            device_per_hour: 3600,
            service_per_hour: 500,
            sync_interval: Duration::from_secs(1),
        }
    }
}

/// The OpenID Connect provider browsers sign in with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// Issuer URL exactly as the provider publishes it (discovery is
    /// `{issuer}/.well-known/openid-configuration`).
    pub issuer: String,
    /// This application's client id.
    pub client_id: String,
    /// Confidential clients only; public PKCE clients leave it out.
    #[serde(default, serialize_with = "redact_opt")]
    pub client_secret: Option<SecretString>,
    /// `basic` (client_secret_basic, default) or `post` (client_secret_post).
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Defaults to `{public_url}/api/auth/callback`.
    #[serde(default)]
    pub redirect_url: Option<String>,
    /// Scopes; `openid` is always sent.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Timeout of each request to the provider.
    #[serde(default = "default_oidc_timeout", with = "humantime_serde")]
    pub http_timeout: Duration,
    /// Shortest time between JWKS refetches caused by an unknown key id.
    #[serde(default = "default_jwks_interval", with = "humantime_serde")]
    pub jwks_min_refresh_interval: Duration,
    /// Where the provider sends the browser after RP-initiated logout;
    /// defaults to `{public_url}/`.
    #[serde(default)]
    pub post_logout_redirect_url: Option<String>,
    /// Treat every email this provider returns as verified. Only for a
    /// provider that sends no `email_verified` and issues addresses only in
    /// domains the organisation owns (Microsoft Entra ID single-tenant with
    /// the `email` claim from verified domains). Off: an email without
    /// `email_verified: true` is shown, never used to find or claim a user.
    #[serde(default)]
    pub assume_email_verified: bool,
    /// Accept this provider's client-credentials access tokens (JWTs)
    /// whose `aud` is this value as machine clients ("service principals")
    /// with the scopes of their `scope` claim. Absent: off.
    #[serde(default)]
    pub service_audience: Option<String>,
}

/// Secrets never leave the process through a config dump.
fn redact_opt<S: serde::Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_some("[redacted]"),
        None => s.serialize_none(),
    }
}

fn redact_all<S: serde::Serializer>(v: &[SecretString], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|_| "[redacted]"))
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

fn default_oidc_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_jwks_interval() -> Duration {
    Duration::from_secs(10)
}

/// Browser session cookies and their lifetimes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSettings {
    /// Cookie signing keys, newest first, each ≥ 32 bytes (base64 or raw
    /// text). The first signs; all verify, so rotation is: put a new key
    /// first, keep the old one until its sessions have expired. When empty,
    /// `key_file` is used.
    #[serde(serialize_with = "redact_all")]
    pub keys: Vec<SecretString>,
    /// File with one key (generated, mode 0600, on first start when
    /// missing); used only when `keys` is empty.
    pub key_file: PathBuf,
    /// Drop `Secure` and the `__Host-` prefix from cookies. Only for plain
    /// http development on loopback; refused with an https `public_url`.
    pub insecure_cookies: bool,
    /// A session unused for this long ends.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A session ends this long after sign-in whatever happens.
    #[serde(with = "humantime_serde")]
    pub absolute_lifetime: Duration,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            keys: Vec::new(),
            key_file: PathBuf::from("edgelink-session.key"),
            insecure_cookies: false,
            idle_timeout: Duration::from_secs(8 * 3600),
            absolute_lifetime: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 3721)),
            header_timeout: Duration::from_secs(15),
            body_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            database_url: "sqlite://edgelink.db".into(),
            signing_key_file: PathBuf::from("edgelink-signing-key.pem"),
            token_issuer: edgelink_protocol::claims::DEFAULT_ISSUER.into(),
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            challenge_ttl: Duration::from_secs(60),
            public_url: "https://127.0.0.1:3721".into(),
            oidc: None,
            agent_tunnel_url: "ws://127.0.0.1:3800/tunnel".into(),
            pairing_ttl: Duration::from_secs(600),
            max_live_pairings: 5,
            pairing_exchange_per_minute: 10,
            pairing_failures_per_hour: 1000,
            device_auth_per_minute: 600,
            trusted_proxies: Vec::new(),
            relay_internal_secret: None,
            relay_ca_file: None,
            allow_insecure_agent_tunnel_url: false,
            device_timeout: Duration::from_secs(30),
            cache_ttl: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(30),
            telemetry_flush_interval: Duration::from_secs(5),
            session: SessionSettings::default(),
            rate_limits: RateLimitSettings::default(),
            messages: MessageSettings::default(),
            devices_url: None,
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9721))),
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
        edgelink_protocol::origin::check_service_url(
            "agent_tunnel_url",
            &self.agent_tunnel_url,
            &["ws", "wss"],
            self.allow_insecure_agent_tunnel_url,
        )?;
        if self.pairing_ttl < Duration::from_secs(60) || self.pairing_ttl > Duration::from_secs(24 * 3600) {
            return Err("pairing_ttl must be between 1m and 24h".into());
        }
        if self.max_live_pairings == 0
            || self.pairing_exchange_per_minute == 0
            || self.pairing_failures_per_hour == 0
            || self.device_auth_per_minute == 0
        {
            return Err("max_live_pairings, pairing_exchange_per_minute, pairing_failures_per_hour and \
                 device_auth_per_minute must be at least 1"
                .into());
        }
        if self.heartbeat_interval < Duration::from_secs(5) || self.heartbeat_interval > Duration::from_secs(3600) {
            return Err("heartbeat_interval must be between 5s and 1h".into());
        }
        if self.telemetry_flush_interval < Duration::from_millis(100)
            || self.telemetry_flush_interval > Duration::from_secs(300)
        {
            return Err("telemetry_flush_interval must be between 100ms and 5m".into());
        }
        if let Some(u) = &self.devices_url {
            edgelink_origins::DevicesDomain::parse(u)?;
        }
        let m = &self.messages;
        if m.max_content_bytes == 0 || m.max_content_bytes > 60 * 1024 {
            return Err("messages.max_content_bytes must be between 1 and 61440 (60 KiB)".into());
        }
        if m.max_unread_per_device == 0 || m.max_unread_per_device > 1_000_000 {
            return Err("messages.max_unread_per_device must be between 1 and 1000000".into());
        }
        if m.default_ttl.as_secs() == 0 || m.max_ttl < m.default_ttl || m.max_ttl > Duration::from_secs(30 * 24 * 3600)
        {
            return Err(
                "messages: default_ttl must be at least 1s, and at most max_ttl, which is at most 30 days".into()
            );
        }
        if m.sweep_interval < Duration::from_secs(1) || m.sweep_interval > Duration::from_secs(3600) {
            return Err("messages.sweep_interval must be between 1s and 1h".into());
        }
        let r = &self.rate_limits;
        if r.token_per_hour == 0 || r.session_per_hour == 0 || r.device_per_hour == 0 || r.service_per_hour == 0 {
            return Err("rate_limits.*_per_hour must be at least 1".into());
        }
        if r.sync_interval < Duration::from_millis(100) || r.sync_interval > Duration::from_secs(60) {
            return Err("rate_limits.sync_interval must be between 100ms and 1m".into());
        }
        if self.cache_ttl > Duration::from_secs(60) {
            return Err("cache_ttl must be at most 1m (it bounds how stale a revoked session may be)".into());
        }
        if self.header_timeout.is_zero() || self.header_timeout > Duration::from_secs(300) {
            return Err("header_timeout must be between 1s and 5m".into());
        }
        if self.body_timeout.is_zero() || self.body_timeout > Duration::from_secs(600) {
            return Err("body_timeout must be between 1ms and 10m".into());
        }
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        if self.device_timeout.is_zero() || self.device_timeout > Duration::from_secs(600) {
            return Err("device_timeout must be between 1s and 10m".into());
        }
        if let Some(s) = &self.relay_internal_secret
            && secrecy::ExposeSecret::expose_secret(s).len() < 16
        {
            return Err("relay_internal_secret must be at least 16 characters (remote-proxy's internal_secret)".into());
        }
        let origin = self.public_origin()?;
        if !origin.is_https() && !self.session.insecure_cookies {
            return Err(format!(
                "public_url {origin} is plain http, where browsers drop Secure cookies: serve https, \
                 or set session.insecure_cookies = true for local development"
            ));
        }
        if origin.is_https() && self.session.insecure_cookies {
            return Err("session.insecure_cookies is only for a plain-http public_url".into());
        }
        if self.session.idle_timeout < Duration::from_secs(60) {
            return Err("session.idle_timeout must be at least 1m".into());
        }
        if self.session.absolute_lifetime < self.session.idle_timeout {
            return Err("session.absolute_lifetime must be at least session.idle_timeout".into());
        }
        if let Some(cfg) = self.oidc_config() {
            edgelink_oidc::Provider::new(cfg).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// `public_url` as a bare origin (`scheme://host[:port]`, no trailing
    /// slash), or why it is not one.
    pub fn public_origin(&self) -> Result<WebOrigin, String> {
        WebOrigin::parse(&self.public_url).map_err(|e| format!("public_url {e}"))
    }

    /// The relying-party settings, when browser sign-in is configured.
    pub fn oidc_config(&self) -> Option<edgelink_oidc::OidcConfig> {
        let o = self.oidc.as_ref()?;
        let origin = self.public_origin().map(|o| o.to_string()).unwrap_or_default();
        let redirect = o.redirect_url.clone().unwrap_or_else(|| format!("{origin}/api/auth/callback"));
        let mut cfg = edgelink_oidc::OidcConfig::new(o.issuer.clone(), o.client_id.clone(), redirect);
        cfg.client_secret = o.client_secret.clone();
        cfg.client_auth = o.client_auth;
        cfg.scopes = o.scopes.clone();
        cfg.http_timeout = o.http_timeout;
        cfg.jwks_min_refresh_interval = o.jwks_min_refresh_interval;
        Some(cfg)
    }

    /// Where the provider should send the browser after logout.
    pub fn post_logout_redirect(&self) -> String {
        let origin = self.public_origin().map(|o| o.to_string()).unwrap_or_default();
        self.oidc.as_ref().and_then(|o| o.post_logout_redirect_url.clone()).unwrap_or_else(|| format!("{origin}/"))
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

    #[test]
    fn plain_http_needs_explicit_insecure_cookies_and_origins_have_no_path() {
        let c = ApiConfig { public_url: "http://127.0.0.1:3721".into(), ..ApiConfig::default() };
        assert!(c.validate().unwrap_err().contains("insecure_cookies"));
        let mut c = c;
        c.session.insecure_cookies = true;
        c.validate().unwrap();
        assert_eq!(c.public_origin().unwrap().as_str(), "http://127.0.0.1:3721");
        let c = ApiConfig { public_url: "https://edge.example/app".into(), ..ApiConfig::default() };
        assert!(c.validate().unwrap_err().contains("origin"));
        let c = ApiConfig { public_url: "https://Edge.Example/".into(), ..ApiConfig::default() };
        assert_eq!(c.public_origin().unwrap().as_str(), "https://edge.example");
        let c = ApiConfig { public_url: "https://edge.example:443".into(), ..ApiConfig::default() };
        assert_eq!(c.public_origin().unwrap().as_str(), "https://edge.example");
    }

    #[test]
    fn oidc_settings_are_checked_at_start() {
        let mut c = ApiConfig { oidc: None, ..ApiConfig::default() };
        c.oidc = Some(OidcSettings {
            issuer: "http://idp.example".into(),
            client_id: "edgelink".into(),
            client_secret: None,
            client_auth: ClientAuth::Basic,
            redirect_url: None,
            scopes: default_scopes(),
            http_timeout: default_oidc_timeout(),
            jwks_min_refresh_interval: default_jwks_interval(),
            post_logout_redirect_url: None,
            assume_email_verified: false,
            service_audience: None,
        });
        assert!(c.validate().unwrap_err().contains("https"));
        c.oidc.as_mut().unwrap().issuer = "https://idp.example".into();
        c.validate().unwrap();
        assert_eq!(c.oidc_config().unwrap().redirect_url, "https://127.0.0.1:3721/api/auth/callback");
    }
}
