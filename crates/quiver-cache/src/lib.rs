#![doc = include_str!("../README.md")]
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
pub use tiered::{CacheError, CacheKey, Lookup, Tiered, consistent};
