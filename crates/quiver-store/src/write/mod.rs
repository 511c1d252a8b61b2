//! Writes: the social graph, posts and orders. Each commits its rows and its outbox event
//! in one transaction, so an event exists exactly when its change does; a write that
//! changes nothing (a repeated follow) commits no event.
//!
//! The traits and rules are here; each flow is written once in `flow.rs` over the
//! statements a backend supplies.

mod flow;

pub(crate) use flow::{KeyUse, Pair, Transact, WriteSql};

use crate::StoreError;
use async_trait::async_trait;
use quiver_model::{Event, NewPost, OrderId, OrderedItem, Post, PostId, UserId};

/// The most accounts one user may follow: a reader's cost past the materialized timeline
/// (merge-at-read) and the size of their cached graph grow with it.
pub const MAX_FOLLOWS: i64 = 5000;

/// Why a follow past [`MAX_FOLLOWS`] is refused.
pub const TOO_MANY_FOLLOWS: &str =
    "you follow the most accounts allowed (5000): unfollow one first";

tokio::task_local! {
    /// The W3C `traceparent` of the request a write runs for, set by [`traced`].
    static TRACE_CONTEXT: Option<String>;
}

/// Runs `write` with `traceparent` (the caller's current trace, when it is traced), which
/// each outbox event it commits keeps, so the relay and the consumers continue that trace.
pub async fn traced<F: std::future::Future>(traceparent: Option<String>, write: F) -> F::Output {
    TRACE_CONTEXT.scope(traceparent, write).await
}

/// The trace context of the write running on this task, if any.
pub(crate) fn trace_context() -> Option<String> {
    TRACE_CONTEXT.try_with(Clone::clone).ok().flatten()
}

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
    /// `follower` follows `followee` (`user.followed`). Refused for yourself and past
    /// [`MAX_FOLLOWS`]; `NotFound`
    /// when either user does not exist or a block stands between them (either way).
    async fn follow(&self, follower: UserId, followee: UserId) -> Result<Written, StoreError>;
    /// Removes the follow (`user.unfollowed`).
    async fn unfollow(&self, follower: UserId, followee: UserId) -> Result<Written, StoreError>;
    /// `blocker` blocks `blocked` and the follows between them go, both ways
    /// (`user.blocked`). Refused for yourself.
    async fn block(&self, blocker: UserId, blocked: UserId) -> Result<Written, StoreError>;
    /// Removes the block (`user.unblocked`: other replicas forget the cached block).
    async fn unblock(&self, blocker: UserId, blocked: UserId) -> Result<Written, StoreError>;
}

/// Creating and deleting posts. A new post is written into its author's own materialized
/// home timeline in the same transaction (read your writes); its followers' timelines get
/// it from the `post.created` event, off the request path
/// ([`Effects::fan_out`](crate::events::Effects::fan_out)).
#[async_trait]
pub trait PostWrites: Send + Sync + std::fmt::Debug {
    /// Creates `post` by `author` (`post.created`); `NotFound` for an unknown author.
    async fn create_post(&self, author: UserId, post: &NewPost) -> Result<Post, StoreError>;
    /// Deletes the post and everything hanging off it (`post.deleted`). `NotFound` when
    /// it does not exist, `NotYours` for someone else's, `Refused` for an ordered wish.
    async fn delete_post(&self, author: UserId, id: PostId) -> Result<(), StoreError>;
}

/// What became of an order request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    /// The order the key stands for.
    pub order: OrderId,
    /// `true` when the key had been used with the same fingerprint: nothing was written
    /// and `order` is the first request's.
    pub replayed: bool,
}

/// Why one line of an order cannot be ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineRefusal {
    /// No such post, or one hidden from the customer by a block.
    NotFound,
    /// A post, not a wish.
    NotAWish,
    /// The customer's own wish.
    OwnWish,
    /// In another currency than the order's first line.
    Currency,
}

impl LineRefusal {
    /// The reason, for clients.
    pub const fn message(self) -> &'static str {
        match self {
            Self::NotFound => "no such wish",
            Self::NotAWish => "is a post, not a wish",
            Self::OwnWish => "is your own wish",
            Self::Currency => "is priced in another currency than the first item",
        }
    }
}

