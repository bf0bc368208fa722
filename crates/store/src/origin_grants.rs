//! Single-use grants that let a browser into one device's origin.

use crate::{Result, Store, with_pool};

/// What a redeemed grant stood for.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RedeemedGrant {
    /// The device whose origin it opens.
    pub device_id: String,
    /// The user it was issued to.
    pub user_id: String,
    /// Storage hash of the browser session it was issued from.
    pub session_hash: String,
}

impl Store {
    /// Stores a grant (by its hash), alive until `expires_at` (ms).
    pub async fn create_origin_grant(
        &self,
        grant_hash: &str,
        device_id: &str,
        user_id: &str,
        session_hash: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO origin_grants (grant_hash, device_id, user_id, session_hash, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(grant_hash)
            .bind(device_id)
            .bind(user_id)
            .bind(session_hash)
            .bind(now)
            .bind(expires_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Spends the grant with `grant_hash`: its content the first time
    /// while unexpired, None ever after (exactly one of concurrent
    /// redemptions wins).
    pub async fn redeem_origin_grant(&self, grant_hash: &str, now: i64) -> Result<Option<RedeemedGrant>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, RedeemedGrant>(
                "UPDATE origin_grants SET used_at = $1 WHERE grant_hash = $2 AND used_at IS NULL AND expires_at > $1 \
                 RETURNING device_id, user_id, session_hash",
            )
            .bind(now)
            .bind(grant_hash)
            .fetch_optional(pool)
            .await?)
        })
    }

    /// Drops grants that expired before `before`; returns how many.
    pub async fn purge_origin_grants(&self, before: i64) -> Result<u64> {
        with_pool!(self, |pool| {
            Ok(sqlx::query("DELETE FROM origin_grants WHERE expires_at < $1")
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected())
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::testdb;
    use crate::testing::new_device;

    #[tokio::test]
    async fn a_grant_is_spent_once_and_only_while_fresh() {
        for store in testdb::stores().await {
            let alice = store.upsert_user_by_email("alice@example.com", "Alice").await.unwrap();
            let d = store.create_device(&new_device(&alice.id)).await.unwrap();
            store.create_origin_grant("g1", &d.id, &alice.id, "s1", 1_000, 61_000).await.unwrap();
            store.create_origin_grant("g2", &d.id, &alice.id, "s1", 1_000, 2_000).await.unwrap();
            let got = store.redeem_origin_grant("g1", 5_000).await.unwrap().unwrap();
            assert_eq!((got.device_id.as_str(), got.session_hash.as_str()), (d.id.as_str(), "s1"));
            assert!(store.redeem_origin_grant("g1", 5_000).await.unwrap().is_none(), "replayed");
            assert!(store.redeem_origin_grant("g2", 5_000).await.unwrap().is_none(), "expired");
            assert!(store.redeem_origin_grant("nope", 5_000).await.unwrap().is_none());
            assert_eq!(store.purge_origin_grants(100_000).await.unwrap(), 2);
        }
    }
}
