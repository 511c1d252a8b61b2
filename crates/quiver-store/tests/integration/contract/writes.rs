//! The contract's writes: graph writes, posts and idempotent orders, each with its
//! rows, its timelines and its one outbox event.

use super::*;
use crate::support::fixture;

pub(super) async fn graph_writes_change_rows_and_record_one_event_per_change(backend: Backend) {
    let store = backend.load(&fixture(100)).await;
    let w = backend.writes();
    let (u2, u3, u4, u6) = (UserId(2), UserId(3), UserId(4), UserId(6));
    let graph = |v| {
        let store = store.clone();
        async move { store.viewer_graph(v).await.unwrap() }
    };
    // 6 follows 2: a change with one event; repeating it changes nothing.
    assert_eq!(w.follow(u6, u2).await.unwrap(), Written::Changed);
    assert_eq!(w.follow(u6, u2).await.unwrap(), Written::Unchanged);
    assert!(graph(u6).await.followees.contains(&u2));
    assert_eq!(w.unfollow(u6, u2).await.unwrap(), Written::Changed);
    assert_eq!(w.unfollow(u6, u2).await.unwrap(), Written::Unchanged);
    assert!(!graph(u6).await.followees.contains(&u2));

    // Refusals: yourself; across a block (4 blocks 1 in the fixture) as if the other
    // did not exist, as their profile does not.
    for err in [
        w.follow(u2, u2).await.unwrap_err(),
        w.block(u3, u3).await.unwrap_err(),
    ] {
        assert!(matches!(err, StoreError::Refused(_)), "{err:?}");
    }
    for err in [
        w.follow(UserId(1), u4).await.unwrap_err(),
        w.follow(u4, UserId(1)).await.unwrap_err(),
    ] {
        assert!(matches!(err, StoreError::NotFound), "{err:?}");
    }
    assert!(matches!(
        w.follow(u2, UserId(999)).await.unwrap_err(),
        StoreError::NotFound
    ));

    // A block removes the follows both ways (2 follows 1 and 1 follows 2 in the fixture).
    assert!(graph(UserId(1)).await.followees.contains(&u2));
    assert!(graph(u2).await.followees.contains(&UserId(1)));
    assert_eq!(w.block(u2, UserId(1)).await.unwrap(), Written::Changed);
    assert_eq!(w.block(u2, UserId(1)).await.unwrap(), Written::Unchanged);
    let g = graph(UserId(1)).await;
    assert!(!g.followees.contains(&u2) && g.blocked_by.contains(&u2));
    assert!(!graph(u2).await.followees.contains(&UserId(1)));
    assert_eq!(w.unblock(u2, UserId(1)).await.unwrap(), Written::Changed);
    assert!(!graph(UserId(1)).await.blocked_by.contains(&u2));

    let events = backend.outbox().await;
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "user.followed",
            "user.unfollowed",
            "user.blocked",
            "user.unblocked"
        ]
    );
    assert_eq!(events[3].1, serde_json::json!({"blocker": 2, "blocked": 1}));
    assert_eq!(
        events[0].1,
        serde_json::json!({"follower": 6, "followee": 2})
    );
    assert_eq!(events[2].1, serde_json::json!({"blocker": 2, "blocked": 1}));
}

pub(super) async fn graph_writes_keep_home_feeds_exact_at_every_timeline_depth(backend: Backend) {
    // Depth 0: no timeline; 3: the walk crosses into merge-at-read; 100: all timeline.
    for depth in [0, 3, 100] {
        let ds = fixture(depth);
        let store = backend.load(&ds).await;
        let w = backend.writes();
        let walk_home = |viewer: i64| {
            let store = store.clone();
            walk(2, move |c| {
                let store = store.clone();
                async move {
                    store
                        .post_page(PostList::Home(UserId(viewer)), c, 2)
                        .await
                        .map(post_page)
                }
            })
        };
        // 1 follows 2 and 3. Following 6 (no posts) and 4 (blocks 1: refused) aside,
        // unfollow 3, follow it back, then 2 blocks 1.
        assert_eq!(
            walk_home(1).await,
            expected(&ds, &[1, 2, 3]),
            "depth {depth}"
        );
        w.unfollow(UserId(1), UserId(3)).await.unwrap();
        assert_eq!(
            walk_home(1).await,
            expected(&ds, &[1, 2]),
            "unfollow, depth {depth}"
        );
        w.follow(UserId(1), UserId(3)).await.unwrap();
        assert_eq!(
            walk_home(1).await,
            expected(&ds, &[1, 2, 3]),
            "follow, depth {depth}"
        );
        w.block(UserId(2), UserId(1)).await.unwrap();
        assert_eq!(
            walk_home(1).await,
            expected(&ds, &[1, 3]),
            "blocked, depth {depth}"
        );
        assert_eq!(
            walk_home(2).await,
            expected(&ds, &[2]),
            "blocker, depth {depth}"
        );
    }
}

