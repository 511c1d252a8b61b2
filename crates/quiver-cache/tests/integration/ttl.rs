//! TTL behaviour on the L1 alone (the embedded mode), with paused time.

use crate::support::{Source, SourceLoader};
use quiver_cache::{CacheConfig, Outcome, Tiered};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::advance;

fn cfg() -> CacheConfig {
    CacheConfig {
        soft_ttl: Duration::from_secs(10),
        hard_ttl: Duration::from_secs(30),
        negative_ttl: Duration::from_secs(5),
        negative_hard_ttl: Duration::from_secs(15),
        // Exact boundaries; the jitter has its own test.
        jitter: 0.0,
        max_age: Duration::from_secs(60),
        max_stretch: 4,
        ..CacheConfig::new("ttl")
    }
}

async fn cache(source: &Arc<Source>) -> Tiered<SourceLoader> {
    Tiered::new(cfg(), SourceLoader(source.clone()), None).await
}

async fn outcome(c: &Tiered<SourceLoader>, key: u64) -> (Option<String>, Outcome) {
    let l = c.lookup(&[key]).await.unwrap();
    (l.values.get(&key).cloned(), l.outcomes[&key])
}

/// Lets spawned tasks (the background refresh) run; paused time does not move.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn past_the_soft_ttl_an_entry_is_served_stale_and_refreshed_once_in_the_background() {
    let source = Arc::new(Source::default());
    source.set(1, "v1");
    let c = cache(&source).await;
    assert_eq!(outcome(&c, 1).await, (Some("v1".into()), Outcome::Miss));
    // Before the refresh-ahead window (the last fifth of the soft TTL).
    advance(Duration::from_secs(7)).await;
    assert_eq!(outcome(&c, 1).await, (Some("v1".into()), Outcome::HitL1));

    source.set(1, "v2");
    advance(Duration::from_secs(4)).await;
    assert_eq!(outcome(&c, 1).await, (Some("v1".into()), Outcome::Stale));
    assert_eq!(
        outcome(&c, 1).await.1,
        Outcome::Stale,
        "served stale until the refresh lands"
    );
    settle().await;
    assert_eq!(source.calls(), 2, "exactly one background refresh");
    assert_eq!(outcome(&c, 1).await, (Some("v2".into()), Outcome::HitL1));
}

/// A wave of entries coming due at once is refreshed in a few batches, not one load per
/// key: each stale key, however it was looked up, joins the refresher's queue.
#[tokio::test(start_paused = true)]
async fn stale_keys_looked_up_one_at_a_time_are_refreshed_in_batches() {
    let source = Arc::new(Source::default());
    let keys: Vec<u64> = (0..1000).collect();
    for k in &keys {
        source.set(*k, "old");
    }
    let c = cache(&source).await;
    c.lookup(&keys).await.unwrap();
    assert_eq!(source.calls(), 1);
    for k in &keys {
        source.set(*k, "new");
    }
    advance(Duration::from_secs(11)).await;
    for k in &keys {
        assert_eq!(outcome(&c, *k).await, (Some("old".into()), Outcome::Stale));
    }
    settle().await;
    let refreshes = source.calls() - 1;
    assert!(
        (1..=4).contains(&refreshes),
        "1000 stale keys took {refreshes} loads"
    );
    let after = c.lookup(&keys).await.unwrap();
    assert!(after.outcomes.values().all(|o| *o == Outcome::HitL1));
    assert!(after.values.values().all(|v| v == "new"));
    // A key that comes due later starts the refresher again.
    source.set(0, "newer");
    advance(Duration::from_secs(11)).await;
    assert_eq!(outcome(&c, 0).await.1, Outcome::Stale);
    settle().await;
    assert_eq!(outcome(&c, 0).await, (Some("newer".into()), Outcome::HitL1));
}

