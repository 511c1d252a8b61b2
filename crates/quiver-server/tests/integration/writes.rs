//! The write path end to end with the event layer running: orders under idempotency
//! keys, notifications made by events, concurrent graph writes against the caches, and
//! materialized timelines after a burst of mixed writes.

use crate::http::{json, metrics, problem, scalar};
use crate::support::{Server, start_with_events};
use rand::{Rng as _, SeedableRng as _};
use reqwest::StatusCode;
use sqlx::PgPool;
use std::collections::HashSet;

fn order(
    s: &Server,
    user: i64,
    key: Option<&str>,
    body: String,
) -> impl std::future::Future<Output = reqwest::Response> + use<> {
    let mut req = s
        .http
        .post(s.url("/api/v1/orders"))
        .bearer_auth(s.token(user))
        .header("content-type", "application/json")
        .body(body);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    async move { req.send().await.unwrap() }
}

fn lines(items: &[(i64, i64)]) -> String {
    let items: Vec<_> = items
        .iter()
        .map(|(p, q)| serde_json::json!({"post_id": p, "quantity": q}))
        .collect();
    serde_json::json!({ "items": items }).to_string()
}

async fn notifications(s: &Server, user: i64) -> Vec<serde_json::Value> {
    let (_, page) = json(
        s.get("/api/v1/notifications?limit=100", Some(user))
            .send()
            .await
            .unwrap(),
    )
    .await;
    page["items"].as_array().unwrap().clone()
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn orders_are_placed_once_per_idempotency_key_and_notify_buyer_and_owner(pool: PgPool) {
    let mut s = start_with_events(pool).await;
    // A wish, its owner, a customer with no block between them, and a plain post.
    let (wish, owner, price, customer): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT p.id, p.author_id, p.price_cents, u.id FROM posts p, users u
         WHERE p.kind = 'wish' AND u.id <> p.author_id
           AND NOT EXISTS (SELECT 1 FROM blocks WHERE blocker_id IN (u.id, p.author_id)
                                                  AND blocked_id IN (u.id, p.author_id))
         ORDER BY p.id, u.id LIMIT 1",
    )
    .fetch_one(&s.pool)
    .await
    .unwrap();
    let post = scalar(&s.pool, "SELECT min(id) FROM posts WHERE kind = 'post'").await;
    let orders_of = |c: i64| format!("SELECT count(*) FROM orders WHERE customer_id = {c}");
    let before = scalar(&s.pool, &orders_of(customer)).await;

    let resp = order(&s, customer, Some("first-order"), lines(&[(wish, 2)])).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert!(resp.headers().get("idempotent-replayed").is_none());
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let first = resp.bytes().await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&first).unwrap();
    let id = body["id"].as_i64().unwrap();
    assert_eq!(location, format!("/api/v1/orders/{id}"));
    assert_eq!(body["status"], "pending");
    assert_eq!(body["total_cents"], 2 * price, "{body}");
    assert_eq!(body["items"][0]["post_id"], wish);
    assert_eq!(body["items"][0]["quantity"], 2);
    // The same key and body: the first answer again, byte for byte.
    let resp = order(&s, customer, Some("first-order"), lines(&[(wish, 2)])).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["idempotent-replayed"], "true");
    assert_eq!(resp.bytes().await.unwrap(), first);
    // The same key, another body.
    let p = problem(
        order(&s, customer, Some("first-order"), lines(&[(wish, 3)])).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("Idempotency-Key"));
    assert_eq!(scalar(&s.pool, &orders_of(customer)).await, before + 1);

    // Bad requests, each a problem saying what was wrong.
    let p = problem(
        order(&s, customer, None, lines(&[(wish, 1)])).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("Idempotency-Key"));
    problem(
        order(&s, customer, Some("has spaces"), lines(&[(wish, 1)])).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let refused = |user: i64, items: Vec<(i64, i64)>| {
        let key = format!("refused-{}", rand::random::<u64>());
        order(&s, user, Some(&key), lines(&items))
    };
    for (user, items, field, says) in [
        (owner, vec![(wish, 1)], "items[0].post_id", "your own wish"),
        (
            customer,
            vec![(wish, 1), (post, 1)],
            "items[1].post_id",
            "not a wish",
        ),
        (
            customer,
            vec![(999_999_999, 1)],
            "items[0].post_id",
            "no such wish",
        ),
        (
            customer,
            vec![(wish, 0)],
            "items[0].quantity",
            "between 1 and",
        ),
        (customer, vec![], "items", "1 to"),
    ] {
        let p = problem(refused(user, items).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(p["errors"][0]["field"], field, "{p}");
        assert!(
            p["errors"][0]["message"].as_str().unwrap().contains(says),
            "{p}"
        );
    }
    problem(
        order(&s, customer, Some("k"), "{".into()).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let resp = s
        .http
        .post(s.url("/api/v1/orders"))
        .bearer_auth(s.token(customer))
        .header("idempotency-key", "k")
        .header("content-type", "text/plain")
        .body(lines(&[(wish, 1)]))
        .send()
        .await
        .unwrap();
    problem(resp, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let resp = s
        .http
        .post(s.url("/api/v1/orders"))
        .header("idempotency-key", "k")
        .body(lines(&[(wish, 1)]))
        .send()
        .await
        .unwrap();
    problem(resp, StatusCode::UNAUTHORIZED).await;

    // Concurrent duplicates: every request gets the one order.
    let racing: Vec<_> = (0..10)
        .map(|_| tokio::spawn(order(&s, customer, Some("racing"), lines(&[(wish, 1)]))))
        .collect();
    let mut ids = HashSet::new();
    for r in racing {
        let resp = r.await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        ids.insert(body["id"].as_i64().unwrap());
    }
    assert_eq!(ids.len(), 1, "one order for the key");
    assert_eq!(scalar(&s.pool, &orders_of(customer)).await, before + 2);
    let second = *ids.iter().next().unwrap();

    // The events: the buyer's confirmations, once per order, and the owner's "your wish
    // was bought", once per buyer, wish and day (orders cost nothing until paid: ten
    // orders must not be ten notifications).
    s.settle().await;
    let mine = notifications(&s, customer).await;
    let confirmed: Vec<i64> = mine
        .iter()
        .filter(|n| {
            n["kind"] == "order_confirmed" && (n["order_id"] == id || n["order_id"] == second)
        })
        .map(|n| n["order_id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        confirmed.iter().collect::<HashSet<_>>(),
        HashSet::from([&id, &second])
    );
    assert_eq!(confirmed.len(), 2);
    let theirs = notifications(&s, owner).await;
    let bought: Vec<(i64, i64, i64)> = theirs
        .iter()
        .filter(|n| n["kind"] == "wish_bought" && (n["order_id"] == id || n["order_id"] == second))
        .map(|n| {
            (
                n["order_id"].as_i64().unwrap(),
                n["post_id"].as_i64().unwrap(),
                n["actor_id"].as_i64().unwrap(),
            )
        })
        .collect();
    // One per buyer, wish and day: it names whichever of the two orders' events was
    // handled first (consumers handle events concurrently).
    assert_eq!(bought.len(), 1, "{bought:?}");
    let (order, post, actor) = bought[0];
    assert!(order == id || order == second, "{bought:?}");
    assert_eq!((post, actor), (wish, customer), "{bought:?}");
    s.shutdown().await.unwrap();
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_follow_notifies_the_followed_user_once_and_metrics_show_the_pipeline(pool: PgPool) {
    let mut s = start_with_events(pool).await;
    let (a, b): (i64, i64) = sqlx::query_as(
        "SELECT x.id, y.id FROM users x, users y
         WHERE x.id <> y.id
           AND NOT EXISTS (SELECT 1 FROM follows WHERE follower_id = x.id AND followee_id = y.id)
           AND NOT EXISTS (SELECT 1 FROM blocks WHERE blocker_id IN (x.id, y.id)
                                                  AND blocked_id IN (x.id, y.id))
         ORDER BY x.id, y.id LIMIT 1",
    )
    .fetch_one(&s.pool)
    .await
    .unwrap();
    let followed_by_a = |items: &[serde_json::Value]| {
        items
            .iter()
            .filter(|n| n["kind"] == "followed" && n["actor_id"] == a)
            .count()
    };
    let before = followed_by_a(&notifications(&s, b).await);
    for expected in [
        StatusCode::NO_CONTENT,
        StatusCode::CONFLICT,
        StatusCode::CONFLICT,
    ] {
        let resp = s
            .http
            .put(s.url(&format!("/api/v1/users/{b}/follow")))
            .bearer_auth(s.token(a))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), expected);
    }
    s.settle().await;
    assert_eq!(
        followed_by_a(&notifications(&s, b).await),
        before + 1,
        "one follow and two refused repeats: one event, one notification"
    );
    let text = metrics(&s).await;
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} is exported"))
    };
    assert!(value("quiver_events_total{stage=\"relayed\"}") >= 1.0);
    assert!(value("quiver_events_total{stage=\"handled\"}") >= 1.0);
    assert_eq!(value("quiver_events_total{stage=\"dead_lettered\"}"), 0.0);
    assert_eq!(value("quiver_outbox_backlog"), 0.0);
    assert!(value("quiver_event_lag_seconds_count{kind=\"user.followed\"}") >= 1.0);
    value("quiver_relay_lag_seconds");
    value("quiver_consumer_entries{state=\"pending\"}");
    s.shutdown().await.unwrap();
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn concurrent_graph_writes_between_two_users_end_consistent_and_caches_match(pool: PgPool) {
    let mut s = start_with_events(pool).await;
    let (a, b): (i64, i64) = sqlx::query_as(
        "SELECT x.id, y.id FROM users x, users y
         WHERE x.id < y.id
           AND NOT EXISTS (SELECT 1 FROM blocks WHERE blocker_id IN (x.id, y.id)
                                                  AND blocked_id IN (x.id, y.id))
         ORDER BY x.id, y.id LIMIT 1",
    )
    .fetch_one(&s.pool)
    .await
    .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(50);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (me, other) = if rng.random_bool(0.5) { (a, b) } else { (b, a) };
        let what = ["follow", "block"][usize::from(rng.random_range(0..10) < 3)];
        let url = s.url(&format!("/api/v1/users/{other}/{what}"));
        let req = if rng.random_bool(0.6) {
            s.http.put(url)
        } else {
            s.http.delete(url)
        }
        .bearer_auth(s.token(me));
        tasks.push(tokio::spawn(
            async move { req.send().await.unwrap().status() },
        ));
        // Reads in between keep the graphs cached while the writes land.
        if i % 5 == 0 {
            let r = s.get(&format!("/api/v1/users/{other}"), Some(me)).send();
            tasks.push(tokio::spawn(async move { r.await.unwrap().status() }));
        }
    }
    for t in tasks {
        let status = t.await.unwrap();
        assert!(
            [
                StatusCode::NO_CONTENT,
                StatusCode::CONFLICT,
                StatusCode::UNPROCESSABLE_ENTITY,
                StatusCode::OK,
                StatusCode::NOT_FOUND
            ]
            .contains(&status),
            "{status}"
        );
    }
    let edge = |table: &'static str, x: i64, y: i64| {
        let pool = s.pool.clone();
        async move {
            let sql = match table {
                "follows" => {
                    "SELECT count(*) FROM follows WHERE follower_id = $1 AND followee_id = $2"
                }
                _ => "SELECT count(*) FROM blocks WHERE blocker_id = $1 AND blocked_id = $2",
            };
            sqlx::query_scalar::<_, i64>(sql)
                .bind(x)
                .bind(y)
                .fetch_one(&pool)
                .await
                .unwrap()
                == 1
        }
    };
    let blocked = edge("blocks", a, b).await || edge("blocks", b, a).await;
    let (ab, ba) = (edge("follows", a, b).await, edge("follows", b, a).await);
    assert!(!(blocked && (ab || ba)), "no follow stands across a block");
    // What each sees through the caches is what the database says, at once and after
    // the events have run too.
    for round in 0..2 {
        for (me, other, follows, followed) in [(a, b, ab, ba), (b, a, ba, ab)] {
            let resp = s
                .get(&format!("/api/v1/users/{other}"), Some(me))
                .send()
                .await
                .unwrap();
            if blocked {
                problem(resp, StatusCode::NOT_FOUND).await;
            } else {
                let (_, p) = json(resp).await;
                assert_eq!(
                    (
                        p["viewer"]["follows_author"].as_bool(),
                        p["viewer"]["followed_by_author"].as_bool()
                    ),
                    (Some(follows), Some(followed)),
                    "round {round}, viewer {me}"
                );
            }
        }
        s.settle().await;
    }
    s.shutdown().await.unwrap();
}
