//! Each read, written once: an empty batch costs no statement, batch keys are deduplicated,
//! rows become entities by their one conversion, every page is the keyset window of
//! `keyset.rs`, and the home feed continues past its materialized timeline by
//! merge-at-read, with followed celebrities' posts merged in. A backend supplies only the statements, as a [`ReadSql`]; every
//! [`ReadSql`] store is a [`Store`] from here.

use crate::keyset::{fetch_len, into_page, page_of, start_of};
use crate::rows::{
    FlagsRow, FollowRow, MediaRow, NotificationRow, OrderItemRow, OrderRow, PostRow, RefRow, Stamp,
    TagRow, UserRow, group, keyed,
};
use crate::{PoolStats, Store, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use quiver_model::{
    Cursor, FeedHead, Follow, FollowEdge, Media, Notification, Order, OrderId, OrderItem, OrderRef,
    OrderStatus, Page, Post, PostId, PostList, PostRef, User, UserFlags, UserId, ViewerGraph,
    dedup_keys,
};
use std::collections::HashMap;
use std::hash::Hash;

/// The rows a page reads: those strictly before `(at, id)` in `(created_at DESC, id DESC)`
/// order, at most `n` of them (one more than the page, see `keyset.rs`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    pub(crate) at: DateTime<Utc>,
    pub(crate) id: i64,
    pub(crate) n: i64,
}

impl Span {
    fn of(after: Option<Cursor>, limit: u32) -> Result<Self, StoreError> {
        let n = fetch_len(limit)?;
        let (at, id) = start_of(after);
        Ok(Self { at, id, n })
    }
}

/// The statements of the reads, one method each. Batch methods get deduplicated, non-empty
/// ids; page methods a [`Span`]. Times come back in the backend's own [`Stamp`].
#[async_trait]
pub(crate) trait ReadSql: Send + Sync + std::fmt::Debug {
    /// How the backend stores a time.
    type Stamp: Stamp + Send;

    async fn user_rows(&self, ids: &[i64]) -> Result<Vec<UserRow<Self::Stamp>>, StoreError>;
    async fn flag_rows(&self, ids: &[i64]) -> Result<Vec<FlagsRow>, StoreError>;
    async fn post_rows(&self, ids: &[i64]) -> Result<Vec<PostRow<Self::Stamp>>, StoreError>;
    /// Media of the posts, by post and position.
    async fn media_rows(&self, posts: &[i64]) -> Result<Vec<MediaRow>, StoreError>;
    /// Tags of the posts, by post and tag.
    async fn tag_rows(&self, posts: &[i64]) -> Result<Vec<TagRow>, StoreError>;
    async fn order_rows(&self, ids: &[i64]) -> Result<Vec<OrderRow<Self::Stamp>>, StoreError>;
    /// Items of the orders, by order and post.
    async fn order_item_rows(&self, orders: &[i64]) -> Result<Vec<OrderItemRow>, StoreError>;
    /// The follows among the `(follower, followee)` pairs.
    async fn follow_rows(
        &self,
        pairs: &[(i64, i64)],
    ) -> Result<Vec<FollowRow<Self::Stamp>>, StoreError>;
    /// The viewer's four edge sets, in one round trip.
    async fn graph(&self, viewer: UserId) -> Result<ViewerGraph, StoreError>;

    /// The viewer's materialized home timeline.
    async fn timeline(&self, viewer: i64, w: Span) -> Result<Vec<RefRow<Self::Stamp>>, StoreError>;
    /// The viewer's home feed by merge-at-read: their own posts and their followees'.
    async fn followed(&self, viewer: i64, w: Span) -> Result<Vec<RefRow<Self::Stamp>>, StoreError>;
    /// The celebrities the viewer follows, ascending.
    async fn celebrities(&self, viewer: i64) -> Result<Vec<i64>, StoreError>;
    /// Posts of any of `authors` (deduplicated, non-empty), merged.
    async fn by_authors(
        &self,
        authors: &[i64],
        w: Span,
    ) -> Result<Vec<RefRow<Self::Stamp>>, StoreError>;
    /// Posts of one author.
    async fn by_author(&self, author: i64, w: Span)
    -> Result<Vec<RefRow<Self::Stamp>>, StoreError>;
    /// Posts of everyone.
    async fn recent(&self, w: Span) -> Result<Vec<RefRow<Self::Stamp>>, StoreError>;
    /// A customer's orders, of one status or all.
    async fn order_refs(
        &self,
        customer: i64,
        status: Option<OrderStatus>,
        w: Span,
    ) -> Result<Vec<RefRow<Self::Stamp>>, StoreError>;
    async fn notification_rows(
        &self,
        user: i64,
        w: Span,
    ) -> Result<Vec<NotificationRow<Self::Stamp>>, StoreError>;

