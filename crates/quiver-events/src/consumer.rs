//! A consumer in the group: reads new entries on its own connection, handles each and
//! acknowledges it once its effects are done. An entry whose handling failed, or whose
//! consumer died before acknowledging it, stays pending; after `claim_idle` any consumer
//! takes it over (`XAUTOCLAIM`) and handles it again. An entry that failed
//! `max_deliveries` times, whose handler panicked, or that does not decode goes to the
//! dead-letter stream. An outage (the database or Redis unreachable) is no entry's
//! fault: the entry stays pending without spending its budget, and the consumer stops
//! reading and claiming until the handler's dependencies answer again, so however long
//! the outage lasts nothing is dead-lettered because of it.

use crate::handler::Handler;
use crate::stats::EventStats;
use crate::streams::{Delivery, RedisStreams};
use crate::{EventsConfig, EventsError};
use quiver_model::{ErrorCode, HasErrorCode as _};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Told how long after its commit each handled event took effect (for a histogram).
pub type LagObserver = Arc<dyn Fn(quiver_model::EventKind, Duration) + Send + Sync>;

pub(crate) struct Consumer {
    pub(crate) streams: RedisStreams,
    /// The partition it reads, and that partition's stream.
    pub(crate) partition: usize,
    pub(crate) stream: String,
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) config: EventsConfig,
    pub(crate) name: String,
    pub(crate) stats: Arc<EventStats>,
    pub(crate) lag: Option<LagObserver>,
    /// Whether this consumer samples the group's pending count and lag for metrics (one
    /// per process does).
    pub(crate) samples_group: bool,
}

/// The longest pause between checks whether an outage has ended.
const MAX_PAUSE: Duration = Duration::from_secs(5);

