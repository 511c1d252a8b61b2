//! The HTTP service over real TCP, PostgreSQL and Redis: routes, auth, problems,
//! pagination headers, compression, OpenAPI, metrics, limits, cancellation and drain.

use crate::support::{Server, start};
use quiver_server::{ROUTES, ServerConfig};
use quiver_store::Store as _;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use sqlx::PgPool;
use std::collections::HashSet;
use std::io::Read as _;
use std::time::Duration;
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
async fn raw(s: &Server, request: &str) -> String {
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
async fn busy_viewer(s: &Server) -> i64 {
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
        "quiver_db_pool_connections{state=\"open\"}",
        "quiver_db_pool_waits{measure=\"count\"}",
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

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_full_server_sheds_load_and_a_deadline_cancels_the_work(pool: PgPool) {
    let config = ServerConfig {
        max_concurrency: 1,
        queue_timeout: Duration::from_millis(50),
        request_timeout: Duration::from_secs(30),
        ..ServerConfig::default()
    };
    let mut s = start(pool, config, None).await;
    s.gate.close();
    let held = tokio::spawn(s.get("/api/v1/posts/1", None).send());
    s.gate.wait_entered(1).await;
    // The only permit is taken: the next request waits 50 ms, then is shed.
    let resp = s.get("/api/v1/posts/2", None).send().await.unwrap();
    assert_eq!(resp.headers()["retry-after"], "1");
    problem(resp, StatusCode::SERVICE_UNAVAILABLE).await;
    // Probes are never shed.
    assert_eq!(
        s.get("/healthz", None).send().await.unwrap().status(),
        StatusCode::OK
    );
    s.gate.open();
    assert_eq!(held.await.unwrap().unwrap().status(), StatusCode::OK);
    let metrics = metrics(&s).await;
    assert!(metrics.contains("quiver_http_shed_total 1"), "{metrics}");
    s.shutdown().await.unwrap();
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn the_deadline_answers_504_and_drops_the_work_below_it(pool: PgPool) {
    let config = ServerConfig {
        request_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let mut s = start(pool, config, None).await;
    s.gate.close();
    let resp = s.get("/api/v1/posts/1", None).send().await.unwrap();
    problem(resp, StatusCode::GATEWAY_TIMEOUT).await;
    assert_eq!(
        s.gate.dropped(),
        1,
        "the lookup was cancelled, not left running"
    );
    s.gate.open();
    s.shutdown().await.unwrap();
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn clients_are_rate_limited_each_on_their_own(pool: PgPool) {
    let config = ServerConfig {
        rate_per_second: 1,
        rate_burst: 2,
        ..ServerConfig::default()
    };
    let mut s = start(pool, config, None).await;
    for remaining in ["1", "0"] {
        let resp = s.get("/api/v1/users/2", Some(7)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["ratelimit-remaining"], remaining);
    }
    let resp = s.get("/api/v1/users/2", Some(7)).send().await.unwrap();
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(resp.headers()["ratelimit-limit"], "2");
    assert_eq!(resp.headers()["ratelimit-remaining"], "0");
    problem(resp, StatusCode::TOO_MANY_REQUESTS).await;
    // Another viewer, and anonymous callers by address, have their own budgets.
    assert_eq!(
        s.get("/api/v1/users/2", Some(8))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        s.get("/api/v1/users/2", None)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let metrics = metrics(&s).await;
    assert!(
        metrics.contains("quiver_http_rate_limited_total 1"),
        "{metrics}"
    );
    // Refused tokens count against the address: this one's budget (2) is now spent by
    // the anonymous call above and one bad token, so the next guess is 429, not 401.
    let guess = || {
        s.http
            .get(s.url("/api/v1/users/2"))
            .bearer_auth("not.a.jwt")
            .send()
    };
    problem(guess().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    problem(guess().await.unwrap(), StatusCode::TOO_MANY_REQUESTS).await;
    s.shutdown().await.unwrap();
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_client_that_hangs_up_cancels_its_work_and_leaves_no_connection_in_a_transaction(
    pool: PgPool,
) {
    let mut s = start(pool, ServerConfig::default(), None).await;
    s.gate.close();
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(b"GET /api/v1/posts/1 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    s.gate.wait_entered(1).await;
    drop(tcp);
    let wait = async {
        while s.gate.dropped() == 0 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("the hung-up request's work was dropped");
    s.gate.open();
    // The server still answers, and no pooled connection was left inside a transaction.
    assert_eq!(
        s.get("/api/v1/posts/1", None)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let stuck = scalar(
        &s.pool,
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
    )
    .await;
    assert_eq!(stuck, 0);
    s.shutdown().await.unwrap();
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn shutdown_completes_fifty_requests_in_flight_then_stops_accepting(pool: PgPool) {
    let mut s = start(pool, ServerConfig::default(), None).await;
    s.gate.close();
    // Fifty connections, each with a request held mid-flight at the gate.
    let mut held = Vec::new();
    for n in 0..50 {
        let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let req = format!(
            "GET /api/v1/posts/{} HTTP/1.1\r\nhost: x\r\n\r\n",
            n % 5 + 1
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        held.push(tcp);
    }
    s.gate.wait_entered(50).await;
    let serving = s.begin_shutdown();
    // New connections are refused once the listener is closed.
    let refused = async {
        loop {
            if tokio::net::TcpStream::connect(s.addr).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), refused)
        .await
        .expect("listener closed");
    assert!(
        !serving.is_finished(),
        "the requests in flight hold the drain"
    );
    s.gate.open();
    for mut tcp in held {
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    }
    serving.await.unwrap().unwrap();
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn readiness_follows_the_database_and_reports_redis(pool: PgPool) {
    let mut s = start(pool.clone(), ServerConfig::default(), None).await;
    let (_, body) = json(s.get("/readyz", None).send().await.unwrap()).await;
    assert_eq!(
        body,
        serde_json::json!({"status": "ready", "database": "ok", "redis": "ok"})
    );
    s.store.close().await;
    let resp = s.get("/readyz", None).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(body["database"], "down");
    // With the database gone, reads are 503 problems, not hangs or 500s.
    let resp = s.get("/api/v1/posts/1", None).send().await.unwrap();
    assert_eq!(resp.headers()["retry-after"], "1");
    problem(resp, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(
        s.get("/healthz", None).send().await.unwrap().status(),
        StatusCode::OK
    );
    s.shutdown().await.unwrap();
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_dead_redis_is_reported_but_the_service_stays_ready(pool: PgPool) {
    let mut s = start(
        pool,
        ServerConfig::default(),
        Some("redis://127.0.0.1:1".into()),
    )
    .await;
    let (_, body) = json(s.get("/readyz", None).send().await.unwrap()).await;
    assert_eq!(
        body,
        serde_json::json!({"status": "ready", "database": "ok", "redis": "down"})
    );
    assert_eq!(
        s.get("/api/v1/users/2", None)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    s.shutdown().await.unwrap();
}

/// A token with `header` and `claims`, signed with `key` (`None`: no signature).
fn token(header: &str, claims: &str, key: Option<&[u8]>) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let signing = format!("{}.{}", B64.encode(header), B64.encode(claims));
    let signature = match key {
        None => String::new(),
        Some(key) => {
            let signer = jsonwebtoken::EncodingKey::from_secret(key);
            jsonwebtoken::crypto::sign(signing.as_bytes(), &signer, jsonwebtoken::Algorithm::HS256)
                .unwrap()
        }
    };
    format!("{signing}.{signature}")
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn expired_forged_and_unsigned_tokens_are_refused_with_401(pool: PgPool) {
    let mut s = start(pool, ServerConfig::default(), None).await;
    let hs = r#"{"alg":"HS256","typ":"JWT"}"#;
    let future = r#"{"sub":"1","exp":4102444800}"#;
    let good = token(hs, future, Some(crate::support::SECRET));
    assert_eq!(
        s.http
            .get(s.url("/api/v1/feed?limit=1"))
            .bearer_auth(&good)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK,
        "the hand-made token is valid"
    );
    for (name, bad) in [
        (
            "expired",
            token(
                hs,
                r#"{"sub":"1","exp":1000000}"#,
                Some(crate::support::SECRET),
            ),
        ),
        (
            "forged",
            token(hs, future, Some(b"someone else's secret, 32 bytes long")),
        ),
        (
            "alg none",
            token(r#"{"alg":"none","typ":"JWT"}"#, future, None),
        ),
        (
            "no exp",
            token(hs, r#"{"sub":"1"}"#, Some(crate::support::SECRET)),
        ),
        ("garbage", "a.b.c".to_owned()),
    ] {
        for path in ["/api/v1/feed", "/api/v1/posts/1"] {
            let resp = s
                .http
                .get(s.url(path))
                .bearer_auth(&bad)
                .send()
                .await
                .unwrap();
            assert!(resp.headers().contains_key("www-authenticate"), "{name}");
            let body = problem(resp, StatusCode::UNAUTHORIZED).await;
            if name == "expired" {
                assert_eq!(body["detail"], "the token has expired");
            }
        }
    }
    s.shutdown().await.unwrap();
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_burst_past_the_limit_gets_fast_503s_and_the_server_keeps_serving(pool: PgPool) {
    let config = ServerConfig {
        max_concurrency: 2,
        queue_timeout: Duration::from_millis(20),
        ..ServerConfig::default()
    };
    let mut s = start(pool, config, None).await;
    s.gate.close();
    let admitted: Vec<_> = (1..=2)
        .map(|n| tokio::spawn(s.get(&format!("/api/v1/posts/{n}"), None).send()))
        .collect();
    s.gate.wait_entered(2).await;
    let burst: Vec<_> = (0..30)
        .map(|_| tokio::spawn(s.get("/api/v1/users/2", None).send()))
        .collect();
    for r in burst {
        let resp = r.await.unwrap().unwrap();
        assert_eq!(resp.headers()["retry-after"], "1");
        problem(resp, StatusCode::SERVICE_UNAVAILABLE).await;
    }
    s.gate.open();
    for r in admitted {
        assert_eq!(r.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    for _ in 0..5 {
        assert_eq!(
            s.get("/api/v1/users/2", None)
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
    }
    s.shutdown().await.unwrap();
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn readiness_turns_503_while_the_database_refuses_connections_and_200_when_it_returns(
    pool: PgPool,
) {
    let mut own =
        crate::support::OwnPool::start(pool, "quiver-under-test", ServerConfig::default()).await;
    let s = &own.server;
    assert_eq!(
        s.get("/readyz", None).send().await.unwrap().status(),
        StatusCode::OK
    );
    own.cut().await;
    let resp = s.get("/readyz", None).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(body["database"], "down");
    own.restore().await;
    let (_, body) = json(s.get("/readyz", None).send().await.unwrap()).await;
    assert_eq!(body["database"], "ok");
    own.server.shutdown().await.unwrap();
}

/// The JSON shape of `v`, where `null` matches anything (optional fields).
fn same_shape(a: &serde_json::Value, b: &serde_json::Value, at: &str) {
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

fn snapshot(name: &str) -> serde_json::Value {
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
