//! What an event does once it is delivered: [`Handler`] is the seam (consumers and the
//! in-process dispatcher call it; tests wrap it), [`EffectsHandler`] the real effects.
//! Every effect is idempotent, keyed by the event's outbox id, because delivery is at
//! least once.

use crate::EventsError;
use async_trait::async_trait;
use quiver_model::{Event, NotificationKind, OutboxEvent, PostId, UserId};
use quiver_store::events::{Effects, FanOut, NewNotification};
use std::sync::Arc;
use tracing::Instrument as _;

/// Handles one delivered event. `Ok` means its effects are done and it may be
/// acknowledged; an error leaves it to be delivered again.
#[async_trait]
pub trait Handler: Send + Sync {
    async fn handle(&self, event: &OutboxEvent) -> Result<(), EventsError>;

    /// Whether what the handler needs answers: consumers ask after an outage error and
    /// read nothing until it does.
    async fn ready(&self) -> Result<(), EventsError> {
        Ok(())
    }
}

/// `handler.handle(event)` with a panic caught and returned as
/// [`EventsError::Panicked`], so one bad event cannot stop the task that handles events.
pub(crate) async fn handle_caught(
    handler: &dyn Handler,
    event: &OutboxEvent,
) -> Result<(), EventsError> {
    use futures::FutureExt as _;
    // The writer's trace goes on here, on whichever process handles the event.
    let span = tracing::debug_span!(
        "handle",
        otel.kind = "consumer",
        event.id = event.id.0,
        event.kind = event.kind.as_str(),
    );
    crate::trace::continue_trace(&span, event.trace_context.as_deref());
    match std::panic::AssertUnwindSafe(handler.handle(event))
        .catch_unwind()
        .instrument(span)
        .await
    {
        Ok(done) => done,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_owned());
            Err(EventsError::Panicked(msg))
        }
    }
}

