//! `SqliteStore`: the embedded default backend, for `quiver serve --demo` and for
//! embedders without PostgreSQL. Same trait, same contract suite as `PgStore`.
//!
//! Its queries are checked at run time, not compile time: sqlx's macros check one database
//! per crate (launchbadge/sqlx#121, #916), and that database is PostgreSQL. The contract
//! suite runs every one of these statements against a real SQLite file.

use crate::events::{Backlog, Claim, ClaimTx, Effects, NewNotification, Outbox, Pruned, Retention};
use crate::store::{
    RefRow, Store, build_post, corrupt, fetch_len, group, money, page_of, parse, start_of,
};
use crate::write::{
    GraphWrites, OrderWrites, Placed, PostWrites, Written, not_self, order_event, price_lines,
};
use crate::{SqliteConfig, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use quiver_model::{
    Cursor, Event, EventId, Follow, FollowEdge, Media, MediaId, NewPost, Notification,
    NotificationId, Order, OrderId, OrderItem, OrderRef, OrderStatus, OutboxEvent, Page, Post,
    PostId, PostRef, User, UserFlags, UserId, ViewerGraph, dedup_keys,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

/// The SQLite migrations, embedded in the binary.
pub static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./sql/sqlite-migrations");

/// The embedded SQLite backend.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    waits: std::sync::Arc<crate::store::Waits>,
}

/// Timestamps are stored as integer microseconds since the Unix epoch.
pub(crate) fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_micros(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| corrupt("timestamp", micros))
}

/// A batch of keys as the JSON array that `json_each(?)` expands: SQLite has no arrays.
fn json_ids<T: Copy + Eq + std::hash::Hash + Into<i64>>(keys: &[T]) -> String {
    let ids: Vec<i64> = dedup_keys(keys).into_iter().map(Into::into).collect();
    serde_json::to_string(&ids).expect("integers serialize")
}

/// `(id, created_at micros)` rows as skeleton rows.
fn refs(rows: Vec<(i64, i64)>) -> Result<Vec<RefRow>, StoreError> {
    rows.into_iter()
        .map(|(id, at)| {
            Ok(RefRow {
                id,
                created_at: from_micros(at)?,
            })
        })
        .collect()
}

impl SqliteStore {
    /// Opens (creating if missing) the database file in WAL mode with foreign keys on.
    pub async fn connect(config: &SqliteConfig) -> Result<Self, StoreError> {
        let (options, pool) = match &config.path {
            Some(path) => (
                SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal),
                SqlitePoolOptions::new().max_connections(config.max_connections),
            ),
            // Every in-memory connection is its own database: keep exactly one, forever.
            None => (
                SqliteConnectOptions::from_str("sqlite::memory:")?,
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None),
            ),
        };
        let options = options
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = pool
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            waits: Default::default(),
        })
    }

    /// Wraps an existing pool (tests, embedders with their own pool). The pool's
    /// connections must have foreign keys on, as `SqliteConnectOptions` does by default.
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self {
            pool,
            waits: Default::default(),
        }
    }

    /// The underlying pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A pooled connection for one read, its wait counted when none was idle.
    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>, StoreError> {
        self.waits.acquire(&self.pool).await
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        SQLITE_MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn merged(
        &self,
        authors_json: String,
        at: DateTime<Utc>,
        id: i64,
        n: i64,
    ) -> Result<Vec<RefRow>, StoreError> {
        // SQLite walks `posts_by_author` once per author for `IN (json_each)` and merges;
        // fine at embedded scale, where there is no materialized-timeline pressure.
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, created_at FROM posts
             WHERE author_id IN (SELECT value FROM json_each(?1))
               AND (created_at, id) < (?2, ?3)
             ORDER BY created_at DESC, id DESC
             LIMIT ?4",
        )
        .bind(authors_json)
        .bind(to_micros(at))
        .bind(id)
        .bind(n)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        refs(rows)
    }
}

type UserRow = (i64, String, String, String, Option<String>, i64);
type PostRow = (
    i64,
    i64,
    String,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    i64,
);
type MediaRow = (i64, i64, String, String, i32, i32, i64, i16);
type OrderRow = (i64, i64, String, i64, String, i64, i64);

