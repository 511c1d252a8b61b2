//! The `Store` trait: every read quiver makes, implemented once per backend and checked by
//! one contract suite against both.

use crate::StoreError;
use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use quiver_model::{
    Cursor, Follow, FollowEdge, Media, Notification, Order, OrderId, OrderItem, OrderRef,
    OrderStatus, Page, Post, PostId, PostKind, PostRef, User, UserFlags, UserId, ViewerGraph, Wish,
};
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;

/// The largest page a skeleton query returns.
pub const MAX_PAGE_SIZE: u32 = 1000;

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
    /// The home feed skeleton of `viewer`: posts by the accounts they follow and their own,
    /// newest first, from the materialized home timeline, continued by merge-at-read past
    /// its depth.
    async fn home_page(
        &self,
        viewer: UserId,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<PostRef>, StoreError>;
    /// All posts, newest first (the discovery feed's window), by `posts_recent`.
    async fn recent_posts(
        &self,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<PostRef>, StoreError>;
    /// Posts of one user, newest first.
    async fn user_posts(
        &self,
        user: UserId,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<PostRef>, StoreError>;
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

/// Where a page starts: strictly after `after`, or from the top. The sentinel lies beyond
/// any real row so one index-friendly row comparison serves both cases.
pub(crate) fn start_of(after: Option<Cursor>) -> (DateTime<Utc>, i64) {
    match after {
        Some(c) => (c.created_at, c.id),
        None => (
            Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0).unwrap(),
            i64::MAX,
        ),
    }
}

/// Checks a page size and returns how many rows to fetch: one more than the page, so the
/// last page is known to be last without another query.
pub(crate) fn fetch_len(limit: u32) -> Result<i64, StoreError> {
    if limit == 0 || limit > MAX_PAGE_SIZE {
        return Err(StoreError::InvalidLimit {
            got: limit,
            max: MAX_PAGE_SIZE,
        });
    }
    Ok(i64::from(limit) + 1)
}

/// Cuts `rows` (fetched with [`fetch_len`]) to a page and sets `next` when there is more.
pub(crate) fn into_page<T: Keyed>(mut rows: Vec<T>, limit: u32) -> Page<T> {
    let limit = limit as usize;
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| {
            let (created_at, id) = r.key();
            Cursor { created_at, id }
        })
    } else {
        None
    };
    Page { items: rows, next }
}

pub(crate) fn corrupt(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {err}"))
}

/// Minor units and a stored currency code as `Money`.
pub(crate) fn money(cents: i64, currency: &str) -> Result<quiver_model::Money, StoreError> {
    Ok(quiver_model::Money {
        amount_cents: cents,
        currency: currency.parse().map_err(|e| corrupt("currency", e))?,
    })
}

/// A stored enum text as its domain type.
pub(crate) fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e| corrupt(what, e))
}

/// A post from its stored columns; the wish columns must be set exactly for wishes.
pub(crate) fn build_post(
    id: i64,
    author_id: i64,
    kind: &str,
    body: String,
    wish: (Option<i64>, Option<String>, Option<String>),
    created_at: DateTime<Utc>,
) -> Result<Post, StoreError> {
    let kind: PostKind = parse("post kind", kind)?;
    let wish = match (kind, wish) {
        (PostKind::Wish, (Some(cents), Some(cur), Some(url))) => Some(Wish {
            price: money(cents, &cur)?,
            product_url: url,
        }),
        (PostKind::Post, (None, None, None)) => None,
        _ => {
            return Err(corrupt(
                "post",
                format!("wish fields of post {id} do not match its kind"),
            ));
        }
    };
    Ok(Post {
        id: PostId(id),
        author_id: UserId(author_id),
        kind,
        body,
        wish,
        created_at,
    })
}

/// One row of a skeleton query: a position in a keyset-ordered list.
#[derive(Debug)]
pub(crate) struct RefRow {
    pub(crate) id: i64,
    pub(crate) created_at: DateTime<Utc>,
}

impl From<RefRow> for PostRef {
    fn from(r: RefRow) -> Self {
        PostRef {
            id: PostId(r.id),
            created_at: r.created_at,
        }
    }
}

impl From<RefRow> for OrderRef {
    fn from(r: RefRow) -> Self {
        OrderRef {
            id: OrderId(r.id),
            created_at: r.created_at,
        }
    }
}

/// Rows converted to `T` and cut to a page.
pub(crate) fn page_of<T: From<RefRow> + Keyed>(rows: Vec<RefRow>, limit: u32) -> Page<T> {
    into_page(rows.into_iter().map(T::from).collect(), limit)
}

/// Anything with a keyset position `(created_at, id)`.
pub(crate) trait Keyed {
    fn key(&self) -> (DateTime<Utc>, i64);
}

impl Keyed for (DateTime<Utc>, i64) {
    fn key(&self) -> (DateTime<Utc>, i64) {
        *self
    }
}

impl Keyed for PostRef {
    fn key(&self) -> (DateTime<Utc>, i64) {
        (self.created_at, self.id.0)
    }
}

impl Keyed for Notification {
    fn key(&self) -> (DateTime<Utc>, i64) {
        (self.created_at, self.id.0)
    }
}

impl Keyed for OrderRef {
    fn key(&self) -> (DateTime<Utc>, i64) {
        (self.created_at, self.id.0)
    }
}

/// Collects `(key, value)` rows into per-key lists, keeping row order within each list.
pub(crate) fn group<K: Eq + Hash, V>(
    rows: impl IntoIterator<Item = Result<(K, V), StoreError>>,
) -> Result<HashMap<K, Vec<V>>, StoreError> {
    let mut out: HashMap<K, Vec<V>> = HashMap::new();
    for row in rows {
        let (k, v) = row?;
        out.entry(k).or_default().push(v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_len_bounds_the_page() {
        assert!(fetch_len(0).is_err());
        assert_eq!(fetch_len(20).unwrap(), 21);
        assert!(fetch_len(MAX_PAGE_SIZE + 1).is_err());
    }

    #[test]
    fn into_page_sets_next_only_when_more_rows_exist() {
        let t = Utc.timestamp_opt(1, 0).unwrap();
        let rows = |n: i64| (0..n).map(|i| (t, i)).collect::<Vec<_>>();
        let p = into_page(rows(3), 2);
        assert_eq!(p.items.len(), 2);
        assert_eq!(
            p.next,
            Some(Cursor {
                created_at: t,
                id: 1
            })
        );
        let p = into_page(rows(2), 2);
        assert_eq!(p.next, None);
    }
}
