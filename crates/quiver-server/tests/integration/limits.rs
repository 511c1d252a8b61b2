//! Protection and lifecycle over real TCP: load shedding, deadlines, rate limits,
//! cancellation by a client that hangs up, drain on shutdown, readiness and tokens.

use crate::http::*;
use crate::support::start;
use quiver_server::ServerConfig;
use quiver_store::Store as _;
use reqwest::StatusCode;
use sqlx::PgPool;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

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
