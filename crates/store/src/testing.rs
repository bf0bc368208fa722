//! Test databases: a fresh SQLite file, and a fresh PostgreSQL database
//! when `EDGELINK_TEST_POSTGRES_URL` is set. Never used by the binaries.

use crate::{NewDevice, Store};

/// Environment variable naming a PostgreSQL server for tests.
pub const POSTGRES_ENV: &str = "EDGELINK_TEST_POSTGRES_URL";

/// Prefix of the per-test databases (swept by `make test`).
pub const DB_PREFIX: &str = "edgelink_t_";

/// A store on a new SQLite file under the system temp dir.
pub async fn sqlite() -> Store {
    let url = fresh_url(false).await.expect("sqlite url");
    Store::connect(&url).await.expect("sqlite test store")
}

/// The PostgreSQL URL for tests, if configured.
pub fn postgres_url() -> Option<String> {
    std::env::var(POSTGRES_ENV).ok().filter(|s| !s.is_empty())
}

/// A store on a new PostgreSQL database, if a server is configured.
pub async fn postgres() -> Option<Store> {
    let url = fresh_url(true).await?;
    Some(Store::connect(&url).await.expect("connect to new test database"))
}

/// A URL for a fresh database of the kind asked for: SQLite file or, when
/// configured, a new PostgreSQL database.
pub async fn fresh_url(postgres: bool) -> Option<String> {
    if postgres {
        let admin = postgres_url()?;
        let name = format!("{DB_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let admin_store = Store::connect_raw_postgres(&admin).await.expect("connect to test postgres");
        admin_store.create_database(&name).await.expect("create test database");
        admin_store.close().await;
        let base = admin.split_once('?').map(|(b, _)| b).unwrap_or(&admin);
        let cut = base.rfind('/').unwrap_or(base.len());
        Some(format!("{}/{}", &base[..cut], name))
    } else {
        let dir = std::env::temp_dir().join("edgelink-tests");
        let _ = std::fs::create_dir_all(&dir);
        Some(format!("sqlite://{}", dir.join(format!("{}.db", uuid::Uuid::new_v4())).display()))
    }
}

/// SQLite always, PostgreSQL too when configured: tests loop over these.
pub async fn stores() -> Vec<Store> {
    let mut v = vec![sqlite().await];
    if let Some(pg) = postgres().await {
        v.push(pg);
    }
    v
}

/// A device row for `owner_id` with a fixed dummy key.
pub fn new_device(owner_id: &str) -> NewDevice {
    NewDevice {
        owner_id: owner_id.to_owned(),
        name: "test device".into(),
        device_type: "gateway".into(),
        capabilities: Default::default(),
        region: None,
        metadata: Default::default(),
        public_key: "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n".into(),
        key_algorithm: "ed25519".into(),
        node_id: None,
    }
}

impl Store {
    /// How many refresh tokens a device has had (tests observe rotation).
    pub async fn refresh_token_count(&self, device_id: &str) -> crate::Result<i64> {
        crate::with_pool!(self, |pool| {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM refresh_tokens WHERE device_id = $1")
                .bind(device_id)
                .fetch_one(pool)
                .await?;
            Ok(n)
        })
    }

    /// How many browser sessions exist, live or not (tests check that a
    /// refused sign-in created none).
    pub async fn user_session_count(&self) -> crate::Result<i64> {
        crate::with_pool!(self, |pool| {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM user_sessions").fetch_one(pool).await?;
            Ok(n)
        })
    }

    /// Makes every device insert fail (a trigger), or stops that; for
    /// tests of all-or-nothing transactions.
    pub async fn inject_device_insert_failure(&self, on: bool) -> crate::Result<()> {
        self.inject_insert_failure("devices", on).await
    }

    /// Makes every write of a shared rate-limit counter fail, or stops
    /// that; for tests of what a limiter does when the database is down.
    pub async fn inject_rate_counter_failure(&self, on: bool) -> crate::Result<()> {
        self.inject_insert_failure("rate_limits", on).await
    }

    /// A trigger that fails every insert into `table` (one of ours, named
    /// by the callers above), or its removal.
    async fn inject_insert_failure(&self, table: &'static str, on: bool) -> crate::Result<()> {
        let sql: Vec<String> = match (&self.db, on) {
            (crate::Db::Sqlite(_), true) => vec![format!(
                "CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} \
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            )],
            (crate::Db::Sqlite(_), false) => vec![format!("DROP TRIGGER IF EXISTS fail_{table}")],
            (crate::Db::Postgres(_), true) => vec![
                format!(
                    "CREATE OR REPLACE FUNCTION fail_{table}() RETURNS trigger AS $$ \
                     BEGIN RAISE EXCEPTION 'injected failure'; END $$ LANGUAGE plpgsql"
                ),
                format!(
                    "CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION fail_{table}()"
                ),
            ],
            (crate::Db::Postgres(_), false) => vec![format!("DROP TRIGGER IF EXISTS fail_{table} ON {table}")],
        };
        for statement in sql {
            match &self.db {
                crate::Db::Sqlite(pool) => {
                    sqlx::query(sqlx::AssertSqlSafe(statement)).execute(pool).await?;
                }
                crate::Db::Postgres(pool) => {
                    sqlx::query(sqlx::AssertSqlSafe(statement)).execute(pool).await?;
                }
            }
        }
        Ok(())
    }

    async fn connect_raw_postgres(url: &str) -> crate::Result<Store> {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(url).await?;
        Ok(Store { db: crate::Db::Postgres(pool) })
    }

    async fn create_database(&self, name: &str) -> crate::Result<()> {
        // `name` is generated above from a UUID: safe to splice.
        crate::with_pool!(self, |pool| {
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(pool).await?;
        });
        Ok(())
    }
}
