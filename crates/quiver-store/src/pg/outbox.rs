//! The outbox and the effects on PostgreSQL: claims hold their rows' locks
//! (`FOR UPDATE SKIP LOCKED`) until finished, so relays on many replicas share the work.

use super::PgStore;
use crate::events::{
    Backlog, Claim, ClaimTx, Effects, FanOut, NewNotification, Outbox, Pruned, Retention,
};
use crate::rows::OutboxRow;
use crate::{Store, StoreError};
use async_trait::async_trait;
use quiver_model::{PostId, UserId};

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
        let rows: Vec<OutboxRow> = sqlx::query_as!(
            OutboxRow,
            "SELECT id, kind, payload, created_at, trace_context FROM outbox
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
            .map(OutboxRow::entity)
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

    async fn replayed(&self) {
        PgStore::replayed(self).await;
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
        if n > 0 {
            self.replayed().await;
        }
        Ok(n)
    }

    async fn fan_out(&self, post: PostId, plan: FanOut) -> Result<Vec<UserId>, StoreError> {
        // Promotes the author when past the threshold (counting at most one follower
        // more than it); the outer query sees the row as it was before: skipped when
        // the author was a celebrity already, by another post than this one.
        let skip = sqlx::query_scalar!(
            r#"WITH p AS (SELECT author_id FROM posts WHERE id = $1),
               promoted AS (
                   UPDATE users SET celebrity_from = $1
                   WHERE id = (SELECT author_id FROM p) AND celebrity_from IS NULL
                     AND (SELECT count(*) FROM (SELECT 1 FROM follows
                                                WHERE followee_id = users.id
                                                LIMIT $2::bigint + 1) f) > $2::bigint
                   RETURNING id)
               SELECT u.celebrity_from IS NOT NULL AND u.celebrity_from <> $1 AS "skip!"
               FROM users u JOIN p ON u.id = p.author_id"#,
            post.0,
            i64::from(plan.celebrity_followers)
        )
        .fetch_optional(&self.pool)
        .await?;
        if skip != Some(false) {
            // A celebrity's post, or one deleted meanwhile: written nowhere.
            return Ok(Vec::new());
        }
        let batch = i64::from(plan.batch.max(1));
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
                _ => {
                    // The holders' timelines are invalidated next: replicas have them first.
                    self.replayed().await;
                    return Ok(holders);
                }
            }
        }
    }
}
