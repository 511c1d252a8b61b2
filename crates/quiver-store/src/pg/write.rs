//! The statements of the write flows on PostgreSQL (the flows themselves are in
//! `write/flow.rs`). Concurrent writes are ordered by row locks and a per-pair advisory
//! lock rather than by one writer at a time.

use super::PgStore;
use crate::StoreError;
use crate::write::{KeyUse, Pair, PricedLine, Transact, WishRow, WriteSql, pair_lock_key};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use quiver_model::{Event, NewMedia, NewPost, PostId, UserId};
use std::collections::HashMap;

/// A PostgreSQL write transaction; its commit returns once the read replicas have it.
#[derive(Debug)]
pub struct PgTx(sqlx::Transaction<'static, sqlx::Postgres>, PgStore);

#[async_trait]
impl Transact for PgStore {
    type Tx = PgTx;

    async fn begin(&self) -> Result<PgTx, StoreError> {
        Ok(PgTx(self.pool.begin().await?, self.clone()))
    }
}

#[async_trait]
impl WriteSql for PgTx {
    async fn pair(&mut self, a: UserId, b: UserId) -> Result<Pair, StoreError> {
        // Writes between the same two users run one at a time: a follow checked against
        // "no block" cannot commit beside a block of the same pair.
        sqlx::query!(
            r#"SELECT 1 AS "locked!" FROM pg_advisory_xact_lock($1)"#,
            pair_lock_key(a, b)
        )
        .fetch_one(&mut *self.0)
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
        .fetch_one(&mut *self.0)
        .await?;
        Ok(Pair {
            users: row.users,
            blocked: row.blocked,
        })
    }

    async fn insert_follow(
        &mut self,
        follower: UserId,
        followee: UserId,
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query!(
            "INSERT INTO follows (follower_id, followee_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            follower.0,
            followee.0
        )
        .execute(&mut *self.0)
        .await?
        .rows_affected())
    }

    async fn follow_count(&mut self, follower: UserId) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM follows WHERE follower_id = $1"#,
            follower.0
        )
        .fetch_one(&mut *self.0)
        .await?)
    }

    async fn backfill(&mut self, follower: UserId, followee: UserId) -> Result<(), StoreError> {
        // A post of the followee being created waits for this follow (or this waits for
        // it), so the post either is seen by the backfill below or its fan-out sees this
        // follow.
        sqlx::query!(
            r#"SELECT 1 AS "locked!" FROM users WHERE id = $1 FOR SHARE"#,
            followee.0
        )
        .fetch_one(&mut *self.0)
        .await?;
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
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn delete_follow(
        &mut self,
        follower: UserId,
        followee: UserId,
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query!(
            "DELETE FROM follows WHERE follower_id = $1 AND followee_id = $2",
            follower.0,
            followee.0
        )
        .execute(&mut *self.0)
        .await?
        .rows_affected())
    }

    async fn drop_author(&mut self, user: UserId, author: UserId) -> Result<(), StoreError> {
        sqlx::query!(
            "DELETE FROM home_timeline WHERE user_id = $1 AND author_id = $2",
            user.0,
            author.0
        )
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn insert_block(&mut self, blocker: UserId, blocked: UserId) -> Result<u64, StoreError> {
        Ok(sqlx::query!(
            "INSERT INTO blocks (blocker_id, blocked_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            blocker.0,
            blocked.0
        )
        .execute(&mut *self.0)
        .await?
        .rows_affected())
    }

    async fn sever(&mut self, a: UserId, b: UserId) -> Result<(), StoreError> {
        sqlx::query!(
            "DELETE FROM follows
             WHERE (follower_id = $1 AND followee_id = $2) OR (follower_id = $2 AND followee_id = $1)",
            a.0,
            b.0
        )
        .execute(&mut *self.0)
        .await?;
        sqlx::query!(
            "DELETE FROM home_timeline
             WHERE (user_id = $1 AND author_id = $2) OR (user_id = $2 AND author_id = $1)",
            a.0,
            b.0
        )
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn delete_block(&mut self, blocker: UserId, blocked: UserId) -> Result<u64, StoreError> {
        Ok(sqlx::query!(
            "DELETE FROM blocks WHERE blocker_id = $1 AND blocked_id = $2",
            blocker.0,
            blocked.0
        )
        .execute(&mut *self.0)
        .await?
        .rows_affected())
    }

    async fn lock_author(&mut self, author: UserId) -> Result<bool, StoreError> {
        // Conflicts with a follow of this author in progress (see `backfill`).
        Ok(sqlx::query!(
            r#"SELECT 1 AS "exists!" FROM users WHERE id = $1 FOR NO KEY UPDATE"#,
            author.0
        )
        .fetch_optional(&mut *self.0)
        .await?
        .is_some())
    }

    async fn insert_post(
        &mut self,
        author: UserId,
        post: &NewPost,
    ) -> Result<(i64, DateTime<Utc>), StoreError> {
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
        .fetch_one(&mut *self.0)
        .await?;
        Ok((row.id, row.created_at))
    }

    async fn insert_media(&mut self, post: i64, m: &[NewMedia]) -> Result<(), StoreError> {
        sqlx::query!(
            "INSERT INTO media (post_id, kind, url, width, height, size_bytes, position)
             SELECT $1, k, u, w, h, s, p
             FROM UNNEST($2::text[], $3::text[], $4::int[], $5::int[], $6::bigint[], $7::smallint[])
               AS t(k, u, w, h, s, p)",
            post,
            &m.iter()
                .map(|x| x.kind.as_str().to_owned())
                .collect::<Vec<_>>(),
            &m.iter().map(|x| x.url.clone()).collect::<Vec<_>>(),
            &m.iter().map(|x| x.width).collect::<Vec<_>>(),
            &m.iter().map(|x| x.height).collect::<Vec<_>>(),
            &m.iter().map(|x| x.size_bytes).collect::<Vec<_>>(),
            &(0..m.len() as i16).collect::<Vec<_>>()
        )
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn insert_tags(&mut self, post: i64, tags: &[String]) -> Result<(), StoreError> {
        sqlx::query!(
            "INSERT INTO post_tags (post_id, tag) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
            post,
            tags
        )
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn add_own(
        &mut self,
        author: UserId,
        post: i64,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "INSERT INTO home_timeline (user_id, created_at, post_id, author_id)
             VALUES ($1, $2, $3, $1) ON CONFLICT DO NOTHING",
            author.0,
            at,
            post
        )
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn post_to_delete(&mut self, id: PostId) -> Result<Option<(i64, bool)>, StoreError> {
        let Some(owner) =
            sqlx::query_scalar!("SELECT author_id FROM posts WHERE id = $1 FOR UPDATE", id.0)
                .fetch_optional(&mut *self.0)
                .await?
        else {
            return Ok(None);
        };
        let ordered = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM order_items WHERE post_id = $1) AS "ordered!""#,
            id.0
        )
        .fetch_one(&mut *self.0)
        .await?;
        Ok(Some((owner, ordered)))
    }

    async fn delete_post(&mut self, id: PostId) -> Result<(), StoreError> {
        // Media, tags and timeline entries go with it (ON DELETE CASCADE).
        sqlx::query!("DELETE FROM posts WHERE id = $1", id.0)
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
        // A concurrent request with the same key waits here until the first commits.
        let fresh = sqlx::query_scalar!(
            r#"INSERT INTO idempotency_keys (user_id, key, fingerprint) VALUES ($1, $2, $3)
               ON CONFLICT DO NOTHING RETURNING true AS "fresh!""#,
            customer.0,
            key,
            fingerprint
        )
        .fetch_optional(&mut *self.0)
        .await?;
        if fresh.is_some() {
            return Ok(KeyUse::Fresh);
        }
        let first = sqlx::query!(
            "SELECT fingerprint, order_id FROM idempotency_keys WHERE user_id = $1 AND key = $2",
            customer.0,
            key
        )
        .fetch_optional(&mut *self.0)
        .await?;
        Ok(KeyUse::Seen(first.map(|f| (f.fingerprint, f.order_id))))
    }

    async fn wishes(
        &mut self,
        ids: &[PostId],
        customer: UserId,
    ) -> Result<HashMap<i64, WishRow>, StoreError> {
        let ids: Vec<i64> = ids.iter().map(|p| p.0).collect();
        // Locked so a wish cannot be deleted (or repriced) while it is being ordered.
        Ok(sqlx::query!(
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
        .fetch_all(&mut *self.0)
        .await?
        .into_iter()
        .map(|r| (r.id, (r.author_id, r.kind, r.price_cents, r.currency)))
        .collect())
    }

    async fn insert_order(
        &mut self,
        customer: UserId,
        total: i64,
        currency: &str,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar!(
            "INSERT INTO orders (customer_id, status, total_cents, currency)
             VALUES ($1, 'pending', $2, $3) RETURNING id",
            customer.0,
            total,
            currency
        )
        .fetch_one(&mut *self.0)
        .await?)
    }

    async fn insert_items(
        &mut self,
        order: i64,
        priced: &[PricedLine],
        currency: &str,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "INSERT INTO order_items (order_id, post_id, quantity, unit_price_cents, currency)
             SELECT $1, p, q, u, $5 FROM UNNEST($2::bigint[], $3::int[], $4::bigint[]) AS t(p, q, u)",
            order,
            &priced.iter().map(|l| l.0).collect::<Vec<_>>(),
            &priced.iter().map(|l| l.2).collect::<Vec<_>>(),
            &priced.iter().map(|l| l.3).collect::<Vec<_>>(),
            currency
        )
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn bind_key(
        &mut self,
        customer: UserId,
        key: &str,
        order: i64,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE idempotency_keys SET order_id = $3 WHERE user_id = $1 AND key = $2",
            customer.0,
            key,
            order
        )
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn event(&mut self, event: &Event) -> Result<(), StoreError> {
        sqlx::query!(
            "INSERT INTO outbox (kind, payload, trace_context) VALUES ($1, $2, $3)",
            event.kind().as_str(),
            event.payload(),
            crate::write::trace_context()
        )
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn commit(self) -> Result<(), StoreError> {
        self.0.commit().await?;
        self.1.replayed().await;
        Ok(())
    }
}
