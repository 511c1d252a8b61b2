#![doc = include_str!("../README.md")]
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
mod pages;
mod prefetch;
mod present;
mod source;

pub use engine::{Engine, EngineConfig, Rendered, Timings};
pub use error::{EnrichError, Part};
pub use items::{AuthorItem, AuthorLoader, FeedItem, ItemLoader};
pub use pages::PageStats;
pub use prefetch::{Job, PrefetchConfig, PrefetchPool, PrefetchStats, PressureSignal};
pub use source::Sources;
