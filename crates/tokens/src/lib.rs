//! Personal API tokens: programs act as their user with the token's
//! scopes, from the addresses its allowlist names, until it expires or is
//! revoked.
//!
//! The secret is shown once, at creation ([`secret`] has its format); the
//! store keeps a keyed digest of it (HMAC under the deployment's key ring),
//! so a copy of the database holds nothing usable. Lookups are cached for
//! `cache_ttl`, which bounds how long another api-server instance keeps
//! accepting a token revoked elsewhere; on the instance that revoked it,
//! it stops at once.
//!
//! # Layout
//! * [`secret`]: generating and recognising `elk_…` secrets.
//! * [`scope`]: scopes and how `manage` implies its family.
//! * [`ApiTokens`]: create, list, revoke, authenticate.

pub mod scope;
pub mod secret;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgelink_auth::cookie::CookieKeys;
use edgelink_protocol::net::Cidr;
use edgelink_store::{ApiToken, NewApiToken, Store, User};
pub use scope::{Scope, Scopes, UnknownScope};

/// Lifetimes a token may be created with, in days (or none).
pub const EXPIRY_DAYS: [u32; 3] = [30, 90, 365];
/// Tokens a user may hold at once.
pub const MAX_TOKENS_PER_USER: usize = 50;
/// Entries of an allowlist.
pub const MAX_ALLOWED_IPS: usize = 32;
/// Tokens expiring within this are flagged.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);
/// A token's last use is written at most this often.
const TOUCH_EVERY_MS: i64 = 60_000;
const PURPOSE: &str = "api-token";
const DAY_MS: i64 = 24 * 3600 * 1000;

/// Why a token could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// Empty, too long or with control characters.
    #[error("name must be 1 to 100 printable characters")]
    Name,
    /// A scope name this server does not know.
    #[error(transparent)]
    UnknownScope(#[from] UnknownScope),
    /// No scope asked for.
    #[error("a token needs at least one scope")]
    NoScopes,
    /// Asked for scopes the creator does not hold.
    #[error("a token cannot have scopes its creator lacks: {0}")]
    Broader(String),
    /// Not one of the allowed lifetimes.
    #[error("expires_in_days must be 30, 90, 365 or null (never)")]
    Expiry,
    /// A bad allowlist entry.
    #[error("allowed_ips: {0}")]
    Address(String),
    /// The user holds too many tokens.
    #[error("at most {MAX_TOKENS_PER_USER} tokens per user; revoke one first")]
    TooMany,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] edgelink_store::Error),
}

/// Why a presented token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Not a token (bad shape or checksum), unknown, or revoked.
    #[error("unknown or revoked API token")]
    Invalid,
    /// Past its expiry.
    #[error("API token expired")]
    Expired,
    /// Used from an address outside its allowlist.
    #[error("this API token may not be used from this address")]
    IpNotAllowed {
        /// The token (never its secret), for the log.
        token_id: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] edgelink_store::Error),
}

/// What a token request asks for.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// A name to recognise it by.
    pub name: String,
    /// Scope names.
    pub scopes: Vec<String>,
    /// 30, 90, 365, or absent/null for never.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
    /// Addresses or CIDR blocks it may be used from; empty = anywhere.
    #[serde(default)]
    pub allowed_ips: Vec<String>,
}

/// A token as listed (never the secret).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TokenView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Scope names.
    pub scopes: Vec<String>,
    /// Allowed addresses/blocks (empty = anywhere).
    pub allowed_ips: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, or null for never.
    pub expires_at: Option<String>,
    /// RFC 3339.
    pub last_used_at: Option<String>,
    /// Address of the last use.
    pub last_used_ip: Option<String>,
    /// Expires within 7 days.
    pub expires_soon: bool,
}

/// A token that authenticated a request.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// Its id.
    pub token_id: String,
    /// The user it acts as.
    pub owner: User,
    /// What it may do.
    pub scopes: Scopes,
}

#[derive(Clone)]
struct Cached {
    at: Instant,
    found: Option<Arc<Found>>,
    touched_at: i64,
}

