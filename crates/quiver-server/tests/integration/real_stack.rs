//! The whole read stack over real services: the engine over tiered caches (L1 and Redis)
//! over coalescing batchers over `PgStore`, on a seeded data set. Feeds walked page by
//! page for several viewers must match the feed computed by independent SQL, from a cold
//! stack, a warm one, and a second replica that starts with an empty L1 over the same
//! Redis.

use quiver_cache::{RedisConfig, RedisRemote};
use quiver_enrich::{Engine, EngineConfig, Rendered};
use quiver_model::{CursorCodec, UserId};
use quiver_server::compose::{StackConfig, read_stack};
use quiver_store::PgStore;
use quiver_store::seed::{SeedConfig, generate};
use sqlx::PgPool;
use std::sync::Arc;

async fn replica(store: &PgStore, namespace: &str) -> Engine {
    let config = StackConfig {
        namespace: namespace.to_owned(),
        ..StackConfig::default()
    };
    let (sources, _caches) = read_stack(
        Arc::new(store.clone()),
        Some(Arc::new(
            RedisRemote::connect_within(
                &RedisConfig::at(&quiver_testkit::redis_url()),
                quiver_testkit::DEADLINE,
            )
            .await
            .expect("redis at REDIS_URL is reachable"),
        )),
        &config,
        &EngineConfig::default(),
    )
    .await;
    Engine::new(
        sources,
        CursorCodec::new(b"real stack"),
        EngineConfig::default(),
        None,
    )
}

/// The home feed of `viewer` by plain SQL: followees and own posts, minus blocks either
/// way, newest first.
async fn expected_home(pool: &PgPool, viewer: i64) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT p.id FROM posts p
         WHERE (p.author_id = $1
                OR p.author_id IN (SELECT followee_id FROM follows WHERE follower_id = $1))
           AND p.author_id NOT IN (SELECT blocked_id FROM blocks WHERE blocker_id = $1)
           AND p.author_id NOT IN (SELECT blocker_id FROM blocks WHERE blocked_id = $1)
         ORDER BY p.created_at DESC, p.id DESC",
    )
    .bind(viewer)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn walk(engine: &Engine, viewer: i64, limit: u32) -> (Vec<i64>, Vec<Rendered>) {
    let (mut ids, mut pages, mut cursor) = (Vec::new(), Vec::new(), None::<String>);
    loop {
        let page = engine
            .home(UserId(viewer), cursor.as_deref(), limit)
            .await
            .unwrap();
        ids.extend(page.ids.iter().copied());
        cursor = page.next.clone();
        pages.push(page);
        if cursor.is_none() {
            return (ids, pages);
        }
        assert!(pages.len() < 10_000, "pagination did not end");
    }
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn seeded_feeds_walked_through_the_whole_stack_match_independent_sql(pool: PgPool) {
    let store = PgStore::from_pool(pool.clone());
    let ds = generate(&SeedConfig {
        users: 120,
        posts_per_user: 6,
        follows_per_user: 8,
        seed: 7,
        timeline_depth: 25,
    });
    store.load_dataset(&ds, &|_| {}).await.unwrap();
    // Blocks on top of existing follows (the seed never leaves both), so the skeleton
    // holds posts the engine must filter, in both directions.
    let followers: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT follower_id, min(followee_id) FROM follows
         GROUP BY follower_id HAVING count(*) >= 3 ORDER BY follower_id LIMIT 4",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        followers.len(),
        4,
        "the seed has viewers who follow several"
    );
    for (n, (viewer, followee)) in followers.iter().enumerate() {
        let (blocker, blocked) = if n % 2 == 0 {
            (viewer, followee)
        } else {
            (followee, viewer)
        };
        sqlx::query(
            "INSERT INTO blocks (blocker_id, blocked_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(blocker)
        .bind(blocked)
        .execute(&pool)
        .await
        .unwrap();
    }

    let namespace = format!(
        "qtest:stack:{}:{}",
        std::process::id(),
        rand::random::<u32>()
    );
    let first = replica(&store, &namespace).await;
    let viewers: Vec<i64> = followers.iter().map(|(v, _)| *v).chain([1, 2]).collect();
    for &viewer in &viewers {
        let want = expected_home(&pool, viewer).await;
        assert!(!want.is_empty(), "viewer {viewer} has a feed");
        for limit in [7, 20] {
            let (cold, cold_pages) = walk(&first, viewer, limit).await;
            assert_eq!(cold, want, "cold stack, viewer {viewer} limit {limit}");
            let (warm, warm_pages) = walk(&first, viewer, limit).await;
            assert_eq!(warm, want, "warm stack, viewer {viewer} limit {limit}");
            for (a, b) in cold_pages.iter().zip(&warm_pages) {
                assert_eq!(a.body, b.body, "cached pages are byte-identical");
            }
        }
    }
    // A second replica: empty L1, the same Redis.
    let second = replica(&store, &namespace).await;
    for &viewer in &viewers {
        let (ids, _) = walk(&second, viewer, 20).await;
        assert_eq!(
            ids,
            expected_home(&pool, viewer).await,
            "replica, viewer {viewer}"
        );
    }

    // Viewer parts agree with SQL for every item of a first page.
    let viewer = viewers[0];
    let page = first.home(UserId(viewer), None, 50).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&page.body).unwrap();
    for item in body["items"].as_array().unwrap() {
        let author = item["author"]["id"].as_i64().unwrap();
        let edge = |a: i64, b: i64| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, bool>(
                    "SELECT EXISTS (SELECT 1 FROM follows WHERE follower_id = $1 AND followee_id = $2)",
                )
                .bind(a)
                .bind(b)
                .fetch_one(&pool)
                .await
                .unwrap()
            }
        };
        assert_eq!(
            item["viewer"]["follows_author"].as_bool(),
            Some(edge(viewer, author).await)
        );
        assert_eq!(
            item["viewer"]["followed_by_author"].as_bool(),
            Some(edge(author, viewer).await)
        );
    }
}
