//! Finished home pages are served again only while every input they were built from is
//! unchanged: each test first proves the page is being served from the finished-page
//! cache, then changes one input (the head, a merged celebrity's head, an item, an
//! author, the viewer's graph) and reads the change at once.

use crate::celebrities::with_a_celebrity;
use crate::coherence::{cache_count, post_as};
use crate::http::{json, scalar};
use crate::support::{Events, Server, redis_url, start_with_events_at, start_with_stack};
use quiver_cache::Outcome;
use quiver_model::{PostId, UserId};
use quiver_server::compose::StackConfig;
use quiver_testkit::eventually;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use std::time::Duration;

/// The viewer's first home page.
const HOME: &str = "/api/v1/feed?limit=20";
/// The viewer's first discovery page in the order of one seed.
const DISCOVER: &str = "/api/v1/feed/discover?limit=20&seed=7";

async fn page(s: &Server, viewer: i64) -> Value {
    page_at(s, viewer, HOME).await
}

async fn page_at(s: &Server, viewer: i64, path: &str) -> Value {
    let resp = s.get(path, Some(viewer)).send().await;
    json(resp.unwrap()).await.1
}

async fn served_again(s: &Server, viewer: i64) -> Value {
    served_again_at(s, viewer, HOME).await
}

/// Reads the viewer's page at `path` until it is served from the finished pages (the
/// first read may fill the inputs' caches, the next builds a page from them and keeps
/// it); returns it, the same as the page built before it.
async fn served_again_at(s: &Server, viewer: i64, path: &str) -> Value {
    let mut last = page_at(s, viewer, path).await;
    for _ in 0..3 {
        let hits = cache_count(s, "page", "hit_l1").await;
        let now = page_at(s, viewer, path).await;
        if cache_count(s, "page", "hit_l1").await > hits {
            assert_eq!(now, last, "a page served again is the page built");
            return now;
        }
        last = now;
    }
    panic!(
        "the viewer's page is never served from the finished pages: {:?}",
        s.app.engine().page_stats()
    );
}

/// Whoever follows the most accounts, among those in no block.
async fn heaviest_viewer(s: &Server) -> i64 {
    scalar(
        &s.pool,
        "SELECT follower_id FROM follows f
         WHERE NOT EXISTS (SELECT 1 FROM blocks WHERE blocker_id = f.follower_id
                                                   OR blocked_id = f.follower_id)
         GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
    )
    .await
}

fn items(page: &Value) -> &Vec<Value> {
    page["items"].as_array().expect("items")
}

fn ids(page: &Value) -> Vec<i64> {
    items(page)
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect()
}

async fn write(s: &Server, method: reqwest::Method, path: &str, who: i64) -> StatusCode {
    let req = s
        .http
        .request(method, s.url(path))
        .bearer_auth(s.token(who));
    req.send().await.unwrap().status()
}

/// The item of `post` on `page`.
fn shown(page: &Value, post: i64) -> Value {
    items(page)
        .iter()
        .find(|i| i["id"].as_i64() == Some(post))
        .cloned()
        .expect("the post is on the page")
}