impl Consumer {
    /// Consumes until `stop` turns true.
    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let stream = self.stream.clone();
        let group = self.config.group.clone();
        let mut failing = false;
        let mut last_claim = tokio::time::Instant::now();
        let mut ready = false;
        loop {
            if *stop.borrow() {
                return;
            }
            let step = async {
                if !ready {
                    self.streams.ensure_group(&stream, &group).await?;
                    ready = true;
                }
                if last_claim.elapsed() >= self.config.claim_interval {
                    last_claim = tokio::time::Instant::now();
                    self.reclaim(&stream, &group).await?;
                    if self.samples_group {
                        let g = self.streams.group_state(&stream, &group).await?;
                        self.stats
                            .group(self.partition, g.pending, g.lag.unwrap_or(0));
                    }
                }
                let block = self.config.read_block.min(self.config.claim_interval);
                let new = self
                    .streams
                    .read_group(&stream, &group, &self.name, self.config.read_count, block)
                    .await?;
                let fresh: Vec<(Delivery, u64)> = new.into_iter().map(|d| (d, 1)).collect();
                self.process_all(&stream, &group, &fresh).await
            };
            let result = tokio::select! {
                r = step => r,
                _ = stop.changed() => return,
            };
            match result {
                Ok(()) if failing => {
                    tracing::info!(consumer = %self.name, "event consumer recovered");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) => {
                    if !failing {
                        tracing::warn!(consumer = %self.name, error = %quiver_store::describe(&e), "event consumer failed; retrying");
                        failing = true;
                    }
                    ready = false;
                    // During an outage every read or claim would deliver entries only to
                    // fail them again: wait until the handler's dependencies answer.
                    let outage = e.code() == ErrorCode::Unavailable;
                    let mut pause = self.config.retry_backoff.max(Duration::from_millis(10));
                    loop {
                        tokio::select! {
                            () = tokio::time::sleep(pause) => {}
                            _ = stop.changed() => return,
                        }
                        if !outage || self.handler.ready().await.is_ok() {
                            break;
                        }
                        pause = (pause * 2).min(MAX_PAUSE);
                    }
                }
            }
        }
    }

    /// Takes over entries idle past `claim_idle` and handles them again.
    async fn reclaim(&self, stream: &str, group: &str) -> Result<(), EventsError> {
        let claimed = self
            .streams
            .reclaim(
                stream,
                group,
                &self.name,
                self.config.claim_idle,
                self.config.read_count,
            )
            .await?;
        // Pending entries whose data was deleted (trimmed or XDEL'd by hand) left the
        // group with this claim and will never be delivered: each is dead-lettered by
        // id, so its loss is counted and visible instead of silent.
        const DELETED: &str = "the entry was deleted from the stream before it was handled";
        for entry in &claimed.deleted {
            let gone = Delivery {
                entry: entry.clone(),
                event: Err(DELETED.into()),
                fields: Default::default(),
            };
            self.dead_letter(&gone, 0, DELETED).await?;
        }
        if claimed.deliveries.is_empty() {
            return Ok(());
        }
        let claimed = claimed.deliveries;
        self.stats.reclaimed(claimed.len());
        tracing::info!(consumer = %self.name, entries = claimed.len(), "reclaimed pending events");
        self.process_all(stream, group, &claimed).await
    }

    /// Handles a batch, up to `handle_concurrency` entries at once (effects are
    /// independent and idempotent, so their order does not matter), and acknowledges
    /// every entry that is done, even when another failed.
    async fn process_all(
        &self,
        stream: &str,
        group: &str,
        batch: &[(Delivery, u64)],
    ) -> Result<(), EventsError> {
        use futures::StreamExt as _;
        type Outcome = (String, Result<bool, EventsError>);
        // Boxed so the stream's futures are plainly `Send` (a closure returning an async
        // block over borrowed items trips the compiler's higher-ranked `Send` check).
        let handling: Vec<futures::future::BoxFuture<'_, Outcome>> = batch
            .iter()
            .map(|(d, n)| {
                Box::pin(async move { (d.entry.clone(), self.process(d, *n).await) }) as _
            })
            .collect();
        let outcomes: Vec<Outcome> = futures::stream::iter(handling)
            .buffer_unordered(self.config.handle_concurrency.max(1))
            .collect()
            .await;
        let mut acks = Vec::with_capacity(outcomes.len());
        let mut failed = None;
        for (entry, outcome) in outcomes {
            match outcome {
                Ok(true) => acks.push(entry),
                Ok(false) => {}
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        self.streams.ack(stream, group, &acks).await?;
        failed.map_or(Ok(()), Err)
    }

    /// Handles one entry, delivered `deliveries` times so far. `Ok(true)`: acknowledge it
    /// (done, or dead-lettered); `Ok(false)`: leave it pending for a later attempt; an
    /// outage error: leave it pending and pause the consumer.
    async fn process(&self, d: &Delivery, deliveries: u64) -> Result<bool, EventsError> {
        let event = match &d.event {
            Ok(event) => event,
            Err(why) => {
                self.dead_letter(d, deliveries, why).await?;
                return Ok(true);
            }
        };
        // A panic is the handler's bug, not the entry's chance of success: caught, the
        // entry is dead-lettered at once and the consumer lives on.
        let error = match crate::handler::handle_caught(self.handler.as_ref(), event).await {
            Ok(()) => {
                self.stats.handled();
                if let Some(observe) = &self.lag
                    && let Ok(lag) = (chrono::Utc::now() - event.created_at).to_std()
                {
                    observe(event.kind, lag);
                }
                return Ok(true);
            }
            // An outage leaves the entry pending without spending its budget and pauses
            // the consumer (the error goes up); a failure of its own spends one delivery.
            Err(e)
                if e.code() == ErrorCode::Unavailable
                    || (e.is_retryable() && deliveries < self.config.max_deliveries) =>
            {
                let outage = e.code() == ErrorCode::Unavailable;
                self.stats.retry();
                tracing::warn!(
                    event.id = event.id.0,
                    event.kind = event.kind.as_str(),
                    deliveries,
                    outage,
                    error = %quiver_store::describe(&e),
                    "event failed; it stays pending"
                );
                return if outage { Err(e) } else { Ok(false) };
            }
            Err(e) => quiver_store::describe(&e),
        };
        self.dead_letter(d, deliveries, &error).await?;
        Ok(true)
    }

    async fn dead_letter(
        &self,
        d: &Delivery,
        deliveries: u64,
        error: &str,
    ) -> Result<(), EventsError> {
        let mut fields: Vec<(String, String)> = d
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        fields.sort();
        fields.push(("entry".into(), d.entry.clone()));
        fields.push(("deliveries".into(), deliveries.to_string()));
        fields.push(("error".into(), error.to_owned()));
        self.streams
            .append_raw(&self.config.dead_stream(), fields)
            .await?;
        self.stats.dead_lettered();
        tracing::error!(
            entry = %d.entry,
            deliveries,
            error,
            "event moved to the dead-letter stream"
        );
        Ok(())
    }
}
