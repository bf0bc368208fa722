//! Personal API tokens. Every method that serves a user takes the owner's
//! id; the lookup by digest (authentication) returns the owner with the
//! row.

use serde::Serialize;

use crate::{Result, Store, new_id, with_pool};

/// A token as its owner sees it: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ApiToken {
    /// Id (shown, used to revoke).
    pub id: String,
    /// The user it acts as.
    pub owner_id: String,
    /// Its name.
    pub name: String,
    /// Scopes, space-separated.
    pub scopes: String,
    /// Allowed client addresses/blocks, space-separated; empty = anywhere.
    pub allowed_ips: String,
    /// ms.
    pub created_at: i64,
    /// ms; None = never.
    pub expires_at: Option<i64>,
    /// ms.
    pub last_used_at: Option<i64>,
    /// Address of the last use.
    pub last_used_ip: Option<String>,
    /// ms, once revoked.
    pub revoked_at: Option<i64>,
}

/// What a new token is created with.
#[derive(Debug, Clone)]
pub struct NewApiToken {
    /// Name.
    pub name: String,
    /// Keyed digest of the secret.
    pub token_hash: String,
    /// Scopes, space-separated.
    pub scopes: String,
    /// Allowlist, space-separated.
    pub allowed_ips: String,
    /// ms; None = never.
    pub expires_at: Option<i64>,
}

const COLUMNS: &str =
    "id, owner_id, name, scopes, allowed_ips, created_at, expires_at, last_used_at, last_used_ip, revoked_at";

impl Store {
    /// Stores a token of `owner_id`; returns it.
    pub async fn create_api_token(&self, owner_id: &str, new: &NewApiToken, now: i64) -> Result<ApiToken> {
        let id = format!("tok_{}", new_id().replace('-', ""));
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO api_tokens (id, owner_id, name, token_hash, scopes, allowed_ips, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&id)
            .bind(owner_id)
            .bind(&new.name)
            .bind(&new.token_hash)
            .bind(&new.scopes)
            .bind(&new.allowed_ips)
            .bind(now)
            .bind(new.expires_at)
            .execute(pool)
            .await?;
            Ok::<(), crate::Error>(())
        })?;
        Ok(ApiToken {
            id,
            owner_id: owner_id.to_owned(),
            name: new.name.clone(),
            scopes: new.scopes.clone(),
            allowed_ips: new.allowed_ips.clone(),
            created_at: now,
            expires_at: new.expires_at,
            last_used_at: None,
            last_used_ip: None,
            revoked_at: None,
        })
    }

    /// `owner_id`'s tokens that are not revoked, newest first.
    pub async fn list_api_tokens(&self, owner_id: &str) -> Result<Vec<ApiToken>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE owner_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC, id"
        );
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, ApiToken>(sqlx::AssertSqlSafe(sql)).bind(owner_id).fetch_all(pool).await?)
        })
    }

    /// Unrevoked tokens of anyone's that expire before `before` (ms): the
    /// daily reminder.
    pub async fn api_tokens_expiring(&self, now: i64, before: i64) -> Result<Vec<ApiToken>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE revoked_at IS NULL AND expires_at IS NOT NULL \
             AND expires_at > $1 AND expires_at <= $2 ORDER BY expires_at"
        );
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, ApiToken>(sqlx::AssertSqlSafe(sql)).bind(now).bind(before).fetch_all(pool).await?)
        })
    }

    /// Revokes `owner_id`'s token `id`; false when there is no such
    /// (unrevoked) token of theirs.
    pub async fn revoke_api_token(&self, owner_id: &str, id: &str, now: i64) -> Result<bool> {
        with_pool!(self, |pool| {
            let done = sqlx::query(
                "UPDATE api_tokens SET revoked_at = $1 WHERE owner_id = $2 AND id = $3 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(owner_id)
            .bind(id)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// The token with this digest (revoked or not: the caller decides).
    pub async fn api_token_by_hash(&self, token_hash: &str) -> Result<Option<ApiToken>> {
        let sql = format!("SELECT {COLUMNS} FROM api_tokens WHERE token_hash = $1");
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, ApiToken>(sqlx::AssertSqlSafe(sql)).bind(token_hash).fetch_optional(pool).await?)
        })
    }

    /// Records a use of token `id`.
    pub async fn touch_api_token(&self, id: &str, now: i64, ip: Option<&str>) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE api_tokens SET last_used_at = $1, last_used_ip = $2 WHERE id = $3")
                .bind(now)
                .bind(ip)
                .bind(id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdb;

    #[tokio::test]
    async fn tokens_are_per_owner_found_by_digest_and_revoked_once() {
        for store in testdb::stores().await {
            let alice = store.upsert_user_by_email("alice@example.com", "Alice").await.unwrap();
            let bob = store.upsert_user_by_email("bob@example.com", "Bob").await.unwrap();
            let new = NewApiToken {
                name: "ci".into(),
                token_hash: "h1".into(),
                scopes: "device:read".into(),
                allowed_ips: "10.0.0.0/8".into(),
                expires_at: Some(5_000),
            };
            let t = store.create_api_token(&alice.id, &new, 1_000).await.unwrap();
            assert!(t.id.starts_with("tok_"));
            assert_eq!(store.list_api_tokens(&alice.id).await.unwrap(), vec![t.clone()]);
            assert!(store.list_api_tokens(&bob.id).await.unwrap().is_empty());
            assert_eq!(store.api_token_by_hash("h1").await.unwrap().unwrap().id, t.id);
            assert_eq!(store.api_tokens_expiring(1_000, 6_000).await.unwrap().len(), 1);
            store.touch_api_token(&t.id, 2_000, Some("10.0.0.1")).await.unwrap();
            let used = store.api_token_by_hash("h1").await.unwrap().unwrap();
            assert_eq!((used.last_used_at, used.last_used_ip.as_deref()), (Some(2_000), Some("10.0.0.1")));
            // Another user cannot revoke it; its owner can, once.
            assert!(!store.revoke_api_token(&bob.id, &t.id, 3_000).await.unwrap());
            assert!(store.revoke_api_token(&alice.id, &t.id, 3_000).await.unwrap());
            assert!(!store.revoke_api_token(&alice.id, &t.id, 3_000).await.unwrap());
            assert!(store.list_api_tokens(&alice.id).await.unwrap().is_empty());
            assert_eq!(store.api_token_by_hash("h1").await.unwrap().unwrap().revoked_at, Some(3_000));
            // The digest is unique.
            assert!(matches!(store.create_api_token(&bob.id, &new, 1_000).await, Err(crate::Error::Conflict)));
        }
    }
}
