//! The outbox and the effects on SQLite. One process serves a SQLite file, so its one
//! relay claims without holding locks, and each fan-out batch is one write transaction.

use super::{SqliteStore, to_micros};
use crate::events::{
    Backlog, Claim, ClaimTx, Effects, FanOut, NewNotification, Outbox, Pruned, Retention,
};
use crate::rows::{Micros, OutboxRow, Stamp};
use crate::{Store, StoreError};
use async_trait::async_trait;
use chrono::Utc;
use quiver_model::{PostId, UserId};
use sqlx::SqlitePool;

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
        let rows: Vec<OutboxRow<Micros>> = sqlx::query_as(
            "SELECT id, kind, payload, created_at, trace_context FROM outbox
             WHERE published_at IS NULL ORDER BY id LIMIT ?1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let events = rows
            .into_iter()
            .map(OutboxRow::entity)
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
            oldest: oldest.map(|t| Micros(t).time()).transpose()?,
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

    async fn fan_out(&self, post: PostId, plan: FanOut) -> Result<Vec<UserId>, StoreError> {
        // Promotes the author when past the threshold; skipped when the author was a
        // celebrity already, by another post than this one.
        let mut tx = self.write_tx().await?;
        let before: Option<(Option<i64>,)> = sqlx::query_as(
            "SELECT u.celebrity_from FROM users u JOIN posts p ON p.author_id = u.id
             WHERE p.id = ?1",
        )
        .bind(post.0)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((before,)) = before else {
            return Ok(Vec::new());
        };
        if before.is_some_and(|from| from != post.0) {
            return Ok(Vec::new());
        }
        sqlx::query(
            "UPDATE users SET celebrity_from = ?1
             WHERE id = (SELECT author_id FROM posts WHERE id = ?1) AND celebrity_from IS NULL
               AND (SELECT count(*) FROM (SELECT 1 FROM follows
                                          WHERE followee_id = users.id LIMIT ?2 + 1)) > ?2",
        )
        .bind(post.0)
        .bind(i64::from(plan.celebrity_followers))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let batch = i64::from(plan.batch.max(1));
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
