//! `quiver migrate` and `quiver seed`: database set-up from the command line, with a
//! progress bar per table and a summary of rows and rates.

use anyhow::{Result, bail};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use quiver_store::seed::{Progress, SeedConfig, SeedReport, generate};
use quiver_store::{Database, DatabaseUrl, PgConfig, SqliteConfig, StoreError};
use std::collections::HashMap;
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

/// Opens and migrates the database `url` names, with errors that say which step failed.
pub(crate) async fn open(url: &DatabaseUrl, pg: &PgConfig) -> Result<Database> {
    Database::open(url, pg, &SqliteConfig::default())
        .await
        .map_err(|e| {
            let what = match (url, &e) {
                (_, StoreError::Migrate(_)) => "cannot apply migrations".to_owned(),
                (DatabaseUrl::Postgres(_), _) => "cannot connect to postgresql".to_owned(),
                (DatabaseUrl::Sqlite(path), _) => {
                    format!("cannot open sqlite database {}", path.display())
                }
            };
            anyhow::Error::new(e).context(what)
        })
}

/// [`open`] for bulk work: migrations and loads run long statements.
async fn open_for_bulk(url: &DatabaseUrl) -> Result<Database> {
    open(
        url,
        &PgConfig {
            statement_timeout: std::time::Duration::from_secs(600),
            ..PgConfig::default()
        },
    )
    .await
}

pub(crate) async fn migrate(args: MigrateArgs) -> Result<()> {
    drop(open_for_bulk(&args.database_url.parse()?).await?);
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
    let url: DatabaseUrl = url.parse()?;

    let started = Instant::now();
    eprintln!("generating {config:?}");
    let dataset = generate(&config);
    let generate_time = started.elapsed();

    let bars = Bars::default();
    let progress = |p: Progress| bars.update(p);
    let load_started = Instant::now();
    let db = open_for_bulk(&url).await?;
    prepare(db.is_empty().await?, args.reset)?;
    if args.reset {
        db.reset().await?;
    }
    let tables = db.load_dataset(&dataset, &progress).await?;
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
