//! The reads of `SqliteStore`: one statement per batch or page, batches passed as JSON
//! arrays that `json_each` expands (SQLite has no arrays).

use super::{SqliteStore, json_ids, refs, to_micros};
use crate::keyset::{fetch_len, into_page, page_of, start_of};
use crate::rows::{
    FlagsRow, FollowRow, MediaRow, Micros, NotificationRow, OrderItemRow, OrderRow, PostRow,
    RefRow, TagRow, UserRow, group, keyed,
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
impl Store for SqliteStore {
    async fn users(&self, keys: &[UserId]) -> Result<HashMap<UserId, User>, StoreError> {
        let rows: Vec<UserRow<Micros>> = self
            .by_ids(
                "SELECT id, handle, display_name, bio, avatar_url, created_at
                 FROM users WHERE id IN (SELECT value FROM json_each(?1))",
                keys,
            )
            .await?;
        keyed(rows, UserRow::entity)
    }

    async fn user_flags(&self, keys: &[UserId]) -> Result<HashMap<UserId, UserFlags>, StoreError> {
        let rows: Vec<FlagsRow> = self
            .by_ids(
                "SELECT id, verified, creator, private
                 FROM users WHERE id IN (SELECT value FROM json_each(?1))",
                keys,
            )
            .await?;
        keyed(rows, FlagsRow::entity)
    }

    async fn posts(&self, keys: &[PostId]) -> Result<HashMap<PostId, Post>, StoreError> {
        let rows: Vec<PostRow<Micros>> = self
            .by_ids(
                "SELECT id, author_id, kind, body, price_cents, currency, product_url, created_at
                 FROM posts WHERE id IN (SELECT value FROM json_each(?1))",
                keys,
            )
            .await?;
        keyed(rows, PostRow::entity)
    }

    async fn media_by_post(
        &self,
        keys: &[PostId],
    ) -> Result<HashMap<PostId, Vec<Media>>, StoreError> {
        let rows: Vec<MediaRow> = self
            .by_ids(
                "SELECT id, post_id, kind, url, width, height, size_bytes, position
                 FROM media WHERE post_id IN (SELECT value FROM json_each(?1))
                 ORDER BY post_id, position",
                keys,
            )
            .await?;
        group(rows.into_iter().map(MediaRow::entity))
    }

    async fn tags_by_post(
        &self,
        keys: &[PostId],
    ) -> Result<HashMap<PostId, Vec<String>>, StoreError> {
        let rows: Vec<TagRow> = self
            .by_ids(
                "SELECT post_id, tag FROM post_tags
                 WHERE post_id IN (SELECT value FROM json_each(?1)) ORDER BY post_id, tag",
                keys,
            )
            .await?;
        group(rows.into_iter().map(TagRow::entity))
    }

    async fn orders(&self, keys: &[OrderId]) -> Result<HashMap<OrderId, Order>, StoreError> {
        let rows: Vec<OrderRow<Micros>> = self
            .by_ids(
                "SELECT id, customer_id, status, total_cents, currency, created_at, updated_at
                 FROM orders WHERE id IN (SELECT value FROM json_each(?1))",
                keys,
            )
            .await?;
        keyed(rows, OrderRow::entity)
    }

    async fn order_items(
        &self,
        keys: &[OrderId],
    ) -> Result<HashMap<OrderId, Vec<OrderItem>>, StoreError> {
        let rows: Vec<OrderItemRow> = self
            .by_ids(
                "SELECT order_id, post_id, quantity, unit_price_cents, currency FROM order_items
                 WHERE order_id IN (SELECT value FROM json_each(?1)) ORDER BY order_id, post_id",
                keys,
            )
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
        let pairs: Vec<[i64; 2]> = dedup_keys(edges)
            .into_iter()
            .map(|e| [e.follower.0, e.followee.0])
            .collect();
        let rows: Vec<FollowRow<Micros>> = sqlx::query_as(
            "SELECT follower_id, followee_id, created_at FROM follows
             WHERE (follower_id, followee_id) IN (
               SELECT value ->> 0, value ->> 1 FROM json_each(?1))",
        )
        .bind(serde_json::to_string(&pairs).expect("integers serialize"))
        .fetch_all(&mut *self.conn().await?)
        .await?;
        keyed(rows, FollowRow::entity)
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
        let rows: Vec<RefRow<Micros>> = sqlx::query_as(
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
        let n = fetch_len(limit)?;
        let (at, id) = start_of(after);
        let rows: Vec<NotificationRow<Micros>> = sqlx::query_as(
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
            .map(NotificationRow::entity)
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(into_page(rows, limit))
    }

    fn pool_stats(&self) -> PoolStats {
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

impl SqliteStore {
    async fn home_page(
        &self,
        viewer: UserId,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<PostRef>, StoreError> {
        let n = fetch_len(limit)?;
        let (at, id) = start_of(after);
        let rows: Vec<RefRow<Micros>> = sqlx::query_as(
            "SELECT post_id AS id, created_at FROM home_timeline
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
        let rows: Vec<RefRow<Micros>> = sqlx::query_as(
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
        let rows: Vec<RefRow<Micros>> = sqlx::query_as(
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
}
