//! Each write flow, written once: its checks, its order of steps, its messages and its
//! event. A backend supplies only the statements, as a [`WriteSql`] over its own
//! transaction, and opens one by [`Transact`]; every [`Transact`] store gets the write
//! traits from here.

use super::{
    GraphWrites, MAX_FOLLOWS, OrderWrites, Placed, PostWrites, PricedLine, TOO_MANY_FOLLOWS,
    WishRow, Written, not_self, order_event, price_lines,
};
use crate::StoreError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use quiver_model::{Event, NewMedia, NewPost, OrderId, Post, PostId, UserId};
use std::collections::HashMap;

/// What a pair of users is to a graph write.
#[derive(Clone, Copy, Debug)]
pub struct Pair {
    /// How many of the two exist.
    pub(crate) users: i64,
    /// Whether a block stands between them, either way.
    pub(crate) blocked: bool,
}

/// What an idempotency key was when an order claimed it.
#[derive(Debug)]
pub enum KeyUse {
    /// Unused: the key is now this request's.
    Fresh,
    /// Used before: the first request's fingerprint and order (`None` while that request
    /// has not finished, or when its record is gone).
    Seen(Option<(String, Option<i64>)>),
}

/// The statements of the write flows, over one open transaction. Each method is one step
/// of a flow and says nothing about whether the flow goes on: the flows decide.
#[async_trait]
pub trait WriteSql: Send {
    /// Serializes writes between `a` and `b` (where the backend needs it) and reads what
    /// the pair is.
    async fn pair(&mut self, a: UserId, b: UserId) -> Result<Pair, StoreError>;
    /// Inserts the follow; the rows inserted.
    async fn insert_follow(
        &mut self,
        follower: UserId,
        followee: UserId,
    ) -> Result<u64, StoreError>;
    /// How many accounts `follower` follows.
    async fn follow_count(&mut self, follower: UserId) -> Result<i64, StoreError>;
    /// Adds the followee's posts newer than the follower's oldest timeline entry to the
    /// follower's timeline, which stays the newest contiguous part of their feed.
    async fn backfill(&mut self, follower: UserId, followee: UserId) -> Result<(), StoreError>;
    /// Deletes the follow; the rows deleted.
    async fn delete_follow(
        &mut self,
        follower: UserId,
        followee: UserId,
    ) -> Result<u64, StoreError>;
    /// Removes `author`'s posts from `user`'s timeline.
    async fn drop_author(&mut self, user: UserId, author: UserId) -> Result<(), StoreError>;
    /// Inserts the block; the rows inserted.
    async fn insert_block(&mut self, blocker: UserId, blocked: UserId) -> Result<u64, StoreError>;
    /// Deletes the follows between `a` and `b`, both ways, and each one's posts from the
    /// other's timeline.
    async fn sever(&mut self, a: UserId, b: UserId) -> Result<(), StoreError>;
    /// Deletes the block; the rows deleted.
    async fn delete_block(&mut self, blocker: UserId, blocked: UserId) -> Result<u64, StoreError>;

