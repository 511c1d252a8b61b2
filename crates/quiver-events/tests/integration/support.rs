//! Users to write between, a Redis namespace per test, handlers that fail or hang on
//! purpose, and a bounded wait for a condition.

use async_trait::async_trait;
use quiver_events::{Events, EventsConfig, EventsError, Handler};
use quiver_model::OutboxEvent;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

pub(crate) use quiver_testkit::redis_url;

/// Inserts users 1..=n.
pub(crate) async fn users(pool: &sqlx::PgPool, n: i64) {
    sqlx::query(
        "INSERT INTO users (id, handle, display_name)
         SELECT g, 'user_' || g, 'User ' || g FROM generate_series(1, $1) g",
    )
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
}

/// Settings for a test: its own stream namespace, short idle and claim intervals.
/// The event layer over `store` with `handler`, relaying through the Redis at `redis`
/// (in process without one).
pub(crate) fn start<S>(
    store: &S,
    handler: Arc<dyn Handler>,
    redis: Option<&str>,
    config: EventsConfig,
) -> Events
where
    S: quiver_store::events::Outbox + Clone + 'static,
{
    Events::start(Arc::new(store.clone()), handler, redis, config, None)
        .expect("the event layer starts")
}

pub(crate) fn config() -> EventsConfig {
    EventsConfig {
        namespace: format!("test-{}", uuid::Uuid::new_v4().simple()),
        consumers: 1,
        relay_poll: Duration::from_millis(20),
        read_block: Duration::from_millis(100),
        claim_idle: Duration::from_millis(300),
        claim_interval: Duration::from_millis(100),
        max_deliveries: 3,
        fan_out: quiver_store::events::FanOut::batches_of(2),
        ..EventsConfig::default()
    }
}

pub(crate) use quiver_testkit::eventually;

/// Runs the inner handler, then, on its first call only, never returns: a consumer
/// that dies after its effects and before acknowledging.
pub(crate) struct HangsOnce {
    pub(crate) inner: Arc<dyn Handler>,
    pub(crate) calls: AtomicUsize,
    pub(crate) inside: Arc<Notify>,
}

#[async_trait]
impl Handler for HangsOnce {
    async fn handle(&self, event: &OutboxEvent) -> Result<(), EventsError> {
        self.inner.handle(event).await?;
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            self.inside.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

/// Always fails, as a handler whose database is down would.
#[derive(Default)]
pub(crate) struct AlwaysFails {
    pub(crate) calls: AtomicUsize,
}

#[async_trait]
impl Handler for AlwaysFails {
    async fn handle(&self, _: &OutboxEvent) -> Result<(), EventsError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        // A failure of the event's own (an outage would not spend its budget).
        Err(EventsError::Store(quiver_store::StoreError::Refused(
            "injected failure",
        )))
    }
}
