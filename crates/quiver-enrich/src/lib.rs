//! quiver's feed engine, built over the batch-load trait only (no SQL, Redis or HTTP), so
//! it is tested without I/O and reused over any backend.
//!
//! Landed so far: cross-request coalescing ([`Batcher`], DataLoader semantics) and the
//! bounded prefetch pool ([`PrefetchPool`]) with its pressure signal. The skeleton →
//! hydrate → present pipeline builds on these.

mod batcher;
mod prefetch;

pub use batcher::{BatchConfig, Batcher};
pub use prefetch::{Job, PrefetchConfig, PrefetchPool, PrefetchStats, PressureSignal};
