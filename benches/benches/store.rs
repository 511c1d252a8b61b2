//! Storage-layer benches on PostgreSQL over loopback, on a seeded data set of about a
//! million posts (built once into the database `quiver_bench`, reused afterwards):
//!
//! - hydrating a 20-post page four ways: per item (N+1), one batch per entity in sequence,
//!   the batches concurrently, and one round trip returning every entity set;
//! - the home-feed skeleton for viewers following about 200 and 2,000 accounts: the
//!   obvious `author_id = ANY(…) ORDER BY … LIMIT` query, merge-at-read per author, and the
//!   materialized home timeline that `PgStore::home_page` reads, with latency percentiles;
//! - `quiver seed` load rate into PostgreSQL.
//!
//! Run with `cargo bench -p quiver-benches --bench store` (`DATABASE_URL` picks the server).

use criterion::{Criterion, criterion_group, criterion_main};
use quiver_benches::{bench_seed, latency_row, percentiles, seed_rate, seeded};
use quiver_model::{PostId, PostList, UserId};
use quiver_store::seed::SeedConfig;
use quiver_store::{PgStore, Store};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;

struct Fixture {
    store: Arc<PgStore>,
    page: Vec<PostId>,
    viewers: Vec<(String, UserId, Vec<i64>)>,
}

fn fixture(rt: &Runtime) -> Fixture {
    rt.block_on(async {
        let store = Arc::new(
            seeded("quiver_bench", &bench_seed())
                .await
                .expect("seeded database"),
        );
        let posts: i64 = sqlx::query_scalar("SELECT count(*) FROM posts")
            .fetch_one(store.pool())
            .await
            .unwrap();
        eprintln!("data set: {posts} posts");
        // Viewers whose followee counts are closest to 200 and 2,000.
        let mut viewers = Vec::new();
        for target in [200i64, 2000] {
            let (viewer, n): (i64, i64) = sqlx::query_as(
                "SELECT follower_id, count(*) FROM follows GROUP BY follower_id
                 ORDER BY abs(count(*) - $1), follower_id LIMIT 1",
            )
            .bind(target)
            .fetch_one(store.pool())
            .await
            .unwrap();
            let followees: Vec<i64> =
                sqlx::query_scalar("SELECT followee_id FROM follows WHERE follower_id = $1")
                    .bind(viewer)
                    .fetch_all(store.pool())
                    .await
                    .unwrap();
            viewers.push((format!("{n}_followees"), UserId(viewer), followees));
        }
        let page = store
            .post_page(PostList::Home(viewers[0].1), None, 20)
            .await
            .unwrap();
        let page: Vec<PostId> = page.items.iter().map(|r| r.id).collect();
        assert_eq!(page.len(), 20);
        Fixture {
            store,
            page,
            viewers,
        }
    })
}

/// Per item: five statements for each of the 20 posts, one after another.
async fn n_plus_one(store: &PgStore, page: &[PostId]) -> usize {
    let pool = store.pool();
    let mut rows = 0;
    for id in page {
        let author: i64 = sqlx::query_scalar("SELECT author_id FROM posts WHERE id = $1")
            .bind(id.0)
            .fetch_one(pool)
            .await
            .unwrap();
        rows += sqlx::query(
            "SELECT id, handle, display_name, bio, avatar_url, created_at FROM users WHERE id = $1",
        )
        .bind(author)
        .fetch_all(pool)
        .await
        .unwrap()
        .len();
        rows += sqlx::query("SELECT verified, creator, private FROM users WHERE id = $1")
            .bind(author)
            .fetch_all(pool)
            .await
            .unwrap()
            .len();
        rows += sqlx::query("SELECT id, kind, url, width, height, size_bytes, position FROM media WHERE post_id = $1 ORDER BY position")
            .bind(id.0)
            .fetch_all(pool)
            .await
            .unwrap()
            .len();
        rows += sqlx::query("SELECT tag FROM post_tags WHERE post_id = $1 ORDER BY tag")
            .bind(id.0)
            .fetch_all(pool)
            .await
            .unwrap()
            .len();
    }
    rows
}