pub(super) async fn posts_are_created_into_every_timeline_and_deleted_by_their_author_only(
    backend: Backend,
) {
    let ds = fixture(3);
    let store = backend.load(&ds).await;
    let w = backend.post_writes();
    let new = quiver_model::NewPost {
        kind: PostKind::Wish,
        body: "a \"new\" wish ✨".into(),
        media: vec![quiver_model::NewMedia {
            url: "https://m.example/1.jpg".into(),
            kind: MediaKind::Image,
            width: 10,
            height: 20,
            size_bytes: 300,
        }],
        tags: vec!["gift".into(), "xmas".into()],
        wish: Some(quiver_model::Wish {
            price: quiver_model::Money {
                amount_cents: 1999,
                currency: "EUR".parse().unwrap(),
            },
            product_url: "https://shop.example/p".into(),
        }),
    };
    // 2 is followed by 1 and 3.
    let post = w.create_post(UserId(2), &new).await.unwrap();
    let first = store
        .post_page(PostList::Home(UserId(2)), None, 1)
        .await
        .unwrap();
    assert_eq!(
        first.items[0].id, post.id,
        "first in the author's feed at once"
    );
    for viewer in [1, 3] {
        let first = store
            .post_page(PostList::Home(UserId(viewer)), None, 1)
            .await
            .unwrap();
        assert_ne!(first.items[0].id, post.id, "not fanned out yet to {viewer}");
    }
    // Batches of one: the fan-out pages through the followers.
    let effects = backend.effects();
    assert_eq!(
        effects
            .fan_out(post.id, FanOut::batches_of(1))
            .await
            .unwrap(),
        [UserId(1), UserId(3)],
        "the followers whose timelines hold it"
    );
    let before = store
        .post_page(PostList::Home(UserId(1)), None, 50)
        .await
        .unwrap();
    assert_eq!(
        effects
            .fan_out(post.id, FanOut::batches_of(1))
            .await
            .unwrap(),
        [UserId(1), UserId(3)],
        "a redelivery names them again"
    );
    assert_eq!(
        store
            .post_page(PostList::Home(UserId(1)), None, 50)
            .await
            .unwrap(),
        before,
        "and writes nothing twice"
    );
    let loaded = PostsLoader(store.clone())
        .load_one(&post.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded, post);
    let media = MediaLoader(store.clone())
        .load_one(&post.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((media.len(), media[0].position, media[0].width), (1, 0, 10));
    let tags = TagsLoader(store.clone())
        .load_one(&post.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tags, ["gift", "xmas"]);
    for viewer in [1, 2, 3] {
        let first = store
            .post_page(PostList::Home(UserId(viewer)), None, 1)
            .await
            .unwrap();
        assert_eq!(first.items[0].id, post.id, "first in {viewer}'s feed");
    }
    let first = store
        .post_page(PostList::Home(UserId(4)), None, 50)
        .await
        .unwrap();
    assert!(
        first.items.iter().all(|r| r.id != post.id),
        "4 does not follow 2"
    );
    assert!(matches!(
        w.create_post(UserId(999), &new).await.unwrap_err(),
        StoreError::NotFound
    ));

    assert!(matches!(
        w.delete_post(UserId(1), post.id).await.unwrap_err(),
        StoreError::NotYours(_)
    ));
    w.delete_post(UserId(2), post.id).await.unwrap();
    assert!(
        PostsLoader(store.clone())
            .load_one(&post.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        MediaLoader(store.clone())
            .load_one(&post.id)
            .await
            .unwrap()
            .is_none()
    );
    let walk_home = walk(2, |c| {
        let store = store.clone();
        async move {
            store
                .post_page(PostList::Home(UserId(1)), c, 2)
                .await
                .map(post_page)
        }
    })
    .await;
    assert_eq!(
        walk_home,
        expected(&ds, &[1, 2, 3]),
        "the feed is as before"
    );
    assert_eq!(
        effects
            .fan_out(post.id, FanOut::batches_of(10))
            .await
            .unwrap(),
        [],
        "a deleted post fans out nowhere"
    );
    assert!(matches!(
        w.delete_post(UserId(2), post.id).await.unwrap_err(),
        StoreError::NotFound
    ));
    // An ordered wish stays.
    let items = OrderItemsLoader(store.clone())
        .load_one(&OrderId(1))
        .await
        .unwrap()
        .unwrap();
    let ordered = PostsLoader(store.clone())
        .load_one(&items[0].post_id)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        w.delete_post(ordered.author_id, ordered.id)
            .await
            .unwrap_err(),
        StoreError::Refused(_)
    ));
    let kinds: Vec<String> = backend.outbox().await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, ["post.created", "post.deleted"]);
}

