//! No cross-request contamination: many viewers with different graphs ask for the same
//! posts at once, through shared batchers of shared items and authors, and each gets its
//! own viewer part and its own blocked-content filtering, every time.

use crate::support::{Calls, Failures, World, json, sources};
use quiver_cache::{BatchConfig, Batcher};
use quiver_enrich::{Engine, EngineConfig, EnrichError, Sources};
use quiver_model::{CursorCodec, PostId, UserId};
use std::sync::Arc;

fn batched(s: Sources) -> Sources {
    let c = BatchConfig::default();
    Sources {
        skeletons: s.skeletons,
        heads: s.heads,
        author_heads: s.author_heads,
        windows: s.windows,
        graphs: Arc::new(Batcher::new(s.graphs, c)),
        items: Arc::new(Batcher::new(s.items, c)),
        authors: Arc::new(Batcher::new(s.authors, c)),
        follows: Arc::new(Batcher::new(s.follows, c)),
        orders: Arc::new(Batcher::new(s.orders, c)),
        order_items: Arc::new(Batcher::new(s.order_items, c)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_viewers_each_get_their_own_viewer_part_and_filtering() {
    let mut w = World::generate(30, 10, 6);
    for (a, b) in [(1, 2), (3, 1), (5, 6), (10, 4), (2, 7), (8, 3), (12, 11)] {
        w.block(a, b);
    }
    let world = Arc::new(w);
    let (calls, failures) = (Calls::default(), Failures::default());
    let engine = Engine::new(
        batched(sources(&world, &calls, &failures)),
        CursorCodec::new(crate::support::KEY),
        EngineConfig::default(),
        None,
    );
    // The newest post of each of users 1..=8: everyone asks for the same few posts.
    let shared: Vec<PostId> = (1..=8)
        .map(|u| {
            world
                .posts
                .values()
                .filter(|p| p.author_id == UserId(u))
                .max_by_key(|p| (p.created_at, p.id))
                .unwrap()
                .id
        })
        .collect();

    let mut tasks = Vec::new();
    for round in 0..4 {
        for viewer in 1..=30 {
            let (engine, world, shared) = (engine.clone(), world.clone(), shared.clone());
            tasks.push(tokio::spawn(async move {
                let v = UserId(viewer);
                let check_item = |item: &serde_json::Value| {
                    let author = UserId(item["author"]["id"].as_i64().unwrap());
                    assert!(!world.hidden(v, author), "viewer {viewer} saw {author}");
                    assert_eq!(
                        item["viewer"]["follows_author"].as_bool(),
                        Some(world.follows.contains(&(v, author))),
                        "viewer {viewer} round {round}"
                    );
                    assert_eq!(
                        item["viewer"]["followed_by_author"].as_bool(),
                        Some(world.follows.contains(&(author, v))),
                        "viewer {viewer} round {round}"
                    );
                };
                let page = engine.home(v, None, 20).await.unwrap();
                let want = world.expected_home(v);
                assert_eq!(page.ids, want[..20.min(want.len())], "viewer {viewer}");
                json(&page.body)["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .for_each(check_item);
                for id in &shared {
                    let author = world.posts[id].author_id;
                    match engine.post(Some(v), *id).await {
                        Ok(r) => check_item(&json(&r.body)),
                        Err(EnrichError::NotFound(_)) => {
                            assert!(world.hidden(v, author), "viewer {viewer} lost post {id}")
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }));
        }
    }
    let requests = tasks.len() * (1 + shared.len());
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        calls.get("posts") * 4 < requests,
        "batches were shared: {} post batches for {requests} requests",
        calls.get("posts")
    );
}
