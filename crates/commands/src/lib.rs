//! Remote commands through seed 001's intermediaries: registering them
//! (an id and a key shown once, stored as a keyed digest, rotatable,
//! revocable, optionally limited to addresses), logging them in when they
//! connect to the Socket.IO namespace `/proxy`, and the [`Hub`] that sends
//! `execute_command` to a connected one, takes `command_result` back and
//! fails a command over to another member of its group when its
//! intermediary drops before answering.
//!
//! Commands are stored before they are dispatched, without their SSH
//! credentials: those stay in memory until an intermediary answers.

mod hub;
pub mod native;

use std::net::IpAddr;

use edgelink_auth::cookie::CookieKeys;
use edgelink_protocol::net::Cidr;
use edgelink_protocol::time::rfc3339;
use edgelink_store::{Intermediary, Store};
use serde::{Deserialize, Serialize};

pub use hub::{CommandRequest, Destination, Emitter, Hub, Kicker, SubmitError, TargetSpec};

/// Digest purpose of intermediary keys.
const PURPOSE: &str = "intermediary key";
/// Prefix of intermediary keys.
const KEY_PREFIX: &str = "elp_";
/// Intermediaries per user.
pub const MAX_PER_USER: usize = 100;
/// Allowlist entries per intermediary.
const MAX_ALLOWED_IPS: usize = 32;

/// Why an intermediary cannot be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// Name empty, too long or with control characters.
    #[error("name must be 1–100 printable characters")]
    Name,
    /// Group name too long or with control characters.
    #[error("group must be at most 100 printable characters")]
    Group,
    /// A bad allowlist entry.
    #[error("allowed_ips: {0}")]
    Address(String),
    /// The user has too many.
    #[error("at most {MAX_PER_USER} intermediaries per user")]
    TooMany,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] edgelink_store::Error),
}

/// Why an intermediary's connection is refused. The text never echoes the
/// key.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// No proxyId or apiKey in the query or the auth payload.
    #[error("authentication failed: proxyId and apiKey are required")]
    Missing,
    /// Unknown id, wrong key or revoked.
    #[error("authentication failed: unknown proxyId or wrong apiKey")]
    Invalid,
    /// The address is not on its allowlist.
    #[error("authentication failed: this address may not connect as this intermediary")]
    Address,
    /// The database failed.
    #[error("authentication unavailable; retry")]
    Store(#[from] edgelink_store::Error),
}

/// `POST /api/v1/proxies`.
#[derive(Debug, Deserialize)]
pub struct CreateRequest {
    /// A name for people.
    pub name: String,
    /// A group it serves with others ('' or absent: none).
    #[serde(default)]
    pub group: Option<String>,
    /// Addresses/blocks it may connect from; empty = anywhere.
    #[serde(default)]
    pub allowed_ips: Vec<String>,
}

/// An intermediary as its owner sees it.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    /// Its `proxyId`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Group ('' = none).
    pub group: String,
    /// Allowlist.
    pub allowed_ips: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, when the key was last replaced.
    pub rotated_at: Option<String>,
    /// RFC 3339, its last connection.
    pub last_seen_at: Option<String>,
    /// Address of its last connection.
    pub last_seen_ip: Option<String>,
    /// Connected to this api-server now.
    pub connected: bool,
}

/// Registering and logging in intermediaries.
pub struct Intermediaries {
    store: Store,
    keys: CookieKeys,
}

fn printable(s: &str, max: usize) -> bool {
    s.chars().count() <= max && !s.chars().any(char::is_control)
}

impl Intermediaries {
    /// Over `store`, digesting keys with `keys`.
    pub fn new(store: Store, keys: CookieKeys) -> Self {
        Intermediaries { store, keys }
    }

    fn digest(&self, key: &str) -> String {
        self.keys.keyed_digests(PURPOSE, key).swap_remove(0)
    }

    /// Registers one for `owner_id`; returns it and its key (shown once).
    pub async fn create(
        &self,
        owner_id: &str,
        req: &CreateRequest,
        now: i64,
    ) -> Result<(Intermediary, String), CreateError> {
        let name = req.name.trim();
        if name.is_empty() || !printable(name, 100) {
            return Err(CreateError::Name);
        }
        let group = req.group.as_deref().unwrap_or("").trim();
        if !printable(group, 100) {
            return Err(CreateError::Group);
        }
        let blocks =
            edgelink_protocol::net::parse_allowlist(&req.allowed_ips, MAX_ALLOWED_IPS).map_err(CreateError::Address)?;
        if self.store.list_intermediaries(owner_id).await?.len() >= MAX_PER_USER {
            return Err(CreateError::TooMany);
        }
        let key = edgelink_auth::secret::generate(KEY_PREFIX);
        let row =
            self.store.create_intermediary(owner_id, name, group, &self.digest(&key), &blocks.join(" "), now).await?;
        tracing::info!(proxy_id = %row.id, user_id = owner_id, "intermediary registered");
        Ok((row, key))
    }

    /// A new key for `owner_id`'s intermediary `id` (the old one stops
    /// working); `None` when they have no such intermediary.
    pub async fn rotate(&self, owner_id: &str, id: &str, now: i64) -> Result<Option<String>, edgelink_store::Error> {
        let key = edgelink_auth::secret::generate(KEY_PREFIX);
        let done = self.store.rotate_intermediary_key(owner_id, id, &self.digest(&key), now).await?;
        if done {
            tracing::info!(proxy_id = id, user_id = owner_id, "intermediary key rotated");
        }
        Ok(done.then_some(key))
    }

    /// Checks a connecting intermediary's id and key (and address).
    pub async fn login(&self, proxy_id: &str, key: &str, ip: Option<IpAddr>) -> Result<Intermediary, LoginError> {
        if proxy_id.is_empty() || key.is_empty() {
            return Err(LoginError::Missing);
        }
        if proxy_id.len() > 64 || key.len() > 128 {
            return Err(LoginError::Invalid);
        }
        let Some((row, stored)) = self.store.intermediary_for_login(proxy_id).await? else {
            return Err(LoginError::Invalid);
        };
        let presented = self.keys.keyed_digests(PURPOSE, key);
        let mut ok = false;
        for d in &presented {
            ok |= edgelink_auth::secret::ct_eq(d.as_bytes(), stored.as_bytes());
        }
        if !ok {
            return Err(LoginError::Invalid);
        }
        if !row.allowed_ips.is_empty() {
            let allowed = ip.is_some_and(|ip| {
                row.allowed_ips.split_whitespace().filter_map(|b| b.parse::<Cidr>().ok()).any(|c| c.contains(ip))
            });
            if !allowed {
                return Err(LoginError::Address);
            }
        }
        let ip_text = ip.map(|i| i.to_string());
        self.store.touch_intermediary(&row.id, edgelink_store::now_ms(), ip_text.as_deref()).await?;
        Ok(row)
    }
}

/// The owner's view of a row.
pub fn view(row: &Intermediary, connected: bool) -> View {
    View {
        id: row.id.clone(),
        name: row.name.clone(),
        group: row.group_name.clone(),
        allowed_ips: row.allowed_ips.split_whitespace().map(str::to_owned).collect(),
        created_at: rfc3339(row.created_at),
        rotated_at: row.rotated_at.map(rfc3339),
        last_seen_at: row.last_seen_at.map(rfc3339),
        last_seen_ip: row.last_seen_ip.clone(),
        connected,
    }
}
