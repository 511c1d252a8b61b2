//! Prefetch: the engine's decision to warm a next page (`Engine::warm`: only pages a
//! cached head or window holds, only when they are not fresh already, once per viewer
//! and cursor; the job loads, never renders), and the bounded pool that runs the jobs. When
//! its queue is full the job is dropped, a counter rises and the pressure signal is raised
//! (the server wires it to the caches' adaptive TTLs, as the Go service stretched TTLs
//! when its pool was full); the first job that succeeds afterwards clears it.

use crate::engine::Engine;
use crate::error::{EnrichError, Part};
use crate::hydrate::Assembled;
use futures::future::BoxFuture;
use quiver_model::LoadError;
use quiver_model::{Cursor, FeedHead, HasErrorCode, PostId, UserId};
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::mpsc;

/// Where the pool reports pressure.
pub trait PressureSignal: Send + Sync {
    /// `true` when jobs are being dropped, `false` when they succeed again.
    fn set_pressure(&self, raised: bool);
}

impl<F: Fn(bool) + Send + Sync> PressureSignal for F {
    fn set_pressure(&self, raised: bool) {
        self(raised)
    }
}

/// Sizes of the pool.
#[derive(Clone, Copy, Debug)]
pub struct PrefetchConfig {
    /// Jobs running at once.
    pub workers: usize,
    /// Jobs waiting for a worker; one more is dropped.
    pub queue: usize,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            queue: 64,
        }
    }
}

/// A prefetch job: warm something, report whether it worked.
pub type Job = BoxFuture<'static, Result<(), LoadError>>;

/// Counters of the pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefetchStats {
    /// Next pages not warmed because they were warm already or being warmed.
    pub skipped: u64,
    pub submitted: u64,
    pub dropped: u64,
    pub succeeded: u64,
    pub failed: u64,
}

#[derive(Default)]
struct Counters {
    skipped: AtomicU64,
    submitted: AtomicU64,
    dropped: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
}

/// The pool. Dropping it stops the workers once the queue is drained.
pub struct PrefetchPool {
    tx: mpsc::Sender<Job>,
    counters: Arc<Counters>,
    signal: Arc<dyn PressureSignal>,
    /// Whether the signal is raised, so it is raised and cleared once per episode.
    raised: Arc<AtomicBool>,
}

impl fmt::Debug for PrefetchPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefetchPool")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl PrefetchPool {
    /// Starts `config.workers` workers on the current runtime.
    pub fn new(config: PrefetchConfig, signal: Arc<dyn PressureSignal>) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(config.queue.max(1));
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let counters = Arc::new(Counters::default());
        let raised = Arc::new(AtomicBool::new(false));
        for _ in 0..config.workers.max(1) {
            let (rx, counters, raised, signal) =
                (rx.clone(), counters.clone(), raised.clone(), signal.clone());
            tokio::spawn(async move {
                loop {
                    let job = rx.lock().await.recv().await;
                    let Some(job) = job else { return };
                    match job.await {
                        Ok(()) => {
                            counters.succeeded.fetch_add(1, Ordering::Relaxed);
                            if raised.swap(false, Ordering::AcqRel) {
                                signal.set_pressure(false);
                            }
                        }
                        Err(e) => {
                            counters.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(error = %e, "prefetch failed");
                        }
                    }
                }
            });
        }
        Self {
            tx,
            counters,
            signal,
            raised,
        }
    }

    /// Queues `job`, or drops it (and raises the signal) when the queue is full. Returns
    /// whether it was queued. Never waits.
    pub fn submit(&self, job: Job) -> bool {
        self.counters.submitted.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(_) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.raised.swap(true, Ordering::AcqRel) {
                    self.signal.set_pressure(true);
                }
                false
            }
        }
    }

    /// Counts a next page that needed no job (already warm, or being warmed).
    pub fn skipped_warm(&self) {
        self.counters.skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the pressure signal is raised now.
    pub fn pressure_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Jobs waiting for a worker now.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// The counters.
    pub fn stats(&self) -> PrefetchStats {
        PrefetchStats {
            skipped: self.counters.skipped.load(Ordering::Relaxed),
            submitted: self.counters.submitted.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            succeeded: self.counters.succeeded.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
        }
    }
}

impl Engine {
    /// Warms the page after `a` when `head` holds it: past the head its skeleton is a
    /// query, and warming it would cost what it saves.
    pub(crate) fn warm_next(
        &self,
        viewer: i64,
        a: &Assembled,
        head: Option<&FeedHead>,
        limit: usize,
    ) {
        if let (Some(next), Some(head)) = (a.filled.next, head)
            && let Some(refs) = head.refs(Some(Cursor::after(&next)), limit as u32)
        {
            // The ids are collected only for a job: a warm next page costs two peeks.
            let ends = refs.first().zip(refs.last()).map(|(f, l)| [f.id, l.id]);
            self.warm((viewer, next.id.0), ends, || {
                refs.iter().map(|r| r.id).collect()
            });
        }
    }

    /// Warms the items and authors of a next page in the background, unless they are
    /// all fresh already or the same page is being warmed. The job only loads (what the
    /// caches lack); it never renders.
    ///
    /// `ends` are the page's first and last items (none for an empty page): a page's
    /// items are loaded together (by the page, or by a warming), so they stand for the
    /// rest, two peeks instead of one per item on every request. A page warm but for a
    /// few items is not warmed; it loads those in line. `ids` gives the page's items,
    /// called only when a job is submitted.
    pub(crate) fn warm(
        &self,
        key: (i64, i64),
        ends: Option<[PostId; 2]>,
        ids: impl FnOnce() -> Vec<PostId>,
    ) {
        let Some(pool) = &self.inner.prefetch else {
            return;
        };
        let s = &self.inner.sources;
        if ends.is_none_or(|ends| s.items.fresh(&ends)) {
            pool.skipped_warm();
            return;
        }
        if !self.inner.warming.lock().expect("warming lock").insert(key) {
            pool.skipped_warm();
            return;
        }
        let ids = ids();
        let engine = self.clone();
        let job: BoxFuture<'static, Result<(), EnrichError>> = Box::pin(async move {
            let _done = Warming(&engine.inner.warming, key);
            let s = &engine.inner.sources;
            let items = s
                .items
                .load_shared(&ids)
                .await
                .map_err(EnrichError::load(Part::Posts))?;
            let mut authors: Vec<UserId> = Vec::with_capacity(items.len());
            for item in items.iter().flatten() {
                if !authors.contains(&item.post.author_id) {
                    authors.push(item.post.author_id);
                }
            }
            if !s.authors.fresh(&authors) {
                s.authors
                    .load_shared(&authors)
                    .await
                    .map_err(EnrichError::load(Part::Authors))?;
            }
            Ok(())
        });
        let submitted = pool.submit(Box::pin(async move {
            job.await
                .map_err(|e| LoadError::new(e.code(), e.to_string()))
        }));
        if !submitted {
            self.inner
                .warming
                .lock()
                .expect("warming lock")
                .remove(&key);
        }
    }
}

/// Ends a warming entry when its job finishes or is dropped.
struct Warming<'a>(&'a std::sync::Mutex<HashSet<(i64, i64)>>, (i64, i64));

impl Drop for Warming<'_> {
    fn drop(&mut self) {
        self.0.lock().expect("warming lock").remove(&self.1);
    }
}
