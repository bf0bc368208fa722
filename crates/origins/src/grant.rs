//! Grants: the one-time hand-off from a signed-in api-server session to a
//! device origin. Only SHA-256 of a grant is stored.

use edgelink_auth::secret;
use edgelink_store::{RedeemedGrant, Store};

/// Makes a grant for `user_id`'s browser session (`session_hash`) to enter
/// `device_id`'s origin, alive [`crate::GRANT_TTL`]; returns the grant.
pub async fn issue(
    store: &Store,
    device_id: &str,
    user_id: &str,
    session_hash: &str,
    now_ms: i64,
) -> Result<String, edgelink_store::Error> {
    let grant = secret::random_b64(32);
    let expires = now_ms + crate::GRANT_TTL.as_millis() as i64;
    store.create_origin_grant(&secret::hash(&grant), device_id, user_id, session_hash, now_ms, expires).await?;
    Ok(grant)
}

/// Spends `grant`: what it stood for, once, while fresh.
pub async fn redeem(store: &Store, grant: &str, now_ms: i64) -> Result<Option<RedeemedGrant>, edgelink_store::Error> {
    if grant.is_empty() || grant.len() > 128 {
        return Ok(None);
    }
    store.redeem_origin_grant(&secret::hash(grant), now_ms).await
}
