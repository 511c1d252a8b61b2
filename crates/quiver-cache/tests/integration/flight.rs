//! Single flight against invalidation: a lookup that starts after an invalidation never
//! takes the answer of a load that started before it.

use crate::support::{Source, SourceLoader};
use quiver_cache::{CacheConfig, Outcome, Tiered};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_after_an_invalidation_does_not_wait_for_an_older_load() {
    let source = Arc::new(Source::default());
    source.set(7, "old");
    let cache = Arc::new(
        Tiered::new(
            CacheConfig::new("items"),
            SourceLoader(source.clone()),
            None,
        )
        .await,
    );
    source.gate.close();
    let before = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.lookup(&[7]).await.unwrap() })
    };
    source.gate.wait_entered(1).await;
    // The held load has read "old"; the value changes and is invalidated (a write).
    source.set(7, "new");
    source.gate.stop_holding();
    cache.invalidate(&[7]).await.unwrap();
    // Before the fix this waited for the held load (and would wait forever here).
    let after = tokio::time::timeout(std::time::Duration::from_secs(5), cache.lookup(&[7]))
        .await
        .expect("the lookup does not wait for the older load")
        .unwrap();
    assert_eq!(after.values[&7], "new", "not the older load's value");
    assert_eq!(after.outcomes[&7], Outcome::Miss, "loaded, not coalesced");
    source.gate.release(1);
    assert_eq!(before.await.unwrap().values[&7], "old");
    // Neither the older load's fill nor its end of claim touched the newer answer.
    let again = cache.lookup(&[7]).await.unwrap();
    assert_eq!(again.values[&7], "new");
    assert_eq!(again.outcomes[&7], Outcome::HitL1);
}
