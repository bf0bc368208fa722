//! Browser sessions, in one place: the cookie's session id → the signed-in
//! user (cached a few seconds, activity written back at most once a
//! minute), a new session at sign-in, and every way one ends (logout, sign
//! out everywhere, one session from the list). Whatever ends a session here
//! also drops it from this instance's cache at once; other instances see
//! it within their `cache_ttl` (ADR 14).

use std::time::Duration;

use edgelink_auth::cookie::{CookieKeys, SessionId};
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

/// What verifying a session cookie's signature found.
#[derive(Debug)]
struct Verified {
    /// The cookie's name (part of what its signature covers).
    name: String,
    /// Its session id's storage hash.
    hash: String,
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
    /// A session cookie whose signature was verified → its session id's
    /// storage hash, so a busy browser's cookie is not verified and hashed
    /// again on every request. Only verified cookies are kept; what a
    /// session's end changes is the other cache.
    verified: TtlCache<String, std::sync::Arc<Verified>>,
    /// A session unused this long ends.
    idle_timeout: Duration,
    /// A session ends this long after sign-in whatever happens.
    absolute_lifetime: Duration,
}

impl BrowserSessions {
    /// Sessions in `store`, cached for `cache_ttl`.
    pub fn new(store: Store, cache_ttl: Duration, idle_timeout: Duration, absolute_lifetime: Duration) -> Self {
        BrowserSessions {
            store,
            cache: TtlCache::new(cache_ttl, 100_000),
            verified: TtlCache::new(cache_ttl, 100_000),
            idle_timeout,
            absolute_lifetime,
        }
    }

    /// The user the session cookie `value` (named `name`, signed with one
    /// of `keys`) belongs to, or None when its signature does not verify or
    /// the session is unknown, ended or expired.
    pub async fn resolve_cookie(
        &self,
        keys: &CookieKeys,
        name: &str,
        value: &str,
    ) -> Result<Option<UserPrincipal>, edgelink_store::Error> {
        let verified = match self.verified.get(value) {
            Some(v) if v.name == name => v,
            _ => {
                let Some(id) = keys.verify(name, value) else { return Ok(None) };
                let v = std::sync::Arc::new(Verified { name: name.to_owned(), hash: id.storage_hash() });
                self.verified.insert(value.to_owned(), v.clone());
                v
            }
        };
        self.resolve_hash(&verified.hash).await
    }

    /// The user of the session whose id has the storage hash `hash`, or
    /// None when the session is unknown, ended or expired.
    async fn resolve_hash(&self, hash: &str) -> Result<Option<UserPrincipal>, edgelink_store::Error> {
        let now = now_ms();
        if let Some(c) = self.cache.get(hash)
            && c.expires_at > now
        {
            return Ok(Some(c.principal));
        }
        let Some(session) = self.store.get_user_session(hash, now).await? else {
            return Ok(None);
        };
        let Some(user) = self.store.get_user(&session.user_id).await? else {
            return Ok(None);
        };
        if now - session.last_seen_at >= TOUCH_EVERY_MS {
            let idle = now + self.idle_timeout.as_millis() as i64;
            if let Err(e) = self.store.touch_user_session(hash, now, idle).await {
                tracing::warn!(error = %e, "recording session activity failed");
            }
        }
        let principal = UserPrincipal::session(user, hash.to_owned(), session.public_id);
        let expires_at = session.idle_expires_at.min(session.absolute_expires_at);
        self.cache.insert(hash.to_owned(), Cached { principal: principal.clone(), expires_at });
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
        self.cache.remove(hash);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_verified_cookie_is_kept_but_its_sessions_end_still_counts() {
        let store = edgelink_store::testing::sqlite().await;
        let user = store.upsert_user_by_subject("https://idp", "alice", "a@example.com", "Alice", true).await.unwrap();
        let sessions = BrowserSessions::new(
            store,
            Duration::from_secs(60),
            Duration::from_secs(3600),
            Duration::from_secs(86_400),
        );
        let keys = CookieKeys::new(vec![vec![7; 32]]).unwrap();
        let id = sessions.create(&user.id, Origin::default()).await.unwrap();
        let cookie = keys.sign("s", &id);

        let first = sessions.resolve_cookie(&keys, "s", &cookie).await.unwrap().expect("signed in");
        assert_eq!(first.user.id, user.id);
        assert!(sessions.verified.get(cookie.as_str()).is_some(), "kept once verified");
        // Forged, altered or differently named cookies verify (and are kept) never.
        let mut altered = cookie.clone();
        altered.push('A');
        for (name, value) in [("s", altered.as_str()), ("other", cookie.as_str()), ("s", "x.y")] {
            assert!(sessions.resolve_cookie(&keys, name, value).await.unwrap().is_none(), "{name}={value}");
            assert!(sessions.verified.get(value).is_none_or(|v| v.name == "s"), "{value}");
        }
        let other_keys = CookieKeys::new(vec![vec![8; 32]]).unwrap();
        let forged = other_keys.sign("s", &id);
        assert!(sessions.resolve_cookie(&keys, "s", &forged).await.unwrap().is_none());

        // Signing out ends it at once, kept cookie or not.
        sessions.end(&user.id, &first.session_hash).await.unwrap();
        assert!(sessions.resolve_cookie(&keys, "s", &cookie).await.unwrap().is_none());
    }
}
