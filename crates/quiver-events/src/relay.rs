//! The relay: moves committed outbox rows to where their effects happen, in batches.
//!
//! - To a Redis Stream: a claimed batch (rows locked with `FOR UPDATE SKIP LOCKED`, so
//!   relays of several replicas never take the same rows) is appended in one pipeline of
//!   `XADD`, then marked published in the same transaction. A crash between the append
//!   and the commit publishes the batch again: delivery is at least once, and consumers
//!   are idempotent. Every `trim_interval` the relay trims the stream of the entries
//!   every consumer group has acknowledged, and nothing else: a committed event leaves
//!   the stream only after its effects are done (or it is dead-lettered).
//! - In process (no Redis, the embedded default): each claimed event is handled here and
//!   marked published only once its effects are done, so a crash mid-way handles it
//!   again after restart.

use crate::handler::Handler;
use crate::stats::EventStats;
use crate::streams::RedisStreams;
use crate::{EventsConfig, EventsError};
use quiver_model::{EventId, HasErrorCode as _};
use quiver_store::events::Outbox;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Where relayed events go.
#[derive(Clone)]
pub(crate) enum Sink {
    Stream(RedisStreams),
    InProcess(Arc<dyn Handler>),
}

pub(crate) struct Relay {
    pub(crate) outbox: Arc<dyn Outbox>,
    pub(crate) sink: Sink,
    pub(crate) config: EventsConfig,
    pub(crate) stats: Arc<EventStats>,
    /// Woken by local writes after they commit, so events leave without waiting a poll.
    pub(crate) wake: Arc<Notify>,
    /// In process only, per event: failed attempts, those of them that count against
    /// `max_deliveries` (an outage's do not), and when it may be tried again (a write
    /// waking the relay does not hurry a retry).
    pub(crate) attempts: HashMap<EventId, (u64, u64, tokio::time::Instant)>,
    /// Where the next housekeeping step trims timelines.
    pub(crate) prune_after: quiver_model::UserId,
}

