//! Rows the store returns.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct User {
    /// Id.
    pub id: String,
    /// Email address. Unique among verified ones; an unverified one is
    /// shown, never used to find or claim a user.
    pub email: String,
    /// Whether the provider (or the operator who created the user)
    /// vouches for the email.
    pub email_verified: bool,
    /// Display name.
    pub name: String,
    /// Creation time, ms.
    pub created_at: i64,
}

/// A device as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Device {
    /// Id.
    pub id: String,
    /// Owning user.
    pub owner_id: String,
    /// Display name.
    pub name: String,
    /// Free-form type ("gateway", "camera", …).
    pub device_type: String,
    /// What the device offers ("http", "ssh", …).
    #[sqlx(try_from = "String")]
    pub capabilities: Capabilities,
    /// Region label.
    pub region: Option<String>,
    /// Free-form metadata object.
    #[sqlx(try_from = "String")]
    pub metadata: Metadata,
    /// SPKI PEM public key.
    pub public_key: String,
    /// Signature algorithm of the key.
    pub key_algorithm: String,
    /// Creation time, ms.
    pub created_at: i64,
    /// Last successful authentication, ms.
    pub last_seen_at: Option<i64>,
    /// Revocation time, ms; a revoked device can never authenticate.
    pub revoked_at: Option<i64>,
    /// The name a seed-000 client chose for it (`node_id`), unique in the
    /// deployment.
    pub node_id: Option<String>,
}

/// What a new device is created with.
#[derive(Debug, Clone)]
pub struct NewDevice {
    /// Owning user.
    pub owner_id: String,
    /// Display name.
    pub name: String,
    /// Type.
    pub device_type: String,
    /// Capabilities.
    pub capabilities: Capabilities,
    /// Region.
    pub region: Option<String>,
    /// Metadata.
    pub metadata: Metadata,
    /// SPKI PEM.
    pub public_key: String,
    /// Algorithm name.
    pub key_algorithm: String,
    /// Seed 000's client-chosen name, if registered that way.
    pub node_id: Option<String>,
}

/// What device authentication needs to know about a device, looked up by
/// its id alone (the device proves ownership of the key; no user is
/// involved).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeviceCredentials {
    /// Device id.
    pub id: String,
    /// Owning user.
    pub owner_id: String,
    /// SPKI PEM.
    pub public_key: String,
    /// Algorithm name.
    pub key_algorithm: String,
    /// Revocation time, ms.
    pub revoked_at: Option<i64>,
}

/// One tunnel session in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct TunnelSession {
    /// Opaque handle (never a credential).
    pub id: String,
    /// Device.
    pub device_id: String,
    /// Owner of the device.
    pub owner_id: String,
    /// Relay instance holding it.
    pub relay_id: String,
    /// That relay's internal API URL.
    pub relay_url: String,
    /// Device's address as the relay saw it.
    pub remote_addr: String,
    /// ms.
    pub connected_at: i64,
    /// ms.
    pub last_heartbeat: i64,
    /// ms, when closed.
    pub disconnected_at: Option<i64>,
    /// Why it closed.
    pub close_reason: Option<String>,
}

/// What rotating a refresh token led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The old token was spent and the new one stored.
    Rotated {
        /// Device the token belongs to.
        device_id: String,
        /// Its owner.
        owner_id: String,
    },
    /// The token had already been used: the whole family is now revoked
    /// (someone holds a stolen copy).
    Reused {
        /// Device the token belongs to.
        device_id: String,
        /// Its owner.
        owner_id: String,
    },
    /// No such token.
    Unknown,
    /// The token expired.
    Expired,
    /// The token (or its device) was revoked.
    Revoked,
}

/// A browser session, stored by the hash of its cookie id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct UserSession {
    /// SHA-256 of the session id, hex (the id itself is never stored).
    pub id_hash: String,
    /// Random handle the user sees in the session list (not a secret).
    pub public_id: String,
    /// The signed-in user.
    pub user_id: String,
    /// ms.
    pub created_at: i64,
    /// ms.
    pub last_seen_at: i64,
    /// The session ends at this time unless used before (ms).
    pub idle_expires_at: i64,
    /// The session ends at this time whatever happens (ms).
    pub absolute_expires_at: i64,
    /// The browser's User-Agent at sign-in (truncated by the caller).
    pub user_agent: String,
    /// The client address at sign-in.
    pub ip: String,
}

/// A device's capability names, kept as a JSON array in one TEXT column on
/// both backends. The rules for what a capability may be live with the
/// callers that accept them (api's device fields); the store only keeps
/// and reads them back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Capabilities(pub Vec<String>);

/// A device's metadata: one JSON object, kept as TEXT on both backends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metadata(pub Map<String, Value>);

impl Capabilities {
    /// The column's text.
    pub fn to_column(&self) -> String {
        Value::from(self.0.clone()).to_string()
    }
}

impl Metadata {
    /// The column's text.
    pub fn to_column(&self) -> String {
        Value::Object(self.0.clone()).to_string()
    }
}

/// A column whose text is not what the store wrote (edited by hand, or
/// damaged): reading the row fails loudly instead of showing an empty value.
impl TryFrom<String> for Capabilities {
    type Error = serde_json::Error;

    fn try_from(column: String) -> Result<Self, Self::Error> {
        serde_json::from_str(&column)
    }
}

impl TryFrom<String> for Metadata {
    type Error = serde_json::Error;

    fn try_from(column: String) -> Result<Self, Self::Error> {
        serde_json::from_str(&column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_fields_round_trip_through_their_column_text() {
        let caps = Capabilities(vec!["http".into(), "ssh".into()]);
        assert_eq!(caps.to_column(), r#"["http","ssh"]"#);
        assert_eq!(Capabilities::try_from(caps.to_column()).unwrap(), caps);
        let mut m = Map::new();
        m.insert("floor".into(), Value::from(1));
        let meta = Metadata(m);
        assert_eq!(Metadata::try_from(meta.to_column()).unwrap(), meta);
        assert_eq!(Metadata::default().to_column(), "{}");
        assert!(Capabilities::try_from("{}".to_owned()).is_err());
        assert!(Metadata::try_from("[1]".to_owned()).is_err());
    }
}
