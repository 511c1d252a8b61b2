//! The HTTP service over real TCP, PostgreSQL and Redis: routes, auth, problems,
//! pagination headers, compression, OpenAPI, metrics, limits, cancellation and drain.

use crate::support::{Server, start};
use quiver_server::{ROUTES, ServerConfig};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use sqlx::PgPool;
use std::collections::HashSet;
use std::io::Read as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub(crate) async fn problem(resp: reqwest::Response, status: StatusCode) -> serde_json::Value {
    assert_eq!(resp.status(), status);
    assert_eq!(
        resp.headers()["content-type"],
        "application/problem+json",
        "problems are problem+json"
    );
    let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(body["type"].as_str().unwrap().starts_with("https://"));
    assert!(!body["detail"].as_str().unwrap().is_empty());
    body
}

pub(crate) async fn json(resp: reqwest::Response) -> (HeaderMap, serde_json::Value) {
    assert_eq!(resp.status(), StatusCode::OK);
    let headers = resp.headers().clone();
    (
        headers,
        serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap(),
    )
}

/// The Prometheus exposition of the admin listener.
pub(crate) async fn metrics(s: &Server) -> String {
    let resp = s.http.get(s.admin_url("/metrics")).send().await.unwrap();
    resp.text().await.unwrap()
}

