//! Admission: how many requests run at once. `--max-concurrency` is the ceiling; below
//! it the limit adapts to measured latency with Netflix's Gradient2 (`tower-acc`): when
//! requests slow down because they queue inside the process the limit falls, and the
//! excess waits at the door (and is shed with 503 after the queue timeout) instead of
//! slowing everyone; when latency holds, it grows back to the ceiling. Behind a load
//! balancer this is how a replica protects itself without a hand-tuned number.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{AcquireError, Semaphore, SemaphorePermit};
use tower_acc::{Algorithm, Gradient2};

/// The permits and the limit they follow.
#[derive(Debug)]
pub(crate) struct Admission {
    permits: Semaphore,
    ceiling: usize,
    /// The algorithm and the permits it has issued; `None` for a fixed limit.
    state: Option<Mutex<State>>,
    /// The limit now, for `/metrics`.
    limit: AtomicUsize,
}

#[derive(Debug)]
struct State {
    algorithm: Gradient2,
    issued: usize,
}

/// The lowest the adaptive limit goes: enough to keep both cores busy with requests
/// that wait on I/O.
const FLOOR: usize = 8;

/// Under light load, one finished request in this many (per thread) is a sample.
const LIGHT_SAMPLE: u32 = 32;

thread_local! {
    /// Finished requests of this thread under light load.
    static LIGHT: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

impl Admission {
    /// `ceiling` permits; adaptive below it when `adaptive`.
    pub(crate) fn new(ceiling: usize, adaptive: bool) -> Self {
        let ceiling = ceiling.max(1);
        let state = adaptive.then(|| {
            Mutex::new(State {
                algorithm: Gradient2::builder()
                    .initial_limit(ceiling)
                    .min_limit(FLOOR.min(ceiling))
                    .max_limit(ceiling)
                    .build(),
                issued: ceiling,
            })
        });
        Self {
            permits: Semaphore::new(ceiling),
            ceiling,
            state,
            limit: AtomicUsize::new(ceiling),
        }
    }

    /// Waits for a permit; the ticket reports the request's latency when it finishes.
    pub(crate) async fn acquire(&self) -> Result<Ticket<'_>, AcquireError> {
        let permit = self.permits.acquire().await?;
        Ok(Ticket {
            admission: self,
            _permit: permit,
            started: Instant::now(),
        })
    }

    /// The concurrency limit now.
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// The ceiling the limit never passes.
    pub(crate) fn ceiling(&self) -> usize {
        self.ceiling
    }

    /// Feeds one finished request to the algorithm and moves the permits to its limit.
    /// Under light load (fewer than half the permits taken, when Gradient2 keeps the limit
    /// and only tracks latency) one request in [`LIGHT_SAMPLE`] per thread is fed, so the
    /// warm path adds no shared write; a sample that finds the state busy is skipped
    /// rather than waited for. A request never queues on its own bookkeeping.
    fn observe(&self, rtt: Duration, failed: bool) {
        let Some(state) = &self.state else {
            return;
        };
        let limit = self.limit.load(Ordering::Relaxed);
        if limit.saturating_sub(self.permits.available_permits()) * 2 < limit {
            let n = LIGHT.with(|c| {
                let n = c.get().wrapping_add(1);
                c.set(n);
                n
            });
            if !n.is_multiple_of(LIGHT_SAMPLE) {
                return;
            }
        }
        let Ok(mut state) = state.try_lock() else {
            return;
        };
        // This request's permit is still held: it counts as in flight.
        let in_flight = state
            .issued
            .saturating_sub(self.permits.available_permits());
        state.algorithm.update(rtt, in_flight, failed, false);
        let want = state.algorithm.max_concurrency().clamp(1, self.ceiling);
        if want > state.issued {
            self.permits.add_permits(want - state.issued);
            state.issued = want;
        } else if want < state.issued {
            // Only idle permits can be taken back now; the rest on later samples.
            state.issued -= self.permits.forget_permits(state.issued - want);
        }
        self.limit.store(state.issued, Ordering::Relaxed);
    }
}

/// A request's permit. [`Ticket::finish`] reports how it went; dropped unfinished (the
/// client left) it only returns the permit: the algorithm learns nothing from a
/// canceled request.
#[derive(Debug)]
pub(crate) struct Ticket<'a> {
    admission: &'a Admission,
    _permit: SemaphorePermit<'a>,
    started: Instant,
}

impl Ticket<'_> {
    /// The request finished; `failed` when the server failed it (5xx).
    pub(crate) fn finish(self, failed: bool) {
        let rtt = self.started.elapsed();
        self.finish_after(rtt, failed);
    }

    /// [`Ticket::finish`] with the latency given.
    fn finish_after(self, rtt: Duration, failed: bool) {
        self.admission.observe(rtt, failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` requests held at once, each finishing after `rtt`.
    async fn round(a: &Admission, n: usize, rtt: Duration) {
        let mut held = Vec::new();
        for _ in 0..n.min(a.limit()) {
            held.push(a.acquire().await.unwrap());
        }
        for t in held {
            t.finish_after(rtt, false);
        }
    }

    #[tokio::test]
    async fn the_limit_falls_when_latency_rises_under_load_and_recovers_when_it_holds() {
        let a = Admission::new(64, true);
        assert_eq!(a.limit(), 64);
        // A baseline at full concurrency: 1 ms.
        for _ in 0..20 {
            round(&a, 64, Duration::from_millis(1)).await;
        }
        assert_eq!(a.limit(), 64, "steady latency keeps the ceiling");
        // Requests start queueing inside the process: ten times slower. (Sustained, the
        // slower latency becomes the new baseline: Gradient2 follows it back up.)
        for _ in 0..3 {
            round(&a, 64, Duration::from_millis(10)).await;
        }
        let fallen = a.limit();
        assert!(fallen < 32, "the limit fell: {fallen}");
        assert!(fallen >= FLOOR, "never below the floor: {fallen}");
        assert_eq!(
            a.permits.available_permits(),
            fallen,
            "idle permits follow the limit"
        );
        // Latency back to the baseline: the limit grows back toward the ceiling.
        for _ in 0..200 {
            round(&a, 64, Duration::from_millis(1)).await;
        }
        assert!(a.limit() > fallen * 2, "it recovered: {}", a.limit());
        assert!(a.limit() <= 64);
    }

    #[tokio::test]
    async fn a_fixed_limit_never_moves() {
        let a = Admission::new(16, false);
        for _ in 0..20 {
            round(&a, 16, Duration::from_millis(50)).await;
        }
        assert_eq!(a.limit(), 16);
        assert_eq!(a.permits.available_permits(), 16);
    }

    #[tokio::test]
    async fn a_dropped_ticket_returns_its_permit_and_teaches_nothing() {
        let a = Admission::new(4, true);
        let t = a.acquire().await.unwrap();
        assert_eq!(a.permits.available_permits(), 3);
        drop(t);
        assert_eq!(a.permits.available_permits(), 4);
        assert_eq!(a.limit(), 4);
    }
}
