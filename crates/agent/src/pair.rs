//! `edge-agent pair`: make (or reuse) the device key, exchange a pairing
//! code at api-server, and write the state file `run` starts from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::AgentError;

/// What pairing leaves behind for `edge-agent run` (JSON, mode 0600).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// This device's id.
    pub device_id: String,
    /// api-server as the server told us.
    pub api_url: String,
    /// Where to dial the tunnel.
    pub tunnel_url: String,
}

impl AgentState {
    /// Reads a state file; Ok(None) when it does not exist.
    pub fn load(path: &Path) -> Result<Option<AgentState>, AgentError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| AgentError::Config(format!("state file {}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AgentError::Config(format!("state file {}: {e}", path.display()))),
        }
    }

    fn save(&self, path: &Path) -> Result<(), AgentError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| AgentError::Config(e.to_string()))?;
        // Replace atomically: write a private temp file, then rename.
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        edgelink_auth::keyfile::write_private(&tmp, text.as_bytes())
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| AgentError::Config(format!("writing state file {}: {e}", path.display())))
    }
}

/// What to pair.
#[derive(Debug, Clone)]
pub struct PairOptions {
    /// api-server base URL.
    pub server: String,
    /// The code the user got.
    pub code: String,
    /// Device name.
    pub name: String,
    /// Device type.
    pub device_type: String,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// Private key file (created when missing).
    pub key_file: PathBuf,
    /// Where to write the state.
    pub state_file: PathBuf,
    /// Extra CA certificate for https.
    pub ca_file: Option<PathBuf>,
    /// Request timeout.
    pub timeout: Duration,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    message: String,
}

/// Pairs this device; returns the state written.
pub async fn pair(opts: &PairOptions) -> Result<AgentState, AgentError> {
    if edgelink_protocol::origin::parse_url(&opts.server, &["http", "https"]).is_none() {
        return Err(AgentError::Config("--server must be an http(s) URL".into()));
    }
    if opts.key_file.exists() {
        crate::load_key(&opts.key_file)?;
    } else {
        crate::keygen(&opts.key_file)?;
    }
    let public_key = std::fs::read_to_string(crate::public_key_path(&opts.key_file))
        .or_else(|_| crate::load_key(&opts.key_file).map(|k| k.public_key_pem()).map_err(|e| e.to_string()))
        .map_err(|e| AgentError::Key { path: opts.key_file.clone(), message: e.to_string() })?;
    let tls = crate::tls::client_config(opts.ca_file.as_deref())?;
    let http = reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(opts.timeout)
        .build()
        .map_err(|e| AgentError::Config(e.to_string()))?;
    let url = format!("{}/api/v1/pairings/exchange", opts.server.trim_end_matches('/'));
    let resp = http
        .post(&url)
        .json(&serde_json::json!({
            "code": opts.code,
            "public_key": public_key,
            "name": opts.name,
            "type": opts.device_type,
            "capabilities": opts.capabilities,
        }))
        .send()
        .await
        .map_err(|e| AgentError::Config(format!("cannot reach {url}: {e}")))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        let why = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| format!("{} ({})", b.message, b.error))
            .unwrap_or_else(|_| format!("HTTP {status}"));
        return Err(AgentError::Refused(format!("pairing refused: {why}")));
    }
    let state: AgentState =
        serde_json::from_str(&text).map_err(|e| AgentError::Config(format!("unexpected answer from {url}: {e}")))?;
    state.save(&opts.state_file)?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_privately() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(AgentState::load(&path).unwrap(), None);
        let s = AgentState { device_id: "d".into(), api_url: "http://a".into(), tunnel_url: "ws://t/tunnel".into() };
        s.save(&path).unwrap();
        s.save(&path).unwrap();
        assert_eq!(AgentState::load(&path).unwrap(), Some(s));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(&path, "junk").unwrap();
        assert!(AgentState::load(&path).is_err());
    }
}
