//! The contract's reads: batch loaders, keyset pages of every list, the viewer graph.

use super::*;
use crate::support::{fixture, t0};

pub(super) fn keys<K: Clone + Eq + std::hash::Hash, V>(
    m: &std::collections::HashMap<K, V>,
) -> HashSet<K> {
    m.keys().cloned().collect()
}

pub(super) async fn loaders_return_exactly_the_existing_keys(backend: Backend) {
    let store = backend.load(&fixture(100)).await;
    let users = UsersLoader(store.clone());
    let got = users
        .load_many(&[UserId(2), UserId(99), UserId(2), UserId(6), UserId(-1)])
        .await
        .unwrap();
    assert_eq!(keys(&got), HashSet::from([UserId(2), UserId(6)]));
    let got = UserFlagsLoader(store.clone())
        .load_many(&[UserId(3), UserId(3), UserId(42)])
        .await
        .unwrap();
    assert_eq!(keys(&got), HashSet::from([UserId(3)]));

    let ask = [PostId(1), PostId(3), PostId(1), PostId(404), PostId(2)];
    let got = PostsLoader(store.clone()).load_many(&ask).await.unwrap();
    assert_eq!(keys(&got), HashSet::from([PostId(1), PostId(2), PostId(3)]));
    // Posts without media or tags are absent, not empty.
    let got = MediaLoader(store.clone()).load_many(&ask).await.unwrap();
    assert_eq!(keys(&got), HashSet::from([PostId(1), PostId(2)]));
    let got = TagsLoader(store.clone()).load_many(&ask).await.unwrap();
    assert_eq!(keys(&got), HashSet::from([PostId(1), PostId(2)]));

    let ask = [OrderId(1), OrderId(9), OrderId(1), OrderId(77)];
    let got = OrdersLoader(store.clone()).load_many(&ask).await.unwrap();
    assert_eq!(keys(&got), HashSet::from([OrderId(1), OrderId(9)]));
    let got = OrderItemsLoader(store.clone())
        .load_many(&ask)
        .await
        .unwrap();
    assert_eq!(
        keys(&got),
        HashSet::from([OrderId(1)]),
        "order 9 has no items"
    );
    assert_eq!(
        got[&OrderId(1)].len(),
        2,
        "duplicate keys must not duplicate rows"
    );
}

