//! Browser sessions, stored by the hash of their id. Every read checks both
//! expiries, so an expired session is never returned even before the purge.

use crate::{Result, Store, UserSession, with_pool};

/// The columns of [`UserSession`], in its field order.
macro_rules! user_session_columns {
    () => {
        "id_hash, public_id, user_id, created_at, last_seen_at, idle_expires_at, absolute_expires_at, user_agent, ip"
    };
}

impl Store {
    /// Stores a new session.
    pub async fn create_user_session(&self, s: &UserSession) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(concat!(
                "INSERT INTO user_sessions (",
                user_session_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ))
            .bind(&s.id_hash)
            .bind(&s.public_id)
            .bind(&s.user_id)
            .bind(s.created_at)
            .bind(s.last_seen_at)
            .bind(s.idle_expires_at)
            .bind(s.absolute_expires_at)
            .bind(&s.user_agent)
            .bind(&s.ip)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The live session with this id hash at `now`, if any.
    pub async fn get_user_session(&self, id_hash: &str, now: i64) -> Result<Option<UserSession>> {
        let sql = concat!(
            "SELECT ",
            user_session_columns!(),
            " FROM user_sessions WHERE id_hash = $1 AND idle_expires_at > $2 AND absolute_expires_at > $3"
        );
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, UserSession>(sql).bind(id_hash).bind(now).bind(now).fetch_optional(pool).await?)
        })
    }

    /// Records activity: moves the idle expiry (never past the absolute one).
    pub async fn touch_user_session(&self, id_hash: &str, now: i64, idle_expires_at: i64) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE user_sessions SET last_seen_at = $1, \
                 idle_expires_at = CASE WHEN $2 < absolute_expires_at THEN $3 ELSE absolute_expires_at END \
                 WHERE id_hash = $4",
            )
            .bind(now)
            .bind(idle_expires_at)
            .bind(idle_expires_at)
            .bind(id_hash)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The user's live sessions, newest first.
    pub async fn list_user_sessions(&self, user_id: &str, now: i64) -> Result<Vec<UserSession>> {
        let sql = concat!(
            "SELECT ",
            user_session_columns!(),
            " FROM user_sessions WHERE user_id = $1 AND idle_expires_at > $2 AND absolute_expires_at > $3 \
             ORDER BY created_at DESC, id_hash"
        );
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, UserSession>(sql).bind(user_id).bind(now).bind(now).fetch_all(pool).await?)
        })
    }

    /// Deletes one of `user_id`'s sessions; false when it is not theirs.
    pub async fn delete_user_session(&self, user_id: &str, id_hash: &str) -> Result<bool> {
        with_pool!(self, |pool| {
            let n = sqlx::query("DELETE FROM user_sessions WHERE user_id = $1 AND id_hash = $2")
                .bind(user_id)
                .bind(id_hash)
                .execute(pool)
                .await?
                .rows_affected();
            Ok(n == 1)
        })
    }

    /// Deletes the session of `user_id` with this public id; false when
    /// there is none (or it is someone else's).
    pub async fn delete_user_session_by_public_id(&self, user_id: &str, public_id: &str) -> Result<bool> {
        with_pool!(self, |pool| {
            let n = sqlx::query("DELETE FROM user_sessions WHERE user_id = $1 AND public_id = $2")
                .bind(user_id)
                .bind(public_id)
                .execute(pool)
                .await?
                .rows_affected();
            Ok(n >= 1)
        })
    }

    /// Deletes all of `user_id`'s sessions; returns how many.
    pub async fn delete_all_user_sessions(&self, user_id: &str) -> Result<u64> {
        with_pool!(self, |pool| {
            Ok(sqlx::query("DELETE FROM user_sessions WHERE user_id = $1")
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected())
        })
    }

    /// Deletes sessions expired at `now`; returns how many.
    pub async fn purge_user_sessions(&self, now: i64) -> Result<u64> {
        with_pool!(self, |pool| {
            Ok(sqlx::query("DELETE FROM user_sessions WHERE idle_expires_at <= $1 OR absolute_expires_at <= $2")
                .bind(now)
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected())
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{UserSession, now_ms, testdb};

    fn session(hash: &str, user: &str, now: i64, idle: i64, absolute: i64) -> UserSession {
        UserSession {
            id_hash: hash.into(),
            public_id: format!("pub-{hash}"),
            user_id: user.into(),
            created_at: now,
            last_seen_at: now,
            idle_expires_at: now + idle,
            absolute_expires_at: now + absolute,
            user_agent: "test".into(),
            ip: "127.0.0.1".into(),
        }
    }

    #[tokio::test]
    async fn sessions_expire_idle_and_absolute_and_are_scoped_to_their_user() {
        for store in testdb::stores().await {
            let alice = store.upsert_user_by_email("alice@example.com", "Alice").await.unwrap();
            let bob = store.upsert_user_by_email("bob@example.com", "Bob").await.unwrap();
            let now = now_ms();
            store.create_user_session(&session("live", &alice.id, now, 60_000, 600_000)).await.unwrap();
            store.create_user_session(&session("idle", &alice.id, now - 120_000, 60_000, 600_000)).await.unwrap();
            store.create_user_session(&session("old", &alice.id, now - 700_000, 900_000, 600_000)).await.unwrap();
            assert!(store.get_user_session("live", now).await.unwrap().is_some());
            assert!(store.get_user_session("idle", now).await.unwrap().is_none(), "idle-expired");
            assert!(store.get_user_session("old", now).await.unwrap().is_none(), "absolute-expired");
            assert_eq!(store.list_user_sessions(&alice.id, now).await.unwrap().len(), 1);

            // Touch extends the idle expiry but never past the absolute one.
            store.touch_user_session("live", now + 1, now + 10_000_000).await.unwrap();
            let s = store.get_user_session("live", now + 1).await.unwrap().unwrap();
            assert_eq!(s.idle_expires_at, s.absolute_expires_at);

            assert!(!store.delete_user_session(&bob.id, "live").await.unwrap(), "bob cannot end alice's session");
            assert!(!store.delete_user_session_by_public_id(&bob.id, "pub-live").await.unwrap());
            assert!(store.get_user_session("live", now + 1).await.unwrap().is_some());
            assert!(store.delete_user_session_by_public_id(&alice.id, "pub-live").await.unwrap());
            assert!(store.get_user_session("live", now + 1).await.unwrap().is_none());
            store.create_user_session(&session("live", &alice.id, now, 60_000, 600_000)).await.unwrap();
            assert!(store.delete_user_session(&alice.id, "live").await.unwrap());
            assert_eq!(store.purge_user_sessions(now).await.unwrap(), 2);
            store.create_user_session(&session("a", &alice.id, now, 60_000, 600_000)).await.unwrap();
            store.create_user_session(&session("b", &alice.id, now, 60_000, 600_000)).await.unwrap();
            assert_eq!(store.delete_all_user_sessions(&alice.id).await.unwrap(), 2);
        }
    }
}
