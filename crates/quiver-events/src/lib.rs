#![doc = include_str!("../README.md")]
mod config;
mod consumer;
mod error;
mod handler;
mod relay;
mod stats;
pub mod streams;
pub mod trace;

pub use config::EventsConfig;
pub use consumer::LagObserver;
pub use error::EventsError;
pub use handler::{EffectsHandler, Handler, Invalidate};
pub use stats::{EventStats, EventsSnapshot};

use quiver_store::events::Outbox;
use std::sync::Arc;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// Wakes the relay of an [`Events`] (see [`Events::waker`]).
#[derive(Clone, Debug)]
pub struct RelayWaker(Arc<Notify>);

impl RelayWaker {
    /// As [`Events::wake`].
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// The running relay and consumers of one process.
pub struct Events {
    stats: Arc<EventStats>,
    /// Wakes the relay after a local commit.
    wake: Arc<Notify>,
    /// Turning it true stops every task at its next await point.
    stop: watch::Sender<bool>,
    /// The relay's and consumers' tasks, taken out (and awaited) by `shutdown`.
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Events {
    /// Starts relaying `outbox` and handling events with `handler`. With `redis_url`
    /// events go through the stream and `config.consumers` consumers of this process
    /// handle them; without, the relay hands them to `handler` itself. `lag`, if given,
    /// is told each handled event's commit-to-effect time. Returns at once: Redis may
    /// still be connecting.
    pub fn start(
        outbox: Arc<dyn Outbox>,
        handler: Arc<dyn Handler>,
        redis_url: Option<&str>,
        config: EventsConfig,
        lag: Option<LagObserver>,
    ) -> Result<Self, EventsError> {
        let stats = Arc::new(EventStats::default());
        let wake = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let sink = match redis_url {
            Some(url) => {
                for (partition, stream) in config.streams().into_iter().enumerate() {
                    for i in 0..config.consumers {
                        let consumer = consumer::Consumer {
                            partition,
                            stream: stream.clone(),
                            streams: streams::RedisStreams::connect(
                                url,
                                config.command_timeout,
                                config.read_block,
                            )?,
                            handler: handler.clone(),
                            config: config.clone(),
                            name: format!("{}-{partition}-{i}", config.consumer_prefix),
                            stats: stats.clone(),
                            lag: lag.clone(),
                            samples_group: i == 0,
                        };
                        tasks.push(tokio::spawn(consumer.run(stopped.clone())));
                    }
                }
                relay::Sink::Stream(streams::RedisStreams::connect(
                    url,
                    config.command_timeout,
                    std::time::Duration::ZERO,
                )?)
            }
            None => relay::Sink::InProcess(handler),
        };
        if config.relay {
            let relay = relay::Relay {
                outbox,
                sink,
                config,
                stats: stats.clone(),
                wake: wake.clone(),
                attempts: Default::default(),
                prune_after: quiver_model::UserId(0),
            };
            tasks.push(tokio::spawn(relay.run(stopped)));
        }
        Ok(Self {
            stats,
            wake,
            stop,
            tasks: std::sync::Mutex::new(tasks),
        })
    }

    /// Tells the relay a write just committed, so it relays now instead of at its next
    /// poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// A handle that wakes the relay, for work that outlives a borrow of `self` (a
    /// write's task, which finishes even when its request is gone).
    pub fn waker(&self) -> RelayWaker {
        RelayWaker(self.wake.clone())
    }

    /// The counters now.
    pub fn stats(&self) -> EventsSnapshot {
        self.stats.snapshot()
    }

    /// Stops the relay and the consumers and waits for them; a second call returns at
    /// once. Work in flight is abandoned at its next await point: unacknowledged entries
    /// and unpublished rows are picked up again later, by this or another replica.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("tasks lock"));
        for t in tasks {
            let _ = t.await;
        }
    }
}
