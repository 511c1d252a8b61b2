//! What the engine reads from: skeleton lists and batch loaders, all behind traits so the
//! composition root decides what serves them (a store, a tiered cache, test doubles).

use async_trait::async_trait;
use quiver_model::{
    Cursor, DynLoader, Follow, FollowEdge, LoadError, Media, Order, OrderId, OrderItem, OrderRef,
    OrderStatus, Page, Post, PostId, PostRef, User, UserFlags, UserId, ViewerGraph,
};
use std::fmt;
use std::sync::Arc;

/// The skeleton queries: ordered lists of ids, keyset-paginated on
/// `(created_at DESC, id DESC)`, with `next` set when more rows follow.
#[async_trait]
pub trait Skeletons: Send + Sync {
    /// Posts by the accounts `viewer` follows and their own.
    async fn home(
        &self,
        viewer: UserId,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<PostRef>, LoadError>;
    /// Posts of `user`.
    async fn user_posts(
        &self,
        user: UserId,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<PostRef>, LoadError>;
    /// All posts: the discovery feed's window.
    async fn recent(&self, after: Option<Cursor>, limit: u32) -> Result<Page<PostRef>, LoadError>;
    /// Orders of `customer`, optionally of one status.
    async fn customer_orders(
        &self,
        customer: UserId,
        status: Option<OrderStatus>,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<OrderRef>, LoadError>;
}

/// Every source the engine reads. Each loader is called at most once per hydration phase
/// with all the keys of that phase.
#[derive(Clone)]
pub struct Sources {
    pub skeletons: Arc<dyn Skeletons>,
    /// The viewer graph by viewer; a missing viewer has an empty graph.
    pub graphs: DynLoader<UserId, ViewerGraph>,
    pub posts: DynLoader<PostId, Post>,
    pub users: DynLoader<UserId, User>,
    pub flags: DynLoader<UserId, UserFlags>,
    /// Media by post; a post without media is absent.
    pub media: DynLoader<PostId, Vec<Media>>,
    /// Tags by post; a post without tags is absent.
    pub tags: DynLoader<PostId, Vec<String>>,
    /// Which follow edges exist (for "does this author follow the viewer").
    pub follows: DynLoader<FollowEdge, Follow>,
    pub orders: DynLoader<OrderId, Order>,
    /// Items by order.
    pub order_items: DynLoader<OrderId, Vec<OrderItem>>,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}
