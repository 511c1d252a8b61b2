//! RFC 9457 problem details (`application/problem+json`): a stable `type` URI per kind of
//! failure, a title, the status, a detail for humans and, for validation, every bad field.
//! Details are written by us; driver or internal messages never appear.

use crate::request::{BodyError, FieldError};
use quiver_model::ErrorCode;
use serde::Serialize;

/// The media type of problem bodies.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// The kinds of problem the API reports, each with a stable type URI and its status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemType {
    /// A query parameter (limit, cursor, seed, status) or path id is not acceptable.
    InvalidParameter,
    UriTooLong,
    UnsupportedMediaType,
    MalformedBody,
    Validation,
    PayloadTooLarge,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    RateLimited,
    Unavailable,
    Timeout,
    /// The client did not send its request body in time.
    BodyTimeout,
    Internal,
}

impl ProblemType {
    /// The stable `type` URI.
    pub const fn uri(self) -> &'static str {
        match self {
            Self::InvalidParameter => "https://quiver.dev/problems/invalid-parameter",
            Self::UriTooLong => "https://quiver.dev/problems/uri-too-long",
            Self::UnsupportedMediaType => "https://quiver.dev/problems/unsupported-media-type",
            Self::MalformedBody => "https://quiver.dev/problems/malformed-body",
            Self::Validation => "https://quiver.dev/problems/validation",
            Self::PayloadTooLarge => "https://quiver.dev/problems/payload-too-large",
            Self::Unauthorized => "https://quiver.dev/problems/unauthorized",
            Self::Forbidden => "https://quiver.dev/problems/forbidden",
            Self::NotFound => "https://quiver.dev/problems/not-found",
            Self::MethodNotAllowed => "https://quiver.dev/problems/method-not-allowed",
            Self::Conflict => "https://quiver.dev/problems/conflict",
            Self::RateLimited => "https://quiver.dev/problems/rate-limited",
            Self::Unavailable => "https://quiver.dev/problems/unavailable",
            Self::Timeout => "https://quiver.dev/problems/timeout",
            Self::BodyTimeout => "https://quiver.dev/problems/body-timeout",
            Self::Internal => "https://quiver.dev/problems/internal",
        }
    }

    /// A short, fixed summary.
    pub const fn title(self) -> &'static str {
        match self {
            Self::InvalidParameter => "Invalid parameter",
            Self::UriTooLong => "Request target too long",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::MalformedBody => "Malformed request body",
            Self::Validation => "Invalid request",
            Self::PayloadTooLarge => "Request body too large",
            Self::Unauthorized => "Authentication required",
            Self::Forbidden => "Forbidden",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::Conflict => "Conflict",
            Self::RateLimited => "Too many requests",
            Self::Unavailable => "Service unavailable",
            Self::Timeout => "Request timed out",
            Self::BodyTimeout => "Request body too slow",
            Self::Internal => "Internal error",
        }
    }

    /// The HTTP status this problem is sent with.
    pub const fn status(self) -> u16 {
        match self {
            Self::InvalidParameter => 400,
            Self::UriTooLong => 414,
            Self::UnsupportedMediaType => 415,
            Self::MalformedBody => 400,
            Self::Validation => 422,
            Self::PayloadTooLarge => 413,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict => 409,
            Self::RateLimited => 429,
            Self::Unavailable => 503,
            Self::Timeout => 504,
            Self::BodyTimeout => 408,
            Self::Internal => 500,
        }
    }

    /// The problem for a transport-neutral error code.
    pub const fn for_code(code: ErrorCode) -> Self {
        match code {
            ErrorCode::NotFound => Self::NotFound,
            ErrorCode::InvalidInput => Self::Validation,
            ErrorCode::Conflict => Self::Conflict,
            ErrorCode::Unauthorized => Self::Unauthorized,
            ErrorCode::Forbidden => Self::Forbidden,
            ErrorCode::Unavailable => Self::Unavailable,
            ErrorCode::Timeout => Self::Timeout,
            _ => Self::Internal,
        }
    }
}

/// A problem body. `errors` is empty except for validation problems.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, simd_json_derive::Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    pub errors: Vec<FieldError>,
}

impl Problem {
    /// A problem of `kind` with a detail written for clients.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            type_uri: kind.uri(),
            title: kind.title(),
            status: kind.status(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// The problem for a refused request body.
    pub fn from_body_error(err: &BodyError) -> Self {
        match err {
            BodyError::TooLarge { .. } => Self::new(ProblemType::PayloadTooLarge, err.to_string()),
            BodyError::NotJson => Self::new(ProblemType::MalformedBody, err.to_string()),
            BodyError::Invalid(errors) => Self {
                errors: errors.clone(),
                ..Self::new(ProblemType::Validation, err.to_string())
            },
        }
    }

    /// The body bytes.
    pub fn to_json(&self) -> Vec<u8> {
        crate::encode::encode(self)
    }
}
