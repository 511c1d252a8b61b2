//! Writes of the social graph. Each commits its rows and its outbox event in one
//! transaction, so an event exists exactly when its change does; a write that changes
//! nothing (a repeated follow) commits no event.

use crate::StoreError;
use async_trait::async_trait;
use quiver_model::{EventKind, NewPost, Post, PostId, UserId};

/// Whether a write changed anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// Rows changed and the event was recorded.
    Changed,
    /// Already so: nothing changed, no event.
    Unchanged,
}

/// The social-graph writes.
#[async_trait]
pub trait GraphWrites: Send + Sync + std::fmt::Debug {
    /// `follower` follows `followee` (`user.followed`). Refused for yourself and across a
    /// block either way; `NotFound` when either user does not exist.
    async fn follow(&self, follower: UserId, followee: UserId) -> Result<Written, StoreError>;
    /// Removes the follow (`user.unfollowed`).
    async fn unfollow(&self, follower: UserId, followee: UserId) -> Result<Written, StoreError>;
    /// `blocker` blocks `blocked` and the follows between them go, both ways
    /// (`user.blocked`). Refused for yourself.
    async fn block(&self, blocker: UserId, blocked: UserId) -> Result<Written, StoreError>;
    /// Removes the block (no event: nothing downstream reacts to it).
    async fn unblock(&self, blocker: UserId, blocked: UserId) -> Result<Written, StoreError>;
}

/// Creating and deleting posts. A new post is written into its author's and every
/// follower's materialized home timeline in the same transaction (it is the newest post,
/// so each timeline stays the newest contiguous part of its feed).
#[async_trait]
pub trait PostWrites: Send + Sync + std::fmt::Debug {
    /// Creates `post` by `author` (`post.created`); `NotFound` for an unknown author.
    async fn create_post(&self, author: UserId, post: &NewPost) -> Result<Post, StoreError>;
    /// Deletes the post and everything hanging off it (`post.deleted`). `NotFound` when
    /// it does not exist, `NotYours` for someone else's, `Refused` for an ordered wish.
    async fn delete_post(&self, author: UserId, id: PostId) -> Result<(), StoreError>;
}

/// Every write of a store: what the server holds.
pub trait Writes: GraphWrites + PostWrites {}

impl<T: GraphWrites + PostWrites> Writes for T {}

/// The outbox payload of a post event.
pub(crate) fn post_payload(id: PostId, author: UserId) -> serde_json::Value {
    serde_json::json!({ "post_id": id.0, "author_id": author.0 })
}

/// The outbox payload of an edge event.
pub(crate) fn edge_payload(kind: EventKind, from: UserId, to: UserId) -> serde_json::Value {
    let (a, b) = match kind {
        EventKind::UserBlocked => ("blocker", "blocked"),
        _ => ("follower", "followee"),
    };
    serde_json::json!({ a: from.0, b: to.0 })
}

pub(crate) fn not_self(a: UserId, b: UserId, what: &'static str) -> Result<(), StoreError> {
    if a == b {
        Err(StoreError::Refused(what))
    } else {
        Ok(())
    }
}
