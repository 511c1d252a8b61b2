//! Materialized timelines and cached heads, items and authors stay exact through bursts
//! of mixed writes: what a reader gets always matches the database.

use crate::http::{json, metrics, scalar};
use crate::support::{Events, Server, redis_url, start_with_events, start_with_events_at};
use quiver_model::{Cursor, PostList, UserId};
use quiver_store::Store as _;
use rand::{Rng as _, SeedableRng as _};
use reqwest::StatusCode;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn timelines_stay_exact_after_a_burst_of_mixed_writes(pool: PgPool) {
    burst_of_mixed_writes_leaves_timelines_exact(start_with_events(pool).await).await;
}

/// The same on a real Redis Cluster, with the events over four partitions.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn on_a_redis_cluster_timelines_stay_exact_after_a_burst_of_mixed_writes(pool: PgPool) {
    let cluster = tokio::task::spawn_blocking(quiver_testkit::redis_cluster::RedisCluster::start)
        .await
        .expect("the cluster starts");
    let events = Events {
        partitions: 4,
        ..Events::default()
    };
    let s = start_with_events_at(pool, &cluster.url(), events).await;
    burst_of_mixed_writes_leaves_timelines_exact(s).await;
}

/// The same where most authors are celebrities (past five followers): their posts are
/// merged at read time.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn with_celebrities_timelines_stay_exact_after_a_burst_of_mixed_writes(pool: PgPool) {
    let events = Events {
        celebrity_followers: 5,
        ..Events::default()
    };
    let s = start_with_events_at(pool.clone(), &redis_url(), events).await;
    // Everyone the burst writes as posts once first: whoever is past the threshold then
    // is a celebrity for the whole burst.
    let users: Vec<i64> = sqlx::query_scalar("SELECT id FROM users ORDER BY id LIMIT 12")
        .fetch_all(&s.pool)
        .await
        .unwrap();
    for u in users {
        post_as(&s, u, "burst").await;
    }
    s.settle().await;
    burst_of_mixed_writes_leaves_timelines_exact(s).await;
    // Both kinds of author wrote: posts fanned out, and posts that some follower's feed
    // showed only by the merge (a follow's backfill may still write one into the
    // follower's timeline).
    let merged: i64 = scalar(
        &pool,
        "SELECT count(*) FROM posts p JOIN users u ON u.id = p.author_id
         WHERE u.celebrity_from IS NOT NULL AND u.celebrity_from <> p.id
           AND p.body = 'burst'
           AND EXISTS (SELECT 1 FROM follows f
                       WHERE f.followee_id = p.author_id
                         AND NOT EXISTS (SELECT 1 FROM home_timeline t
                                         WHERE t.user_id = f.follower_id AND t.post_id = p.id))",
    )
    .await;
    let fanned: i64 = scalar(
        &pool,
        "SELECT count(DISTINCT p.id) FROM posts p JOIN home_timeline t ON t.post_id = p.id
         WHERE p.body = 'burst' AND t.user_id <> p.author_id",
    )
    .await;
    assert!(
        merged > 0 && fanned > 0,
        "merged {merged}, fanned out {fanned}"
    );
}

