//! The cache on a real Redis Cluster (six nodes, started per test): batches that span
//! slots read and fill in one call per slot, invalidations reach every replica's L1, the
//! fence holds, and a failed primary does not fail a lookup.

use crate::redis::{fenced_load_never_writes_its_old_value, invalidation_evicts_the_others_l1};
use crate::support::{Source, config, namespace, remote, replica};
use quiver_cache::Outcome;
use quiver_testkit::redis_cluster::RedisCluster;
use std::sync::Arc;

async fn cluster() -> RedisCluster {
    tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("the cluster starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_an_invalidation_evicts_the_others_l1_and_the_fence_holds() {
    let cluster = cluster().await;
    invalidation_evicts_the_others_l1(&cluster.url()).await;
    fenced_load_never_writes_its_old_value(&cluster.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_batch_over_many_slots_reads_fills_and_invalidates_whole() {
    let cluster = cluster().await;
    let (url, ns) = (cluster.url(), namespace("slots"));
    let source = Arc::new(Source::default());
    let keys: Vec<u64> = (1..=200).collect();
    for k in &keys {
        source.set(*k, &format!("v{k}"));
    }
    let a = replica(config(&ns), &source, &url).await;
    let b = replica(config(&ns), &source, &url).await;
    let first = a.lookup(&keys).await.unwrap();
    assert!(first.outcomes.values().all(|o| *o == Outcome::Miss));
    // Every fill landed, whatever its slot: the other replica finds all 200 in Redis
    // (a batch sent as one multi-slot command would have failed and missed instead).
    let second = b.lookup(&keys).await.unwrap();
    assert!(
        second.outcomes.values().all(|o| *o == Outcome::HitL2),
        "{:?}",
        second.outcomes
    );
    assert_eq!(source.calls(), 1);
    for k in &keys {
        source.set(*k, &format!("w{k}"));
    }
    a.invalidate(&keys).await.unwrap();
    let raw = remote(&url)
        .await
        .fetch(
            &keys
                .iter()
                .map(|k| format!("{ns}:items:{k}"))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    assert!(raw.iter().all(|(v, version)| v.is_none() && *version == 1));
    quiver_testkit::eventually("every key left the other replica's l1", || {
        let b = b.clone();
        let keys = keys.clone();
        async move {
            let l = b.lookup(&keys).await.unwrap();
            keys.iter().all(|k| l.values[k] == format!("w{k}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_primary_dies_the_cache_fills_and_invalidates_through_its_promoted_replica() {
    let mut cluster = cluster().await;
    let (url, ns) = (cluster.url(), namespace("failover"));
    let source = Arc::new(Source::default());
    let keys: Vec<u64> = (1..=100).collect();
    for k in &keys {
        source.set(*k, "before");
    }
    let a = replica(config(&ns), &source, &url).await;
    let b = replica(config(&ns), &source, &url).await;
    a.lookup(&keys).await.unwrap();
    let dead = cluster.primaries()[0];
    tokio::task::block_in_place(|| cluster.kill(dead));
    let killed = std::time::Instant::now();
    // Lookups never fail for Redis; once a replica is promoted, fills reach Redis again
    // for every slot: a third replica finds every key there.
    for k in &keys {
        source.set(*k, "after");
    }
    quiver_testkit::eventually("every slot is served again", || {
        let (a, source, url, ns, keys) = (
            a.clone(),
            source.clone(),
            url.clone(),
            ns.clone(),
            keys.clone(),
        );
        async move {
            a.invalidate(&keys).await.is_ok() && {
                a.lookup(&keys).await.unwrap();
                let c = replica(config(&ns), &source, &url).await;
                let l = c.lookup(&keys).await.unwrap();
                l.outcomes.values().all(|o| *o == Outcome::HitL2)
            }
        }
    })
    .await;
    eprintln!(
        "every slot filled again {:?} after the kill",
        killed.elapsed()
    );
    // And invalidations reach the other replica's L1 again.
    for k in &keys {
        source.set(*k, "later");
    }
    b.lookup(&keys).await.unwrap();
    a.invalidate(&keys).await.unwrap();
    quiver_testkit::eventually("the other replica's l1 forgot every key", || {
        let (b, keys) = (b.clone(), keys.clone());
        async move {
            let l = b.lookup(&keys).await.unwrap();
            keys.iter().all(|k| l.values[k] == "later")
        }
    })
    .await;
}
