//! Device challenges and refresh tokens.

use crate::{BeginWrite, RefreshOutcome, Result, Store, new_id, with_pool};

/// A refresh token with its device's state.
#[derive(sqlx::FromRow)]
struct RefreshRow {
    device_id: String,
    family_id: String,
    expires_at: i64,
    used_at: Option<i64>,
    revoked_at: Option<i64>,
    owner_id: String,
    device_revoked: Option<i64>,
}

impl Store {
    /// Stores a challenge issued to `device_id`.
    pub async fn insert_challenge(&self, device_id: &str, challenge: &str, now: i64, expires_at: i64) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO device_challenges (challenge, device_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(challenge)
            .bind(device_id)
            .bind(now)
            .bind(expires_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Spends a challenge: true only for the first caller, and only while
    /// it is unexpired and was issued to `device_id`. One conditional
    /// update, so two concurrent verifies cannot both succeed.
    pub async fn consume_challenge(&self, device_id: &str, challenge: &str, now: i64) -> Result<bool> {
        with_pool!(self, |pool| {
            let n = sqlx::query(
                "UPDATE device_challenges SET used_at = $1 \
                 WHERE challenge = $2 AND device_id = $3 AND used_at IS NULL AND expires_at > $4",
            )
            .bind(now)
            .bind(challenge)
            .bind(device_id)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected();
            Ok(n == 1)
        })
    }

    /// Deletes challenges that expired before `now`; returns how many.
    pub async fn purge_challenges(&self, now: i64) -> Result<u64> {
        with_pool!(self, |pool| {
            Ok(sqlx::query("DELETE FROM device_challenges WHERE expires_at <= $1")
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected())
        })
    }

    /// Stores a new refresh token (by hash) starting or continuing `family_id`.
    pub async fn insert_refresh_token(
        &self,
        token_hash: &str,
        device_id: &str,
        family_id: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        let id = new_id();
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO refresh_tokens (id, token_hash, device_id, family_id, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&id)
            .bind(token_hash)
            .bind(device_id)
            .bind(family_id)
            .bind(now)
            .bind(expires_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Spends the refresh token `old_hash` and stores `new_hash` in its
    /// family. A token presented a second time revokes its whole family:
    /// one of the two presenters is not the device.
    pub async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        now: i64,
        new_expires_at: i64,
    ) -> Result<RefreshOutcome> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let row: Option<RefreshRow> = sqlx::query_as(
                "SELECT t.device_id, t.family_id, t.expires_at, t.used_at, t.revoked_at, d.owner_id, \
                 d.revoked_at AS device_revoked \
                 FROM refresh_tokens t JOIN devices d ON d.id = t.device_id WHERE t.token_hash = $1",
            )
            .bind(old_hash)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(RefreshRow { device_id, family_id, expires_at, used_at, revoked_at, owner_id, device_revoked }) =
                row
            else {
                return Ok(RefreshOutcome::Unknown);
            };
            if revoked_at.is_some() || device_revoked.is_some() {
                return Ok(RefreshOutcome::Revoked);
            }
            let spent = used_at.is_some()
                || sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL")
                    .bind(now)
                    .bind(old_hash)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 0;
            if spent {
                sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL")
                    .bind(now)
                    .bind(&family_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                return Ok(RefreshOutcome::Reused { device_id, owner_id });
            }
            if expires_at <= now {
                // Spending an expired token is harmless; keep the update so
                // it cannot be tried again.
                tx.commit().await?;
                return Ok(RefreshOutcome::Expired);
            }
            sqlx::query(
                "INSERT INTO refresh_tokens (id, token_hash, device_id, family_id, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(new_id())
            .bind(new_hash)
            .bind(&device_id)
            .bind(&family_id)
            .bind(now)
            .bind(new_expires_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(RefreshOutcome::Rotated { device_id, owner_id })
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{RefreshOutcome, now_ms, testdb};

    #[tokio::test]
    async fn challenge_is_single_use_and_expires() {
        for store in testdb::stores().await {
            let u = store.upsert_user_by_email("a@example.com", "A").await.unwrap();
            let d = store.create_device(&testdb::new_device(&u.id)).await.unwrap();
            let now = now_ms();
            store.insert_challenge(&d.id, "c1", now, now + 60_000).await.unwrap();
            store.insert_challenge(&d.id, "c2", now - 120_000, now - 60_000).await.unwrap();
            assert!(!store.consume_challenge("other-device", "c1", now).await.unwrap());
            assert!(store.consume_challenge(&d.id, "c1", now).await.unwrap());
            assert!(!store.consume_challenge(&d.id, "c1", now).await.unwrap());
            assert!(!store.consume_challenge(&d.id, "c2", now).await.unwrap());
            assert_eq!(store.purge_challenges(now).await.unwrap(), 1);
        }
    }

    #[tokio::test]
    async fn refresh_rotation_and_reuse_revokes_family() {
        for store in testdb::stores().await {
            let u = store.upsert_user_by_email("a@example.com", "A").await.unwrap();
            let d = store.create_device(&testdb::new_device(&u.id)).await.unwrap();
            let now = now_ms();
            store.insert_refresh_token("h1", &d.id, "fam", now, now + 1000).await.unwrap();
            let out = store.rotate_refresh_token("h1", "h2", now, now + 1000).await.unwrap();
            assert_eq!(out, RefreshOutcome::Rotated { device_id: d.id.clone(), owner_id: u.id.clone() });
            // h1 again: reuse, family revoked, so h2 is dead too.
            assert_eq!(
                store.rotate_refresh_token("h1", "h3", now, now + 1000).await.unwrap(),
                RefreshOutcome::Reused { device_id: d.id.clone(), owner_id: u.id.clone() }
            );
            assert_eq!(store.rotate_refresh_token("h2", "h4", now, now + 1000).await.unwrap(), RefreshOutcome::Revoked);
            assert_eq!(
                store.rotate_refresh_token("nope", "h5", now, now + 1000).await.unwrap(),
                RefreshOutcome::Unknown
            );
            store.insert_refresh_token("old", &d.id, "fam2", now - 10, now - 1).await.unwrap();
            assert_eq!(
                store.rotate_refresh_token("old", "h6", now, now + 1000).await.unwrap(),
                RefreshOutcome::Expired
            );
        }
    }
}
