//! The L1 is bounded by the memory its values hold: entries weigh what they reside in,
//! and a value too heavy for the L1 is counted and left to Redis, not dropped in silence.

use crate::support::{Source, SourceLoader};
use quiver_cache::{CacheConfig, Outcome, Tiered};
use std::sync::Arc;

#[tokio::test]
async fn a_value_too_heavy_for_the_l1_is_counted_and_served_from_below() {
    let source = Arc::new(Source::default());
    source.set(1, "small");
    // 30 KB of JSON resides in about 90 KB: more than this 64 KiB L1 holds.
    source.set(2, &"x".repeat(30_000));
    let config = CacheConfig {
        l1_capacity_bytes: 64 << 10,
        ..CacheConfig::new("items")
    };
    let cache = Tiered::new(config, SourceLoader(source.clone()), None).await;
    for _ in 0..2 {
        cache.lookup(&[1, 2]).await.unwrap();
    }
    let l = cache.lookup(&[1, 2]).await.unwrap();
    assert_eq!(l.outcomes[&1], Outcome::HitL1);
    assert_eq!(l.outcomes[&2], Outcome::Miss, "never admitted");
    assert_eq!(l.values[&2].len(), 30_000);
    assert_eq!(cache.stats().l1_oversize, 3);
}
