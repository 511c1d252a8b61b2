//! `quiver migrate` and `quiver seed`: database set-up from the command line, with a
//! progress bar per table and a summary of rows and rates.

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use quiver_store::seed::{Progress, SeedConfig, SeedReport, generate};
use quiver_store::{PgConfig, PgStore, SqliteConfig, SqliteStore};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

/// The embedded default database, used by `--demo`.
pub(crate) const DEMO_DB: &str = "quiver-demo.db";

#[derive(Args)]
pub(crate) struct MigrateArgs {
    /// Database to migrate: postgres://… or sqlite:PATH
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
}

#[derive(Args)]
pub(crate) struct SeedArgs {
    /// Database to fill: postgres://… or sqlite:PATH (migrated first)
    #[arg(long, env = "DATABASE_URL", required_unless_present = "demo")]
    database_url: Option<String>,
    /// Small data set into the embedded SQLite default (./quiver-demo.db unless
    /// DATABASE_URL names a sqlite: database)
    #[arg(long)]
    demo: bool,
    /// Number of users
    #[arg(long, default_value_t = SeedConfig::default().users)]
    users: u32,
    /// Mean posts per user
    #[arg(long, default_value_t = SeedConfig::default().posts_per_user)]
    posts_per_user: u32,
    /// Mean accounts followed per user (Pareto: some follow thousands)
    #[arg(long, default_value_t = SeedConfig::default().follows_per_user)]
    follows_per_user: u32,
    /// Random seed; the same seed gives the same rows
    #[arg(long, default_value_t = SeedConfig::default().seed)]
    seed: u64,
    /// Depth of each materialized home timeline
    #[arg(long, default_value_t = SeedConfig::default().timeline_depth)]
    timeline_depth: u32,
    /// Delete existing rows first instead of refusing to seed a non-empty database
    #[arg(long)]
    reset: bool,
}

/// A database named on the command line.
enum Target {
    Postgres(String),
    Sqlite(PathBuf),
}

fn target(url: &str) -> Result<Target> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Target::Postgres(url.to_owned()))
    } else if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        if path.is_empty() {
            bail!("sqlite url names no file: use sqlite:PATH");
        }
        Ok(Target::Sqlite(PathBuf::from(path)))
    } else {
        bail!("unsupported database url: expected postgres://… or sqlite:PATH")
    }
}

async fn open_pg(url: String) -> Result<PgStore> {
    let config = PgConfig {
        url,
        // Bulk loads and migrations run long statements.
        statement_timeout: std::time::Duration::from_secs(600),
        ..PgConfig::default()
    };
    let store = PgStore::connect(&config)
        .await
        .context("cannot connect to postgresql")?;
    store.migrate().await.context("cannot apply migrations")?;
    Ok(store)
}

async fn open_sqlite(path: PathBuf) -> Result<SqliteStore> {
    let store = SqliteStore::connect(&SqliteConfig {
        path: Some(path.clone()),
        ..SqliteConfig::default()
    })
    .await
    .with_context(|| format!("cannot open sqlite database {}", path.display()))?;
    store.migrate().await.context("cannot apply migrations")?;
    Ok(store)
}

pub(crate) async fn migrate(args: MigrateArgs) -> Result<()> {
    match target(&args.database_url)? {
        Target::Postgres(url) => drop(open_pg(url).await?),
        Target::Sqlite(path) => drop(open_sqlite(path).await?),
    }
    eprintln!("migrations applied");
    Ok(())
}

pub(crate) async fn seed(args: SeedArgs) -> Result<()> {
    let config = if args.demo {
        SeedConfig {
            seed: args.seed,
            ..SeedConfig::demo()
        }
    } else {
        SeedConfig {
            users: args.users,
            posts_per_user: args.posts_per_user,
            follows_per_user: args.follows_per_user,
            seed: args.seed,
            timeline_depth: args.timeline_depth,
        }
    };
    let url = match (&args.database_url, args.demo) {
        (Some(url), true) if !url.starts_with("sqlite:") => format!("sqlite:{DEMO_DB}"),
        (Some(url), _) => url.clone(),
        (None, _) => format!("sqlite:{DEMO_DB}"),
    };
    let target = target(&url)?;

    let started = Instant::now();
    eprintln!("generating {config:?}");
    let dataset = generate(&config);
    let generate_time = started.elapsed();

    let bars = Bars::default();
    let progress = |p: Progress| bars.update(p);
    let load_started = Instant::now();
    let tables = match target {
        Target::Postgres(url) => {
            let store = open_pg(url).await?;
            prepare(store.is_empty().await?, args.reset)?;
            if args.reset {
                store.reset().await?;
            }
            store.load_dataset(&dataset, &progress).await?
        }
        Target::Sqlite(path) => {
            let store = open_sqlite(path).await?;
            prepare(store.is_empty().await?, args.reset)?;
            if args.reset {
                store.reset().await?;
            }
            store.load_dataset(&dataset, &progress).await?
        }
    };
    let report = SeedReport {
        tables,
        generate: generate_time,
        load: load_started.elapsed(),
    };
    print_summary(&report);
    Ok(())
}

fn prepare(empty: bool, reset: bool) -> Result<()> {
    if !empty && !reset {
        bail!("the database already holds data: pass --reset to replace it");
    }
    Ok(())
}

fn print_summary(report: &SeedReport) {
    println!(
        "{:<15} {:>12} {:>10} {:>14}",
        "table", "rows", "seconds", "rows/s"
    );
    for (table, rows, took) in &report.tables {
        let secs = took.as_secs_f64();
        println!(
            "{table:<15} {rows:>12} {secs:>10.2} {:>14.0}",
            *rows as f64 / secs.max(1e-9)
        );
    }
    println!(
        "{:<15} {:>12} {:>10.2} {:>14.0}",
        "total (load)",
        report.total_rows(),
        report.load.as_secs_f64(),
        report.rows_per_sec()
    );
    println!(
        "generated in memory in {:.2} s",
        report.generate.as_secs_f64()
    );
}

/// One progress bar per table, drawn only when stderr is a terminal.
#[derive(Default)]
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<&'static str, ProgressBar>>,
}

impl Bars {
    fn update(&self, p: Progress) {
        let mut bars = self.bars.lock().expect("progress lock");
        match p {
            Progress::Start { table, rows } => {
                let bar = self.multi.add(ProgressBar::new(rows));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>14} {bar:30} {pos:>10}/{len:10} {per_sec}",
                    )
                    .expect("valid template"),
                );
                bar.set_prefix(table);
                bars.insert(table, bar);
            }
            Progress::Advance { table, rows } => {
                if let Some(bar) = bars.get(table) {
                    bar.inc(rows);
                }
            }
            Progress::Finish { table } => {
                if let Some(bar) = bars.get(table) {
                    bar.finish();
                }
            }
        }
    }
}
