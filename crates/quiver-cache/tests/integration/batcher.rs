//! Cross-request coalescing: fewer batch calls, each caller gets exactly its own keys, and
//! a batch waits only while another is loading (natural batching).

use async_trait::async_trait;
use quiver_cache::{BatchConfig, Batcher};
use quiver_model::{ErrorCode, LoadError, Loader};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Values are `key * 10`; keys ≥ 1000 do not exist; key 666 fails the whole batch.
#[derive(Default)]
struct Counting {
    calls: AtomicUsize,
    batches: Mutex<Vec<Vec<u64>>>,
}

#[async_trait]
impl Loader for Counting {
    type Key = u64;
    type Value = u64;
    async fn load_many(&self, keys: &[u64]) -> Result<HashMap<u64, u64>, LoadError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.batches.lock().unwrap().push(keys.to_vec());
        if keys.contains(&666) {
            return Err(LoadError::new(
                ErrorCode::Unavailable,
                "database unavailable",
            ));
        }
        Ok(keys
            .iter()
            .filter(|k| **k < 1000)
            .map(|k| (*k, k * 10))
            .collect())
    }
}

#[tokio::test(start_paused = true)]
async fn fifty_concurrent_requests_share_few_batches_and_get_only_their_own_keys() {
    let loader = std::sync::Arc::new(Counting::default());
    let batcher = Batcher::new(
        loader.clone(),
        BatchConfig {
            window: Duration::from_millis(1),
            max_keys: 10_000,
        },
    );
    let tasks: Vec<_> = (0..50u64)
        .map(|i| {
            let b = batcher.clone();
            // Overlapping ranges, one missing key each, duplicates inside a request.
            let keys: Vec<u64> = (i..i + 20).chain([i, 1000 + i]).collect();
            tokio::spawn(async move { (keys.clone(), b.load_many(&keys).await.unwrap()) })
        })
        .collect();
    for t in tasks {
        let (keys, got) = t.await.unwrap();
        let want: HashMap<u64, u64> = keys
            .iter()
            .filter(|k| **k < 1000)
            .map(|k| (*k, k * 10))
            .collect();
        assert_eq!(got, want, "exactly this request's keys, no others");
    }
    let calls = loader.calls.load(Ordering::SeqCst);
    assert!(calls <= 2, "{calls} batch calls for 50 requests");
    // Batches carry each distinct key once.
    for batch in loader.batches.lock().unwrap().iter() {
        assert_eq!(batch.len(), batch.iter().collect::<HashSet<_>>().len());
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_fails_every_caller_in_it_with_the_same_error() {
    let batcher = Batcher::new(Counting::default(), BatchConfig::default());
    let (a, b) = tokio::join!(batcher.load_many(&[1, 666]), batcher.load_many(&[2]));
    assert_eq!(a.unwrap_err().code(), ErrorCode::Unavailable);
    assert_eq!(b.unwrap_err().code(), ErrorCode::Unavailable);
    // The next batch is unaffected.
    assert_eq!(batcher.load_many(&[3]).await.unwrap()[&3], 30);
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_leaves_before_its_window_and_empty_input_loads_nothing() {
    let loader = std::sync::Arc::new(Counting::default());
    let batcher = Batcher::new(
        loader.clone(),
        BatchConfig {
            window: Duration::from_secs(3600),
            max_keys: 3,
        },
    );
    // Paused time never reaches the hour-long window: only the full batch can leave.
    let got = batcher.load_many(&[1, 2, 3]).await.unwrap();
    assert_eq!(got.len(), 3);
    assert!(batcher.load_many(&[]).await.unwrap().is_empty());
    assert_eq!(loader.calls.load(Ordering::SeqCst), 1);
}

/// Records each batch; the first one blocks until the test lets it go.
struct Gated {
    first: Mutex<Option<oneshot::Receiver<()>>>,
    batches: Mutex<Vec<Vec<u64>>>,
}

#[async_trait]
impl Loader for Gated {
    type Key = u64;
    type Value = u64;
    async fn load_many(&self, keys: &[u64]) -> Result<HashMap<u64, u64>, LoadError> {
        self.batches.lock().unwrap().push(keys.to_vec());
        let gate = self.first.lock().unwrap().take();
        if let Some(gate) = gate {
            let _ = gate.await;
        }
        Ok(keys.iter().map(|k| (*k, k * 10)).collect())
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_loader_takes_a_batch_at_once_and_a_busy_one_gathers_the_next() {
    let hour = Duration::from_secs(3600);
    let (open, gate) = oneshot::channel();
    let loader = std::sync::Arc::new(Gated {
        first: Mutex::new(Some(gate)),
        batches: Mutex::new(Vec::new()),
    });
    let batcher = Batcher::new(
        loader.clone(),
        BatchConfig {
            window: hour,
            max_keys: 10_000,
        },
    );
    let started = Instant::now();
    // The first call finds the loader idle: its batch leaves without waiting an hour.
    let first = tokio::spawn({
        let b = batcher.clone();
        async move { b.load_many(&[1]).await }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        *loader.batches.lock().unwrap(),
        vec![vec![1]],
        "the first batch leaves at once"
    );
    // While it loads, two more callers gather into one batch, which leaves as soon as the
    // first returns (not when the hour-long window ends).
    let later: Vec<_> = [2u64, 3]
        .into_iter()
        .map(|k| {
            let b = batcher.clone();
            tokio::spawn(async move { b.load_many(&[k]).await })
        })
        .collect();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        *loader.batches.lock().unwrap(),
        vec![vec![1]],
        "the next batch waits"
    );
    open.send(()).unwrap();
    assert_eq!(first.await.unwrap().unwrap()[&1], 10);
    for (t, k) in later.into_iter().zip([2u64, 3]) {
        assert_eq!(t.await.unwrap().unwrap()[&k], k * 10);
    }
    assert_eq!(*loader.batches.lock().unwrap(), vec![vec![1], vec![2, 3]]);
    assert!(started.elapsed() < hour, "waited {:?}", started.elapsed());
}
