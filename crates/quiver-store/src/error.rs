//! The storage error: one enum, classified so upper layers can react without ever seeing
//! driver text.

use quiver_model::{ErrorCode, HasErrorCode};

/// Why a storage call failed. `Display` never includes driver text; the driver error is
/// kept as the `source` for logs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The row asked for does not exist (`sqlx::Error::RowNotFound` lands here).
    #[error("not found")]
    NotFound,
    /// A write the data forbids (following yourself, following across a block); the
    /// message says which, for clients.
    #[error("{0}")]
    Refused(&'static str),
    /// An idempotency key used before with a different request.
    #[error("the idempotency key was already used with a different request")]
    KeyReused,
    /// Lines of an order that cannot be ordered, by position, with the reason.
    #[error("some items cannot be ordered")]
    Unorderable(Vec<(usize, crate::write::LineRefusal)>),
    /// The row exists but belongs to someone else.
    #[error("{0}")]
    NotYours(&'static str),
    /// No connection could be had in time, or the connection broke.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// The server cancelled the statement at `statement_timeout`.
    #[error("database statement timed out")]
    Timeout(#[source] sqlx::Error),
    /// A unique key is already taken.
    #[error("conflicts with existing data")]
    Conflict(#[source] sqlx::Error),
    /// A check or foreign-key constraint rejected the data.
    #[error("violates a data constraint")]
    Constraint(#[source] sqlx::Error),
    /// A page size outside `1..=MAX_PAGE_SIZE`.
    #[error("page limit must be between 1 and {max}, got {got}")]
    InvalidLimit {
        /// The limit asked for.
        got: u32,
        /// The largest limit allowed.
        max: u32,
    },
    /// A stored value does not decode into the domain type (a bug or a manual edit).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// Applying migrations failed.
    #[error("database migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// Any other database error.
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &err {
            E::RowNotFound => Self::NotFound,
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => {
                Self::Unavailable(err)
            }
            E::Database(db) => match db.code().as_deref() {
                // query_canceled: statement_timeout fired.
                Some("57014") => Self::Timeout(err),
                // unique_violation (PostgreSQL) and SQLITE_CONSTRAINT_UNIQUE / _PRIMARYKEY.
                Some("23505" | "2067" | "1555") => Self::Conflict(err),
                Some(code) if code.starts_with("23") => Self::Constraint(err),
                // SQLITE_CONSTRAINT_CHECK / _FOREIGNKEY / _NOTNULL.
                Some("275" | "787" | "1299") => Self::Constraint(err),
                // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections,
                // and "database is not currently accepting connections" (55000, which
                // connecting is the only thing of ours that can meet).
                Some("57P01" | "57P02" | "57P03" | "53300" | "55000") => Self::Unavailable(err),
                // Class 08: connection exceptions.
                Some(code) if code.starts_with("08") => Self::Unavailable(err),
                _ => Self::Database(err),
            },
            _ => Self::Database(err),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        Self::Migrate(err)
    }
}

impl HasErrorCode for StoreError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound => ErrorCode::NotFound,
            Self::Refused(_) | Self::KeyReused | Self::Unorderable(_) => ErrorCode::InvalidInput,
            Self::NotYours(_) => ErrorCode::Forbidden,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Timeout(_) => ErrorCode::Timeout,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::Constraint(_) | Self::InvalidLimit { .. } => ErrorCode::InvalidInput,
            Self::Corrupt(_) | Self::Migrate(_) | Self::Database(_) => ErrorCode::Internal,
        }
    }
}

/// An error with every cause under it, for logs and dead letters (never for clients):
/// each level's message joined by `: `, and a database error's code (PostgreSQL's
/// SQLSTATE, SQLite's extended result code) where the driver gave one. `Display` of a
/// [`StoreError`] stays driver-free; this is where the driver's words go.
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut next = Some(err);
    while let Some(e) = next {
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&e.to_string());
        if let Some(sqlx::Error::Database(db)) = e.downcast_ref::<sqlx::Error>()
            && let Some(code) = db.code()
        {
            out.push_str(&format!(" (code {code})"));
        }
        next = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_not_found_becomes_domain_not_found() {
        let e = StoreError::from(sqlx::Error::RowNotFound);
        assert!(matches!(e, StoreError::NotFound));
        assert_eq!(e.code(), ErrorCode::NotFound);
    }

    #[test]
    fn driver_text_never_reaches_display() {
        let e = StoreError::from(sqlx::Error::Protocol("secret driver detail".into()));
        assert_eq!(e.to_string(), "database error");
        assert_eq!(e.code(), ErrorCode::Internal);
        let e = StoreError::from(sqlx::Error::PoolTimedOut);
        assert_eq!(e.to_string(), "database unavailable");
        assert_eq!(e.code(), ErrorCode::Unavailable);
    }

    #[test]
    fn describe_names_every_cause_and_the_database_code() {
        #[derive(Debug, thiserror::Error)]
        #[error("writing the post failed")]
        struct Outer(#[source] StoreError);
        let io = sqlx::Error::Io(std::io::Error::other("connection reset"));
        let e = Outer(StoreError::from(io));
        let text = describe(&e);
        assert!(
            text.starts_with("writing the post failed: database unavailable: "),
            "{text}"
        );
        assert!(text.contains("connection reset"), "{text}");
        assert_eq!(
            StoreError::NotFound.to_string(),
            describe(&StoreError::NotFound)
        );
    }
}
