//! The storage side of events: the outbox as a relay reads it (claim a batch, mark it
//! published), and the effects consumers have on the database (notifications, timeline
//! fan-out), each idempotent so that a redelivered event changes nothing.

use crate::StoreError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use quiver_model::{EventId, NotificationKind, OrderId, OutboxEvent, PostId, UserId};

/// Unpublished events and the age of the oldest, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Outbox rows not yet published.
    pub unpublished: u64,
    /// When the oldest of them was committed.
    pub oldest: Option<DateTime<Utc>>,
}

/// What finishes a claim: marks rows published and releases the claim.
#[async_trait]
pub(crate) trait ClaimTx: Send {
    /// Marks `published` published, and `failed` published as dead letters with their
    /// errors.
    async fn finish(
        self: Box<Self>,
        published: &[i64],
        failed: &[(i64, String)],
    ) -> Result<(), StoreError>;
    async fn release(self: Box<Self>) -> Result<(), StoreError>;
}

/// A batch of unpublished events held by one relay. On PostgreSQL the rows stay locked
/// (`FOR UPDATE SKIP LOCKED`) until [`Claim::published`] or [`Claim::release`], so relays
/// running at once never take the same rows. Dropping a claim also releases them
/// unpublished, but only once the pool has rolled the transaction back, a moment later.
pub struct Claim {
    pub(crate) events: Vec<OutboxEvent>,
    pub(crate) tx: Option<Box<dyn ClaimTx>>,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
}

impl Claim {
    /// The claimed events, oldest first.
    pub fn events(&self) -> &[OutboxEvent] {
        &self.events
    }

    /// Releases every row unpublished, at once (the transaction is rolled back before
    /// this returns).
    pub async fn release(self) -> Result<(), StoreError> {
        match self.tx {
            Some(tx) => tx.release().await,
            None => Ok(()),
        }
    }

    /// Marks `ids` (a subset of the claim) published and releases the claim; the rest
    /// stay unpublished for a later claim.
    pub async fn published(self, ids: &[EventId]) -> Result<(), StoreError> {
        self.finish(ids, &[]).await
    }

    /// Marks `published` published and `failed` as dead letters (out of the queue, kept
    /// with `failed_at` and their error for an operator), and releases the claim.
    pub async fn finish(
        self,
        published: &[EventId],
        failed: &[(EventId, String)],
    ) -> Result<(), StoreError> {
        let ids: Vec<i64> = published.iter().map(|i| i.0).collect();
        let failed: Vec<(i64, String)> = failed.iter().map(|(i, e)| (i.0, e.clone())).collect();
        match self.tx {
            Some(tx) => tx.finish(&ids, &failed).await,
            None => Ok(()),
        }
    }
}

/// The outbox, as the relay sees it.
#[async_trait]
pub trait Outbox: Send + Sync + std::fmt::Debug {
    /// Claims up to `limit` unpublished events, oldest first, skipping rows another relay
    /// holds.
    async fn claim(&self, limit: u32) -> Result<Claim, StoreError>;
    /// How many events wait, and since when.
    async fn backlog(&self) -> Result<Backlog, StoreError>;
    /// Housekeeping, in bounded steps (one call is one step; a replica calls it on a
    /// schedule): deletes published outbox rows (never dead letters), idempotency keys
    /// and notifications older than their retention, and trims the home timelines of
    /// the next `retention.users_per_step` users after `after` to `timeline_depth`
    /// entries. Safe to run on several replicas at once.
    async fn prune(&self, retention: &Retention, after: UserId) -> Result<Pruned, StoreError>;
}

/// How long what grows with use is kept (see [`Outbox::prune`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Published outbox rows (dead letters are kept).
    pub outbox: std::time::Duration,
    /// Idempotency keys of orders: a retry after this is a new order.
    pub idempotency_keys: std::time::Duration,
    /// Notifications.
    pub notifications: std::time::Duration,
    /// Entries kept in each home timeline (older pages are read by merge).
    pub timeline_depth: u32,
    /// Users whose timelines one step trims.
    pub users_per_step: u32,
    /// Rows of each table one step deletes at most.
    pub rows_per_step: u32,
}

impl Default for Retention {
    fn default() -> Self {
        let day = std::time::Duration::from_secs(24 * 3600);
        Self {
            outbox: day,
            idempotency_keys: day,
            notifications: 90 * day,
            timeline_depth: 800,
            users_per_step: 500,
            rows_per_step: 10_000,
        }
    }
}

/// What one [`Outbox::prune`] step removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub outbox: u64,
    pub idempotency_keys: u64,
    pub notifications: u64,
    pub timeline_entries: u64,
    /// Where the next step's timeline trimming starts (`None`: past the last user, so
    /// start over).
    pub next_user: Option<UserId>,
}

/// A notification an event causes. `key` names the effect (event, recipient, what): a
/// second insert with the same key does nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewNotification {
    pub key: String,
    pub user_id: UserId,
    pub kind: NotificationKind,
    pub actor_id: Option<UserId>,
    pub post_id: Option<PostId>,
    pub order_id: Option<OrderId>,
}

/// How [`Effects::fan_out`] writes a post into timelines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FanOut {
    /// Followers written per transaction.
    pub batch: u32,
    /// Authors with more followers than this are celebrities, merged at read time.
    pub celebrity_followers: u32,
}

impl FanOut {
    /// Batches of `batch`, with the default celebrity threshold.
    pub fn batches_of(batch: u32) -> Self {
        Self {
            batch,
            ..Self::default()
        }
    }
}

impl Default for FanOut {
    fn default() -> Self {
        Self {
            batch: 1000,
            celebrity_followers: 10_000,
        }
    }
}

/// What event consumers change in the database. Every method is idempotent.
#[async_trait]
pub trait Effects: Send + Sync + std::fmt::Debug {
    /// Inserts the notifications whose keys are new, in one transaction; returns how many
    /// were inserted.
    async fn notify(&self, notes: &[NewNotification]) -> Result<u64, StoreError>;
    /// Writes `post` into the home timeline of every current follower of its author,
    /// `batch` followers per transaction; returns those followers, ascending: everyone
    /// whose timeline holds the post now (written by this call or an earlier one), so
    /// their cached timelines can be forgotten, again on a redelivery. A post deleted
    /// meanwhile is written nowhere, and a follower who unfollows (or blocks) meanwhile
    /// keeps no entry: each batch locks the post and the follow rows it reads. A post
    /// older than a follower's oldest timeline entry (a late delivery) is not written
    /// there: the timeline stays the newest contiguous part of the feed.
    ///
    /// An author with more than `plan.celebrity_followers` followers becomes a celebrity
    /// (for good): the post that finds them so is still written (so its holders' cached
    /// heads are forgotten and learn of it), later ones are written nowhere and return no
    /// holders; home feeds merge celebrities' posts at read time.
    async fn fan_out(&self, post: PostId, plan: FanOut) -> Result<Vec<UserId>, StoreError>;
    /// Whether the database answers (event consumers wait for it after an outage).
    async fn ready(&self) -> Result<(), StoreError>;
    /// Returns once every read replica in rotation has replayed what is committed (or has
    /// left the rotation), so what an invalidation makes be loaded again is loaded fresh.
    async fn replayed(&self) {}
}
