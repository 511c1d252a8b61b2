#![doc = include_str!("../README.md")]
mod config;
mod database;
mod error;
pub mod events;
mod keyset;
pub mod loaders;
mod pg;
mod read;
mod rows;
pub mod seed;
mod sqlite;
mod store;
pub mod write;

pub use config::{PgConfig, SqliteConfig};
pub use database::{Database, DatabaseUrl, UrlError};
pub use error::{StoreError, describe};
pub use keyset::MAX_PAGE_SIZE;
pub use pg::{PG_MIGRATOR, PgStore, ReplicaStatus};
pub use sqlite::{SQLITE_MIGRATOR, SqliteStore};
pub use store::{PoolStats, Store};