pub(super) async fn loaders_keep_values_intact(backend: Backend) {
    let store = backend.load(&fixture(100)).await;
    let u = &store.users(&[UserId(2)]).await.unwrap()[&UserId(2)];
    assert_eq!(u.handle, "user_2");
    assert_eq!(
        u.bio, "tab\there, newline\nthere, back\\slash",
        "copy escaping"
    );
    assert_eq!(u.avatar_url.as_deref(), Some("https://a.example.com/2.png"));
    let flags = store
        .user_flags(&[UserId(2), UserId(3), UserId(6)])
        .await
        .unwrap();
    assert!(flags[&UserId(2)].verified && !flags[&UserId(2)].creator);
    assert!(flags[&UserId(3)].creator && flags[&UserId(6)].private);

    let posts = store.posts(&[PostId(3), PostId(4)]).await.unwrap();
    let wish = &posts[&PostId(3)];
    assert_eq!(wish.kind, PostKind::Wish);
    let w = wish.wish.as_ref().unwrap();
    assert_eq!(
        (w.price.amount_cents, w.price.currency.as_str()),
        (2002, "EUR")
    );
    assert_eq!(w.product_url, "https://shop.example.com/3");
    assert_eq!(posts[&PostId(4)].wish, None);
    assert_eq!(
        posts[&PostId(4)].created_at,
        t0() + chrono::Duration::seconds(40)
    );

    let media = &store.media_by_post(&[PostId(1)]).await.unwrap()[&PostId(1)];
    assert_eq!(
        media.iter().map(|m| m.position).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(media[1].kind, MediaKind::Video);
    let tags = &store.tags_by_post(&[PostId(1)]).await.unwrap()[&PostId(1)];
    assert_eq!(tags, &["alpha", "zeta"]);
    let order = &store.orders(&[OrderId(2)]).await.unwrap()[&OrderId(2)];
    assert_eq!(
        (order.status, order.customer_id, order.total.amount_cents),
        (OrderStatus::Active, UserId(1), 4004)
    );
}

pub(super) async fn empty_input_runs_no_statement(backend: Backend) {
    let store = backend.load(&fixture(100)).await;
    // On a closed pool any statement fails, so success proves none was attempted.
    store.close().await;
    assert!(
        store.users(&[UserId(1)]).await.is_err(),
        "a closed store must fail real work"
    );
    assert!(store.users(&[]).await.unwrap().is_empty());
    assert!(store.user_flags(&[]).await.unwrap().is_empty());
    assert!(store.posts(&[]).await.unwrap().is_empty());
    assert!(store.media_by_post(&[]).await.unwrap().is_empty());
    assert!(store.tags_by_post(&[]).await.unwrap().is_empty());
    assert!(store.orders(&[]).await.unwrap().is_empty());
    assert!(store.order_items(&[]).await.unwrap().is_empty());
    assert!(store.follows(&[]).await.unwrap().is_empty());
    assert!(
        store
            .author_page(&[], None, 20)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// Walks a listing page by page with `limit`, checking each page is full but the last.
pub(super) async fn walk<F, Fut>(limit: u32, mut page: F) -> Vec<(DateTime<Utc>, i64)>
where
    F: FnMut(Option<Cursor>) -> Fut,
    Fut: std::future::Future<Output = Result<quiver_model::Page<(DateTime<Utc>, i64)>, StoreError>>,
{
    let mut all = Vec::new();
    let mut cursor = None;
    for _ in 0..100 {
        let p = page(cursor).await.unwrap();
        all.extend(p.items.iter().copied());
        match p.next {
            Some(next) => {
                assert_eq!(
                    p.items.len(),
                    limit as usize,
                    "only the last page may be short"
                );
                let last = p.items.last().unwrap();
                assert_eq!(
                    (next.created_at, next.id),
                    *last,
                    "next points at the last item"
                );
                cursor = Some(next);
            }
            None => return all,
        }
    }
    panic!("pagination did not end");
}

pub(super) fn expected(ds: &Dataset, authors: &[i64]) -> Vec<(DateTime<Utc>, i64)> {
    let mut v: Vec<_> = ds
        .posts
        .iter()
        .filter(|p| authors.contains(&p.author_id.0))
        .map(|p| (p.created_at, p.id.0))
        .collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v
}

pub(super) fn post_page(
    p: quiver_model::Page<quiver_model::PostRef>,
) -> quiver_model::Page<(DateTime<Utc>, i64)> {
    quiver_model::Page {
        items: p.items.iter().map(|r| (r.created_at, r.id.0)).collect(),
        next: p.next,
    }
}

pub(super) async fn author_pages_walk_every_post_without_duplicates_or_gaps(backend: Backend) {
    let ds = fixture(100);
    let store = backend.load(&ds).await;
    for authors in [vec![2, 3], vec![1, 2, 3, 4, 5], vec![3, 3, 2], vec![6]] {
        let ids: Vec<UserId> = authors.iter().map(|a| UserId(*a)).collect();
        let want = expected(&ds, &authors);
        for limit in 1..=5 {
            let got = walk(limit, |c| {
                let store = store.clone();
                let ids = ids.clone();
                async move { store.author_page(&ids, c, limit).await.map(post_page) }
            })
            .await;
            assert_eq!(got, want, "authors {authors:?} limit {limit}");
        }
    }
}

pub(super) async fn home_pages_match_the_merged_feed_at_every_timeline_depth(backend: Backend) {
    // Depth 0: no timeline, all merge-at-read. Depth 3: the walk crosses from the
    // timeline into merge-at-read mid-page. Depth 100: all from the timeline.
    for depth in [0, 3, 100] {
        let ds = fixture(depth);
        let store = backend.load(&ds).await;
        // Viewer 1 follows 2 and 3; viewer 4 follows nobody; viewer 6 has no posts at all.
        for (viewer, authors) in [(1, vec![1, 2, 3]), (4, vec![4]), (6, vec![])] {
            let want = expected(&ds, &authors);
            for limit in [1, 2, 4, 20] {
                let got = walk(limit, |c| {
                    let store = store.clone();
                    async move {
                        store
                            .post_page(PostList::Home(UserId(viewer)), c, limit)
                            .await
                            .map(post_page)
                    }
                })
                .await;
                assert_eq!(got, want, "viewer {viewer} depth {depth} limit {limit}");
            }
        }
    }
}

pub(super) async fn viewer_graph_sees_follows_and_blocks_both_ways(backend: Backend) {
    let store = backend.load(&fixture(100)).await;
    let ids = |v: &[i64]| -> IdSet { v.iter().map(|&i| UserId(i)).collect() };
    let g = store.viewer_graph(UserId(1)).await.unwrap();
    assert_eq!(g.followees, ids(&[2, 3]));
    // 1 follows 2 and 3; of them only 2 follows 1 back.
    assert_eq!(g.mutuals, ids(&[2]));
    assert_eq!(g.followed_by(UserId(2)), Some(true));
    assert_eq!(g.followed_by(UserId(3)), Some(false));
    assert_eq!(g.blocked, ids(&[5]));
    assert_eq!(g.blocked_by, ids(&[4]));
    assert!(g.hides(UserId(4)) && g.hides(UserId(5)) && !g.hides(UserId(2)));
    let g = store.viewer_graph(UserId(2)).await.unwrap();
    assert_eq!((g.followees, g.mutuals), (ids(&[1]), ids(&[1])));
    let g = store.viewer_graph(UserId(4)).await.unwrap();
    assert_eq!(g.blocked, ids(&[1]));
    assert!(g.followees.is_empty() && g.blocked_by.is_empty() && g.mutuals.is_empty());
    let g = store.viewer_graph(UserId(999)).await.unwrap();
    assert!(g.followees.is_empty() && g.blocked.is_empty() && g.blocked_by.is_empty());
}

pub(super) async fn follow_edges_return_exactly_the_existing_pairs(backend: Backend) {
    let ds = fixture(100);
    let store = backend.load(&ds).await;
    let edge = |a, b| FollowEdge {
        follower: UserId(a),
        followee: UserId(b),
    };
    // 1 follows 2 and 3; nobody follows 1 back in the fixture unless it says so.
    let ask = [
        edge(1, 2),
        edge(2, 1),
        edge(1, 3),
        edge(1, 2),
        edge(3, 3),
        edge(99, 1),
    ];
    let want: HashSet<FollowEdge> = ask
        .iter()
        .copied()
        .filter(|e| {
            ds.follows
                .iter()
                .any(|f| f.follower == e.follower && f.followee == e.followee)
        })
        .collect();
    assert!(want.contains(&edge(1, 2)) && want.contains(&edge(1, 3)));
    let got = FollowsLoader(store.clone()).load_many(&ask).await.unwrap();
    assert_eq!(keys(&got), want);
    let f = &got[&edge(1, 2)];
    let seeded = ds
        .follows
        .iter()
        .find(|f| f.follower == UserId(1) && f.followee == UserId(2))
        .unwrap();
    assert_eq!(
        (f.follower, f.followee, f.created_at),
        (seeded.follower, seeded.followee, seeded.created_at)
    );
}

pub(super) async fn recent_posts_walk_every_post_newest_first(backend: Backend) {
    let ds = fixture(100);
    let store = backend.load(&ds).await;
    let mut want: Vec<_> = ds.posts.iter().map(|p| (p.created_at, p.id.0)).collect();
    want.sort_unstable_by(|a, b| b.cmp(a));
    for limit in [1, 3, 50] {
        let got = walk(limit, |c| {
            let store = store.clone();
            async move {
                store
                    .post_page(PostList::Recent, c, limit)
                    .await
                    .map(post_page)
            }
        })
        .await;
        assert_eq!(got, want, "limit {limit}");
    }
}

pub(super) async fn user_posts_and_customer_orders_page_by_status(backend: Backend) {
    let ds = fixture(100);
    let store = backend.load(&ds).await;
    for limit in 1..=3 {
        let got = walk(limit, |c| {
            let store = store.clone();
            async move {
                store
                    .post_page(PostList::Author(UserId(2)), c, limit)
                    .await
                    .map(post_page)
            }
        })
        .await;
        assert_eq!(got, expected(&ds, &[2]));
    }
    let orders = |status: Option<OrderStatus>, limit: u32| {
        let store = store.clone();
        walk(limit, move |c| {
            let store = store.clone();
            async move {
                store
                    .customer_orders(UserId(1), status, c, limit)
                    .await
                    .map(|p| quiver_model::Page {
                        items: p.items.iter().map(|r| (r.created_at, r.id.0)).collect(),
                        next: p.next,
                    })
            }
        })
    };
    let ids = |v: Vec<(DateTime<Utc>, i64)>| v.into_iter().map(|x| x.1).collect::<Vec<_>>();
    for limit in [1, 2, 5] {
        // Orders 5 and 6 share a timestamp: the higher id comes first.
        assert_eq!(ids(orders(None, limit).await), [8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(
            ids(orders(Some(OrderStatus::Active), limit).await),
            [6, 2],
            "not customer 2's order 9"
        );
        assert_eq!(ids(orders(Some(OrderStatus::Pending), limit).await), [5, 1]);
        assert_eq!(
            ids(orders(Some(OrderStatus::Cancelled), limit).await),
            [8, 4]
        );
    }
}

pub(super) async fn page_limits_out_of_range_are_rejected(backend: Backend) {
    let store = backend.load(&fixture(100)).await;
    for limit in [0, quiver_store::MAX_PAGE_SIZE + 1] {
        let err = store
            .post_page(PostList::Author(UserId(2)), None, limit)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidLimit { .. }), "{err:?}");
        assert!(
            store
                .post_page(PostList::Home(UserId(1)), None, limit)
                .await
                .is_err()
        );
        assert!(
            store
                .customer_orders(UserId(1), None, None, limit)
                .await
                .is_err()
        );
    }
}