impl Relay {
    /// Relays until `stop` turns true.
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut failing = false;
        let mut backoff = self.config.relay_poll;
        let mut measured = tokio::time::Instant::now() - self.config.backlog_interval;
        let mut trimmed = tokio::time::Instant::now();
        let mut pruned = tokio::time::Instant::now();
        loop {
            if *stop.borrow() {
                return;
            }
            if measured.elapsed() >= self.config.backlog_interval {
                measured = tokio::time::Instant::now();
                self.measure().await;
            }
            if trimmed.elapsed() >= self.config.trim_interval {
                trimmed = tokio::time::Instant::now();
                self.trim().await;
            }
            if let Some(every) = self.config.prune_interval
                && pruned.elapsed() >= every
            {
                pruned = tokio::time::Instant::now();
                self.prune().await;
            }
            let wait = match self.batch().await {
                Ok(n) => {
                    if failing {
                        tracing::info!("event relay recovered");
                        failing = false;
                    }
                    backoff = self.config.relay_poll;
                    match n {
                        Moved::Full => continue,
                        Moved::Some => Duration::ZERO,
                        Moved::None => self.config.relay_poll,
                        Moved::Failed => self.config.relay_poll,
                    }
                }
                Err(e) => {
                    self.stats.relay_error();
                    if !failing {
                        tracing::warn!(error = %quiver_store::describe(&e), "event relay failed; retrying with back-off");
                        failing = true;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    backoff
                }
            };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Trims the stream of what every group has acknowledged (a failure is retried at
    /// the next interval: an untrimmed stream is only longer).
    async fn trim(&self) {
        let Sink::Stream(streams) = &self.sink else {
            return;
        };
        for stream in self.config.streams() {
            match streams.trim_acknowledged(&stream).await {
                Ok(n) if n > 0 => {
                    tracing::debug!(entries = n, stream, "trimmed acknowledged events")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %quiver_store::describe(&e), stream, "trimming the event stream failed")
                }
            }
            let (group, idle) = (&self.config.group, self.config.consumer_idle);
            if let Err(e) = streams.remove_idle_consumers(&stream, group, idle).await {
                tracing::warn!(error = %quiver_store::describe(&e), stream, "removing idle consumers failed");
            }
        }
    }

    /// Appends `events` to their partitions' streams, in commit order within each.
    async fn append(
        &self,
        streams: &crate::streams::RedisStreams,
        events: &[quiver_model::OutboxEvent],
    ) -> Result<(), EventsError> {
        let names = self.config.streams();
        if names.len() == 1 {
            return streams.append(&names[0], events).await;
        }
        let mut parts = vec![Vec::new(); names.len()];
        for e in events {
            parts[self.config.partition_of(e)].push(e.clone());
        }
        let appends = names
            .iter()
            .zip(&parts)
            .filter(|(_, part)| !part.is_empty())
            .map(|(name, part)| streams.append(name, part));
        futures::future::try_join_all(appends).await?;
        Ok(())
    }

    /// One housekeeping step (see [`Outbox::prune`]); a failure waits for the next.
    async fn prune(&mut self) {
        match self
            .outbox
            .prune(&self.config.retention, self.prune_after)
            .await
        {
            Ok(p) => {
                self.prune_after = p.next_user.unwrap_or(quiver_model::UserId(0));
                tracing::debug!(?p, "pruned");
            }
            Err(e) => tracing::warn!(error = %quiver_store::describe(&e), "pruning failed"),
        }
    }

    async fn measure(&self) {
        if let Ok(b) = self.outbox.backlog().await {
            let lag = b
                .oldest
                .and_then(|t| (chrono::Utc::now() - t).to_std().ok())
                .unwrap_or_default();
            self.stats.backlog(b.unpublished, lag);
        }
    }

    /// One batch.
    async fn batch(&mut self) -> Result<Moved, EventsError> {
        let claim = self.outbox.claim(self.config.relay_batch).await?;
        let n = claim.events().len();
        if n == 0 {
            return Ok(Moved::None);
        }
        let full = n as u32 >= self.config.relay_batch;
        match self.sink.clone() {
            Sink::Stream(streams) => {
                let appended = self.append(&streams, claim.events()).await;
                if let Err(e) = appended {
                    // Unlock the rows now, for this or another relay's next attempt.
                    let _ = claim.release().await;
                    return Err(e);
                }
                let ids: Vec<EventId> = claim.events().iter().map(|e| e.id).collect();
                claim.published(&ids).await?;
                self.stats.relayed(n);
            }
            Sink::InProcess(handler) => {
                let mut done = Vec::with_capacity(n);
                let mut dead = Vec::new();
                let mut failed = false;
                let now = tokio::time::Instant::now();
                for event in claim.events() {
                    if self
                        .attempts
                        .get(&event.id)
                        .is_some_and(|(_, _, at)| *at > now)
                    {
                        // Not yet: it stays unpublished until its retry is due.
                        failed = true;
                        continue;
                    }
                    match crate::handler::handle_caught(handler.as_ref(), event).await {
                        Ok(()) => {
                            self.attempts.remove(&event.id);
                            self.stats.handled();
                            done.push(event.id);
                        }
                        Err(e) => {
                            let (tries, counted, at) =
                                self.attempts.entry(event.id).or_insert((0, 0, now));
                            *tries += 1;
                            // An outage is no event's fault: it spends no budget.
                            if e.code() != quiver_model::ErrorCode::Unavailable {
                                *counted += 1;
                            }
                            // Spaced exponentially: a transient fault (a deadlock, a busy
                            // database) gets time to pass before the budget is spent.
                            *at = now
                                + self.config.retry_backoff * 2u32.pow((*tries - 1).min(10) as u32);
                            let (tries, counted) = (*tries, *counted);
                            if !e.is_retryable() || counted >= self.config.max_deliveries {
                                let error = quiver_store::describe(&e);
                                tracing::error!(
                                    event.id = event.id.0,
                                    event.kind = event.kind.as_str(),
                                    attempts = tries,
                                    error = %error,
                                    "event given up on (dead letter, kept in the outbox)"
                                );
                                self.attempts.remove(&event.id);
                                self.stats.dead_lettered();
                                dead.push((event.id, error));
                            } else {
                                tracing::warn!(
                                    event.id = event.id.0,
                                    event.kind = event.kind.as_str(),
                                    error = %quiver_store::describe(&e),
                                    "event failed; it will be retried"
                                );
                                self.stats.retry();
                                failed = true;
                            }
                        }
                    }
                }
                let published = done.len() + dead.len();
                claim.finish(&done, &dead).await?;
                self.stats.relayed(published);
                if failed {
                    // Failed events stay at the head of the outbox: pause before retrying.
                    return Ok(Moved::Failed);
                }
            }
        }
        Ok(if full { Moved::Full } else { Moved::Some })
    }
}

/// What one batch did.
enum Moved {
    /// A full batch: more may be waiting.
    Full,
    /// Fewer than a batch.
    Some,
    /// Nothing to relay.
    None,
    /// Some events failed and stay unpublished.
    Failed,
}
