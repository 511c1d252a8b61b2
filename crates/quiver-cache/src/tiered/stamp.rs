//! What a lookup inside a recording ([`quiver_model::fence`]) leaves: its keys' tickets,
//! taken before it read them, and the earliest soft TTL of the entries that answered; a
//! lookup the L1 could not answer whole makes the recording unusable.

use super::consistent_reads;
use crate::fence::{Fence, Ticket};
use crate::outcome::Outcome;
use std::sync::Arc;
use tokio::time::Instant;

/// The stamp a lookup inside a recording takes: its keys' tickets, and the earliest soft
/// TTL of the entries that answered (`None` once one could not be fenced).
pub(super) struct FenceStamp {
    pub(super) fence: Arc<Fence>,
    pub(super) tickets: Vec<Ticket>,
    pub(super) until: Option<Option<Instant>>,
}

impl FenceStamp {
    pub(super) fn answered(&mut self, outcome: Outcome, soft: Instant) {
        self.until = match (outcome, self.until) {
            (Outcome::HitL1 | Outcome::Negative, None) => Some(Some(soft)),
            (Outcome::HitL1 | Outcome::Negative, Some(Some(u))) => Some(Some(u.min(soft))),
            _ => Some(None),
        };
    }

    /// Hands the stamp to the recording, or marks it unusable when a key missed the L1,
    /// was stale or the L1 was bypassed.
    pub(super) fn record(self, all_answered: bool) {
        match self.until {
            Some(Some(until)) if all_answered => {
                quiver_model::fence::record(Box::new(self), until);
            }
            // No keys: nothing read, nothing to fence.
            None if self.tickets.is_empty() => {}
            _ => quiver_model::fence::unfenced(),
        }
    }
}

impl quiver_model::fence::Stamp for FenceStamp {
    /// Valid while no ticket's key was invalidated and the task does not read around the
    /// L1 (read your writes).
    fn valid(&self) -> bool {
        !consistent_reads() && self.tickets.iter().all(|t| self.fence.still_valid(*t))
    }
}
