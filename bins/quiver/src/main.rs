//! The `quiver` binary: reads configuration from flags and the environment and hands it
//! to the library crates. No logic lives here beyond composition.

mod db;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// A personalized-feed API over PostgreSQL, Redis and an embedded SQLite default.
#[derive(Debug, Parser)]
#[command(name = "quiver", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the schema migrations to DATABASE_URL (postgres://… or sqlite:…)
    Migrate(db::MigrateArgs),
    /// Fill a database with a deterministic, realistic data set
    Seed(db::SeedArgs),
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Migrate(args) => db::migrate(args).await,
        Command::Seed(args) => db::seed(args).await,
    }
}
