//! Chooses the invalidation transport by measurement: Redis server-assisted client
//! tracking (`CLIENT TRACKING ON BCAST PREFIX`, RESP3) against a pub/sub channel, on the
//! same workload of cache fills and invalidations. Reports how many messages one replica
//! receives and how long an invalidation takes to arrive.
//!
//! Run with `cargo bench -p quiver-benches --bench invalidation` (`REDIS_URL` picks the server).

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::RespVersion;
use std::time::{Duration, Instant};

const FILLS: usize = 2_000;
const INVALIDATIONS: usize = 20;
const LATENCY_SAMPLES: usize = 200;

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

async fn client(resp3: bool) -> Client {
    let mut config = Config::from_url(&url()).unwrap();
    if resp3 {
        config.version = RespVersion::RESP3;
    }
    let c = Builder::from_config(config)
        .with_performance_config(|p| p.broadcast_channel_capacity = 1 << 16)
        .build()
        .unwrap();
    c.init().await.unwrap();
    c
}

fn percentile(v: &mut [Duration], q: f64) -> Duration {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

/// The writer fills `FILLS` keys and invalidates `INVALIDATIONS` of them; returns how many
/// keys the tracking replica was told about, and the delivery latency of invalidations.
async fn tracking(prefix: &str) -> (usize, Vec<Duration>) {
    let replica = client(true).await;
    let writer = client(false).await;
    let mut rx = replica.invalidation_rx();
    replica
        .start_tracking(vec![prefix.to_owned()], true, false, false, false)
        .await
        .unwrap();
    let count = async |rx: &mut tokio::sync::broadcast::Receiver<
        fred::types::client::Invalidation,
    >| {
        let mut n = 0;
        while let Ok(Ok(inv)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
            n += inv.keys.len();
        }
        n
    };
    for i in 0..FILLS {
        let _: () = writer
            .set(
                format!("{prefix}{i}"),
                "v",
                Some(Expiration::EX(60)),
                None,
                false,
            )
            .await
            .unwrap();
    }
    for i in 0..INVALIDATIONS {
        let _: i64 = writer.del(format!("{prefix}{i}")).await.unwrap();
    }
    let messages = count(&mut rx).await;
    let mut latency = Vec::new();
    for i in 0..LATENCY_SAMPLES {
        let key = format!("{prefix}lat{i}");
        // The write that invalidates: a replica hears of every change under the prefix.
        let started = Instant::now();
        let _: () = writer.set(&key, "v", None, None, false).await.unwrap();
        rx.recv().await.unwrap();
        latency.push(started.elapsed());
        while rx.try_recv().is_ok() {}
    }
    (messages, latency)
}

async fn pubsub(prefix: &str) -> (usize, Vec<Duration>) {
    let channel = format!("{prefix}invalidate");
    let config = Config::from_url(&url()).unwrap();
    let replica: SubscriberClient = Builder::from_config(config)
        .build_subscriber_client()
        .unwrap();
    replica.init().await.unwrap();
    let mut rx = replica.message_rx();
    replica.subscribe(channel.clone()).await.unwrap();
    let writer = client(false).await;
    for i in 0..FILLS {
        let _: () = writer
            .set(
                format!("{prefix}{i}"),
                "v",
                Some(Expiration::EX(60)),
                None,
                false,
            )
            .await
            .unwrap();
    }
    for i in 0..INVALIDATIONS {
        let _: i64 = writer.del(format!("{prefix}{i}")).await.unwrap();
        let _: i64 = writer
            .publish(&channel, format!("[\"{prefix}{i}\"]"))
            .await
            .unwrap();
    }
    let mut messages = 0;
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        messages += 1;
    }
    let mut latency = Vec::new();
    for i in 0..LATENCY_SAMPLES {
        let started = Instant::now();
        let _: i64 = writer
            .publish(&channel, format!("[\"{prefix}lat{i}\"]"))
            .await
            .unwrap();
        rx.recv().await.unwrap();
        latency.push(started.elapsed());
    }
    (messages, latency)
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pid = std::process::id();
    let (t_msgs, mut t_lat) = rt.block_on(tracking(&format!("qinv:{pid}:t:")));
    let (p_msgs, mut p_lat) = rt.block_on(pubsub(&format!("qinv:{pid}:p:")));
    println!(
        "| transport ({FILLS} fills, {INVALIDATIONS} invalidations) | keys one replica is told about | p50 delivery | p99 delivery |"
    );
    println!("| --- | --- | --- | --- |");
    println!(
        "| client tracking, BCAST prefix | {t_msgs} | {:?} | {:?} |",
        percentile(&mut t_lat, 0.5),
        percentile(&mut t_lat, 0.99)
    );
    println!(
        "| pub/sub channel | {p_msgs} | {:?} | {:?} |",
        percentile(&mut p_lat, 0.5),
        percentile(&mut p_lat, 0.99)
    );
}
