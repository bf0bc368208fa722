//! Users.

use crate::{Result, Store, User, new_id, now_ms, with_pool};

impl Store {
    /// Returns the user with `email`, creating it when missing.
    pub async fn upsert_user_by_email(&self, email: &str, name: &str) -> Result<User> {
        let id = new_id();
        let now = now_ms();
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO users (id, email, name, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (email) DO NOTHING",
            )
            .bind(&id)
            .bind(email)
            .bind(name)
            .bind(now)
            .execute(pool)
            .await?;
            let user = sqlx::query_as::<_, User>("SELECT id, email, name, created_at FROM users WHERE email = $1")
                .bind(email)
                .fetch_one(pool)
                .await?;
            Ok(user)
        })
    }

    /// The user with `id`.
    pub async fn get_user(&self, id: &str) -> Result<Option<User>> {
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, User>("SELECT id, email, name, created_at FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?)
        })
    }
}
