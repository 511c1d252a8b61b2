//! The reads of `SqliteStore`: the statements of [`ReadSql`], one per batch or page,
//! batches passed as JSON arrays that `json_each` expands (SQLite has no arrays).

use super::{SqliteStore, json, to_micros};
use crate::read::{ReadSql, Span};
use crate::rows::{
    FlagsRow, FollowRow, MediaRow, Micros, NotificationRow, OrderItemRow, OrderRow, PostRow,
    RefRow, TagRow, UserRow,
};
use crate::{PoolStats, StoreError};
use async_trait::async_trait;
use quiver_model::{OrderStatus, UserId, ViewerGraph};
use sqlx::sqlite::SqliteRow;

#[async_trait]
impl ReadSql for SqliteStore {
    type Stamp = Micros;

    async fn user_rows(&self, ids: &[i64]) -> Result<Vec<UserRow<Micros>>, StoreError> {
        self.by_ids(
            "SELECT id, handle, display_name, bio, avatar_url, created_at
             FROM users WHERE id IN (SELECT value FROM json_each(?1))",
            ids,
        )
        .await
    }

    async fn flag_rows(&self, ids: &[i64]) -> Result<Vec<FlagsRow>, StoreError> {
        self.by_ids(
            "SELECT id, verified, creator, private
             FROM users WHERE id IN (SELECT value FROM json_each(?1))",
            ids,
        )
        .await
    }

    async fn post_rows(&self, ids: &[i64]) -> Result<Vec<PostRow<Micros>>, StoreError> {
        self.by_ids(
            "SELECT id, author_id, kind, body, price_cents, currency, product_url, created_at
             FROM posts WHERE id IN (SELECT value FROM json_each(?1))",
            ids,
        )
        .await
    }

    async fn media_rows(&self, posts: &[i64]) -> Result<Vec<MediaRow>, StoreError> {
        self.by_ids(
            "SELECT id, post_id, kind, url, width, height, size_bytes, position
             FROM media WHERE post_id IN (SELECT value FROM json_each(?1))
             ORDER BY post_id, position",
            posts,
        )
        .await
    }

    async fn tag_rows(&self, posts: &[i64]) -> Result<Vec<TagRow>, StoreError> {
        self.by_ids(
            "SELECT post_id, tag FROM post_tags
             WHERE post_id IN (SELECT value FROM json_each(?1)) ORDER BY post_id, tag",
            posts,
        )
        .await
    }

    async fn order_rows(&self, ids: &[i64]) -> Result<Vec<OrderRow<Micros>>, StoreError> {
        self.by_ids(
            "SELECT id, customer_id, status, total_cents, currency, created_at, updated_at
             FROM orders WHERE id IN (SELECT value FROM json_each(?1))",
            ids,
        )
        .await
    }

    async fn order_item_rows(&self, orders: &[i64]) -> Result<Vec<OrderItemRow>, StoreError> {
        self.by_ids(
            "SELECT order_id, post_id, quantity, unit_price_cents, currency FROM order_items
             WHERE order_id IN (SELECT value FROM json_each(?1)) ORDER BY order_id, post_id",
            orders,
        )
        .await
    }

    async fn follow_rows(
        &self,
        pairs: &[(i64, i64)],
    ) -> Result<Vec<FollowRow<Micros>>, StoreError> {
        self.by_ids(
            "SELECT follower_id, followee_id, created_at FROM follows
             WHERE (follower_id, followee_id) IN (
               SELECT value ->> 0, value ->> 1 FROM json_each(?1))",
            pairs,
        )
        .await
    }

