//! Writes through HTTP read back at once by the writer: follows and blocks, posts into
//! followers' feeds, and notifications paged for their owner.

use crate::http::*;
use crate::support::start;
use quiver_server::ServerConfig;
use reqwest::StatusCode;
use sqlx::PgPool;

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn follow_and_block_change_the_graph_and_the_writer_reads_it_at_once(pool: PgPool) {
    let mut s = start(pool, ServerConfig::default(), None).await;
    let (a, b): (i64, i64) = sqlx::query_as(
        "SELECT x.id, y.id FROM users x, users y
         WHERE x.id <> y.id
           AND NOT EXISTS (SELECT 1 FROM follows WHERE follower_id IN (x.id, y.id)
                                                   AND followee_id IN (x.id, y.id))
           AND NOT EXISTS (SELECT 1 FROM blocks WHERE blocker_id IN (x.id, y.id)
                                                  AND blocked_id IN (x.id, y.id))
         ORDER BY x.id, y.id LIMIT 1",
    )
    .fetch_one(&s.pool)
    .await
    .unwrap();
    let profile = |viewer: i64, user: i64| {
        let req = s.get(&format!("/api/v1/users/{user}"), Some(viewer));
        async move { req.send().await.unwrap() }
    };
    let relation = |resp: reqwest::Response| async move {
        let (_, body) = json(resp).await;
        (
            body["viewer"]["follows_author"].as_bool().unwrap(),
            body["viewer"]["followed_by_author"].as_bool().unwrap(),
        )
    };
    // Cached before the write: the write must invalidate it for its writer.
    assert_eq!(relation(profile(a, b).await).await, (false, false));
    assert_eq!(relation(profile(b, a).await).await, (false, false));
    let put = |user: i64, what: &str, viewer: i64| {
        s.http
            .put(s.url(&format!("/api/v1/users/{user}/{what}")))
            .bearer_auth(s.token(viewer))
            .send()
    };
    let delete = |user: i64, what: &str, viewer: i64| {
        s.http
            .delete(s.url(&format!("/api/v1/users/{user}/{what}")))
            .bearer_auth(s.token(viewer))
            .send()
    };
    assert_eq!(
        put(b, "follow", a).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    // Following again changes nothing and says so.
    let again = problem(put(b, "follow", a).await.unwrap(), StatusCode::CONFLICT).await;
    assert!(again["detail"].as_str().unwrap().contains("already follow"));
    assert_eq!(relation(profile(a, b).await).await, (true, false));
    assert_eq!(relation(profile(b, a).await).await, (false, true));
    let events = scalar(
        &s.pool,
        &format!(
            "SELECT count(*) FROM outbox WHERE kind = 'user.followed'
             AND payload = '{{\"follower\": {a}, \"followee\": {b}}}'::jsonb"
        ),
    )
    .await;
    assert_eq!(events, 1, "a repeated follow records one event");
    assert_eq!(
        delete(b, "follow", a).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(relation(profile(a, b).await).await, (false, false));

    // Clear 4xx answers.
    let yourself = problem(put(a, "follow", a).await.unwrap(), StatusCode::FORBIDDEN).await;
    assert_eq!(yourself["detail"], "you cannot follow yourself");
    problem(
        put(999_999_999, "follow", a).await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    let resp = s
        .http
        .put(s.url(&format!("/api/v1/users/{b}/follow")))
        .send()
        .await
        .unwrap();
    problem(resp, StatusCode::UNAUTHORIZED).await;
    let resp = s
        .get(&format!("/api/v1/users/{b}/follow"), Some(a))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["allow"], "PUT, DELETE");
    problem(resp, StatusCode::METHOD_NOT_ALLOWED).await;

    // A block hides both ways at once and refuses follows; unblocking restores.
    put(b, "follow", a).await.unwrap();
    assert_eq!(
        put(b, "block", a).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    problem(profile(a, b).await, StatusCode::NOT_FOUND).await;
    problem(profile(b, a).await, StatusCode::NOT_FOUND).await;
    // Following across the block is "not found", like the profile: no word of a block.
    let body = problem(put(b, "follow", a).await.unwrap(), StatusCode::NOT_FOUND).await;
    assert!(!body["detail"].as_str().unwrap().contains("block"));
    assert_eq!(
        delete(b, "block", a).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        relation(profile(a, b).await).await,
        (false, false),
        "the block removed the follow"
    );
    s.shutdown().await.unwrap();
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn posts_are_created_into_followers_feeds_and_deleted_by_their_author(pool: PgPool) {
    let mut s = crate::support::start_with_events(pool).await;
    let (author, follower): (i64, i64) =
        sqlx::query_as("SELECT followee_id, follower_id FROM follows ORDER BY 1, 2 LIMIT 1")
            .fetch_one(&s.pool)
            .await
            .unwrap();
    let create = |body: &'static str, content_type: &'static str, user: i64| {
        s.http
            .post(s.url("/api/v1/posts"))
            .bearer_auth(s.token(user))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let body = r#"{"kind": "wish", "body": "a kite", "tags": ["kites"],
        "media": [{"url": "https://m.example/k.jpg", "kind": "image", "width": 4, "height": 3, "size_bytes": 10}],
        "wish": {"price_cents": 1250, "currency": "EUR", "product_url": "https://shop.example/kite"}}"#;
    let resp = create(body, "application/json", author).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let created: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    let id = created["id"].as_i64().unwrap();
    assert_eq!(location, format!("/api/v1/posts/{id}"));
    assert_eq!(created["wish"]["price_cents"], 1250);
    assert_eq!(created["tags"], serde_json::json!(["kites"]));
    assert_eq!(created["author"]["id"], author);
    same_shape(
        &{
            let mut c = created.clone();
            c.as_object_mut().unwrap().remove("partial");
            c
        },
        &snapshot("post"),
        "created post",
    );
    // First in the author's own feed at once (read your writes), and in the follower's
    // once the `post.created` event has fanned it out.
    let first = |viewer: i64| {
        let req = s.get("/api/v1/feed?limit=1", Some(viewer));
        async move {
            let (_, feed) = json(req.send().await.unwrap()).await;
            feed["items"][0]["id"].as_i64()
        }
    };
    assert_eq!(first(author).await, Some(id), "the author's own feed");
    crate::support::eventually("the follower's feed has the post", || async {
        first(follower).await == Some(id)
    })
    .await;

    // Bad bodies: each a 4xx problem naming what was wrong.
    problem(
        create("{", "application/json", author).await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    problem(
        create(r#"{"kind": "post", "bo"#, "application/json", author)
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    problem(
        create(body, "text/plain", author).await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    let invalid = problem(
        create(
            r#"{"kind": "post", "body": "x", "tags": ["NO SPACES"]}"#,
            "application/json",
            author,
        )
        .await
        .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(invalid["errors"][0]["field"], "tags[0]");
    let big = Box::leak(
        format!(r#"{{"kind": "post", "body": "{}"}}"#, "x".repeat(70_000)).into_boxed_str(),
    );
    problem(
        create(big, "application/json", author).await.unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    let resp = s
        .http
        .post(s.url("/api/v1/posts"))
        .body(body)
        .send()
        .await
        .unwrap();
    problem(resp, StatusCode::UNAUTHORIZED).await;

    // Deleting: others are refused; the author's delete takes it out of every feed at once.
    let delete = |user: i64| {
        s.http
            .delete(s.url(&format!("/api/v1/posts/{id}")))
            .bearer_auth(s.token(user))
            .send()
    };
    problem(delete(follower).await.unwrap(), StatusCode::FORBIDDEN).await;
    assert_eq!(
        delete(author).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    problem(
        s.get(&format!("/api/v1/posts/{id}"), Some(author))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    for viewer in [follower, author] {
        let (_, feed) = json(
            s.get("/api/v1/feed?limit=5", Some(viewer))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert!(
            feed["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["id"] != id)
        );
    }
    problem(delete(author).await.unwrap(), StatusCode::NOT_FOUND).await;
    let events = scalar(
        &s.pool,
        "SELECT count(*) FROM outbox WHERE kind IN ('post.created', 'post.deleted')",
    )
    .await;
    assert_eq!(events, 2);
    s.shutdown().await.unwrap();
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn notifications_page_by_cursor_for_their_owner(pool: PgPool) {
    let mut s = start(pool, ServerConfig::default(), None).await;
    let user = scalar(
        &s.pool,
        "SELECT user_id FROM notifications GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1",
    )
    .await;
    let want: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM notifications WHERE user_id = $1 ORDER BY created_at DESC, id DESC",
    )
    .bind(user)
    .fetch_all(&s.pool)
    .await
    .unwrap();
    assert!(want.len() >= 2, "the seed gives this user notifications");
    let (mut got, mut next) = (Vec::new(), Some("/api/v1/notifications?limit=1".to_owned()));
    while let Some(path) = next.take() {
        let (h, body) = json(s.get(&path, Some(user)).send().await.unwrap()).await;
        same_shape(&body, &snapshot("notifications"), &path);
        got.extend(
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["id"].as_i64().unwrap()),
        );
        next = h.get("link").map(|l| {
            let l = l.to_str().unwrap();
            l[1..l.find('>').unwrap()].to_owned()
        });
    }
    assert_eq!(got, want);
    problem(
        s.get("/api/v1/notifications", None).send().await.unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    problem(
        s.get("/api/v1/notifications?cursor=nope", Some(user))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    s.shutdown().await.unwrap();
}

/// The L1 hits counted so far, over every cache.
async fn l1_hits(s: &crate::support::Server) -> f64 {
    metrics(s)
        .await
        .lines()
        .filter(|l| l.starts_with("quiver_cache_lookups_total{") && l.contains("hit_l1"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Another replica's L1 hears of a write through pub/sub, a moment after the write
/// answered; the write's cookie makes its writer's reads skip the L1 meanwhile.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_writes_cookie_makes_its_writers_next_reads_skip_the_l1(pool: PgPool) {
    let s = crate::support::start_with_events(pool).await;
    let (a, b): (i64, i64) = sqlx::query_as(
        "SELECT x.id, y.id FROM users x, users y WHERE x.id <> y.id
           AND NOT EXISTS (SELECT 1 FROM follows WHERE follower_id = x.id AND followee_id = y.id)
         ORDER BY 1, 2 LIMIT 1",
    )
    .fetch_one(&s.pool)
    .await
    .unwrap();
    let profile = |cookie: Option<String>| {
        let mut req = s.get(&format!("/api/v1/users/{b}"), Some(a));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        async move { assert_eq!(req.send().await.unwrap().status(), StatusCode::OK) }
    };
    let resp = s
        .http
        .put(s.url(&format!("/api/v1/users/{b}/follow")))
        .bearer_auth(s.token(a))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.starts_with(&format!("quiver-written={a}.")), "{set}");
    assert!(
        set.contains("HttpOnly") && set.contains("Max-Age=2"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();

    profile(None).await;
    let before = l1_hits(&s).await;
    profile(None).await;
    let warm = l1_hits(&s).await;
    assert!(warm > before, "a warm read hits the l1");
    profile(Some(cookie.clone())).await;
    assert_eq!(l1_hits(&s).await, warm, "the writer's read skipped the l1");
    // Another viewer's reads with the cookie are plain ones.
    let other = || {
        let req = s.get(&format!("/api/v1/users/{a}"), Some(b));
        let req = req.header("cookie", cookie.clone());
        async move { assert_eq!(req.send().await.unwrap().status(), StatusCode::OK) }
    };
    other().await;
    let hits = l1_hits(&s).await;
    other().await;
    assert!(
        l1_hits(&s).await > hits,
        "another viewer's read still hits the l1"
    );
}
