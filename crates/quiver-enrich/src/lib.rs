//! quiver's feed engine: every response as skeleton → hydrate → present, built over the
//! batch-load trait only (no SQL, Redis or HTTP), so it is tested without I/O and reused
//! over any backend.
//!
//! - [`Engine`] assembles the home feed, the seeded discovery feed, posts, profiles, a
//!   user's posts, and a customer's orders. Each hydration phase calls each loader once
//!   with every key of the page, the independent loaders concurrently, so the number of
//!   batch calls per page does not depend on its size.
//! - [`Sources`] is what it reads: skeletons (ordered id lists), the cached heads of
//!   home feeds that pages are cut from, and loaders of ready [`FeedItem`]s and
//!   [`AuthorItem`]s (built by [`ItemLoader`] and [`AuthorLoader`] from entity loaders);
//!   the composition root decides whether a store or a tiered cache serves each.
//! - [`PrefetchPool`] warms what the next page lacks in the background and raises a
//!   pressure signal when it has to drop work.
//! - Presentation splices the items' encoded fragments with the per-viewer part
//!   through `quiver-codec`.

/// Awaits independent lookups concurrently, or one after another when the engine is
/// configured to (the ablation the benches measure). Yields every result, like `join!`.
macro_rules! lookups {
    ($concurrent:expr, $($f:expr),+ $(,)?) => {
        if $concurrent {
            tokio::join!($($f),+)
        } else {
            ($($f.await),+ ,)
        }
    };
}

mod discover;
mod engine;
mod error;
mod hydrate;
mod items;
mod prefetch;
mod present;
mod source;

pub use engine::{Engine, EngineConfig, Rendered, Timings};
pub use error::{EnrichError, Part};
pub use items::{AuthorItem, AuthorLoader, FeedItem, ItemLoader};
pub use prefetch::{Job, PrefetchConfig, PrefetchPool, PrefetchStats, PressureSignal};
pub use source::Sources;
