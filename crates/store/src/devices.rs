//! Devices. Every method that serves a user takes the owner's id.

use crate::{BeginWrite, Device, DeviceCredentials, NewDevice, Result, Store, new_id, now_ms, with_pool};

/// The columns of [`Device`], in its field order.
macro_rules! device_columns {
    () => {
        "id, owner_id, name, device_type, capabilities, region, metadata, public_key, \
         key_algorithm, created_at, last_seen_at, revoked_at, node_id"
    };
}

/// Inserts a device row (`new.owner_id` is not used: the owner is given);
/// one statement for operator-added and paired devices. Evaluates to the
/// `execute` future.
macro_rules! insert_device {
    ($exec:expr, $id:expr, $owner:expr, $new:expr, $now:expr) => {
        sqlx::query(
            "INSERT INTO devices (id, owner_id, name, device_type, capabilities, region, metadata, \
             public_key, key_algorithm, created_at, node_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind($id)
        .bind($owner)
        .bind(&$new.name)
        .bind(&$new.device_type)
        .bind($new.capabilities.to_column())
        .bind(&$new.region)
        .bind($new.metadata.to_column())
        .bind(&$new.public_key)
        .bind(&$new.key_algorithm)
        .bind($now)
        .bind(&$new.node_id)
        .execute($exec)
    };
}
pub(crate) use insert_device;

/// Inserts a device's capability rows (the index discovery filters use);
/// `$exec` must be a transaction (`&mut *tx`), used once per row.
macro_rules! insert_capabilities {
    ($tx:expr, $id:expr, $new:expr) => {
        async {
            for cap in &$new.capabilities.0 {
                sqlx::query(
                    "INSERT INTO device_capabilities (device_id, capability) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind($id)
                .bind(cap)
                .execute(&mut *$tx)
                .await?;
            }
            Ok::<(), crate::Error>(())
        }
    };
}
pub(crate) use insert_capabilities;

/// Places `$new` for `$owner` inside transaction `$tx`: a new row with id
/// `$id`, or, when `$new.node_id` names an active device of the same owner,
/// that device re-registered (new key, fields and capabilities; its refresh
/// tokens revoked). Evaluates to `Result<Option<(device id, replaced)>>`,
/// None when another owner holds the node id.
macro_rules! place_device {
    ($tx:expr, $id:expr, $owner:expr, $new:expr, $now:expr) => {
        async {
            let existing: Option<(String, String)> = match &$new.node_id {
                None => None,
                Some(node) => {
                    sqlx::query_as("SELECT id, owner_id FROM devices WHERE node_id = $1")
                        .bind(node)
                        .fetch_optional(&mut *$tx)
                        .await?
                }
            };
            match existing {
                None => {
                    crate::devices::insert_device!(&mut *$tx, $id, $owner, $new, $now).await?;
                    crate::devices::insert_capabilities!($tx, $id, $new).await?;
                    Ok::<_, crate::Error>(Some(($id.to_owned(), false)))
                }
                Some((_, ref other)) if other != $owner => Ok(None),
                Some((existing_id, _)) => {
                    sqlx::query(
                        "UPDATE devices SET name = $1, device_type = $2, capabilities = $3, region = $4, \
                         metadata = $5, public_key = $6, key_algorithm = $7 WHERE id = $8",
                    )
                    .bind(&$new.name)
                    .bind(&$new.device_type)
                    .bind($new.capabilities.to_column())
                    .bind(&$new.region)
                    .bind($new.metadata.to_column())
                    .bind(&$new.public_key)
                    .bind(&$new.key_algorithm)
                    .bind(&existing_id)
                    .execute(&mut *$tx)
                    .await?;
                    sqlx::query("DELETE FROM device_capabilities WHERE device_id = $1")
                        .bind(&existing_id)
                        .execute(&mut *$tx)
                        .await?;
                    crate::devices::insert_capabilities!($tx, &existing_id, $new).await?;
                    // The old key's holder loses its way back in.
                    sqlx::query(
                        "UPDATE refresh_tokens SET revoked_at = $1 WHERE device_id = $2 AND revoked_at IS NULL",
                    )
                    .bind($now)
                    .bind(&existing_id)
                    .execute(&mut *$tx)
                    .await?;
                    Ok(Some((existing_id, true)))
                }
            }
        }
    };
}
pub(crate) use place_device;

/// A device registered by node id.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The device.
    pub device: Device,
    /// True when an existing device of the same owner and node id was
    /// re-registered rather than a new one created.
    pub replaced: bool,
}

/// Filters and page of a device listing.
#[derive(Debug, Clone, Default)]
pub struct DeviceQuery {
    /// Exact type.
    pub device_type: Option<String>,
    /// Exact region.
    pub region: Option<String>,
    /// Devices having all of these capabilities.
    pub capabilities: Vec<String>,
    /// Some(true): online only; Some(false): offline only.
    pub online: Option<bool>,
    /// Authenticated or heartbeating after this time (ms).
    pub seen_after: Option<i64>,
    /// Latest one-minute load below this.
    pub load_below: Option<f64>,
    /// Page size.
    pub limit: i64,
    /// Rows to skip.
    pub offset: i64,
}

/// What may change on a device (None = unchanged).
#[derive(Debug, Clone, Default)]
pub struct DevicePatch {
    /// New name.
    pub name: Option<String>,
    /// New metadata.
    pub metadata: Option<crate::Metadata>,
    /// New region; Some(None) clears it.
    pub region: Option<Option<String>>,
}

impl Store {
    /// `owner_id`'s devices (not deleted) matching `q`, newest first, and
    /// how many match in all.
    pub async fn query_devices(&self, owner_id: &str, q: &DeviceQuery) -> Result<(Vec<Device>, i64)> {
        let mut args: Vec<String> = vec![owner_id.to_owned()];
        let mut filter = String::from(" FROM devices WHERE owner_id = $1 AND revoked_at IS NULL");
        if let Some(t) = &q.device_type {
            args.push(t.clone());
            filter.push_str(&format!(" AND device_type = ${}", args.len()));
        }
        if let Some(r) = &q.region {
            args.push(r.clone());
            filter.push_str(&format!(" AND region = ${}", args.len()));
        }
        for cap in &q.capabilities {
            args.push(cap.clone());
            filter.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM device_capabilities c WHERE c.device_id = devices.id AND c.capability = ${})",
                args.len()
            ));
        }
        if let Some(after) = q.seen_after {
            args.push(after.to_string());
            let n = args.len();
            filter.push_str(&format!(
                " AND (COALESCE(last_seen_at, 0) > CAST(${n} AS BIGINT) OR EXISTS (SELECT 1 FROM device_latest l \
                 WHERE l.device_id = devices.id AND l.at > CAST(${n} AS BIGINT)))"
            ));
        }
        if let Some(below) = q.load_below {
            args.push(below.to_string());
            filter.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM device_latest l WHERE l.device_id = devices.id \
                 AND l.load_1m < CAST(${} AS DOUBLE PRECISION))",
                args.len()
            ));
        }
        if let Some(online) = q.online {
            filter.push_str(if online { " AND EXISTS" } else { " AND NOT EXISTS" });
            filter.push_str(
                " (SELECT 1 FROM tunnel_sessions s WHERE s.device_id = devices.id AND s.disconnected_at IS NULL)",
            );
        }
        let count_sql = format!("SELECT COUNT(*){filter}");
        let rows_sql = format!(
            "SELECT {}{filter} ORDER BY created_at DESC, id LIMIT ${} OFFSET ${}",
            device_columns!(),
            args.len() + 1,
            args.len() + 2
        );
        with_pool!(self, |pool| {
            let mut count = sqlx::query_as::<_, (i64,)>(sqlx::AssertSqlSafe(count_sql));
            let mut rows = sqlx::query_as::<_, Device>(sqlx::AssertSqlSafe(rows_sql));
            for a in &args {
                count = count.bind(a);
                rows = rows.bind(a);
            }
            let (total,) = count.fetch_one(pool).await?;
            let devices = rows.bind(q.limit).bind(q.offset).fetch_all(pool).await?;
            Ok((devices, total))
        })
    }

    /// `owner_id`'s device unless it is deleted (revoked).
    pub async fn active_device(&self, owner_id: &str, device_id: &str) -> Result<Option<Device>> {
        Ok(self.get_device(owner_id, device_id).await?.filter(|d| d.revoked_at.is_none()))
    }

    /// Changes `owner_id`'s device; the device after, or None when there is
    /// no such (active) device.
    pub async fn update_device(&self, owner_id: &str, device_id: &str, p: &DevicePatch) -> Result<Option<Device>> {
        let (set_region, region) = match &p.region {
            Some(r) => (true, r.clone()),
            None => (false, None),
        };
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE devices SET name = COALESCE($1, name), metadata = COALESCE($2, metadata), \
                 region = CASE WHEN $3 THEN $4 ELSE region END \
                 WHERE owner_id = $5 AND id = $6 AND revoked_at IS NULL",
            )
            .bind(&p.name)
            .bind(p.metadata.as_ref().map(crate::Metadata::to_column))
            .bind(set_region)
            .bind(region)
            .bind(owner_id)
            .bind(device_id)
            .execute(pool)
            .await?;
        });
        self.active_device(owner_id, device_id).await
    }

    /// Creates a device.
    pub async fn create_device(&self, new: &NewDevice) -> Result<Device> {
        let id = new_id();
        let now = now_ms();
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            insert_device!(&mut *tx, &id, &new.owner_id, new, now).await?;
            insert_capabilities!(tx, &id, new).await?;
            tx.commit().await?;
        });
        self.get_device(&new.owner_id, &id).await?.ok_or(crate::Error::NotFound)
    }

    /// Registers `new` for its owner: a new device, or the owner's active
    /// device with the same `node_id` re-registered. None when another
    /// owner's device holds that node id.
    pub async fn register_device(&self, new: &NewDevice) -> Result<Option<Registered>> {
        let id = new_id();
        let now = now_ms();
        let placed = with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let placed = place_device!(tx, &id, &new.owner_id, new, now).await?;
            tx.commit().await?;
            placed
        });
        let Some((id, replaced)) = placed else { return Ok(None) };
        let device = self.get_device(&new.owner_id, &id).await?.ok_or(crate::Error::NotFound)?;
        Ok(Some(Registered { device, replaced }))
    }

    /// The device a seed-000 client means by `node` for authentication:
    /// the device whose node id it is, else the device with that id.
    pub async fn device_id_for_node(&self, node: &str) -> Result<Option<String>> {
        with_pool!(self, |pool| {
            let row: Option<(String,)> =
                sqlx::query_as("SELECT id FROM devices WHERE node_id = $1 OR id = $1 ORDER BY node_id IS NULL LIMIT 1")
                    .bind(node)
                    .fetch_optional(pool)
                    .await?;
            Ok(row.map(|r| r.0))
        })
    }

    /// `owner_id`'s active device that `node` names (its node id or id).
    pub async fn owner_device_by_node(&self, owner_id: &str, node: &str) -> Result<Option<Device>> {
        let sql = concat!(
            "SELECT ",
            device_columns!(),
            " FROM devices WHERE owner_id = $1 AND (node_id = $2 OR id = $2) AND revoked_at IS NULL \
             ORDER BY node_id IS NULL LIMIT 1"
        );
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, Device>(sql).bind(owner_id).bind(node).fetch_optional(pool).await?)
        })
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

    /// Revokes `owner_id`'s device and all its refresh tokens and deletes
    /// its message queue, in one
    /// transaction. Returns false when there is no such device (or it is
    /// already revoked).
    pub async fn revoke_device(&self, owner_id: &str, device_id: &str) -> Result<bool> {
        let now = now_ms();
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let done = sqlx::query(
                // The node id is freed: a new device may take the name.
                "UPDATE devices SET revoked_at = $1, node_id = NULL \
                 WHERE owner_id = $2 AND id = $3 AND revoked_at IS NULL",
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
                // Its message queue goes with it.
                sqlx::query("DELETE FROM message_deliveries WHERE device_id = $1")
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
mod query_tests {
    use super::{DevicePatch, DeviceQuery};
    use crate::testing::new_device;
    use crate::{TunnelSession, now_ms, testdb};

    #[tokio::test]
    async fn discovery_filters_by_load_last_seen_and_indexed_capabilities() {
        for store in testdb::stores().await {
            let alice = store.upsert_user_by_email("alice@example.com", "Alice").await.unwrap();
            let bob = store.upsert_user_by_email("bob@example.com", "Bob").await.unwrap();
            let mut d = new_device(&alice.id);
            d.capabilities = crate::Capabilities(vec!["gpu".into(), "http".into()]);
            let busy = store.create_device(&d).await.unwrap();
            d.capabilities = crate::Capabilities(vec!["http".into()]);
            let idle = store.create_device(&d).await.unwrap();
            let silent = store.create_device(&d).await.unwrap();
            let mut b = new_device(&bob.id);
            b.capabilities = crate::Capabilities(vec!["gpu".into()]);
            let bobs = store.create_device(&b).await.unwrap();
            store
                .write_device_latest(&[
                    crate::LatestSample { device_id: busy.id.clone(), at: 5_000, load_1m: Some(3.5), sample: None },
                    crate::LatestSample { device_id: idle.id.clone(), at: 6_000, load_1m: Some(0.2), sample: None },
                    crate::LatestSample { device_id: bobs.id.clone(), at: 6_000, load_1m: Some(0.1), sample: None },
                ])
                .await
                .unwrap();
            let ids = |q: DeviceQuery| {
                let store = store.clone();
                let owner = alice.id.clone();
                async move {
                    let (v, _) = store.query_devices(&owner, &q).await.unwrap();
                    let mut ids: Vec<String> = v.into_iter().map(|d| d.id).collect();
                    ids.sort();
                    ids
                }
            };
            let base = DeviceQuery { limit: 50, ..DeviceQuery::default() };
            let sorted = |mut v: Vec<String>| {
                v.sort();
                v
            };
            assert_eq!(ids(DeviceQuery { load_below: Some(1.0), ..base.clone() }).await, vec![idle.id.clone()]);
            assert_eq!(
                ids(DeviceQuery { seen_after: Some(5_500), ..base.clone() }).await,
                vec![idle.id.clone()],
                "heartbeat time counts as seen"
            );
            assert_eq!(
                ids(DeviceQuery { capabilities: vec!["gpu".into()], ..base.clone() }).await,
                vec![busy.id.clone()],
                "never another owner's"
            );
            assert_eq!(
                ids(DeviceQuery { capabilities: vec!["http".into()], ..base.clone() }).await,
                sorted(vec![busy.id.clone(), idle.id.clone(), silent.id.clone()])
            );
            assert!(ids(DeviceQuery { capabilities: vec!["gpu".into(), "ssh".into()], ..base }).await.is_empty());
        }
    }

    #[tokio::test]
    async fn listing_filters_pages_and_stays_within_the_owner() {
        for store in testdb::stores().await {
            let alice = store.upsert_user_by_email("alice@example.com", "Alice").await.unwrap();
            let bob = store.upsert_user_by_email("bob@example.com", "Bob").await.unwrap();
            let mut ids = Vec::new();
            for (i, (ty, caps, region)) in [
                ("camera", vec!["http", "ssh"], Some("eu")),
                ("camera", vec!["http"], Some("us")),
                ("gateway", vec!["ssh", "a_b"], None),
            ]
            .into_iter()
            .enumerate()
            {
                let mut d = new_device(&alice.id);
                d.name = format!("d{i}");
                d.device_type = ty.into();
                d.capabilities = crate::Capabilities(caps.into_iter().map(Into::into).collect());
                d.region = region.map(Into::into);
                ids.push(store.create_device(&d).await.unwrap().id);
                // Newest first needs distinct creation times (ms).
                tokio::time::sleep(std::time::Duration::from_millis(3)).await;
            }
            store.create_device(&new_device(&bob.id)).await.unwrap();
            let q = |f: fn(&mut DeviceQuery)| {
                let mut q = DeviceQuery { limit: 50, ..DeviceQuery::default() };
                f(&mut q);
                q
            };
            let names = |v: Vec<crate::Device>| v.into_iter().map(|d| d.name).collect::<Vec<_>>();
            let (all, total) = store.query_devices(&alice.id, &q(|_| {})).await.unwrap();
            assert_eq!((names(all), total), (vec!["d2".to_owned(), "d1".into(), "d0".into()], 3));
            let (v, _) = store.query_devices(&alice.id, &q(|q| q.device_type = Some("camera".into()))).await.unwrap();
            assert_eq!(names(v), vec!["d1", "d0"]);
            let (v, _) = store
                .query_devices(&alice.id, &q(|q| q.capabilities = vec!["ssh".into(), "http".into()]))
                .await
                .unwrap();
            assert_eq!(names(v), vec!["d0"]);
            let (v, _) = store.query_devices(&alice.id, &q(|q| q.capabilities = vec!["a%".into()])).await.unwrap();
            assert!(v.is_empty(), "wildcards are literal");
            let (v, _) = store.query_devices(&alice.id, &q(|q| q.capabilities = vec!["a_b".into()])).await.unwrap();
            assert_eq!(names(v), vec!["d2"]);
            let (v, _) = store.query_devices(&alice.id, &q(|q| q.region = Some("us".into()))).await.unwrap();
            assert_eq!(names(v), vec!["d1"]);
            let (v, total) = store
                .query_devices(
                    &alice.id,
                    &q(|q| {
                        q.limit = 1;
                        q.offset = 1
                    }),
                )
                .await
                .unwrap();
            assert_eq!((names(v), total), (vec!["d1".to_owned()], 3));

            // Online = an open session.
            let now = now_ms();
            store
                .open_session(&TunnelSession {
                    id: "s1".into(),
                    device_id: ids[0].clone(),
                    owner_id: alice.id.clone(),
                    relay_id: "r".into(),
                    relay_url: "http://r".into(),
                    remote_addr: "1.2.3.4:5".into(),
                    connected_at: now,
                    last_heartbeat: now,
                    disconnected_at: None,
                    close_reason: None,
                })
                .await
                .unwrap();
            let (v, _) = store.query_devices(&alice.id, &q(|q| q.online = Some(true))).await.unwrap();
            assert_eq!(names(v), vec!["d0"]);
            let (v, _) = store.query_devices(&alice.id, &q(|q| q.online = Some(false))).await.unwrap();
            assert_eq!(names(v), vec!["d2", "d1"]);

            // Patch and delete stay within the owner.
            let patch = DevicePatch { name: Some("renamed".into()), region: Some(None), ..DevicePatch::default() };
            assert!(store.update_device(&bob.id, &ids[0], &patch).await.unwrap().is_none());
            let d = store.update_device(&alice.id, &ids[0], &patch).await.unwrap().unwrap();
            assert_eq!((d.name.as_str(), d.region), ("renamed", None));
            assert!(store.revoke_device(&alice.id, &ids[0]).await.unwrap());
            assert!(store.active_device(&alice.id, &ids[0]).await.unwrap().is_none());
            assert_eq!(store.query_devices(&alice.id, &q(|_| {})).await.unwrap().1, 2);
        }
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