/// Orders, placed under an idempotency key.
#[async_trait]
pub trait OrderWrites: Send + Sync + std::fmt::Debug {
    /// Places an order of `lines` (post, quantity) for `customer`, priced from the wishes
    /// as they are now (`order.created`), unless `key` was used before: with the same
    /// `fingerprint` the first order is returned (`replayed`), with another one
    /// `KeyReused`. Concurrent requests with one key wait for each other, so exactly one
    /// order is created. Lines that cannot be ordered are `Unorderable`, with their
    /// positions.
    async fn create_order(
        &self,
        customer: UserId,
        key: &str,
        fingerprint: &str,
        lines: &[(PostId, i32)],
    ) -> Result<Placed, StoreError>;
}

/// Every write of a store: what the server holds.
pub trait Writes: GraphWrites + PostWrites + OrderWrites {}

impl<T: GraphWrites + PostWrites + OrderWrites> Writes for T {}

/// A post as an order line reads it: author, kind, price in cents, currency.
pub(crate) type WishRow = (i64, String, Option<i64>, Option<String>);
/// A priced line: post, its owner, quantity, unit price in cents.
pub(crate) type PricedLine = (i64, i64, i32, i64);
/// An order's total, currency and lines.
pub(crate) type Priced = (i64, String, Vec<PricedLine>);

/// Prices `lines` from the posts found (by id), as the order's total and currency, or the
/// refused lines.
pub(crate) fn price_lines(
    customer: UserId,
    lines: &[(PostId, i32)],
    found: &std::collections::HashMap<i64, WishRow>,
) -> Result<Priced, StoreError> {
    let mut refused = Vec::new();
    let mut priced = Vec::with_capacity(lines.len());
    let mut currency: Option<&str> = None;
    let mut total: i64 = 0;
    for (i, (post, quantity)) in lines.iter().enumerate() {
        let Some((author, kind, price, cur)) = found.get(&post.0) else {
            refused.push((i, LineRefusal::NotFound));
            continue;
        };
        let (Some(price), Some(cur), "wish") = (price, cur, kind.as_str()) else {
            refused.push((i, LineRefusal::NotAWish));
            continue;
        };
        if *author == customer.0 {
            refused.push((i, LineRefusal::OwnWish));
            continue;
        }
        match currency {
            None => currency = Some(cur),
            Some(c) if c != cur => {
                refused.push((i, LineRefusal::Currency));
                continue;
            }
            Some(_) => {}
        }
        total = total.saturating_add(price.saturating_mul(i64::from(*quantity)));
        priced.push((post.0, *author, *quantity, *price));
    }
    if !refused.is_empty() {
        return Err(StoreError::Unorderable(refused));
    }
    Ok((total, currency.unwrap_or("USD").to_owned(), priced))
}

/// The `order.created` event: who bought what from whom, so consumers need no reads to
/// notify.
pub(crate) fn order_event(order: i64, customer: UserId, priced: &[PricedLine]) -> Event {
    Event::OrderCreated {
        order_id: OrderId(order),
        customer_id: customer,
        items: priced
            .iter()
            .map(|(post, owner, quantity, _)| OrderedItem {
                post_id: PostId(*post),
                owner_id: UserId(*owner),
                quantity: *quantity,
            })
            .collect(),
    }
}

/// A lock key for the pair `{a, b}`, the same in both orders: graph writes between two
/// users take it so a follow and a block of the same pair cannot interleave.
pub(crate) fn pair_lock_key(a: UserId, b: UserId) -> i64 {
    let (lo, hi) = if a.0 <= b.0 { (a.0, b.0) } else { (b.0, a.0) };
    // splitmix64 of both ids: distinct pairs rarely share a key, and sharing only
    // serializes two unrelated writes.
    let mut z = (lo as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(hi as u64);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as i64
}

pub(crate) fn not_self(a: UserId, b: UserId, what: &'static str) -> Result<(), StoreError> {
    if a == b {
        Err(StoreError::Refused(what))
    } else {
        Ok(())
    }
}
