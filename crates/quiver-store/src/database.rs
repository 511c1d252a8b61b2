//! The one backend dispatch: a database URL names PostgreSQL or SQLite, and [`Database`]
//! opens either, migrated, with every face the layers above use (reads, writes, the
//! outbox and the effects) and the bulk operations of the command line. Nothing else
//! matches on URL prefixes or on the backend.

use crate::events::{Effects, Outbox};
use crate::seed::{Dataset, Progress};
use crate::write::Writes;
use crate::{PgConfig, PgStore, SqliteConfig, SqliteStore, Store, StoreError};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// A database named by URL: `postgres://…` (or `postgresql://…`), or `sqlite:PATH`
/// (or `sqlite://PATH`).
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Postgres(String),
    Sqlite(PathBuf),
}

/// A database URL that names no backend quiver has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    #[error("sqlite url names no file: use sqlite:PATH")]
    NoFile,
    #[error("unsupported database url: expected postgres://… or sqlite:PATH")]
    Unsupported,
}

impl FromStr for DatabaseUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        match url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            Some("") => Err(UrlError::NoFile),
            Some(path) => Ok(Self::Sqlite(PathBuf::from(path))),
            None => Err(UrlError::Unsupported),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    /// The password of a PostgreSQL URL is redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postgres(url) => f
                .debug_tuple("Postgres")
                .field(&crate::config::redact_url(url))
                .finish(),
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
        }
    }
}

/// `body` with `s` bound to the open store, whichever backend it is.
macro_rules! on_backend {
    ($db:expr, $s:ident => $body:expr) => {
        match &$db.backend {
            Backend::Pg($s) => $body,
            Backend::Sqlite($s) => $body,
        }
    };
}

#[derive(Clone)]
enum Backend {
    Pg(Arc<PgStore>),
    Sqlite(Arc<SqliteStore>),
}

/// An open, migrated database of either backend. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Database {
    backend: Backend,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.backend {
            Backend::Pg(_) => "Database(PostgreSQL)",
            Backend::Sqlite(_) => "Database(SQLite)",
        })
    }
}

impl Database {
    /// Opens the database `url` names, configured by `pg` or `sqlite` (whose URL or path
    /// it replaces), and applies the migrations.
    pub async fn open(
        url: &DatabaseUrl,
        pg: &PgConfig,
        sqlite: &SqliteConfig,
    ) -> Result<Self, StoreError> {
        let backend = match url {
            DatabaseUrl::Postgres(url) => {
                let store = PgStore::connect(&PgConfig {
                    url: url.clone(),
                    ..pg.clone()
                })
                .await?;
                store.migrate().await?;
                Backend::Pg(Arc::new(store))
            }
            DatabaseUrl::Sqlite(path) => {
                let store = SqliteStore::connect(&SqliteConfig {
                    path: Some(path.clone()),
                    ..sqlite.clone()
                })
                .await?;
                store.migrate().await?;
                Backend::Sqlite(Arc::new(store))
            }
        };
        Ok(Self { backend })
    }

    /// Every read.
    pub fn store(&self) -> Arc<dyn Store> {
        on_backend!(self, s => s.clone())
    }

    /// Every write, each with its outbox event in its transaction.
    pub fn writes(&self) -> Arc<dyn Writes> {
        on_backend!(self, s => s.clone())
    }

    /// The outbox, for the relay.
    pub fn outbox(&self) -> Arc<dyn Outbox> {
        on_backend!(self, s => s.clone())
    }

    /// The events' effects, for the consumers.
    pub fn effects(&self) -> Arc<dyn Effects> {
        on_backend!(self, s => s.clone())
    }

    /// Whether the database holds no user yet.
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        on_backend!(self, s => s.is_empty().await)
    }

    /// Deletes every row (before loading a data set over existing data).
    pub async fn reset(&self) -> Result<(), StoreError> {
        on_backend!(self, s => s.reset().await)
    }

    /// Loads `dataset` into an empty database, the fastest way the backend has; returns
    /// each table's rows and time.
    pub async fn load_dataset(
        &self,
        dataset: &Dataset,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Vec<(&'static str, u64, Duration)>, StoreError> {
        on_backend!(self, s => s.load_dataset(dataset, progress).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_names_its_backend() {
        assert_eq!(
            "postgres://u@h/db".parse(),
            Ok(DatabaseUrl::Postgres("postgres://u@h/db".into()))
        );
        assert_eq!(
            "postgresql://h/db".parse(),
            Ok(DatabaseUrl::Postgres("postgresql://h/db".into()))
        );
        assert_eq!(
            "sqlite:./a.db".parse(),
            Ok(DatabaseUrl::Sqlite("./a.db".into()))
        );
        assert_eq!(
            "sqlite:///tmp/a.db".parse(),
            Ok(DatabaseUrl::Sqlite("/tmp/a.db".into()))
        );
        assert_eq!("sqlite:".parse::<DatabaseUrl>(), Err(UrlError::NoFile));
        assert_eq!(
            "mysql://h/db".parse::<DatabaseUrl>(),
            Err(UrlError::Unsupported)
        );
        let shown = format!(
            "{:?}",
            DatabaseUrl::Postgres("postgres://u:secret@h/db".into())
        );
        assert!(!shown.contains("secret"), "{shown}");
    }
}
