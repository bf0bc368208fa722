//! The live tunnel sessions of this relay instance, in memory. The store
//! holds the same facts for other instances; this map holds the handles.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use edgelink_internal_api::SessionSummary;
use edgelink_protocol::close::CloseReason;
use edgelink_protocol::local_origin::LocalOrigin;
use edgelink_tunnel::Handle;

use crate::error::rfc3339_ms;

/// One live tunnel.
#[derive(Debug)]
pub struct LiveSession {
    /// Opaque session id (the registry key; never a credential).
    pub id: String,
    /// The device.
    pub device_id: String,
    /// Its owner.
    pub owner_id: String,
    /// The device's address as seen here.
    pub remote_addr: String,
    /// Connect time, ms.
    pub connected_at: i64,
    /// Last heartbeat (or connect) time, ms.
    pub last_heartbeat: AtomicI64,
    /// When the last heartbeat was written to the store, ms (writes are
    /// throttled so a chatty device does not become database load).
    pub heartbeat_stored_at: AtomicI64,
    /// Opens streams to the device and closes the session.
    pub handle: Handle,
    /// Finished keep-alive streams, for the next forwarded request.
    pub streams: crate::pool::Idle,
    /// Streams the relay may still open to the device ([`crate::pool::budget`]).
    pub budget: Arc<tokio::sync::Semaphore>,
    /// The device's local service, when it announced one the relay
    /// accepted: requests are then written for it (`Host`, base path) and
    /// the device may splice streams to it (docs/protocol.md §5).
    pub local_origin: Option<Box<LocalOrigin>>,
}

impl LiveSession {
    /// Closes the tunnel with `reason` (the device sees the code).
    pub fn close(&self, reason: CloseReason) {
        self.handle.close(reason.code(), reason.as_str());
    }

    /// The internal API's view of this session.
    pub fn summary(&self) -> SessionSummary {
        SessionSummary {
            token: self.id.clone(),
            connected: !self.handle.is_closed(),
            connected_at: rfc3339_ms(self.connected_at),
            last_heartbeat: rfc3339_ms(self.last_heartbeat.load(Ordering::Relaxed)),
            remote_addr: self.remote_addr.clone(),
            user_id: self.owner_id.clone(),
            device_id: self.device_id.clone(),
        }
    }
}

#[derive(Default)]
struct Maps {
    by_id: HashMap<String, Arc<LiveSession>, Hasher>,
    /// Each device's live session (always one of `by_id`'s).
    by_device: HashMap<String, Arc<LiveSession>, Hasher>,
}

/// Looked up on every forwarded request: seeded per process, faster than
/// SipHash.
type Hasher = foldhash::fast::RandomState;

/// Live sessions by id and by device.
#[derive(Default, Clone)]
pub struct Registry {
    maps: Arc<Mutex<Maps>>,
}

impl Registry {
    /// Adds `session`; returns the device's previous session, which the
    /// caller must close (one live session per device).
    pub fn insert(&self, session: Arc<LiveSession>) -> Option<Arc<LiveSession>> {
        let mut m = self.lock();
        let previous =
            m.by_device.insert(session.device_id.clone(), session.clone()).and_then(|old| m.by_id.remove(&old.id));
        m.by_id.insert(session.id.clone(), session);
        previous
    }

    /// Removes session `id` (if still present) and its device entry if it
    /// still points at this session.
    pub fn remove(&self, id: &str) -> Option<Arc<LiveSession>> {
        let mut m = self.lock();
        let s = m.by_id.remove(id)?;
        if m.by_device.get(&s.device_id).is_some_and(|cur| cur.id == id) {
            m.by_device.remove(&s.device_id);
        }
        Some(s)
    }

    /// The session with this id.
    pub fn get(&self, id: &str) -> Option<Arc<LiveSession>> {
        self.lock().by_id.get(id).cloned()
    }

    /// The live session with this id, or else the live session of the
    /// device with this id (one lock for both lookups).
    pub fn by_session_or_device(&self, id: &str) -> Option<Arc<LiveSession>> {
        let m = self.lock();
        m.by_id.get(id).or_else(|| m.by_device.get(id)).cloned()
    }

