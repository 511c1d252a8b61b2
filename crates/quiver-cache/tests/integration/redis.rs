//! Behaviour that needs a real Redis: replicas, single flight, outages, fencing, versions.

use crate::support::{Source, config, namespace, redis_url, remote, replica};
use quiver_cache::{CacheConfig, Fill, Outcome};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_on_one_replica_evicts_the_others_l1_within_100ms() {
    invalidation_evicts_the_others_l1(&redis_url()).await;
}

/// Also run on a Redis Cluster (`cluster.rs`).
pub(crate) async fn invalidation_evicts_the_others_l1(url: &str) {
    let (url, ns) = (url.to_owned(), namespace("evict"));
    let source = Arc::new(Source::default());
    source.set(1, "old");
    let a = replica(config(&ns), &source, &url).await;
    let b = replica(config(&ns), &source, &url).await;
    assert_eq!(a.lookup(&[1]).await.unwrap().outcomes[&1], Outcome::Miss);
    assert_eq!(b.lookup(&[1]).await.unwrap().outcomes[&1], Outcome::HitL2);
    assert_eq!(b.lookup(&[1]).await.unwrap().outcomes[&1], Outcome::HitL1);

    source.set(1, "new");
    let started = Instant::now();
    a.invalidate(&[1]).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_millis(100), async {
        loop {
            let l = b.lookup(&[1]).await.unwrap();
            if l.outcomes[&1] != Outcome::HitL1 {
                return l;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the other replica still served its L1 copy 100 ms after the invalidation");
    assert_eq!(seen.values[&1], "new");
    eprintln!(
        "evicted from the other replica after {:?}",
        started.elapsed()
    );
}

// Current-thread runtime: every spawned lookup runs to its first await (and so claims the
// key) while the one load is held at the gate.
#[tokio::test]
async fn a_hundred_concurrent_lookups_of_one_missing_key_call_the_loader_once() {
    let (url, ns) = (redis_url(), namespace("flight"));
    let source = Arc::new(Source::default());
    source.set(7, "seven");
    source.gate.close();
    let cache = replica(config(&ns), &source, &url).await;
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let c = cache.clone();
            tokio::spawn(async move { c.lookup(&[7]).await.unwrap() })
        })
        .collect();
    source.gate.wait_entered(1).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    source.gate.release(1);
    let mut outcomes = Vec::new();
    for t in tasks {
        let l = t.await.unwrap();
        assert_eq!(l.values[&7], "seven");
        outcomes.push(l.outcomes[&7]);
    }
    assert_eq!(source.calls(), 1, "one load for 100 lookups");
    let count = |o| outcomes.iter().filter(|x| **x == o).count();
    assert_eq!(count(Outcome::Miss), 1);
    assert!(count(Outcome::Coalesced) > 0, "{outcomes:?}");
    assert_eq!(
        count(Outcome::Coalesced) + count(Outcome::HitL1),
        99,
        "{outcomes:?}"
    );
    assert_eq!(
        cache.stats().get(Outcome::Coalesced),
        count(Outcome::Coalesced) as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_started_before_an_invalidation_never_writes_its_old_value() {
    fenced_load_never_writes_its_old_value(&redis_url()).await;
}

/// Also run on a Redis Cluster (`cluster.rs`).
pub(crate) async fn fenced_load_never_writes_its_old_value(url: &str) {
    let (url, ns) = (url.to_owned(), namespace("fence"));
    let source = Arc::new(Source::default());
    source.set(5, "old");
    let a = replica(config(&ns), &source, &url).await;
    let b = replica(config(&ns), &source, &url).await;

    source.gate.close();
    let slow = {
        let a = a.clone();
        tokio::spawn(async move { a.lookup(&[5]).await.unwrap() })
    };
    source.gate.wait_entered(1).await;
    // The slow load has read "old". The value changes and another replica invalidates.
    source.set(5, "new");
    source.gate.stop_holding();
    b.invalidate(&[5]).await.unwrap();
    source.gate.release(1);
    let served = slow.await.unwrap();
    assert_eq!(
        served.values[&5], "old",
        "the slow lookup itself answers what it read"
    );

    // Neither tier may hold the old value now, not even before B's message reaches A:
    // not Redis …
    let raw = remote(&url)
        .await
        .fetch(&[format!("{ns}:items:5")])
        .await
        .unwrap();
    assert_eq!(raw[0].0, None, "the stale set reached redis");
    // … nor the L1 of the replica whose load was slow (Redis refused its fill, so it
    // kept the value out of its L1 too).
    let l = a.lookup(&[5]).await.unwrap();
    assert_eq!(l.values[&5], "new", "the stale set reached the l1");
    let fresh = replica(config(&ns), &source, &url).await;
    let l = fresh.lookup(&[5]).await.unwrap();
    assert_eq!(l.values[&5], "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_of_another_format_version_or_garbage_are_misses() {
    let (url, ns) = (redis_url(), namespace("version"));
    let source = Arc::new(Source::default());
    source.set(9, "nine");
    source.set(10, "ten");
    let v1 = replica(config(&ns), &source, &url).await;
    let v2 = replica(
        CacheConfig {
            schema_version: 2,
            ..config(&ns)
        },
        &source,
        &url,
    )
    .await;
    assert_eq!(v1.lookup(&[9]).await.unwrap().outcomes[&9], Outcome::Miss);
    let l = v2.lookup(&[9]).await.unwrap();
    assert_eq!(
        (l.values[&9].as_str(), l.outcomes[&9]),
        ("nine", Outcome::Miss)
    );

    let raw = remote(&url).await;
    let fill = Fill {
        key: format!("{ns}:items:10"),
        version: 0,
        value: b"garbage".to_vec(),
        ttl_secs: 60,
    };
    raw.fill(&[fill]).await.unwrap();
    let l = v1.lookup(&[10]).await.unwrap();
    assert_eq!(
        (l.values[&10].as_str(), l.outcomes[&10]),
        ("ten", Outcome::Miss)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_survive_a_redis_outage_and_use_redis_again_after_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let start = || {
        tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("this test needs redis-server on PATH (Debian: apt-get install redis-server)")
    };
    let mut server = start();
    let ns = namespace("outage");
    let cfg = CacheConfig {
        breaker_failures: 2,
        breaker_cooldown: Duration::from_millis(200),
        redis_timeout: Duration::from_millis(100),
        ..config(&ns)
    };
    let source = Arc::new(Source::default());
    for k in 0..200 {
        source.set(k, &format!("v{k}"));
    }
    let a = replica(cfg.clone(), &source, &url).await;
    let b = replica(cfg.clone(), &source, &url).await;
    assert_eq!(a.lookup(&[1]).await.unwrap().outcomes[&1], Outcome::Miss);
    assert_eq!(b.lookup(&[1]).await.unwrap().outcomes[&1], Outcome::HitL2);

    server.kill().await.unwrap();
    for k in 2..30 {
        let l = a
            .lookup(&[k])
            .await
            .expect("no lookup fails because redis is down");
        assert_eq!(l.values[&k], format!("v{k}"));
    }
    // The L1 keeps serving (it was flushed when the invalidation connection dropped, and
    // is refilled from the loader).
    a.lookup(&[1]).await.unwrap();
    assert_eq!(a.lookup(&[1]).await.unwrap().outcomes[&1], Outcome::HitL1);
    assert!(a.stats().redis_errors >= 2, "{:?}", a.stats());
    assert!(
        a.l2_bypassed(),
        "the breaker skips redis after repeated failures"
    );

    let _server = start();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut key = 100;
    loop {
        // A value filled through one replica and read by the other proves L2 is back.
        a.lookup(&[key]).await.unwrap();
        if b.lookup(&[key]).await.unwrap().outcomes[&key] == Outcome::HitL2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "redis was not used again after the restart"
        );
        key += 1;
        // Waiting on an external process's restart and the client's reconnect back-off.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!a.l2_bypassed());
    assert!(
        a.stats().l1_flushes >= 1,
        "a dropped invalidation connection flushes the l1"
    );
}
