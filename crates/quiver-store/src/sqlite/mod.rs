//! `SqliteStore`: the embedded default backend, for `quiver serve --demo` and for
//! embedders without PostgreSQL. Same trait, same contract suite as `PgStore`.
//!
//! Its queries are checked at run time, not compile time: sqlx's macros check one database
//! per crate (launchbadge/sqlx#121, #916), and that database is PostgreSQL. The contract
//! suite runs every one of these statements against a real SQLite file.
//!
//! `read.rs` holds the statements of the reads, `write.rs` those of the write flows, `outbox.rs`
//! the relay's claims and the consumers' effects, `bulk.rs` the seed loader.

mod bulk;
mod outbox;
mod read;
mod write;

use crate::rows::Micros;
use crate::{SqliteConfig, StoreError};
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;

/// The SQLite migrations, embedded in the binary.
pub static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./sql/sqlite-migrations");

/// The embedded SQLite backend.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    waits: std::sync::Arc<crate::store::Waits>,
}

/// Timestamps are stored as integer microseconds since the Unix epoch.
pub(crate) fn to_micros(t: DateTime<Utc>) -> i64 {
    Micros::from(t).0
}

/// Ids (or pairs of ids) as the JSON array that `json_each(?)` expands: SQLite has no
/// arrays.
fn json<T: serde::Serialize + ?Sized>(ids: &T) -> String {
    serde_json::to_string(ids).expect("integers serialize")
}

impl SqliteStore {
    /// Opens (creating if missing) the database file in WAL mode with foreign keys on.
    pub async fn connect(config: &SqliteConfig) -> Result<Self, StoreError> {
        let (options, pool) = match &config.path {
            Some(path) => (
                SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal),
                SqlitePoolOptions::new().max_connections(config.max_connections),
            ),
            // Every in-memory connection is its own database: keep exactly one, forever.
            None => (
                SqliteConnectOptions::from_str("sqlite::memory:")?,
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None),
            ),
        };
        let options = options
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = pool
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            waits: Default::default(),
        })
    }

    /// Wraps an existing pool (tests, embedders with their own pool). The pool's
    /// connections must have foreign keys on, as `SqliteConnectOptions` does by default.
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self {
            pool,
            waits: Default::default(),
        }
    }

    /// The underlying pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A pooled connection for one read, its wait counted when none was idle.
    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>, StoreError> {
        self.waits.acquire(&self.pool).await
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        SQLITE_MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// A write transaction that takes the write lock up front, so two writers never
    /// deadlock upgrading read locks.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}
