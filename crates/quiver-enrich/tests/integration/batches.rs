//! What a page costs in batch calls, what it does when parts fail, and prefetch.

use crate::support::{Calls, Failures, Rig, Warm, World, json, sources_with_heads};
use quiver_enrich::{
    Engine, EngineConfig, EnrichError, Part, PrefetchConfig, PrefetchPool, PressureSignal,
};
use quiver_model::{CursorCodec, PostId, UserId};
use std::sync::Arc;

/// Thirty users with twenty posts each, following ten others: 220 posts in every feed.
fn big() -> World {
    World::generate(30, 20, 10)
}

#[tokio::test]
async fn batch_calls_per_page_do_not_depend_on_the_page_size() {
    let rig = Rig::new(big());
    let mut per_size = Vec::new();
    for limit in [5, 20, 100] {
        rig.calls.reset();
        let first = rig.engine.home(UserId(1), None, limit).await.unwrap();
        assert_eq!(first.ids.len(), limit as usize);
        let home = rig.calls.total();
        for loader in [
            "skeleton", "graphs", "posts", "media", "tags", "users", "flags",
        ] {
            assert_eq!(rig.calls.get(loader), 1, "{loader} at limit {limit}");
        }
        assert_eq!(
            rig.calls.get("follows"),
            0,
            "home authors are followees: the viewer graph says whether they follow back"
        );
        rig.calls.reset();
        rig.engine
            .home(UserId(1), first.next.as_deref(), limit)
            .await
            .unwrap();
        let second = rig.calls.total();
        rig.calls.reset();
        rig.engine
            .discover(UserId(1), Some(3), None, limit)
            .await
            .unwrap();
        let discover = rig.calls.total();
        rig.calls.reset();
        rig.engine
            .user_posts(Some(UserId(1)), UserId(2), None, limit.min(20))
            .await
            .unwrap();
        let user_posts = rig.calls.total();
        per_size.push((limit, home, second, discover, user_posts));
    }
    let first = per_size[0];
    for row in &per_size {
        assert_eq!(
            (row.1, row.2, row.3, row.4),
            (first.1, first.2, first.3, first.4),
            "calls by page size: {per_size:?}"
        );
    }
    assert_eq!(
        first.1, 7,
        "graph, skeleton, three post batches, two author batches"
    );
}

/// `err` is the failure of `part`, with the source `loader` gave.
fn failed_by_name(err: EnrichError, loader: &str, part: Part) {
    match err {
        EnrichError::Load {
            part: p,
            ref source,
        } => {
            assert_eq!(p, part, "{loader}");
            assert_eq!(source.to_string(), format!("{loader} is down"));
        }
        other => panic!("{loader}: {other:?}"),
    }
}

#[tokio::test]
async fn optional_parts_degrade_to_a_partial_page_and_essential_ones_fail_by_name() {
    let mut world = big();
    world.add_order(1, 1, quiver_model::OrderStatus::Pending, 5);
    let rig = Rig::new(world);
    rig.failures.set("tags", true);
    let page = rig.engine.home(UserId(1), None, 20).await.unwrap();
    assert_eq!(page.partial, [Part::Tags]);
    let body = json(&page.body);
    assert_eq!(body["partial"], serde_json::json!(["tags"]));
    assert_eq!(body["items"].as_array().unwrap().len(), 20);
    assert!(
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["tags"] == serde_json::json!([]))
    );
    rig.failures.set("media", true);
    let post = rig.engine.post(None, PostId(7)).await.unwrap();
    assert_eq!(
        json(&post.body)["partial"],
        serde_json::json!(["media", "tags"])
    );

    // Recovered: fragments encoded without tags are not reused.
    rig.failures.set("tags", false);
    rig.failures.set("media", false);
    let page = rig.engine.home(UserId(1), None, 20).await.unwrap();
    assert!(page.partial.is_empty());
    let body = json(&page.body);
    assert_eq!(body["partial"], serde_json::json!([]));
    for item in body["items"].as_array().unwrap() {
        let id = PostId(item["id"].as_i64().unwrap());
        let tags = rig.world.tags.get(&id).cloned().unwrap_or_default();
        assert_eq!(item["tags"], serde_json::json!(tags), "post {id}");
    }

    for (loader, part) in [
        ("skeleton", Part::Skeleton),
        ("graphs", Part::Graph),
        ("posts", Part::Posts),
        ("users", Part::Authors),
        ("flags", Part::Flags),
        ("follows", Part::Relationships),
    ] {
        rig.failures.set(loader, true);
        // Discovery shows authors the viewer does not follow, so it asks every part.
        let err = rig
            .engine
            .discover(UserId(1), Some(3), None, 20)
            .await
            .unwrap_err();
        failed_by_name(err, loader, part);
        if loader == "follows" {
            assert!(
                rig.engine.home(UserId(1), None, 20).await.is_ok(),
                "a home page needs no follow edges"
            );
            rig.failures.set(loader, false);
            continue;
        }
        let err = rig.engine.home(UserId(1), None, 20).await.unwrap_err();
        failed_by_name(err, loader, part);
        rig.failures.set(loader, false);
    }
    for (loader, part) in [("orders", Part::Orders), ("order_items", Part::OrderItems)] {
        rig.failures.set(loader, true);
        let err = rig
            .engine
            .order(UserId(1), quiver_model::OrderId(1))
            .await
            .unwrap_err();
        assert!(
            matches!(err, EnrichError::Load { part: p, .. } if p == part),
            "{err:?}"
        );
        rig.failures.set(loader, false);
    }
}

