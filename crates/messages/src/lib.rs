//! Store-and-forward messages to devices (SPEC §4, ADR 20).
//!
//! A message is validated here, persisted for every recipient in one
//! transaction, and only then announced. A device takes its unread messages
//! (highest priority first, then oldest) over its tunnel or over REST, and
//! acknowledges each after handling it; an unacknowledged message is handed
//! out again, with the same id, until it is read or its time to live runs
//! out: at-least-once, and nothing is lost when a process restarts, because
//! the queue is the database.
//!
//! Counters (`edgelink_messages_*_total`) go to the `metrics` facade.

use std::sync::Arc;
use std::time::Duration;

use edgelink_protocol::time::rfc3339;
use edgelink_store::{AckOutcome, MessageRow, NewMessage, QueueRefusal, Store};
use serde::{Deserialize, Serialize};

/// Read and expired messages are kept this long for the listing, then purged.
pub const KEPT_AFTER_FINISH: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most recipients of one message.
pub const MAX_RECIPIENTS: usize = 100;
/// Most bytes of a message's metadata object (as JSON).
pub const MAX_METADATA_BYTES: usize = 4096;
/// Most messages one take hands out.
pub const MAX_TAKE: i64 = 500;

/// The configured limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Most bytes of a message's content (as JSON).
    pub max_content_bytes: usize,
    /// Most unread, unexpired messages one device may hold.
    pub max_unread_per_device: u32,
    /// Time to live when the sender gives none.
    pub default_ttl: Duration,
    /// Longest time to live a sender may ask for.
    pub max_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_content_bytes: 32 * 1024,
            max_unread_per_device: 1000,
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// A message's priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Priority {
    /// After everything else.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Before everything else.
    High,
}

impl Priority {
    /// `low`, `normal` or `high`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }

    /// From its name.
    pub fn parse(s: &str) -> Option<Priority> {
        match s {
            "low" => Some(Priority::Low),
            "normal" => Some(Priority::Normal),
            "high" => Some(Priority::High),
            _ => None,
        }
    }

    fn rank(self) -> i64 {
        self as i64
    }

    fn from_rank(rank: i64) -> Priority {
        match rank {
            i64::MIN..=0 => Priority::Low,
            1 => Priority::Normal,
            _ => Priority::High,
        }
    }
}

/// Who sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// A signed-in user.
    User(String),
    /// A program with an API token (its id).
    Token(String),
    /// A service client of the OpenID provider (its subject).
    Service(String),
    /// A device (its id).
    Device(String),
}

impl Sender {
    fn parts(&self) -> (&'static str, &str) {
        match self {
            Sender::User(id) => ("user", id),
            Sender::Token(id) => ("token", id),
            Sender::Service(id) => ("service", id),
            Sender::Device(id) => ("device", id),
        }
    }
}

/// A message to send (the body of `POST /api/v1/messages`; seed 000's
/// field names are accepted as well).
#[derive(Debug, Clone, Deserialize)]
pub struct Outgoing {
    /// Recipient devices (ids, or node ids of seed-000 devices).
    #[serde(alias = "to_nodes")]
    pub to: Vec<String>,
    /// The application's type, e.g. `data_sync`.
    #[serde(alias = "type")]
    pub message_type: String,
    /// Any JSON value.
    pub content: serde_json::Value,
    /// `low`, `normal` (default) or `high`.
    #[serde(default)]
    pub priority: Option<String>,
    /// Seconds to live (default `default_ttl`).
    #[serde(default)]
    pub ttl: Option<u64>,
    /// A JSON object (e.g. `correlation_id`).
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A queued message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sent {
    /// Its id (`msg_…`).
    pub message_id: String,
    /// The recipient device ids, in the order given.
    pub recipients: Vec<String>,
    /// RFC 3339.
    pub expires_at: String,
}

/// One message as a recipient (or its owner) sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The id: the same on every hand-over, for de-duplication.
    pub id: String,
    /// The recipient device.
    pub device_id: String,
    /// The application's type.
    pub message_type: String,
    /// The content as sent.
    pub content: serde_json::Value,
    /// `low`, `normal` or `high`.
    pub priority: String,
    /// Seconds it was given to live.
    pub ttl: i64,
    /// The metadata object as sent.
    pub metadata: serde_json::Value,
    /// Who sent it: `{"kind": "user"|"token"|"service"|"device", "id"}`.
    pub sender: SenderView,
    /// The sending device's node id or id (seed 000), when a device sent it.
    pub from_node: Option<String>,
    /// `pending`, `delivered` (handed over, not yet acknowledged), `read`
    /// or `expired`.
    pub status: String,
    /// How many times it was handed over.
    pub attempts: i64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub expires_at: String,
    /// First hand-over, RFC 3339.
    pub delivered_at: Option<String>,
    /// When it was read or expired, RFC 3339.
    pub finished_at: Option<String>,
}

