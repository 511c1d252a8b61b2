//! The reads of `PgStore`: one statement per batch or page.

use super::{PgStore, ids};
use crate::keyset::{fetch_len, into_page, page_of, start_of};
use crate::rows::{
    FlagsRow, FollowRow, MediaRow, NotificationRow, OrderItemRow, OrderRow, PostRow, RefRow,
    TagRow, UserRow, group, keyed,
};
use crate::{PoolStats, Store, StoreError};
use async_trait::async_trait;
use quiver_model::{
    Cursor, Follow, FollowEdge, Media, Notification, Order, OrderId, OrderItem, OrderRef,
    OrderStatus, Page, Post, PostId, PostList, PostRef, User, UserFlags, UserId, ViewerGraph,
    dedup_keys,
};
use std::collections::HashMap;

#[async_trait]
impl Store for PgStore {
    async fn users(&self, keys: &[UserId]) -> Result<HashMap<UserId, User>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<UserRow> = sqlx::query_as!(
            UserRow,
            "SELECT id, handle, display_name, bio, avatar_url, created_at
             FROM users WHERE id = ANY($1)",
            &ids(keys)
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        keyed(rows, UserRow::entity)
    }

    async fn user_flags(&self, keys: &[UserId]) -> Result<HashMap<UserId, UserFlags>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query_as!(
            FlagsRow,
            "SELECT id, verified, creator, private FROM users WHERE id = ANY($1)",
            &ids(keys)
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        keyed(rows, FlagsRow::entity)
    }

    async fn posts(&self, keys: &[PostId]) -> Result<HashMap<PostId, Post>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<PostRow> = sqlx::query_as!(
            PostRow,
            "SELECT id, author_id, kind, body, price_cents, currency, product_url, created_at
             FROM posts WHERE id = ANY($1)",
            &ids(keys)
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        keyed(rows, PostRow::entity)
    }

    async fn media_by_post(
        &self,
        keys: &[PostId],
    ) -> Result<HashMap<PostId, Vec<Media>>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query_as!(
            MediaRow,
            "SELECT id, post_id, kind, url, width, height, size_bytes, position
             FROM media WHERE post_id = ANY($1) ORDER BY post_id, position",
            &ids(keys)
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        group(rows.into_iter().map(MediaRow::entity))
    }

    async fn tags_by_post(
        &self,
        keys: &[PostId],
    ) -> Result<HashMap<PostId, Vec<String>>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query_as!(
            TagRow,
            "SELECT post_id, tag FROM post_tags WHERE post_id = ANY($1) ORDER BY post_id, tag",
            &ids(keys)
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        group(rows.into_iter().map(TagRow::entity))
    }

    async fn orders(&self, keys: &[OrderId]) -> Result<HashMap<OrderId, Order>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<OrderRow> = sqlx::query_as!(
            OrderRow,
            "SELECT id, customer_id, status, total_cents, currency, created_at, updated_at
             FROM orders WHERE id = ANY($1)",
            &ids(keys)
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        keyed(rows, OrderRow::entity)
    }

    async fn order_items(
        &self,
        keys: &[OrderId],
    ) -> Result<HashMap<OrderId, Vec<OrderItem>>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query_as!(
            OrderItemRow,
            "SELECT order_id, post_id, quantity, unit_price_cents, currency
             FROM order_items WHERE order_id = ANY($1) ORDER BY order_id, post_id",
            &ids(keys)
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        group(rows.into_iter().map(OrderItemRow::entity))
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
        let rows: Vec<FollowRow> = sqlx::query_as!(
            FollowRow,
            "SELECT f.follower_id, f.followee_id, f.created_at
             FROM follows f
             JOIN UNNEST($1::bigint[], $2::bigint[]) AS k(follower_id, followee_id)
               USING (follower_id, followee_id)",
            &followers,
            &followees
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        keyed(rows, FollowRow::entity)
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

    async fn post_page(
        &self,
        list: PostList,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<PostRef>, StoreError> {
        match list {
            PostList::Home(viewer) => self.home_page(viewer, after, limit).await,
            PostList::Author(user) => self.user_posts(user, after, limit).await,
            PostList::Recent => self.recent_posts(after, limit).await,
        }
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
        let rows: Vec<NotificationRow> = sqlx::query_as!(
            NotificationRow,
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
            .map(NotificationRow::entity)
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(into_page(rows, limit))
    }

    fn pool_stats(&self) -> PoolStats {
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
}
