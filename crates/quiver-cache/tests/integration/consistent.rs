//! Consistent reads: a lookup inside `quiver_cache::consistent` sees an invalidation made
//! on another replica before that replica's message reaches this one's L1.

use crate::support::{Source, SourceLoader, config, namespace, redis_url, remote, replica};
use async_trait::async_trait;
use bytes::Bytes;
use quiver_cache::{Fill, Outcome, Remote, RemoteError, RemoteEvent, Tiered, consistent};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Redis as it is, except that invalidation messages never arrive: the window between an
/// invalidation on another replica and its message, held open.
#[derive(Debug)]
struct Deaf {
    redis: Arc<dyn Remote>,
    /// Kept so the listener's channel stays open and silent.
    senders: Mutex<Vec<mpsc::UnboundedSender<RemoteEvent>>>,
}

#[async_trait]
impl Remote for Deaf {
    async fn fetch(&self, keys: &[String]) -> Result<Vec<(Option<Bytes>, i64)>, RemoteError> {
        self.redis.fetch(keys).await
    }

    async fn fill(&self, fills: &[Fill]) -> Result<Vec<bool>, RemoteError> {
        self.redis.fill(fills).await
    }

    async fn invalidate(&self, keys: &[String], channel: &str) -> Result<(), RemoteError> {
        self.redis.invalidate(keys, channel).await
    }

    async fn listen(
        &self,
        _channel: &str,
    ) -> Result<mpsc::UnboundedReceiver<RemoteEvent>, RemoteError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.senders.lock().unwrap().push(tx);
        Ok(rx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistent_read_sees_another_replicas_invalidation_before_its_message() {
    let (url, ns) = (redis_url(), namespace("consistent"));
    let source = Arc::new(Source::default());
    source.set(1, "old");
    source.set(2, "old");
    let a = replica(config(&ns), &source, &url).await;
    let deaf = Deaf {
        redis: remote(&url).await,
        senders: Mutex::default(),
    };
    let b = Tiered::new(
        config(&ns),
        SourceLoader(source.clone()),
        Some(Arc::new(deaf)),
    )
    .await;
    b.lookup(&[1]).await.unwrap();
    assert_eq!(b.lookup(&[1]).await.unwrap().outcomes[&1], Outcome::HitL1);

    source.set(1, "new");
    a.invalidate(&[1]).await.unwrap();
    let plain = b.lookup(&[1]).await.unwrap();
    assert_eq!(
        (plain.values[&1].as_str(), plain.outcomes[&1]),
        ("old", Outcome::HitL1),
        "without the message, the L1 still answers"
    );
    let read = consistent(b.lookup(&[1])).await.unwrap();
    assert_eq!(
        read.values[&1], "new",
        "a consistent read skips the stale l1"
    );
    // What it loaded is what the L1 answers from now on.
    let after = b.lookup(&[1]).await.unwrap();
    assert_eq!(
        (after.values[&1].as_str(), after.outcomes[&1]),
        ("new", Outcome::HitL1)
    );

    // A load in flight on B that read the old value before the invalidation is not
    // waited for: the consistent read loads the key itself.
    source.gate.close();
    let slow = {
        let b = b.clone();
        tokio::spawn(async move { b.lookup(&[2]).await.unwrap() })
    };
    source.gate.wait_entered(1).await;
    source.set(2, "new");
    source.gate.stop_holding();
    a.invalidate(&[2]).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), consistent(b.lookup(&[2])))
        .await
        .expect("the consistent read waited for the load in flight")
        .unwrap();
    assert_eq!(read.values[&2], "new");
    source.gate.release(1);
    assert_eq!(slow.await.unwrap().values[&2], "old");
}
