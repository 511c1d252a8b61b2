//! Local fencing against stale sets: a load remembers the generation of its key's stripe
//! when it starts and may fill the L1 only if no invalidation touched that stripe since.
//! Striping bounds memory; a collision only skips a fill, never serves stale data.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};

const STRIPES: usize = 4096;

/// Per-stripe generations plus an epoch that invalidates everything at once (used when
/// invalidation messages may have been missed).
#[derive(Debug)]
pub(crate) struct Fence {
    stripes: Box<[AtomicU64]>,
    epoch: AtomicU64,
    hasher: std::collections::hash_map::RandomState,
}

/// What a load saw when it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket {
    stripe: usize,
    generation: u64,
    epoch: u64,
}

impl Fence {
    pub(crate) fn new() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(0),
            hasher: Default::default(),
        }
    }

    fn stripe<K: Hash>(&self, key: &K) -> usize {
        self.hasher.hash_one(key) as usize % STRIPES
    }

    pub(crate) fn ticket<K: Hash>(&self, key: &K) -> Ticket {
        let stripe = self.stripe(key);
        Ticket {
            stripe,
            generation: self.stripes[stripe].load(Ordering::Acquire),
            epoch: self.epoch.load(Ordering::Acquire),
        }
    }

    pub(crate) fn still_valid(&self, t: Ticket) -> bool {
        self.stripes[t.stripe].load(Ordering::Acquire) == t.generation
            && self.epoch.load(Ordering::Acquire) == t.epoch
    }

    pub(crate) fn invalidate<K: Hash>(&self, key: &K) {
        self.stripes[self.stripe(key)].fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_dies_with_its_key_or_the_epoch() {
        let f = Fence::new();
        let t = f.ticket(&1u64);
        assert!(f.still_valid(t));
        f.invalidate(&1u64);
        assert!(!f.still_valid(t));
        let t = f.ticket(&1u64);
        f.invalidate_all();
        assert!(!f.still_valid(t));
    }
}
