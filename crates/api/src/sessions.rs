//! Browser sessions, in one place: the cookie's session id → the signed-in
//! user (cached a few seconds, activity written back at most once a
//! minute), a new session at sign-in, and every way one ends (logout, sign
//! out everywhere, one session from the list). Whatever ends a session here
//! also drops it from this instance's cache at once; other instances see
//! it within their `cache_ttl` (ADR 14).

use std::time::Duration;

use edgelink_auth::cookie::SessionId;
use edgelink_auth::secret;
use edgelink_store::{Store, UserSession, now_ms};

use crate::cache::TtlCache;
use crate::principal::UserPrincipal;

/// Session activity is written back at most this often (ms), so a busy
/// browser does not turn every request into a database write.
const TOUCH_EVERY_MS: i64 = 60_000;

/// A session lookup kept in memory for a few seconds.
#[derive(Debug, Clone)]
struct Cached {
    principal: UserPrincipal,
    /// The session ends at this time (ms) at the latest.
    expires_at: i64,
}

/// Where a new session comes from, as its user will see it in the list.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The browser's User-Agent (truncated by the caller).
    pub user_agent: String,
    /// The client address.
    pub ip: String,
}

/// The browser sessions of this api-server.
pub struct BrowserSessions {
    store: Store,
    /// Session id hash → the signed-in user (hot path).
    cache: TtlCache<String, Cached>,
    /// A session unused this long ends.
    idle_timeout: Duration,
    /// A session ends this long after sign-in whatever happens.
    absolute_lifetime: Duration,
}

impl BrowserSessions {
    /// Sessions in `store`, cached for `cache_ttl`.
    pub fn new(store: Store, cache_ttl: Duration, idle_timeout: Duration, absolute_lifetime: Duration) -> Self {
        BrowserSessions { store, cache: TtlCache::new(cache_ttl, 100_000), idle_timeout, absolute_lifetime }
    }

    /// The user a (verified) session id belongs to, or None when the
    /// session is unknown, ended or expired.
    pub async fn resolve(&self, id: &SessionId) -> Result<Option<UserPrincipal>, edgelink_store::Error> {
        let hash = id.storage_hash();
        let now = now_ms();
        if let Some(c) = self.cache.get(&hash)
            && c.expires_at > now
        {
            return Ok(Some(c.principal));
        }
        let Some(session) = self.store.get_user_session(&hash, now).await? else {
            return Ok(None);
        };
        let Some(user) = self.store.get_user(&session.user_id).await? else {
            return Ok(None);
        };
        if now - session.last_seen_at >= TOUCH_EVERY_MS {
            let idle = now + self.idle_timeout.as_millis() as i64;
            if let Err(e) = self.store.touch_user_session(&hash, now, idle).await {
                tracing::warn!(error = %e, "recording session activity failed");
            }
        }
        let principal = UserPrincipal::session(user, hash.clone(), session.public_id);
        let expires_at = session.idle_expires_at.min(session.absolute_expires_at);
        self.cache.insert(hash, Cached { principal: principal.clone(), expires_at });
        Ok(Some(principal))
    }

    /// A new session for `user_id`; returns its id (for the cookie).
    pub async fn create(&self, user_id: &str, origin: Origin) -> Result<SessionId, edgelink_store::Error> {
        let id = SessionId::generate();
        let now = now_ms();
        let session = UserSession {
            id_hash: id.storage_hash(),
            public_id: secret::random_b64(12),
            user_id: user_id.to_owned(),
            created_at: now,
            last_seen_at: now,
            idle_expires_at: now + self.idle_timeout.as_millis() as i64,
            absolute_expires_at: now + self.absolute_lifetime.as_millis() as i64,
            user_agent: origin.user_agent,
            ip: origin.ip,
        };
        self.store.create_user_session(&session).await?;
        Ok(id)
    }

    /// Ends the session with storage hash `hash` of `user_id`; true when
    /// there was one.
    pub async fn end(&self, user_id: &str, hash: &str) -> Result<bool, edgelink_store::Error> {
        let ended = self.store.delete_user_session(user_id, hash).await?;
        self.cache.remove(&hash.to_owned());
        Ok(ended)
    }

    /// Ends every session of `user_id`; returns how many.
    pub async fn end_all(&self, user_id: &str) -> Result<u64, edgelink_store::Error> {
        let n = self.store.delete_all_user_sessions(user_id).await?;
        self.cache.remove_where(|_, c| c.principal.user.id == user_id);
        Ok(n)
    }

    /// Ends the session of `user_id` shown as `public_id`; true when there
    /// was one.
    pub async fn end_by_public_id(&self, user_id: &str, public_id: &str) -> Result<bool, edgelink_store::Error> {
        let ended = self.store.delete_user_session_by_public_id(user_id, public_id).await?;
        self.cache.remove_where(|_, c| c.principal.user.id == user_id && c.principal.session_public_id == public_id);
        Ok(ended)
    }

    /// The live sessions of `user_id`, newest first.
    pub async fn list(&self, user_id: &str) -> Result<Vec<UserSession>, edgelink_store::Error> {
        self.store.list_user_sessions(user_id, now_ms()).await
    }
}
