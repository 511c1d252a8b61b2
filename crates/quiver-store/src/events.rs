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
    async fn finish(self: Box<Self>, published: &[i64]) -> Result<(), StoreError>;
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
        let ids: Vec<i64> = ids.iter().map(|i| i.0).collect();
        match self.tx {
            Some(tx) => tx.finish(&ids).await,
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
    /// keeps no entry: each batch locks the post and the follow rows it reads.
    async fn fan_out(&self, post: PostId, batch: u32) -> Result<Vec<UserId>, StoreError>;
}
