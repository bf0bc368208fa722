//! All of edgelink's SQL: the schema, its migrations, and one repository API
//! over SQLite (the embedded default) and PostgreSQL (several instances).
//!
//! No other crate writes SQL. Queries that touch a user's data take the
//! owner's id and filter by it here, so a handler cannot forget tenancy.
//! Times are Unix milliseconds; ids are UUID strings.
//!
//! # Layout
//! * [`Store`]: connecting, migrating, and the backend switch.
//! * [`users`], [`devices`], [`credentials`] (challenges, refresh tokens),
//!   [`sessions`] (the tunnel session registry), [`user_sessions`] (browser
//!   sessions), [`api_tokens`] (programs' tokens): the repository methods,
//!   one `impl Store` block per noun.
//! * [`model`]: the rows those methods return.

pub mod api_tokens;
pub mod credentials;
pub mod devices;
pub mod intermediaries;
pub mod messages;
pub mod metrics;
pub mod model;
pub mod origin_grants;
pub mod pairings;
pub mod rate_limits;
pub mod sessions;
pub mod user_sessions;
pub mod users;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

pub use api_tokens::{ApiToken, NewApiToken};
pub use devices::{DevicePatch, DeviceQuery};
pub use intermediaries::{CommandEnd, CommandRow, Intermediary, NewCommand};
pub use messages::{AckOutcome, MessageRow, NewMessage, QueueRefusal};
pub use metrics::{LatestSample, MetricPoint};
pub use model::*;
pub use origin_grants::RedeemedGrant;
pub use pairings::{Pairing, PairingRefusal};

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database URL is not one this store understands.
    #[error("unsupported database url (use sqlite://PATH or postgres://…)")]
    UnsupportedUrl,
    /// A unique constraint was violated (the row already exists).
    #[error("already exists")]
    Conflict,
    /// A referenced row does not exist.
    #[error("not found")]
    NotFound,
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// No database connection came free in time (a connect storm or a
    /// slow database): the caller may try again shortly.
    #[error("database busy: no free connection in time")]
    Busy,
    /// Any other database failure.
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => Error::Conflict,
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => Error::NotFound,
            sqlx::Error::RowNotFound => Error::NotFound,
            sqlx::Error::PoolTimedOut => Error::Busy,
            _ => Error::Database(e),
        }
    }
}

/// Result alias for store methods.
pub type Result<T> = std::result::Result<T, Error>;

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

#[derive(Clone)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The repository. Cheap to clone (pools are shared).
#[derive(Clone)]
pub struct Store {
    db: Db,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({:?})", self.backend())
    }
}

/// Runs `$body` with `$pool` bound to whichever pool the store has. The
/// body is compiled once per backend, so the same query text must be valid
/// on both: use `$1`-style placeholders in order of appearance.
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.db {
            $crate::Db::Sqlite($pool) => $body,
            $crate::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Begins a transaction that will write. On SQLite it is `BEGIN IMMEDIATE`:
/// the write lock is taken first, so a transaction that reads and then
/// writes waits (`busy_timeout`) instead of failing with "database is
/// locked" when another writer commits in between (WAL snapshots cannot be
/// upgraded). PostgreSQL begins as usual.
pub(crate) trait BeginWrite {
    /// The database.
    type Db: sqlx::Database;
    /// The transaction.
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = std::result::Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>> + Send;
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = std::result::Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error>> + Send
    {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

impl BeginWrite for PgPool {
    type Db = sqlx::Postgres;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = std::result::Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error>> + Send
    {
        self.begin()
    }
}

impl Store {
    /// Connects to `url` (`sqlite://PATH`, `sqlite:PATH`, `postgres://…`)
    /// and runs the migrations. A SQLite file is created when missing.
    pub async fn connect(url: &str) -> Result<Store> {
        let store = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new().max_connections(8).connect_with(opts).await?;
            Store { db: Db::Sqlite(pool) }
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool =
                PgPoolOptions::new().max_connections(16).acquire_timeout(Duration::from_secs(10)).connect(url).await?;
            Store { db: Db::Postgres(pool) }
        } else {
            return Err(Error::UnsupportedUrl);
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<()> {
        match &self.db {
            Db::Sqlite(pool) => sqlx::migrate!("migrations/sqlite").run(pool).await?,
            Db::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self.db {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        with_pool!(self, |pool| sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    // Straight from the system clock: asked on every forwarded request,
    // and chrono's calendar round trip costs ten times as much.
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
pub(crate) use testing as testdb;

#[cfg(test)]
mod error_tests {
    use super::Error;

    #[test]
    fn no_free_connection_in_time_is_busy_not_a_database_failure() {
        assert!(matches!(Error::from(sqlx::Error::PoolTimedOut), Error::Busy));
        assert!(matches!(Error::from(sqlx::Error::RowNotFound), Error::NotFound));
        assert!(matches!(Error::from(sqlx::Error::PoolClosed), Error::Database(_)));
    }
}

#[cfg(test)]
mod clock_tests {
    #[test]
    fn now_ms_is_unix_milliseconds() {
        let before = chrono::Utc::now().timestamp_millis();
        let now = super::now_ms();
        let after = chrono::Utc::now().timestamp_millis();
        assert!(before <= now && now <= after, "{before} <= {now} <= {after}");
    }
}
