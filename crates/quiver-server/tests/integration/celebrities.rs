//! Celebrities over HTTP: their posts are never fanned out, and reach followers' cached
//! pages through the celebrity's own head, at the cost of any other post.

use crate::coherence::{cache_count, feed_from_store, feed_over_http, post_as};
use crate::http::scalar;
use crate::support::{Events, Server, redis_url, start_with_events_at};
use reqwest::StatusCode;
use sqlx::PgPool;

/// A post by an author with 100,000 followers writes no timeline: it commits, its event
/// is handled at the cost of any other post's, and every follower's next page (their
/// cached head merged with the author's) leads with it.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_post_by_a_hundred_thousand_follower_author_is_merged_at_read_time(pool: PgPool) {
    let events = Events {
        celebrity_followers: 5,
        ..Events::default()
    };
    let mut s = start_with_events_at(pool, &redis_url(), events).await;
    let star: i64 = scalar(
        &s.pool,
        "SELECT followee_id FROM follows GROUP BY 1 HAVING count(*) > 5 ORDER BY 1 LIMIT 1",
    )
    .await;
    // A reader who follows the star already and has a cached head.
    let reader: i64 = scalar(
        &s.pool,
        &format!(
            "SELECT min(follower_id) FROM follows f WHERE followee_id = {star}
               AND NOT EXISTS (SELECT 1 FROM blocks WHERE blocker_id IN (f.follower_id, {star})
                                                      AND blocked_id IN (f.follower_id, {star}))"
        ),
    )
    .await;
    let before = feed_over_http(&s, reader).await;
    // The first post finds the star past the threshold and still fans out (its holders'
    // heads learn of the merge); then 100,000 more follow.
    let promoting = post_as(&s, star, "promoting").await;
    s.settle().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO users (handle, display_name)
           SELECT 'fan_' || g, 'Fan ' || g FROM generate_series(1, 100000) g;
         INSERT INTO follows (follower_id, followee_id)
           SELECT id, {star} FROM users WHERE handle LIKE 'fan\\_%'"
    )))
    .execute(&s.pool)
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let merged = post_as(&s, star, "merged").await;
    s.settle().await;
    let visible = feed_over_http(&s, reader).await;
    eprintln!(
        "a 100,000-follower author's post: committed, handled and read in {:?}",
        started.elapsed()
    );
    assert_eq!(
        visible[..2],
        [merged, promoting],
        "both lead the reader's feed"
    );
    assert_eq!(visible[2..], before[..], "and nothing else changed");
    assert_eq!(visible, feed_from_store(&s, reader).await);
    let written = |post: i64| {
        let pool = s.pool.clone();
        async move {
            let sql = format!("SELECT count(*) FROM home_timeline WHERE post_id = {post}");
            scalar(&pool, &sql).await
        }
    };
    assert!(
        written(promoting).await > 5,
        "the promoting post fanned out"
    );
    assert_eq!(written(merged).await, 1, "only the author's own timeline");
    // A fan who never read before gets it too, with the star's older posts.
    let fan: i64 = scalar(&s.pool, "SELECT max(id) FROM users").await;
    let theirs = feed_over_http(&s, fan).await;
    assert_eq!(theirs[..2], [merged, promoting]);
    assert_eq!(theirs, feed_from_store(&s, fan).await);
    s.shutdown().await.unwrap();
}

/// A server where every author with a follower is a celebrity from their next post on,
/// a reader and one such author they follow, with no block between them.
pub(crate) async fn with_a_celebrity(pool: PgPool) -> (Server, i64, i64) {
    let events = Events {
        celebrity_followers: 0,
        ..Events::default()
    };
    let s = start_with_events_at(pool, &redis_url(), events).await;
    let (reader, star): (i64, i64) = sqlx::query_as(
        "SELECT f.follower_id, f.followee_id FROM follows f
         WHERE NOT EXISTS (SELECT 1 FROM blocks WHERE blocker_id IN (f.follower_id, f.followee_id)
                                                  AND blocked_id IN (f.follower_id, f.followee_id))
         ORDER BY 1, 2 LIMIT 1",
    )
    .fetch_one(&s.pool)
    .await
    .unwrap();
    (s, reader, star)
}

/// A celebrity's post reaches a follower's cached page through the celebrity's own head
/// (forgotten by the post), not through the follower's (which no event names).
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_celebrity_s_post_reaches_cached_home_pages_through_the_author_s_head(pool: PgPool) {
    let (mut s, reader, star) = with_a_celebrity(pool).await;
    let promoting = post_as(&s, star, "star").await;
    s.settle().await;
    assert_eq!(feed_over_http(&s, reader).await[0], promoting);
    let hits = cache_count(&s, "home", "hit_l1").await;
    let author_hits = cache_count(&s, "author_posts", "hit_l1").await;
    let before = feed_over_http(&s, reader).await;
    assert!(
        cache_count(&s, "home", "hit_l1").await > hits,
        "cut from the cached head"
    );
    assert!(
        cache_count(&s, "author_posts", "hit_l1").await > author_hits,
        "merged with the star's cached head"
    );
    let merged = post_as(&s, star, "star").await;
    s.settle().await;
    let now = feed_over_http(&s, reader).await;
    assert_eq!(now[0], merged);
    assert_eq!(now[1..], before[..]);
    assert_eq!(now, feed_from_store(&s, reader).await);
    assert_eq!(
        scalar(
            &s.pool,
            &format!(
                "SELECT count(*) FROM home_timeline WHERE post_id = {merged} AND user_id = {reader}"
            ),
        )
        .await,
        0,
        "not fanned out"
    );
    // Deleted, gone from the merge too.
    let resp = s
        .http
        .delete(s.url(&format!("/api/v1/posts/{merged}")))
        .bearer_auth(s.token(star))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    s.settle().await;
    assert_eq!(feed_over_http(&s, reader).await, before);
    s.shutdown().await.unwrap();
}
