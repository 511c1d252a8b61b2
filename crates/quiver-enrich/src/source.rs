//! What the engine reads from: skeleton lists, the cached heads of home feeds, and batch
//! loaders of ready items, all behind the model's seams so the composition root decides
//! what serves them (a store, a tiered cache, test doubles).

use crate::items::{AuthorItem, FeedItem};
use quiver_model::{
    DynLoader, FeedHead, Follow, FollowEdge, Order, OrderId, OrderItem, PostId, Skeletons, UserId,
    ViewerGraph, Window,
};
use std::fmt;
use std::sync::Arc;

/// Every source the engine reads. Each loader is called at most once per hydration phase
/// with all the keys of that phase.
#[derive(Clone)]
pub struct Sources {
    pub skeletons: Arc<dyn Skeletons>,
    /// The newest entries of each viewer's home feed, one value per viewer, that home
    /// pages are cut from; pages past a head go to `skeletons`. `None` reads every home
    /// page from `skeletons`.
    pub heads: Option<DynLoader<UserId, FeedHead>>,
    /// The newest entries of each author's posts, cut the same way for user-posts pages;
    /// `None` reads every such page from `skeletons`.
    pub author_heads: Option<DynLoader<UserId, FeedHead>>,
    /// The windows of recent posts that discovery shuffles, one value per window shared
    /// by every viewer; `None` reads the window from `skeletons` on every request.
    pub windows: Option<DynLoader<Window, FeedHead>>,
    /// The viewer graph by viewer; a missing viewer has an empty graph.
    pub graphs: DynLoader<UserId, ViewerGraph>,
    /// Posts ready to show, with media, tags and their encoded fragment
    /// ([`crate::ItemLoader`] builds them from entity loaders).
    pub items: DynLoader<PostId, FeedItem>,
    /// Authors ready to show, with flags and their encoded fragment
    /// ([`crate::AuthorLoader`]).
    pub authors: DynLoader<UserId, AuthorItem>,
    /// Which follow edges exist: "does this author follow the viewer" for authors the
    /// viewer does not follow (the viewer graph answers it for the others).
    pub follows: DynLoader<FollowEdge, Follow>,
    pub orders: DynLoader<OrderId, Order>,
    /// Items by order.
    pub order_items: DynLoader<OrderId, Vec<OrderItem>>,
}

impl Sources {
    /// Whether every source a home page reads through records its fences (the skeleton
    /// source never does: the engine marks its reads itself).
    pub(crate) fn home_fences(&self) -> bool {
        self.heads.as_ref().is_some_and(|h| h.fences())
            && self.author_heads.as_ref().is_some_and(|h| h.fences())
            && self.hydration_fences()
    }

    /// Whether every source a discovery page reads through records its fences.
    pub(crate) fn discover_fences(&self) -> bool {
        self.windows.as_ref().is_some_and(|w| w.fences()) && self.hydration_fences()
    }

    /// Whether the sources of every page's items, authors and viewer part fence.
    fn hydration_fences(&self) -> bool {
        self.graphs.fences()
            && self.items.fences()
            && self.authors.fences()
            && self.follows.fences()
    }
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}