/// Edits `item`'s post under the viewer's page at `path` (served again first) and
/// invalidates it, then renames its author and invalidates them: each change shows on
/// the next read. Returns the post and its author.
async fn item_and_author_changes_show(
    s: &Server,
    viewer: i64,
    path: &str,
    item: &Value,
) -> (i64, i64) {
    let (post, author) = (
        item["id"].as_i64().unwrap(),
        item["author"]["id"].as_i64().unwrap(),
    );
    let shown = |page: &Value| shown(page, post);
    // The item: a row changed under the cache shows once the post is invalidated.
    served_again_at(s, viewer, path).await;
    sqlx::query("UPDATE posts SET body = 'edited under the page' WHERE id = $1")
        .bind(post)
        .execute(&s.pool)
        .await
        .unwrap();
    assert_eq!(
        shown(&page_at(s, viewer, path).await)["body"],
        item["body"],
        "not yet invalidated: the test would prove nothing otherwise"
    );
    s.caches
        .invalidate_post(PostId(post), UserId(author))
        .await
        .unwrap();
    assert_eq!(
        shown(&page_at(s, viewer, path).await)["body"],
        "edited under the page"
    );
    // The author.
    served_again_at(s, viewer, path).await;
    sqlx::query("UPDATE users SET display_name = 'Renamed under the page' WHERE id = $1")
        .bind(author)
        .execute(&s.pool)
        .await
        .unwrap();
    s.caches.invalidate_user(UserId(author)).await.unwrap();
    assert_eq!(
        shown(&page_at(s, viewer, path).await)["author"]["display_name"],
        "Renamed under the page"
    );
    (post, author)
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_finished_page_never_outlives_a_change_to_its_head_items_authors_or_graph(pool: PgPool) {
    let mut s = start_with_events_at(pool, &redis_url(), Events::default()).await;
    let viewer = heaviest_viewer(&s).await;
    let first = served_again(&s, viewer).await;
    // An item by someone else, whose author does not follow the viewer.
    let item = items(&first)
        .iter()
        .find(|i| {
            i["author"]["id"].as_i64() != Some(viewer) && i["viewer"]["followed_by_author"] == false
        })
        .expect("an item by an author who does not follow the viewer")
        .clone();
    let (post, author) = item_and_author_changes_show(&s, viewer, HOME, &item).await;

    // The graph: the author follows the viewer (the author's write, not the viewer's).
    served_again(&s, viewer).await;
    let path = format!("/api/v1/users/{viewer}/follow");
    assert_eq!(
        write(&s, reqwest::Method::PUT, &path, author).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        shown(&page(&s, viewer).await, post)["viewer"]["followed_by_author"],
        true
    );

    // The head: a followee posts, and only the fan-out's event can tell.
    let before = served_again(&s, viewer).await;
    let new = post_as(&s, author, "new under the page").await;
    s.settle().await;
    let now = page(&s, viewer).await;
    assert_eq!(ids(&now)[0], new, "the followee's new post leads");
    let n = ids(&now).len() - 1;
    assert_eq!(ids(&now)[1..], ids(&before)[..n]);

    // The viewer's own graph: an unfollow removes the author's posts at once.
    served_again(&s, viewer).await;
    let path = format!("/api/v1/users/{author}/follow");
    assert_eq!(
        write(&s, reqwest::Method::DELETE, &path, viewer).await,
        StatusCode::NO_CONTENT
    );
    let now = page(&s, viewer).await;
    assert!(
        items(&now)
            .iter()
            .all(|i| i["author"]["id"].as_i64() != Some(author)),
        "the unfollowed author's posts are gone"
    );
    served_again(&s, viewer).await;
    s.shutdown().await.unwrap();
}

/// A page served again carries the tag of its own bytes (hashed once, when it was kept,
/// not per request), and a client holding that tag gets 304 from the kept page.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_page_served_again_is_tagged_by_its_bytes_and_revalidates(pool: PgPool) {
    let mut s = start_with_events_at(pool, &redis_url(), Events::default()).await;
    let viewer = heaviest_viewer(&s).await;
    served_again(&s, viewer).await;
    let hits = cache_count(&s, "page", "hit_l1").await;
    let resp = s.get(HOME, Some(viewer)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let tag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let body = resp.bytes().await.unwrap();
    assert_eq!(
        cache_count(&s, "page", "hit_l1").await,
        hits + 1.0,
        "served again"
    );
    let hash = xxhash_rust::xxh3::xxh3_128(&body).to_be_bytes();
    assert_eq!(tag, format!("\"{}\"", hex::encode(hash)));
    let resp = s.get(HOME, Some(viewer)).header("if-none-match", &tag);
    let resp = resp.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(cache_count(&s, "page", "hit_l1").await, hits + 2.0);
    s.shutdown().await.unwrap();
}

/// A celebrity's post changes no follower's head, only the celebrity's own: a follower's
/// finished page is fenced on every head merged into it.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_finished_page_never_outlives_a_post_by_a_celebrity_merged_into_it(pool: PgPool) {
    let (mut s, reader, star) = with_a_celebrity(pool).await;
    // The first post finds the star past the threshold: from then on it is merged.
    let promoting = post_as(&s, star, "promoting").await;
    s.settle().await;
    let before = served_again(&s, reader).await;
    assert_eq!(ids(&before)[0], promoting);
    let merged = post_as(&s, star, "merged").await;
    s.settle().await;
    let written: i64 = scalar(
        &s.pool,
        &format!(
            "SELECT count(*) FROM home_timeline WHERE post_id = {merged} AND user_id = {reader}"
        ),
    )
    .await;
    assert_eq!(written, 0, "the reader's timeline never had it");
    let now = page(&s, reader).await;
    assert_eq!(ids(&now)[0], merged, "the merged post leads at once");
    let n = ids(&now).len() - 1;
    assert_eq!(ids(&now)[1..], ids(&before)[..n]);
    s.shutdown().await.unwrap();
}