/// A live token as a request needs it, parsed once per cache fill.
struct Found {
    token: ApiToken,
    owner: User,
    scopes: Scopes,
    allowed: Vec<Cidr>,
}

/// Create, list, revoke and authenticate API tokens.
pub struct ApiTokens {
    store: Store,
    keys: CookieKeys,
    cache_ttl: Duration,
    cache: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTokens").field("cache_ttl", &self.cache_ttl).finish_non_exhaustive()
    }
}

fn view(t: &ApiToken, now: i64) -> TokenView {
    TokenView {
        id: t.id.clone(),
        name: t.name.clone(),
        scopes: t.scopes.split_whitespace().map(str::to_owned).collect(),
        allowed_ips: t.allowed_ips.split_whitespace().map(str::to_owned).collect(),
        created_at: edgelink_protocol::time::rfc3339(t.created_at),
        expires_at: t.expires_at.map(edgelink_protocol::time::rfc3339),
        last_used_at: t.last_used_at.map(edgelink_protocol::time::rfc3339),
        last_used_ip: t.last_used_ip.clone(),
        expires_soon: t.expires_at.is_some_and(|e| e - now <= EXPIRY_WARNING.as_millis() as i64),
    }
}

impl ApiTokens {
    /// The token service over `store`, digesting secrets with `keys`.
    pub fn new(store: Store, keys: CookieKeys, cache_ttl: Duration) -> Self {
        ApiTokens { store, keys, cache_ttl, cache: Mutex::new(HashMap::new()) }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a token for `owner_id`, whose request holds `holder`
    /// scopes (all of them for a browser session). Returns its view and the
    /// secret, which is never available again.
    pub async fn create(
        &self,
        owner_id: &str,
        holder: &Scopes,
        req: &CreateRequest,
        now: i64,
    ) -> Result<(TokenView, String), CreateError> {
        let name = req.name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(CreateError::Name);
        }
        let scopes = Scopes::parse(&req.scopes)?;
        if scopes.is_empty() {
            return Err(CreateError::NoScopes);
        }
        if !holder.covers(&scopes) {
            let missing: Vec<_> =
                scopes.names().into_iter().filter(|n| !holder.covers(&Scopes::from_text(n))).collect();
            return Err(CreateError::Broader(missing.join(" ")));
        }
        let expires_at = match req.expires_in_days {
            None => None,
            Some(d) if EXPIRY_DAYS.contains(&d) => Some(now + i64::from(d) * DAY_MS),
            Some(_) => return Err(CreateError::Expiry),
        };
        let blocks =
            edgelink_protocol::net::parse_allowlist(&req.allowed_ips, MAX_ALLOWED_IPS).map_err(CreateError::Address)?;
        if self.store.list_api_tokens(owner_id).await?.len() >= MAX_TOKENS_PER_USER {
            return Err(CreateError::TooMany);
        }
        let secret = secret::generate();
        let digest = self.keys.keyed_digests(PURPOSE, &secret).swap_remove(0);
        let new = NewApiToken {
            name: name.to_owned(),
            token_hash: digest,
            scopes: scopes.to_text(),
            allowed_ips: blocks.join(" "),
            expires_at,
        };
        let token = self.store.create_api_token(owner_id, &new, now).await?;
        tracing::info!(token_id = %token.id, user_id = owner_id, scopes = %token.scopes, "API token created");
        Ok((view(&token, now), secret))
    }

    /// `owner_id`'s live tokens, newest first.
    pub async fn list(&self, owner_id: &str, now: i64) -> Result<Vec<TokenView>, edgelink_store::Error> {
        Ok(self.store.list_api_tokens(owner_id).await?.iter().map(|t| view(t, now)).collect())
    }

    /// Revokes `owner_id`'s token `id` (at once on this instance, within
    /// `cache_ttl` on others); false when they have no such token.
    pub async fn revoke(&self, owner_id: &str, id: &str, now: i64) -> Result<bool, edgelink_store::Error> {
        let done = self.store.revoke_api_token(owner_id, id, now).await?;
        if done {
            self.cache().retain(|_, c| c.found.as_ref().is_none_or(|f| f.token.id != id));
            tracing::info!(token_id = id, user_id = owner_id, "API token revoked");
        }
        Ok(done)
    }

