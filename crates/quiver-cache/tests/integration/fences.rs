//! Fences over cached lookups (`quiver_model::fence`): a recording holds while every key
//! it read is unchanged, on whichever replica the change is made, and only when the L1
//! answered every key (what the engine's finished pages rely on).

use crate::support::{Source, config, namespace, redis_url, replica};
use quiver_cache::consistent;
use quiver_model::Loader as _;
use quiver_model::fence::recording;
use quiver_testkit::eventually;
use std::sync::Arc;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_holds_only_while_every_key_it_read_is_unchanged_on_every_replica() {
    let (url, ns) = (redis_url(), namespace("fences"));
    let source = Arc::new(Source::default());
    for k in 1..=3 {
        source.set(k, "v");
    }
    let cfg = config(&ns);
    let soft = cfg.soft_ttl.mul_f64(1.0 + cfg.jitter);
    // Past the refresh-ahead mark of every entry: the last tenth of the soft TTL (the
    // mark is at four fifths of each entry's jittered soft TTL).
    let last_tenth = cfg.soft_ttl.mul_f64(0.1);
    let a = replica(cfg.clone(), &source, &url).await;
    let b = replica(cfg, &source, &url).await;
    assert!(a.fences());

    // Loaded, not answered by the L1: nothing fences it.
    let (_, fences) = recording(a.load_shared(&[1, 2])).await;
    assert!(!fences.usable());
    // From the L1: it holds, until the entries' soft TTL at the latest.
    let (_, fences) = recording(a.load_shared(&[1, 2])).await;
    assert!(fences.hold(Instant::now()));
    assert!(fences.until().unwrap() <= Instant::now() + soft);
    assert!(!fences.hold(fences.until().unwrap()), "due a refresh");
    // From the last fifth of the soft TTL its inputs are to be refreshed ahead.
    let until = fences.until().unwrap();
    assert_eq!(fences.marks_passed(Instant::now()), 0);
    assert!(fences.marks_passed(until - last_tenth) > 0 && fences.marks_passed(until) > 0);
    // Reading your writes goes around the L1: no record holds there, none is made there.
    assert!(!consistent(async { fences.hold(Instant::now()) }).await);
    let (_, inside) = consistent(recording(a.load_shared(&[1]))).await;
    assert!(!inside.usable());

    // Another replica's invalidation of a key read breaks it once its message arrives;
    // one of a key not read (sent first, so handled first) does not.
    let (_, of_one) = recording(a.load_shared(&[1])).await;
    assert!(of_one.hold(Instant::now()));
    b.load_shared(&[2, 3]).await.unwrap();
    b.invalidate(&[3, 2]).await.unwrap();
    eventually(
        "the invalidation of 2 reaches the other replica",
        || async { !fences.hold(Instant::now()) },
    )
    .await;
    assert!(of_one.hold(Instant::now()), "3 and 2 were never read by it");
    // This replica's own invalidation breaks it at once.
    a.invalidate(&[1]).await.unwrap();
    assert!(!of_one.hold(Instant::now()));
}