async fn burst_of_mixed_writes_leaves_timelines_exact(mut s: Server) {
    let users: Vec<i64> = sqlx::query_scalar("SELECT id FROM users ORDER BY id LIMIT 12")
        .fetch_all(&s.pool)
        .await
        .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut tasks = Vec::new();
    for _ in 0..120 {
        let me = users[rng.random_range(0..users.len())];
        let other = users[rng.random_range(0..users.len())];
        let req = match rng.random_range(0..10) {
            0..=2 => s
                .http
                .post(s.url("/api/v1/posts"))
                .header("content-type", "application/json")
                .body(r#"{"kind": "post", "body": "burst"}"#),
            3..=5 => s.http.put(s.url(&format!("/api/v1/users/{other}/follow"))),
            6 | 7 => s
                .http
                .delete(s.url(&format!("/api/v1/users/{other}/follow"))),
            8 => s.http.put(s.url(&format!("/api/v1/users/{other}/block"))),
            _ => s
                .http
                .delete(s.url(&format!("/api/v1/users/{other}/block"))),
        }
        .bearer_auth(s.token(me));
        tasks.push(tokio::spawn(async move { req.send().await.unwrap() }));
    }
    let mut created = Vec::new();
    for t in tasks {
        let resp = t.await.unwrap();
        assert!(
            resp.status().is_success()
                || [
                    StatusCode::FORBIDDEN,
                    StatusCode::NOT_FOUND,
                    StatusCode::CONFLICT
                ]
                .contains(&resp.status()),
            "{}",
            resp.status()
        );
        if resp.status() == StatusCode::CREATED {
            let body: serde_json::Value =
                serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
            created.push((
                body["id"].as_i64().unwrap(),
                body["author"]["id"].as_i64().unwrap(),
            ));
        }
    }
    // Delete a third of the new posts, concurrently with more follows.
    let mut tasks = Vec::new();
    for (i, (post, author)) in created.iter().enumerate() {
        if i % 3 == 0 {
            let req = s
                .http
                .delete(s.url(&format!("/api/v1/posts/{post}")))
                .bearer_auth(s.token(*author));
            tasks.push(tokio::spawn(
                async move { req.send().await.unwrap().status() },
            ));
        }
        let other = users[i % users.len()];
        let req = s
            .http
            .put(s.url(&format!("/api/v1/users/{other}/follow")))
            .bearer_auth(s.token(*author));
        tasks.push(tokio::spawn(
            async move { req.send().await.unwrap().status() },
        ));
    }
    for t in tasks {
        let status = t.await.unwrap();
        assert!(
            // Done, yourself, hidden by a block, or already so.
            [
                StatusCode::NO_CONTENT,
                StatusCode::FORBIDDEN,
                StatusCode::NOT_FOUND,
                StatusCode::CONFLICT
            ]
            .contains(&status),
            "{status}"
        );
    }
    s.settle().await;

    // From scratch: each user's feed is their own posts and their followees', newest first.
    let follows: Vec<(i64, i64)> = sqlx::query_as("SELECT follower_id, followee_id FROM follows")
        .fetch_all(&s.pool)
        .await
        .unwrap();
    let posts: Vec<(i64, i64, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT id, author_id, created_at FROM posts")
            .fetch_all(&s.pool)
            .await
            .unwrap();
    let timeline: Vec<(i64, i64)> = sqlx::query_as("SELECT user_id, post_id FROM home_timeline")
        .fetch_all(&s.pool)
        .await
        .unwrap();
    let all_users: Vec<i64> = sqlx::query_scalar("SELECT id FROM users ORDER BY id")
        .fetch_all(&s.pool)
        .await
        .unwrap();
    let mut followees: HashMap<i64, HashSet<i64>> = HashMap::new();
    for (a, b) in &follows {
        followees.entry(*a).or_default().insert(*b);
    }
    let mut stored: HashMap<i64, HashSet<i64>> = HashMap::new();
    for (u, p) in &timeline {
        stored.entry(*u).or_default().insert(*p);
    }
    let celebrities: HashSet<i64> =
        sqlx::query_scalar("SELECT id FROM users WHERE celebrity_from IS NOT NULL")
            .fetch_all(&s.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let mut checked_entries = 0;
    for u in &all_users {
        let f = followees.get(u).cloned().unwrap_or_default();
        let mut feed: Vec<&(i64, i64, chrono::DateTime<chrono::Utc>)> = posts
            .iter()
            .filter(|(_, author, _)| author == u || f.contains(author))
            .collect();
        feed.sort_unstable_by_key(|p| std::cmp::Reverse((p.2, p.0)));
        let expected: Vec<i64> = feed.iter().map(|p| p.0).collect();
        // The stored timeline is the newest part of the feed but for celebrities' posts
        // (merged at read time): nothing stale, nothing else missing above its oldest
        // entry.
        let mine = stored.get(u).cloned().unwrap_or_default();
        let oldest = feed.iter().rposition(|p| mine.contains(&p.0));
        let above: HashSet<i64> = feed[..oldest.map_or(0, |i| i + 1)]
            .iter()
            .filter(|p| p.1 == *u || !celebrities.contains(&p.1) || mine.contains(&p.0))
            .map(|p| p.0)
            .collect();
        assert_eq!(
            mine, above,
            "user {u}'s timeline is the newest part of their fanned-out feed"
        );
        checked_entries += mine.len();
        // And the home feed, timeline then merge-at-read, walks the whole of it.
        let mut walked = Vec::new();
        let mut after: Option<Cursor> = None;
        loop {
            let page = s
                .store
                .post_page(PostList::Home(UserId(*u)), after, 100)
                .await
                .unwrap();
            walked.extend(page.items.iter().map(|r| r.id.0));
            match page.next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        assert_eq!(walked, expected, "user {u}'s home feed");
    }
    // And over HTTP, cut from the cached heads (merged with the celebrities' heads).
    for u in &users {
        assert_eq!(
            feed_over_http(&s, *u).await,
            feed_from_store(&s, *u).await,
            "user {u}'s home feed over HTTP"
        );
    }
    assert!(checked_entries > 100, "the burst touched real timelines");
    assert!(created.len() > 20, "the burst created posts");
    s.shutdown().await.unwrap();
}

/// Every page of `user`'s home feed over HTTP, seven items a page, as post ids.
pub(crate) async fn feed_over_http(s: &Server, user: i64) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut path = "/api/v1/feed?limit=7".to_owned();
    loop {
        let (_, page) = json(s.get(&path, Some(user)).send().await.unwrap()).await;
        ids.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_i64().unwrap()),
        );
        match page["next_page"].as_str() {
            Some(c) => path = format!("/api/v1/feed?limit=7&cursor={c}"),
            None => return ids,
        }
    }
}

/// `user`'s home feed from the store, uncached, without authors a block separates them
/// from (as the engine shows it).
pub(crate) async fn feed_from_store(s: &Server, user: i64) -> Vec<i64> {
    let hidden: HashSet<i64> = sqlx::query_scalar(
        "SELECT blocked_id FROM blocks WHERE blocker_id = $1
         UNION SELECT blocker_id FROM blocks WHERE blocked_id = $1",
    )
    .bind(user)
    .fetch_all(&s.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let mut ids = Vec::new();
    let mut after: Option<Cursor> = None;
    loop {
        let page = s
            .store
            .post_page(PostList::Home(UserId(user)), after, 100)
            .await
            .unwrap();
        ids.extend(page.items.iter().map(|r| r.id.0));
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    let authors: HashMap<i64, i64> =
        sqlx::query_as::<_, (i64, i64)>("SELECT id, author_id FROM posts WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&s.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    ids.retain(|id| !hidden.contains(&authors[id]));
    ids
}

/// Posts `body` as `author`; the new post's id (the answer must be `201 Created`).
pub(crate) async fn post_as(s: &Server, author: i64, body: &str) -> i64 {
    let resp = s
        .http
        .post(s.url("/api/v1/posts"))
        .bearer_auth(s.token(author))
        .header("content-type", "application/json")
        .body(serde_json::json!({"kind": "post", "body": body}).to_string())
        .send()
        .await
        .unwrap();
    created_id(resp).await
}

/// The id of the post a `201 Created` answer carries.
pub(crate) async fn created_id(resp: reqwest::Response) -> i64 {
    assert_eq!(resp.status(), StatusCode::CREATED);
    let post: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    post["id"].as_i64().unwrap()
}

pub(crate) async fn cache_count(s: &Server, cache: &str, outcome: &str) -> f64 {
    let prefix = format!("quiver_cache_lookups_total{{cache=\"{cache}\",outcome=\"{outcome}\"}}");
    metrics(s)
        .await
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn cached_home_heads_follow_every_change_to_the_timeline(pool: PgPool) {
    let mut s = start_with_events(pool).await;
    // A follows B; C has posts, A does not follow C; no blocks between any two of them.
    let (a, b, c): (i64, i64, i64) = sqlx::query_as(
        "SELECT f.follower_id, f.followee_id, u.id FROM follows f, users u
         WHERE u.id NOT IN (f.follower_id, f.followee_id)
           AND EXISTS (SELECT 1 FROM posts WHERE author_id = u.id)
           AND NOT EXISTS (SELECT 1 FROM follows WHERE follower_id = f.follower_id AND followee_id = u.id)
           AND NOT EXISTS (SELECT 1 FROM follows WHERE follower_id = u.id AND followee_id = f.followee_id)
           AND NOT EXISTS (SELECT 1 FROM blocks WHERE blocker_id IN (f.follower_id, f.followee_id, u.id)
                                                  AND blocked_id IN (f.follower_id, f.followee_id, u.id))
         ORDER BY f.follower_id, f.followee_id, u.id LIMIT 1",
    )
    .fetch_one(&s.pool)
    .await
    .unwrap();
    let authored = |author: i64| {
        let pool = s.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT id FROM posts WHERE author_id = $1")
                .bind(author)
                .fetch_all(&pool)
                .await
                .unwrap()
                .into_iter()
                .collect::<HashSet<i64>>()
        }
    };
    let first = feed_over_http(&s, a).await;
    assert_eq!(first, feed_from_store(&s, a).await);
    let hits = cache_count(&s, "home", "hit_l1").await;
    assert_eq!(feed_over_http(&s, a).await, first);
    assert!(
        cache_count(&s, "home", "hit_l1").await > hits,
        "the second walk is cut from the cached head"
    );

    // B posts: only the fan-out event can tell A's cached head.
    let by_b = post_as(&s, b, "for my followers").await;
    s.settle().await;
    let now = feed_over_http(&s, a).await;
    assert_eq!(now[0], by_b, "the followee's new post leads A's feed");
    assert_eq!(now, feed_from_store(&s, a).await);

    // A's own graph writes and posts show in A's next read, before any event is handled.
    let write = |method: reqwest::Method, path: String, who: i64| {
        let req = s
            .http
            .request(method, s.url(&path))
            .bearer_auth(s.token(who));
        async move { req.send().await.unwrap().status() }
    };
    let put = reqwest::Method::PUT;
    let delete = reqwest::Method::DELETE;
    assert_eq!(
        write(put.clone(), format!("/api/v1/users/{c}/follow"), a).await,
        StatusCode::NO_CONTENT
    );
    let now = feed_over_http(&s, a).await;
    let c_posts = authored(c).await;
    assert!(
        now.iter().any(|p| c_posts.contains(p)),
        "a follow backfills at once"
    );
    assert_eq!(now, feed_from_store(&s, a).await);
    assert_eq!(
        write(delete.clone(), format!("/api/v1/users/{b}/follow"), a).await,
        StatusCode::NO_CONTENT
    );
    let now = feed_over_http(&s, a).await;
    let b_posts = authored(b).await;
    assert!(
        !now.iter().any(|p| b_posts.contains(p)),
        "an unfollow removes at once"
    );
    assert_eq!(now, feed_from_store(&s, a).await);
    let mine = post_as(&s, a, "mine").await;
    assert_eq!(feed_over_http(&s, a).await[0], mine, "my post, at once");
    assert_eq!(
        write(delete.clone(), format!("/api/v1/posts/{mine}"), a).await,
        StatusCode::NO_CONTENT
    );
    assert!(
        !feed_over_http(&s, a).await.contains(&mine),
        "my deleted post, gone at once"
    );

    // C blocks A: C's write forgets A's head too.
    assert_eq!(
        write(put, format!("/api/v1/users/{a}/block"), c).await,
        StatusCode::NO_CONTENT
    );
    let now = feed_over_http(&s, a).await;
    assert!(!now.iter().any(|p| c_posts.contains(p)), "a block hides");
    assert_eq!(now, feed_from_store(&s, a).await);
    s.settle().await;
    assert_eq!(feed_over_http(&s, a).await, feed_from_store(&s, a).await);
    s.shutdown().await.unwrap();
}

/// Feed items and authors are cached ready (post with media and tags, author with flags,
/// each with its encoded fragment). A row changed under them is served from the cache
/// until it is invalidated, and never after: the post's invalidation drops its item,
/// media and tags included, on every page that shows it, and the user's drops their
/// author item.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn ready_items_and_authors_never_outlive_their_invalidation(pool: PgPool) {
    let s = crate::support::start(pool, quiver_server::ServerConfig::default(), None).await;
    // A viewer, and the newest post of their feed by someone else.
    let viewer: i64 = scalar(
        &s.pool,
        "SELECT follower_id FROM follows GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
    )
    .await;
    let page = |path: String| {
        let req = s.http.get(s.url(&path)).bearer_auth(s.token(viewer));
        async move { json(req.send().await.unwrap()).await.1 }
    };
    let home = "/api/v1/feed?limit=20".to_owned();
    let first = page(home.clone()).await;
    let item = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["author"]["id"].as_i64() != Some(viewer))
        .expect("an item by someone else")
        .clone();
    let (post, author) = (
        item["id"].as_i64().unwrap(),
        item["author"]["id"].as_i64().unwrap(),
    );
    let shown = |page: &serde_json::Value| {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"].as_i64() == Some(post))
            .cloned()
            .expect("the post is still on the page")
    };
    let exec = |sql: String| {
        let pool = s.pool.clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    exec(format!(
        "UPDATE posts SET body = 'edited body' WHERE id = {post}"
    ))
    .await;
    exec(format!("DELETE FROM post_tags WHERE post_id = {post}")).await;
    exec(format!(
        "INSERT INTO post_tags (post_id, tag) VALUES ({post}, 'edited_tag')"
    ))
    .await;
    exec(format!("DELETE FROM media WHERE post_id = {post}")).await;
    exec(format!(
        "INSERT INTO media (post_id, kind, url, width, height, size_bytes, position)
         VALUES ({post}, 'image', 'https://m.example/edited.jpg', 2, 2, 4, 0)"
    ))
    .await;
    exec(format!(
        "UPDATE users SET display_name = 'Renamed', verified = NOT verified WHERE id = {author}"
    ))
    .await;
    // Still the cached item and author: the test would prove nothing otherwise.
    let cached = shown(&page(home.clone()).await);
    assert_eq!(cached["body"], item["body"]);
    assert_eq!(cached["author"], item["author"]);

    s.caches
        .invalidate_post(quiver_model::PostId(post), UserId(author))
        .await
        .unwrap();
    let user_posts = format!("/api/v1/users/{author}/posts?limit=100");
    for (path, where_) in [(home.clone(), "home"), (user_posts.clone(), "user posts")] {
        let fresh = shown(&page(path).await);
        assert_eq!(fresh["body"], "edited body", "{where_}");
        assert_eq!(fresh["tags"], serde_json::json!(["edited_tag"]), "{where_}");
        assert_eq!(
            fresh["media"][0]["url"], "https://m.example/edited.jpg",
            "{where_}"
        );
        assert_eq!(
            fresh["author"], item["author"],
            "the author is cached apart"
        );
    }
    let single = page(format!("/api/v1/posts/{post}")).await;
    assert_eq!(single["body"], "edited body");

    s.caches.invalidate_user(UserId(author)).await.unwrap();
    for path in [home, user_posts, format!("/api/v1/posts/{post}")] {
        let got = page(path.clone()).await;
        let author_json = if path.contains("/posts/") && !path.contains("users") {
            got["author"].clone()
        } else {
            shown(&got)["author"].clone()
        };
        assert_eq!(author_json["display_name"], "Renamed", "{path}");
        assert_ne!(
            author_json["verified"], item["author"]["verified"],
            "the flag changed too: {path}"
        );
    }
    let profile = page(format!("/api/v1/users/{author}")).await;
    assert_eq!(profile["display_name"], "Renamed");
}
