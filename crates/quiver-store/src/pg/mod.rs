//! `PgStore`: the PostgreSQL backend. Every query is checked at compile time against the
//! schema (`query!`, with `.sqlx/` committed), and every batch is one `= ANY($1)` statement.
//!
//! `read.rs` holds the statements of the reads, `write.rs` those of the write flows, `outbox.rs`
//! the relay's claims and the consumers' effects, `bulk.rs` the seed loader, `replicas.rs`
//! the read replicas.

mod bulk;
mod outbox;
mod read;
mod replicas;
mod write;

pub use replicas::ReplicaStatus;

use crate::config::redact_url;
use crate::{PgConfig, StoreError};
use replicas::Replicas;
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::sync::Arc;

/// The PostgreSQL migrations, embedded in the binary.
pub static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./sql/migrations");

/// The PostgreSQL backend over a tuned `PgPool`, with reads spread over the read
/// replicas of `PgConfig::read_urls` when there are any (see [`PgStore::replicas`]).
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    waits: Arc<crate::store::Waits>,
    replicas: Arc<Replicas>,
}

impl PgStore {
    /// Connects a pool as `config` says. Fails fast when the primary cannot be reached; a
    /// replica that cannot takes no reads until it can. With replicas it must run inside
    /// a Tokio runtime (each has a watcher task).
    pub async fn connect(config: &PgConfig) -> Result<Self, StoreError> {
        let pool = Self::pool_options(config)
            .connect_with(Self::connect_options(config, &config.url)?)
            .await?;
        Self::with_replicas(pool, config)
    }

    /// Builds the pools without connecting; connections open on first use.
    pub fn connect_lazy(config: &PgConfig) -> Result<Self, StoreError> {
        let pool = Self::pool_options(config)
            .connect_lazy_with(Self::connect_options(config, &config.url)?);
        Self::with_replicas(pool, config)
    }

    /// Wraps an existing pool (tests, embedders with their own pool); no replicas.
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            waits: Default::default(),
            replicas: Default::default(),
        }
    }

    fn with_replicas(pool: PgPool, config: &PgConfig) -> Result<Self, StoreError> {
        let mut pools = Vec::with_capacity(config.read_urls.len());
        for url in &config.read_urls {
            let options = Self::connect_options(config, url)?;
            pools.push((
                redact_url(url),
                Self::pool_options(config).connect_lazy_with(options),
            ));
        }
        let replicas = Replicas::start(
            pools,
            &pool,
            config.replica_max_lag,
            config.replica_check_interval,
        );
        Ok(Self {
            replicas: Arc::new(replicas),
            ..Self::from_pool(pool)
        })
    }

    /// Where each read replica stands (empty without replicas).
    pub fn replicas(&self) -> Vec<ReplicaStatus> {
        self.replicas.status()
    }

    /// Returns once every replica in rotation has replayed what the primary has written
    /// (or left the rotation): a write calls it after its commit, before it answers.
    async fn replayed(&self) {
        self.replicas.await_replay(&self.pool).await;
    }

    /// The underlying pool, for writes that live elsewhere and for benches.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A pooled connection for one read, its wait counted when none was idle.
    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, StoreError> {
        self.waits.acquire(&self.pool).await
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrate_with(&PG_MIGRATOR).await
    }

    /// Applies `migrator`'s pending migrations (quiver's, or an embedder's own) on a
    /// connection of their own without the pool's statement timeout: that timeout is for
    /// requests, and a migration that builds an index on a large table outlasts it. The
    /// connection is closed afterwards, so the pool's keep their timeout.
    pub async fn migrate_with(&self, migrator: &sqlx::migrate::Migrator) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?.detach();
        sqlx::query("SET statement_timeout = 0")
            .execute(&mut conn)
            .await?;
        migrator.run(&mut conn).await?;
        conn.close().await?;
        Ok(())
    }

    fn connect_options(config: &PgConfig, url: &str) -> Result<PgConnectOptions, StoreError> {
        let timeout_ms = config.statement_timeout.as_millis().to_string();
        Ok(PgConnectOptions::from_str(url)?
            .application_name(&config.application_name)
            .options([("statement_timeout", timeout_ms.as_str())]))
    }

    fn pool_options(config: &PgConfig) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(config.max_connections)
            .min_connections(config.min_connections)
            .acquire_timeout(config.acquire_timeout)
            .idle_timeout(config.idle_timeout)
            .max_lifetime(config.max_lifetime)
            .test_before_acquire(config.test_before_acquire)
    }
}
