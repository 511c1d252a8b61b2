//! The statements of the write flows on SQLite (the flows themselves are in
//! `write/flow.rs`). Every write transaction takes the write lock up front
//! (`BEGIN IMMEDIATE`), so writers run one at a time and need no other locking.

use super::{SqliteStore, json, to_micros};
use crate::StoreError;
use crate::rows::{Micros, Stamp};
use crate::write::{KeyUse, Pair, PricedLine, Transact, WishRow, WriteSql};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use quiver_model::{Event, NewMedia, NewPost, PostId, UserId};
use std::collections::HashMap;

/// A SQLite write transaction, holding the database's write lock.
#[derive(Debug)]
pub struct SqliteTx(sqlx::Transaction<'static, sqlx::Sqlite>);

#[async_trait]
impl Transact for SqliteStore {
    type Tx = SqliteTx;

    /// Takes the write lock up front, so two writers never deadlock upgrading read locks.
    async fn begin(&self) -> Result<SqliteTx, StoreError> {
        Ok(SqliteTx(self.write_tx().await?))
    }
}

impl SqliteTx {
    /// Runs `sql` over `?1` = `a` and `?2` = `b`; the rows it changed.
    async fn edge(&mut self, sql: &'static str, a: UserId, b: UserId) -> Result<u64, StoreError> {
        Ok(sqlx::query(sql)
            .bind(a.0)
            .bind(b.0)
            .execute(&mut *self.0)
            .await?
            .rows_affected())
    }
}

#[async_trait]
impl WriteSql for SqliteTx {
    async fn pair(&mut self, a: UserId, b: UserId) -> Result<Pair, StoreError> {
        let (users, blocked): (i64, bool) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM users WHERE id IN (?1, ?2)),
                    EXISTS (SELECT 1 FROM blocks
                            WHERE (blocker_id = ?1 AND blocked_id = ?2)
                               OR (blocker_id = ?2 AND blocked_id = ?1))",
        )
        .bind(a.0)
        .bind(b.0)
        .fetch_one(&mut *self.0)
        .await?;
        Ok(Pair { users, blocked })
    }

    async fn insert_follow(
        &mut self,
        follower: UserId,
        followee: UserId,
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "INSERT INTO follows (follower_id, followee_id, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
        )
        .bind(follower.0)
        .bind(followee.0)
        .bind(to_micros(Utc::now()))
        .execute(&mut *self.0)
        .await?
        .rows_affected())
    }

    async fn follow_count(&mut self, follower: UserId) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM follows WHERE follower_id = ?1")
                .bind(follower.0)
                .fetch_one(&mut *self.0)
                .await?,
        )
    }

    async fn backfill(&mut self, follower: UserId, followee: UserId) -> Result<(), StoreError> {
        let oldest: Option<(i64, i64)> = sqlx::query_as(
            "SELECT created_at, post_id FROM home_timeline WHERE user_id = ?1
             ORDER BY created_at, post_id LIMIT 1",
        )
        .bind(follower.0)
        .fetch_optional(&mut *self.0)
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
            .execute(&mut *self.0)
            .await?;
        }
        Ok(())
    }

    async fn delete_follow(
        &mut self,
        follower: UserId,
        followee: UserId,
    ) -> Result<u64, StoreError> {
        self.edge(
            "DELETE FROM follows WHERE follower_id = ?1 AND followee_id = ?2",
            follower,
            followee,
        )
        .await
    }

    async fn drop_author(&mut self, user: UserId, author: UserId) -> Result<(), StoreError> {
        self.edge(
            "DELETE FROM home_timeline WHERE user_id = ?1 AND author_id = ?2",
            user,
            author,
        )
        .await?;
        Ok(())
    }

    async fn insert_block(&mut self, blocker: UserId, blocked: UserId) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "INSERT INTO blocks (blocker_id, blocked_id, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
        )
        .bind(blocker.0)
        .bind(blocked.0)
        .bind(to_micros(Utc::now()))
        .execute(&mut *self.0)
        .await?
        .rows_affected())
    }

    async fn sever(&mut self, a: UserId, b: UserId) -> Result<(), StoreError> {
        self.edge(
            "DELETE FROM follows
             WHERE ((follower_id = ?1 AND followee_id = ?2)
                OR (follower_id = ?2 AND followee_id = ?1))",
            a,
            b,
        )
        .await?;
        self.edge(
            "DELETE FROM home_timeline
             WHERE ((user_id = ?1 AND author_id = ?2)
                OR (user_id = ?2 AND author_id = ?1))",
            a,
            b,
        )
        .await?;
        Ok(())
    }

    async fn delete_block(&mut self, blocker: UserId, blocked: UserId) -> Result<u64, StoreError> {
        self.edge(
            "DELETE FROM blocks WHERE blocker_id = ?1 AND blocked_id = ?2",
            blocker,
            blocked,
        )
        .await
    }

    async fn lock_author(&mut self, author: UserId) -> Result<bool, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = ?1)")
                .bind(author.0)
                .fetch_one(&mut *self.0)
                .await?,
        )
    }

    async fn insert_post(
        &mut self,
        author: UserId,
        post: &NewPost,
    ) -> Result<(i64, DateTime<Utc>), StoreError> {
        // Stored at microsecond precision; the post returned says exactly what was stored.
        let created_at = Micros::from(Utc::now());
        let wish = post.wish.as_ref();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO posts (author_id, kind, body, price_cents, currency, product_url, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
        )
        .bind(author.0)
        .bind(post.kind.as_str())
        .bind(&post.body)
        .bind(wish.map(|w| w.price.amount_cents))
        .bind(wish.map(|w| w.price.currency.as_str().to_owned()))
        .bind(wish.map(|w| w.product_url.clone()))
        .bind(created_at.0)
        .fetch_one(&mut *self.0)
        .await?;
        Ok((id, created_at.time()?))
    }

    async fn insert_media(&mut self, post: i64, media: &[NewMedia]) -> Result<(), StoreError> {
        for (position, m) in media.iter().enumerate() {
            sqlx::query(
                "INSERT INTO media (post_id, kind, url, width, height, size_bytes, position)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .bind(post)
            .bind(m.kind.as_str())
            .bind(&m.url)
            .bind(m.width)
            .bind(m.height)
            .bind(m.size_bytes)
            .bind(position as i64)
            .execute(&mut *self.0)
            .await?;
        }
        Ok(())
    }

    async fn insert_tags(&mut self, post: i64, tags: &[String]) -> Result<(), StoreError> {
        for tag in tags {
            sqlx::query(
                "INSERT INTO post_tags (post_id, tag) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            )
            .bind(post)
            .bind(tag)
            .execute(&mut *self.0)
            .await?;
        }
        Ok(())
    }

    async fn add_own(
        &mut self,
        author: UserId,
        post: i64,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO home_timeline (user_id, created_at, post_id, author_id)
             VALUES (?1, ?2, ?3, ?1) ON CONFLICT DO NOTHING",
        )
        .bind(author.0)
        .bind(to_micros(at))
        .bind(post)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn post_to_delete(&mut self, id: PostId) -> Result<Option<(i64, bool)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT author_id, EXISTS (SELECT 1 FROM order_items WHERE post_id = ?1)
             FROM posts WHERE id = ?1",
        )
        .bind(id.0)
        .fetch_optional(&mut *self.0)
        .await?)
    }

    async fn delete_post(&mut self, id: PostId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM posts WHERE id = ?1")
            .bind(id.0)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn claim_key(
        &mut self,
        customer: UserId,
        key: &str,
        fingerprint: &str,
    ) -> Result<KeyUse, StoreError> {
        // The write lock is held: requests with the same key run one after the other.
        let first: Option<(String, Option<i64>)> = sqlx::query_as(
            "SELECT fingerprint, order_id FROM idempotency_keys WHERE user_id = ?1 AND key = ?2",
        )
        .bind(customer.0)
        .bind(key)
        .fetch_optional(&mut *self.0)
        .await?;
        if first.is_some() {
            return Ok(KeyUse::Seen(first));
        }
        sqlx::query(
            "INSERT INTO idempotency_keys (user_id, key, fingerprint, created_at)
             VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(customer.0)
        .bind(key)
        .bind(fingerprint)
        .bind(to_micros(Utc::now()))
        .execute(&mut *self.0)
        .await?;
        Ok(KeyUse::Fresh)
    }

    async fn wishes(
        &mut self,
        ids: &[PostId],
        customer: UserId,
    ) -> Result<HashMap<i64, WishRow>, StoreError> {
        let rows: Vec<(i64, i64, String, Option<i64>, Option<String>)> = sqlx::query_as(
            "SELECT p.id, p.author_id, p.kind, p.price_cents, p.currency
             FROM posts p
             WHERE p.id IN (SELECT value FROM json_each(?1))
               AND NOT EXISTS (SELECT 1 FROM blocks b
                               WHERE (b.blocker_id = p.author_id AND b.blocked_id = ?2)
                                  OR (b.blocker_id = ?2 AND b.blocked_id = p.author_id))",
        )
        .bind(json(ids))
        .bind(customer.0)
        .fetch_all(&mut *self.0)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, author, kind, price, cur)| (id, (author, kind, price, cur)))
            .collect())
    }

    async fn insert_order(
        &mut self,
        customer: UserId,
        total: i64,
        currency: &str,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO orders (customer_id, status, total_cents, currency, created_at, updated_at)
             VALUES (?1, 'pending', ?2, ?3, ?4, ?4) RETURNING id",
        )
        .bind(customer.0)
        .bind(total)
        .bind(currency)
        .bind(to_micros(Utc::now()))
        .fetch_one(&mut *self.0)
        .await?)
    }

    async fn insert_items(
        &mut self,
        order: i64,
        priced: &[PricedLine],
        currency: &str,
    ) -> Result<(), StoreError> {
        for (post, _, quantity, price) in priced {
            sqlx::query(
                "INSERT INTO order_items (order_id, post_id, quantity, unit_price_cents, currency)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(order)
            .bind(post)
            .bind(quantity)
            .bind(price)
            .bind(currency)
            .execute(&mut *self.0)
            .await?;
        }
        Ok(())
    }

    async fn bind_key(
        &mut self,
        customer: UserId,
        key: &str,
        order: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE idempotency_keys SET order_id = ?3 WHERE user_id = ?1 AND key = ?2")
            .bind(customer.0)
            .bind(key)
            .bind(order)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn event(&mut self, event: &Event) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO outbox (kind, payload, created_at, trace_context) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(event.kind().as_str())
        .bind(event.payload().to_string())
        .bind(to_micros(Utc::now()))
        .bind(crate::write::trace_context())
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn commit(self) -> Result<(), StoreError> {
        Ok(self.0.commit().await?)
    }
}
