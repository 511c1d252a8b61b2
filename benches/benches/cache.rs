//! Cache-layer benches (`cargo bench -p quiver-benches --bench cache`, Redis at
//! `REDIS_URL`, default `redis://127.0.0.1:6379`):
//!
//! - `get_many` of 20 keys all in L1, all in L2 (L1 disabled) on one Redis and on a
//!   six-node Redis Cluster the bench starts (one `MGET` per slot, sent to their nodes at
//!   once, against the one `MGET` a cache-wide hash tag would send to one node), all
//!   missing (in-memory loader);
//! - one key: an L1 hit against a plain Redis `GET` of the same value;
//! - loader calls saved by single flight under 64 concurrent lookups;
//! - L1 hit ratio under a Zipf workload at several capacities.

use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use fred::prelude::*;
use quiver_benches::redis_url;
use quiver_cache::{CacheConfig, Outcome, RedisConfig, RedisRemote, Remote, Tiered};
use quiver_model::{LoadError, Loader};
use rand::SeedableRng;
use rand_distr::{Distribution, Zipf};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::runtime::Runtime;

/// An in-memory loader with ~300-byte values, like a small profile.
#[derive(Default)]
struct Memory {
    calls: AtomicU64,
}

#[async_trait]
impl Loader for Memory {
    type Key = u64;
    type Value = String;
    async fn load_many(&self, keys: &[u64]) -> Result<HashMap<u64, String>, LoadError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(keys.iter().map(|k| (*k, format!("{k:>300}"))).collect())
    }
}

async fn remote() -> Arc<dyn Remote> {
    remote_at(&redis_url()).await
}

async fn remote_at(url: &str) -> Arc<dyn Remote> {
    let config = RedisConfig::at(url);
    let r = RedisRemote::connect_within(&config, Duration::from_secs(5)).await;
    Arc::new(r.expect("benches need redis at REDIS_URL"))
}

fn config(name: &str, l1_bytes: u64) -> CacheConfig {
    CacheConfig {
        namespace: format!("qbench:{}", std::process::id()),
        l1_capacity_bytes: l1_bytes,
        redis_timeout: Duration::from_secs(1),
        soft_ttl: Duration::from_secs(3600),
        hard_ttl: Duration::from_secs(3600),
        l2_ttl: Duration::from_secs(3600),
        max_age: Duration::from_secs(3600),
        ..CacheConfig::new(name)
    }
}

fn get_many(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let keys: Vec<u64> = (1..=20).collect();
    let cluster = quiver_testkit::redis_cluster::RedisCluster::start();
    let (l1, l2, l2_cluster, none) = rt.block_on(async {
        let l1 = Tiered::new(
            config("l1", 64 << 20),
            Memory::default(),
            Some(remote().await),
        )
        .await;
        let l2 = Tiered::new(config("l2", 0), Memory::default(), Some(remote().await)).await;
        let l2_cluster = Tiered::new(
            config("l2c", 0),
            Memory::default(),
            Some(remote_at(&cluster.url()).await),
        )
        .await;
        let none = Tiered::new(config("none", 0), Memory::default(), None).await;
        l1.lookup(&keys).await.unwrap();
        l2.lookup(&keys).await.unwrap();
        l2_cluster.lookup(&keys).await.unwrap();
        // Each tier serves what it is meant to before anything is timed.
        let hit = l1.lookup(&keys).await.unwrap();
        assert!(hit.outcomes.values().all(|o| *o == Outcome::HitL1));
        let hit = l2.lookup(&keys).await.unwrap();
        assert!(hit.outcomes.values().all(|o| *o == Outcome::HitL2));
        let hit = l2_cluster.lookup(&keys).await.unwrap();
        assert!(hit.outcomes.values().all(|o| *o == Outcome::HitL2));
        (l1, l2, l2_cluster, none)
    });
    let mut g = c.benchmark_group("get_many_20");
    g.measurement_time(Duration::from_secs(4));
    g.bench_function("all_l1", |b| {
        b.to_async(&rt)
            .iter(|| async { l1.lookup(&keys).await.unwrap() })
    });
    g.bench_function("all_l2", |b| {
        b.to_async(&rt)
            .iter(|| async { l2.lookup(&keys).await.unwrap() })
    });
    g.bench_function("all_l2_redis_cluster", |b| {
        b.to_async(&rt)
            .iter(|| async { l2_cluster.lookup(&keys).await.unwrap() })
    });
    g.bench_function("all_missing_memory_loader", |b| {
        b.to_async(&rt)
            .iter(|| async { none.lookup(&keys).await.unwrap() })
    });
    g.finish();
}

fn single_key(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let (cache, client) = rt.block_on(async {
        let cache = Tiered::new(config("single", 64 << 20), Memory::default(), None).await;
        cache.lookup(&[42]).await.unwrap();
        let client = Builder::from_config(Config::from_url(&redis_url()).unwrap())
            .build()
            .unwrap();
        client.init().await.unwrap();
        let value = format!("{:>300}", 42);
        let _: () = client
            .set(
                "qbench:plain:42",
                value,
                Some(Expiration::EX(600)),
                None,
                false,
            )
            .await
            .unwrap();
        (cache, client)
    });
    let mut g = c.benchmark_group("single_key");
    g.bench_function("l1_hit", |b| {
        b.to_async(&rt)
            .iter(|| async { cache.get(&42).await.unwrap() })
    });
    g.bench_function("l1_hit_via_lookup", |b| {
        b.to_async(&rt)
            .iter(|| async { cache.lookup(&[42]).await.unwrap() })
    });
    g.bench_function("redis_get", |b| {
        b.to_async(&rt).iter(|| async {
            let v: Option<bytes::Bytes> = client.get("qbench:plain:42").await.unwrap();
            v
        })
    });
    g.finish();
}

fn single_flight(_: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let rounds = 50u64;
    let calls = rt.block_on(async {
        let cache = Tiered::new(
            config("flight", 64 << 20),
            Memory::default(),
            Some(remote().await),
        )
        .await;
        for round in 0..rounds {
            let key = 1_000_000 + round;
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let c = cache.clone();
                    tokio::spawn(async move { c.lookup(&[key]).await.unwrap() })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        }
        cache.stats()
    });
    println!(
        "\n| single flight, 64 concurrent lookups of one missing key × {rounds} | loader calls | coalesced | l1 hits |\n| --- | --- | --- | --- |\n| without single flight (one load per lookup) | {} | 0 | 0 |\n| with | {} | {} | {} |",
        64 * rounds,
        calls.loader_calls,
        calls.get(Outcome::Coalesced),
        calls.get(Outcome::HitL1)
    );
}

fn zipf_hit_ratio(_: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let universe = 100_000u64;
    let lookups = 200_000;
    println!(
        "\n| L1 capacity (Zipf s=1.0 over {universe} keys, ~380 B entries) | hit ratio |\n| --- | --- |"
    );
    for mb in [1u64, 4, 16, 64] {
        let ratio = rt.block_on(async {
            let cache = Tiered::new(config("zipf", mb << 20), Memory::default(), None).await;
            let zipf = Zipf::new(universe as f64, 1.0).unwrap();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
            for _ in 0..lookups {
                let key = zipf.sample(&mut rng) as u64;
                cache.lookup(&[key]).await.unwrap();
            }
            let s = cache.stats();
            s.get(Outcome::HitL1) as f64 / lookups as f64
        });
        println!("| {mb} MiB | {:.1} % |", ratio * 100.0);
    }
}

criterion_group!(benches, get_many, single_key, single_flight, zipf_hit_ratio);
criterion_main!(benches);
