//! Request counters shared by all api-server instances: each adds its
//! local counts for a key's window and reads back the total.

use crate::{Result, Store, with_pool};

impl Store {
    /// Adds `count` to `key`'s counter for the window starting at
    /// `window_start` (ms) and returns the window's total. A newer window
    /// replaces an older one; counts for an older window than the stored
    /// one are dropped.
    pub async fn add_to_rate_counter(&self, key: &str, window_start: i64, count: i64) -> Result<i64> {
        with_pool!(self, |pool| {
            let (total,): (i64,) = sqlx::query_as(
                "INSERT INTO rate_limits (key, window_start, count) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET \
                 count = CASE WHEN rate_limits.window_start = excluded.window_start \
                              THEN rate_limits.count + excluded.count \
                              WHEN rate_limits.window_start < excluded.window_start THEN excluded.count \
                              ELSE rate_limits.count END, \
                 window_start = CASE WHEN rate_limits.window_start < excluded.window_start \
                                     THEN excluded.window_start ELSE rate_limits.window_start END \
                 RETURNING count",
            )
            .bind(key)
            .bind(window_start)
            .bind(count)
            .fetch_one(pool)
            .await?;
            Ok(total)
        })
    }

    /// Drops counters of windows that started before `before` (ms).
    pub async fn purge_rate_counters(&self, before: i64) -> Result<u64> {
        with_pool!(self, |pool| {
            Ok(sqlx::query("DELETE FROM rate_limits WHERE window_start < $1")
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

    #[tokio::test]
    async fn counters_add_per_window_and_roll_over() {
        for store in testdb::stores().await {
            assert_eq!(store.add_to_rate_counter("tok:1", 1_000, 3).await.unwrap(), 3);
            assert_eq!(store.add_to_rate_counter("tok:1", 1_000, 4).await.unwrap(), 7);
            assert_eq!(store.add_to_rate_counter("tok:2", 1_000, 1).await.unwrap(), 1);
            // The next window starts over; a late flush for the old one is dropped.
            assert_eq!(store.add_to_rate_counter("tok:1", 2_000, 2).await.unwrap(), 2);
            assert_eq!(store.add_to_rate_counter("tok:1", 1_000, 5).await.unwrap(), 2);
            assert_eq!(store.purge_rate_counters(2_000).await.unwrap(), 1);
        }
    }
}
