//! edge-agent's configuration (assembled by the binary; validated here).

use std::path::PathBuf;
use std::time::Duration;

use edgelink_protocol::origin::parse_url;
use serde::{Deserialize, Serialize};

/// Configuration of edge-agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// api-server's base URL (challenge, verify, refresh).
    pub api_url: String,
    /// remote-proxy's tunnel URL (`ws://…/tunnel` or `wss://…/tunnel`).
    pub tunnel_url: String,
    /// This device's id, as printed by `api-server device add`.
    pub device_id: Option<String>,
    /// The device's private key (PKCS#8 PEM, from `edge-agent keygen`).
    pub key_file: PathBuf,
    /// Written by `edge-agent pair` (device id, api and tunnel URLs); `run`
    /// takes its values unless the config, env or flags give others.
    pub state_file: PathBuf,
    /// The local web service that relay-opened streams are forwarded to.
    pub local_service: String,
    /// Extra CA certificate (PEM) to trust for https/wss, e.g. a private CA.
    pub ca_file: Option<PathBuf>,
    /// WebSocket ping interval.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// The tunnel is declared dead after this long without traffic.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How often a heartbeat with metrics is sent.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// First reconnect delay; doubles on each failure.
    #[serde(with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Cap of the reconnect delay.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Timeout of calls to api-server and of connecting to the local service.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Messages are handed to this program (argv; the message JSON on
    /// stdin, `EDGELINK_MESSAGE_ID` and `EDGELINK_MESSAGE_TYPE` in its
    /// environment; exit 0 = handled). At most one of this and `message_url`.
    pub message_command: Option<Vec<String>>,
    /// Messages are POSTed here as JSON (`X-Edgelink-Message-Id` header;
    /// a 2xx answer = handled). Without either, messages stay queued.
    pub message_url: Option<String>,
    /// How long one message's handling may take.
    #[serde(with = "humantime_serde")]
    pub message_timeout: Duration,
    /// How often the inbox is checked without a notice from the relay.
    #[serde(with = "humantime_serde")]
    pub message_poll_interval: Duration,
    /// Native remote commands this device runs (`POST
    /// /api/v1/devices/{id}/commands`): each entry is matched against the
    /// whole command line, exactly or with `*`/`?` (`systemctl status *`).
    /// Empty (the default): remote commands are refused.
    pub commands_allow: Vec<String>,
    /// The OS account remote commands run as (the agent's own when unset;
    /// another one needs the agent to run as root).
    pub commands_run_as: Option<String>,
    /// Environment variables a remote command may set.
    pub commands_env_allow: Vec<String>,
    /// Bytes kept of a remote command's stdout and of its stderr.
    pub commands_output_cap: usize,
    /// SSH targets remote commands may name (`user@host:port`, with
    /// `*`/`?`: `ops@10.0.0.*:22`); the command line must also match
    /// `commands_allow`. Empty (the default): SSH targets are refused.
    pub commands_ssh_allow: Vec<String>,
    /// Host keys of SSH targets, `HOST[:PORT]=SHA256:…`, for requests that
    /// pin none (a target with no pin either way is refused).
    pub commands_ssh_host_keys: Vec<String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            api_url: "http://127.0.0.1:3721".into(),
            tunnel_url: "ws://127.0.0.1:3800/tunnel".into(),
            device_id: None,
            key_file: PathBuf::from("edge-agent.key"),
            state_file: PathBuf::from("edge-agent.state.json"),
            local_service: "http://127.0.0.1:8080".into(),
            ca_file: None,
            ping_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(30),
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            message_command: None,
            message_url: None,
            message_timeout: Duration::from_secs(30),
            message_poll_interval: Duration::from_secs(60),
            commands_allow: Vec::new(),
            commands_run_as: None,
            commands_env_allow: Vec::new(),
            commands_output_cap: 1024 * 1024,
            commands_ssh_allow: Vec::new(),
            commands_ssh_host_keys: Vec::new(),
        }
    }
}

