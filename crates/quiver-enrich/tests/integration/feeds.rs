//! Feeds, posts, profiles and orders as clients see them: ordering, complete cursor
//! walks, blocked content in both directions, refills, discovery, owner-only rules and
//! the viewer part of every item.

use crate::support::{Rig, World, json, walk};
use quiver_enrich::{EngineConfig, EnrichError, Part};
use quiver_model::{CursorError, OrderId, OrderStatus, PostId, UserId};
use std::collections::HashSet;

/// Twelve users with fifteen posts each; user `u` follows the next four. Viewer 1
/// follows 2..=5, blocks 3 and is blocked by 4.
fn world() -> World {
    let mut w = World::generate(12, 15, 4);
    w.block(1, 3);
    w.block(4, 1);
    w.block(7, 9);
    w
}

#[tokio::test]
async fn home_pages_walk_the_expected_feed_without_duplicates_or_gaps() {
    let rig = Rig::new(world());
    for viewer in 1..=12 {
        let want = rig.world.expected_home(UserId(viewer));
        assert!(want.len() >= 30, "viewer {viewer} has a feed to walk");
        for limit in [1, 3, 7, 20, 100] {
            let got = walk(limit, |c| {
                let engine = rig.engine.clone();
                async move {
                    engine
                        .home(UserId(viewer), c.as_deref(), limit)
                        .await
                        .unwrap()
                }
            })
            .await;
            assert_eq!(got, want, "viewer {viewer} limit {limit}");
        }
    }
}

#[tokio::test]
async fn blocked_authors_never_appear_in_either_direction() {
    let rig = Rig::new(world());
    let viewer = UserId(1);
    let feed = rig.world.expected_home(viewer);
    let author = |id: &i64| rig.world.posts[&PostId(*id)].author_id;
    // The skeleton has posts of 3 (blocked by the viewer) and 4 (blocking the viewer).
    assert!(rig.world.follows.contains(&(viewer, UserId(3))));
    assert!(rig.world.follows.contains(&(viewer, UserId(4))));
    assert!(feed.iter().all(|id| ![3, 4].contains(&author(id).0)));

    let discovered = discover_all(&rig, viewer, 11, 10).await;
    assert!(!discovered.is_empty());
    for id in &discovered {
        assert!(![3, 4].contains(&author(id).0), "post {id} in discovery");
    }
    let by = |u: i64| {
        rig.world
            .posts
            .values()
            .find(|p| p.author_id == UserId(u))
            .unwrap()
            .id
    };
    for hidden in [3, 4] {
        let err = rig.engine.post(Some(viewer), by(hidden)).await.unwrap_err();
        assert!(matches!(err, EnrichError::NotFound("post")), "{err:?}");
        let err = rig
            .engine
            .profile(Some(viewer), UserId(hidden))
            .await
            .unwrap_err();
        assert!(matches!(err, EnrichError::NotFound("user")), "{err:?}");
        let err = rig
            .engine
            .user_posts(Some(viewer), UserId(hidden), None, 20)
            .await
            .unwrap_err();
        assert!(matches!(err, EnrichError::NotFound("user")), "{err:?}");
        // Anonymous readers and unrelated viewers still see them.
        rig.engine.post(None, by(hidden)).await.unwrap();
        rig.engine.post(Some(UserId(2)), by(hidden)).await.unwrap();
    }
}

/// A world where viewer 1 follows 2 and 3, blocks 3, and 3's fifty posts are the newest.
fn flooded() -> World {
    let mut w = World::default();
    for u in 1..=3 {
        let seed = World::generate(3, 0, 0);
        w.users.insert(UserId(u), seed.users[&UserId(u)].clone());
        w.flags.insert(UserId(u), seed.flags[&UserId(u)]);
    }
    w.follows.insert((UserId(1), UserId(2)));
    w.follows.insert((UserId(1), UserId(3)));
    w.block(1, 3);
    for i in 0..30 {
        w.add_post(PostId(i + 1), UserId(2), crate::support::at(i));
    }
    for i in 0..50 {
        w.add_post(PostId(100 + i), UserId(3), crate::support::at(1000 + i));
    }
    w
}

