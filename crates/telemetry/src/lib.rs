//! Device telemetry. Heartbeats (from the tunnel or REST) are recorded in
//! memory, keeping each device's newest, and written in one transaction
//! per flush as the last sample of its minute (kept a day) and of its hour
//! (kept 30 days). Thousands of devices cost one batch per flush interval,
//! not one write per heartbeat.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgelink_protocol::heartbeat::Heartbeat;
use edgelink_store::{MetricPoint, Store};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
/// How long minute points are kept.
pub const MINUTES_KEPT: Duration = Duration::from_secs(24 * 3600);
/// How long hour points are kept.
pub const HOURS_KEPT: Duration = Duration::from_secs(30 * 24 * 3600);

/// The resolution of a history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A point per minute (the last day).
    Minute,
    /// A point per hour (the last 30 days).
    Hour,
}

impl Step {
    /// `1m` or `1h`.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Minute => "1m",
            Step::Hour => "1h",
        }
    }

    /// From `1m`/`1h`.
    pub fn parse(s: &str) -> Option<Step> {
        match s {
            "1m" => Some(Step::Minute),
            "1h" => Some(Step::Hour),
            _ => None,
        }
    }
}

/// One point of a device's history.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Point {
    /// When the sample arrived, Unix ms.
    pub at: i64,
    /// What the device said.
    #[serde(flatten)]
    pub sample: Heartbeat,
}

/// The recorder and its batch.
#[derive(Debug)]
pub struct Telemetry {
    store: Store,
    pending: Mutex<HashMap<String, (String, i64, Heartbeat)>>,
}

impl Telemetry {
    /// Telemetry over `store`.
    pub fn new(store: Store) -> Self {
        Telemetry { store, pending: Mutex::new(HashMap::new()) }
    }

    /// Records `device_id`'s (of `owner_id`) heartbeat received at `at`.
    pub fn record(&self, device_id: &str, owner_id: &str, at: i64, beat: Heartbeat) {
        metrics::counter!("edgelink_heartbeats_received_total").increment(1);
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.insert(device_id.to_owned(), (owner_id.to_owned(), at, beat));
    }

    /// Writes what was recorded since the last flush; returns how many
    /// devices.
    pub async fn flush(&self) -> Result<usize, edgelink_store::Error> {
        let batch: Vec<_> =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner())).into_iter().collect();
        if batch.is_empty() {
            return Ok(0);
        }
        let started = std::time::Instant::now();
        let mut points = Vec::with_capacity(batch.len() * 2);
        for (device_id, (owner_id, at, beat)) in &batch {
            let sample = serde_json::to_string(beat).unwrap_or_else(|_| "{}".into());
            for (res, size) in [("1m", MINUTE), ("1h", HOUR)] {
                points.push(MetricPoint {
                    device_id: device_id.clone(),
                    owner_id: owner_id.clone(),
                    resolution: res.into(),
                    bucket_start: at - at.rem_euclid(size),
                    at: *at,
                    sample: sample.clone(),
                });
            }
        }
        self.store.write_metric_points(&points).await?;
        let latest: Vec<edgelink_store::LatestSample> = batch
            .iter()
            .map(|(id, (_, at, beat))| edgelink_store::LatestSample {
                device_id: id.clone(),
                at: *at,
                load_1m: beat.load_1m,
                sample: serde_json::to_string(beat).ok(),
            })
            .collect();
        self.store.write_device_latest(&latest).await?;
        metrics::counter!("edgelink_telemetry_batches_total").increment(1);
        metrics::counter!("edgelink_telemetry_samples_written_total").increment(batch.len() as u64);
        metrics::histogram!("edgelink_telemetry_batch_write_seconds").record(started.elapsed().as_secs_f64());
        tracing::debug!(devices = batch.len(), "telemetry batch written");
        Ok(batch.len())
    }

    /// Flushes every `every` and drops expired points hourly, until the
    /// task is aborted (a last flush is the caller's).
    pub fn spawn(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut last_purge = 0i64;
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = me.flush().await {
                    tracing::warn!(error = %e, "could not write telemetry");
                }
                let now = edgelink_store::now_ms();
                if now - last_purge >= HOUR {
                    last_purge = now;
                    let _ = me.store.purge_metric_points("1m", now - MINUTES_KEPT.as_millis() as i64).await;
                    let _ = me.store.purge_metric_points("1h", now - HOURS_KEPT.as_millis() as i64).await;
                }
            }
        })
    }

    /// `owner_id`'s device's history at `step` since `since` (ms).
    pub async fn history(
        &self,
        owner_id: &str,
        device_id: &str,
        step: Step,
        since: i64,
    ) -> Result<Vec<Point>, edgelink_store::Error> {
        let rows = self.store.metric_points(owner_id, device_id, step.as_str(), since).await?;
        Ok(rows
            .into_iter()
            .map(|r| Point { at: r.at, sample: serde_json::from_str(&r.sample).unwrap_or_default() })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn heartbeats_become_minute_and_hour_points_in_one_batch() {
        let store = edgelink_store::testing::sqlite().await;
        let alice = store.upsert_user_by_email("alice@example.com", "Alice").await.unwrap();
        let d = store.create_device(&edgelink_store::testing::new_device(&alice.id)).await.unwrap();
        let t = Telemetry::new(store);
        let beat = |cpu: f64| Heartbeat { cpu_percent: Some(cpu), ..Heartbeat::default() };
        let base = 10 * HOUR;
        t.record(&d.id, &alice.id, base + 1_000, beat(1.0));
        t.record(&d.id, &alice.id, base + 2_000, beat(2.0)); // same flush: the newest is kept
        assert_eq!(t.flush().await.unwrap(), 1);
        t.record(&d.id, &alice.id, base + MINUTE + 5, beat(3.0));
        t.flush().await.unwrap();
        assert_eq!(t.flush().await.unwrap(), 0);
        let minutes = t.history(&alice.id, &d.id, Step::Minute, 0).await.unwrap();
        assert_eq!(minutes.iter().map(|p| p.sample.cpu_percent.unwrap()).collect::<Vec<_>>(), [2.0, 3.0]);
        let hours = t.history(&alice.id, &d.id, Step::Hour, 0).await.unwrap();
        assert_eq!((hours.len(), hours[0].sample.cpu_percent), (1, Some(3.0)));
        assert!(t.history("someone-else", &d.id, Step::Minute, 0).await.unwrap().is_empty());
    }
}