    /// The live session of a device.
    pub fn by_device(&self, device_id: &str) -> Option<Arc<LiveSession>> {
        let m = self.lock();
        m.by_device.get(device_id).cloned()
    }

    /// Every live session, oldest first.
    pub fn all(&self) -> Vec<Arc<LiveSession>> {
        let mut v = self.snapshot();
        v.sort_by(|a, b| a.connected_at.cmp(&b.connected_at).then_with(|| a.id.cmp(&b.id)));
        v
    }

    /// Every live session, in no order.
    pub fn snapshot(&self) -> Vec<Arc<LiveSession>> {
        self.lock().by_id.values().cloned().collect()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// True when no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        // A panic while holding this lock cannot leave the maps half
        // updated (each method's updates cannot panic), so recover.
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session whose tunnel runs over one end of an in-memory pipe (the
    /// other end is kept, so the tunnel stays up for the test).
    fn session(id: &str, device: &str, connected_at: i64) -> (Arc<LiveSession>, tokio::io::DuplexStream) {
        let (io, peer) = tokio::io::duplex(1024);
        let tunnel = edgelink_tunnel::session::spawn(
            io,
            &[],
            edgelink_tunnel::Role::Relay,
            &edgelink_tunnel::TunnelConfig::default(),
            |_| {},
        );
        let live = Arc::new(LiveSession {
            id: id.to_owned(),
            device_id: device.to_owned(),
            owner_id: "owner".to_owned(),
            remote_addr: "127.0.0.1:1".to_owned(),
            connected_at,
            last_heartbeat: AtomicI64::new(connected_at),
            heartbeat_stored_at: AtomicI64::new(connected_at),
            handle: tunnel.handle,
            streams: crate::pool::idle(),
            budget: crate::pool::budget(),
            local_origin: None,
        });
        (live, peer)
    }

    fn ids(sessions: &[Arc<LiveSession>]) -> Vec<&str> {
        sessions.iter().map(|s| s.id.as_str()).collect()
    }

    #[tokio::test]
    async fn a_device_has_one_live_session_and_the_one_it_replaced_is_handed_back() {
        let registry = Registry::default();
        let (first, _p1) = session("s1", "d1", 10);
        let (second, _p2) = session("s2", "d1", 20);
        assert!(registry.insert(first).is_none());
        let replaced = registry.insert(second).map(|s| s.id.clone());
        assert_eq!(replaced.as_deref(), Some("s1"), "the caller closes the old one");
        assert!(registry.get("s1").is_none());
        assert_eq!(registry.by_device("d1").map(|s| s.id.clone()).as_deref(), Some("s2"));
        assert_eq!(registry.len(), 1);

        // The old session's task ends later and removes its id: the
        // device's new session stays.
        assert!(registry.remove("s1").is_none());
        assert_eq!(registry.by_device("d1").map(|s| s.id.clone()).as_deref(), Some("s2"));
        assert_eq!(registry.remove("s2").map(|s| s.id.clone()).as_deref(), Some("s2"));
        assert!(registry.by_device("d1").is_none());
        assert!(registry.is_empty());
    }

    #[tokio::test]
    async fn sessions_are_found_by_session_or_device_id_and_listed_oldest_first() {
        let registry = Registry::default();
        let (a, _pa) = session("s-a", "d-a", 30);
        let (b, _pb) = session("s-b", "d-b", 10);
        let (c, _pc) = session("s-c", "d-c", 10);
        for s in [a, b, c] {
            assert!(registry.insert(s).is_none());
        }
        assert_eq!(registry.by_session_or_device("s-a").map(|s| s.device_id.clone()).as_deref(), Some("d-a"));
        assert_eq!(registry.by_session_or_device("d-b").map(|s| s.id.clone()).as_deref(), Some("s-b"));
        assert!(registry.by_session_or_device("nobody").is_none());
        assert!(registry.by_device("s-a").is_none(), "a session id is not a device id");
        assert_eq!(ids(&registry.all()), ["s-b", "s-c", "s-a"], "by connect time, then id");
        let mut seen = registry.snapshot();
        seen.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(ids(&seen), ["s-a", "s-b", "s-c"]);
        assert_eq!(registry.len(), 3);
    }
}
