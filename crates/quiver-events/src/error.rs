//! The event layer's error: one enum, classified like every library error.

use quiver_model::{ErrorCode, HasErrorCode};

/// Why relaying or handling an event failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventsError {
    /// The database refused or could not be reached.
    #[error("event storage failed")]
    Store(#[from] quiver_store::StoreError),
    /// A Redis command failed or timed out.
    #[error("redis stream command failed: {0}")]
    Redis(String),
    /// An event whose payload is not what its kind promises: retrying cannot help.
    #[error("malformed event: {0}")]
    Malformed(String),
    /// The handler panicked: a bug, which retrying would repeat.
    #[error("the handler panicked: {0}")]
    Panicked(String),
    /// The cache could not be invalidated (the database change is already done).
    #[error("cache invalidation failed")]
    Invalidation(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<fred::error::Error> for EventsError {
    fn from(e: fred::error::Error) -> Self {
        Self::Redis(format!("{:?}: {}", e.kind(), e.details()))
    }
}

impl EventsError {
    /// Whether handling the event again could succeed (a malformed event never will).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Malformed(_) | Self::Panicked(_))
    }
}

impl HasErrorCode for EventsError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Store(e) => e.code(),
            Self::Redis(_) | Self::Invalidation(_) => ErrorCode::Unavailable,
            Self::Malformed(_) | Self::Panicked(_) => ErrorCode::Internal,
        }
    }
}