    /// The token a request presents, used from `client_ip` at `now` (ms).
    pub async fn authenticate(
        &self,
        presented: &str,
        client_ip: Option<IpAddr>,
        now: i64,
    ) -> Result<Authenticated, AuthError> {
        if !secret::is_well_formed(presented) {
            return Err(AuthError::Invalid);
        }
        let digests = self.keys.keyed_digests(PURPOSE, presented);
        let hit = {
            let cache = self.cache();
            digests.iter().find_map(|d| {
                cache
                    .get(d)
                    .filter(|c| c.at.elapsed() < self.cache_ttl)
                    .map(|c| (d.clone(), c.found.clone(), c.touched_at))
            })
        };
        let (key, found, touched_at) = match hit {
            Some(h) => h,
            None => {
                let mut row = None;
                for d in &digests {
                    if let Some(t) = self.store.api_token_by_hash(d).await? {
                        row = Some((d.clone(), t));
                        break;
                    }
                }
                let key = row.as_ref().map_or_else(|| digests[0].clone(), |(d, _)| d.clone());
                let found = match row {
                    Some((_, t)) if t.revoked_at.is_none() => self.store.get_user(&t.owner_id).await?.map(|owner| {
                        Arc::new(Found {
                            scopes: Scopes::from_text(&t.scopes),
                            allowed: t.allowed_ips.split_whitespace().filter_map(|b| b.parse().ok()).collect(),
                            owner,
                            token: t,
                        })
                    }),
                    _ => None,
                };
                let touched_at = found.as_ref().and_then(|f| f.token.last_used_at).unwrap_or(0);
                if !self.cache_ttl.is_zero() {
                    let mut cache = self.cache();
                    if cache.len() > 100_000 {
                        cache.clear();
                    }
                    cache.insert(key.clone(), Cached { at: Instant::now(), found: found.clone(), touched_at });
                }
                (key, found, touched_at)
            }
        };
        let Some(f) = found else {
            return Err(AuthError::Invalid);
        };
        if f.token.expires_at.is_some_and(|e| e <= now) {
            return Err(AuthError::Expired);
        }
        if !f.allowed.is_empty() && !client_ip.is_some_and(|ip| f.allowed.iter().any(|c| c.contains(ip))) {
            return Err(AuthError::IpNotAllowed { token_id: f.token.id.clone() });
        }
        if now - touched_at >= TOUCH_EVERY_MS {
            if let Some(c) = self.cache().get_mut(&key) {
                c.touched_at = now;
            }
            let ip = client_ip.map(|ip| ip.to_string());
            if let Err(e) = self.store.touch_api_token(&f.token.id, now, ip.as_deref()).await {
                tracing::warn!(token_id = %f.token.id, error = %e, "could not record the token's use");
            }
        }
        Ok(Authenticated { token_id: f.token.id.clone(), owner: f.owner.clone(), scopes: f.scopes.clone() })
    }

