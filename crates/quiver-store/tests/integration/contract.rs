//! The contract suite: every `Store` behaviour that callers rely on, run against both
//! backends on the same fixture.

use crate::support::{fixture, t0};
use chrono::{DateTime, Utc};
use quiver_model::{
    Cursor, FollowEdge, IdSet, Loader, MediaKind, OrderId, OrderStatus, PostId, PostKind, UserId,
};
use quiver_store::events::{Effects, NewNotification, Outbox};
use quiver_store::loaders::{
    FollowsLoader, MediaLoader, OrderItemsLoader, OrdersLoader, PostsLoader, TagsLoader,
    UserFlagsLoader, UsersLoader,
};
use quiver_store::seed::{Dataset, Progress};
use quiver_store::write::{GraphWrites, LineRefusal, OrderWrites, PostWrites, Written};
use quiver_store::{PgStore, SqliteStore, Store, StoreError};
use std::collections::HashSet;
use std::sync::Arc;

/// A fresh, migrated, empty database of one backend.
pub(crate) enum Backend {
    Pg(PgStore),
    Sqlite(SqliteStore),
}

impl Backend {
    /// The post writes of this backend.
    pub(crate) fn post_writes(&self) -> Arc<dyn PostWrites> {
        match self {
            Backend::Pg(s) => Arc::new(s.clone()),
            Backend::Sqlite(s) => Arc::new(s.clone()),
        }
    }

    /// The order writes of this backend.
    pub(crate) fn orders(&self) -> Arc<dyn OrderWrites> {
        match self {
            Backend::Pg(s) => Arc::new(s.clone()),
            Backend::Sqlite(s) => Arc::new(s.clone()),
        }
    }

    /// The event effects of this backend.
    pub(crate) fn effects(&self) -> Arc<dyn Effects> {
        match self {
            Backend::Pg(s) => Arc::new(s.clone()),
            Backend::Sqlite(s) => Arc::new(s.clone()),
        }
    }

    /// The outbox of this backend.
    pub(crate) fn outbox_relay(&self) -> Arc<dyn Outbox> {
        match self {
            Backend::Pg(s) => Arc::new(s.clone()),
            Backend::Sqlite(s) => Arc::new(s.clone()),
        }
    }

    /// Counts rows with `sql` (a `SELECT count(*) …` that runs on both backends).
    pub(crate) async fn count(&self, sql: &str) -> i64 {
        match self {
            Backend::Pg(s) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(s.pool())
                .await
                .unwrap(),
            Backend::Sqlite(s) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(s.pool())
                .await
                .unwrap(),
        }
    }

    /// Runs `pg` or `sqlite` (statements separated by `;`), whichever is this backend's
    /// dialect.
    pub(crate) async fn exec(&self, pg: &str, sqlite: &str) {
        match self {
            Backend::Pg(s) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(pg))
                    .execute(s.pool())
                    .await
                    .unwrap();
            }
            Backend::Sqlite(s) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sqlite))
                    .execute(s.pool())
                    .await
                    .unwrap();
            }
        }
    }

    /// The graph writes of this backend.
    pub(crate) fn writes(&self) -> Arc<dyn GraphWrites> {
        match self {
            Backend::Pg(s) => Arc::new(s.clone()),
            Backend::Sqlite(s) => Arc::new(s.clone()),
        }
    }

    /// Every outbox row as `(kind, payload)`, in order.
    pub(crate) async fn outbox(&self) -> Vec<(String, serde_json::Value)> {
        let rows: Vec<(String, String)> = match self {
            Backend::Pg(s) => sqlx::query_as("SELECT kind, payload::text FROM outbox ORDER BY id")
                .fetch_all(s.pool())
                .await
                .unwrap(),
            Backend::Sqlite(s) => sqlx::query_as("SELECT kind, payload FROM outbox ORDER BY id")
                .fetch_all(s.pool())
                .await
                .unwrap(),
        };
        rows.into_iter()
            .map(|(k, p)| (k, serde_json::from_str(&p).unwrap()))
            .collect()
    }

    /// Replaces the database's rows with `ds` and returns the store over it.
    pub(crate) async fn load(&self, ds: &Dataset) -> Arc<dyn Store> {
        let quiet = |_: Progress| {};
        match self {
            Backend::Pg(s) => {
                s.reset().await.expect("reset");
                s.load_dataset(ds, &quiet).await.expect("load fixture");
                Arc::new(s.clone())
            }
            Backend::Sqlite(s) => {
                s.reset().await.expect("reset");
                s.load_dataset(ds, &quiet).await.expect("load fixture");
                Arc::new(s.clone())
            }
        }
    }
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod pg {
            $(
                #[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
                async fn $name(pool: sqlx::PgPool) {
                    super::$name(super::Backend::Pg(quiver_store::PgStore::from_pool(pool))).await
                }
            )*
        }
        mod sqlite {
            $(
                #[sqlx::test(migrator = "quiver_store::SQLITE_MIGRATOR")]
                async fn $name(pool: sqlx::SqlitePool) {
                    super::$name(super::Backend::Sqlite(quiver_store::SqliteStore::from_pool(pool))).await
                }
            )*
        }
    };
}

