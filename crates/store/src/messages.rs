//! Store-and-forward messages: one `messages` row per message, one
//! `message_deliveries` row per recipient device carrying its state
//! (`pending` → `delivered` → `read`, or `expired`). The rules (sizes,
//! priorities, who may send to whom) are `edgelink-messages`'; this module
//! only keeps the rows consistent and tenancy-filtered.

use serde::Serialize;

use crate::{BeginWrite, Result, Store, with_pool};

/// A message to write.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Its id (`msg_…`).
    pub id: String,
    /// The owner of the sender and of every recipient.
    pub owner_id: String,
    /// `user`, `token`, `service` or `device`.
    pub sender_kind: String,
    /// The user, token, service subject or device id.
    pub sender_id: String,
    /// The application's message type.
    pub message_type: String,
    /// JSON text.
    pub content: String,
    /// JSON object text.
    pub metadata: String,
    /// 0 low, 1 normal, 2 high.
    pub priority: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub expires_at: i64,
}

/// One message as one recipient sees it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct MessageRow {
    /// The message id.
    pub id: String,
    /// The owner.
    pub owner_id: String,
    /// The recipient device.
    pub device_id: String,
    /// `user`, `token`, `service` or `device`.
    pub sender_kind: String,
    /// The sender's id.
    pub sender_id: String,
    /// The sending device's node id (seed 000 `from_node`), if it has one.
    pub sender_node_id: Option<String>,
    /// The application's type.
    pub message_type: String,
    /// JSON text.
    pub content: String,
    /// JSON object text.
    pub metadata: String,
    /// 0 low, 1 normal, 2 high.
    pub priority: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub expires_at: i64,
    /// `pending`, `delivered`, `read` or `expired` (as of the query).
    pub status: String,
    /// How many times it was handed to the device.
    pub attempts: i64,
    /// First hand-over, Unix ms.
    pub delivered_at: Option<i64>,
    /// When it was read or expired, Unix ms.
    pub finished_at: Option<i64>,
}

/// Why a message was not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueRefusal {
    /// This recipient (an id the caller gave) is not an active device of
    /// the owner.
    UnknownDevice(String),
    /// This recipient already holds the allowed number of unread messages.
    Full(String),
}

/// What acknowledging a message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// It is now read.
    Read,
    /// It was read before (acks are idempotent).
    AlreadyRead,
    /// Its time to live ran out first.
    Expired,
    /// No such message for this device.
    Unknown,
}

/// The columns of [`MessageRow`], as the status is at `$now`.
macro_rules! message_select {
    () => {
        "SELECT m.id, m.owner_id, d.device_id, m.sender_kind, m.sender_id, s.node_id AS sender_node_id, \
         m.message_type, m.content, m.metadata, m.priority, m.created_at, m.expires_at, \
         CASE WHEN d.status IN ('pending', 'delivered') AND d.expires_at <= $1 THEN 'expired' ELSE d.status END \
         AS status, d.attempts, d.delivered_at, d.finished_at \
         FROM message_deliveries d JOIN messages m ON m.id = d.message_id \
         LEFT JOIN devices s ON m.sender_kind = 'device' AND s.id = m.sender_id "
    };
}

