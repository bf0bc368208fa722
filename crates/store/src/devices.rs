//! Devices. Every method that serves a user takes the owner's id.

use crate::{Device, DeviceCredentials, NewDevice, Result, Store, new_id, now_ms, with_pool};

/// The columns of [`Device`], in its field order.
macro_rules! device_columns {
    () => {
        "id, owner_id, name, device_type, capabilities, region, metadata, public_key, \
         key_algorithm, created_at, last_seen_at, revoked_at"
    };
}

impl Store {
    /// Creates a device.
    pub async fn create_device(&self, new: &NewDevice) -> Result<Device> {
        let id = new_id();
        let now = now_ms();
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO devices (id, owner_id, name, device_type, capabilities, region, metadata, \
                 public_key, key_algorithm, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&id)
            .bind(&new.owner_id)
            .bind(&new.name)
            .bind(&new.device_type)
            .bind(&new.capabilities)
            .bind(&new.region)
            .bind(&new.metadata)
            .bind(&new.public_key)
            .bind(&new.key_algorithm)
            .bind(now)
            .execute(pool)
            .await?;
        });
        self.get_device(&new.owner_id, &id).await?.ok_or(crate::Error::NotFound)
    }

    /// The device `device_id` if `owner_id` owns it.
    pub async fn get_device(&self, owner_id: &str, device_id: &str) -> Result<Option<Device>> {
        let sql = concat!("SELECT ", device_columns!(), " FROM devices WHERE owner_id = $1 AND id = $2");
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, Device>(sql).bind(owner_id).bind(device_id).fetch_optional(pool).await?)
        })
    }

    /// The devices `owner_id` owns, newest first.
    pub async fn list_devices(&self, owner_id: &str) -> Result<Vec<Device>> {
        let sql =
            concat!("SELECT ", device_columns!(), " FROM devices WHERE owner_id = $1 ORDER BY created_at DESC, id");
        with_pool!(self, |pool| { Ok(sqlx::query_as::<_, Device>(sql).bind(owner_id).fetch_all(pool).await?) })
    }

    /// What device authentication needs, by device id alone. Only the
    /// device-auth paths call this: the device proves itself with its key.
    pub async fn device_credentials(&self, device_id: &str) -> Result<Option<DeviceCredentials>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, DeviceCredentials>(
                "SELECT id, owner_id, public_key, key_algorithm, revoked_at FROM devices WHERE id = $1",
            )
            .bind(device_id)
            .fetch_optional(pool)
            .await?)
        })
    }

    /// Records a successful device authentication.
    pub async fn touch_device(&self, device_id: &str, at: i64) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE devices SET last_seen_at = $1 WHERE id = $2")
                .bind(at)
                .bind(device_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Revokes `owner_id`'s device and all its refresh tokens, in one
    /// transaction. Returns false when there is no such device (or it is
    /// already revoked).
    pub async fn revoke_device(&self, owner_id: &str, device_id: &str) -> Result<bool> {
        let now = now_ms();
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(
                "UPDATE devices SET revoked_at = $1 WHERE owner_id = $2 AND id = $3 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(owner_id)
            .bind(device_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if done == 1 {
                sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE device_id = $2 AND revoked_at IS NULL")
                    .bind(now)
                    .bind(device_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(done == 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::testdb;

    #[tokio::test]
    async fn devices_are_scoped_to_their_owner() {
        for store in testdb::stores().await {
            let alice = store.upsert_user_by_email("alice@example.com", "Alice").await.unwrap();
            let bob = store.upsert_user_by_email("bob@example.com", "Bob").await.unwrap();
            let dev = store.create_device(&testdb::new_device(&alice.id)).await.unwrap();
            assert!(store.get_device(&alice.id, &dev.id).await.unwrap().is_some());
            assert!(store.get_device(&bob.id, &dev.id).await.unwrap().is_none(), "{store:?}");
            assert!(store.list_devices(&bob.id).await.unwrap().is_empty());
            assert!(!store.revoke_device(&bob.id, &dev.id).await.unwrap());
            assert!(store.revoke_device(&alice.id, &dev.id).await.unwrap());
            assert!(!store.revoke_device(&alice.id, &dev.id).await.unwrap());
            let creds = store.device_credentials(&dev.id).await.unwrap().unwrap();
            assert!(creds.revoked_at.is_some());
        }
    }

    #[tokio::test]
    async fn upsert_user_is_idempotent() {
        for store in testdb::stores().await {
            let a = store.upsert_user_by_email("carol@example.com", "Carol").await.unwrap();
            let b = store.upsert_user_by_email("carol@example.com", "Carol").await.unwrap();
            assert_eq!(a, b);
            assert_eq!(store.get_user(&a.id).await.unwrap(), Some(a));
        }
    }
}
