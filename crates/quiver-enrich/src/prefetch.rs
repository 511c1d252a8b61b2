//! A bounded pool that warms what the next page lacks in the background after a page is
//! served (the engine submits a job only when the next page is not warm already). When
//! its queue is full the job is dropped, a counter rises and the pressure signal is raised
//! (the server wires it to the caches' adaptive TTLs, as the Go service stretched TTLs
//! when its pool was full); the first job that succeeds afterwards clears it.

use futures::future::BoxFuture;
use quiver_model::LoadError;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::{Mutex, mpsc};

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
        let rx = Arc::new(Mutex::new(rx));
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
