//! What a lookup inside a recording ([`quiver_model::fence`]) leaves: its keys' tickets,
//! taken before it read them, and the earliest refresh-ahead mark and soft TTL of the
//! entries that answered; a lookup the L1 could not answer whole makes the recording
//! unusable.

use super::consistent_reads;
use crate::fence::{Fence, Ticket};
use crate::outcome::Outcome;
use std::sync::Arc;
use tokio::time::Instant;

/// The stamp a lookup inside a recording takes: its keys' tickets, and the earliest
/// refresh-ahead mark and soft TTL of the entries that answered.
pub(super) struct FenceStamp {
    pub(super) fence: Arc<Fence>,
    pub(super) tickets: Vec<Ticket>,
    /// The earliest (refresh-ahead mark, soft TTL) of the entries that answered so far.
    pub(super) fresh: Option<(Instant, Instant)>,
    /// Whether an entry answered that no fence covers (a stale one).
    pub(super) unfenced: bool,
}

impl FenceStamp {
    pub(super) fn new(fence: Arc<Fence>, tickets: Vec<Ticket>) -> Self {
        Self {
            fence,
            tickets,
            fresh: None,
            unfenced: false,
        }
    }

    pub(super) fn answered(&mut self, outcome: Outcome, ahead: Instant, soft: Instant) {
        match outcome {
            Outcome::HitL1 | Outcome::Negative => {
                self.fresh = Some(
                    self.fresh
                        .map_or((ahead, soft), |(a, s)| (a.min(ahead), s.min(soft))),
                );
            }
            _ => self.unfenced = true,
        }
    }

    /// Hands the stamp to the recording, or marks it unusable when a key missed the L1,
    /// was stale or the L1 was bypassed.
    pub(super) fn record(self, all_answered: bool) {
        match self.fresh {
            Some((ahead, soft)) if all_answered && !self.unfenced => {
                quiver_model::fence::record(Box::new(self), ahead, soft);
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