/// A wish by `author` in `currency`, created through the store.
pub(super) async fn wish(backend: &Backend, author: i64, cents: i64, currency: &str) -> PostId {
    let new = quiver_model::NewPost {
        kind: PostKind::Wish,
        body: "a wish".into(),
        media: vec![],
        tags: vec![],
        wish: Some(quiver_model::Wish {
            price: quiver_model::Money {
                amount_cents: cents,
                currency: currency.parse().unwrap(),
            },
            product_url: "https://shop.example/w".into(),
        }),
    };
    backend
        .post_writes()
        .create_post(UserId(author), &new)
        .await
        .unwrap()
        .id
}

pub(super) async fn orders_are_priced_from_wishes_and_keyed_for_replay(backend: Backend) {
    let store = backend.load(&fixture(3)).await;
    let w = backend.orders();
    // Wishes 3 (by 2, 2002 EUR) and 7 (by 3, 2006 EUR).
    let placed = w
        .create_order(UserId(1), "k-1", "fp-a", &[(PostId(3), 2), (PostId(7), 1)])
        .await
        .unwrap();
    assert!(!placed.replayed);
    let order = OrdersLoader(store.clone())
        .load_one(&placed.order)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(order.customer_id, UserId(1));
    assert_eq!(order.status, OrderStatus::Pending);
    assert_eq!(order.total.amount_cents, 2 * 2002 + 2006);
    assert_eq!(order.total.currency.as_str(), "EUR");
    let items = OrderItemsLoader(store.clone())
        .load_one(&placed.order)
        .await
        .unwrap()
        .unwrap();
    let mut lines: Vec<_> = items
        .iter()
        .map(|i| (i.post_id.0, i.quantity, i.unit_price.amount_cents))
        .collect();
    lines.sort_unstable();
    assert_eq!(lines, [(3, 2, 2002), (7, 1, 2006)]);
    let events = backend.outbox().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "order.created");
    assert_eq!(events[0].1["order_id"], placed.order.0);
    assert_eq!(events[0].1["customer_id"], 1);
    assert_eq!(
        events[0].1["items"],
        serde_json::json!([
            {"post_id": 3, "owner_id": 2, "quantity": 2},
            {"post_id": 7, "owner_id": 3, "quantity": 1},
        ])
    );

    // The same key and fingerprint: the first order, nothing written.
    let again = w
        .create_order(UserId(1), "k-1", "fp-a", &[(PostId(3), 2), (PostId(7), 1)])
        .await
        .unwrap();
    assert_eq!((again.order, again.replayed), (placed.order, true));
    assert_eq!(backend.outbox().await.len(), 1, "no second event");
    // Another body under the key is refused; another user's identical key is theirs.
    assert!(matches!(
        w.create_order(UserId(1), "k-1", "fp-b", &[(PostId(3), 1)])
            .await
            .unwrap_err(),
        StoreError::KeyReused
    ));
    let theirs = w
        .create_order(UserId(4), "k-1", "fp-a", &[(PostId(3), 1)])
        .await
        .unwrap();
    assert!(!theirs.replayed);
    assert_ne!(theirs.order, placed.order);

    // Every refused line is named: unknown, a post, your own wish, another currency,
    // and a wish hidden by a block (4 blocks 1).
    let usd = wish(&backend, 6, 500, "USD").await;
    let by_blocker = wish(&backend, 1, 700, "EUR").await;
    let err = w
        .create_order(
            UserId(2),
            "k-2",
            "fp",
            &[
                (PostId(7), 1),
                (PostId(999), 1),
                (PostId(1), 1),
                (PostId(3), 1),
                (usd, 1),
            ],
        )
        .await
        .unwrap_err();
    let StoreError::Unorderable(refused) = err else {
        panic!("expected Unorderable, got {err:?}")
    };
    assert_eq!(
        refused,
        [
            (1, LineRefusal::NotFound),
            (2, LineRefusal::NotAWish),
            (3, LineRefusal::OwnWish),
            (4, LineRefusal::Currency),
        ]
    );
    let err = w
        .create_order(UserId(4), "k-3", "fp", &[(by_blocker, 1)])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Unorderable(r) if r == &[(0, LineRefusal::NotFound)]),
        "{err:?}"
    );
    // A refused request leaves its key free.
    let fixed = w
        .create_order(UserId(2), "k-2", "fp-fixed", &[(PostId(7), 1)])
        .await
        .unwrap();
    assert!(!fixed.replayed);
}