/// The cache invalidations events cause, implemented by whoever owns the caches (the
/// server composes its read stack's caches here). Each evicts everywhere: this process's
/// L1, the shared L2 and every other replica's L1.
#[async_trait]
pub trait Invalidate: Send + Sync + std::fmt::Debug {
    /// The edge between `a` and `b` changed: both viewer graphs, the follow edges
    /// between them and both home timelines (a follow backfills, an unfollow or a block
    /// removes).
    async fn edge(
        &self,
        a: UserId,
        b: UserId,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
    /// A post of `author` appeared or went: the post with its media and tags, and what
    /// lists it (the author's own posts, the recent posts).
    async fn post(
        &self,
        id: PostId,
        author: UserId,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
    /// The home timelines of `users` changed (a fan-out wrote into them).
    async fn timelines(
        &self,
        users: &[UserId],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// The effects of every event kind:
///
/// | event | effect |
/// | --- | --- |
/// | `post.created` | fan-out to followers' timelines (in batches; none for a celebrity, merged at read time); the post, the lists that show it and the timelines written invalidated |
/// | `post.deleted` | the post and the lists that show it invalidated (its timeline rows went with it) |
/// | `user.followed` | a `followed` notification; the edge (and both timelines) invalidated |
/// | `user.unfollowed`, `user.blocked`, `user.unblocked` | the edge (and both timelines) invalidated |
/// | `order.created` | `order_confirmed` for the buyer, `wish_bought` per wish for its owner |
#[derive(Debug, Clone)]
pub struct EffectsHandler {
    effects: Arc<dyn Effects>,
    invalidate: Option<Arc<dyn Invalidate>>,
    fan_out: FanOut,
}

impl EffectsHandler {
    /// Effects on `effects` (the database), invalidating through `invalidate` when the
    /// process has caches.
    pub fn new(
        effects: Arc<dyn Effects>,
        invalidate: Option<Arc<dyn Invalidate>>,
        fan_out: FanOut,
    ) -> Self {
        Self {
            effects,
            invalidate,
            fan_out,
        }
    }

    async fn edge(&self, a: UserId, b: UserId) -> Result<(), EventsError> {
        match &self.invalidate {
            Some(i) => {
                // The writer waited for the replicas too, but its process may be gone.
                self.effects.replayed().await;
                i.edge(a, b).await.map_err(EventsError::Invalidation)
            }
            None => Ok(()),
        }
    }

    async fn post(&self, id: PostId, author: UserId) -> Result<(), EventsError> {
        match &self.invalidate {
            Some(i) => {
                // The writer waited for the replicas too, but its process may be gone.
                self.effects.replayed().await;
                i.post(id, author).await.map_err(EventsError::Invalidation)
            }
            None => Ok(()),
        }
    }

    async fn timelines(&self, users: &[UserId]) -> Result<(), EventsError> {
        match &self.invalidate {
            Some(i) if !users.is_empty() => {
                i.timelines(users).await.map_err(EventsError::Invalidation)
            }
            _ => Ok(()),
        }
    }
}

/// The key naming one effect of one event: a second delivery finds it taken.
fn key(event: &OutboxEvent, kind: NotificationKind, user: i64, post: Option<i64>) -> String {
    format!(
        "{}:{}:{user}:{}",
        event.id.0,
        kind.as_str(),
        post.unwrap_or(0)
    )
}

/// One `followed` notification per follower, followee and UTC day: following, unfollowing
/// and following again (by hand or by a script) cannot fill someone's notifications.
fn followed_key(follower: UserId, followee: UserId, event: &OutboxEvent) -> String {
    format!(
        "followed:{follower}:{followee}:{}",
        event.created_at.date_naive()
    )
}

#[async_trait]
impl Handler for EffectsHandler {
    async fn ready(&self) -> Result<(), EventsError> {
        self.effects.ready().await.map_err(EventsError::Store)
    }

    async fn handle(&self, event: &OutboxEvent) -> Result<(), EventsError> {
        match Event::of(event).map_err(|e| EventsError::Malformed(e.to_string()))? {
            Event::PostCreated { post_id, author_id } => {
                let holders = self
                    .effects
                    .fan_out(post_id, self.fan_out)
                    .instrument(tracing::debug_span!("fan_out", post.id = post_id.0))
                    .await?;
                // Everyone whose timeline holds the post now, written by this delivery or
                // an earlier one: a redelivery after a failed invalidation forgets them
                // again.
                self.timelines(&holders).await?;
                self.post(post_id, author_id).await
            }
            Event::PostDeleted { post_id, author_id } => self.post(post_id, author_id).await,
            Event::UserFollowed { follower, followee } => {
                self.effects
                    .notify(&[NewNotification {
                        key: followed_key(follower, followee, event),
                        user_id: followee,
                        kind: NotificationKind::Followed,
                        actor_id: Some(follower),
                        post_id: None,
                        order_id: None,
                    }])
                    .await?;
                self.edge(follower, followee).await
            }
            Event::UserUnfollowed { follower, followee } => self.edge(follower, followee).await,
            Event::UserBlocked { blocker, blocked } | Event::UserUnblocked { blocker, blocked } => {
                self.edge(blocker, blocked).await
            }
            Event::OrderCreated {
                order_id: order,
                customer_id: customer,
                items,
            } => {
                let confirmed = NotificationKind::OrderConfirmed;
                let mut notes = vec![NewNotification {
                    key: key(event, confirmed, customer.0, None),
                    user_id: customer,
                    kind: confirmed,
                    actor_id: None,
                    post_id: None,
                    order_id: Some(order),
                }];
                for item in items {
                    notes.push(NewNotification {
                        // Once per buyer, wish and day: orders are free to place (pending
                        // until paid), so repeats must not fill the owner's notifications.
                        key: format!(
                            "wish_bought:{}:{}:{}",
                            customer.0,
                            item.post_id.0,
                            event.created_at.date_naive()
                        ),
                        user_id: item.owner_id,
                        kind: NotificationKind::WishBought,
                        actor_id: Some(customer),
                        post_id: Some(item.post_id),
                        order_id: Some(order),
                    });
                }
                self.effects.notify(&notes).await?;
                Ok(())
            }
        }
    }
}