/// A key read in the last fifth of its soft TTL is refreshed in the background while it
/// is still fresh: read steadily, it is never served stale. With refresh ahead off, the
/// same reads find it stale.
#[tokio::test(start_paused = true)]
async fn an_entry_read_near_its_soft_ttl_is_refreshed_ahead_and_never_served_stale() {
    for ahead in [0.2, 0.0] {
        let source = Arc::new(Source::default());
        source.set(1, "v1");
        let c = Tiered::new(
            CacheConfig {
                refresh_ahead: ahead,
                ..cfg()
            },
            SourceLoader(source.clone()),
            None,
        )
        .await;
        assert_eq!(outcome(&c, 1).await.1, Outcome::Miss);
        advance(Duration::from_secs(7)).await;
        assert_eq!(outcome(&c, 1).await.1, Outcome::HitL1);
        settle().await;
        assert_eq!(source.calls(), 1, "7 s: not yet in the window");
        source.set(1, "v2");
        advance(Duration::from_secs(2)).await;
        // 9 s, in the window from 8 s: served fresh, and refreshed in the background.
        assert_eq!(outcome(&c, 1).await, (Some("v1".into()), Outcome::HitL1));
        settle().await;
        advance(Duration::from_secs(2)).await;
        // 11 s: past the first entry's soft TTL.
        let (value, seen) = outcome(&c, 1).await;
        if ahead > 0.0 {
            assert_eq!(source.calls(), 2, "one refresh ahead");
            assert_eq!((value.as_deref(), seen), (Some("v2"), Outcome::HitL1));
        } else {
            assert_eq!((value.as_deref(), seen), (Some("v1"), Outcome::Stale));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn past_the_hard_ttl_an_entry_is_loaded_in_line() {
    let source = Arc::new(Source::default());
    source.set(2, "a");
    let c = cache(&source).await;
    outcome(&c, 2).await;
    source.set(2, "b");
    advance(Duration::from_secs(31)).await;
    assert_eq!(outcome(&c, 2).await, (Some("b".into()), Outcome::Miss));
    assert_eq!(source.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_missing_key_is_remembered_as_absent_then_revalidated_like_a_value() {
    let source = Arc::new(Source::default());
    let c = cache(&source).await;
    assert_eq!(outcome(&c, 3).await, (None, Outcome::Miss));
    assert_eq!(outcome(&c, 3).await, (None, Outcome::Negative));
    assert_eq!(source.calls(), 1, "the negative entry spared the loader");
    source.set(3, "now exists");
    // Past the negative TTL the absence is served stale and refreshed once, in the
    // background, instead of every lookup waiting for the loader at the same moment.
    advance(Duration::from_secs(6)).await;
    assert_eq!(outcome(&c, 3).await, (None, Outcome::Stale));
    settle().await;
    assert_eq!(source.calls(), 2, "exactly one background refresh");
    assert_eq!(
        outcome(&c, 3).await,
        (Some("now exists".into()), Outcome::HitL1)
    );
    // Past the negative hard TTL an absence is loaded in line.
    assert_eq!(outcome(&c, 4).await, (None, Outcome::Miss));
    source.set(4, "late");
    advance(Duration::from_secs(16)).await;
    assert_eq!(outcome(&c, 4).await, (Some("late".into()), Outcome::Miss));
}

/// Thousands of keys filled at once, values and absences: with jittered TTLs they come
/// due over a spread of time, and at no moment do they all miss (or all go stale)
/// together. Without jitter every one of them is stale at the same instant.
#[tokio::test(start_paused = true)]
async fn keys_filled_together_do_not_expire_together() {
    let source = Arc::new(Source::default());
    let keys: Vec<u64> = (1000..4000).collect();
    for k in keys.iter().filter(|k| *k % 2 == 0) {
        source.set(*k, "v");
    }
    let c = Tiered::new(
        CacheConfig {
            jitter: 0.1,
            ..cfg()
        },
        SourceLoader(source.clone()),
        None,
    )
    .await;
    let filled = tokio::time::Instant::now();
    let first = c.lookup(&keys).await.unwrap();
    assert!(first.outcomes.values().all(|o| *o == Outcome::Miss));
    // Absences (soft 5 s ± 10 %) and values (soft 10 s ± 10 %), probed at their nominal
    // soft TTL: about half of each kind has come due, none has expired hard.
    for (at, kind) in [(5, 1_u64), (10, 0)] {
        advance(Duration::from_secs(at) - filled.elapsed()).await;
        let probe: Vec<u64> = keys.iter().copied().filter(|k| k % 2 == kind).collect();
        let l = c.lookup(&probe).await.unwrap();
        let stale = l
            .outcomes
            .values()
            .filter(|o| **o == Outcome::Stale)
            .count();
        let missed = l.outcomes.values().filter(|o| **o == Outcome::Miss).count();
        assert_eq!(missed, 0, "nothing is loaded in line at {at} s");
        assert!(
            stale > probe.len() / 5 && stale < probe.len() * 4 / 5,
            "{stale} of {} came due at {at} s",
            probe.len()
        );
        settle().await;
    }
}

#[tokio::test(start_paused = true)]
async fn pressure_stretches_ttls_up_to_max_age_and_they_return_to_normal_after() {
    let source = Arc::new(Source::default());
    for k in 10..13 {
        source.set(k, "x");
    }
    let c = cache(&source).await;
    c.set_pressure(true);
    outcome(&c, 10).await;
    // Soft TTL 10 s stretched ×4: still fresh (and before its refresh-ahead mark, 32 s)
    // at 30 s; hard 30 s ×4 = 120 s is capped by max_age 60 s.
    advance(Duration::from_secs(30)).await;
    assert_eq!(outcome(&c, 10).await.1, Outcome::HitL1);
    advance(Duration::from_secs(15)).await;
    assert_eq!(
        outcome(&c, 10).await.1,
        Outcome::Stale,
        "45 s: past the stretched soft TTL"
    );
    settle().await;
    c.set_pressure(false);
    outcome(&c, 11).await;
    advance(Duration::from_secs(11)).await;
    assert_eq!(
        outcome(&c, 11).await.1,
        Outcome::Stale,
        "normal TTLs once pressure clears"
    );

    c.set_pressure(true);
    outcome(&c, 12).await;
    advance(Duration::from_secs(61)).await;
    assert_eq!(
        outcome(&c, 12).await.1,
        Outcome::Miss,
        "never served past max_age"
    );
}

#[tokio::test(start_paused = true)]
async fn get_serves_fresh_hits_and_falls_back_to_the_full_path_otherwise() {
    let source = Arc::new(Source::default());
    source.set(20, "a");
    let c = cache(&source).await;
    assert_eq!(
        c.get(&20).await.unwrap().as_deref().map(String::as_str),
        Some("a")
    );
    assert_eq!(
        c.get(&20).await.unwrap().as_deref().map(String::as_str),
        Some("a")
    );
    assert_eq!(c.get(&21).await.unwrap(), None);
    assert_eq!(c.get(&21).await.unwrap(), None);
    let s = c.stats();
    assert_eq!(
        (
            s.get(Outcome::Miss),
            s.get(Outcome::HitL1),
            s.get(Outcome::Negative)
        ),
        (2, 1, 1)
    );
    source.set(20, "b");
    advance(Duration::from_secs(11)).await;
    assert_eq!(
        c.get(&20).await.unwrap().as_deref().map(String::as_str),
        Some("a"),
        "stale is served"
    );
    assert_eq!(
        c.stats().get(Outcome::Stale),
        1,
        "and counted by the full path"
    );
}