impl AgentConfig {
    /// Checks the values; the message names the wrong one.
    pub fn validate(&self) -> Result<(), String> {
        if self.device_id.as_deref().is_none_or(str::is_empty) {
            return Err("device_id is required: pair first (`edge-agent pair --server URL --code CODE`) \
                 or set EDGELINK_AGENT__DEVICE_ID / --device-id"
                .into());
        }
        if parse_url(&self.api_url, &["http", "https"]).is_none() {
            return Err("api_url must be an http(s) URL".into());
        }
        if parse_url(&self.tunnel_url, &["ws", "wss"]).is_none() {
            return Err("tunnel_url must be a ws:// or wss:// URL".into());
        }
        if local_authority(&self.local_service).is_none() {
            return Err("local_service must be an http://host:port URL".into());
        }
        if self.ping_interval.is_zero() || self.idle_timeout <= self.ping_interval {
            return Err("idle_timeout must be longer than ping_interval (and ping_interval > 0)".into());
        }
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            return Err("reconnect_min must be > 0 and <= reconnect_max".into());
        }
        if self.heartbeat_interval.is_zero() || self.request_timeout.is_zero() {
            return Err("heartbeat_interval and request_timeout must be > 0".into());
        }
        match (&self.message_command, &self.message_url) {
            (Some(_), Some(_)) => return Err("set message_command or message_url, not both".into()),
            (Some(argv), None) if argv.first().is_none_or(|p| p.is_empty()) => {
                return Err("message_command must name a program".into());
            }
            (None, Some(url)) if parse_url(url, &["http", "https"]).is_none() => {
                return Err("message_url must be an http(s) URL".into());
            }
            _ => {}
        }
        if self.commands_output_cap == 0 || self.commands_output_cap > 16 * 1024 * 1024 {
            return Err("commands_output_cap must be 1 byte to 16 MiB".into());
        }
        if self.message_timeout.is_zero() || self.message_poll_interval < Duration::from_secs(1) {
            return Err("message_timeout must be > 0 and message_poll_interval at least 1s".into());
        }
        edgelink_protocol::ssh::parse_pins(&self.commands_ssh_host_keys)
            .map_err(|e| format!("commands_ssh_host_keys: {e}"))?;
        if let Some(bad) = self.commands_ssh_allow.iter().find(|p| !p.contains('@') || !p.contains(':')) {
            return Err(format!("commands_ssh_allow: {bad}: expected USER@HOST:PORT (each may use * and ?)"));
        }
        Ok(())
    }

    /// What remote commands may do here; `None` when they are disabled.
    pub fn command_config(&self) -> Option<crate::commands::CommandConfig> {
        (!self.commands_allow.is_empty()).then(|| crate::commands::CommandConfig {
            policy: crate::exec::Policy {
                allow: self.commands_allow.clone(),
                run_as: self.commands_run_as.clone(),
                env_allow: self.commands_env_allow.clone(),
            },
            output_cap: self.commands_output_cap,
            ssh_allow: self.commands_ssh_allow.clone(),
            ssh_pins: edgelink_protocol::ssh::parse_pins(&self.commands_ssh_host_keys).unwrap_or_default(),
        })
    }

    /// Where messages are handed, if anywhere.
    pub fn message_handler(&self) -> Option<crate::inbox::Handler> {
        match (&self.message_command, &self.message_url) {
            (Some(argv), _) => Some(crate::inbox::Handler::Command(argv.clone())),
            (None, Some(url)) => Some(crate::inbox::Handler::Http(url.clone())),
            (None, None) => None,
        }
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

/// `host:port` of an `http://host[:port][/]` URL.
pub fn local_authority(url: &str) -> Option<String> {
    let u = parse_url(url, &["http"])?;
    if !u.username().is_empty() || u.password().is_some() {
        return None;
    }
    Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?))
}

/// The base path of the local service's URL, without a trailing `/`
/// (`http://h:1/app/` → `/app`; none → `""`): prefixed to every forwarded
/// request's path.
pub fn local_base_path(url: &str) -> String {
    parse_url(url, &["http"]).map(|u| u.path().trim_end_matches('/').to_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_base_path_has_no_trailing_slash() {
        assert_eq!(local_base_path("http://127.0.0.1:8080"), "");
        assert_eq!(local_base_path("http://127.0.0.1:8080/"), "");
        assert_eq!(local_base_path("http://h:1/app/"), "/app");
        assert_eq!(local_base_path("http://h:1/a/b"), "/a/b");
    }

    #[test]
    fn local_authority_parses() {
        assert_eq!(local_authority("http://127.0.0.1:8080").as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(local_authority("http://localhost/").as_deref(), Some("localhost:80"));
        assert_eq!(local_authority("http://[::1]:81/x").as_deref(), Some("[::1]:81"));
        assert_eq!(local_authority("https://x"), None);
        assert_eq!(local_authority("http://u@x"), None);
    }

    #[test]
    fn ssh_target_settings_are_checked() {
        let ok = AgentConfig { device_id: Some("d".into()), ..AgentConfig::default() };
        let bad_pin = AgentConfig { commands_ssh_host_keys: vec!["db=MD5:x".into()], ..ok.clone() };
        assert!(bad_pin.validate().unwrap_err().contains("commands_ssh_host_keys"));
        let bad_allow = AgentConfig { commands_ssh_allow: vec!["10.0.0.*".into()], ..ok.clone() };
        assert!(bad_allow.validate().unwrap_err().contains("USER@HOST:PORT"));
        let good = AgentConfig {
            commands_allow: vec!["uptime".into()],
            commands_ssh_allow: vec!["ops@10.0.0.*:22".into()],
            commands_ssh_host_keys: vec!["10.0.0.5=SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s".into()],
            ..ok
        };
        good.validate().unwrap();
        assert_eq!(good.command_config().unwrap().ssh_pins["10.0.0.5"].len(), 1);
    }

    #[test]
    fn device_id_is_required() {
        assert!(AgentConfig::default().validate().unwrap_err().contains("device_id"));
        let c = AgentConfig { device_id: Some("d".into()), ..AgentConfig::default() };
        c.validate().unwrap();
    }
}
