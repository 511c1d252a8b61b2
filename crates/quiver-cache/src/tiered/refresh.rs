//! Stale-while-revalidate: a stale key joins its cache's queue and one task refreshes the
//! queue in batches, from the source.

use super::{CacheKey, Fast, Inner, Tiered};
use quiver_model::Loader;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

impl<L> Tiered<L>
where
    L: Loader + 'static,
    L::Key: CacheKey,
{
    /// Queues the background refresh of a stale `key`, unless it is queued already, and
    /// starts the refresher if none is running.
    pub(super) fn refresh(&self, key: &L::Key) {
        let mut r = self.inner.refreshing.lock().expect("refreshing lock");
        if !r.queued.insert(key.clone()) {
            return;
        }
        r.next.push(key.clone());
        if r.running {
            return;
        }
        r.running = true;
        drop(r);
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.refresh_queued().await });
    }
}

/// Stale keys and their refresher. One task refreshes them in batches, oldest first:
/// entries filled together come due together, and one load (one L2 round trip each way,
/// one loader call) for a batch costs a fraction of one per key, so a wave of expiries
/// is not a burst of work that delays the requests served meanwhile.
pub(super) struct Refreshes<K> {
    /// Every key waiting or being refreshed, so each is refreshed once at a time.
    queued: HashSet<K, Fast>,
    /// The keys not yet taken by the refresher, in the order they came due.
    next: Vec<K>,
    /// Whether the refresher task is running.
    running: bool,
}

impl<K> Default for Refreshes<K> {
    fn default() -> Self {
        Self {
            queued: HashSet::default(),
            next: Vec::new(),
            running: false,
        }
    }
}

/// The most keys one background refresh loads together.
const REFRESH_BATCH: usize = 256;

/// Clears `running` if the refresher ends any other way than by running out of keys (a
/// panic, or the runtime shutting down), so that the next stale key starts a new one;
/// the keys still queued are forgotten and queued again when next found stale.
struct Refresher<'a, K> {
    refreshes: &'a Mutex<Refreshes<K>>,
    armed: bool,
}

impl<K> Drop for Refresher<'_, K> {
    fn drop(&mut self) {
        if self.armed {
            let mut r = self.refreshes.lock().unwrap_or_else(|p| p.into_inner());
            r.running = false;
            r.queued.clear();
            r.next.clear();
        }
    }
}

impl<L> Inner<L>
where
    L: Loader + 'static,
    L::Key: CacheKey,
{
    /// The refresher: loads the queued stale keys a batch at a time until none is left.
    /// A refresh goes to the source: the L2 copy is as old as the stale one.
    async fn refresh_queued(self: Arc<Self>) {
        let mut guard = Refresher {
            refreshes: &self.refreshing,
            armed: true,
        };
        loop {
            let batch: Vec<L::Key> = {
                let mut r = self.refreshing.lock().expect("refreshing lock");
                let n = r.next.len().min(REFRESH_BATCH);
                if n == 0 {
                    // Under the lock that `refresh` takes: a key queued after this
                    // starts a new refresher.
                    r.running = false;
                    guard.armed = false;
                    return;
                }
                r.next.drain(..n).collect()
            };
            if let Err(e) = self.load(&batch, false).await {
                tracing::warn!(error = %e, cache = %self.config.name, keys = batch.len(), "background refresh failed");
            }
            let mut r = self.refreshing.lock().expect("refreshing lock");
            for k in &batch {
                r.queued.remove(k);
            }
        }
    }
}
