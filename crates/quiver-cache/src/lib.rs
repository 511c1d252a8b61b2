//! A tiered cache that wraps any batch loader: a process-local L1 (quick_cache, weighted
//! by bytes) over a shared L2 (Redis through fred), coherent across every replica sharing
//! that Redis.
//!
//! - One round trip per tier per batch: L1 misses go to Redis in one `MGET`, what is still
//!   missing to the inner loader in one call, and fills go back in one script.
//! - Single flight: concurrent lookups of a key being loaded wait for that load
//!   ([`Outcome::Coalesced`]).
//! - Negative caching, stale-while-revalidate (soft TTL), a hard TTL, a hard `max_age`,
//!   ±10 % L2 TTL jitter and TTLs that stretch under caller-reported pressure.
//! - [`Tiered::invalidate`] evicts keys from the L2 and, over pub/sub, from every
//!   replica's L1; versions fence off loads that started before it (no stale sets).
//!   When the invalidation connection drops, each replica flushes its L1.
//! - Redis failures never fail a lookup: calls time out, and a breaker skips Redis after
//!   repeated failures, probing until it is back.
//! - Without Redis (`remote: None`) the same API runs on the L1 alone.
//! - [`Batcher`] coalesces concurrent callers' keys into shared batches of the loader
//!   below a cache (DataLoader semantics), so concurrent misses share one statement.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use async_trait::async_trait;
//! use quiver_cache::{CacheConfig, Outcome, Tiered};
//! use quiver_model::{LoadError, Loader};
//! use std::collections::HashMap;
//!
//! struct Squares;
//! #[async_trait]
//! impl Loader for Squares {
//!     type Key = u64;
//!     type Value = u64;
//!     async fn load_many(&self, keys: &[u64]) -> Result<HashMap<u64, u64>, LoadError> {
//!         Ok(keys.iter().map(|k| (*k, k * k)).collect())
//!     }
//! }
//!
//! let cache = Tiered::new(CacheConfig::new("squares"), Squares, None).await;
//! let first = cache.lookup(&[3]).await.unwrap();
//! assert_eq!((first.values[&3], first.outcomes[&3]), (9, Outcome::Miss));
//! let again = cache.lookup(&[3]).await.unwrap();
//! assert_eq!(again.outcomes[&3], Outcome::HitL1);
//! # }
//! ```

mod batcher;
mod breaker;
mod codec;
mod config;
mod fence;
mod outcome;
mod remote;
mod tiered;

pub use batcher::{BatchConfig, Batcher};
pub use codec::{JsonCodec, ValueCodec};
pub use config::CacheConfig;
pub use outcome::{Outcome, StatsSnapshot};
pub use remote::{Fill, RedisConfig, RedisRemote, Remote, RemoteError, RemoteEvent};
pub use tiered::{CacheError, CacheKey, Lookup, Tiered};