contract!(
    loaders_return_exactly_the_existing_keys,
    loaders_keep_values_intact,
    empty_input_runs_no_statement,
    author_pages_walk_every_post_without_duplicates_or_gaps,
    home_pages_match_the_merged_feed_at_every_timeline_depth,
    viewer_graph_sees_follows_and_blocks_both_ways,
    follow_edges_return_exactly_the_existing_pairs,
    recent_posts_walk_every_post_newest_first,
    graph_writes_change_rows_and_record_one_event_per_change,
    graph_writes_keep_home_feeds_exact_at_every_timeline_depth,
    posts_are_created_into_every_timeline_and_deleted_by_their_author_only,
    orders_are_priced_from_wishes_and_keyed_for_replay,
    concurrent_orders_with_one_key_create_one_order,
    the_outbox_is_claimed_oldest_first_and_published_once,
    notifications_from_events_are_inserted_once_per_key,
    notifications_walk_newest_first_with_values_intact,
    user_posts_and_customer_orders_page_by_status,
    page_limits_out_of_range_are_rejected,
    housekeeping_prunes_what_outlived_its_retention_and_trims_timelines,
    a_late_fan_out_keeps_timelines_contiguous,
    follows_stop_at_the_limit,
);

fn keys<K: Clone + Eq + std::hash::Hash, V>(m: &std::collections::HashMap<K, V>) -> HashSet<K> {
    m.keys().cloned().collect()
}

