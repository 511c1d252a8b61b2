//! Transport-neutral error codes: every library error maps to one, and only the server maps
//! codes to HTTP statuses.

use std::fmt;

/// What kind of failure an error is, independent of how it is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The thing asked for does not exist.
    NotFound,
    /// The input was malformed or failed validation.
    InvalidInput,
    /// The request conflicts with the current state (a duplicate, a unique key).
    Conflict,
    /// No or bad credentials.
    Unauthorized,
    /// Credentials are fine but the caller may not do this.
    Forbidden,
    /// A dependency (database, cache) is down or overloaded; retrying later may work.
    Unavailable,
    /// The work ran out of time.
    Timeout,
    /// A bug or an unexpected state; details go to logs, never to clients.
    Internal,
}

impl ErrorCode {
    /// A stable, lowercase name for logs, metrics and problem types.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::InvalidInput => "invalid_input",
            Self::Conflict => "conflict",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by every library error so upper layers can classify it without knowing it.
pub trait HasErrorCode {
    /// The transport-neutral kind of this error.
    fn code(&self) -> ErrorCode;
}
