//! Device telemetry points: the last sample of each minute and each hour
//! per device, written in batches.

use serde::Serialize;

use crate::{BeginWrite, Result, Store, with_pool};

/// One stored sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct MetricPoint {
    /// The device.
    pub device_id: String,
    /// Its owner (tenancy filter).
    pub owner_id: String,
    /// `1m` or `1h`.
    pub resolution: String,
    /// Start of the minute or hour, ms.
    pub bucket_start: i64,
    /// When the sample was taken (received), ms.
    pub at: i64,
    /// The heartbeat, JSON.
    pub sample: String,
}

/// A device's latest heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct LatestSample {
    /// The device.
    pub device_id: String,
    /// When it arrived, ms.
    pub at: i64,
    /// Its load, if it said.
    pub load_1m: Option<f64>,
    /// The heartbeat, JSON (None for rows written before it was kept).
    pub sample: Option<String>,
}

/// Rows per multi-row INSERT (6 binds each stays under SQLite's 32,766
/// parameters and PostgreSQL's 65,535).
const ROWS_PER_STATEMENT: usize = 1000;

impl Store {
    /// Writes `points` in one transaction; a point replaces the one of the
    /// same device, resolution and bucket when it is newer.
    pub async fn write_metric_points(&self, points: &[MetricPoint]) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            // Multi-row statements: a batch of thousands of devices is a
            // few statements, not one per point.
            for chunk in points.chunks(ROWS_PER_STATEMENT) {
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO device_metrics (device_id, owner_id, resolution, bucket_start, at, sample) ",
                );
                qb.push_values(chunk, |mut row, p| {
                    row.push_bind(&p.device_id)
                        .push_bind(&p.owner_id)
                        .push_bind(&p.resolution)
                        .push_bind(p.bucket_start)
                        .push_bind(p.at)
                        .push_bind(&p.sample);
                });
                qb.push(
                    " ON CONFLICT (device_id, resolution, bucket_start) DO UPDATE SET \
                     at = excluded.at, sample = excluded.sample WHERE device_metrics.at <= excluded.at",
                );
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Records each device's latest heartbeat: time, load (what the
    /// discovery filters read) and the sample as JSON; newest wins.
    pub async fn write_device_latest(&self, rows: &[LatestSample]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let mut qb = sqlx::QueryBuilder::new("INSERT INTO device_latest (device_id, at, load_1m, sample) ");
                qb.push_values(chunk, |mut row, l| {
                    row.push_bind(&l.device_id).push_bind(l.at).push_bind(l.load_1m).push_bind(&l.sample);
                });
                qb.push(
                    " ON CONFLICT (device_id) DO UPDATE SET at = excluded.at, load_1m = excluded.load_1m, \
                     sample = excluded.sample WHERE device_latest.at <= excluded.at",
                );
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// `owner_id`'s device's points of `resolution` since `since` (ms),
    /// oldest first.
    pub async fn metric_points(
        &self,
        owner_id: &str,
        device_id: &str,
        resolution: &str,
        since: i64,
    ) -> Result<Vec<MetricPoint>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, MetricPoint>(
                "SELECT device_id, owner_id, resolution, bucket_start, at, sample FROM device_metrics \
                 WHERE owner_id = $1 AND device_id = $2 AND resolution = $3 AND bucket_start >= $4 \
                 ORDER BY bucket_start",
            )
            .bind(owner_id)
            .bind(device_id)
            .bind(resolution)
            .bind(since)
            .fetch_all(pool)
            .await?)
        })
    }

    /// The latest heartbeat of each of `owner_id`'s devices that sent one.
    pub async fn latest_samples(&self, owner_id: &str) -> Result<Vec<LatestSample>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, LatestSample>(
                "SELECT l.device_id, l.at, l.load_1m, l.sample FROM device_latest l \
                 JOIN devices d ON d.id = l.device_id WHERE d.owner_id = $1",
            )
            .bind(owner_id)
            .fetch_all(pool)
            .await?)
        })
    }

    /// Drops points of `resolution` older than `before` (ms).
    pub async fn purge_metric_points(&self, resolution: &str, before: i64) -> Result<u64> {
        with_pool!(self, |pool| {
            Ok(sqlx::query("DELETE FROM device_metrics WHERE resolution = $1 AND bucket_start < $2")
                .bind(resolution)
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdb;
    use crate::testing::new_device;

    #[tokio::test]
    async fn points_are_per_bucket_newest_wins_and_owner_filtered() {
        for store in testdb::stores().await {
            let alice = store.upsert_user_by_email("alice@example.com", "Alice").await.unwrap();
            let bob = store.upsert_user_by_email("bob@example.com", "Bob").await.unwrap();
            let d = store.create_device(&new_device(&alice.id)).await.unwrap();
            let p = |bucket: i64, at: i64, s: &str| MetricPoint {
                device_id: d.id.clone(),
                owner_id: alice.id.clone(),
                resolution: "1m".into(),
                bucket_start: bucket,
                at,
                sample: s.into(),
            };
            store.write_metric_points(&[p(60_000, 61_000, "a"), p(120_000, 121_000, "b")]).await.unwrap();
            // A newer sample in the same minute replaces; an older one does not.
            store.write_metric_points(&[p(60_000, 62_000, "a2"), p(120_000, 120_500, "old")]).await.unwrap();
            let got = store.metric_points(&alice.id, &d.id, "1m", 0).await.unwrap();
            assert_eq!(got.iter().map(|p| p.sample.as_str()).collect::<Vec<_>>(), ["a2", "b"]);
            assert!(store.metric_points(&bob.id, &d.id, "1m", 0).await.unwrap().is_empty());
            assert_eq!(store.metric_points(&alice.id, &d.id, "1m", 100_000).await.unwrap().len(), 1);
            assert_eq!(store.purge_metric_points("1m", 100_000).await.unwrap(), 1);
        }
    }
}
