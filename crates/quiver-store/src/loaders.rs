//! The store's side of the two seams: batch loaders over any [`Store`] (each call one
//! store batch, so one statement) and the skeleton lists, including the heads of home
//! feeds that the engine cuts pages from.

use crate::Store;
use async_trait::async_trait;
use quiver_model::{
    Cursor, FeedHead, Follow, FollowEdge, LoadError, Loader, Media, Order, OrderId, OrderItem,
    OrderRef, OrderStatus, Page, Post, PostId, PostList, PostRef, Skeletons, User, UserFlags,
    UserId, ViewerGraph, Window,
};
use std::collections::HashMap;
use std::sync::Arc;
use tracing::Instrument as _;

/// The span of one database batch (recorded only when something traces at debug level).
macro_rules! db_span {
    ($op:expr, $n:expr) => {
        tracing::debug_span!("db", otel.name = $op, db.operation = $op, keys = $n)
    };
}

macro_rules! loader {
    ($(#[$meta:meta])* $name:ident, $method:ident, $key:ty => $value:ty) => {
        $(#[$meta])*
        #[derive(Clone, Debug)]
        pub struct $name(pub Arc<dyn Store>);

        #[async_trait]
        impl Loader for $name {
            type Key = $key;
            type Value = $value;

            async fn load_many(&self, keys: &[$key]) -> Result<HashMap<$key, $value>, LoadError> {
                self.0
                    .$method(keys)
                    .instrument(db_span!(stringify!($method), keys.len()))
                    .await
                    .map_err(LoadError::wrap)
            }
        }
    };
}

loader!(
    /// Profiles by user id.
    UsersLoader, users, UserId => User
);
loader!(
    /// Flags by user id.
    UserFlagsLoader, user_flags, UserId => UserFlags
);
loader!(
    /// Posts by id.
    PostsLoader, posts, PostId => Post
);
loader!(
    /// Media by post id; a post without media is absent.
    MediaLoader, media_by_post, PostId => Vec<Media>
);
loader!(
    /// Tags by post id; a post without tags is absent.
    TagsLoader, tags_by_post, PostId => Vec<String>
);
loader!(
    /// Orders by id.
    OrdersLoader, orders, OrderId => Order
);
loader!(
    /// Order items by order id.
    OrderItemsLoader, order_items, OrderId => Vec<OrderItem>
);
loader!(
    /// Which of the asked follow edges exist.
    FollowsLoader, follows, FollowEdge => Follow
);

/// Viewer graphs by viewer. The store reads one graph per round trip, so a batch of `n`
/// viewers is `n` statements, run concurrently; feeds ask for one viewer per request, and
/// the graph is cached above this loader.
#[derive(Clone, Debug)]
pub struct ViewerGraphLoader(pub Arc<dyn Store>);

#[async_trait]
impl Loader for ViewerGraphLoader {
    type Key = UserId;
    type Value = ViewerGraph;

    async fn load_many(&self, keys: &[UserId]) -> Result<HashMap<UserId, ViewerGraph>, LoadError> {
        per_key(keys, |k| self.0.viewer_graph(*k))
            .instrument(db_span!("viewer_graph", keys.len()))
            .await
    }
}

/// One store read per distinct key, run concurrently: for the values the store reads
/// one at a time (a viewer graph, a feed's first page).
async fn per_key<K, V, T, F, Fut>(keys: &[K], read: F) -> Result<HashMap<K, V>, LoadError>
where
    K: Clone + Eq + std::hash::Hash,
    T: Into<V>,
    F: Fn(&K) -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::StoreError>>,
{
    let keys = quiver_model::dedup_keys(keys);
    let values = futures::future::try_join_all(keys.iter().map(read))
        .await
        .map_err(LoadError::wrap)?;
    Ok(keys
        .into_iter()
        .zip(values.into_iter().map(Into::into))
        .collect())
}

/// The skeleton lists read straight from a [`Store`].
#[derive(Clone, Debug)]
pub struct StoreSkeletons(pub Arc<dyn Store>);

#[async_trait]
impl Skeletons for StoreSkeletons {
    async fn posts(
        &self,
        list: PostList,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<PostRef>, LoadError> {
        self.0
            .post_page(list, after, limit)
            .instrument(db_span!("post_page", 1))
            .await
            .map_err(LoadError::wrap)
    }

    async fn customer_orders(
        &self,
        customer: UserId,
        status: Option<OrderStatus>,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<OrderRef>, LoadError> {
        self.0
            .customer_orders(customer, status, after, limit)
            .await
            .map_err(LoadError::wrap)
    }
}

/// Heads of feeds, one per key, each the store's own first page of `len` entries, read
/// concurrently for several keys: the list `of` each key names (`PostList::Home` for
/// viewers' home feeds, `PostList::Author` for authors' posts).
#[derive(Clone)]
pub struct HeadLoader {
    pub store: Arc<dyn Store>,
    pub len: u32,
    pub of: fn(UserId) -> PostList,
}

impl std::fmt::Debug for HeadLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadLoader")
            .field("len", &self.len)
            .field("of", &(self.of)(UserId(0)))
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Loader for HeadLoader {
    type Key = UserId;
    type Value = FeedHead;

    async fn load_many(&self, keys: &[UserId]) -> Result<HashMap<UserId, FeedHead>, LoadError> {
        per_key(keys, |k| self.store.head((self.of)(*k), self.len))
            .instrument(db_span!("head", keys.len()))
            .await
    }
}

/// Windows of the `len` most recent posts (before an anchor, or the newest), one
/// statement per window.
#[derive(Clone)]
pub struct WindowLoader {
    pub store: Arc<dyn Store>,
    pub len: u32,
}

impl std::fmt::Debug for WindowLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowLoader")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Loader for WindowLoader {
    type Key = Window;
    type Value = FeedHead;

    async fn load_many(&self, keys: &[Window]) -> Result<HashMap<Window, FeedHead>, LoadError> {
        per_key(keys, |w| {
            self.store.post_page(PostList::Recent, w.0, self.len)
        })
        .await
    }
}
