//! Events on a real Redis Cluster (six nodes, started per test), partitioned: each user's
//! events go to one of several streams, each with its own consumer group, and every
//! event is handled once.

use crate::support::{config, eventually, start, users};
use quiver_events::streams::RedisStreams;
use quiver_events::{EffectsHandler, EventsConfig};
use quiver_model::UserId;
use quiver_store::PgStore;
use quiver_store::events::FanOut;
use quiver_store::write::GraphWrites;
use quiver_testkit::redis_cluster::RedisCluster;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn on_a_cluster_events_spread_over_partitions_and_each_is_handled_once(pool: PgPool) {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("the cluster starts");
    users(&pool, 20).await;
    let store = PgStore::from_pool(pool.clone());
    let config = EventsConfig {
        partitions: 4,
        ..config()
    };
    let handler = Arc::new(EffectsHandler::new(
        Arc::new(store.clone()),
        None,
        FanOut::batches_of(2),
    ));
    let events = start(&store, handler, Some(&cluster.url()), config.clone());
    for u in 1..=20 {
        store.follow(UserId(u), UserId(u % 20 + 1)).await.unwrap();
    }
    events.wake();
    eventually("every follow is handled", || async {
        events.stats().handled >= 20
    })
    .await;
    let notified: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(notified, 20, "one notification per follow");
    let streams =
        RedisStreams::connect(&cluster.url(), Duration::from_secs(1), Duration::ZERO).unwrap();
    let mut total = 0;
    for (p, name) in config.streams().iter().enumerate() {
        let entries = streams.entries(name).await.unwrap();
        assert!(!entries.is_empty(), "partition {p} got nothing");
        for e in &entries {
            // Each follower's events are in its own partition.
            let follower: i64 = e["payload"]
                .split("\"follower\":")
                .nth(1)
                .and_then(|r| r.split([',', '}']).next())
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("a follower in {e:?}"));
            assert_eq!(follower.rem_euclid(4) as usize, p);
        }
        total += entries.len();
        eventually("the partition's group has nothing pending", || async {
            streams
                .group_state(name, &config.group)
                .await
                .unwrap()
                .pending
                == 0
        })
        .await;
    }
    assert_eq!(total, 20);
    assert_eq!(events.stats().dead_lettered, 0);
    events.shutdown().await;
}