/// The sender of a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderView {
    /// `user`, `token`, `service` or `device`.
    pub kind: String,
    /// Its id.
    pub id: String,
}

impl From<MessageRow> for Message {
    fn from(r: MessageRow) -> Self {
        let from_node = (r.sender_kind == "device").then(|| r.sender_node_id.clone().unwrap_or(r.sender_id.clone()));
        Message {
            content: serde_json::from_str(&r.content).unwrap_or(serde_json::Value::Null),
            metadata: serde_json::from_str(&r.metadata).unwrap_or_else(|_| serde_json::json!({})),
            priority: Priority::from_rank(r.priority).as_str().into(),
            ttl: (r.expires_at - r.created_at) / 1000,
            sender: SenderView { kind: r.sender_kind, id: r.sender_id },
            from_node,
            created_at: rfc3339(r.created_at),
            expires_at: rfc3339(r.expires_at),
            delivered_at: r.delivered_at.map(rfc3339),
            finished_at: r.finished_at.map(rfc3339),
            id: r.id,
            device_id: r.device_id,
            message_type: r.message_type,
            status: r.status,
            attempts: r.attempts,
        }
    }
}

/// Message types edgelink uses itself; users and programs cannot send them.
pub const RESERVED_TYPE_PREFIX: &str = "edgelink.";
/// The type of a native command's notice (its content: `{"command_id"}`).
pub const COMMAND_TYPE: &str = edgelink_protocol::paths::COMMAND_NOTICE_TYPE;

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// A field breaks its rule.
    #[error("{0}")]
    Invalid(String),
    /// A recipient is not an active device of the sender's owner.
    #[error("no such device: {0}")]
    UnknownDevice(String),
    /// A recipient's queue is full.
    #[error("device {device} already holds {max} unread messages; wait for it to read some")]
    QueueFull {
        /// The full device.
        device: String,
        /// The cap.
        max: u32,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] edgelink_store::Error),
}

/// What acknowledging did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Read now (or already read: acks are idempotent).
    Read,
    /// Too late: its time to live ran out first.
    Expired,
    /// No such message for this device.
    Unknown,
}

/// The message service over a store.
#[derive(Debug, Clone)]
pub struct Messages {
    store: Store,
    limits: Limits,
}

/// The statuses a listing may filter by.
pub const STATUSES: [&str; 4] = ["pending", "delivered", "read", "expired"];

fn label(field: &str, value: &str) -> Result<String, SendError> {
    let v = value.trim();
    if v.is_empty() || v.len() > 64 || !v.chars().all(|c| c.is_ascii_graphic()) {
        return Err(SendError::Invalid(format!("{field} must be 1 to 64 printable ASCII characters without spaces")));
    }
    Ok(v.to_owned())
}