#[tokio::test]
async fn a_page_emptied_by_blocks_is_refilled_from_later_skeleton_pages() {
    let config = EngineConfig {
        refills: 5,
        ..EngineConfig::default()
    };
    let rig = Rig::with_config(flooded(), config);
    let page = rig.engine.home(UserId(1), None, 10).await.unwrap();
    let want = rig.world.expected_home(UserId(1));
    assert_eq!(page.ids, want[..10], "a full page of the unblocked author");
    assert_eq!(
        rig.calls.get("skeleton"),
        6,
        "50 blocked refs need five refills"
    );
    assert!(page.next.is_some());
}

#[tokio::test]
async fn refills_are_bounded_and_a_short_page_still_continues_correctly() {
    let config = EngineConfig {
        refills: 1,
        ..EngineConfig::default()
    };
    let rig = Rig::with_config(flooded(), config);
    let first = rig.engine.home(UserId(1), None, 10).await.unwrap();
    assert!(first.ids.is_empty(), "two chunks of blocked posts");
    assert_eq!(rig.calls.get("skeleton"), 2);
    assert!(
        first.next.is_some(),
        "an empty page still points past what it read"
    );
    let all = walk(10, |c| {
        let engine = rig.engine.clone();
        async move { engine.home(UserId(1), c.as_deref(), 10).await.unwrap() }
    })
    .await;
    assert_eq!(all, rig.world.expected_home(UserId(1)));
}

async fn discover_all(rig: &Rig, viewer: UserId, seed: u64, limit: u32) -> Vec<i64> {
    walk(limit, |c| {
        let engine = rig.engine.clone();
        async move {
            let r = engine
                .discover(viewer, Some(seed), c.as_deref(), limit)
                .await
                .unwrap();
            assert_eq!(r.seed, Some(seed));
            assert_eq!(json(&r.body)["seed"].as_u64(), Some(seed));
            r
        }
    })
    .await
}

#[tokio::test]
async fn discovery_is_a_deterministic_shuffle_of_the_window_without_repeats() {
    let config = EngineConfig {
        discovery_window: 120,
        ..EngineConfig::default()
    };
    let rig = Rig::with_config(world(), config);
    let viewer = UserId(1);
    // The window: the 120 newest posts; the viewer sees those not hidden by blocks.
    let mut newest: Vec<_> = rig.world.posts.values().map(|p| p.as_ref()).collect();
    newest.sort_unstable_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
    let window: HashSet<i64> = newest[..120]
        .iter()
        .map(|r| r.id)
        .filter(|id| !rig.world.hidden(viewer, rig.world.posts[id].author_id))
        .map(|id| id.0)
        .collect();

    for limit in [1, 7, 50] {
        let a = discover_all(&rig, viewer, 42, limit).await;
        let distinct: HashSet<i64> = a.iter().copied().collect();
        assert_eq!(distinct.len(), a.len(), "no repeats at limit {limit}");
        assert_eq!(distinct, window, "exactly the window at limit {limit}");
        if limit == 7 {
            assert_eq!(a, discover_all(&rig, viewer, 42, 7).await, "deterministic");
            assert_ne!(a, discover_all(&rig, viewer, 43, 7).await, "seeded");
            let mut by_time = a.clone();
            by_time.sort_unstable_by_key(|id| {
                std::cmp::Reverse(rig.world.posts[&PostId(*id)].created_at)
            });
            assert_ne!(a, by_time, "shuffled, not newest first");
        }
    }

    // The same seed and cursor give the same page, byte for byte.
    let first = rig
        .engine
        .discover(viewer, Some(5), None, 10)
        .await
        .unwrap();
    let cursor = first.next.as_deref();
    let again = rig
        .engine
        .discover(viewer, Some(5), cursor, 10)
        .await
        .unwrap();
    let twice = rig.engine.discover(viewer, None, cursor, 10).await.unwrap();
    assert_eq!(again.body, twice.body, "the cursor carries the seed");

    // No seed: a fresh one, returned, that reproduces the page.
    let fresh = rig.engine.discover(viewer, None, None, 10).await.unwrap();
    let seed = fresh.seed.expect("a fresh seed is returned");
    assert!(seed < 1 << 53);
    let replay = rig
        .engine
        .discover(viewer, Some(seed), None, 10)
        .await
        .unwrap();
    assert_eq!(replay.body, fresh.body);

    // A seed that contradicts the cursor, and cursors of the other kind, are rejected.
    let err = rig
        .engine
        .discover(viewer, Some(6), cursor, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, EnrichError::SeedMismatch), "{err:?}");
    let home = rig.engine.home(viewer, None, 5).await.unwrap();
    let err = rig
        .engine
        .discover(viewer, None, home.next.as_deref(), 5)
        .await
        .unwrap_err();
    assert!(
        matches!(err, EnrichError::Cursor(CursorError::WrongKind)),
        "{err:?}"
    );
    let err = rig.engine.home(viewer, cursor, 5).await.unwrap_err();
    assert!(
        matches!(err, EnrichError::Cursor(CursorError::WrongKind)),
        "{err:?}"
    );
}