pub(super) async fn concurrent_orders_with_one_key_create_one_order(backend: Backend) {
    backend.load(&fixture(3)).await;
    let before = backend.count("SELECT count(*) FROM orders").await;
    let w = backend.orders();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let w = w.clone();
            tokio::spawn(async move {
                w.create_order(UserId(1), "same-key", "fp", &[(PostId(7), 1)])
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut placed = Vec::new();
    for t in tasks {
        placed.push(t.await.unwrap());
    }
    let ids: HashSet<_> = placed.iter().map(|p| p.order).collect();
    assert_eq!(ids.len(), 1, "every request got the same order");
    assert_eq!(placed.iter().filter(|p| !p.replayed).count(), 1);
    assert_eq!(
        backend.count("SELECT count(*) FROM orders").await,
        before + 1
    );
    assert_eq!(
        backend
            .count("SELECT count(*) FROM outbox WHERE kind = 'order.created'")
            .await,
        1
    );
}

pub(super) async fn follows_stop_at_the_limit(backend: Backend) {
    use quiver_store::write::MAX_FOLLOWS;
    backend.load(&fixture(3)).await;
    let have = backend
        .count("SELECT count(*) FROM follows WHERE follower_id = 6")
        .await;
    // Users 1000.. exist for this test, and user 6 follows all but one short of the
    // limit through the backend's own SQL.
    let first = 1000;
    let last = first + (MAX_FOLLOWS - have - 1);
    backend
        .exec(
            &format!(
                "INSERT INTO users (id, handle, display_name)
                 SELECT g, 'u' || g, 'U' FROM generate_series({first}, {last}) g;
                 INSERT INTO follows (follower_id, followee_id)
                 SELECT 6, g FROM generate_series({first}, {}) g",
                last - 1
            ),
            &format!(
                "WITH RECURSIVE g(n) AS (SELECT {first} UNION ALL SELECT n + 1 FROM g WHERE n < {last})
                 INSERT INTO users (id, handle, display_name, created_at)
                 SELECT n, 'u' || n, 'U', 0 FROM g;
                 WITH RECURSIVE g(n) AS (SELECT {first} UNION ALL SELECT n + 1 FROM g WHERE n < {})
                 INSERT INTO follows (follower_id, followee_id, created_at)
                 SELECT 6, n, 0 FROM g",
                last - 1
            ),
        )
        .await;
    let w = backend.writes();
    assert_eq!(
        w.follow(UserId(6), UserId(last)).await.unwrap(),
        quiver_store::write::Written::Changed,
        "the last one allowed"
    );
    let past = w.follow(UserId(6), UserId(1)).await;
    assert!(
        matches!(past, Err(StoreError::Refused(why)) if why.contains("most accounts")),
        "{past:?}"
    );
    assert_eq!(
        backend
            .count("SELECT count(*) FROM follows WHERE follower_id = 6")
            .await,
        MAX_FOLLOWS
    );
}
