//! Rate limits: how many requests a key (an API token, a user, a device, a
//! client address for an anonymous route) may make per fixed window.
//!
//! Each request is decided in memory. Every `sync` (1 s by default) an
//! instance adds what it counted to the shared counter in the store and
//! learns the total all instances counted (for every key asked about since
//! the last sync), so N instances do not give a client N times the limit;
//! an instance may overshoot by what others counted since its last sync. Without a store (tests)
//! the limits are per process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgelink_store::Store;

/// What the limiter decided for one request, with what the response
/// headers (`X-RateLimit-*`, `Retry-After`) say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Requests per window.
    pub limit: u32,
    /// Left in this window after this request.
    pub remaining: u32,
    /// When the window ends, Unix seconds.
    pub reset_at: i64,
    /// Seconds until then (at least 1).
    pub retry_after: u64,
}

#[derive(Debug)]
struct Entry {
    window_start: i64,
    /// The shared total at the last sync (this instance's flushed counts
    /// included).
    synced: i64,
    /// Counted here, being flushed now.
    flushing: i64,
    /// Counted here since.
    pending: i64,
    /// Asked about since the last sync (its total is worth refreshing).
    touched: bool,
}

/// Counts per key; see the crate docs.
#[derive(Debug, Default)]
pub struct Limiter {
    store: Option<Store>,
    entries: Mutex<HashMap<String, Entry>>,
}

/// Keys tracked at most; beyond it, keys of past windows are dropped.
const MAX_KEYS: usize = 200_000;

impl Limiter {
    /// A limiter sharing its counts through `store` (None: this process
    /// only).
    pub fn new(store: Option<Store>) -> Self {
        Limiter { store, entries: Mutex::new(HashMap::new()) }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a request for `key` against `limit` per `window`, at `now`
    /// (Unix ms).
    pub fn check(&self, key: &str, limit: u32, window: Duration, now: i64) -> Decision {
        let window_ms = (window.as_millis() as i64).max(1);
        let start = now - now.rem_euclid(window_ms);
        let end = start + window_ms;
        let mut entries = self.entries();
        if entries.len() >= MAX_KEYS && !entries.contains_key(key) {
            entries.retain(|_, e| e.window_start >= start);
        }
        let e = entries.entry(key.to_owned()).or_insert(Entry {
            window_start: start,
            synced: 0,
            flushing: 0,
            pending: 0,
            touched: false,
        });
        if e.window_start != start {
            *e = Entry { window_start: start, synced: 0, flushing: 0, pending: 0, touched: false };
        }
        e.touched = true;
        let used = e.synced + e.flushing + e.pending;
        let retry_after = ((end - now + 999) / 1000).max(1) as u64;
        let limit64 = i64::from(limit);
        if used >= limit64 {
            return Decision { allowed: false, limit, remaining: 0, reset_at: end / 1000, retry_after };
        }
        e.pending += 1;
        let remaining = (limit64 - used - 1).max(0) as u32;
        Decision { allowed: true, limit, remaining, reset_at: end / 1000, retry_after }
    }

    /// Adds this instance's counts to the shared counters and learns the
    /// totals.
    pub async fn sync(&self) {
        let Some(store) = &self.store else { return };
        let batch: Vec<(String, i64, i64)> = {
            let mut entries = self.entries();
            entries
                .iter_mut()
                .filter(|(_, e)| (e.pending > 0 || e.touched) && e.flushing == 0)
                .map(|(k, e)| {
                    e.touched = false;
                    e.flushing = e.pending;
                    e.pending = 0;
                    (k.clone(), e.window_start, e.flushing)
                })
                .collect()
        };
        for (key, window_start, count) in batch {
            let total = store.add_to_rate_counter(&key, window_start, count).await;
            let mut entries = self.entries();
            let Some(e) = entries.get_mut(&key) else { continue };
            if e.window_start != window_start {
                continue;
            }
            match total {
                Ok(t) => e.synced = t,
                Err(err) => {
                    // Back to pending: still counted here, and the next
                    // sync shares them (they were lost to the other
                    // instances before).
                    e.pending += e.flushing;
                    tracing::warn!(error = %err, "could not share rate-limit counts; retrying at the next sync");
                }
            }
            e.flushing = 0;
        }
    }

    /// Syncs every `every` until the returned task is aborted, and drops
    /// stored counters of windows that ended an hour or more ago.
    pub fn spawn_sync(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut rounds: u64 = 0;
            loop {
                tokio::time::sleep(every).await;
                me.sync().await;
                rounds += 1;
                if rounds.is_multiple_of(600)
                    && let Some(store) = &me.store
                {
                    let before = edgelink_store::now_ms() - 2 * 3600 * 1000;
                    let _ = store.purge_rate_counters(before).await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn counts_down_refuses_at_the_limit_and_resets_with_the_window() {
        let l = Limiter::new(None);
        let t = 7_200_000 + 1_000;
        let d = l.check("tok:a", 3, HOUR, t);
        assert_eq!((d.allowed, d.limit, d.remaining, d.reset_at), (true, 3, 2, 10_800));
        assert_eq!(l.check("tok:a", 3, HOUR, t).remaining, 1);
        assert_eq!(l.check("tok:a", 3, HOUR, t).remaining, 0);
        let refused = l.check("tok:a", 3, HOUR, t);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, 3599);
        assert!(l.check("tok:b", 3, HOUR, t).allowed, "keys are separate");
        assert!(l.check("tok:a", 3, HOUR, 10_800_000).allowed, "a new window");
    }

    #[tokio::test]
    async fn two_instances_on_one_store_share_the_limit() {
        let store = edgelink_store::testing::sqlite().await;
        let a = Limiter::new(Some(store.clone()));
        let b = Limiter::new(Some(store));
        let t = 3_600_000 * 5;
        for _ in 0..6 {
            assert!(a.check("tok:x", 10, HOUR, t).allowed);
        }
        a.sync().await;
        let mut allowed = 0;
        for _ in 0..6 {
            if b.check("tok:x", 10, HOUR, t).allowed {
                allowed += 1;
            }
            b.sync().await;
        }
        assert_eq!(allowed, 4, "b lets through only what is left of the shared 10");
        // a learns b's counts at its next sync after a request.
        let _ = a.check("tok:x", 10, HOUR, t);
        a.sync().await;
        assert!(!a.check("tok:x", 10, HOUR, t).allowed);
    }

    #[tokio::test]
    async fn counts_that_could_not_be_shared_are_shared_at_the_next_sync() {
        for store in edgelink_store::testing::stores().await {
            let a = Limiter::new(Some(store.clone()));
            let t: i64 = 3_600_000 * 7;
            let window = t - t.rem_euclid(3_600_000);
            for _ in 0..3 {
                assert!(a.check("tok:down", 10, HOUR, t).allowed);
            }
            store.inject_rate_counter_failure(true).await.unwrap();
            a.sync().await;
            // Still counted here while the database refuses them.
            assert_eq!(a.check("tok:down", 10, HOUR, t).remaining, 6);
            store.inject_rate_counter_failure(false).await.unwrap();
            a.sync().await;
            assert_eq!(store.add_to_rate_counter("tok:down", window, 0).await.unwrap(), 4, "all four shared");
            a.sync().await;
            assert_eq!(a.check("tok:down", 10, HOUR, t).remaining, 5, "the four (and this one) counted once here");
        }
    }
}
