//! One-time pairing codes. A code is stored by its hash; exchanging it
//! marks it used and creates the device in one transaction, with a
//! conditional update, so concurrent exchanges of one code create exactly
//! one device and a failure leaves nothing behind.

use serde::Serialize;

use crate::{BeginWrite, Device, NewDevice, Result, Store, new_id, with_pool};

/// A pairing code as its owner sees it (without the code itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Pairing {
    /// SHA-256 of the normalised code, hex.
    pub code_hash: String,
    /// The user the device will belong to.
    pub owner_id: String,
    /// ms.
    pub created_at: i64,
    /// ms.
    pub expires_at: i64,
    /// ms, once exchanged.
    pub used_at: Option<i64>,
    /// The device it created.
    pub device_id: Option<String>,
}

/// Why an exchange was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairingRefusal {
    /// No such code.
    Unknown,
    /// The code's time ran out.
    Expired,
    /// The code was already exchanged.
    Used,
    /// The device asked for a node id another owner's device holds (the
    /// code is left unused).
    NodeIdTaken,
}

impl Store {
    /// Stores a new code for `owner_id` unless they already have
    /// `max_live` unused, unexpired codes; returns None then.
    pub async fn create_pairing(
        &self,
        owner_id: &str,
        code_hash: &str,
        now: i64,
        expires_at: i64,
        max_live: i64,
    ) -> Result<Option<Pairing>> {
        let pairing = Pairing {
            code_hash: code_hash.to_owned(),
            owner_id: owner_id.to_owned(),
            created_at: now,
            expires_at,
            used_at: None,
            device_id: None,
        };
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let (live,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM pairing_codes WHERE owner_id = $1 AND used_at IS NULL AND expires_at > $2",
            )
            .bind(owner_id)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            if live >= max_live {
                return Ok(None);
            }
            sqlx::query(
                "INSERT INTO pairing_codes (code_hash, owner_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(code_hash)
            .bind(owner_id)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some(pairing))
        })
    }

    /// Exchanges the code with hash `code_hash` for a new device owned by
    /// the code's owner (`new.owner_id` is ignored), or for that owner's
    /// device with the same `new.node_id` re-registered. Exactly one of any
    /// number of concurrent exchanges of one code succeeds.
    pub async fn exchange_pairing(
        &self,
        code_hash: &str,
        now: i64,
        new: &NewDevice,
    ) -> Result<std::result::Result<Device, PairingRefusal>> {
        let new_id = new_id();
        let placed: Option<(String, String)> = with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let claimed: Option<(String,)> = sqlx::query_as(
                "UPDATE pairing_codes SET used_at = $1 \
                 WHERE code_hash = $2 AND used_at IS NULL AND expires_at > $3 RETURNING owner_id",
            )
            .bind(now)
            .bind(code_hash)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((owner,)) = claimed else {
                tx.rollback().await?;
                return Ok(Err(self.why_refused(code_hash, now).await?));
            };
            let Some((id, _)) = crate::devices::place_device!(tx, &new_id, &owner, new, now).await? else {
                tx.rollback().await?;
                return Ok(Err(PairingRefusal::NodeIdTaken));
            };
            sqlx::query("UPDATE pairing_codes SET device_id = $1 WHERE code_hash = $2")
                .bind(&id)
                .bind(code_hash)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Some((owner, id))
        });
        match placed {
            Some((owner, id)) => Ok(Ok(self.get_device(&owner, &id).await?.ok_or(crate::Error::NotFound)?)),
            None => Err(crate::Error::NotFound),
        }
    }

    async fn why_refused(&self, code_hash: &str, now: i64) -> Result<PairingRefusal> {
        let row: Option<(Option<i64>, i64)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT used_at, expires_at FROM pairing_codes WHERE code_hash = $1")
                .bind(code_hash)
                .fetch_optional(pool)
                .await?
        });
        Ok(match row {
            None => PairingRefusal::Unknown,
            Some((Some(_), _)) => PairingRefusal::Used,
            Some((None, expires)) if expires <= now => PairingRefusal::Expired,
            // Raced with a concurrent exchange that has just committed.
            Some((None, _)) => PairingRefusal::Used,
        })
    }

    /// `owner_id`'s codes that can still be exchanged, newest first.
    pub async fn live_pairings(&self, owner_id: &str, now: i64) -> Result<Vec<Pairing>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, Pairing>(
                "SELECT code_hash, owner_id, created_at, expires_at, used_at, device_id FROM pairing_codes \
                 WHERE owner_id = $1 AND used_at IS NULL AND expires_at > $2 ORDER BY created_at DESC",
            )
            .bind(owner_id)
            .bind(now)
            .fetch_all(pool)
            .await?)
        })
    }

    /// Deletes codes that expired before `before` and were never used;
    /// returns how many.
    pub async fn purge_pairings(&self, before: i64) -> Result<u64> {
        with_pool!(self, |pool| {
            Ok(sqlx::query("DELETE FROM pairing_codes WHERE used_at IS NULL AND expires_at <= $1")
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::PairingRefusal;
    use crate::{now_ms, testdb, testing::new_device};

    #[tokio::test]
    async fn a_code_pairs_exactly_one_device_for_its_owner() {
        for store in testdb::stores().await {
            let alice = store.upsert_user_by_email("alice@example.com", "Alice").await.unwrap();
            let now = now_ms();
            assert!(store.create_pairing(&alice.id, "h1", now, now + 600_000, 2).await.unwrap().is_some());
            assert!(store.create_pairing(&alice.id, "h2", now, now + 600_000, 2).await.unwrap().is_some());
            assert!(store.create_pairing(&alice.id, "h3", now, now + 600_000, 2).await.unwrap().is_none(), "limit");
            assert_eq!(store.live_pairings(&alice.id, now).await.unwrap().len(), 2);

            let mut spec = new_device("ignored-owner");
            spec.name = "cam".into();
            let device = store.exchange_pairing("h1", now + 1, &spec).await.unwrap().unwrap();
            assert_eq!(device.owner_id, alice.id);
            assert_eq!(device.name, "cam");
            assert_eq!(store.exchange_pairing("h1", now + 2, &spec).await.unwrap().unwrap_err(), PairingRefusal::Used);
            assert_eq!(store.exchange_pairing("nope", now, &spec).await.unwrap().unwrap_err(), PairingRefusal::Unknown);
            assert_eq!(
                store.exchange_pairing("h2", now + 600_001, &spec).await.unwrap().unwrap_err(),
                PairingRefusal::Expired
            );
            assert_eq!(store.list_devices(&alice.id).await.unwrap().len(), 1);
            assert_eq!(store.purge_pairings(now + 600_001).await.unwrap(), 1, "h2 expired unused; h1 kept");
        }
    }

    #[tokio::test]
    async fn a_failed_device_insert_leaves_the_code_unused_and_no_device() {
        for store in testdb::stores().await {
            let alice = store.upsert_user_by_email("alice@example.com", "Alice").await.unwrap();
            let now = now_ms();
            store.create_pairing(&alice.id, "h", now, now + 600_000, 5).await.unwrap().unwrap();
            store.inject_device_insert_failure(true).await.unwrap();
            assert!(store.exchange_pairing("h", now + 1, &new_device("x")).await.is_err());
            assert!(store.list_devices(&alice.id).await.unwrap().is_empty());
            assert_eq!(store.live_pairings(&alice.id, now + 2).await.unwrap().len(), 1, "the code is still unused");
            store.inject_device_insert_failure(false).await.unwrap();
            assert!(store.exchange_pairing("h", now + 3, &new_device("x")).await.unwrap().is_ok());
        }
    }
}
