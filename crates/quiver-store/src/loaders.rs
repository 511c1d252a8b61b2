//! Batch loaders over any [`Store`]: the storage side of the batch-load seam. Each call is
//! one store batch, so one statement.

use crate::Store;
use async_trait::async_trait;
use quiver_model::{
    Follow, FollowEdge, LoadError, Loader, Media, Order, OrderId, OrderItem, Post, PostId, User,
    UserFlags, UserId, ViewerGraph,
};
use std::collections::HashMap;
use std::sync::Arc;

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
                self.0.$method(keys).await.map_err(LoadError::wrap)
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
        let keys = quiver_model::dedup_keys(keys);
        let graphs = futures::future::try_join_all(keys.iter().map(|k| self.0.viewer_graph(*k)))
            .await
            .map_err(LoadError::wrap)?;
        Ok(keys.into_iter().zip(graphs).collect())
    }
}