    async fn graph(&self, viewer: UserId) -> Result<ViewerGraph, StoreError> {
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

    async fn timeline(&self, viewer: i64, w: Span) -> Result<Vec<RefRow<Micros>>, StoreError> {
        self.page(
            "SELECT post_id AS id, created_at FROM home_timeline
             WHERE user_id = ?1 AND (created_at, post_id) < (?2, ?3)
             ORDER BY created_at DESC, post_id DESC
             LIMIT ?4",
            Some(viewer),
            w,
        )
        .await
    }

    async fn followed(&self, viewer: i64, w: Span) -> Result<Vec<RefRow<Micros>>, StoreError> {
        let authors: Vec<i64> = sqlx::query_scalar(
            "SELECT ?1 UNION ALL SELECT followee_id FROM follows WHERE follower_id = ?1",
        )
        .bind(viewer)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        self.by_authors(&authors, w).await
    }

    async fn celebrities(&self, viewer: i64) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT u.id FROM users u
             WHERE u.celebrity_from IS NOT NULL
               AND EXISTS (SELECT 1 FROM follows f WHERE f.follower_id = ?1 AND f.followee_id = u.id)
             ORDER BY u.id",
        )
        .bind(viewer)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    async fn by_authors(
        &self,
        authors: &[i64],
        w: Span,
    ) -> Result<Vec<RefRow<Micros>>, StoreError> {
        // SQLite walks `posts_by_author` once per author for `IN (json_each)` and merges;
        // fine at embedded scale, where there is no materialized-timeline pressure.
        self.page(
            "SELECT id, created_at FROM posts
             WHERE author_id IN (SELECT value FROM json_each(?1))
               AND (created_at, id) < (?2, ?3)
             ORDER BY created_at DESC, id DESC
             LIMIT ?4",
            Some(json(authors)),
            w,
        )
        .await
    }

    async fn by_author(&self, author: i64, w: Span) -> Result<Vec<RefRow<Micros>>, StoreError> {
        self.page(
            "SELECT id, created_at FROM posts
             WHERE author_id = ?1 AND (created_at, id) < (?2, ?3)
             ORDER BY created_at DESC, id DESC
             LIMIT ?4",
            Some(author),
            w,
        )
        .await
    }

    async fn recent(&self, w: Span) -> Result<Vec<RefRow<Micros>>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, created_at FROM posts
             WHERE (created_at, id) < (?1, ?2)
             ORDER BY created_at DESC, id DESC
             LIMIT ?3",
        )
        .bind(to_micros(w.at))
        .bind(w.id)
        .bind(w.n)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    async fn order_refs(
        &self,
        customer: i64,
        status: Option<OrderStatus>,
        w: Span,
    ) -> Result<Vec<RefRow<Micros>>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, created_at FROM orders
             WHERE customer_id = ?1 AND (?5 IS NULL OR status = ?5)
               AND (created_at, id) < (?2, ?3)
             ORDER BY created_at DESC, id DESC
             LIMIT ?4",
        )
        .bind(customer)
        .bind(to_micros(w.at))
        .bind(w.id)
        .bind(w.n)
        .bind(status.map(OrderStatus::as_str))
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    async fn notification_rows(
        &self,
        user: i64,
        w: Span,
    ) -> Result<Vec<NotificationRow<Micros>>, StoreError> {
        self.page(
            "SELECT id, user_id, kind, actor_id, post_id, order_id, created_at, read_at
             FROM notifications
             WHERE user_id = ?1 AND (created_at, id) < (?2, ?3)
             ORDER BY created_at DESC, id DESC
             LIMIT ?4",
            Some(user),
            w,
        )
        .await
    }

    async fn select_one(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn pool_figures(&self) -> PoolStats {
        self.waits.stats(&self.pool)
    }

    async fn close_pool(&self) {
        self.pool.close().await;
    }
}

impl SqliteStore {
    /// The rows of `sql`, whose `?1` is `ids` as a JSON array.
    async fn by_ids<R, T>(&self, sql: &'static str, ids: &[T]) -> Result<Vec<R>, StoreError>
    where
        R: for<'r> sqlx::FromRow<'r, SqliteRow> + Send + Unpin,
        T: serde::Serialize + Sync,
    {
        Ok(sqlx::query_as(sql)
            .bind(json(ids))
            .fetch_all(&mut *self.conn().await?)
            .await?)
    }

    /// The rows of a page statement: `?1` is `first` (whose list), `?2`, `?3` the window's
    /// start and `?4` its length.
    async fn page<R, A>(&self, sql: &'static str, first: A, w: Span) -> Result<Vec<R>, StoreError>
    where
        R: for<'r> sqlx::FromRow<'r, SqliteRow> + Send + Unpin,
        A: for<'q> sqlx::Encode<'q, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + Send + 'static,
    {
        Ok(sqlx::query_as(sql)
            .bind(first)
            .bind(to_micros(w.at))
            .bind(w.id)
            .bind(w.n)
            .fetch_all(&mut *self.conn().await?)
            .await?)
    }
}