#[tokio::test]
async fn items_carry_the_viewer_part_of_the_asking_viewer() {
    let rig = Rig::new(world());
    for viewer in [1, 2, 6] {
        let v = UserId(viewer);
        let page = rig.engine.home(v, None, 100).await.unwrap();
        for item in json(&page.body)["items"].as_array().unwrap() {
            let author = UserId(item["author"]["id"].as_i64().unwrap());
            let part = &item["viewer"];
            assert_eq!(
                part["follows_author"].as_bool().unwrap(),
                rig.world.follows.contains(&(v, author))
            );
            assert_eq!(
                part["followed_by_author"].as_bool().unwrap(),
                rig.world.follows.contains(&(author, v))
            );
            let post = &rig.world.posts[&PostId(item["id"].as_i64().unwrap())];
            assert_eq!(post.author_id, author);
            assert_eq!(item["body"].as_str().unwrap(), post.body);
            let tags = rig.world.tags.get(&post.id).cloned().unwrap_or_default();
            assert_eq!(item["tags"], serde_json::json!(tags));
            let media = rig.world.media.get(&post.id).map_or(0, Vec::len);
            assert_eq!(item["media"].as_array().unwrap().len(), media);
            assert_eq!(item["wish"].is_null(), post.wish.is_none());
        }
    }
    // Anonymous readers get no viewer part; profiles carry the relationship.
    let post = rig.engine.post(None, PostId(5)).await.unwrap();
    let body = json(&post.body);
    assert!(body["viewer"].is_null());
    assert_eq!(body["partial"], serde_json::json!([]));
    // 1 follows 2..=5, so 1 follows viewer 2.
    let profile = json(
        &rig.engine
            .profile(Some(UserId(2)), UserId(1))
            .await
            .unwrap()
            .body,
    );
    assert_eq!(profile["id"], 1);
    assert_eq!(
        profile["viewer"]["follows_author"].as_bool().unwrap(),
        rig.world.follows.contains(&(UserId(2), UserId(1)))
    );
    assert_eq!(profile["viewer"]["followed_by_author"], true);
    let anonymous = json(&rig.engine.profile(None, UserId(1)).await.unwrap().body);
    assert!(anonymous["viewer"].is_null());
    let err = rig.engine.profile(None, UserId(999)).await.unwrap_err();
    assert!(matches!(err, EnrichError::NotFound("user")));
    let err = rig.engine.post(None, PostId(999_999)).await.unwrap_err();
    assert!(matches!(err, EnrichError::NotFound("post")));
}

