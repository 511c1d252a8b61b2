//! `SqliteStore`: the embedded default backend, for `quiver serve --demo` and for
//! embedders without PostgreSQL. Same trait, same contract suite as `PgStore`.
//!
//! Its queries are checked at run time, not compile time: sqlx's macros check one database
//! per crate (launchbadge/sqlx#121, #916), and that database is PostgreSQL. The contract
//! suite runs every one of these statements against a real SQLite file.
//!
//! `read.rs` holds the reads, `write.rs` the statements of the write flows, `outbox.rs`
//! the relay's claims and the consumers' effects, `bulk.rs` the seed loader.

mod bulk;
mod outbox;
mod read;
mod write;

use crate::rows::{Micros, RefRow};
use crate::{SqliteConfig, StoreError};
use chrono::{DateTime, Utc};
use quiver_model::dedup_keys;
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

/// A batch of keys as the JSON array that `json_each(?)` expands: SQLite has no arrays.
fn json_ids<T: Copy + Eq + std::hash::Hash + Into<i64>>(keys: &[T]) -> String {
    let ids: Vec<i64> = dedup_keys(keys).into_iter().map(Into::into).collect();
    serde_json::to_string(&ids).expect("integers serialize")
}

/// Skeleton rows with their times decoded.
fn refs(rows: Vec<RefRow<Micros>>) -> Result<Vec<RefRow>, StoreError> {
    rows.into_iter().map(RefRow::timed).collect()
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

    /// The rows of `sql`, whose `?1` is the deduplicated `keys` as a JSON array; no
    /// statement for no keys.
    async fn by_ids<R, K>(&self, sql: &'static str, keys: &[K]) -> Result<Vec<R>, StoreError>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
        K: Copy + Eq + std::hash::Hash + Into<i64>,
    {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_as(sql)
            .bind(json_ids(keys))
            .fetch_all(&mut *self.conn().await?)
            .await?)
    }

    async fn merged(
        &self,
        authors_json: String,
        at: DateTime<Utc>,
        id: i64,
        n: i64,
    ) -> Result<Vec<RefRow>, StoreError> {
        // SQLite walks `posts_by_author` once per author for `IN (json_each)` and merges;
        // fine at embedded scale, where there is no materialized-timeline pressure.
        let rows: Vec<RefRow<Micros>> = sqlx::query_as(
            "SELECT id, created_at FROM posts
             WHERE author_id IN (SELECT value FROM json_each(?1))
               AND (created_at, id) < (?2, ?3)
             ORDER BY created_at DESC, id DESC
             LIMIT ?4",
        )
        .bind(authors_json)
        .bind(to_micros(at))
        .bind(id)
        .bind(n)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        refs(rows)
    }
}
