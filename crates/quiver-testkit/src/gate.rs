//! A gate that loaders pass through, so a test can hold loads mid-flight at a known
//! point, count them, let them go one at a time or all at once, and see which ones were
//! dropped (cancelled) while held.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::{Notify, Semaphore};

/// Holds every load that reaches it while closed. Open by default.
#[derive(Debug)]
pub struct Gate {
    closed: AtomicBool,
    permits: Semaphore,
    entered: AtomicUsize,
    arrived: Notify,
    dropped: AtomicUsize,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            closed: AtomicBool::new(false),
            permits: Semaphore::new(0),
            entered: AtomicUsize::new(0),
            arrived: Notify::new(),
            dropped: AtomicUsize::new(0),
        }
    }
}

impl Gate {
    /// Later loads wait at the gate.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Later loads pass; the ones held stay held until [`Gate::release`].
    pub fn stop_holding(&self) {
        self.closed.store(false, Ordering::SeqCst);
    }

    /// Lets `n` held (or later held) loads go on.
    pub fn release(&self, n: usize) {
        self.permits.add_permits(n);
    }

    /// Lets every held and later load through.
    pub fn open(&self) {
        self.stop_holding();
        self.release(1 << 20);
    }

    /// How many loads have been held so far.
    pub fn entered(&self) -> usize {
        self.entered.load(Ordering::SeqCst)
    }

    /// How many held loads were dropped before the gate let them go.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }

    /// Waits until `n` loads have been held, failing the test after [`crate::DEADLINE`].
    pub async fn wait_entered(&self, n: usize) {
        let wait = async {
            while self.entered() < n {
                self.arrived.notified().await;
            }
        };
        tokio::time::timeout(crate::DEADLINE, wait)
            .await
            .unwrap_or_else(|_| panic!("{n} loads did not reach the gate"));
    }

    /// What a loader calls at the point a test wants to hold it: passes at once while the
    /// gate is open, else waits for a permit (a dropped wait counts as dropped).
    pub async fn pass(&self) {
        if !self.closed.load(Ordering::SeqCst) {
            return;
        }
        let mut held = Held(self, true);
        self.entered.fetch_add(1, Ordering::SeqCst);
        self.arrived.notify_one();
        self.permits
            .acquire()
            .await
            .expect("the gate's semaphore is never closed")
            .forget();
        held.1 = false;
    }
}

/// Counts a held load as dropped unless the gate let it go.
struct Held<'a>(&'a Gate, bool);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.1 {
            self.0.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_closed_gate_holds_until_released_and_counts_a_dropped_wait() {
        let gate = Arc::new(Gate::default());
        gate.pass().await; // open: passes at once
        assert_eq!(gate.entered(), 0);
        gate.close();
        let held = tokio::spawn({
            let g = gate.clone();
            async move { g.pass().await }
        });
        let dropped = tokio::spawn({
            let g = gate.clone();
            async move { g.pass().await }
        });
        gate.wait_entered(2).await;
        dropped.abort();
        assert!(dropped.await.unwrap_err().is_cancelled());
        assert_eq!(gate.dropped(), 1);
        gate.stop_holding();
        gate.pass().await; // later loads pass; the held one still waits
        assert!(!held.is_finished());
        gate.release(1);
        held.await.unwrap();
        assert_eq!((gate.entered(), gate.dropped()), (2, 1));
    }
}