/// A discovery page of a seed is kept like a home page: served again while its inputs
/// hold, never past a change to an item or an author on it; a page of a fresh seed is
/// never kept.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_finished_discovery_page_never_outlives_a_change_to_its_items_or_authors(pool: PgPool) {
    let mut s = start_with_events_at(pool, &redis_url(), Events::default()).await;
    let viewer: i64 = scalar(
        &s.pool,
        "SELECT id FROM users u WHERE NOT EXISTS (SELECT 1 FROM blocks
                                 WHERE blocker_id = u.id OR blocked_id = u.id)
         ORDER BY id LIMIT 1",
    )
    .await;
    let first = served_again_at(&s, viewer, DISCOVER).await;
    assert_eq!(first["seed"], 7);
    let item = items(&first)
        .iter()
        .find(|i| i["author"]["id"].as_i64() != Some(viewer))
        .expect("an item by someone else")
        .clone();
    item_and_author_changes_show(&s, viewer, DISCOVER, &item).await;

    // Without a seed every page has a fresh one: none is kept or looked for.
    let before = s.app.engine().page_stats().expect("finished pages on");
    let fresh = "/api/v1/feed/discover?limit=20";
    let (a, b) = (
        page_at(&s, viewer, fresh).await,
        page_at(&s, viewer, fresh).await,
    );
    assert_ne!(a["seed"], b["seed"]);
    assert_eq!(s.app.engine().page_stats().unwrap(), before);
    s.shutdown().await.unwrap();
}

/// Read steadily across its inputs' soft TTL, a finished page has them refreshed ahead, in
/// the background, while it is still served: it is built again from fresh inputs and kept,
/// and no lookup ever finds an input stale. (With `refresh_ahead: 0.0` the page is built
/// again, several times, from stale inputs that cannot be kept.)
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_finished_page_read_across_its_inputs_soft_ttl_is_built_again_from_fresh_ones(
    pool: PgPool,
) {
    // A window of 1.5 s for the refreshes to land in, so a loaded machine (the suite
    // runs tests side by side) still meets it.
    let stack = StackConfig {
        soft_ttl: Duration::from_secs(3),
        refresh_ahead: 0.5,
        ..StackConfig::default()
    };
    let mut s = start_with_stack(pool, stack).await;
    let viewer: i64 = scalar(
        &s.pool,
        "SELECT follower_id FROM follows GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
    )
    .await;
    let stale = || -> u64 {
        let caches = s.caches.stats();
        caches.iter().map(|(_, c)| c.get(Outcome::Stale)).sum()
    };
    let pages = || s.app.engine().page_stats().expect("finished pages on");
    served_again(&s, viewer).await;
    let (before, stale_before) = (pages(), stale());
    eventually(
        "the page is refreshed ahead, built again and kept",
        || async {
            page(&s, viewer).await;
            let now = pages();
            now.refreshed > before.refreshed && now.kept > before.kept
        },
    )
    .await;
    let after = pages();
    assert_eq!(stale(), stale_before, "no input was ever read stale");
    assert_eq!(
        after.built - before.built,
        after.kept - before.kept,
        "every page built again was kept: {before:?} then {after:?}"
    );
    served_again(&s, viewer).await;
    s.shutdown().await.unwrap();
}