    /// Whether `author` exists, locking it against a follow in progress where the backend
    /// needs that.
    async fn lock_author(&mut self, author: UserId) -> Result<bool, StoreError>;
    /// Inserts the post; its id and creation time as stored.
    async fn insert_post(
        &mut self,
        author: UserId,
        post: &NewPost,
    ) -> Result<(i64, DateTime<Utc>), StoreError>;
    /// Inserts the post's media in their order.
    async fn insert_media(&mut self, post: i64, media: &[NewMedia]) -> Result<(), StoreError>;
    /// Inserts the post's tags.
    async fn insert_tags(&mut self, post: i64, tags: &[String]) -> Result<(), StoreError>;
    /// Puts the post into its author's own timeline.
    async fn add_own(
        &mut self,
        author: UserId,
        post: i64,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// The post's author and whether it has been ordered, locking it for the delete;
    /// `None` when there is no such post.
    async fn post_to_delete(&mut self, post: PostId) -> Result<Option<(i64, bool)>, StoreError>;
    /// Deletes the post; what hangs off it goes with it.
    async fn delete_post(&mut self, post: PostId) -> Result<(), StoreError>;

    /// Claims `key` for this request or reads its first use.
    async fn claim_key(
        &mut self,
        customer: UserId,
        key: &str,
        fingerprint: &str,
    ) -> Result<KeyUse, StoreError>;
    /// The posts of `ids` that `customer` may see, as order lines read them, locked
    /// against a delete where the backend needs that.
    async fn wishes(
        &mut self,
        ids: &[PostId],
        customer: UserId,
    ) -> Result<HashMap<i64, WishRow>, StoreError>;
    /// Inserts a pending order; its id.
    async fn insert_order(
        &mut self,
        customer: UserId,
        total: i64,
        currency: &str,
    ) -> Result<i64, StoreError>;
    /// Inserts the order's lines.
    async fn insert_items(
        &mut self,
        order: i64,
        lines: &[PricedLine],
        currency: &str,
    ) -> Result<(), StoreError>;
    /// Records the order under the key, for replays.
    async fn bind_key(&mut self, customer: UserId, key: &str, order: i64)
    -> Result<(), StoreError>;

    /// Records `event` in the outbox, in this transaction.
    async fn event(&mut self, event: &Event) -> Result<(), StoreError>;
    /// Commits.
    async fn commit(self) -> Result<(), StoreError>;
}

/// A store whose writes run as [`WriteSql`] transactions.
#[async_trait]
pub trait Transact: Send + Sync + std::fmt::Debug {
    type Tx: WriteSql;
    /// Opens a write transaction.
    async fn begin(&self) -> Result<Self::Tx, StoreError>;
}

/// Both users exist and, when `block_refuses`, no block stands between them.
async fn check_pair<T: WriteSql>(
    tx: &mut T,
    a: UserId,
    b: UserId,
    block_refuses: bool,
) -> Result<(), StoreError> {
    let pair = tx.pair(a, b).await?;
    if pair.users != 2 {
        return Err(StoreError::NotFound);
    }
    if block_refuses && pair.blocked {
        // As a profile hidden by a block is: not found (a different answer would tell the
        // blocked user of the block).
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Records the event and commits: the end of every write that changed something.
async fn finish<T: WriteSql>(mut tx: T, event: &Event) -> Result<(), StoreError> {
    tx.event(event).await?;
    tx.commit().await
}

#[async_trait]
impl<S: Transact> GraphWrites for S {
    async fn follow(&self, follower: UserId, followee: UserId) -> Result<Written, StoreError> {
        not_self(follower, followee, "you cannot follow yourself")?;
        let mut tx = self.begin().await?;
        check_pair(&mut tx, follower, followee, true).await?;
        if tx.insert_follow(follower, followee).await? == 0 {
            return Ok(Written::Unchanged);
        }
        if tx.follow_count(follower).await? > MAX_FOLLOWS {
            return Err(StoreError::Refused(TOO_MANY_FOLLOWS));
        }
        tx.backfill(follower, followee).await?;
        finish(tx, &Event::UserFollowed { follower, followee }).await?;
        Ok(Written::Changed)
    }

    async fn unfollow(&self, follower: UserId, followee: UserId) -> Result<Written, StoreError> {
        not_self(follower, followee, "you cannot unfollow yourself")?;
        let mut tx = self.begin().await?;
        check_pair(&mut tx, follower, followee, false).await?;
        if tx.delete_follow(follower, followee).await? == 0 {
            return Ok(Written::Unchanged);
        }
        tx.drop_author(follower, followee).await?;
        finish(tx, &Event::UserUnfollowed { follower, followee }).await?;
        Ok(Written::Changed)
    }

    async fn block(&self, blocker: UserId, blocked: UserId) -> Result<Written, StoreError> {
        not_self(blocker, blocked, "you cannot block yourself")?;
        let mut tx = self.begin().await?;
        check_pair(&mut tx, blocker, blocked, false).await?;
        if tx.insert_block(blocker, blocked).await? == 0 {
            return Ok(Written::Unchanged);
        }
        tx.sever(blocker, blocked).await?;
        finish(tx, &Event::UserBlocked { blocker, blocked }).await?;
        Ok(Written::Changed)
    }

    async fn unblock(&self, blocker: UserId, blocked: UserId) -> Result<Written, StoreError> {
        not_self(blocker, blocked, "you cannot unblock yourself")?;
        let mut tx = self.begin().await?;
        check_pair(&mut tx, blocker, blocked, false).await?;
        if tx.delete_block(blocker, blocked).await? == 0 {
            return Ok(Written::Unchanged);
        }
        finish(tx, &Event::UserUnblocked { blocker, blocked }).await?;
        Ok(Written::Changed)
    }
}

#[async_trait]
impl<S: Transact> PostWrites for S {
    async fn create_post(&self, author: UserId, post: &NewPost) -> Result<Post, StoreError> {
        let mut tx = self.begin().await?;
        if !tx.lock_author(author).await? {
            return Err(StoreError::NotFound);
        }
        let (id, created_at) = tx.insert_post(author, post).await?;
        tx.insert_media(id, &post.media).await?;
        tx.insert_tags(id, &post.tags).await?;
        // The author's own timeline now (read your writes); followers' by the fan-out of
        // `post.created`.
        tx.add_own(author, id, created_at).await?;
        let id = PostId(id);
        let event = Event::PostCreated {
            post_id: id,
            author_id: author,
        };
        finish(tx, &event).await?;
        Ok(Post {
            id,
            author_id: author,
            kind: post.kind,
            body: post.body.clone(),
            wish: post.wish.clone(),
            created_at,
        })
    }

    async fn delete_post(&self, author: UserId, id: PostId) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let (owner, ordered) = tx.post_to_delete(id).await?.ok_or(StoreError::NotFound)?;
        if owner != author.0 {
            return Err(StoreError::NotYours("the post belongs to another user"));
        }
        if ordered {
            return Err(StoreError::Refused(
                "a wish that has been ordered cannot be deleted",
            ));
        }
        tx.delete_post(id).await?;
        let event = Event::PostDeleted {
            post_id: id,
            author_id: author,
        };
        finish(tx, &event).await
    }
}

#[async_trait]
impl<S: Transact> OrderWrites for S {
    async fn create_order(
        &self,
        customer: UserId,
        key: &str,
        fingerprint: &str,
        lines: &[(PostId, i32)],
    ) -> Result<Placed, StoreError> {
        let mut tx = self.begin().await?;
        match tx.claim_key(customer, key, fingerprint).await? {
            KeyUse::Fresh => {}
            KeyUse::Seen(Some((first, Some(order)))) if first == fingerprint => {
                return Ok(Placed {
                    order: OrderId(order),
                    replayed: true,
                });
            }
            KeyUse::Seen(_) => return Err(StoreError::KeyReused),
        }
        let ids: Vec<PostId> = lines.iter().map(|(p, _)| *p).collect();
        let found = tx.wishes(&ids, customer).await?;
        let (total, currency, priced) = price_lines(customer, lines, &found)?;
        let order = tx.insert_order(customer, total, &currency).await?;
        tx.insert_items(order, &priced, &currency).await?;
        tx.bind_key(customer, key, order).await?;
        finish(tx, &order_event(order, customer, &priced)).await?;
        Ok(Placed {
            order: OrderId(order),
            replayed: false,
        })
    }
}