    /// Logs tokens that expire within a week (the daily reminder); returns
    /// how many.
    pub async fn log_expiring(&self, now: i64) -> Result<usize, edgelink_store::Error> {
        let soon = self.store.api_tokens_expiring(now, now + EXPIRY_WARNING.as_millis() as i64).await?;
        for t in &soon {
            tracing::warn!(
                token_id = %t.id,
                user_id = %t.owner_id,
                expires_at = %edgelink_protocol::time::rfc3339(t.expires_at.unwrap_or(now)),
                "API token expires within 7 days"
            );
        }
        Ok(soon.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(scopes: &[&str]) -> CreateRequest {
        CreateRequest {
            name: "ci".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn lifecycle_scopes_expiry_and_allowlists() {
        let store = edgelink_store::testing::sqlite().await;
        let alice = store.upsert_user_by_email("alice@example.com", "Alice").await.unwrap();
        let keys = CookieKeys::new(vec![vec![3; 32]]).unwrap();
        let tokens = ApiTokens::new(store.clone(), keys.clone(), Duration::from_secs(5));
        let now = 1_000_000;
        let (view, secret) = tokens.create(&alice.id, &Scopes::all(), &request(&["device:read"]), now).await.unwrap();
        assert!(secret::is_well_formed(&secret));
        assert_eq!(view.scopes, vec!["device:read"]);
        let row = store.list_api_tokens(&alice.id).await.unwrap().remove(0);
        assert!(!format!("{row:?}").contains(&secret), "the secret is not stored");
        let auth = tokens.authenticate(&secret, None, now).await.unwrap();
        assert_eq!(auth.owner.id, alice.id);
        assert!(auth.scopes.allows(Scope::DeviceRead) && !auth.scopes.allows(Scope::DeviceWrite));

        // A token cannot mint a broader one; bad requests are refused.
        let err = tokens.create(&alice.id, &auth.scopes, &request(&["device:write"]), now).await.unwrap_err();
        assert!(matches!(err, CreateError::Broader(ref s) if s == "device:write"), "{err}");
        assert!(tokens.create(&alice.id, &auth.scopes, &request(&["device:read"]), now).await.is_ok());
        assert!(matches!(
            tokens.create(&alice.id, &Scopes::all(), &request(&[]), now).await,
            Err(CreateError::NoScopes)
        ));
        let mut odd = request(&["device:read"]);
        odd.expires_in_days = Some(7);
        assert!(matches!(tokens.create(&alice.id, &Scopes::all(), &odd, now).await, Err(CreateError::Expiry)));
        odd.expires_in_days = None;
        odd.allowed_ips = vec!["10.0.0.0/33".into()];
        assert!(matches!(tokens.create(&alice.id, &Scopes::all(), &odd, now).await, Err(CreateError::Address(_))));

        // Expiry and the allowlist.
        let mut req = request(&["device:read"]);
        req.expires_in_days = Some(30);
        req.allowed_ips = vec!["192.0.2.7".into(), "10.0.0.0/8".into(), "2001:db8::/32".into()];
        let (v, limited) = tokens.create(&alice.id, &Scopes::all(), &req, now).await.unwrap();
        assert!(!v.expires_soon);
        for ok in ["192.0.2.7", "10.1.2.3", "2001:db8::1", "::ffff:10.0.0.9"] {
            tokens.authenticate(&limited, Some(ok.parse().unwrap()), now).await.unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["192.0.2.8", "11.0.0.1", "2001:db9::1"] {
            let e = tokens.authenticate(&limited, Some(bad.parse().unwrap()), now).await.unwrap_err();
            assert!(matches!(e, AuthError::IpNotAllowed { ref token_id } if *token_id == v.id), "{bad}");
        }
        assert!(matches!(tokens.authenticate(&limited, None, now).await, Err(AuthError::IpNotAllowed { .. })));
        let later = now + 31 * DAY_MS;
        let e = tokens.authenticate(&limited, Some("10.0.0.1".parse().unwrap()), later).await.unwrap_err();
        assert!(matches!(e, AuthError::Expired));
        assert!(tokens.list(&alice.id, now + 25 * DAY_MS).await.unwrap().iter().any(|t| t.expires_soon));
        assert_eq!(tokens.log_expiring(now + 25 * DAY_MS).await.unwrap(), 1);

        // Revocation is immediate here; malformed and unknown are invalid.
        assert!(tokens.revoke(&alice.id, &view.id, now).await.unwrap());
        assert!(matches!(tokens.authenticate(&secret, None, now).await, Err(AuthError::Invalid)));
        assert!(matches!(tokens.authenticate("elk_nope", None, now).await, Err(AuthError::Invalid)));
        assert!(matches!(tokens.authenticate(&secret::generate(), None, now).await, Err(AuthError::Invalid)));
        // Another instance (its own cache) sees the revocation too.
        let other = ApiTokens::new(store, keys, Duration::from_secs(5));
        assert!(matches!(other.authenticate(&secret, None, now).await, Err(AuthError::Invalid)));
    }
}
