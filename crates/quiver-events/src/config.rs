//! Settings of the relay and the consumers, as a plain struct with defaults.

use std::time::Duration;

/// How events are relayed and consumed.
#[derive(Clone, Debug)]
pub struct EventsConfig {
    /// Prefix of the stream keys (`{namespace}:events`, `{namespace}:events:dead`).
    pub namespace: String,
    /// Whether this process relays the outbox at all (off holds events in the outbox,
    /// for another replica to relay, or for tests of crash safety).
    pub relay: bool,
    /// Outbox rows claimed and published per batch.
    pub relay_batch: u32,
    /// How long the relay sleeps when the outbox is empty, unless woken by a local write.
    pub relay_poll: Duration,
    /// How often the relay measures the outbox backlog for metrics.
    pub backlog_interval: Duration,
    /// In process: how long after its first failure an event is tried again (doubling
    /// with each failure). With Redis: a consumer's first pause after a failure (doubling,
    /// up to 5 s, while an outage lasts).
    pub retry_backoff: Duration,
    /// How often the relay takes one housekeeping step (`None`: never; see
    /// `quiver_store::events::Outbox::prune`).
    pub prune_interval: Option<Duration>,
    /// What the housekeeping keeps.
    pub retention: quiver_store::events::Retention,
    /// Consumers of the group with nothing pending that have not read for this long are
    /// removed (the names of processes that stopped).
    pub consumer_idle: Duration,
    /// How often the relay trims the stream of what every consumer group has
    /// acknowledged (entries are never trimmed by length: one not yet handled stays).
    pub trim_interval: Duration,
    /// The consumer group every replica's consumers join (one per stream).
    pub group: String,
    /// Streams the events are spread over by the user they concern (1: one stream). On a
    /// Redis Cluster each stream lives on one node, so several spread the traffic; one
    /// user's events stay in one stream, in order. Change it only with nothing pending.
    pub partitions: u16,
    /// Consumers in this process, each on its own Redis connection; 0 runs none.
    pub consumers: usize,
    /// This process's consumer names start with it (unique per process).
    pub consumer_prefix: String,
    /// Entries read per `XREADGROUP`.
    pub read_count: u64,
    /// Entries of one read a consumer handles at once.
    pub handle_concurrency: usize,
    /// How long one `XREADGROUP` blocks waiting for entries.
    pub read_block: Duration,
    /// Entries pending this long (their consumer died or failed) are reclaimed.
    pub claim_idle: Duration,
    /// How often each consumer looks for entries to reclaim.
    pub claim_interval: Duration,
    /// An event delivered this many times without success goes to the dead-letter stream.
    pub max_deliveries: u64,
    /// How a post fans out: followers per transaction, and the follower count past
    /// which an author is a celebrity (merged at read time, never fanned out).
    pub fan_out: quiver_store::events::FanOut,
    /// Timeout of each non-blocking Redis command.
    pub command_timeout: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            namespace: "quiver".to_owned(),
            relay: true,
            relay_batch: 256,
            relay_poll: Duration::from_millis(100),
            backlog_interval: Duration::from_secs(1),
            trim_interval: Duration::from_secs(10),
            consumer_idle: Duration::from_secs(3600),
            retry_backoff: Duration::from_millis(250),
            prune_interval: Some(Duration::from_secs(10)),
            retention: quiver_store::events::Retention::default(),
            group: "effects".to_owned(),
            consumers: 2,
            consumer_prefix: format!("c-{}", uuid::Uuid::new_v4().simple()),
            read_count: 64,
            handle_concurrency: 8,
            read_block: Duration::from_millis(1000),
            claim_idle: Duration::from_secs(30),
            claim_interval: Duration::from_secs(5),
            max_deliveries: 5,
            fan_out: quiver_store::events::FanOut::default(),
            partitions: 1,
            command_timeout: Duration::from_millis(500),
        }
    }
}

impl EventsConfig {
    /// The stream the relay appends to when there is one partition.
    pub fn stream(&self) -> String {
        format!("{}:events", self.namespace)
    }

    /// Every stream, by partition: [`stream`](Self::stream) alone, or `…:events:{p}`.
    pub fn streams(&self) -> Vec<String> {
        if self.partitions <= 1 {
            return vec![self.stream()];
        }
        (0..self.partitions)
            .map(|p| format!("{}:events:{p}", self.namespace))
            .collect()
    }

    /// The partition of `event`: by the user it concerns (the author, follower, blocker or
    /// customer), so one user's events keep their order; by its id when it does not say.
    pub fn partition_of(&self, event: &quiver_model::OutboxEvent) -> usize {
        use quiver_model::Event;
        let n = i64::from(self.partitions.max(1));
        let key = match Event::of(event) {
            Ok(Event::PostCreated { author_id, .. } | Event::PostDeleted { author_id, .. }) => {
                author_id.0
            }
            Ok(Event::UserFollowed { follower, .. } | Event::UserUnfollowed { follower, .. }) => {
                follower.0
            }
            Ok(Event::UserBlocked { blocker, .. } | Event::UserUnblocked { blocker, .. }) => {
                blocker.0
            }
            Ok(Event::OrderCreated { customer_id, .. }) => customer_id.0,
            _ => event.id.0,
        };
        key.rem_euclid(n) as usize
    }

    /// Where events that failed `max_deliveries` times go.
    pub fn dead_stream(&self) -> String {
        format!("{}:events:dead", self.namespace)
    }
}
