//! The reads of `PgStore`: the statements of [`ReadSql`], one per batch or page, checked
//! at compile time against the schema.

use super::PgStore;
use crate::read::{ReadSql, Span};
use crate::rows::{
    FlagsRow, FollowRow, MediaRow, NotificationRow, OrderItemRow, OrderRow, PostRow, RefRow,
    TagRow, UserRow,
};
use crate::{PoolStats, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use quiver_model::{OrderStatus, UserId, ViewerGraph};

/// Runs `$run` (a future over the connection `$c`) on a replica in rotation, or on the
/// primary when there is none or the replica failed in a way the primary can answer.
/// (A macro rather than a function over an async closure: the closure's future would
/// have to be `Send` for every lifetime, which async closures cannot yet promise.)
macro_rules! read {
    ($self:ident, |$c:ident| $run:expr) => {
        async {
            if let Some(replica) = $self.replicas.pick()
                && let Some(mut conn) = replica.conn().await
            {
                let $c = &mut *conn;
                match $run.await {
                    Ok(v) => {
                        replica.served();
                        return Ok(v);
                    }
                    Err(e) => {
                        if let Some(e) = replica.failed(e) {
                            return Err(e);
                        }
                    }
                }
            }
            let mut conn = $self.conn().await?;
            let $c = &mut *conn;
            Ok::<_, StoreError>($run.await?)
        }
        .await
    };
}

/// Every row of one compile-time-checked statement, on a replica or the primary.
macro_rules! rows {
    ($self:ident, $row:ident, $sql:literal $(, $arg:expr)* $(,)?) => {
        read!($self, |c| sqlx::query_as!($row, $sql $(, $arg)*).fetch_all(&mut *c))
    };
}

/// The viewer graph's one row (a named type: `read!` expands its statement twice).
struct GraphRow {
    followees: Vec<i64>,
    mutuals: Vec<i64>,
    blocked: Vec<i64>,
    blocked_by: Vec<i64>,
}

#[async_trait]
impl ReadSql for PgStore {
    type Stamp = DateTime<Utc>;

    async fn user_rows(&self, ids: &[i64]) -> Result<Vec<UserRow>, StoreError> {
        rows!(
            self,
            UserRow,
            "SELECT id, handle, display_name, bio, avatar_url, created_at
             FROM users WHERE id = ANY($1)",
            ids
        )
    }

    async fn flag_rows(&self, ids: &[i64]) -> Result<Vec<FlagsRow>, StoreError> {
        rows!(
            self,
            FlagsRow,
            "SELECT id, verified, creator, private FROM users WHERE id = ANY($1)",
            ids
        )
    }

    async fn post_rows(&self, ids: &[i64]) -> Result<Vec<PostRow>, StoreError> {
        rows!(
            self,
            PostRow,
            "SELECT id, author_id, kind, body, price_cents, currency, product_url, created_at
             FROM posts WHERE id = ANY($1)",
            ids
        )
    }

    async fn media_rows(&self, posts: &[i64]) -> Result<Vec<MediaRow>, StoreError> {
        rows!(
            self,
            MediaRow,
            "SELECT id, post_id, kind, url, width, height, size_bytes, position
             FROM media WHERE post_id = ANY($1) ORDER BY post_id, position",
            posts
        )
    }

    async fn tag_rows(&self, posts: &[i64]) -> Result<Vec<TagRow>, StoreError> {
        rows!(
            self,
            TagRow,
            "SELECT post_id, tag FROM post_tags WHERE post_id = ANY($1) ORDER BY post_id, tag",
            posts
        )
    }

    async fn order_rows(&self, ids: &[i64]) -> Result<Vec<OrderRow>, StoreError> {
        rows!(
            self,
            OrderRow,
            "SELECT id, customer_id, status, total_cents, currency, created_at, updated_at
             FROM orders WHERE id = ANY($1)",
            ids
        )
    }

    async fn order_item_rows(&self, orders: &[i64]) -> Result<Vec<OrderItemRow>, StoreError> {
        rows!(
            self,
            OrderItemRow,
            "SELECT order_id, post_id, quantity, unit_price_cents, currency
             FROM order_items WHERE order_id = ANY($1) ORDER BY order_id, post_id",
            orders
        )
    }

    async fn follow_rows(&self, pairs: &[(i64, i64)]) -> Result<Vec<FollowRow>, StoreError> {
        let (followers, followees): (Vec<i64>, Vec<i64>) = pairs.iter().copied().unzip();
        rows!(
            self,
            FollowRow,
            "SELECT f.follower_id, f.followee_id, f.created_at
             FROM follows f
             JOIN UNNEST($1::bigint[], $2::bigint[]) AS k(follower_id, followee_id)
               USING (follower_id, followee_id)",
            &followers,
            &followees
        )
    }

    async fn graph(&self, viewer: UserId) -> Result<ViewerGraph, StoreError> {
        let r = read!(self, |c| sqlx::query_as!(
            GraphRow,
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
        .fetch_one(&mut *c))?;
        Ok(ViewerGraph {
            viewer: Some(viewer),
            followees: r.followees.into_iter().map(UserId).collect(),
            mutuals: r.mutuals.into_iter().map(UserId).collect(),
            blocked: r.blocked.into_iter().map(UserId).collect(),
            blocked_by: r.blocked_by.into_iter().map(UserId).collect(),
        })
    }

    async fn timeline(&self, viewer: i64, w: Span) -> Result<Vec<RefRow>, StoreError> {
        rows!(
            self,
            RefRow,
            "SELECT post_id AS id, created_at FROM home_timeline
             WHERE user_id = $1 AND (created_at, post_id) < ($2, $3)
             ORDER BY created_at DESC, post_id DESC
             LIMIT $4",
            viewer,
            w.at,
            w.id,
            w.n
        )
    }

    async fn followed(&self, viewer: i64, w: Span) -> Result<Vec<RefRow>, StoreError> {
        rows!(
            self,
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
            viewer,
            w.at,
            w.id,
            w.n
        )
    }

    async fn celebrities(&self, viewer: i64) -> Result<Vec<i64>, StoreError> {
        // Celebrities are few: each is probed in the follows' primary key.
        read!(self, |c| {
            sqlx::query_scalar!(
            "SELECT u.id FROM users u
             WHERE u.celebrity_from IS NOT NULL
               AND EXISTS (SELECT 1 FROM follows f WHERE f.follower_id = $1 AND f.followee_id = u.id)
             ORDER BY u.id",
            viewer
        )
        .fetch_all(&mut *c)
        })
    }

    async fn by_authors(&self, authors: &[i64], w: Span) -> Result<Vec<RefRow>, StoreError> {
        // Top rows per author straight from `posts_by_author`, then the top of their union:
        // reads at most `n` index entries per author instead of every post of every author.
        rows!(
            self,
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
            authors,
            w.at,
            w.id,
            w.n
        )
    }

    async fn by_author(&self, author: i64, w: Span) -> Result<Vec<RefRow>, StoreError> {
        rows!(
            self,
            RefRow,
            "SELECT id, created_at FROM posts
             WHERE author_id = $1 AND (created_at, id) < ($2, $3)
             ORDER BY created_at DESC, id DESC
             LIMIT $4",
            author,
            w.at,
            w.id,
            w.n
        )
    }

    async fn recent(&self, w: Span) -> Result<Vec<RefRow>, StoreError> {
        rows!(
            self,
            RefRow,
            "SELECT id, created_at FROM posts
             WHERE (created_at, id) < ($1, $2)
             ORDER BY created_at DESC, id DESC
             LIMIT $3",
            w.at,
            w.id,
            w.n
        )
    }

    async fn order_refs(
        &self,
        customer: i64,
        status: Option<OrderStatus>,
        w: Span,
    ) -> Result<Vec<RefRow>, StoreError> {
        // Three statements on purpose: only a literal `status = 'active'` lets the planner
        // match the partial index in a prepared (generic) plan.
        match status {
            Some(OrderStatus::Active) => {
                rows!(
                    self,
                    RefRow,
                    "SELECT id, created_at FROM orders
                     WHERE customer_id = $1 AND status = 'active' AND (created_at, id) < ($2, $3)
                     ORDER BY created_at DESC, id DESC
                     LIMIT $4",
                    customer,
                    w.at,
                    w.id,
                    w.n
                )
            }
            Some(other) => {
                rows!(
                    self,
                    RefRow,
                    "SELECT id, created_at FROM orders
                     WHERE customer_id = $1 AND status = $5 AND (created_at, id) < ($2, $3)
                     ORDER BY created_at DESC, id DESC
                     LIMIT $4",
                    customer,
                    w.at,
                    w.id,
                    w.n,
                    other.as_str()
                )
            }
            None => rows!(
                self,
                RefRow,
                "SELECT id, created_at FROM orders
                     WHERE customer_id = $1 AND (created_at, id) < ($2, $3)
                     ORDER BY created_at DESC, id DESC
                     LIMIT $4",
                customer,
                w.at,
                w.id,
                w.n
            ),
        }
    }

    async fn notification_rows(
        &self,
        user: i64,
        w: Span,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        rows!(
            self,
            NotificationRow,
            "SELECT id, user_id, kind, actor_id, post_id, order_id, created_at, read_at
             FROM notifications
             WHERE user_id = $1 AND (created_at, id) < ($2, $3)
             ORDER BY created_at DESC, id DESC
             LIMIT $4",
            user,
            w.at,
            w.id,
            w.n
        )
    }

    async fn select_one(&self) -> Result<(), StoreError> {
        sqlx::query!("SELECT 1 AS one")
            .fetch_one(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    fn pool_figures(&self) -> PoolStats {
        let replicas = self.replicas();
        PoolStats {
            replicas: replicas.len() as u32,
            replicas_in_rotation: replicas.iter().filter(|r| r.in_rotation).count() as u32,
            replica_reads: replicas.iter().map(|r| r.reads).sum(),
            ..self.waits.stats(&self.pool)
        }
    }

    async fn close_pool(&self) {
        self.replicas.close().await;
        self.pool.close().await;
    }
}
