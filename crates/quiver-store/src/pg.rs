//! `PgStore`: the PostgreSQL backend. Every query is checked at compile time against the
//! schema (`query!`, with `.sqlx/` committed), and every batch is one `= ANY($1)` statement.

use crate::events::{Backlog, Claim, ClaimTx, Effects, NewNotification, Outbox, Pruned, Retention};
use crate::store::{RefRow, Store, build_post, fetch_len, group, money, page_of, parse, start_of};
use crate::write::{
    GraphWrites, OrderWrites, Placed, PostWrites, Written, not_self, order_event, price_lines,
};
use crate::{PgConfig, StoreError};
use async_trait::async_trait;
use quiver_model::{
    Cursor, Event, EventId, Follow, FollowEdge, Media, MediaId, NewPost, Notification,
    NotificationId, Order, OrderId, OrderItem, OrderRef, OrderStatus, OutboxEvent, Page, Post,
    PostId, PostRef, User, UserFlags, UserId, ViewerGraph, dedup_keys,
};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::collections::HashMap;
use std::str::FromStr;

/// The PostgreSQL migrations, embedded in the binary.
pub static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./sql/migrations");

/// The PostgreSQL backend over a tuned `PgPool`.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    waits: std::sync::Arc<crate::store::Waits>,
}

impl PgStore {
    /// Connects a pool as `config` says. Fails fast when the server cannot be reached.
    pub async fn connect(config: &PgConfig) -> Result<Self, StoreError> {
        Ok(Self::from_pool(
            Self::pool_options(config)
                .connect_with(Self::connect_options(config)?)
                .await?,
        ))
    }

    /// Builds the pool without connecting; connections open on first use.
    pub fn connect_lazy(config: &PgConfig) -> Result<Self, StoreError> {
        Ok(Self::from_pool(
            Self::pool_options(config).connect_lazy_with(Self::connect_options(config)?),
        ))
    }

    /// Wraps an existing pool (tests, embedders with their own pool).
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            waits: Default::default(),
        }
    }

    /// The underlying pool, for writes that live elsewhere and for benches.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A pooled connection for one read, its wait counted when none was idle.
    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, StoreError> {
        self.waits.acquire(&self.pool).await
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        PG_MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    fn connect_options(config: &PgConfig) -> Result<PgConnectOptions, StoreError> {
        let timeout_ms = config.statement_timeout.as_millis().to_string();
        Ok(PgConnectOptions::from_str(&config.url)?
            .application_name(&config.application_name)
            .options([("statement_timeout", timeout_ms.as_str())]))
    }

    fn pool_options(config: &PgConfig) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(config.max_connections)
            .min_connections(config.min_connections)
            .acquire_timeout(config.acquire_timeout)
            .idle_timeout(config.idle_timeout)
            .max_lifetime(config.max_lifetime)
            .test_before_acquire(config.test_before_acquire)
    }
}

fn ids<T: Copy + Eq + std::hash::Hash + Into<i64>>(keys: &[T]) -> Vec<i64> {
    dedup_keys(keys).into_iter().map(Into::into).collect()
}