/// Sends `request` as raw bytes and reads the whole answer.
pub(crate) async fn raw(s: &Server, request: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

pub(crate) async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A viewer whose home feed spans several pages.
pub(crate) async fn busy_viewer(s: &Server) -> i64 {
    scalar(
        &s.pool,
        "SELECT user_id FROM home_timeline GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1",
    )
    .await
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn routes_answer_json_with_their_headers_and_problems_for_bad_requests(pool: PgPool) {
    let mut s = start(pool, ServerConfig::default(), None).await;
    let viewer = busy_viewer(&s).await;

    let (h, body) = json(
        s.get("/api/v1/feed?limit=5", Some(viewer))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["items"].as_array().unwrap().len(), 5);
    assert_eq!(h["cache-control"], "private, no-cache");
    assert!(
        h["server-timing"]
            .to_str()
            .unwrap()
            .contains("hydrate;dur=")
    );
    let next = body["next_page"].as_str().unwrap();
    assert_eq!(
        h["link"].to_str().unwrap(),
        format!("</api/v1/feed?limit=5&cursor={next}>; rel=\"next\"")
    );
    assert_eq!(h["x-request-id"].len(), 32, "a request id is made");
    assert_eq!(h["ratelimit-limit"], "200");

    // A sent request id is kept.
    let resp = s
        .get("/healthz", None)
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");

    // Anonymous post and profile: no viewer part, publicly cacheable.
    let post = scalar(&s.pool, "SELECT min(id) FROM posts").await;
    let (h, body) = json(
        s.get(&format!("/api/v1/posts/{post}"), None)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(body["viewer"].is_null());
    assert_eq!(body["id"], post);
    assert_eq!(h["cache-control"], "public, max-age=10");
    let (_, body) = json(
        s.get(&format!("/api/v1/posts/{post}"), Some(viewer))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(body["viewer"].is_object());
    let (_, body) = json(s.get("/api/v1/users/2", None).send().await.unwrap()).await;
    assert_eq!(body["id"], 2);
    let (_, body) = json(
        s.get("/api/v1/users/2/posts?limit=3", None)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(body["items"].as_array().unwrap().len() <= 3);
    let (_, body) = json(
        s.get("/api/v1/feed/discover?limit=4&seed=9", Some(viewer))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["seed"], 9);

    // Orders: the customer reads them; to anyone else another's order is as absent as
    // one that does not exist (ids are sequential: a 403 would count the orders).
    let (order, customer): (i64, i64) =
        sqlx::query_as("SELECT id, customer_id FROM orders ORDER BY id LIMIT 1")
            .fetch_one(&s.pool)
            .await
            .unwrap();
    let (_, body) = json(
        s.get(&format!("/api/v1/orders/{order}"), Some(customer))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["customer_id"], customer);
    let other = if customer == 1 { 2 } else { 1 };
    let theirs = problem(
        s.get(&format!("/api/v1/orders/{order}"), Some(other))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    let missing = problem(
        s.get("/api/v1/orders/999999999", Some(other))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(theirs["detail"], missing["detail"]);
    let (_, body) = json(
        s.get(
            &format!("/api/v1/customers/{customer}/orders?status=active&limit=2"),
            Some(customer),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert!(
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["status"] == "active")
    );
    problem(
        s.get(&format!("/api/v1/customers/{customer}/orders"), Some(other))
            .send()
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;

    // Auth.
    let resp = s.get("/api/v1/feed", None).send().await.unwrap();
    assert_eq!(
        resp.headers()["www-authenticate"],
        r#"Bearer realm="quiver""#
    );
    problem(resp, StatusCode::UNAUTHORIZED).await;
    let resp = s
        .http
        .get(s.url("/api/v1/posts/1"))
        .bearer_auth("not.a.jwt")
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    problem(resp, StatusCode::UNAUTHORIZED).await;

    // Routing.
    problem(
        s.get("/api/v1/nothing", None).send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    let resp = s.http.post(s.url("/api/v1/feed")).send().await.unwrap();
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
    problem(resp, StatusCode::METHOD_NOT_ALLOWED).await;

    // Parameters: each bad one is named.
    for (path, needle) in [
        ("/api/v1/feed?limit=0", "`limit`"),
        ("/api/v1/feed?limit=101", "`limit`"),
        ("/api/v1/feed?limit=abc", "`limit`"),
        ("/api/v1/feed?limit=5&limit=6", "more than once"),
        ("/api/v1/feed?page=2", "unknown parameter `page`"),
        ("/api/v1/feed?cursor=garbage", "invalid cursor"),
        ("/api/v1/feed/discover?seed=-1", "`seed`"),
        ("/api/v1/posts/abc", "positive whole number"),
        ("/api/v1/posts/0", "positive whole number"),
        (
            "/api/v1/customers/1/orders?status=lost",
            "`status` must be one of",
        ),
    ] {
        let body = problem(
            s.get(path, Some(1)).send().await.unwrap(),
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(
            body["detail"].as_str().unwrap().contains(needle),
            "{path}: {body}"
        );
    }
    problem(
        s.get("/api/v1/posts/999999999", None).send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    let long = format!("/api/v1/feed?cursor={}", "a".repeat(5000));
    problem(
        s.get(&long, Some(1)).send().await.unwrap(),
        StatusCode::URI_TOO_LONG,
    )
    .await;
    // A body announced as too large is refused before a byte of it is read.
    let answer = raw(&s, "GET /api/v1/posts/1 HTTP/1.1\r\nhost: x\r\ncontent-length: 10000000\r\nconnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    // A request head beyond the limit is refused by hyper itself.
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\nconnection: close\r\n\r\n",
        "a".repeat(40_000)
    );
    let answer = raw(&s, &huge).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    s.shutdown().await.unwrap();
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn link_headers_walk_the_whole_feed_and_h2c_serves_the_same(pool: PgPool) {
    let mut s = start(pool, ServerConfig::default(), None).await;
    let viewer = busy_viewer(&s).await;
    let mut seen = Vec::new();
    let mut next = Some("/api/v1/feed?limit=7".to_owned());
    while let Some(path) = next.take() {
        let (h, body) = json(s.get(&path, Some(viewer)).send().await.unwrap()).await;
        seen.extend(
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_i64().unwrap()),
        );
        next = h.get("link").map(|l| {
            let l = l.to_str().unwrap();
            l[1..l.find('>').unwrap()].to_owned()
        });
        assert!(seen.len() < 100_000);
    }
    let distinct: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), seen.len(), "no repeats across pages");
    let in_feed = scalar(
        &s.pool,
        &format!(
            "SELECT count(*) FROM posts p WHERE p.author_id = {viewer} OR p.author_id IN
             (SELECT followee_id FROM follows WHERE follower_id = {viewer})"
        ),
    )
    .await;
    assert_eq!(seen.len() as i64, in_feed, "every post of the feed, once");

    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .get(s.url("/api/v1/feed?limit=7"))
        .bearer_auth(s.token(viewer))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let (_, body) = json(resp).await;
    let first: Vec<i64> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(first, seen[..7]);
    s.shutdown().await.unwrap();
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn large_bodies_are_compressed_as_the_client_asks(pool: PgPool) {
    let mut s = start(pool, ServerConfig::default(), None).await;
    let viewer = busy_viewer(&s).await;
    let plain = s
        .get("/api/v1/feed?limit=20", Some(viewer))
        .send()
        .await
        .unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.bytes().await.unwrap();
    assert!(plain.len() > 1024);
    for encoding in ["gzip", "zstd"] {
        let resp = s
            .get("/api/v1/feed?limit=20", Some(viewer))
            .header("accept-encoding", encoding)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["content-encoding"], encoding);
        assert!(
            resp.headers()
                .get_all("vary")
                .iter()
                .any(|v| v == "accept-encoding")
        );
        let packed = resp.bytes().await.unwrap();
        assert!(packed.len() < plain.len() / 2, "{encoding} compresses");
        let unpacked = match encoding {
            "gzip" => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&packed[..])
                    .read_to_end(&mut out)
                    .unwrap();
                out
            }
            _ => zstd::decode_all(&packed[..]).unwrap(),
        };
        assert_eq!(unpacked, plain, "{encoding} round trips");
    }
    // Small bodies and refused encodings stay plain.
    let resp = s
        .get("/healthz", None)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("content-encoding").is_none());
    let resp = s
        .get("/api/v1/feed?limit=20", Some(viewer))
        .header("accept-encoding", "gzip;q=0")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("content-encoding").is_none());
    s.shutdown().await.unwrap();
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn openapi_documents_every_route_and_metrics_count_requests(pool: PgPool) {
    let mut s = start(pool, ServerConfig::default(), None).await;
    let (_, doc) = json(s.get("/openapi.json", None).send().await.unwrap()).await;
    assert_eq!(doc["openapi"], "3.1.0");
    for (method, path, _) in ROUTES {
        assert!(
            doc["paths"][path][method.to_lowercase()].is_object(),
            "{method} {path} is in the document"
        );
    }
    let paths = doc["paths"].as_object().unwrap().len();
    let templates: HashSet<&str> = ROUTES.iter().map(|(_, p, _)| *p).collect();
    assert_eq!(paths, templates.len(), "and nothing else");

    s.get("/api/v1/feed?limit=3", Some(2)).send().await.unwrap();
    s.get("/api/v1/feed", None).send().await.unwrap();
    s.get("/api/v1/feed?limit=3", Some(2)).send().await.unwrap();
    let metrics = metrics(&s).await;
    for line in [
        r#"quiver_http_requests_total{method="GET",route="/api/v1/feed",status="200"} 2"#,
        r#"quiver_http_requests_total{method="GET",route="/api/v1/feed",status="401"} 1"#,
        "quiver_http_in_flight 0",
        "quiver_http_shed_total 0",
        // Three requests never fill half the limit: it stays at its ceiling.
        r#"quiver_http_concurrency_limit{limit="current"} 512"#,
        r#"quiver_http_concurrency_limit{limit="ceiling"} 512"#,
        "quiver_db_pool_connections{state=\"open\"}",
        "quiver_db_pool_waits_total",
        "quiver_prefetch_queue_depth 0",
        "process_cpu_seconds_total",
        "quiver_http_request_duration_seconds_bucket{route=\"/api/v1/feed\"",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    let resp = s
        .http
        .get(s.admin_url("/debug/pprof/profile?seconds=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = s
        .http
        .get(s.admin_url("/debug/pprof/profile?seconds=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let profile = resp.bytes().await.unwrap();
    assert!(!profile.is_empty(), "a pprof protobuf");
    s.shutdown().await.unwrap();
}

/// The JSON shape of `v`, where `null` matches anything (optional fields).
pub(crate) fn same_shape(a: &serde_json::Value, b: &serde_json::Value, at: &str) {
    use serde_json::Value::*;
    match (a, b) {
        (Null, _) | (_, Null) => {}
        (Object(x), Object(y)) => {
            let (kx, ky): (Vec<_>, Vec<_>) = (x.keys().collect(), y.keys().collect());
            assert_eq!(kx, ky, "keys at {at}");
            for (k, v) in x {
                same_shape(v, &y[k], &format!("{at}.{k}"));
            }
        }
        (Array(x), Array(y)) => {
            if let (Some(p), Some(q)) = (x.first(), y.first()) {
                same_shape(p, q, &format!("{at}[0]"));
            }
        }
        (Number(_), Number(_)) | (String(_), String(_)) | (Bool(_), Bool(_)) => {}
        _ => panic!("type differs at {at}: {a} vs {b}"),
    }
}

pub(crate) fn snapshot(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/../quiver-codec/tests/integration/snapshots/integration__snapshots__{name}.snap",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let body = text.splitn(3, "---\n").nth(2).expect("an insta snapshot");
    serde_json::from_str(body).unwrap()
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn every_route_answers_in_the_shape_of_the_codec_snapshots(pool: PgPool) {
    let mut s = start(pool, ServerConfig::default(), None).await;
    let viewer = busy_viewer(&s).await;
    let (order, customer): (i64, i64) = sqlx::query_as(
        "SELECT o.id, o.customer_id FROM orders o JOIN order_items i ON i.order_id = o.id
         ORDER BY o.id LIMIT 1",
    )
    .fetch_one(&s.pool)
    .await
    .unwrap();
    let post: i64 = scalar(&s.pool, "SELECT min(id) FROM posts").await;
    let author: i64 = scalar(
        &s.pool,
        &format!("SELECT author_id FROM posts WHERE id = {post}"),
    )
    .await;
    for (path, user, snap) in [
        ("/api/v1/feed?limit=3".to_owned(), viewer, "feed_page"),
        (
            "/api/v1/feed/discover?limit=3".to_owned(),
            viewer,
            "discovery_page",
        ),
        (
            format!("/api/v1/users/{author}/posts?limit=3"),
            viewer,
            "user_posts",
        ),
        (format!("/api/v1/users/{author}"), viewer, "profile"),
        (format!("/api/v1/orders/{order}"), customer, "order"),
        (
            format!("/api/v1/customers/{customer}/orders?limit=3"),
            customer,
            "orders",
        ),
    ] {
        let (_, body) = json(s.get(&path, Some(user)).send().await.unwrap()).await;
        same_shape(&body, &snapshot(snap), &path);
    }
    // A post alone is a feed item plus `partial`.
    let (_, mut body) = json(
        s.get(&format!("/api/v1/posts/{post}"), Some(viewer))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        body.as_object_mut().unwrap().remove("partial"),
        Some(serde_json::json!([]))
    );
    same_shape(&body, &snapshot("post"), "/api/v1/posts/{id}");
    s.shutdown().await.unwrap();
}
