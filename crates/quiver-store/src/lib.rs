//! quiver's storage layer, the only crate that speaks SQL.
//!
//! [`PgStore`] (PostgreSQL, production) and [`SqliteStore`] (embedded default) implement
//! one [`Store`] trait; [`Database`] opens either from a URL; [`loaders`] adapts it to the batch-load seam of `quiver-model`.
//! Every batch read is one statement for any number of keys, and every list is a keyset
//! page on `(created_at DESC, id DESC)`. [`seed`] fills either backend with a
//! deterministic, realistic data set.
//!
//! ```no_run
//! # async fn demo() -> Result<(), quiver_store::StoreError> {
//! use quiver_model::{Loader, UserId};
//! use quiver_store::{PgConfig, PgStore, Store, loaders::UsersLoader};
//! use std::sync::Arc;
//!
//! let store = PgStore::connect(&PgConfig { url: "postgres://localhost/quiver".into(), ..Default::default() }).await?;
//! store.migrate().await?;
//! let users = UsersLoader(Arc::new(store));
//! let found = users.load_many(&[UserId(1), UserId(2), UserId(1)]).await.unwrap();
//! assert!(found.len() <= 2);
//! # Ok(()) }
//! ```

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