impl Messages {
    /// The service over `store` with `limits`.
    pub fn new(store: Store, limits: Limits) -> Self {
        Messages { store, limits }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Checks `out`, resolves its recipients among `owner_id`'s active
    /// devices and persists it for each; nothing is written on any error.
    pub async fn send(&self, owner_id: &str, sender: &Sender, out: Outgoing, now: i64) -> Result<Sent, SendError> {
        if out.message_type.starts_with(RESERVED_TYPE_PREFIX) {
            return Err(SendError::Invalid(format!(
                "message types starting with {RESERVED_TYPE_PREFIX:?} are edgelink's own"
            )));
        }
        self.send_any(owner_id, sender, out, now).await
    }

    /// [`Messages::send`] without the reserved-type check: for edgelink's
    /// own messages (a native command's notice).
    pub async fn send_reserved(
        &self,
        owner_id: &str,
        sender: &Sender,
        out: Outgoing,
        now: i64,
    ) -> Result<Sent, SendError> {
        self.send_any(owner_id, sender, out, now).await
    }

    async fn send_any(&self, owner_id: &str, sender: &Sender, out: Outgoing, now: i64) -> Result<Sent, SendError> {
        let message_type = label("message_type", &out.message_type)?;
        let priority = match out.priority.as_deref() {
            None => Priority::Normal,
            Some(p) => {
                Priority::parse(p).ok_or_else(|| SendError::Invalid("priority must be low, normal or high".into()))?
            }
        };
        let ttl = match out.ttl {
            None => self.limits.default_ttl,
            Some(0) => return Err(SendError::Invalid("ttl must be at least 1 second".into())),
            Some(s) if s > self.limits.max_ttl.as_secs() => {
                return Err(SendError::Invalid(format!(
                    "ttl must be at most {} seconds",
                    self.limits.max_ttl.as_secs()
                )));
            }
            Some(s) => Duration::from_secs(s),
        };
        let content = serde_json::to_string(&out.content).map_err(|e| SendError::Invalid(e.to_string()))?;
        if content.len() > self.limits.max_content_bytes {
            return Err(SendError::Invalid(format!(
                "content is {} bytes as JSON; at most {} are allowed",
                content.len(),
                self.limits.max_content_bytes
            )));
        }
        let metadata = serde_json::to_string(&out.metadata.unwrap_or_default()).unwrap_or_else(|_| "{}".into());
        if metadata.len() > MAX_METADATA_BYTES {
            return Err(SendError::Invalid(format!("metadata must be at most {MAX_METADATA_BYTES} bytes as JSON")));
        }
        if out.to.is_empty() || out.to.len() > MAX_RECIPIENTS {
            return Err(SendError::Invalid(format!("to must name 1 to {MAX_RECIPIENTS} devices")));
        }
        let mut recipients: Vec<String> = Vec::with_capacity(out.to.len());
        for name in &out.to {
            if name.is_empty() || name.len() > 128 {
                return Err(SendError::UnknownDevice(name.chars().take(128).collect()));
            }
            let device = self
                .store
                .owner_device_by_node(owner_id, name)
                .await?
                .ok_or_else(|| SendError::UnknownDevice(name.clone()))?;
            if !recipients.contains(&device.id) {
                recipients.push(device.id);
            }
        }
        let (kind, sender_id) = sender.parts();
        let msg = NewMessage {
            id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
            owner_id: owner_id.to_owned(),
            sender_kind: kind.into(),
            sender_id: sender_id.into(),
            message_type,
            content,
            metadata,
            priority: priority.rank(),
            created_at: now,
            expires_at: now + ttl.as_millis() as i64,
        };
        let max = self.limits.max_unread_per_device;
        match self.store.queue_message(&msg, &recipients, i64::from(max)).await? {
            Ok(()) => {}
            Err(QueueRefusal::UnknownDevice(d)) => return Err(SendError::UnknownDevice(d)),
            Err(QueueRefusal::Full(device)) => {
                metrics::counter!("edgelink_messages_refused_total", "reason" => "queue_full").increment(1);
                return Err(SendError::QueueFull { device, max });
            }
        }
        metrics::counter!("edgelink_messages_queued_total").increment(recipients.len() as u64);
        tracing::info!(message_id = %msg.id, recipients = recipients.len(), priority = priority.as_str(), "message queued");
        Ok(Sent { message_id: msg.id, recipients, expires_at: rfc3339(msg.expires_at) })
    }

    /// Hands `device_id` up to `limit` (1 to [`MAX_TAKE`]) of its unread
    /// messages, highest priority first, then oldest; each stays unread
    /// until acknowledged.
    pub async fn take(&self, device_id: &str, limit: i64, now: i64) -> Result<Vec<Message>, edgelink_store::Error> {
        let rows = self.store.take_pending_messages(device_id, now, limit.clamp(1, MAX_TAKE)).await?;
        let redelivered = rows.iter().filter(|r| r.attempts > 1).count() as u64;
        metrics::counter!("edgelink_messages_delivered_total").increment(rows.len() as u64 - redelivered);
        if redelivered > 0 {
            metrics::counter!("edgelink_messages_redelivered_total").increment(redelivered);
        }
        Ok(rows.into_iter().map(Message::from).collect())
    }

    /// `device_id` has handled `message_id`.
    pub async fn ack(&self, device_id: &str, message_id: &str, now: i64) -> Result<Ack, edgelink_store::Error> {
        if message_id.is_empty() || message_id.len() > 64 {
            return Ok(Ack::Unknown);
        }
        Ok(match self.store.ack_message(device_id, message_id, now).await? {
            AckOutcome::Read => {
                metrics::counter!("edgelink_messages_read_total").increment(1);
                Ack::Read
            }
            AckOutcome::AlreadyRead => Ack::Read,
            AckOutcome::Expired => Ack::Expired,
            AckOutcome::Unknown => Ack::Unknown,
        })
    }

    /// `owner_id`'s device's messages, newest first, optionally of one
    /// status (one of [`STATUSES`]).
    pub async fn list(
        &self,
        owner_id: &str,
        device_id: &str,
        status: Option<&str>,
        limit: i64,
        now: i64,
    ) -> Result<Vec<Message>, edgelink_store::Error> {
        let rows = self.store.device_messages(owner_id, device_id, status, now, limit.clamp(1, MAX_TAKE)).await?;
        Ok(rows.into_iter().map(Message::from).collect())
    }

    /// Marks expired messages every `every` and purges finished ones older
    /// than [`KEPT_AFTER_FINISH`] hourly, until the task is aborted.
    pub fn spawn_sweeper(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut last_purge = 0i64;
            loop {
                tokio::time::sleep(every).await;
                let now = edgelink_store::now_ms();
                match me.store.expire_messages(now).await {
                    Ok(0) => {}
                    Ok(n) => {
                        metrics::counter!("edgelink_messages_expired_total").increment(n);
                        tracing::info!(expired = n, "messages expired unread");
                    }
                    Err(e) => tracing::warn!(error = %e, "could not expire messages"),
                }
                if now - last_purge >= 3_600_000 {
                    last_purge = now;
                    if let Err(e) = me.store.purge_messages(now - KEPT_AFTER_FINISH.as_millis() as i64).await {
                        tracing::warn!(error = %e, "could not purge old messages");
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgelink_store::testing;

    fn out(to: &[&str], priority: Option<&str>) -> Outgoing {
        Outgoing {
            to: to.iter().map(|s| s.to_string()).collect(),
            message_type: "data_sync".into(),
            content: serde_json::json!({"n": 1}),
            priority: priority.map(str::to_owned),
            ttl: None,
            metadata: None,
        }
    }

    #[tokio::test]
    async fn rules_are_checked_before_anything_is_written() {
        let store = testing::sqlite().await;
        let alice = store.upsert_user_by_email("alice@example.com", "Alice").await.unwrap();
        let d = store.create_device(&testing::new_device(&alice.id)).await.unwrap();
        let limits = Limits { max_content_bytes: 20, max_unread_per_device: 1, ..Limits::default() };
        let m = Messages::new(store.clone(), limits);
        let me = Sender::User(alice.id.clone());
        let bad = |o: Outgoing| {
            let m = m.clone();
            let me = me.clone();
            let owner = alice.id.clone();
            async move { m.send(&owner, &me, o, 1_000).await.unwrap_err() }
        };
        assert!(matches!(bad(out(&[&d.id], Some("urgent"))).await, SendError::Invalid(_)));
        assert!(matches!(bad(Outgoing { ttl: Some(0), ..out(&[&d.id], None) }).await, SendError::Invalid(_)));
        assert!(matches!(bad(Outgoing { ttl: Some(u64::MAX), ..out(&[&d.id], None) }).await, SendError::Invalid(_)));
        let big = Outgoing { content: serde_json::json!("x".repeat(30)), ..out(&[&d.id], None) };
        assert!(matches!(bad(big).await, SendError::Invalid(_)));
        assert!(matches!(bad(out(&[], None)).await, SendError::Invalid(_)));
        assert!(matches!(bad(out(&["nope"], None)).await, SendError::UnknownDevice(_)));
        assert!(m.list(&alice.id, &d.id, None, 10, 1_000).await.unwrap().is_empty());
        // Duplicate recipients count once; the second message finds the queue full.
        let sent = m.send(&alice.id, &me, out(&[&d.id, &d.id], Some("high")), 1_000).await.unwrap();
        assert_eq!(sent.recipients, vec![d.id.clone()]);
        assert!(matches!(bad(out(&[&d.id], None)).await, SendError::QueueFull { max: 1, .. }));
        let taken = m.take(&d.id, 10, 2_000).await.unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!((taken[0].priority.as_str(), taken[0].ttl, taken[0].status.as_str()), ("high", 3600, "delivered"));
        assert_eq!(taken[0].content, serde_json::json!({"n": 1}));
        assert_eq!(m.ack(&d.id, &sent.message_id, 3_000).await.unwrap(), Ack::Read);
        assert_eq!(m.ack(&d.id, &sent.message_id, 3_000).await.unwrap(), Ack::Read);
        assert_eq!(m.ack(&d.id, "msg_unknown", 3_000).await.unwrap(), Ack::Unknown);
    }
}
