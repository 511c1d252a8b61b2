#![doc = include_str!("../README.md")]
mod cursor;
mod entities;
mod error;
mod event;
pub mod fence;
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