fn authors_of(posts: &std::collections::HashMap<PostId, quiver_model::Post>) -> Vec<UserId> {
    posts
        .values()
        .map(|p| p.author_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect()
}

/// One batch per entity, one after another: five statements.
async fn batched_sequential(store: &PgStore, page: &[PostId]) -> usize {
    let posts = store.posts(page).await.unwrap();
    let authors = authors_of(&posts);
    let users = store.users(&authors).await.unwrap();
    let flags = store.user_flags(&authors).await.unwrap();
    let media = store.media_by_post(page).await.unwrap();
    let tags = store.tags_by_post(page).await.unwrap();
    posts.len() + users.len() + flags.len() + media.len() + tags.len()
}

/// The same five batches in two concurrent waves (posts, media and tags need only the
/// page; users and flags need the posts' authors), each on its own pooled connection.
async fn batched_concurrent(store: &PgStore, page: &[PostId]) -> usize {
    let (posts, media, tags) = tokio::try_join!(
        store.posts(page),
        store.media_by_post(page),
        store.tags_by_post(page)
    )
    .unwrap();
    let authors = authors_of(&posts);
    let (users, flags) =
        tokio::try_join!(store.users(&authors), store.user_flags(&authors)).unwrap();
    posts.len() + users.len() + flags.len() + media.len() + tags.len()
}

/// One statement returning every entity set as JSON arrays.
async fn single_round_trip(store: &PgStore, page: &[PostId]) -> usize {
    let ids: Vec<i64> = page.iter().map(|p| p.0).collect();
    let row: (serde_json::Value, serde_json::Value, serde_json::Value, serde_json::Value) = sqlx::query_as(
        "WITH p AS (SELECT * FROM posts WHERE id = ANY($1))
         SELECT COALESCE((SELECT json_agg(p) FROM p), '[]'),
                COALESCE((SELECT json_agg(u) FROM users u WHERE u.id IN (SELECT author_id FROM p)), '[]'),
                COALESCE((SELECT json_agg(m ORDER BY m.post_id, m.position) FROM media m WHERE m.post_id = ANY($1)), '[]'),
                COALESCE((SELECT json_agg(t) FROM post_tags t WHERE t.post_id = ANY($1)), '[]')",
    )
    .bind(&ids)
    .fetch_one(store.pool())
    .await
    .unwrap();
    [row.0, row.1, row.2, row.3]
        .iter()
        .map(|v| v.as_array().map_or(0, Vec::len))
        .sum()
}

/// The obvious home-feed query: every post of every followee, sorted, then limited.
async fn naive_skeleton(store: &PgStore, viewer: UserId, followees: &[i64]) -> usize {
    let mut authors = followees.to_vec();
    authors.push(viewer.0);
    sqlx::query(
        "SELECT id, created_at FROM posts WHERE author_id = ANY($1)
         ORDER BY created_at DESC, id DESC LIMIT 21",
    )
    .bind(&authors)
    .fetch_all(store.pool())
    .await
    .unwrap()
    .len()
}

fn hydrate(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let f = fixture(&rt);
    let mut g = c.benchmark_group("hydrate_20_posts");
    g.sample_size(30).measurement_time(Duration::from_secs(6));
    let (store, page) = (f.store.clone(), f.page.clone());
    g.bench_function("n_plus_one", |b| {
        b.to_async(&rt).iter(|| n_plus_one(&store, &page))
    });
    g.bench_function("batched_sequential", |b| {
        b.to_async(&rt).iter(|| batched_sequential(&store, &page))
    });
    g.bench_function("batched_concurrent", |b| {
        b.to_async(&rt).iter(|| batched_concurrent(&store, &page))
    });
    g.bench_function("single_round_trip", |b| {
        b.to_async(&rt).iter(|| single_round_trip(&store, &page))
    });
    g.finish();
}

fn skeleton(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let f = fixture(&rt);
    let mut g = c.benchmark_group("home_skeleton");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for (name, viewer, followees) in &f.viewers {
        let store = f.store.clone();
        let mut authors: Vec<UserId> = followees.iter().map(|a| UserId(*a)).collect();
        authors.push(*viewer);
        g.bench_function(format!("naive_any/{name}"), |b| {
            b.to_async(&rt)
                .iter(|| naive_skeleton(&store, *viewer, followees))
        });
        g.bench_function(format!("merge_lateral/{name}"), |b| {
            b.to_async(&rt)
                .iter(|| async { store.author_page(&authors, None, 20).await.unwrap() })
        });
        g.bench_function(format!("home_timeline/{name}"), |b| {
            b.to_async(&rt).iter(|| async {
                store
                    .post_page(PostList::Home(*viewer), None, 20)
                    .await
                    .unwrap()
            })
        });
    }
    g.finish();

    // Percentiles under concurrency: the materialized timeline against merge-at-read.
    println!("\n| home skeleton, 8 clients | calls | p50 ms | p90 ms | p99 ms | max ms |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, viewer, followees) in &f.viewers {
        let authors: Arc<Vec<UserId>> = Arc::new(
            followees
                .iter()
                .map(|a| UserId(*a))
                .chain([*viewer])
                .collect(),
        );
        let viewer = *viewer;
        let store = f.store.clone();
        let h = rt.block_on(percentiles(8, 250, move || {
            let store = store.clone();
            async move {
                store
                    .post_page(PostList::Home(viewer), None, 20)
                    .await
                    .unwrap();
            }
        }));
        println!("{}", latency_row(&format!("home_timeline {name}"), &h));
        let store = f.store.clone();
        let h = rt.block_on(percentiles(8, 25, move || {
            let (store, authors) = (store.clone(), authors.clone());
            async move {
                store.author_page(&authors, None, 20).await.unwrap();
            }
        }));
        println!("{}", latency_row(&format!("merge_lateral {name}"), &h));
    }
}

fn seed(_: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let config = SeedConfig {
        users: 10_000,
        posts_per_user: 20,
        follows_per_user: 30,
        seed: 7,
        timeline_depth: 200,
    };
    let (rows, rate) = rt
        .block_on(seed_rate("quiver_bench_seed", &config))
        .expect("seed");
    println!(
        "\n| seed into postgresql (COPY) | rows | rows/s |\n| --- | --- | --- |\n| {config:?} | {rows} | {rate:.0} |"
    );
}

criterion_group!(benches, hydrate, skeleton, seed);
criterion_main!(benches);
