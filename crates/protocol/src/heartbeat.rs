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
    /// Free-form numeric metrics.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub custom: std::collections::BTreeMap<String, f64>,
}

/// The relay's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// The session handle the relay holds for this device.
    pub session: String,
    /// Server time, RFC 3339.
    pub server_time: String,
}
