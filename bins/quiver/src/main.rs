//! The `quiver` binary: reads configuration from flags and the environment and hands it
//! to the library crates. No logic lives here beyond composition.

mod db;
mod serve;
mod telemetry;

#[cfg(all(feature = "mimalloc", feature = "jemalloc"))]
compile_error!("choose one allocator feature: mimalloc or jemalloc");

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

/// A personalized-feed API over PostgreSQL, Redis and an embedded SQLite default.
///
/// The arguments carry secrets and database URLs: none of these types implements
/// `Debug`, so no log line can print them whole.
#[derive(Parser)]
#[command(name = "quiver", version, about)]
struct Cli {
    /// Log lines as text or as JSON objects
    #[arg(
        long,
        env = "QUIVER_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the schema migrations to DATABASE_URL (postgres://… or sqlite:…)
    Migrate(db::MigrateArgs),
    /// Fill a database with a deterministic, realistic data set
    Seed(db::SeedArgs),
    /// Serve the API (and the admin listener) until SIGTERM or Ctrl-C, then drain
    Serve(Box<serve::ServeArgs>),
    /// Print a bearer token for a user, signed with QUIVER_JWT_SECRET
    Token(serve::TokenArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let telemetry = telemetry::Telemetry::init(matches!(cli.log_format, LogFormat::Json))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let done = runtime.block_on(async {
        match cli.command {
            Command::Migrate(args) => db::migrate(args).await,
            Command::Seed(args) => db::seed(args).await,
            Command::Serve(args) => serve::serve(*args).await,
            Command::Token(args) => serve::token(args),
        }
    });
    drop(runtime);
    telemetry.shutdown();
    done
}
