//! The tunnel session registry as stored: which relay holds which device.

use crate::{BeginWrite, Result, Store, TunnelSession, with_pool};

/// The columns of [`TunnelSession`], in its field order.
macro_rules! session_columns {
    () => {
        "id, device_id, owner_id, relay_id, relay_url, remote_addr, connected_at, \
         last_heartbeat, disconnected_at, close_reason"
    };
}

impl Store {
    /// Records a new open session. Any other open session of the same
    /// device is closed with `replaced` in the same transaction, so the
    /// registry never shows two.
    pub async fn open_session(&self, s: &TunnelSession) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "UPDATE tunnel_sessions SET disconnected_at = $1, close_reason = 'replaced' \
                 WHERE device_id = $2 AND disconnected_at IS NULL",
            )
            .bind(s.connected_at)
            .bind(&s.device_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO tunnel_sessions (id, device_id, owner_id, relay_id, relay_url, remote_addr, \
                 connected_at, last_heartbeat) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&s.id)
            .bind(&s.device_id)
            .bind(&s.owner_id)
            .bind(&s.relay_id)
            .bind(&s.relay_url)
            .bind(&s.remote_addr)
            .bind(s.connected_at)
            .bind(s.last_heartbeat)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Updates a session's last heartbeat.
    pub async fn session_heartbeat(&self, id: &str, at: i64) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE tunnel_sessions SET last_heartbeat = $1 WHERE id = $2 AND disconnected_at IS NULL")
                .bind(at)
                .bind(id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Marks a session closed (if it is still open).
    pub async fn close_session(&self, id: &str, at: i64, reason: &str) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE tunnel_sessions SET disconnected_at = $1, close_reason = $2 WHERE id = $3 AND disconnected_at IS NULL",
            )
            .bind(at)
            .bind(reason)
            .bind(id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Marks every open session of `relay_id` closed: used when a relay
    /// starts (its previous life may have crashed) and when it stops.
    pub async fn close_sessions_of_relay(&self, relay_id: &str, at: i64, reason: &str) -> Result<u64> {
        with_pool!(self, |pool| {
            Ok(sqlx::query(
                "UPDATE tunnel_sessions SET disconnected_at = $1, close_reason = $2 \
                 WHERE relay_id = $3 AND disconnected_at IS NULL",
            )
            .bind(at)
            .bind(reason)
            .bind(relay_id)
            .execute(pool)
            .await?
            .rows_affected())
        })
    }

    /// A session by id, open or closed.
    pub async fn get_session(&self, id: &str) -> Result<Option<TunnelSession>> {
        let sql = concat!("SELECT ", session_columns!(), " FROM tunnel_sessions WHERE id = $1");
        with_pool!(self, |pool| Ok(sqlx::query_as::<_, TunnelSession>(sql).bind(id).fetch_optional(pool).await?))
    }

    /// All open sessions of `owner_id`'s devices.
    pub async fn open_sessions_of_owner(&self, owner_id: &str) -> Result<Vec<TunnelSession>> {
        let sql = concat!(
            "SELECT ",
            session_columns!(),
            " FROM tunnel_sessions WHERE owner_id = $1 AND disconnected_at IS NULL ORDER BY connected_at DESC"
        );
        with_pool!(self, |pool| Ok(sqlx::query_as::<_, TunnelSession>(sql).bind(owner_id).fetch_all(pool).await?))
    }

    /// The open session of `owner_id`'s device, if any.
    pub async fn open_session_for_device(&self, owner_id: &str, device_id: &str) -> Result<Option<TunnelSession>> {
        let sql = concat!(
            "SELECT ",
            session_columns!(),
            " FROM tunnel_sessions WHERE owner_id = $1 AND device_id = $2 AND disconnected_at IS NULL \
             ORDER BY connected_at DESC LIMIT 1"
        );
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, TunnelSession>(sql).bind(owner_id).bind(device_id).fetch_optional(pool).await?)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{TunnelSession, now_ms, testdb};

    fn session(id: &str, device: &str, owner: &str) -> TunnelSession {
        let now = now_ms();
        TunnelSession {
            id: id.into(),
            device_id: device.into(),
            owner_id: owner.into(),
            relay_id: "relay-a".into(),
            relay_url: "http://127.0.0.1:3801".into(),
            remote_addr: "127.0.0.1:5000".into(),
            connected_at: now,
            last_heartbeat: now,
            disconnected_at: None,
            close_reason: None,
        }
    }

    #[tokio::test]
    async fn new_session_replaces_open_one_and_relay_restart_closes_all() {
        for store in testdb::stores().await {
            let u = store.upsert_user_by_email("a@example.com", "A").await.unwrap();
            let bob = store.upsert_user_by_email("b@example.com", "B").await.unwrap();
            let d = store.create_device(&testdb::new_device(&u.id)).await.unwrap();
            store.open_session(&session("s1", &d.id, &u.id)).await.unwrap();
            store.open_session(&session("s2", &d.id, &u.id)).await.unwrap();
            let s1 = store.get_session("s1").await.unwrap().unwrap();
            assert_eq!(s1.close_reason.as_deref(), Some("replaced"));
            let open = store.open_session_for_device(&u.id, &d.id).await.unwrap().unwrap();
            assert_eq!(open.id, "s2");
            assert!(store.open_session_for_device(&bob.id, &d.id).await.unwrap().is_none());
            store.session_heartbeat("s2", open.last_heartbeat + 5).await.unwrap();
            assert_eq!(store.close_sessions_of_relay("relay-a", now_ms(), "relay_restarted").await.unwrap(), 1);
            assert!(store.open_session_for_device(&u.id, &d.id).await.unwrap().is_none());
            store.close_session("s2", now_ms(), "timeout").await.unwrap();
            let s2 = store.get_session("s2").await.unwrap().unwrap();
            assert_eq!(s2.close_reason.as_deref(), Some("relay_restarted"));
        }
    }
}
