//! What each lookup did, and counters of it per cache, for metrics and bench reports.

use std::sync::atomic::{AtomicU64, Ordering};

/// Where one key's answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Fresh in the process-local L1.
    HitL1,
    /// From Redis; the L1 was filled.
    HitL2,
    /// Loaded from the inner loader by this lookup.
    Miss,
    /// Another lookup in this process was already loading it; its result was shared.
    Coalesced,
    /// Past its soft TTL: served, and refreshed in the background.
    Stale,
    /// Known not to exist (negative entry).
    Negative,
}

impl Outcome {
    /// Every outcome, in a stable order.
    pub const ALL: [Outcome; 6] = [
        Outcome::HitL1,
        Outcome::HitL2,
        Outcome::Miss,
        Outcome::Coalesced,
        Outcome::Stale,
        Outcome::Negative,
    ];

    /// A stable lowercase label for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::HitL1 => "hit_l1",
            Outcome::HitL2 => "hit_l2",
            Outcome::Miss => "miss",
            Outcome::Coalesced => "coalesced",
            Outcome::Stale => "stale",
            Outcome::Negative => "negative",
        }
    }
}

/// Counters of one cache.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    outcomes: [AtomicU64; 6],
    loader_calls: AtomicU64,
    redis_errors: AtomicU64,
    l1_flushes: AtomicU64,
    l1_oversize: AtomicU64,
}

/// A point-in-time copy of a cache's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Count per outcome, indexed like [`Outcome::ALL`].
    pub outcomes: [u64; 6],
    /// Calls made to the inner loader.
    pub loader_calls: u64,
    /// Redis calls that failed or timed out.
    pub redis_errors: u64,
    /// Times the L1 was flushed because invalidations may have been missed.
    pub l1_flushes: u64,
    /// Values too heavy for one L1 shard, so kept in Redis only.
    pub l1_oversize: u64,
}

impl StatsSnapshot {
    /// The count of one outcome.
    pub fn get(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome as usize]
    }
}

impl Stats {
    /// Adds one batch's counts, indexed like [`Outcome::ALL`]: one atomic add per
    /// outcome that occurred, not one per key.
    pub(crate) fn add(&self, counts: &[u64; 6]) {
        for (counter, &n) in self.outcomes.iter().zip(counts) {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn loader_call(&self) {
        self.loader_calls.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn redis_error(&self) {
        self.redis_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn l1_oversize(&self) {
        self.l1_oversize.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn l1_flush(&self) {
        self.l1_flushes.fetch_add(1, Ordering::Relaxed);
    }

    /// Copies the counters.
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            outcomes: std::array::from_fn(|i| self.outcomes[i].load(Ordering::Relaxed)),
            loader_calls: self.loader_calls.load(Ordering::Relaxed),
            redis_errors: self.redis_errors.load(Ordering::Relaxed),
            l1_flushes: self.l1_flushes.load(Ordering::Relaxed),
            l1_oversize: self.l1_oversize.load(Ordering::Relaxed),
        }
    }
}