#[async_trait]
impl Store for PgStore {
    async fn users(&self, keys: &[UserId]) -> Result<HashMap<UserId, User>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query!(
            "SELECT id, handle, display_name, bio, avatar_url, created_at
             FROM users WHERE id = ANY($1)",
            &ids(keys)
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let u = User {
                    id: UserId(r.id),
                    handle: r.handle,
                    display_name: r.display_name,
                    bio: r.bio,
                    avatar_url: r.avatar_url,
                    created_at: r.created_at,
                };
                (u.id, u)
            })
            .collect())
    }

    async fn user_flags(&self, keys: &[UserId]) -> Result<HashMap<UserId, UserFlags>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query!(
            "SELECT id, verified, creator, private FROM users WHERE id = ANY($1)",
            &ids(keys)
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let flags = UserFlags {
                    verified: r.verified,
                    creator: r.creator,
                    private: r.private,
                };
                (UserId(r.id), flags)
            })
            .collect())
    }

    async fn posts(&self, keys: &[PostId]) -> Result<HashMap<PostId, Post>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query!(
            "SELECT id, author_id, kind, body, price_cents, currency, product_url, created_at
             FROM posts WHERE id = ANY($1)",
            &ids(keys)
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.into_iter()
            .map(|r| {
                let p = build_post(
                    r.id,
                    r.author_id,
                    &r.kind,
                    r.body,
                    (r.price_cents, r.currency, r.product_url),
                    r.created_at,
                )?;
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
        let rows = sqlx::query!(
            "SELECT id, post_id, kind, url, width, height, size_bytes, position
             FROM media WHERE post_id = ANY($1) ORDER BY post_id, position",
            &ids(keys)
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        group(rows.into_iter().map(|r| {
            let m = Media {
                id: MediaId(r.id),
                post_id: PostId(r.post_id),
                kind: parse("media kind", &r.kind)?,
                url: r.url,
                width: r.width,
                height: r.height,
                size_bytes: r.size_bytes,
                position: r.position,
            };
            Ok((m.post_id, m))
        }))
    }

    async fn tags_by_post(
        &self,
        keys: &[PostId],
    ) -> Result<HashMap<PostId, Vec<String>>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query!(
            "SELECT post_id, tag FROM post_tags WHERE post_id = ANY($1) ORDER BY post_id, tag",
            &ids(keys)
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        group(rows.into_iter().map(|r| Ok((PostId(r.post_id), r.tag))))
    }

    async fn orders(&self, keys: &[OrderId]) -> Result<HashMap<OrderId, Order>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query!(
            "SELECT id, customer_id, status, total_cents, currency, created_at, updated_at
             FROM orders WHERE id = ANY($1)",
            &ids(keys)
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        rows.into_iter()
            .map(|r| {
                let o = Order {
                    id: OrderId(r.id),
                    customer_id: UserId(r.customer_id),
                    status: parse("order status", &r.status)?,
                    total: money(r.total_cents, &r.currency)?,
                    created_at: r.created_at,
                    updated_at: r.updated_at,
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
        let rows = sqlx::query!(
            "SELECT order_id, post_id, quantity, unit_price_cents, currency
             FROM order_items WHERE order_id = ANY($1) ORDER BY order_id, post_id",
            &ids(keys)
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        group(rows.into_iter().map(|r| {
            let item = OrderItem {
                order_id: OrderId(r.order_id),
                post_id: PostId(r.post_id),
                quantity: r.quantity,
                unit_price: money(r.unit_price_cents, &r.currency)?,
            };
            Ok((item.order_id, item))
        }))
    }

    async fn follows(
        &self,
        edges: &[FollowEdge],
    ) -> Result<HashMap<FollowEdge, Follow>, StoreError> {
        if edges.is_empty() {
            return Ok(HashMap::new());
        }
        let (followers, followees): (Vec<i64>, Vec<i64>) = dedup_keys(edges)
            .into_iter()
            .map(|e| (e.follower.0, e.followee.0))
            .unzip();
        let rows = sqlx::query!(
            "SELECT f.follower_id, f.followee_id, f.created_at
             FROM follows f
             JOIN UNNEST($1::bigint[], $2::bigint[]) AS k(follower_id, followee_id)
               USING (follower_id, followee_id)",
            &followers,
            &followees
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let edge = FollowEdge {
                    follower: UserId(r.follower_id),
                    followee: UserId(r.followee_id),
                };
                let follow = Follow {
                    follower: edge.follower,
                    followee: edge.followee,
                    created_at: r.created_at,
                };
                (edge, follow)
            })
            .collect())
    }

    async fn viewer_graph(&self, viewer: UserId) -> Result<ViewerGraph, StoreError> {
        let r = sqlx::query!(
            r#"SELECT
                 ARRAY(SELECT followee_id FROM follows WHERE follower_id = $1) AS "followees!",
                 ARRAY(SELECT f.followee_id FROM follows f
                       JOIN follows back ON back.follower_id = f.followee_id
                                        AND back.followee_id = $1
                       WHERE f.follower_id = $1) AS "mutuals!",
                 ARRAY(SELECT blocked_id FROM blocks WHERE blocker_id = $1) AS "blocked!",
                 ARRAY(SELECT blocker_id FROM blocks WHERE blocked_id = $1) AS "blocked_by!""#,
            viewer.0
        )
        .fetch_one(&mut *self.conn().await?)
        .await?;
        Ok(ViewerGraph {
            viewer: Some(viewer),
            followees: r.followees.into_iter().map(UserId).collect(),
            mutuals: r.mutuals.into_iter().map(UserId).collect(),
            blocked: r.blocked.into_iter().map(UserId).collect(),
            blocked_by: r.blocked_by.into_iter().map(UserId).collect(),
        })
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
        // Top rows per author straight from `posts_by_author`, then the top of their union:
        // reads at most `n` index entries per author instead of every post of every author.
        let rows = sqlx::query_as!(
            RefRow,
            r#"SELECT p.id AS "id!", p.created_at AS "created_at!"
               FROM unnest($1::bigint[]) AS a(author_id)
               CROSS JOIN LATERAL (
                   SELECT id, created_at FROM posts
                   WHERE posts.author_id = a.author_id AND (created_at, id) < ($2, $3)
                   ORDER BY created_at DESC, id DESC
                   LIMIT $4
               ) p
               ORDER BY p.created_at DESC, p.id DESC
               LIMIT $4"#,
            &ids(authors),
            at,
            id,
            n
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
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
        let mut rows = sqlx::query_as!(
            RefRow,
            "SELECT post_id AS id, created_at FROM home_timeline
             WHERE user_id = $1 AND (created_at, post_id) < ($2, $3)
             ORDER BY created_at DESC, post_id DESC
             LIMIT $4",
            viewer.0,
            at,
            id,
            n
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        if rows.len() < n as usize {
            // Past the materialized depth (or no timeline yet): continue by merge-at-read
            // from where the timeline ended. The timeline is the newest contiguous part of
            // the same feed, so the two parts meet without gap or overlap.
            let (at, id) = rows.last().map_or((at, id), |r| (r.created_at, r.id));
            let rest = n - rows.len() as i64;
            let more = sqlx::query_as!(
                RefRow,
                r#"SELECT p.id AS "id!", p.created_at AS "created_at!"
                   FROM (SELECT $1::bigint AS author_id
                         UNION ALL
                         SELECT followee_id FROM follows WHERE follower_id = $1) AS a
                   CROSS JOIN LATERAL (
                       SELECT id, created_at FROM posts
                       WHERE posts.author_id = a.author_id AND (created_at, id) < ($2, $3)
                       ORDER BY created_at DESC, id DESC
                       LIMIT $4
                   ) p
                   ORDER BY p.created_at DESC, p.id DESC
                   LIMIT $4"#,
                viewer.0,
                at,
                id,
                rest
            )
            .fetch_all(&mut *self.conn().await?)
            .await?;
            rows.extend(more);
        }
        Ok(page_of(rows, limit))
    }

    async fn recent_posts(
        &self,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<PostRef>, StoreError> {
        let n = fetch_len(limit)?;
        let (at, id) = start_of(after);
        let rows = sqlx::query_as!(
            RefRow,
            "SELECT id, created_at FROM posts
             WHERE (created_at, id) < ($1, $2)
             ORDER BY created_at DESC, id DESC
             LIMIT $3",
            at,
            id,
            n
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        Ok(page_of(rows, limit))
    }

    async fn user_posts(
        &self,
        user: UserId,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<PostRef>, StoreError> {
        let n = fetch_len(limit)?;
        let (at, id) = start_of(after);
        let rows = sqlx::query_as!(
            RefRow,
            "SELECT id, created_at FROM posts
             WHERE author_id = $1 AND (created_at, id) < ($2, $3)
             ORDER BY created_at DESC, id DESC
             LIMIT $4",
            user.0,
            at,
            id,
            n
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        Ok(page_of(rows, limit))
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
        // Three statements on purpose: only a literal `status = 'active'` lets the planner
        // match the partial index in a prepared (generic) plan.
        let rows = match status {
            Some(OrderStatus::Active) => {
                sqlx::query_as!(
                    RefRow,
                    "SELECT id, created_at FROM orders
                     WHERE customer_id = $1 AND status = 'active' AND (created_at, id) < ($2, $3)
                     ORDER BY created_at DESC, id DESC
                     LIMIT $4",
                    customer.0,
                    at,
                    id,
                    n
                )
                .fetch_all(&mut *self.conn().await?)
                .await?
            }
            Some(other) => {
                sqlx::query_as!(
                    RefRow,
                    "SELECT id, created_at FROM orders
                     WHERE customer_id = $1 AND status = $5 AND (created_at, id) < ($2, $3)
                     ORDER BY created_at DESC, id DESC
                     LIMIT $4",
                    customer.0,
                    at,
                    id,
                    n,
                    other.as_str()
                )
                .fetch_all(&mut *self.conn().await?)
                .await?
            }
            None => {
                sqlx::query_as!(
                    RefRow,
                    "SELECT id, created_at FROM orders
                     WHERE customer_id = $1 AND (created_at, id) < ($2, $3)
                     ORDER BY created_at DESC, id DESC
                     LIMIT $4",
                    customer.0,
                    at,
                    id,
                    n
                )
                .fetch_all(&mut *self.conn().await?)
                .await?
            }
        };
        Ok(page_of(rows, limit))
    }

    async fn notifications(
        &self,
        user: UserId,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<Notification>, StoreError> {
        let n = fetch_len(limit)?;
        let (at, id) = start_of(after);
        let rows = sqlx::query!(
            "SELECT id, user_id, kind, actor_id, post_id, order_id, created_at, read_at
             FROM notifications
             WHERE user_id = $1 AND (created_at, id) < ($2, $3)
             ORDER BY created_at DESC, id DESC
             LIMIT $4",
            user.0,
            at,
            id,
            n
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        let rows = rows
            .into_iter()
            .map(|r| {
                Ok(Notification {
                    id: NotificationId(r.id),
                    user_id: UserId(r.user_id),
                    kind: parse("notification kind", &r.kind)?,
                    actor_id: r.actor_id.map(UserId),
                    post_id: r.post_id.map(PostId),
                    order_id: r.order_id.map(OrderId),
                    created_at: r.created_at,
                    read_at: r.read_at,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(crate::store::into_page(rows, limit))
    }

    fn pool_stats(&self) -> crate::store::PoolStats {
        self.waits.stats(&self.pool)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query!("SELECT 1 AS one")
            .fetch_one(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

impl PgStore {
    /// Both users exist and no block stands between them.
    async fn check_pair(
        tx: &mut sqlx::PgConnection,
        a: UserId,
        b: UserId,
        block_refuses: bool,
    ) -> Result<(), StoreError> {
        // Writes between the same two users run one at a time: a follow checked against
        // "no block" cannot commit beside a block of the same pair.
        sqlx::query!(
            r#"SELECT 1 AS "locked!" FROM pg_advisory_xact_lock($1)"#,
            crate::write::pair_lock_key(a, b)
        )
        .fetch_one(&mut *tx)
        .await?;
        let row = sqlx::query!(
            r#"SELECT
                 (SELECT count(*) FROM users WHERE id = ANY($1)) AS "users!",
                 EXISTS (SELECT 1 FROM blocks
                         WHERE (blocker_id = $2 AND blocked_id = $3)
                            OR (blocker_id = $3 AND blocked_id = $2)) AS "blocked!""#,
            &[a.0, b.0],
            a.0,
            b.0
        )
        .fetch_one(&mut *tx)
        .await?;
        if row.users != 2 {
            return Err(StoreError::NotFound);
        }
        if block_refuses && row.blocked {
            // As a profile hidden by a block is: not found (a different answer would
            // tell the blocked user of the block).
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Records an outbox event in the write's transaction.
    async fn event(tx: &mut sqlx::PgConnection, event: &Event) -> Result<(), StoreError> {
        sqlx::query!(
            "INSERT INTO outbox (kind, payload) VALUES ($1, $2)",
            event.kind().as_str(),
            event.payload()
        )
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl GraphWrites for PgStore {
    async fn follow(&self, follower: UserId, followee: UserId) -> Result<Written, StoreError> {
        not_self(follower, followee, "you cannot follow yourself")?;
        let mut tx = self.pool.begin().await?;
        Self::check_pair(&mut tx, follower, followee, true).await?;
        let n = sqlx::query!(
            "INSERT INTO follows (follower_id, followee_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            follower.0,
            followee.0
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(Written::Unchanged);
        }
        let follows = sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM follows WHERE follower_id = $1"#,
            follower.0
        )
        .fetch_one(&mut *tx)
        .await?;
        if follows > crate::write::MAX_FOLLOWS {
            return Err(StoreError::Refused(crate::write::TOO_MANY_FOLLOWS));
        }
        // A post of the followee being created waits for this follow (or this waits for
        // it), so the post either is seen by the backfill below or its fan-out sees this
        // follow.
        sqlx::query!(
            r#"SELECT 1 AS "locked!" FROM users WHERE id = $1 FOR SHARE"#,
            followee.0
        )
        .fetch_one(&mut *tx)
        .await?;
        // Keep the follower's timeline the newest contiguous part of their feed: the new
        // author's posts newer than its oldest entry join it; older ones are read by merge.
        sqlx::query!(
            "INSERT INTO home_timeline (user_id, created_at, post_id, author_id)
             SELECT $1, p.created_at, p.id, p.author_id
             FROM posts p,
                  (SELECT created_at, post_id FROM home_timeline WHERE user_id = $1
                   ORDER BY created_at, post_id LIMIT 1) oldest
             WHERE p.author_id = $2 AND (p.created_at, p.id) > (oldest.created_at, oldest.post_id)
             -- A post deleted meanwhile is skipped, not a foreign-key failure.
             FOR SHARE OF p
             ON CONFLICT DO NOTHING",
            follower.0,
            followee.0
        )
        .execute(&mut *tx)
        .await?;
        Self::event(&mut tx, &Event::UserFollowed { follower, followee }).await?;
        tx.commit().await?;
        Ok(Written::Changed)
    }

    async fn unfollow(&self, follower: UserId, followee: UserId) -> Result<Written, StoreError> {
        not_self(follower, followee, "you cannot unfollow yourself")?;
        let mut tx = self.pool.begin().await?;
        Self::check_pair(&mut tx, follower, followee, false).await?;
        let n = sqlx::query!(
            "DELETE FROM follows WHERE follower_id = $1 AND followee_id = $2",
            follower.0,
            followee.0
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(Written::Unchanged);
        }
        sqlx::query!(
            "DELETE FROM home_timeline WHERE user_id = $1 AND author_id = $2",
            follower.0,
            followee.0
        )
        .execute(&mut *tx)
        .await?;
        Self::event(&mut tx, &Event::UserUnfollowed { follower, followee }).await?;
        tx.commit().await?;
        Ok(Written::Changed)
    }

    async fn block(&self, blocker: UserId, blocked: UserId) -> Result<Written, StoreError> {
        not_self(blocker, blocked, "you cannot block yourself")?;
        let mut tx = self.pool.begin().await?;
        Self::check_pair(&mut tx, blocker, blocked, false).await?;
        let n = sqlx::query!(
            "INSERT INTO blocks (blocker_id, blocked_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            blocker.0,
            blocked.0
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(Written::Unchanged);
        }
        sqlx::query!(
            "DELETE FROM follows
             WHERE (follower_id = $1 AND followee_id = $2) OR (follower_id = $2 AND followee_id = $1)",
            blocker.0,
            blocked.0
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "DELETE FROM home_timeline
             WHERE (user_id = $1 AND author_id = $2) OR (user_id = $2 AND author_id = $1)",
            blocker.0,
            blocked.0
        )
        .execute(&mut *tx)
        .await?;
        Self::event(&mut tx, &Event::UserBlocked { blocker, blocked }).await?;
        tx.commit().await?;
        Ok(Written::Changed)
    }

    async fn unblock(&self, blocker: UserId, blocked: UserId) -> Result<Written, StoreError> {
        not_self(blocker, blocked, "you cannot unblock yourself")?;
        let mut tx = self.pool.begin().await?;
        Self::check_pair(&mut tx, blocker, blocked, false).await?;
        let n = sqlx::query!(
            "DELETE FROM blocks WHERE blocker_id = $1 AND blocked_id = $2",
            blocker.0,
            blocked.0
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(Written::Unchanged);
        }
        Self::event(&mut tx, &Event::UserUnblocked { blocker, blocked }).await?;
        tx.commit().await?;
        Ok(Written::Changed)
    }
}

#[async_trait]
impl PostWrites for PgStore {
    async fn create_post(&self, author: UserId, post: &NewPost) -> Result<Post, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Conflicts with a follow of this author in progress (see `follow`).
        sqlx::query!(
            r#"SELECT 1 AS "exists!" FROM users WHERE id = $1 FOR NO KEY UPDATE"#,
            author.0
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let wish = post.wish.as_ref();
        let row = sqlx::query!(
            "INSERT INTO posts (author_id, kind, body, price_cents, currency, product_url)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, created_at",
            author.0,
            post.kind.as_str(),
            post.body,
            wish.map(|w| w.price.amount_cents),
            wish.map(|w| w.price.currency.as_str().to_owned()),
            wish.map(|w| w.product_url.clone())
        )
        .fetch_one(&mut *tx)
        .await?;
        let m = &post.media;
        sqlx::query!(
            "INSERT INTO media (post_id, kind, url, width, height, size_bytes, position)
             SELECT $1, k, u, w, h, s, p
             FROM UNNEST($2::text[], $3::text[], $4::int[], $5::int[], $6::bigint[], $7::smallint[])
               AS t(k, u, w, h, s, p)",
            row.id,
            &m.iter()
                .map(|x| x.kind.as_str().to_owned())
                .collect::<Vec<_>>(),
            &m.iter().map(|x| x.url.clone()).collect::<Vec<_>>(),
            &m.iter().map(|x| x.width).collect::<Vec<_>>(),
            &m.iter().map(|x| x.height).collect::<Vec<_>>(),
            &m.iter().map(|x| x.size_bytes).collect::<Vec<_>>(),
            &(0..m.len() as i16).collect::<Vec<_>>()
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "INSERT INTO post_tags (post_id, tag) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
            row.id,
            &post.tags
        )
        .execute(&mut *tx)
        .await?;
        // The author's own timeline now (read your writes); followers' by the fan-out
        // of `post.created`.
        sqlx::query!(
            "INSERT INTO home_timeline (user_id, created_at, post_id, author_id)
             VALUES ($1, $2, $3, $1) ON CONFLICT DO NOTHING",
            author.0,
            row.created_at,
            row.id
        )
        .execute(&mut *tx)
        .await?;
        let id = PostId(row.id);
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
            created_at: row.created_at,
        })
    }

    async fn delete_post(&self, author: UserId, id: PostId) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let owner =
            sqlx::query_scalar!("SELECT author_id FROM posts WHERE id = $1 FOR UPDATE", id.0)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound)?;
        if owner != author.0 {
            return Err(StoreError::NotYours("the post belongs to another user"));
        }
        let ordered = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM order_items WHERE post_id = $1) AS "ordered!""#,
            id.0
        )
        .fetch_one(&mut *tx)
        .await?;
        if ordered {
            return Err(StoreError::Refused(
                "a wish that has been ordered cannot be deleted",
            ));
        }
        // Media, tags and timeline entries go with it (ON DELETE CASCADE).
        sqlx::query!("DELETE FROM posts WHERE id = $1", id.0)
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
impl OrderWrites for PgStore {
    async fn create_order(
        &self,
        customer: UserId,
        key: &str,
        fingerprint: &str,
        lines: &[(PostId, i32)],
    ) -> Result<Placed, StoreError> {
        let mut tx = self.pool.begin().await?;
        // A concurrent request with the same key waits here until the first commits.
        let fresh = sqlx::query_scalar!(
            r#"INSERT INTO idempotency_keys (user_id, key, fingerprint) VALUES ($1, $2, $3)
               ON CONFLICT DO NOTHING RETURNING true AS "fresh!""#,
            customer.0,
            key,
            fingerprint
        )
        .fetch_optional(&mut *tx)
        .await?;
        if fresh.is_none() {
            let first = sqlx::query!(
                "SELECT fingerprint, order_id FROM idempotency_keys WHERE user_id = $1 AND key = $2",
                customer.0,
                key
            )
            .fetch_optional(&mut *tx)
            .await?;
            return match first {
                Some(f) if f.fingerprint != fingerprint => Err(StoreError::KeyReused),
                Some(f) => Ok(Placed {
                    order: OrderId(f.order_id.ok_or(StoreError::KeyReused)?),
                    replayed: true,
                }),
                None => Err(StoreError::KeyReused),
            };
        }
        let ids: Vec<i64> = lines.iter().map(|(p, _)| p.0).collect();
        // Locked so a wish cannot be deleted (or repriced) while it is being ordered.
        let found = sqlx::query!(
            "SELECT p.id, p.author_id, p.kind, p.price_cents, p.currency
             FROM posts p
             WHERE p.id = ANY($1)
               AND NOT EXISTS (SELECT 1 FROM blocks b
                               WHERE (b.blocker_id = p.author_id AND b.blocked_id = $2)
                                  OR (b.blocker_id = $2 AND b.blocked_id = p.author_id))
             FOR SHARE OF p",
            &ids,
            customer.0
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| (r.id, (r.author_id, r.kind, r.price_cents, r.currency)))
        .collect();
        let (total, currency, priced) = price_lines(customer, lines, &found)?;
        let order = sqlx::query_scalar!(
            "INSERT INTO orders (customer_id, status, total_cents, currency)
             VALUES ($1, 'pending', $2, $3) RETURNING id",
            customer.0,
            total,
            currency
        )
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query!(
            "INSERT INTO order_items (order_id, post_id, quantity, unit_price_cents, currency)
             SELECT $1, p, q, u, $5 FROM UNNEST($2::bigint[], $3::int[], $4::bigint[]) AS t(p, q, u)",
            order,
            &priced.iter().map(|l| l.0).collect::<Vec<_>>(),
            &priced.iter().map(|l| l.2).collect::<Vec<_>>(),
            &priced.iter().map(|l| l.3).collect::<Vec<_>>(),
            currency
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "UPDATE idempotency_keys SET order_id = $3 WHERE user_id = $1 AND key = $2",
            customer.0,
            key,
            order
        )
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

/// A PostgreSQL claim: the transaction holding the rows' locks.
struct PgClaim(sqlx::Transaction<'static, sqlx::Postgres>);

#[async_trait]
impl ClaimTx for PgClaim {
    async fn finish(
        self: Box<Self>,
        published: &[i64],
        failed: &[(i64, String)],
    ) -> Result<(), StoreError> {
        let mut tx = self.0;
        if !published.is_empty() {
            sqlx::query!(
                "UPDATE outbox SET published_at = now() WHERE id = ANY($1)",
                published
            )
            .execute(&mut *tx)
            .await?;
        }
        if !failed.is_empty() {
            let (ids, errors): (Vec<i64>, Vec<String>) = failed.iter().cloned().unzip();
            sqlx::query!(
                "UPDATE outbox SET published_at = now(), failed_at = now(), error = f.error
                 FROM unnest($1::bigint[], $2::text[]) AS f(id, error)
                 WHERE outbox.id = f.id",
                &ids,
                &errors
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn release(self: Box<Self>) -> Result<(), StoreError> {
        self.0.rollback().await?;
        Ok(())
    }
}

#[async_trait]
impl Outbox for PgStore {
    async fn claim(&self, limit: u32) -> Result<Claim, StoreError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query!(
            "SELECT id, kind, payload, created_at FROM outbox
             WHERE published_at IS NULL
             ORDER BY id
             LIMIT $1
             FOR UPDATE SKIP LOCKED",
            i64::from(limit)
        )
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(Claim {
                events: Vec::new(),
                tx: None,
            });
        }
        let events = rows
            .into_iter()
            .map(|r| {
                Ok(OutboxEvent {
                    id: EventId(r.id),
                    kind: parse("event kind", &r.kind)?,
                    payload: r.payload,
                    created_at: r.created_at,
                    published_at: None,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Claim {
            events,
            tx: Some(Box::new(PgClaim(tx))),
        })
    }

    async fn backlog(&self) -> Result<Backlog, StoreError> {
        let row = sqlx::query!(
            r#"SELECT count(*) AS "n!", min(created_at) AS oldest
               FROM outbox WHERE published_at IS NULL"#
        )
        .fetch_one(&mut *self.conn().await?)
        .await?;
        Ok(Backlog {
            unpublished: row.n as u64,
            oldest: row.oldest,
        })
    }

    async fn prune(&self, r: &Retention, after: UserId) -> Result<Pruned, StoreError> {
        let age = |d: std::time::Duration| {
            chrono::Utc::now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
        };
        let rows = i64::from(r.rows_per_step.max(1));
        let mut conn = self.conn().await?;
        let outbox = sqlx::query!(
            "DELETE FROM outbox WHERE id IN (
                 SELECT id FROM outbox
                 WHERE published_at < $1 AND failed_at IS NULL
                 ORDER BY id LIMIT $2)",
            age(r.outbox),
            rows
        )
        .execute(&mut *conn)
        .await?
        .rows_affected();
        let idempotency_keys = sqlx::query!(
            "DELETE FROM idempotency_keys WHERE (user_id, key) IN (
                 SELECT user_id, key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)",
            age(r.idempotency_keys),
            rows
        )
        .execute(&mut *conn)
        .await?
        .rows_affected();
        let notifications = sqlx::query!(
            "DELETE FROM notifications WHERE id IN (
                 SELECT id FROM notifications WHERE created_at < $1 LIMIT $2)",
            age(r.notifications),
            rows
        )
        .execute(&mut *conn)
        .await?
        .rows_affected();
        // Each user's entries past the `depth`-th newest, found by an index scan of at
        // most `depth + 1` entries per user.
        let trimmed = sqlx::query!(
            r#"WITH u AS (SELECT id FROM users WHERE id > $1 ORDER BY id LIMIT $2),
                    d AS (DELETE FROM home_timeline h
                          USING u CROSS JOIN LATERAL (
                              SELECT created_at, post_id FROM home_timeline
                              WHERE user_id = u.id
                              ORDER BY created_at DESC, post_id DESC
                              OFFSET $3 LIMIT 1) cut
                          WHERE h.user_id = u.id
                            AND (h.created_at, h.post_id) <= (cut.created_at, cut.post_id)
                          RETURNING 1)
               SELECT (SELECT count(*) FROM d) AS "entries!", (SELECT max(id) FROM u) AS last"#,
            after.0,
            i64::from(r.users_per_step.max(1)),
            i64::from(r.timeline_depth)
        )
        .fetch_one(&mut *conn)
        .await?;
        Ok(Pruned {
            outbox,
            idempotency_keys,
            notifications,
            timeline_entries: trimmed.entries as u64,
            next_user: trimmed.last.map(UserId),
        })
    }
}

#[async_trait]
impl Effects for PgStore {
    async fn ready(&self) -> Result<(), StoreError> {
        Store::ping(self).await
    }

    async fn notify(&self, notes: &[NewNotification]) -> Result<u64, StoreError> {
        if notes.is_empty() {
            return Ok(0);
        }
        // References that vanished meanwhile become NULL (as ON DELETE SET NULL would
        // have made them); recipients that vanished get nothing.
        let n = sqlx::query!(
            "INSERT INTO notifications (user_id, kind, actor_id, post_id, order_id, event_key)
             SELECT t.u, t.k,
                    (SELECT id FROM users WHERE id = t.a),
                    (SELECT id FROM posts WHERE id = t.p),
                    (SELECT id FROM orders WHERE id = t.o),
                    t.e
             FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[])
               AS t(u, k, a, p, o, e)
             WHERE EXISTS (SELECT 1 FROM users WHERE id = t.u)
             ON CONFLICT DO NOTHING",
            &notes.iter().map(|n| n.user_id.0).collect::<Vec<_>>(),
            &notes
                .iter()
                .map(|n| n.kind.as_str().to_owned())
                .collect::<Vec<_>>(),
            &notes
                .iter()
                .map(|n| n.actor_id.map(|u| u.0))
                .collect::<Vec<_>>() as &[Option<i64>],
            &notes
                .iter()
                .map(|n| n.post_id.map(|p| p.0))
                .collect::<Vec<_>>() as &[Option<i64>],
            &notes
                .iter()
                .map(|n| n.order_id.map(|o| o.0))
                .collect::<Vec<_>>() as &[Option<i64>],
            &notes.iter().map(|n| n.key.clone()).collect::<Vec<_>>()
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    async fn fan_out(&self, post: PostId, batch: u32) -> Result<Vec<UserId>, StoreError> {
        let batch = i64::from(batch.max(1));
        let mut after = 0_i64;
        let mut holders = Vec::new();
        loop {
            // One statement, one transaction per batch: the post and the follow rows read
            // are locked, so a delete or an unfollow either waits for this batch (and then
            // removes what it wrote) or has happened (and this batch skips it). A post
            // older than a follower's oldest entry (a late or repeated delivery) is not
            // written there: the timeline stays the newest contiguous part of the feed,
            // and merge-at-read serves what is older.
            let row = sqlx::query!(
                r#"WITH p AS (SELECT id, author_id, created_at FROM posts WHERE id = $1 FOR SHARE),
                   f AS (SELECT follower_id FROM follows
                         WHERE followee_id = (SELECT author_id FROM p) AND follower_id > $2
                         ORDER BY follower_id
                         LIMIT $3
                         FOR SHARE),
                   ins AS (INSERT INTO home_timeline (user_id, created_at, post_id, author_id)
                           SELECT f.follower_id, p.created_at, p.id, p.author_id
                           FROM f CROSS JOIN p
                           LEFT JOIN LATERAL (SELECT o.created_at, o.post_id FROM home_timeline o
                                              WHERE o.user_id = f.follower_id
                                              ORDER BY o.created_at, o.post_id LIMIT 1) oldest ON true
                           WHERE oldest.post_id IS NULL
                              OR (oldest.created_at, oldest.post_id) < (p.created_at, p.id)
                           ON CONFLICT DO NOTHING)
                   SELECT ARRAY(SELECT follower_id FROM f ORDER BY follower_id) AS "holders!""#,
                post.0,
                after,
                batch
            )
            .fetch_one(&self.pool)
            .await?;
            // The INSERT runs to completion though nothing reads it (PostgreSQL runs
            // data-modifying CTEs exactly once, whatever the outer query uses).
            let full = row.holders.len() as i64 == batch;
            let last = row.holders.last().copied();
            holders.extend(row.holders.into_iter().map(UserId));
            match last {
                Some(last) if full => after = last,
                _ => return Ok(holders),
            }
        }
    }
}