    /// One cheap round trip.
    async fn select_one(&self) -> Result<(), StoreError>;
    /// The pool's connections now.
    fn pool_figures(&self) -> PoolStats;
    /// Closes the pool.
    async fn close_pool(&self);
}

/// The deduplicated keys as ids; `None` for no keys, which cost no statement.
fn ids<K: Copy + Eq + Hash + Into<i64>>(keys: &[K]) -> Option<Vec<i64>> {
    (!keys.is_empty()).then(|| dedup_keys(keys).into_iter().map(Into::into).collect())
}

/// Skeleton rows with their times decoded, cut to a page.
fn refs<S: Stamp, T: From<RefRow> + crate::keyset::Keyed>(
    rows: Vec<RefRow<S>>,
    limit: u32,
) -> Result<Page<T>, StoreError> {
    let rows = rows
        .into_iter()
        .map(|r| r.timed().map(T::from))
        .collect::<Result<_, _>>()?;
    Ok(into_page(rows, limit))
}

#[async_trait]
impl<T: ReadSql> Store for T {
    async fn users(&self, keys: &[UserId]) -> Result<HashMap<UserId, User>, StoreError> {
        let Some(ids) = ids(keys) else {
            return Ok(HashMap::new());
        };
        keyed(self.user_rows(&ids).await?, UserRow::entity)
    }

    async fn user_flags(&self, keys: &[UserId]) -> Result<HashMap<UserId, UserFlags>, StoreError> {
        let Some(ids) = ids(keys) else {
            return Ok(HashMap::new());
        };
        keyed(self.flag_rows(&ids).await?, FlagsRow::entity)
    }

    async fn posts(&self, keys: &[PostId]) -> Result<HashMap<PostId, Post>, StoreError> {
        let Some(ids) = ids(keys) else {
            return Ok(HashMap::new());
        };
        keyed(self.post_rows(&ids).await?, PostRow::entity)
    }

    async fn media_by_post(
        &self,
        keys: &[PostId],
    ) -> Result<HashMap<PostId, Vec<Media>>, StoreError> {
        let Some(ids) = ids(keys) else {
            return Ok(HashMap::new());
        };
        group(
            self.media_rows(&ids)
                .await?
                .into_iter()
                .map(MediaRow::entity),
        )
    }

    async fn tags_by_post(
        &self,
        keys: &[PostId],
    ) -> Result<HashMap<PostId, Vec<String>>, StoreError> {
        let Some(ids) = ids(keys) else {
            return Ok(HashMap::new());
        };
        group(self.tag_rows(&ids).await?.into_iter().map(TagRow::entity))
    }

    async fn orders(&self, keys: &[OrderId]) -> Result<HashMap<OrderId, Order>, StoreError> {
        let Some(ids) = ids(keys) else {
            return Ok(HashMap::new());
        };
        keyed(self.order_rows(&ids).await?, OrderRow::entity)
    }

    async fn order_items(
        &self,
        keys: &[OrderId],
    ) -> Result<HashMap<OrderId, Vec<OrderItem>>, StoreError> {
        let Some(ids) = ids(keys) else {
            return Ok(HashMap::new());
        };
        let rows = self.order_item_rows(&ids).await?;
        group(rows.into_iter().map(OrderItemRow::entity))
    }

