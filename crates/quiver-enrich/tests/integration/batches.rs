//! What a page costs in batch calls, what it does when parts fail, and prefetch.

use crate::support::{Calls, Failures, Rig, World, json, sources};
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
            "skeleton", "graphs", "posts", "media", "tags", "users", "flags", "follows",
        ] {
            assert_eq!(rig.calls.get(loader), 1, "{loader} at limit {limit}");
        }
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
        first.1, 8,
        "graph, skeleton, three post batches, three author batches"
    );
}

#[tokio::test]
async fn optional_parts_degrade_to_a_partial_page_and_essential_ones_fail_by_name() {
    let rig = Rig::new(big());
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
        let err = rig.engine.home(UserId(1), None, 20).await.unwrap_err();
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
    let misses = rig.engine.fragment_stats().misses;
    let b = rig.engine.home(UserId(1), None, 20).await.unwrap();
    assert_eq!(a.body, b.body);
    let stats = rig.engine.fragment_stats();
    assert_eq!(stats.misses, misses, "the second page encodes nothing");
    assert!(stats.hits >= 40, "{stats:?}");
    let off = Rig::with_config(
        big(),
        EngineConfig {
            fragment_cache: 0,
            ..EngineConfig::default()
        },
    );
    let c = off.engine.home(UserId(1), None, 20).await.unwrap();
    assert_eq!(c.body, a.body, "caching fragments changes nothing visible");
    let sequential = Rig::with_config(
        big(),
        EngineConfig {
            concurrent_lookups: false,
            ..EngineConfig::default()
        },
    );
    let d = sequential.engine.home(UserId(1), None, 20).await.unwrap();
    assert_eq!(d.body, a.body, "sequential lookups change nothing visible");
    assert_eq!(sequential.calls.total(), 8, "and make the same batch calls");
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

#[tokio::test]
async fn the_next_page_is_warmed_in_the_background_after_a_page_is_served() {
    let world = Arc::new(big());
    let (calls, failures) = (Calls::default(), Failures::default());
    let signal: Arc<dyn PressureSignal> = Arc::new(|_raised: bool| {});
    let pool = PrefetchPool::new(
        PrefetchConfig {
            workers: 1,
            queue: 4,
        },
        signal,
    );
    let engine = Engine::new(
        sources(&world, &calls, &failures),
        CursorCodec::new(crate::support::KEY),
        EngineConfig::default(),
        Some(pool),
    );
    engine.home(UserId(1), None, 20).await.unwrap();
    assert_eq!(calls.get("posts"), 1);
    // The job runs on the pool's worker; wait for it without sleeping.
    let done = async {
        while engine.prefetch_stats().unwrap().succeeded == 0 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), done)
        .await
        .expect("the prefetch job ran");
    assert_eq!(calls.get("posts"), 2, "page two was hydrated ahead of time");
    assert_eq!(calls.get("skeleton"), 2);
    let stats = engine.prefetch_stats().unwrap();
    assert_eq!((stats.submitted, stats.dropped, stats.failed), (1, 0, 0));
}