impl Store {
    /// Writes `msg` for each of `recipients` (device ids) in one
    /// transaction, unless one of them is not an active device of the
    /// owner or already holds `max_unread` unread, unexpired messages; then
    /// nothing is written. Concurrent senders on PostgreSQL can overshoot
    /// the cap by at most their number.
    pub async fn queue_message(
        &self,
        msg: &NewMessage,
        recipients: &[String],
        max_unread: i64,
    ) -> Result<std::result::Result<(), QueueRefusal>> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO messages (id, owner_id, sender_kind, sender_id, message_type, content, metadata, \
                 priority, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&msg.id)
            .bind(&msg.owner_id)
            .bind(&msg.sender_kind)
            .bind(&msg.sender_id)
            .bind(&msg.message_type)
            .bind(&msg.content)
            .bind(&msg.metadata)
            .bind(msg.priority)
            .bind(msg.created_at)
            .bind(msg.expires_at)
            .execute(&mut *tx)
            .await?;
            for device_id in recipients {
                let active: Option<(String,)> =
                    sqlx::query_as("SELECT id FROM devices WHERE owner_id = $1 AND id = $2 AND revoked_at IS NULL")
                        .bind(&msg.owner_id)
                        .bind(device_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                if active.is_none() {
                    tx.rollback().await?;
                    return Ok(Err(QueueRefusal::UnknownDevice(device_id.clone())));
                }
                let queued = sqlx::query(
                    "INSERT INTO message_deliveries (message_id, device_id, owner_id, priority, created_at, \
                     expires_at, status) SELECT $1, $2, $3, $4, $5, $6, 'pending' WHERE \
                     (SELECT COUNT(*) FROM message_deliveries WHERE device_id = $2 \
                      AND status IN ('pending', 'delivered') AND expires_at > $5) < $7",
                )
                .bind(&msg.id)
                .bind(device_id)
                .bind(&msg.owner_id)
                .bind(msg.priority)
                .bind(msg.created_at)
                .bind(msg.expires_at)
                .bind(max_unread)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if queued == 0 {
                    tx.rollback().await?;
                    return Ok(Err(QueueRefusal::Full(device_id.clone())));
                }
            }
            tx.commit().await?;
            Ok(Ok(()))
        })
    }

    /// Hands out up to `limit` of `device_id`'s unread, unexpired messages,
    /// highest priority first, then oldest, and marks them delivered (one
    /// more attempt). They stay unread, and are handed out again, until
    /// acknowledged: at-least-once.
    pub async fn take_pending_messages(&self, device_id: &str, now: i64, limit: i64) -> Result<Vec<MessageRow>> {
        let sql = concat!(message_select!(), "WHERE d.device_id = $2 AND d.message_id = $3");
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            // Write first: the UPDATE takes SQLite's write lock at once (a
            // read first would make the upgrade fail under concurrent
            // writers), and picks the rows in queue order.
            let marked: Vec<(String,)> = sqlx::query_as(
                "UPDATE message_deliveries SET status = 'delivered', attempts = attempts + 1, \
                 delivered_at = COALESCE(delivered_at, $1) WHERE device_id = $2 AND message_id IN \
                 (SELECT message_id FROM message_deliveries WHERE device_id = $2 \
                  AND status IN ('pending', 'delivered') AND expires_at > $1 \
                  ORDER BY priority DESC, created_at, message_id LIMIT $3) RETURNING message_id",
            )
            .bind(now)
            .bind(device_id)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
            let mut rows: Vec<MessageRow> = Vec::with_capacity(marked.len());
            for (id,) in &marked {
                if let Some(row) =
                    sqlx::query_as(sql).bind(now).bind(device_id).bind(id).fetch_optional(&mut *tx).await?
                {
                    rows.push(row);
                }
            }
            tx.commit().await?;
            rows.sort_by(|a, b| {
                b.priority.cmp(&a.priority).then(a.created_at.cmp(&b.created_at)).then(a.id.cmp(&b.id))
            });
            Ok(rows)
        })
    }

    /// Whether `device_id` has a message never handed out yet (one queued
    /// while its tunnel came up may have missed its notice).
    pub async fn has_undelivered_messages(&self, device_id: &str, now: i64) -> Result<bool> {
        with_pool!(self, |pool| {
            let found: Option<(i64,)> = sqlx::query_as(
                "SELECT 1 FROM message_deliveries WHERE device_id = $1 AND status = 'pending' AND expires_at > $2 \
                 LIMIT 1",
            )
            .bind(device_id)
            .bind(now)
            .fetch_optional(pool)
            .await?;
            Ok(found.is_some())
        })
    }

    /// `device_id` read `message_id`.
    pub async fn ack_message(&self, device_id: &str, message_id: &str, now: i64) -> Result<AckOutcome> {
        with_pool!(self, |pool| {
            let done = sqlx::query(
                "UPDATE message_deliveries SET status = 'read', finished_at = $1 WHERE device_id = $2 \
                 AND message_id = $3 AND status IN ('pending', 'delivered') AND expires_at > $1",
            )
            .bind(now)
            .bind(device_id)
            .bind(message_id)
            .execute(pool)
            .await?
            .rows_affected();
            if done == 1 {
                return Ok(AckOutcome::Read);
            }
            let row: Option<(String,)> =
                sqlx::query_as("SELECT status FROM message_deliveries WHERE device_id = $1 AND message_id = $2")
                    .bind(device_id)
                    .bind(message_id)
                    .fetch_optional(pool)
                    .await?;
            Ok(match row.as_ref().map(|r| r.0.as_str()) {
                None => AckOutcome::Unknown,
                Some("read") => AckOutcome::AlreadyRead,
                Some(_) => AckOutcome::Expired,
            })
        })
    }

    /// `owner_id`'s device's messages, newest first, optionally only those
    /// with `status` (as of `now`).
    pub async fn device_messages(
        &self,
        owner_id: &str,
        device_id: &str,
        status: Option<&str>,
        now: i64,
        limit: i64,
    ) -> Result<Vec<MessageRow>> {
        let sql = concat!(
            "SELECT * FROM (",
            message_select!(),
            "WHERE d.owner_id = $2 AND d.device_id = $3) q WHERE ($4 IS NULL OR q.status = $4) \
             ORDER BY q.created_at DESC, q.id LIMIT $5"
        );
        with_pool!(self, |pool| {
            Ok(sqlx::query_as(sql)
                .bind(now)
                .bind(owner_id)
                .bind(device_id)
                .bind(status)
                .bind(limit)
                .fetch_all(pool)
                .await?)
        })
    }

    /// How many of `owner_id`'s deliveries are in each status (as of `now`).
    pub async fn message_counts(&self, owner_id: &str, now: i64) -> Result<Vec<(String, i64)>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as(
                "SELECT q.status, COUNT(*) FROM (SELECT CASE WHEN status IN ('pending', 'delivered') \
                 AND expires_at <= $1 THEN 'expired' ELSE status END AS status FROM message_deliveries \
                 WHERE owner_id = $2) q GROUP BY q.status ORDER BY q.status",
            )
            .bind(now)
            .bind(owner_id)
            .fetch_all(pool)
            .await?)
        })
    }

    /// Marks every unread message whose time ran out as expired; returns
    /// how many.
    pub async fn expire_messages(&self, now: i64) -> Result<u64> {
        with_pool!(self, |pool| {
            Ok(sqlx::query(
                "UPDATE message_deliveries SET status = 'expired', finished_at = $1 \
                 WHERE status IN ('pending', 'delivered') AND expires_at <= $1",
            )
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected())
        })
    }

    /// Drops read and expired deliveries finished before `before`, and
    /// messages left without deliveries; returns how many deliveries.
    pub async fn purge_messages(&self, before: i64) -> Result<u64> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let n =
                sqlx::query("DELETE FROM message_deliveries WHERE status IN ('read', 'expired') AND finished_at < $1")
                    .bind(before)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            sqlx::query(
                "DELETE FROM messages WHERE created_at < $1 AND NOT EXISTS \
                 (SELECT 1 FROM message_deliveries d WHERE d.message_id = messages.id)",
            )
            .bind(before)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(n)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdb;
    use crate::testing::new_device;

    fn msg(id: &str, owner: &str, priority: i64, created: i64, ttl: i64) -> NewMessage {
        NewMessage {
            id: id.into(),
            owner_id: owner.into(),
            sender_kind: "user".into(),
            sender_id: owner.into(),
            message_type: "t".into(),
            content: "{}".into(),
            metadata: "{}".into(),
            priority,
            created_at: created,
            expires_at: created + ttl,
        }
    }

    #[tokio::test]
    async fn queue_orders_by_priority_then_age_and_is_at_least_once() {
        for store in testdb::stores().await {
            let alice = store.upsert_user_by_email("alice@example.com", "Alice").await.unwrap();
            let d = store.create_device(&new_device(&alice.id)).await.unwrap();
            let to = [d.id.clone()];
            for (id, p, at) in [("low", 0, 1_000), ("n1", 1, 2_000), ("high", 2, 3_000), ("n2", 1, 1_500)] {
                store.queue_message(&msg(id, &alice.id, p, at, 60_000), &to, 100).await.unwrap().unwrap();
            }
            let got = store.take_pending_messages(&d.id, 10_000, 10).await.unwrap();
            assert_eq!(got.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["high", "n2", "n1", "low"]);
            assert!(got.iter().all(|m| m.status == "delivered" && m.attempts == 1));
            // Not acknowledged: handed out again, same ids.
            assert_eq!(store.ack_message(&d.id, "high", 11_000).await.unwrap(), AckOutcome::Read);
            assert_eq!(store.ack_message(&d.id, "high", 11_000).await.unwrap(), AckOutcome::AlreadyRead);
            assert_eq!(store.ack_message(&d.id, "nope", 11_000).await.unwrap(), AckOutcome::Unknown);
            let again = store.take_pending_messages(&d.id, 12_000, 2).await.unwrap();
            assert_eq!(again.iter().map(|m| (m.id.as_str(), m.attempts)).collect::<Vec<_>>(), [("n2", 2), ("n1", 2)]);
        }
    }

    #[tokio::test]
    async fn expiry_cap_tenancy_and_deletion() {
        for store in testdb::stores().await {
            let alice = store.upsert_user_by_email("alice@example.com", "Alice").await.unwrap();
            let bob = store.upsert_user_by_email("bob@example.com", "Bob").await.unwrap();
            let d = store.create_device(&new_device(&alice.id)).await.unwrap();
            let bobs = store.create_device(&new_device(&bob.id)).await.unwrap();
            let to = [d.id.clone()];
            store.queue_message(&msg("short", &alice.id, 1, 1_000, 1_000), &to, 2).await.unwrap().unwrap();
            store.queue_message(&msg("long", &alice.id, 1, 1_000, 100_000), &to, 2).await.unwrap().unwrap();
            // Full: nothing of the refused message is written.
            let full = store.queue_message(&msg("third", &alice.id, 1, 1_500, 100_000), &to, 2).await.unwrap();
            assert_eq!(full, Err(QueueRefusal::Full(d.id.clone())));
            // Another owner's device is unknown to alice.
            let other =
                store.queue_message(&msg("x", &alice.id, 1, 1_500, 100_000), std::slice::from_ref(&bobs.id), 2).await;
            assert_eq!(other.unwrap(), Err(QueueRefusal::UnknownDevice(bobs.id.clone())));
            // Once "short" expires there is room again.
            store.queue_message(&msg("third", &alice.id, 1, 3_000, 100_000), &to, 2).await.unwrap().unwrap();
            let pending = store.take_pending_messages(&d.id, 3_000, 10).await.unwrap();
            assert_eq!(pending.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["long", "third"]);
            assert_eq!(store.ack_message(&d.id, "short", 3_000).await.unwrap(), AckOutcome::Expired);
            let expired = store.device_messages(&alice.id, &d.id, Some("expired"), 3_000, 10).await.unwrap();
            assert_eq!(expired.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["short"]);
            assert!(store.device_messages(&bob.id, &d.id, None, 3_000, 10).await.unwrap().is_empty());
            let counts = store.message_counts(&alice.id, 3_000).await.unwrap();
            assert_eq!(counts, [("delivered".to_owned(), 2), ("expired".to_owned(), 1)]);
            assert!(store.message_counts(&bob.id, 3_000).await.unwrap().is_empty());
            assert_eq!(store.expire_messages(3_000).await.unwrap(), 1);
            assert_eq!(store.purge_messages(10_000).await.unwrap(), 1);
            // Deleting the device deletes its queue.
            assert!(store.revoke_device(&alice.id, &d.id).await.unwrap());
            assert!(store.device_messages(&alice.id, &d.id, None, 3_000, 10).await.unwrap().is_empty());
        }
    }
}
