//! The engine over the testkit's in-memory world: its sources (loaders that count their
//! batch calls and can be made to fail), a rig holding both, and a walk over a feed that
//! checks every page.

use quiver_enrich::{AuthorLoader, Engine, EngineConfig, ItemLoader, Sources};
use quiver_model::{CursorCodec, Follow, FollowEdge, OrderId, PostId, UserId};
pub(crate) use quiver_testkit::world::{Calls, Failures, Warm, World, at};
use quiver_testkit::world::{MapLoader, MemSkeletons};
use std::sync::Arc;

pub(crate) const KEY: &[u8] = b"test cursor key";

/// The engine over `world`, with its call counters and failure switches.
pub(crate) struct Rig {
    pub(crate) engine: Engine,
    pub(crate) calls: Calls,
    pub(crate) failures: Failures,
    pub(crate) world: Arc<World>,
}

/// [`sources`] with heads of `len` entries that home pages are cut from (counted as
/// `heads`).
pub(crate) fn sources_with_heads(
    world: &Arc<World>,
    calls: &Calls,
    failures: &Failures,
    len: u32,
) -> Sources {
    let w = world.clone();
    Sources {
        heads: Some(MapLoader::new(
            "heads",
            calls,
            failures,
            move |v: &UserId| Some(w.home_head(*v, len)),
        )),
        ..sources(world, calls, failures)
    }
}

/// The sources over `world`, counting into `calls`.
pub(crate) fn sources(world: &Arc<World>, calls: &Calls, failures: &Failures) -> Sources {
    let w = world.clone();
    let (c, f) = (calls, failures);
    Sources {
        skeletons: Arc::new(MemSkeletons::new(w.clone(), c, f)),
        // No heads: every home page is read from the skeletons, so the counts below see
        // one skeleton call per page.
        heads: None,
        author_heads: None,
        windows: None,
        graphs: MapLoader::new("graphs", c, f, {
            let w = w.clone();
            move |v: &UserId| Some(w.graph(*v))
        }),
        items: Arc::new(ItemLoader {
            posts: MapLoader::new("posts", c, f, {
                let w = w.clone();
                move |k: &PostId| w.posts.get(k).cloned()
            }),
            media: MapLoader::new("media", c, f, {
                let w = w.clone();
                move |k: &PostId| w.media.get(k).cloned()
            }),
            tags: MapLoader::new("tags", c, f, {
                let w = w.clone();
                move |k: &PostId| w.tags.get(k).cloned()
            }),
            concurrent: true,
        }),
        authors: Arc::new(AuthorLoader {
            users: MapLoader::new("users", c, f, {
                let w = w.clone();
                move |k: &UserId| w.users.get(k).cloned()
            }),
            flags: MapLoader::new("flags", c, f, {
                let w = w.clone();
                move |k: &UserId| w.flags.get(k).copied()
            }),
            concurrent: true,
        }),
        follows: MapLoader::new("follows", c, f, {
            let w = w.clone();
            move |e: &FollowEdge| {
                w.follows
                    .contains(&(e.follower, e.followee))
                    .then(|| Follow {
                        follower: e.follower,
                        followee: e.followee,
                        created_at: at(0),
                    })
            }
        }),
        orders: MapLoader::new("orders", c, f, {
            let w = w.clone();
            move |k: &OrderId| w.orders.get(k).cloned()
        }),
        order_items: MapLoader::new("order_items", c, f, {
            let w = w.clone();
            move |k: &OrderId| w.order_items.get(k).cloned()
        }),
    }
}

impl Rig {
    pub(crate) fn new(world: World) -> Self {
        Self::with_config(world, EngineConfig::default())
    }

    pub(crate) fn with_config(world: World, config: EngineConfig) -> Self {
        let world = Arc::new(world);
        let (calls, failures) = (Calls::default(), Failures::default());
        let engine = Engine::new(
            sources(&world, &calls, &failures),
            CursorCodec::new(KEY),
            config,
            None,
        );
        Self {
            engine,
            calls,
            failures,
            world,
        }
    }
}

/// The body as JSON.
pub(crate) fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("the engine writes valid JSON")
}

/// Walks a keyset feed to its end, checking every page.
pub(crate) async fn walk<F, Fut>(limit: u32, mut page: F) -> Vec<i64>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = quiver_enrich::Rendered>,
{
    let mut all = Vec::new();
    let mut cursor = None;
    for _ in 0..10_000 {
        let r = page(cursor).await;
        let body = json(&r.body);
        let ids: Vec<i64> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, r.ids, "the body shows what the result says");
        assert!(ids.len() <= limit as usize);
        assert_eq!(body["next_page"].as_str(), r.next.as_deref());
        all.extend(ids);
        match r.next {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
    panic!("pagination did not end");
}
