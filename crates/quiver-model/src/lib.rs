//! The vocabulary of quiver: ids, entities, keyset cursors, error codes, and the two seams
//! that storage, cache and enrichment meet at (the batch-load trait and the skeleton
//! trait). This crate does no I/O.
//!
//! ```
//! use quiver_model::{Cursor, CursorCodec, PostId, PostRef};
//! use chrono::{TimeZone, Utc};
//!
//! let codec = CursorCodec::new(b"a secret only the server knows");
//! let last = PostRef { id: PostId(42), created_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap() };
//! let token = codec.encode(&Cursor::after(&last));
//! assert_eq!(codec.decode(&token).unwrap(), Cursor::after(&last));
//! assert!(codec.decode("garbage").is_err());
//! ```

mod cursor;
mod entities;
mod error;
mod event;
mod ids;
mod load;
mod skeleton;

pub use cursor::{Cursor, CursorCodec, CursorError, DiscoverCursor};
pub use entities::{
    Block, Currency, CurrencyError, EventKind, Follow, FollowEdge, IdSet, Media, MediaKind, Money,
    NewMedia, NewPost, Notification, NotificationKind, Order, OrderItem, OrderRef, OrderStatus,
    OutboxEvent, Page, ParseEnumError, ParseFollowEdgeError, Post, PostKind, PostRef, User,
    UserFlags, ViewerGraph, Wish,
};
pub use error::{ErrorCode, HasErrorCode};
pub use event::{Event, EventError, OrderedItem};
pub use ids::{EventId, MediaId, NotificationId, OrderId, PostId, UserId};
pub use load::{DynLoader, LoadError, Loader, by_position, dedup_keys};
pub use skeleton::{FeedHead, ParseWindowError, PostList, Skeletons, Window};
