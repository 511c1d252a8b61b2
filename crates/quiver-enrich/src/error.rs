//! What can go wrong assembling a response, and which part of it went wrong.

use quiver_model::{CursorError, ErrorCode, HasErrorCode, LoadError};
use std::fmt;

/// A part of a response that is loaded separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Part {
    /// The viewer's follows and blocks.
    Graph,
    /// The list of ids a page is made of.
    Skeleton,
    Posts,
    Authors,
    /// Authors' verified/creator flags.
    Flags,
    /// Whether authors follow the viewer.
    Relationships,
    /// Optional: items are served without media and the page says so.
    Media,
    /// Optional: items are served without tags and the page says so.
    Tags,
    Orders,
    OrderItems,
}

impl Part {
    /// The name clients see in `partial` and errors.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Graph => "viewer graph",
            Self::Skeleton => "skeleton",
            Self::Posts => "posts",
            Self::Authors => "authors",
            Self::Flags => "author flags",
            Self::Relationships => "relationships",
            Self::Media => "media",
            Self::Tags => "tags",
            Self::Orders => "orders",
            Self::OrderItems => "order items",
        }
    }

    /// Whether a page is still served (marked partial) when this part fails.
    pub const fn optional(self) -> bool {
        matches!(self, Self::Media | Self::Tags)
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a response could not be assembled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrichError {
    /// The post, user or order does not exist, or is hidden from this viewer by a block.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// It exists but belongs to someone else.
    #[error("{0} belong to another user")]
    Forbidden(&'static str),
    #[error("invalid cursor: {0}")]
    Cursor(#[from] CursorError),
    #[error("limit must be between 1 and {max}")]
    Limit { max: u32 },
    /// A discovery cursor continues the shuffle of its own seed only.
    #[error("seed does not match the cursor's seed")]
    SeedMismatch,
    /// An essential part failed to load.
    #[error("could not load {part}")]
    Load {
        part: Part,
        #[source]
        source: LoadError,
    },
}

impl EnrichError {
    /// A failure of `part`; a failure that already names its part (from a composite
    /// loader such as [`crate::ItemLoader`]) keeps that name and its own source.
    pub(crate) fn load(part: Part) -> impl FnOnce(LoadError) -> Self {
        move |source| {
            let named =
                std::error::Error::source(&source).and_then(|s| s.downcast_ref::<EnrichError>());
            match named {
                Some(Self::Load { part, source }) => Self::Load {
                    part: *part,
                    source: source.clone(),
                },
                _ => Self::Load { part, source },
            }
        }
    }
}

impl HasErrorCode for EnrichError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::Cursor(_) | Self::Limit { .. } | Self::SeedMismatch => ErrorCode::InvalidInput,
            Self::Load { source, .. } => source.code(),
        }
    }
}