    async fn follows(
        &self,
        edges: &[FollowEdge],
    ) -> Result<HashMap<FollowEdge, Follow>, StoreError> {
        if edges.is_empty() {
            return Ok(HashMap::new());
        }
        let pairs: Vec<(i64, i64)> = dedup_keys(edges)
            .into_iter()
            .map(|e| (e.follower.0, e.followee.0))
            .collect();
        keyed(self.follow_rows(&pairs).await?, FollowRow::entity)
    }

    async fn viewer_graph(&self, viewer: UserId) -> Result<ViewerGraph, StoreError> {
        self.graph(viewer).await
    }

    async fn author_page(
        &self,
        authors: &[UserId],
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<PostRef>, StoreError> {
        let w = Span::of(after, limit)?;
        let Some(authors) = ids(authors) else {
            return Ok(Page {
                items: vec![],
                next: None,
            });
        };
        refs(self.by_authors(&authors, w).await?, limit)
    }

    async fn post_page(
        &self,
        list: PostList,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<PostRef>, StoreError> {
        let w = Span::of(after, limit)?;
        match list {
            PostList::Home(viewer) => {
                let (mut rows, celebrities) = home(self, viewer.0, w).await?;
                if !celebrities.is_empty() {
                    // The top `n` of the union is within the top `n` of each part.
                    for r in self.by_authors(&celebrities, w).await? {
                        rows.push(r.timed()?);
                    }
                    rows.sort_unstable_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
                    rows.dedup_by_key(|r| r.id);
                    rows.truncate(w.n as usize);
                }
                Ok(page_of(rows, limit))
            }
            PostList::Author(user) => refs(self.by_author(user.0, w).await?, limit),
            PostList::Recent => refs(self.recent(w).await?, limit),
        }
    }

    async fn head(&self, list: PostList, len: u32) -> Result<FeedHead, StoreError> {
        let PostList::Home(viewer) = list else {
            return Ok(self.post_page(list, None, len).await?.into());
        };
        let (rows, celebrities) = home(self, viewer.0, Span::of(None, len)?).await?;
        Ok(FeedHead {
            merge: celebrities.into_iter().map(UserId).collect(),
            ..page_of::<PostRef>(rows, len).into()
        })
    }

    async fn customer_orders(
        &self,
        customer: UserId,
        status: Option<OrderStatus>,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<OrderRef>, StoreError> {
        let w = Span::of(after, limit)?;
        refs(self.order_refs(customer.0, status, w).await?, limit)
    }

    async fn notifications(
        &self,
        user: UserId,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<Notification>, StoreError> {
        let w = Span::of(after, limit)?;
        let rows = self
            .notification_rows(user.0, w)
            .await?
            .into_iter()
            .map(NotificationRow::entity)
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(into_page(rows, limit))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.select_one().await
    }

    fn pool_stats(&self) -> PoolStats {
        self.pool_figures()
    }

    async fn close(&self) {
        self.close_pool().await;
    }
}

/// The rows of a home page but for celebrities' posts not in the timeline, and the
/// celebrities the viewer follows (read at once), whose posts complete it.
async fn home<T: ReadSql>(
    store: &T,
    viewer: i64,
    w: Span,
) -> Result<(Vec<RefRow>, Vec<i64>), StoreError> {
    futures::try_join!(fanned_out(store, viewer, w), store.celebrities(viewer))
}

/// The materialized timeline, continued past its depth (or where there is no timeline
/// yet) by merge-at-read from where it ended. The timeline is the newest contiguous part
/// of the fanned-out feed, so the two parts meet without gap or overlap.
async fn fanned_out<T: ReadSql>(
    store: &T,
    viewer: i64,
    w: Span,
) -> Result<Vec<RefRow>, StoreError> {
    let mut rows = store
        .timeline(viewer, w)
        .await?
        .into_iter()
        .map(RefRow::timed)
        .collect::<Result<Vec<_>, _>>()?;
    if rows.len() < w.n as usize {
        let (at, id) = rows.last().map_or((w.at, w.id), |r| (r.created_at, r.id));
        let rest = Span {
            at,
            id,
            n: w.n - rows.len() as i64,
        };
        for r in store.followed(viewer, rest).await? {
            rows.push(r.timed()?);
        }
    }
    Ok(rows)
}