async fn loaders_return_exactly_the_existing_keys(backend: Backend) {
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

async fn loaders_keep_values_intact(backend: Backend) {
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

async fn empty_input_runs_no_statement(backend: Backend) {
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
async fn walk<F, Fut>(limit: u32, mut page: F) -> Vec<(DateTime<Utc>, i64)>
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

fn expected(ds: &Dataset, authors: &[i64]) -> Vec<(DateTime<Utc>, i64)> {
    let mut v: Vec<_> = ds
        .posts
        .iter()
        .filter(|p| authors.contains(&p.author_id.0))
        .map(|p| (p.created_at, p.id.0))
        .collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v
}

fn post_page(
    p: quiver_model::Page<quiver_model::PostRef>,
) -> quiver_model::Page<(DateTime<Utc>, i64)> {
    quiver_model::Page {
        items: p.items.iter().map(|r| (r.created_at, r.id.0)).collect(),
        next: p.next,
    }
}

async fn author_pages_walk_every_post_without_duplicates_or_gaps(backend: Backend) {
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

async fn home_pages_match_the_merged_feed_at_every_timeline_depth(backend: Backend) {
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
                            .home_page(UserId(viewer), c, limit)
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

async fn viewer_graph_sees_follows_and_blocks_both_ways(backend: Backend) {
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

async fn follow_edges_return_exactly_the_existing_pairs(backend: Backend) {
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

async fn recent_posts_walk_every_post_newest_first(backend: Backend) {
    let ds = fixture(100);
    let store = backend.load(&ds).await;
    let mut want: Vec<_> = ds.posts.iter().map(|p| (p.created_at, p.id.0)).collect();
    want.sort_unstable_by(|a, b| b.cmp(a));
    for limit in [1, 3, 50] {
        let got = walk(limit, |c| {
            let store = store.clone();
            async move { store.recent_posts(c, limit).await.map(post_page) }
        })
        .await;
        assert_eq!(got, want, "limit {limit}");
    }
}

async fn user_posts_and_customer_orders_page_by_status(backend: Backend) {
    let ds = fixture(100);
    let store = backend.load(&ds).await;
    for limit in 1..=3 {
        let got = walk(limit, |c| {
            let store = store.clone();
            async move { store.user_posts(UserId(2), c, limit).await.map(post_page) }
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

async fn page_limits_out_of_range_are_rejected(backend: Backend) {
    let store = backend.load(&fixture(100)).await;
    for limit in [0, quiver_store::MAX_PAGE_SIZE + 1] {
        let err = store.user_posts(UserId(2), None, limit).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidLimit { .. }), "{err:?}");
        assert!(store.home_page(UserId(1), None, limit).await.is_err());
        assert!(
            store
                .customer_orders(UserId(1), None, None, limit)
                .await
                .is_err()
        );
    }
}

async fn graph_writes_change_rows_and_record_one_event_per_change(backend: Backend) {
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

async fn graph_writes_keep_home_feeds_exact_at_every_timeline_depth(backend: Backend) {
    // Depth 0: no timeline; 3: the walk crosses into merge-at-read; 100: all timeline.
    for depth in [0, 3, 100] {
        let ds = fixture(depth);
        let store = backend.load(&ds).await;
        let w = backend.writes();
        let walk_home = |viewer: i64| {
            let store = store.clone();
            walk(2, move |c| {
                let store = store.clone();
                async move { store.home_page(UserId(viewer), c, 2).await.map(post_page) }
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

async fn posts_are_created_into_every_timeline_and_deleted_by_their_author_only(backend: Backend) {
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
    let first = store.home_page(UserId(2), None, 1).await.unwrap();
    assert_eq!(
        first.items[0].id, post.id,
        "first in the author's feed at once"
    );
    for viewer in [1, 3] {
        let first = store.home_page(UserId(viewer), None, 1).await.unwrap();
        assert_ne!(first.items[0].id, post.id, "not fanned out yet to {viewer}");
    }
    // Batches of one: the fan-out pages through the followers.
    let effects = backend.effects();
    assert_eq!(
        effects.fan_out(post.id, 1).await.unwrap(),
        [UserId(1), UserId(3)],
        "the followers whose timelines hold it"
    );
    let before = store.home_page(UserId(1), None, 50).await.unwrap();
    assert_eq!(
        effects.fan_out(post.id, 1).await.unwrap(),
        [UserId(1), UserId(3)],
        "a redelivery names them again"
    );
    assert_eq!(
        store.home_page(UserId(1), None, 50).await.unwrap(),
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
        let first = store.home_page(UserId(viewer), None, 1).await.unwrap();
        assert_eq!(first.items[0].id, post.id, "first in {viewer}'s feed");
    }
    let first = store.home_page(UserId(4), None, 50).await.unwrap();
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
        async move { store.home_page(UserId(1), c, 2).await.map(post_page) }
    })
    .await;
    assert_eq!(
        walk_home,
        expected(&ds, &[1, 2, 3]),
        "the feed is as before"
    );
    assert_eq!(
        effects.fan_out(post.id, 10).await.unwrap(),
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

async fn notifications_walk_newest_first_with_values_intact(backend: Backend) {
    let mut ds = fixture(100);
    let base = ds.notifications[0].clone();
    for (i, minutes) in [(2, 5), (3, 5), (4, 1), (5, 9), (6, 0)] {
        ds.notifications.push(quiver_model::Notification {
            id: quiver_model::NotificationId(i),
            post_id: Some(PostId(1)),
            created_at: base.created_at + chrono::Duration::minutes(minutes),
            read_at: (i % 2 == 0).then_some(base.created_at),
            ..base.clone()
        });
    }
    let store = backend.load(&ds).await;
    let mut want: Vec<_> = ds
        .notifications
        .iter()
        .filter(|n| n.user_id == UserId(2))
        .map(|n| (n.created_at, n.id.0))
        .collect();
    want.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(want.len(), 6);
    for limit in [1, 2, 5] {
        let got = walk(limit, |c| {
            let store = store.clone();
            async move {
                store
                    .notifications(UserId(2), c, limit)
                    .await
                    .map(|p| quiver_model::Page {
                        items: p.items.iter().map(|n| (n.created_at, n.id.0)).collect(),
                        next: p.next,
                    })
            }
        })
        .await;
        assert_eq!(got, want, "limit {limit}");
    }
    let page = store.notifications(UserId(2), None, 10).await.unwrap();
    let newest = ds.notifications.iter().find(|n| n.id.0 == 5).unwrap();
    assert_eq!(&page.items[0], newest, "values survive the round trip");
    assert!(
        store
            .notifications(UserId(3), None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// A wish by `author` in `currency`, created through the store.
async fn wish(backend: &Backend, author: i64, cents: i64, currency: &str) -> PostId {
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

async fn orders_are_priced_from_wishes_and_keyed_for_replay(backend: Backend) {
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

async fn concurrent_orders_with_one_key_create_one_order(backend: Backend) {
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

async fn the_outbox_is_claimed_oldest_first_and_published_once(backend: Backend) {
    backend.load(&fixture(3)).await;
    let g = backend.writes();
    let outbox = backend.outbox_relay();
    assert_eq!(outbox.backlog().await.unwrap().unpublished, 0);
    assert!(outbox.claim(10).await.unwrap().events().is_empty());
    g.follow(UserId(6), UserId(2)).await.unwrap();
    g.follow(UserId(6), UserId(3)).await.unwrap();
    g.unfollow(UserId(6), UserId(2)).await.unwrap();
    let backlog = outbox.backlog().await.unwrap();
    assert_eq!(backlog.unpublished, 3);
    assert!(backlog.oldest.is_some());

    let claim = outbox.claim(2).await.unwrap();
    let kinds: Vec<_> = claim.events().iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["user.followed", "user.followed"]);
    assert_eq!(claim.events()[1].payload["followee"], 3);
    let first = claim.events()[0].id;
    // Only the first is published; the second comes back with the third.
    claim.published(&[first]).await.unwrap();
    assert_eq!(outbox.backlog().await.unwrap().unpublished, 2);
    let claim = outbox.claim(10).await.unwrap();
    let ids: Vec<_> = claim.events().iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.iter().all(|id| *id > first));
    // A claim released unfinished publishes nothing.
    claim.release().await.unwrap();
    let claim = outbox.claim(10).await.unwrap();
    assert_eq!(claim.events().len(), 2);
    let ids: Vec<_> = claim.events().iter().map(|e| e.id).collect();
    claim.published(&ids).await.unwrap();
    let backlog = outbox.backlog().await.unwrap();
    assert_eq!((backlog.unpublished, backlog.oldest), (0, None));
    assert!(outbox.claim(10).await.unwrap().events().is_empty());
}

async fn notifications_from_events_are_inserted_once_per_key(backend: Backend) {
    let store = backend.load(&fixture(3)).await;
    let effects = backend.effects();
    let note = |key: &str, user: i64, post: Option<i64>| NewNotification {
        key: key.to_owned(),
        user_id: UserId(user),
        kind: quiver_model::NotificationKind::WishBought,
        actor_id: Some(UserId(1)),
        post_id: post.map(PostId),
        order_id: Some(OrderId(1)),
    };
    let notes = [note("9:a", 2, Some(3)), note("9:b", 3, Some(7))];
    assert_eq!(effects.notify(&notes).await.unwrap(), 2);
    assert_eq!(
        effects.notify(&notes).await.unwrap(),
        0,
        "the same keys again"
    );
    // A vanished reference becomes null; a vanished recipient gets nothing.
    let odd = [note("9:c", 2, Some(424_242)), note("9:d", 999, None)];
    assert_eq!(effects.notify(&odd).await.unwrap(), 1);
    let page = store.notifications(UserId(2), None, 10).await.unwrap();
    let mine: Vec<_> = page
        .items
        .iter()
        .filter(|n| n.kind == quiver_model::NotificationKind::WishBought)
        .map(|n| (n.post_id, n.actor_id, n.order_id))
        .collect();
    assert_eq!(mine.len(), 2);
    assert!(mine.contains(&(Some(PostId(3)), Some(UserId(1)), Some(OrderId(1)))));
    assert!(mine.contains(&(None, Some(UserId(1)), Some(OrderId(1)))));
    assert_eq!(effects.notify(&[]).await.unwrap(), 0);
}

async fn housekeeping_prunes_what_outlived_its_retention_and_trims_timelines(backend: Backend) {
    use quiver_model::EventId;
    use quiver_store::events::Retention;
    backend.load(&fixture(100)).await;
    let w = backend.writes();
    w.follow(UserId(6), UserId(2)).await.unwrap();
    w.unfollow(UserId(6), UserId(2)).await.unwrap();
    w.follow(UserId(6), UserId(2)).await.unwrap();
    let outbox = backend.outbox_relay();
    let claim = outbox.claim(10).await.unwrap();
    let ids: Vec<EventId> = claim.events().iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 3);
    claim
        .finish(&ids[..2], &[(ids[2], "it failed".to_owned())])
        .await
        .unwrap();
    w.unfollow(UserId(6), UserId(2)).await.unwrap();
    let busiest = "SELECT count(*) FROM home_timeline
                   GROUP BY user_id ORDER BY count(*) DESC LIMIT 1";
    assert!(
        backend.count(busiest).await > 3,
        "the fixture has deep timelines"
    );
    let newest = |user: i64| {
        format!(
            "SELECT count(*) FROM home_timeline h WHERE user_id = {user} AND
             (SELECT count(*) FROM home_timeline n WHERE n.user_id = h.user_id
              AND (n.created_at > h.created_at
                   OR (n.created_at = h.created_at AND n.post_id > h.post_id))) < 3"
        )
    };
    let before: Vec<i64> = {
        let mut v = Vec::new();
        for u in 1..=5 {
            v.push(backend.count(&newest(u)).await);
        }
        v
    };
    let retention = Retention {
        outbox: std::time::Duration::ZERO,
        idempotency_keys: std::time::Duration::ZERO,
        notifications: std::time::Duration::ZERO,
        timeline_depth: 3,
        users_per_step: 1000,
        rows_per_step: 10_000,
    };
    let pruned = outbox.prune(&retention, UserId(0)).await.unwrap();
    assert_eq!(pruned.outbox, 2, "the published rows, not the dead letter");
    assert!(pruned.timeline_entries > 0);
    assert!(pruned.next_user.is_some());
    assert_eq!(
        backend
            .count("SELECT count(*) FROM outbox WHERE failed_at IS NOT NULL")
            .await,
        1,
        "dead letters are kept"
    );
    assert_eq!(
        backend
            .count("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .await,
        1,
        "unpublished rows are kept"
    );
    assert_eq!(backend.count("SELECT count(*) FROM notifications").await, 0);
    assert_eq!(backend.count(busiest).await, 3);
    for (u, kept) in (1..=5).zip(before) {
        // What is left of each timeline is its newest entries.
        assert_eq!(backend.count(&newest(u)).await, kept, "user {u}");
    }
    // Past the last user the next step starts over.
    let again = outbox
        .prune(&retention, pruned.next_user.unwrap())
        .await
        .unwrap();
    assert_eq!((again.timeline_entries, again.next_user), (0, None));
}

/// A post older than a follower's oldest timeline entry, fanned out late (a redelivery,
/// a reclaimed entry), is not written into that timeline: merge-at-read would otherwise
/// resume from it and skip what lies between.
async fn a_late_fan_out_keeps_timelines_contiguous(backend: Backend) {
    backend.load(&fixture(3)).await;
    let new = quiver_model::NewPost {
        kind: PostKind::Post,
        body: "late".into(),
        media: vec![],
        tags: vec![],
        wish: None,
    };
    let posts = backend.post_writes();
    let old = posts.create_post(UserId(1), &new).await.unwrap();
    backend
        .exec(
            &format!(
                "UPDATE posts SET created_at = '2000-01-01T00:00:00Z' WHERE id = {}",
                old.id
            ),
            &format!(
                "UPDATE posts SET created_at = 946684800000000 WHERE id = {}",
                old.id
            ),
        )
        .await;
    let in_timeline = |post: PostId| {
        format!("SELECT count(*) FROM home_timeline WHERE user_id = 2 AND post_id = {post}")
    };
    assert!(
        backend
            .count("SELECT count(*) FROM home_timeline WHERE user_id = 2")
            .await
            > 0
    );
    let holders = backend.effects().fan_out(old.id, 10).await.unwrap();
    assert!(holders.contains(&UserId(2)), "user 2 follows user 1");
    assert_eq!(
        backend.count(&in_timeline(old.id)).await,
        0,
        "older than the timeline"
    );
    let fresh = posts.create_post(UserId(1), &new).await.unwrap();
    backend.effects().fan_out(fresh.id, 10).await.unwrap();
    assert_eq!(
        backend.count(&in_timeline(fresh.id)).await,
        1,
        "a new post is written"
    );
}

async fn follows_stop_at_the_limit(backend: Backend) {
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
