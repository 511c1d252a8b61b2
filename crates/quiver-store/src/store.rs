//! The `Store` trait: every read quiver makes, implemented once (`read.rs`) over each
//! backend's statements and checked by one contract suite against both.

use crate::StoreError;
use async_trait::async_trait;
use quiver_model::{
    Cursor, FeedHead, Follow, FollowEdge, Media, Notification, Order, OrderId, OrderItem, OrderRef,
    OrderStatus, Page, Post, PostId, PostList, PostRef, User, UserFlags, UserId, ViewerGraph,
};
use std::collections::HashMap;
use std::fmt::Debug;

/// Connections of a store's pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections, idle or in use.
    pub size: u32,
    /// Open connections waiting for work.
    pub idle: usize,
    /// The most connections the pool opens.
    pub max: u32,
    /// Checkouts that found no idle connection and had to wait (for one to be returned
    /// or opened), since the store was created.
    pub waits: u64,
    /// Total time those checkouts waited.
    pub wait_time: std::time::Duration,
    /// Read replicas configured, and how many of them take reads now.
    pub replicas: u32,
    pub replicas_in_rotation: u32,
    /// Reads the replicas answered since the store was created.
    pub replica_reads: u64,
}

/// Counts checkouts that had to wait for a connection.
#[derive(Debug, Default)]
pub(crate) struct Waits {
    waits: std::sync::atomic::AtomicU64,
    micros: std::sync::atomic::AtomicU64,
}

impl Waits {
    /// A connection from `pool`, counting the checkout as a wait when none was idle.
    pub(crate) async fn acquire<DB: sqlx::Database>(
        &self,
        pool: &sqlx::Pool<DB>,
    ) -> Result<sqlx::pool::PoolConnection<DB>, StoreError> {
        use std::sync::atomic::Ordering;
        if pool.num_idle() > 0 {
            return Ok(pool.acquire().await?);
        }
        let started = std::time::Instant::now();
        let conn = pool.acquire().await?;
        self.waits.fetch_add(1, Ordering::Relaxed);
        self.micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        Ok(conn)
    }

    pub(crate) fn stats<DB: sqlx::Database>(&self, pool: &sqlx::Pool<DB>) -> PoolStats {
        use std::sync::atomic::Ordering;
        PoolStats {
            size: pool.size(),
            idle: pool.num_idle(),
            max: pool.options().get_max_connections(),
            waits: self.waits.load(Ordering::Relaxed),
            wait_time: std::time::Duration::from_micros(self.micros.load(Ordering::Relaxed)),
            ..PoolStats::default()
        }
    }
}

/// Reads of the storage layer. Batch methods run exactly one statement for any number of
/// keys (none for an empty slice), tolerate duplicate keys and return only keys that exist.
/// Page methods are keyset-paginated on `(created_at DESC, id DESC)`.
#[async_trait]
pub trait Store: Send + Sync + Debug {
    /// Profiles of `ids`.
    async fn users(&self, ids: &[UserId]) -> Result<HashMap<UserId, User>, StoreError>;
    /// Flags (verified, creator, private) of `ids`.
    async fn user_flags(&self, ids: &[UserId]) -> Result<HashMap<UserId, UserFlags>, StoreError>;
    /// Posts and wishes by id.
    async fn posts(&self, ids: &[PostId]) -> Result<HashMap<PostId, Post>, StoreError>;
    /// Media of each post, in position order; posts without media are absent.
    async fn media_by_post(
        &self,
        ids: &[PostId],
    ) -> Result<HashMap<PostId, Vec<Media>>, StoreError>;
    /// Tags of each post, sorted; posts without tags are absent.
    async fn tags_by_post(
        &self,
        ids: &[PostId],
    ) -> Result<HashMap<PostId, Vec<String>>, StoreError>;
    /// Orders by id.
    async fn orders(&self, ids: &[OrderId]) -> Result<HashMap<OrderId, Order>, StoreError>;
    /// Items of each order, by post id; orders without items are absent.
    async fn order_items(
        &self,
        ids: &[OrderId],
    ) -> Result<HashMap<OrderId, Vec<OrderItem>>, StoreError>;

    /// Which of `edges` exist: the follows among the asked pairs.
    async fn follows(
        &self,
        edges: &[FollowEdge],
    ) -> Result<HashMap<FollowEdge, Follow>, StoreError>;

    /// Whom `viewer` follows and blocks, and who blocks them, in one round trip.
    async fn viewer_graph(&self, viewer: UserId) -> Result<ViewerGraph, StoreError>;
    /// Posts of any of `authors`, newest first, merged at read time.
    async fn author_page(
        &self,
        authors: &[UserId],
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<PostRef>, StoreError>;
    /// A page of `list`, newest first. The home feed is read from the materialized home
    /// timeline, continued by merge-at-read past its depth, with the posts of the
    /// celebrities the viewer follows (never fanned out) merged in; the discovery window
    /// (`Recent`) by `posts_recent`.
    async fn post_page(
        &self,
        list: PostList,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<PostRef>, StoreError>;
    /// The first `len` entries of `list`, to cache. A home feed's head leaves the posts
    /// of followed celebrities out and names those authors in
    /// [`FeedHead::merge`](quiver_model::FeedHead::merge) instead, so a celebrity's post
    /// changes their own head only, not every follower's.
    async fn head(&self, list: PostList, len: u32) -> Result<FeedHead, StoreError>;
    /// Orders of a customer, newest first, optionally of one status. Active orders are
    /// served by the partial index `orders_active_by_customer`.
    async fn customer_orders(
        &self,
        customer: UserId,
        status: Option<OrderStatus>,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<OrderRef>, StoreError>;

    /// Notifications of `user`, newest first.
    async fn notifications(
        &self,
        user: UserId,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<Notification>, StoreError>;

    /// One cheap round trip to the database.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Connections of the pool now.
    fn pool_stats(&self) -> PoolStats;
    /// Closes the pool; later calls fail with `Unavailable` (those that need a connection).
    async fn close(&self);
}
