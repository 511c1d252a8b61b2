//! The event layer's throughput against real PostgreSQL and Redis: how many events per
//! second the relay moves from the outbox to the stream (by batch size: batching is the
//! optimization), and how many the consumers take to their effects (a keyed notification
//! each), by number of consumers.

use async_trait::async_trait;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use quiver_benches::redis_url;
use quiver_events::streams::RedisStreams;
use quiver_events::{EffectsHandler, Events, EventsConfig, EventsError, Handler};
use quiver_model::{EventId, EventKind, OutboxEvent};
use quiver_store::events::FanOut;
use quiver_store::{PgConfig, PgStore, Store as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EVENTS: u64 = 2000;

/// Does nothing: the relay bench measures the relay alone.
struct Nothing;

#[async_trait]
impl Handler for Nothing {
    async fn handle(&self, _: &OutboxEvent) -> Result<(), EventsError> {
        Ok(())
    }
}

/// A fresh database with two users, for outbox rows and notifications.
async fn database() -> PgStore {
    let admin = PgStore::connect(&PgConfig {
        url: quiver_benches::admin_url(),
        min_connections: 0,
        ..PgConfig::default()
    })
    .await
    .expect("benches need postgresql at DATABASE_URL");
    for sql in [
        "DROP DATABASE IF EXISTS quiver_bench_events WITH (FORCE)",
        "CREATE DATABASE quiver_bench_events",
    ] {
        sqlx::raw_sql(sql).execute(admin.pool()).await.unwrap();
    }
    admin.close().await;
    let admin = quiver_benches::admin_url();
    let base = admin.rsplit_once('/').unwrap().0;
    let store = PgStore::connect(&PgConfig {
        url: format!("{base}/quiver_bench_events"),
        ..PgConfig::default()
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO users (id, handle, display_name) VALUES (1, 'a', 'A'), (2, 'b', 'B')",
    )
    .execute(store.pool())
    .await
    .unwrap();
    store
}

fn config(batch: u32, consumers: usize) -> EventsConfig {
    EventsConfig {
        namespace: format!("bench-events-{}", rand::random::<u64>()),
        relay_batch: batch,
        relay_poll: Duration::from_millis(1),
        consumers,
        read_count: 128,
        read_block: Duration::from_millis(50),
        claim_interval: Duration::from_secs(60),
        ..EventsConfig::default()
    }
}

async fn wait_for(events: &Events, done: impl Fn(&quiver_events::EventsSnapshot) -> bool) {
    while !done(&events.stats()) {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

fn relay(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(database());
    let mut group = c.benchmark_group("relay");
    group.sample_size(10);
    group.throughput(Throughput::Elements(EVENTS));
    for batch in [1_u32, 16, 256] {
        group.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &batch| {
            b.to_async(&rt).iter_custom(|iters| {
                let store = store.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        sqlx::query(
                            "INSERT INTO outbox (kind, payload)
                             SELECT 'user.followed', jsonb_build_object('follower', 1, 'followee', 2)
                             FROM generate_series(1, $1)",
                        )
                        .bind(EVENTS as i64)
                        .execute(store.pool())
                        .await
                        .unwrap();
                        let started = Instant::now();
                        let events = Events::start(
                            Arc::new(store.clone()),
                            Arc::new(Nothing),
                            Some(&redis_url()),
                            config(batch, 0),
                            None,
                        )
                        .unwrap();
                        wait_for(&events, |s| s.relayed >= EVENTS).await;
                        total += started.elapsed();
                        events.shutdown().await;
                    }
                    total
                }
            });
        });
    }
    group.finish();
}

fn consume(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(database());
    // fred spawns its connection task on the runtime it is created in.
    let _runtime = rt.enter();
    let streams =
        RedisStreams::connect(&redis_url(), Duration::from_secs(2), Duration::ZERO).unwrap();
    let mut group = c.benchmark_group("consume");
    group.sample_size(10);
    group.throughput(Throughput::Elements(EVENTS));
    let mut next_id = 1_000_000_i64;
    for consumers in [1_usize, 2, 4] {
        group.bench_with_input(
            BenchmarkId::new("consumers", consumers),
            &consumers,
            |b, &consumers| {
                b.to_async(&rt).iter_custom(|iters| {
                    let store = store.clone();
                    let streams = streams.clone();
                    let first = next_id;
                    next_id += iters as i64 * EVENTS as i64;
                    async move {
                        let mut total = Duration::ZERO;
                        for i in 0..iters {
                            let config = config(64, consumers);
                            // Distinct event ids: each makes a new notification.
                            let base = first + i as i64 * EVENTS as i64;
                            let batch: Vec<OutboxEvent> = (0..EVENTS as i64)
                                .map(|n| OutboxEvent {
                                    id: EventId(base + n),
                                    kind: EventKind::UserFollowed,
                                    payload: serde_json::json!({"follower": 1, "followee": 2}),
                                    created_at: chrono::Utc::now(),
                                    published_at: None,
                                    trace_context: None,
                                })
                                .collect();
                            for chunk in batch.chunks(500) {
                                streams.append(&config.stream(), chunk).await.unwrap();
                            }
                            let handler = Arc::new(EffectsHandler::new(
                                Arc::new(store.clone()),
                                None,
                                FanOut::default(),
                            ));
                            let started = Instant::now();
                            let events = Events::start(
                                Arc::new(store.clone()),
                                handler,
                                Some(&redis_url()),
                                EventsConfig {
                                    relay: false,
                                    ..config
                                },
                                None,
                            )
                            .unwrap();
                            wait_for(&events, |s| s.handled >= EVENTS).await;
                            total += started.elapsed();
                            events.shutdown().await;
                        }
                        total
                    }
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, relay, consume);
criterion_main!(benches);
