//! Cross-request coalescing with DataLoader semantics and natural batching: while the
//! inner loader is idle a batch leaves at once; while one is loading, the keys concurrent
//! callers ask for collect into the next batch until it returns (at most a short window,
//! or until the batch is full). Each caller gets exactly the results, or the error, for
//! its own keys.

use async_trait::async_trait;
use quiver_model::{ErrorCode, LoadError, Loader, dedup_keys};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

/// When a batch is sent.
#[derive(Clone, Copy, Debug)]
pub struct BatchConfig {
    /// How long a batch waits at most for the one loading before it to return.
    pub window: Duration,
    /// A batch with this many distinct keys is sent at once.
    pub max_keys: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_millis(1),
            max_keys: 500,
        }
    }
}

type Reply<K, V> = oneshot::Sender<Result<HashMap<K, V>, LoadError>>;

/// The batch being collected.
struct Pending<K, V> {
    keys: Vec<K>,
    seen: HashSet<K>,
    /// Each caller's own keys and where its answer goes.
    waiters: Vec<(Vec<K>, Reply<K, V>)>,
    /// Woken when the batch is full, so it leaves before its window ends.
    full: Arc<Notify>,
}

/// A [`Loader`] that coalesces concurrent calls into batches of the inner loader.
pub struct Batcher<L: Loader> {
    inner: Arc<Shared<L>>,
}

struct Shared<L: Loader> {
    loader: L,
    config: BatchConfig,
    /// The batch being collected, if any. A batch is taken out (and a new one starts)
    /// when its dispatcher wakes, so keys never join a batch that is already loading.
    pending: Mutex<Option<Pending<L::Key, L::Value>>>,
    /// Batches loading now.
    loading: AtomicUsize,
    /// Woken when a loading batch returns.
    returned: Notify,
}

/// Counts a batch as loading until it returns (or its task is dropped).
struct Loading<'a>(&'a AtomicUsize, &'a Notify);

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        self.1.notify_waiters();
    }
}

impl<L: Loader> Clone for Batcher<L> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<L: Loader> fmt::Debug for Batcher<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl<L: Loader + 'static> Batcher<L> {
    /// Coalesces calls to `loader` as `config` says.
    pub fn new(loader: L, config: BatchConfig) -> Self {
        Self {
            inner: Arc::new(Shared {
                loader,
                config,
                pending: Mutex::new(None),
                loading: AtomicUsize::new(0),
                returned: Notify::new(),
            }),
        }
    }

    async fn dispatch(inner: Arc<Shared<L>>, full: Arc<Notify>) {
        // Registered before the check, so a batch returning in between is not missed.
        let returned = inner.returned.notified();
        tokio::pin!(returned);
        returned.as_mut().enable();
        if inner.loading.load(Ordering::Acquire) > 0 {
            tokio::select! {
                () = tokio::time::sleep(inner.config.window) => {}
                () = full.notified() => {}
                () = returned => {}
            }
        } else {
            // Idle: the callers already woken with this one join, then the batch leaves.
            tokio::task::yield_now().await;
        }
        let Some(batch) = inner.pending.lock().expect("batcher lock").take() else {
            return;
        };
        inner.loading.fetch_add(1, Ordering::AcqRel);
        let _loading = Loading(&inner.loading, &inner.returned);
        let result = inner.loader.load_many(&batch.keys).await;
        for (keys, reply) in batch.waiters {
            let answer = match &result {
                // Each caller gets its own keys only, never another caller's.
                Ok(found) => Ok(keys
                    .iter()
                    .filter_map(|k| found.get(k).map(|v| (k.clone(), v.clone())))
                    .collect()),
                Err(e) => Err(e.clone()),
            };
            let _ = reply.send(answer);
        }
    }
}

#[async_trait]
impl<L: Loader + 'static> Loader for Batcher<L> {
    type Key = L::Key;
    type Value = L::Value;

    async fn load_many(&self, keys: &[L::Key]) -> Result<HashMap<L::Key, L::Value>, LoadError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let keys = dedup_keys(keys);
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut pending = self.inner.pending.lock().expect("batcher lock");
            let fresh = pending.is_none();
            let batch = pending.get_or_insert_with(|| Pending {
                keys: Vec::new(),
                seen: HashSet::new(),
                waiters: Vec::new(),
                full: Arc::new(Notify::new()),
            });
            for k in &keys {
                if batch.seen.insert(k.clone()) {
                    batch.keys.push(k.clone());
                }
            }
            batch.waiters.push((keys, tx));
            if batch.keys.len() >= self.inner.config.max_keys {
                batch.full.notify_one();
            }
            fresh.then(|| batch.full.clone())
        };
        if let Some(full) = start {
            // The batch is traced as part of the request that opened it.
            let dispatch = Self::dispatch(self.inner.clone(), full);
            tokio::spawn(tracing::Instrument::in_current_span(dispatch));
        }
        rx.await.unwrap_or_else(|_| {
            Err(LoadError::new(
                ErrorCode::Internal,
                "batch load was abandoned",
            ))
        })
    }
}
