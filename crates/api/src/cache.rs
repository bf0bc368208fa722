//! Small in-memory caches for the per-request hot path (session cookie →
//! user, device → relay), so a forwarded request does not read the
//! database. Entries live a short, fixed time: changes made through this
//! instance invalidate at once; changes made through another instance are
//! seen within the TTL (ADR 14).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A bounded map whose entries expire `ttl` after insertion.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    max: usize,
    map: Mutex<Map<K, V>>,
}

/// Looked up on every forwarded request: a seeded foldhash, cheaper than
/// SipHash on the session ids and device ids these are keyed by.
type Map<K, V> = HashMap<K, (V, Instant), foldhash::fast::RandomState>;

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// Entries live `ttl`; at most `max` are kept.
    pub fn new(ttl: Duration, max: usize) -> Self {
        TtlCache { ttl, max, map: Mutex::new(HashMap::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map<K, V>> {
        match self.map.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The live value for `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.ttl.is_zero() {
            return None;
        }
        let mut map = self.lock();
        match map.get(key) {
            Some((v, at)) if at.elapsed() < self.ttl => Some(v.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores `value` for `key`.
    pub fn insert(&self, key: K, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.lock();
        if map.len() >= self.max {
            let ttl = self.ttl;
            map.retain(|_, (_, at)| at.elapsed() < ttl);
            if map.len() >= self.max {
                map.clear();
            }
        }
        map.insert(key, (value, Instant::now()));
    }

    /// Forgets `key`.
    pub fn remove<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().remove(key);
    }

    /// Forgets every entry whose value matches.
    pub fn remove_where(&self, pred: impl Fn(&K, &V) -> bool) {
        self.lock().retain(|k, (v, _)| !pred(k, v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_are_bounded_and_can_be_removed() {
        let c = TtlCache::new(Duration::from_millis(50), 2);
        c.insert("a", 1);
        assert_eq!(c.get(&"a"), Some(1));
        c.remove(&"a");
        assert_eq!(c.get(&"a"), None);
        c.insert("a", 1);
        c.insert("b", 2);
        c.insert("c", 3);
        assert!(c.lock().len() <= 2);
        c.remove_where(|_, v| *v == 3);
        assert_eq!(c.get(&"c"), None);
        c.insert("d", 4);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get(&"d"), None);
        let off = TtlCache::new(Duration::ZERO, 2);
        off.insert("x", 1);
        assert_eq!(off.get(&"x"), None);
    }
}