#[tokio::test]
async fn user_posts_walk_one_author_newest_first() {
    let rig = Rig::new(world());
    let want: Vec<i64> = {
        let mut v: Vec<_> = rig
            .world
            .posts
            .values()
            .filter(|p| p.author_id == UserId(6))
            .map(|p| (p.created_at, p.id.0))
            .collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        v.into_iter().map(|(_, id)| id).collect()
    };
    for limit in [1, 4, 15, 100] {
        let got = walk(limit, |c| {
            let engine = rig.engine.clone();
            async move {
                engine
                    .user_posts(None, UserId(6), c.as_deref(), limit)
                    .await
                    .unwrap()
            }
        })
        .await;
        assert_eq!(got, want, "limit {limit}");
    }
    let err = rig
        .engine
        .user_posts(None, UserId(404), None, 5)
        .await
        .unwrap_err();
    assert!(matches!(err, EnrichError::NotFound("user")));
}

#[tokio::test]
async fn orders_are_listed_and_read_by_their_customer_only() {
    let mut w = world();
    for (id, customer, status, minute) in [
        (1, 2, OrderStatus::Active, 10),
        (2, 2, OrderStatus::Shipped, 20),
        (3, 2, OrderStatus::Active, 30),
        (4, 5, OrderStatus::Active, 40),
    ] {
        w.add_order(id, customer, status, minute);
    }
    let rig = Rig::new(w);
    let e = &rig.engine;
    let all = e
        .customer_orders(UserId(2), UserId(2), None, None, 100)
        .await
        .unwrap();
    assert_eq!(all.ids, [3, 2, 1]);
    let active = e
        .customer_orders(UserId(2), UserId(2), Some(OrderStatus::Active), None, 1)
        .await
        .unwrap();
    assert_eq!(active.ids, [3]);
    let rest = e
        .customer_orders(
            UserId(2),
            UserId(2),
            Some(OrderStatus::Active),
            active.next.as_deref(),
            1,
        )
        .await
        .unwrap();
    assert_eq!(rest.ids, [1]);
    let body = json(&rest.body);
    assert_eq!(body["items"][0]["items"][0]["post_id"], 3);
    assert!(body["next_page"].is_null());

    let err = e
        .customer_orders(UserId(5), UserId(2), None, None, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, EnrichError::Forbidden(_)), "{err:?}");
    let own = json(&e.order(UserId(5), OrderId(4)).await.unwrap().body);
    assert_eq!(
        (own["id"].as_i64(), own["customer_id"].as_i64()),
        (Some(4), Some(5))
    );
    // Another's order is "not found", like one that does not exist.
    let err = e.order(UserId(2), OrderId(4)).await.unwrap_err();
    assert!(matches!(err, EnrichError::NotFound("order")), "{err:?}");
    let err = e.order(UserId(2), OrderId(99)).await.unwrap_err();
    assert!(matches!(err, EnrichError::NotFound("order")), "{err:?}");
}

#[tokio::test]
async fn limits_and_cursors_are_checked_before_any_work() {
    let rig = Rig::new(world());
    for limit in [0, 101] {
        let err = rig.engine.home(UserId(1), None, limit).await.unwrap_err();
        assert!(matches!(err, EnrichError::Limit { max: 100 }), "{err:?}");
    }
    let err = rig
        .engine
        .home(UserId(1), Some("garbage"), 10)
        .await
        .unwrap_err();
    assert!(matches!(err, EnrichError::Cursor(_)), "{err:?}");
    assert_eq!(rig.calls.total(), 0, "no loader was called");
    // Errors name the part that failed.
    rig.failures.set("posts", true);
    let err = rig.engine.home(UserId(1), None, 10).await.unwrap_err();
    assert!(
        matches!(
            err,
            EnrichError::Load {
                part: Part::Posts,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "could not load posts");
}