#[async_trait]
impl Store for SqliteStore {
    async fn users(&self, keys: &[UserId]) -> Result<HashMap<UserId, User>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<UserRow> = sqlx::query_as(
            "SELECT id, handle, display_name, bio, avatar_url, created_at
             FROM users WHERE id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_ids(keys))
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.into_iter()
            .map(|(id, handle, display_name, bio, avatar_url, at)| {
                let u = User {
                    id: UserId(id),
                    handle,
                    display_name,
                    bio,
                    avatar_url,
                    created_at: from_micros(at)?,
                };
                Ok((u.id, u))
            })
            .collect()
    }

    async fn user_flags(&self, keys: &[UserId]) -> Result<HashMap<UserId, UserFlags>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(i64, bool, bool, bool)> = sqlx::query_as(
            "SELECT id, verified, creator, private
             FROM users WHERE id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_ids(keys))
        .fetch_all(&mut *self.conn().await?)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, verified, creator, private)| {
                (
                    UserId(id),
                    UserFlags {
                        verified,
                        creator,
                        private,
                    },
                )
            })
            .collect())
    }

    async fn posts(&self, keys: &[PostId]) -> Result<HashMap<PostId, Post>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<PostRow> = sqlx::query_as(
            "SELECT id, author_id, kind, body, price_cents, currency, product_url, created_at
             FROM posts WHERE id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_ids(keys))
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.into_iter()
            .map(|(id, author, kind, body, cents, cur, url, at)| {
                let p = build_post(id, author, &kind, body, (cents, cur, url), from_micros(at)?)?;
                Ok((p.id, p))
            })
            .collect()
    }

    async fn media_by_post(
        &self,
        keys: &[PostId],
    ) -> Result<HashMap<PostId, Vec<Media>>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<MediaRow> = sqlx::query_as(
            "SELECT id, post_id, kind, url, width, height, size_bytes, position
             FROM media WHERE post_id IN (SELECT value FROM json_each(?1))
             ORDER BY post_id, position",
        )
        .bind(json_ids(keys))
        .fetch_all(&mut *self.conn().await?)
        .await?;
        group(rows.into_iter().map(
            |(id, post_id, kind, url, width, height, size_bytes, position)| {
                let m = Media {
                    id: MediaId(id),
                    post_id: PostId(post_id),
                    kind: parse("media kind", &kind)?,
                    url,
                    width,
                    height,
                    size_bytes,
                    position,
                };
                Ok((m.post_id, m))
            },
        ))
    }

    async fn tags_by_post(
        &self,
        keys: &[PostId],
    ) -> Result<HashMap<PostId, Vec<String>>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT post_id, tag FROM post_tags
             WHERE post_id IN (SELECT value FROM json_each(?1)) ORDER BY post_id, tag",
        )
        .bind(json_ids(keys))
        .fetch_all(&mut *self.conn().await?)
        .await?;
        group(
            rows.into_iter()
                .map(|(post_id, tag)| Ok((PostId(post_id), tag))),
        )
    }

    async fn orders(&self, keys: &[OrderId]) -> Result<HashMap<OrderId, Order>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<OrderRow> = sqlx::query_as(
            "SELECT id, customer_id, status, total_cents, currency, created_at, updated_at
             FROM orders WHERE id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_ids(keys))
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.into_iter()
            .map(|(id, customer, status, total, cur, created, updated)| {
                let o = Order {
                    id: OrderId(id),
                    customer_id: UserId(customer),
                    status: parse("order status", &status)?,
                    total: money(total, &cur)?,
                    created_at: from_micros(created)?,
                    updated_at: from_micros(updated)?,
                };
                Ok((o.id, o))
            })
            .collect()
    }

    async fn order_items(
        &self,
        keys: &[OrderId],
    ) -> Result<HashMap<OrderId, Vec<OrderItem>>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(i64, i64, i32, i64, String)> = sqlx::query_as(
            "SELECT order_id, post_id, quantity, unit_price_cents, currency FROM order_items
             WHERE order_id IN (SELECT value FROM json_each(?1)) ORDER BY order_id, post_id",
        )
        .bind(json_ids(keys))
        .fetch_all(&mut *self.conn().await?)
        .await?;
        group(
            rows.into_iter()
                .map(|(order_id, post_id, quantity, cents, cur)| {
                    let item = OrderItem {
                        order_id: OrderId(order_id),
                        post_id: PostId(post_id),
                        quantity,
                        unit_price: money(cents, &cur)?,
                    };
                    Ok((item.order_id, item))
                }),
        )
    }

    async fn follows(
        &self,
        edges: &[FollowEdge],
    ) -> Result<HashMap<FollowEdge, Follow>, StoreError> {
        if edges.is_empty() {
            return Ok(HashMap::new());
        }
        let pairs: Vec<[i64; 2]> = dedup_keys(edges)
            .into_iter()
            .map(|e| [e.follower.0, e.followee.0])
            .collect();
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT follower_id, followee_id, created_at FROM follows
             WHERE (follower_id, followee_id) IN (
               SELECT value ->> 0, value ->> 1 FROM json_each(?1))",
        )
        .bind(serde_json::to_string(&pairs).expect("integers serialize"))
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.into_iter()
            .map(|(follower, followee, at)| {
                let edge = FollowEdge {
                    follower: UserId(follower),
                    followee: UserId(followee),
                };
                let follow = Follow {
                    follower: edge.follower,
                    followee: edge.followee,
                    created_at: from_micros(at)?,
                };
                Ok((edge, follow))
            })
            .collect()
    }

    async fn viewer_graph(&self, viewer: UserId) -> Result<ViewerGraph, StoreError> {
        // One statement: the four edge sets tagged by relation.
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT 0, followee_id FROM follows WHERE follower_id = ?1
             UNION ALL SELECT 1, blocked_id FROM blocks WHERE blocker_id = ?1
             UNION ALL SELECT 2, blocker_id FROM blocks WHERE blocked_id = ?1
             UNION ALL SELECT 3, f.followee_id FROM follows f
                 JOIN follows back ON back.follower_id = f.followee_id AND back.followee_id = ?1
                 WHERE f.follower_id = ?1",
        )
        .bind(viewer.0)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        let mut g = ViewerGraph {
            viewer: Some(viewer),
            ..ViewerGraph::default()
        };
        for (rel, other) in rows {
            let set = match rel {
                0 => &mut g.followees,
                1 => &mut g.blocked,
                2 => &mut g.blocked_by,
                _ => &mut g.mutuals,
            };
            set.insert(UserId(other));
        }
        Ok(g)
    }

    async fn author_page(
        &self,
        authors: &[UserId],
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<PostRef>, StoreError> {
        let n = fetch_len(limit)?;
        if authors.is_empty() {
            return Ok(Page {
                items: vec![],
                next: None,
            });
        }
        let (at, id) = start_of(after);
        let rows = self.merged(json_ids(authors), at, id, n).await?;
        Ok(page_of(rows, limit))
    }

    async fn home_page(
        &self,
        viewer: UserId,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<PostRef>, StoreError> {
        let n = fetch_len(limit)?;
        let (at, id) = start_of(after);
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT post_id, created_at FROM home_timeline
             WHERE user_id = ?1 AND (created_at, post_id) < (?2, ?3)
             ORDER BY created_at DESC, post_id DESC
             LIMIT ?4",
        )
        .bind(viewer.0)
        .bind(to_micros(at))
        .bind(id)
        .bind(n)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        let mut page = refs(rows)?;
        if page.len() < n as usize {
            // Same continuation as PgStore::home_page: merge-at-read past the timeline.
            let (at, id) = page.last().map_or((at, id), |r| (r.created_at, r.id));
            let authors: Vec<i64> = sqlx::query_scalar(
                "SELECT ?1 UNION ALL SELECT followee_id FROM follows WHERE follower_id = ?1",
            )
            .bind(viewer.0)
            .fetch_all(&mut *self.conn().await?)
            .await?;
            let json = serde_json::to_string(&authors).expect("integers serialize");
            let rest = n - page.len() as i64;
            page.extend(self.merged(json, at, id, rest).await?);
        }
        Ok(page_of(page, limit))
    }

    async fn recent_posts(
        &self,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<PostRef>, StoreError> {
        let n = fetch_len(limit)?;
        let (at, id) = start_of(after);
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, created_at FROM posts
             WHERE (created_at, id) < (?1, ?2)
             ORDER BY created_at DESC, id DESC
             LIMIT ?3",
        )
        .bind(to_micros(at))
        .bind(id)
        .bind(n)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        Ok(page_of(refs(rows)?, limit))
    }

    async fn user_posts(
        &self,
        user: UserId,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<PostRef>, StoreError> {
        let n = fetch_len(limit)?;
        let (at, id) = start_of(after);
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, created_at FROM posts
             WHERE author_id = ?1 AND (created_at, id) < (?2, ?3)
             ORDER BY created_at DESC, id DESC
             LIMIT ?4",
        )
        .bind(user.0)
        .bind(to_micros(at))
        .bind(id)
        .bind(n)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        Ok(page_of(refs(rows)?, limit))
    }

    async fn customer_orders(
        &self,
        customer: UserId,
        status: Option<OrderStatus>,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<OrderRef>, StoreError> {
        let n = fetch_len(limit)?;
        let (at, id) = start_of(after);
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, created_at FROM orders
             WHERE customer_id = ?1 AND (?5 IS NULL OR status = ?5)
               AND (created_at, id) < (?2, ?3)
             ORDER BY created_at DESC, id DESC
             LIMIT ?4",
        )
        .bind(customer.0)
        .bind(to_micros(at))
        .bind(id)
        .bind(n)
        .bind(status.map(OrderStatus::as_str))
        .fetch_all(&mut *self.conn().await?)
        .await?;
        Ok(page_of(refs(rows)?, limit))
    }

    async fn notifications(
        &self,
        user: UserId,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<Notification>, StoreError> {
        type Row = (
            i64,
            i64,
            String,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            i64,
            Option<i64>,
        );
        let n = fetch_len(limit)?;
        let (at, id) = start_of(after);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, user_id, kind, actor_id, post_id, order_id, created_at, read_at
             FROM notifications
             WHERE user_id = ?1 AND (created_at, id) < (?2, ?3)
             ORDER BY created_at DESC, id DESC
             LIMIT ?4",
        )
        .bind(user.0)
        .bind(to_micros(at))
        .bind(id)
        .bind(n)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        let rows = rows
            .into_iter()
            .map(|(id, user, kind, actor, post, order, at, read)| {
                Ok(Notification {
                    id: NotificationId(id),
                    user_id: UserId(user),
                    kind: parse("notification kind", &kind)?,
                    actor_id: actor.map(UserId),
                    post_id: post.map(PostId),
                    order_id: order.map(OrderId),
                    created_at: from_micros(at)?,
                    read_at: read.map(from_micros).transpose()?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(crate::store::into_page(rows, limit))
    }

    fn pool_stats(&self) -> crate::store::PoolStats {
        self.waits.stats(&self.pool)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// One statement of an edge write, over `?1` (the acting user) and `?2` (the other); a
/// timed one also takes the write's time as `?3`.
#[derive(Clone, Copy)]
enum EdgeSql {
    Plain(&'static str),
    Timed(&'static str),
}

impl SqliteStore {
    /// A write transaction that takes the write lock up front, so two writers never
    /// deadlock upgrading read locks.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Both users exist and, when `block_refuses`, no block stands between them.
    async fn check_pair(
        tx: &mut sqlx::SqliteConnection,
        a: UserId,
        b: UserId,
        block_refuses: bool,
    ) -> Result<(), StoreError> {
        let (users, blocked): (i64, bool) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM users WHERE id IN (?1, ?2)),
                    EXISTS (SELECT 1 FROM blocks
                            WHERE (blocker_id = ?1 AND blocked_id = ?2)
                               OR (blocker_id = ?2 AND blocked_id = ?1))",
        )
        .bind(a.0)
        .bind(b.0)
        .fetch_one(&mut *tx)
        .await?;
        if users != 2 {
            return Err(StoreError::NotFound);
        }
        if block_refuses && blocked {
            // As a profile hidden by a block is: not found (a different answer would
            // tell the blocked user of the block).
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Records an outbox event in the write's transaction.
    async fn event(tx: &mut sqlx::SqliteConnection, event: &Event) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO outbox (kind, payload, created_at) VALUES (?1, ?2, ?3)")
            .bind(event.kind().as_str())
            .bind(event.payload().to_string())
            .bind(to_micros(Utc::now()))
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// Runs one edge write: `change` returns the rows it changed; the event is recorded
    /// only when it changed any.
    async fn edge_write(
        &self,
        a: UserId,
        b: UserId,
        block_refuses: bool,
        change: &[EdgeSql],
        event: Option<Event>,
    ) -> Result<Written, StoreError> {
        let mut tx = self.write_tx().await?;
        Self::check_pair(&mut tx, a, b, block_refuses).await?;
        let now = to_micros(Utc::now());
        for (n, sql) in change.iter().enumerate() {
            let query = match *sql {
                EdgeSql::Plain(sql) => sqlx::query(sql).bind(a.0).bind(b.0),
                EdgeSql::Timed(sql) => sqlx::query(sql).bind(a.0).bind(b.0).bind(now),
            };
            let done = query.execute(&mut *tx).await?.rows_affected();
            // Only the first statement decides whether the write changed anything; the
            // rest are its consequences (a block's removed follows).
            if n == 0 && done == 0 {
                return Ok(Written::Unchanged);
            }
        }
        if let Some(event) = &event {
            Self::event(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(Written::Changed)
    }
}

#[async_trait]
impl GraphWrites for SqliteStore {
    async fn follow(&self, follower: UserId, followee: UserId) -> Result<Written, StoreError> {
        not_self(follower, followee, "you cannot follow yourself")?;
        let mut tx = self.write_tx().await?;
        Self::check_pair(&mut tx, follower, followee, true).await?;
        let n = sqlx::query(
            "INSERT INTO follows (follower_id, followee_id, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
        )
        .bind(follower.0)
        .bind(followee.0)
        .bind(to_micros(Utc::now()))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(Written::Unchanged);
        }
        let (follows,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM follows WHERE follower_id = ?1")
                .bind(follower.0)
                .fetch_one(&mut *tx)
                .await?;
        if follows > crate::write::MAX_FOLLOWS {
            return Err(StoreError::Refused(crate::write::TOO_MANY_FOLLOWS));
        }
        // The timeline stays the newest contiguous part of the feed: the new author's
        // posts newer than its oldest entry join it; older ones are read by merge.
        let oldest: Option<(i64, i64)> = sqlx::query_as(
            "SELECT created_at, post_id FROM home_timeline WHERE user_id = ?1
             ORDER BY created_at, post_id LIMIT 1",
        )
        .bind(follower.0)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((at, id)) = oldest {
            sqlx::query(
                "INSERT INTO home_timeline (user_id, created_at, post_id, author_id)
                 SELECT ?1, created_at, id, author_id FROM posts
                 WHERE author_id = ?2 AND (created_at > ?3 OR (created_at = ?3 AND id > ?4))
                 ON CONFLICT DO NOTHING",
            )
            .bind(follower.0)
            .bind(followee.0)
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        Self::event(&mut tx, &Event::UserFollowed { follower, followee }).await?;
        tx.commit().await?;
        Ok(Written::Changed)
    }

    async fn unfollow(&self, follower: UserId, followee: UserId) -> Result<Written, StoreError> {
        not_self(follower, followee, "you cannot unfollow yourself")?;
        self.edge_write(
            follower,
            followee,
            false,
            &[
                EdgeSql::Plain("DELETE FROM follows WHERE follower_id = ?1 AND followee_id = ?2"),
                EdgeSql::Plain("DELETE FROM home_timeline WHERE user_id = ?1 AND author_id = ?2"),
            ],
            Some(Event::UserUnfollowed { follower, followee }),
        )
        .await
    }

    async fn block(&self, blocker: UserId, blocked: UserId) -> Result<Written, StoreError> {
        not_self(blocker, blocked, "you cannot block yourself")?;
        self.edge_write(
            blocker,
            blocked,
            false,
            &[
                EdgeSql::Timed(
                    "INSERT INTO blocks (blocker_id, blocked_id, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO NOTHING",
                ),
                EdgeSql::Plain(
                    "DELETE FROM follows
                     WHERE ((follower_id = ?1 AND followee_id = ?2)
                        OR (follower_id = ?2 AND followee_id = ?1))",
                ),
                EdgeSql::Plain(
                    "DELETE FROM home_timeline
                     WHERE ((user_id = ?1 AND author_id = ?2)
                        OR (user_id = ?2 AND author_id = ?1))",
                ),
            ],
            Some(Event::UserBlocked { blocker, blocked }),
        )
        .await
    }

    async fn unblock(&self, blocker: UserId, blocked: UserId) -> Result<Written, StoreError> {
        not_self(blocker, blocked, "you cannot unblock yourself")?;
        self.edge_write(
            blocker,
            blocked,
            false,
            &[EdgeSql::Plain(
                "DELETE FROM blocks WHERE blocker_id = ?1 AND blocked_id = ?2",
            )],
            Some(Event::UserUnblocked { blocker, blocked }),
        )
        .await
    }
}

#[async_trait]
impl PostWrites for SqliteStore {
    async fn create_post(&self, author: UserId, post: &NewPost) -> Result<Post, StoreError> {
        let mut tx = self.write_tx().await?;
        let (exists,): (bool,) =
            sqlx::query_as("SELECT EXISTS (SELECT 1 FROM users WHERE id = ?1)")
                .bind(author.0)
                .fetch_one(&mut *tx)
                .await?;
        if !exists {
            return Err(StoreError::NotFound);
        }
        let now = Utc::now();
        // Stored at microsecond precision; the returned post says exactly what was stored.
        let created_at = from_micros(to_micros(now))?;
        let wish = post.wish.as_ref();
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO posts (author_id, kind, body, price_cents, currency, product_url, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
        )
        .bind(author.0)
        .bind(post.kind.as_str())
        .bind(&post.body)
        .bind(wish.map(|w| w.price.amount_cents))
        .bind(wish.map(|w| w.price.currency.as_str().to_owned()))
        .bind(wish.map(|w| w.product_url.clone()))
        .bind(to_micros(created_at))
        .fetch_one(&mut *tx)
        .await?;
        for (position, m) in post.media.iter().enumerate() {
            sqlx::query(
                "INSERT INTO media (post_id, kind, url, width, height, size_bytes, position)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .bind(id)
            .bind(m.kind.as_str())
            .bind(&m.url)
            .bind(m.width)
            .bind(m.height)
            .bind(m.size_bytes)
            .bind(position as i64)
            .execute(&mut *tx)
            .await?;
        }
        for tag in &post.tags {
            sqlx::query(
                "INSERT INTO post_tags (post_id, tag) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(tag)
            .execute(&mut *tx)
            .await?;
        }
        // The author's own timeline now (read your writes); followers' by the fan-out
        // of `post.created`.
        sqlx::query(
            "INSERT INTO home_timeline (user_id, created_at, post_id, author_id)
             VALUES (?1, ?2, ?3, ?1) ON CONFLICT DO NOTHING",
        )
        .bind(author.0)
        .bind(to_micros(created_at))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let id = PostId(id);
        Self::event(
            &mut tx,
            &Event::PostCreated {
                post_id: id,
                author_id: author,
            },
        )
        .await?;
        tx.commit().await?;
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
        let mut tx = self.write_tx().await?;
        let owner: Option<(i64, bool)> = sqlx::query_as(
            "SELECT author_id, EXISTS (SELECT 1 FROM order_items WHERE post_id = ?1)
             FROM posts WHERE id = ?1",
        )
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
        let (owner, ordered) = owner.ok_or(StoreError::NotFound)?;
        if owner != author.0 {
            return Err(StoreError::NotYours("the post belongs to another user"));
        }
        if ordered {
            return Err(StoreError::Refused(
                "a wish that has been ordered cannot be deleted",
            ));
        }
        sqlx::query("DELETE FROM posts WHERE id = ?1")
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        Self::event(
            &mut tx,
            &Event::PostDeleted {
                post_id: id,
                author_id: author,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl OrderWrites for SqliteStore {
    async fn create_order(
        &self,
        customer: UserId,
        key: &str,
        fingerprint: &str,
        lines: &[(PostId, i32)],
    ) -> Result<Placed, StoreError> {
        // BEGIN IMMEDIATE: requests with the same key run one after the other.
        let mut tx = self.write_tx().await?;
        let first: Option<(String, Option<i64>)> = sqlx::query_as(
            "SELECT fingerprint, order_id FROM idempotency_keys WHERE user_id = ?1 AND key = ?2",
        )
        .bind(customer.0)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((first, order)) = first {
            return match order {
                Some(order) if first == fingerprint => Ok(Placed {
                    order: OrderId(order),
                    replayed: true,
                }),
                _ => Err(StoreError::KeyReused),
            };
        }
        let now = to_micros(Utc::now());
        sqlx::query(
            "INSERT INTO idempotency_keys (user_id, key, fingerprint, created_at)
             VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(customer.0)
        .bind(key)
        .bind(fingerprint)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let ids = json_ids(&lines.iter().map(|(p, _)| *p).collect::<Vec<_>>());
        let rows: Vec<(i64, i64, String, Option<i64>, Option<String>)> = sqlx::query_as(
            "SELECT p.id, p.author_id, p.kind, p.price_cents, p.currency
             FROM posts p
             WHERE p.id IN (SELECT value FROM json_each(?1))
               AND NOT EXISTS (SELECT 1 FROM blocks b
                               WHERE (b.blocker_id = p.author_id AND b.blocked_id = ?2)
                                  OR (b.blocker_id = ?2 AND b.blocked_id = p.author_id))",
        )
        .bind(ids)
        .bind(customer.0)
        .fetch_all(&mut *tx)
        .await?;
        let found = rows
            .into_iter()
            .map(|(id, author, kind, price, cur)| (id, (author, kind, price, cur)))
            .collect();
        let (total, currency, priced) = price_lines(customer, lines, &found)?;
        let (order,): (i64,) = sqlx::query_as(
            "INSERT INTO orders (customer_id, status, total_cents, currency, created_at, updated_at)
             VALUES (?1, 'pending', ?2, ?3, ?4, ?4) RETURNING id",
        )
        .bind(customer.0)
        .bind(total)
        .bind(&currency)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        for (post, _, quantity, price) in &priced {
            sqlx::query(
                "INSERT INTO order_items (order_id, post_id, quantity, unit_price_cents, currency)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(order)
            .bind(post)
            .bind(quantity)
            .bind(price)
            .bind(&currency)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE idempotency_keys SET order_id = ?3 WHERE user_id = ?1 AND key = ?2")
            .bind(customer.0)
            .bind(key)
            .bind(order)
            .execute(&mut *tx)
            .await?;
        Self::event(&mut tx, &order_event(order, customer, &priced)).await?;
        tx.commit().await?;
        Ok(Placed {
            order: OrderId(order),
            replayed: false,
        })
    }
}

/// A SQLite claim. SQLite serves one process, whose one relay claims at a time, so no
/// lock is held while the events are handled (a held write lock would block the
/// handlers' own writes); finishing marks the rows published.
struct SqliteClaim(SqlitePool);

#[async_trait]
impl ClaimTx for SqliteClaim {
    async fn finish(
        self: Box<Self>,
        published: &[i64],
        failed: &[(i64, String)],
    ) -> Result<(), StoreError> {
        let now = to_micros(Utc::now());
        if !published.is_empty() {
            sqlx::query(
                "UPDATE outbox SET published_at = ?1 WHERE id IN (SELECT value FROM json_each(?2))",
            )
            .bind(now)
            .bind(serde_json::to_string(published).expect("ids serialize"))
            .execute(&self.0)
            .await?;
        }
        for (id, error) in failed {
            sqlx::query(
                "UPDATE outbox SET published_at = ?1, failed_at = ?1, error = ?2 WHERE id = ?3",
            )
            .bind(now)
            .bind(error)
            .bind(id)
            .execute(&self.0)
            .await?;
        }
        Ok(())
    }

    async fn release(self: Box<Self>) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl Outbox for SqliteStore {
    async fn claim(&self, limit: u32) -> Result<Claim, StoreError> {
        let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
            "SELECT id, kind, payload, created_at FROM outbox
             WHERE published_at IS NULL ORDER BY id LIMIT ?1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let events = rows
            .into_iter()
            .map(|(id, kind, payload, at)| {
                Ok(OutboxEvent {
                    id: EventId(id),
                    kind: parse("event kind", &kind)?,
                    payload: serde_json::from_str(&payload)
                        .map_err(|e| corrupt("outbox payload", e))?,
                    created_at: from_micros(at)?,
                    published_at: None,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Claim {
            tx: (!events.is_empty()).then(|| Box::new(SqliteClaim(self.pool.clone())) as _),
            events,
        })
    }

    async fn backlog(&self) -> Result<Backlog, StoreError> {
        let (n, oldest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT count(*), min(created_at) FROM outbox WHERE published_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Backlog {
            unpublished: n as u64,
            oldest: oldest.map(from_micros).transpose()?,
        })
    }

    async fn prune(&self, r: &Retention, after: UserId) -> Result<Pruned, StoreError> {
        let age = |d: std::time::Duration| {
            to_micros(Utc::now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX))
        };
        let rows = i64::from(r.rows_per_step.max(1));
        let mut tx = self.write_tx().await?;
        let outbox = sqlx::query(
            "DELETE FROM outbox WHERE id IN (
                 SELECT id FROM outbox WHERE published_at < ?1 AND failed_at IS NULL
                 ORDER BY id LIMIT ?2)",
        )
        .bind(age(r.outbox))
        .bind(rows)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let idempotency_keys = sqlx::query(
            "DELETE FROM idempotency_keys WHERE (user_id, key) IN (
                 SELECT user_id, key FROM idempotency_keys WHERE created_at < ?1 LIMIT ?2)",
        )
        .bind(age(r.idempotency_keys))
        .bind(rows)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let notifications = sqlx::query(
            "DELETE FROM notifications WHERE id IN (
                 SELECT id FROM notifications WHERE created_at < ?1 LIMIT ?2)",
        )
        .bind(age(r.notifications))
        .bind(rows)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT max(id) FROM (SELECT id FROM users WHERE id > ?1 ORDER BY id LIMIT ?2)",
        )
        .bind(after.0)
        .bind(i64::from(r.users_per_step.max(1)))
        .fetch_one(&mut *tx)
        .await?;
        let timeline_entries = match last {
            None => 0,
            Some(last) => sqlx::query(
                "DELETE FROM home_timeline WHERE (user_id, created_at, post_id) IN (
                     SELECT user_id, created_at, post_id FROM (
                         SELECT user_id, created_at, post_id,
                                row_number() OVER (PARTITION BY user_id
                                                   ORDER BY created_at DESC, post_id DESC) AS n
                         FROM home_timeline WHERE user_id > ?1 AND user_id <= ?2)
                     WHERE n > ?3)",
            )
            .bind(after.0)
            .bind(last)
            .bind(i64::from(r.timeline_depth))
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        tx.commit().await?;
        Ok(Pruned {
            outbox,
            idempotency_keys,
            notifications,
            timeline_entries,
            next_user: last.map(UserId),
        })
    }
}

#[async_trait]
impl Effects for SqliteStore {
    async fn ready(&self) -> Result<(), StoreError> {
        Store::ping(self).await
    }

    async fn notify(&self, notes: &[NewNotification]) -> Result<u64, StoreError> {
        if notes.is_empty() {
            return Ok(0);
        }
        let mut tx = self.write_tx().await?;
        let now = to_micros(Utc::now());
        let mut n = 0;
        for note in notes {
            n += sqlx::query(
                "INSERT INTO notifications (user_id, kind, actor_id, post_id, order_id, event_key, created_at)
                 SELECT ?1, ?2,
                        (SELECT id FROM users WHERE id = ?3),
                        (SELECT id FROM posts WHERE id = ?4),
                        (SELECT id FROM orders WHERE id = ?5),
                        ?6, ?7
                 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?1)
                 ON CONFLICT DO NOTHING",
            )
            .bind(note.user_id.0)
            .bind(note.kind.as_str())
            .bind(note.actor_id.map(|u| u.0))
            .bind(note.post_id.map(|p| p.0))
            .bind(note.order_id.map(|o| o.0))
            .bind(&note.key)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn fan_out(&self, post: PostId, batch: u32) -> Result<Vec<UserId>, StoreError> {
        let batch = i64::from(batch.max(1));
        let mut after = 0_i64;
        let mut holders = Vec::new();
        loop {
            // Writers take turns (BEGIN IMMEDIATE), so each batch sees every follow,
            // unfollow and delete committed before it and none can interleave with it.
            let mut tx = self.write_tx().await?;
            let followers: Vec<(i64,)> = sqlx::query_as(
                "SELECT f.follower_id FROM follows f JOIN posts p ON p.author_id = f.followee_id
                 WHERE p.id = ?1 AND f.follower_id > ?2
                 ORDER BY f.follower_id LIMIT ?3",
            )
            .bind(post.0)
            .bind(after)
            .bind(batch)
            .fetch_all(&mut *tx)
            .await?;
            let ids: Vec<i64> = followers.iter().map(|f| f.0).collect();
            sqlx::query(
                "INSERT INTO home_timeline (user_id, created_at, post_id, author_id)
                 SELECT f.value, p.created_at, p.id, p.author_id
                 FROM json_each(?2) f, posts p
                 WHERE p.id = ?1
                   -- Only where the timeline stays the newest contiguous part of the
                   -- feed: an empty one, or one holding something older than the post.
                   AND (NOT EXISTS (SELECT 1 FROM home_timeline o WHERE o.user_id = f.value)
                        OR EXISTS (SELECT 1 FROM home_timeline o
                                   WHERE o.user_id = f.value
                                     AND (o.created_at, o.post_id) < (p.created_at, p.id)))
                 ON CONFLICT DO NOTHING",
            )
            .bind(post.0)
            .bind(serde_json::to_string(&ids).expect("ids serialize"))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            holders.extend(ids.iter().map(|u| UserId(*u)));
            match ids.last() {
                Some(last) if ids.len() as i64 == batch => after = *last,
                _ => return Ok(holders),
            }
        }
    }
}
