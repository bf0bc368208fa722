//! Users.

use crate::{BeginWrite, Result, Store, User, new_id, now_ms, with_pool};

impl Store {
    /// Returns the user with the verified `email`, creating it (verified:
    /// the operator vouches for it) when missing. A user who signed in with
    /// the same but unverified address is never returned.
    pub async fn upsert_user_by_email(&self, email: &str, name: &str) -> Result<User> {
        let id = new_id();
        let now = now_ms();
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO users (id, email, email_verified, name, created_at) VALUES ($1, $2, TRUE, $3, $4) \
                 ON CONFLICT (email) WHERE email_verified DO NOTHING",
            )
            .bind(&id)
            .bind(email)
            .bind(name)
            .bind(now)
            .execute(pool)
            .await?;
            let user = sqlx::query_as::<_, User>(
                "SELECT id, email, email_verified, name, created_at FROM users WHERE email = $1 AND email_verified",
            )
            .bind(email)
            .fetch_one(pool)
            .await?;
            Ok(user)
        })
    }

    /// The user for an OpenID identity: found by (issuer, subject) and
    /// refreshed with the latest email and name; or, the first time, a user
    /// created by an operator with the same email (no identity yet) claims
    /// it, but only when the provider verified the email; or a new user.
    /// An email already used by another identity is [`crate::Error::Conflict`].
    pub async fn upsert_user_by_subject(
        &self,
        issuer: &str,
        subject: &str,
        email: &str,
        name: &str,
        email_verified: bool,
    ) -> Result<User> {
        let now = now_ms();
        let new_id = new_id();
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let found: Option<(String,)> = sqlx::query_as("SELECT id FROM users WHERE issuer = $1 AND subject = $2")
                .bind(issuer)
                .bind(subject)
                .fetch_optional(&mut *tx)
                .await?;
            let id = match found {
                Some((id,)) => {
                    sqlx::query("UPDATE users SET email = $1, name = $2, email_verified = $3 WHERE id = $4")
                        .bind(email)
                        .bind(name)
                        .bind(email_verified)
                        .bind(&id)
                        .execute(&mut *tx)
                        .await?;
                    id
                }
                None => {
                    let claimed = if email_verified {
                        sqlx::query_as::<_, (String,)>(
                            "UPDATE users SET issuer = $1, subject = $2, name = $3 \
                             WHERE email = $4 AND email_verified AND issuer IS NULL RETURNING id",
                        )
                        .bind(issuer)
                        .bind(subject)
                        .bind(name)
                        .bind(email)
                        .fetch_optional(&mut *tx)
                        .await?
                    } else {
                        None
                    };
                    match claimed {
                        Some((id,)) => id,
                        None => {
                            sqlx::query(
                                "INSERT INTO users (id, email, email_verified, name, issuer, subject, created_at) \
                                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                            )
                            .bind(&new_id)
                            .bind(email)
                            .bind(email_verified)
                            .bind(name)
                            .bind(issuer)
                            .bind(subject)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                            new_id
                        }
                    }
                }
            };
            let user = sqlx::query_as::<_, User>(
                "SELECT id, email, email_verified, name, created_at FROM users WHERE id = $1",
            )
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(user)
        })
    }

    /// The user with the verified `email` (for operator commands).
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, User>(
                "SELECT id, email, email_verified, name, created_at FROM users WHERE email = $1 AND email_verified",
            )
            .bind(email)
            .fetch_optional(pool)
            .await?)
        })
    }

    /// The user with `id`.
    pub async fn get_user(&self, id: &str) -> Result<Option<User>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, User>("SELECT id, email, email_verified, name, created_at FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{Error, testdb};

    #[tokio::test]
    async fn openid_identities_map_to_users() {
        for store in testdb::stores().await {
            let iss = "https://idp.example.com";
            // A new identity creates a user; signing in again finds it and
            // refreshes its email and name.
            let a = store.upsert_user_by_subject(iss, "alice", "alice@example.com", "Alice", true).await.unwrap();
            let again = store.upsert_user_by_subject(iss, "alice", "alice@new.example", "Alice N", true).await.unwrap();
            assert_eq!(again.id, a.id);
            assert_eq!(again.email, "alice@new.example");

            // An operator-created user is claimed by a verified email only;
            // an unverified one gets a user of its own, never the operator's.
            let provisioned = store.upsert_user_by_email("carol@example.com", "carol").await.unwrap();
            assert!(provisioned.email_verified);
            let unverified =
                store.upsert_user_by_subject(iss, "carol-x", "carol@example.com", "Carol", false).await.unwrap();
            assert_ne!(unverified.id, provisioned.id);
            assert!(!unverified.email_verified);
            let carol = store.upsert_user_by_subject(iss, "carol", "carol@example.com", "Carol", true).await.unwrap();
            assert_eq!(carol.id, provisioned.id);

            // Someone whose provider lets them type any address claims
            // dave's before dave ever signs in: operators still find dave
            // (a new, verified user), and dave's own sign-in is not blocked.
            let mallory =
                store.upsert_user_by_subject(iss, "mallory-d", "dave@example.com", "Dave?", false).await.unwrap();
            assert_eq!(store.user_by_email("dave@example.com").await.unwrap(), None);
            let for_dave = store.upsert_user_by_email("dave@example.com", "dave").await.unwrap();
            assert_ne!(for_dave.id, mallory.id);
            assert_eq!(store.user_by_email("dave@example.com").await.unwrap().map(|u| u.id), Some(for_dave.id.clone()));
            let dave = store.upsert_user_by_subject(iss, "dave", "dave@example.com", "Dave", true).await.unwrap();
            assert_eq!(dave.id, for_dave.id);
            // A verified address taken by one identity cannot become another
            // identity's verified address on its next sign-in either.
            let moved = store.upsert_user_by_subject(iss, "mallory-d", "dave@example.com", "Dave?", true).await;
            assert!(matches!(moved, Err(Error::Conflict)), "{moved:?}");

            // Another identity cannot take an email that already has one.
            let thief = store.upsert_user_by_subject(iss, "mallory", "carol@example.com", "M", true).await;
            assert!(matches!(thief, Err(Error::Conflict)), "{thief:?}");
            let other_issuer = store.upsert_user_by_subject("https://other", "alice", "x@example.com", "X", true).await;
            assert_ne!(other_issuer.unwrap().id, a.id, "subjects are per issuer");
        }
    }
}
