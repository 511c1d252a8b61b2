//! Shared set-up for the criterion benches: a seeded PostgreSQL database that is built once
//! and reused by later runs, and latency percentiles with HdrHistogram.

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use quiver_store::seed::{Progress, SeedConfig, generate};
use quiver_store::{PgConfig, PgStore, Store};
use std::future::Future;
use std::time::{Duration, Instant};

/// The data set of the `quiver_bench` database: about a million posts, skewed follows.
pub fn bench_seed() -> SeedConfig {
    SeedConfig {
        users: 20_000,
        posts_per_user: 50,
        follows_per_user: 30,
        seed: 42,
        timeline_depth: 200,
    }
}

/// The PostgreSQL server the benches use: `DATABASE_URL`, else the local default.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The Redis the benches use: `REDIS_URL`, else the local default.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn url_for(db: &str) -> String {
    let admin = admin_url();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    format!("{base}/{db}")
}

/// A store over database `db` seeded with `config`, created and seeded only when the
/// database does not already hold exactly that seed (recorded as the database comment).
pub async fn seeded(db: &str, config: &SeedConfig) -> Result<PgStore> {
    let admin = PgStore::connect(&PgConfig {
        url: admin_url(),
        min_connections: 0,
        ..PgConfig::default()
    })
    .await
    .context("benches need postgresql at DATABASE_URL")?;
    let marker = format!("quiver bench seed {config:?}");
    let current: Option<String> = sqlx::query_scalar(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
    )
    .bind(db)
    .fetch_optional(admin.pool())
    .await?
    .flatten();
    let config_for = |url| PgConfig {
        url,
        statement_timeout: Duration::from_secs(600),
        ..PgConfig::default()
    };
    if current.as_deref() != Some(marker.as_str()) {
        eprintln!("seeding {db} with {config:?} (once; later runs reuse it)");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
        )))
        .execute(admin.pool())
        .await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(admin.pool())
            .await?;
        let store = PgStore::connect(&config_for(url_for(db))).await?;
        store.migrate().await?;
        let ds = generate(config);
        store.load_dataset(&ds, &|_: Progress| {}).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "COMMENT ON DATABASE {db} IS '{marker}'"
        )))
        .execute(admin.pool())
        .await?;
        store.close().await;
    }
    admin.close().await;
    Ok(PgStore::connect(&PgConfig {
        url: url_for(db),
        ..PgConfig::default()
    })
    .await?)
}

/// Loads a fresh database with `config` and returns (rows, rows per second of loading).
pub async fn seed_rate(db: &str, config: &SeedConfig) -> Result<(u64, f64)> {
    let admin = PgStore::connect(&PgConfig {
        url: admin_url(),
        min_connections: 0,
        ..PgConfig::default()
    })
    .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
    )))
    .execute(admin.pool())
    .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(admin.pool())
        .await?;
    let store = PgStore::connect(&PgConfig {
        url: url_for(db),
        statement_timeout: Duration::from_secs(600),
        ..PgConfig::default()
    })
    .await?;
    store.migrate().await?;
    let ds = generate(config);
    let started = Instant::now();
    let report = store.load_dataset(&ds, &|_: Progress| {}).await?;
    let elapsed = started.elapsed();
    store.close().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
    )))
    .execute(admin.pool())
    .await?;
    let rows: u64 = report.iter().map(|r| r.1).sum();
    Ok((rows, rows as f64 / elapsed.as_secs_f64()))
}

/// Latency percentiles of `op` run `n` times by each of `clients` concurrent callers.
pub async fn percentiles<F, Fut>(clients: usize, n: usize, op: F) -> Histogram<u64>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("valid histogram");
            for _ in 0..n {
                let t = Instant::now();
                op().await;
                h.record(t.elapsed().as_micros() as u64).expect("in range");
            }
            h
        }));
    }
    let mut all = Histogram::<u64>::new(3).expect("valid histogram");
    for t in tasks {
        all.add(t.await.expect("bench task")).expect("same bounds");
    }
    all
}

/// One line of a latency table, in milliseconds.
pub fn latency_row(name: &str, h: &Histogram<u64>) -> String {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
        h.len(),
        ms(0.5),
        ms(0.9),
        ms(0.99),
        h.max() as f64 / 1000.0
    )
}
