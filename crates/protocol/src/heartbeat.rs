//! The heartbeat a device sends to the relay on a stream it opens.

use serde::{Deserialize, Serialize};

/// Body of `POST /.edgelink/v1/heartbeat`. Every field is optional so that
/// small devices can send `{}`; unknown fields are ignored for forward
/// compatibility.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// CPU use in percent (0–100 per core summed as the device reports it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// Resident memory in use, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<u64>,
    /// Total memory, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total_bytes: Option<u64>,
    /// Seconds since the agent started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<u64>,
    /// Agent version string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// One-minute load average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_1m: Option<f64>,
    /// Disk space in use on the root file system, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_used_bytes: Option<u64>,
    /// Disk space on the root file system, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_total_bytes: Option<u64>,
    /// Bytes received on all network interfaces but loopback, since boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_in_bytes: Option<u64>,
    /// Bytes sent on all network interfaces but loopback, since boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_out_bytes: Option<u64>,
    /// The device's own word for its state (`healthy`, `degraded`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Free-form numeric metrics.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub custom: std::collections::BTreeMap<String, f64>,
}

/// Most custom metrics in one heartbeat.
pub const MAX_CUSTOM: usize = 32;
/// Longest custom metric name, `status` or `agent_version`, in bytes.
pub const MAX_LABEL: usize = 64;

impl Heartbeat {
    /// Why this heartbeat breaks the protocol's bounds, if it does: too
    /// many or too long custom names, a too long status or version, a
    /// number that is not finite or negative where it cannot be.
    pub fn problem(&self) -> Option<String> {
        if self.custom.len() > MAX_CUSTOM {
            return Some(format!("at most {MAX_CUSTOM} custom metrics"));
        }
        if let Some(k) = self.custom.keys().find(|k| k.is_empty() || k.len() > MAX_LABEL) {
            return Some(format!("custom metric name {k:?} must be 1 to {MAX_LABEL} bytes"));
        }
        if self.custom.values().any(|v| !v.is_finite()) {
            return Some("custom metrics must be finite numbers".into());
        }
        for (what, v) in [("status", &self.status), ("agent_version", &self.agent_version)] {
            if v.as_ref().is_some_and(|s| s.len() > MAX_LABEL || s.chars().any(char::is_control)) {
                return Some(format!("{what} must be at most {MAX_LABEL} printable bytes"));
            }
        }
        for (what, v) in [("cpu_percent", self.cpu_percent), ("load_1m", self.load_1m)] {
            if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                return Some(format!("{what} must be a finite number ≥ 0"));
            }
        }
        None
    }
}

/// The relay's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// The session handle the relay holds for this device.
    pub session: String,
    /// Server time, RFC 3339.
    pub server_time: String,
    /// How often the device should send heartbeats, seconds (absent from
    /// older relays: keep the configured interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_secs: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_are_bounded() {
        assert_eq!(Heartbeat::default().problem(), None);
        let full: Heartbeat = serde_json::from_str(
            r#"{"cpu_percent": 12.5, "load_1m": 0.4, "disk_used_bytes": 1, "disk_total_bytes": 2,
                "network_in_bytes": 3, "network_out_bytes": 4, "status": "healthy", "custom": {"temp_c": 41.5}}"#,
        )
        .unwrap();
        assert_eq!(full.problem(), None);
        let mut many = Heartbeat::default();
        for i in 0..33 {
            many.custom.insert(format!("m{i}"), 1.0);
        }
        assert!(many.problem().unwrap().contains("32"));
        let long = Heartbeat { status: Some("x".repeat(65)), ..Heartbeat::default() };
        assert!(long.problem().is_some());
        let negative = Heartbeat { load_1m: Some(-1.0), ..Heartbeat::default() };
        assert!(negative.problem().is_some());
    }
}