#[tokio::test]
async fn fragment_reuse_and_sequential_lookups_change_nothing_visible() {
    let rig = Rig::new(big());
    let a = rig.engine.home(UserId(1), None, 20).await.unwrap();
    let b = rig.engine.home(UserId(1), None, 20).await.unwrap();
    assert_eq!(a.body, b.body);
    let off = Rig::with_config(
        big(),
        EngineConfig {
            reuse_fragments: false,
            ..EngineConfig::default()
        },
    );
    let c = off.engine.home(UserId(1), None, 20).await.unwrap();
    assert_eq!(
        c.body, a.body,
        "splicing stored fragments changes nothing visible"
    );
    let sequential = Rig::with_config(
        big(),
        EngineConfig {
            concurrent_lookups: false,
            ..EngineConfig::default()
        },
    );
    let d = sequential.engine.home(UserId(1), None, 20).await.unwrap();
    assert_eq!(d.body, a.body, "sequential lookups change nothing visible");
    assert_eq!(sequential.calls.total(), 7, "and make the same batch calls");
    let plain = Rig::with_config(
        big(),
        EngineConfig {
            serde_json_pages: true,
            ..EngineConfig::default()
        },
    );
    let e = plain.engine.home(UserId(1), None, 20).await.unwrap();
    assert_eq!(
        e.body, a.body,
        "serde_json writes the same page as splicing"
    );
    assert_eq!(e.ids, a.ids);
}

/// A pool whose one worker is held by a job until the returned gate opens, so that jobs
/// submitted meanwhile stay queued.
async fn held_pool(queue: usize) -> (PrefetchPool, Arc<tokio::sync::Semaphore>) {
    let signal: Arc<dyn PressureSignal> = Arc::new(|_raised: bool| {});
    let pool = PrefetchPool::new(PrefetchConfig { workers: 1, queue }, signal);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let held = gate.clone();
    assert!(pool.submit(Box::pin(async move {
        let _ = started_tx.send(());
        held.acquire().await.unwrap().forget();
        Ok(())
    })));
    started.await.unwrap();
    (pool, gate)
}

/// Waits (without sleeping) until `n` prefetch jobs have succeeded.
async fn succeeded(engine: &Engine, n: u64) {
    let done = async {
        while engine.prefetch_stats().unwrap().succeeded < n {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), done)
        .await
        .expect("the prefetch jobs ran");
}

#[tokio::test]
async fn the_next_page_s_items_are_loaded_in_the_background_and_never_rendered_twice() {
    let world = Arc::new(big());
    let (calls, failures) = (Calls::default(), Failures::default());
    let (pool, gate) = held_pool(4).await;
    let engine = Engine::new(
        sources_with_heads(&world, &calls, &failures, 100),
        CursorCodec::new(crate::support::KEY),
        EngineConfig::default(),
        Some(pool),
    );
    engine.home(UserId(1), None, 20).await.unwrap();
    // The same page again before its warming ran: one job per viewer and cursor.
    engine.home(UserId(1), None, 20).await.unwrap();
    assert_eq!(calls.get("posts"), 2);
    gate.add_permits(1);
    succeeded(&engine, 2).await;
    assert_eq!(
        calls.get("posts"),
        3,
        "page two's items were loaded ahead of time"
    );
    assert_eq!(calls.get("users"), 3, "and its authors");
    assert_eq!(
        (calls.get("heads"), calls.get("skeleton")),
        (2, 0),
        "page two was cut from the head already held: no skeleton read"
    );
    assert_eq!(calls.get("follows"), 0, "nothing per viewer is warmed");
    let stats = engine.prefetch_stats().unwrap();
    assert_eq!(
        (stats.submitted, stats.skipped, stats.dropped, stats.failed),
        (2, 1, 0, 0),
        "the held job and one warming; the repeat was skipped"
    );
}

#[tokio::test]
async fn no_job_when_the_next_page_is_warm_or_past_the_head() {
    let world = Arc::new(big());
    let (calls, failures) = (Calls::default(), Failures::default());
    let mut sources = sources_with_heads(&world, &calls, &failures, 40);
    // Everything already fresh: nothing to warm.
    let items = Arc::new(Warm {
        inner: sources.items.clone(),
        warm: Default::default(),
    });
    items
        .warm
        .lock()
        .unwrap()
        .extend(world.posts.keys().copied());
    sources.items = items;
    let signal: Arc<dyn PressureSignal> = Arc::new(|_raised: bool| {});
    let pool = PrefetchPool::new(PrefetchConfig::default(), signal);
    let engine = Engine::new(
        sources,
        CursorCodec::new(crate::support::KEY),
        EngineConfig::default(),
        Some(pool),
    );
    let first = engine.home(UserId(1), None, 20).await.unwrap();
    let stats = engine.prefetch_stats().unwrap();
    assert_eq!((stats.submitted, stats.skipped), (0, 1), "warm: no job");

    // Page two is the head's last: page three is past it, and is not warmed (its
    // skeleton would be a query on every walk).
    let second = engine
        .home(UserId(1), first.next.as_deref(), 20)
        .await
        .unwrap();
    assert!(second.next.is_some());
    let stats = engine.prefetch_stats().unwrap();
    assert_eq!((stats.submitted, stats.skipped), (0, 1));
    assert_eq!(
        calls.get("skeleton"),
        0,
        "both pages were cut from the head"
    );
}
