//! Abuse and fault cases of the review of 2026-12-02, each with a bounded answer: what
//! a client sends cannot grow the server's state or hold its resources without limit.

use crate::http::{json, metrics, problem, scalar};
use crate::support::start;
use quiver_server::ServerConfig;
use reqwest::StatusCode;
use sqlx::PgPool;
use std::collections::HashSet;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Every distinct extension method on an unknown path used to add a Prometheus series;
/// now they share one `other` label, and misses are charged to the rate limit.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn unknown_methods_share_one_label_and_misses_are_rate_limited(pool: PgPool) {
    let config = ServerConfig {
        rate_per_second: 1,
        rate_burst: 1000,
        ..ServerConfig::default()
    };
    let mut s = start(pool, config, None).await;
    for i in 0..300 {
        let method = reqwest::Method::from_bytes(format!("X{i}").as_bytes()).unwrap();
        let path = if i % 2 == 0 { "/zzz" } else { "/api/v1/feed" };
        let resp = s.http.request(method, s.url(path)).send().await.unwrap();
        assert!(
            matches!(resp.status().as_u16(), 404 | 405),
            "{}",
            resp.status()
        );
    }
    let text = metrics(&s).await;
    let methods: HashSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("quiver_http_requests_total{"))
        .filter_map(|l| l.split("method=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(methods, HashSet::from(["other"]), "{text}");
    // The burst of 1000 is spent by misses like by anything else.
    let mut limited = 0;
    for _ in 0..800 {
        let resp = s.http.get(s.url("/nope")).send().await.unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
            if limited == 1 {
                problem(resp, StatusCode::TOO_MANY_REQUESTS).await;
            }
        }
    }
    assert!(limited > 0, "misses past the burst are refused with 429");
    s.shutdown().await.unwrap();
}

/// Reads from `tcp` until the server closes it (or `within` passes: then the test fails).
async fn closed_within(tcp: &mut tokio::net::TcpStream, within: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let read = tcp.read_to_end(&mut got);
    match tokio::time::timeout(within, read).await {
        Ok(_) => got,
        Err(_) => panic!("the server kept the connection open past {within:?}"),
    }
}

/// Sockets that never send a request, stall in the HTTP/2 preface, or stay idle after
/// a request are closed: none holds a file descriptor for good.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn idle_and_silent_connections_are_closed(pool: PgPool) {
    let config = ServerConfig {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let mut s = start(pool, config, None).await;
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    let mut preface = TcpStream::connect(s.addr).await.unwrap();
    preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut kept = TcpStream::connect(s.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(5))
            .await
            .is_empty()
    );
    assert!(
        closed_within(&mut preface, Duration::from_secs(5))
            .await
            .is_empty()
    );
    let answer = closed_within(&mut kept, Duration::from_secs(5)).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    // The silent and the preface connections were closed by the watchdog (hyper's own
    // header timeout may close the idle HTTP/1 one first).
    let text = metrics(&s).await;
    let idle: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("quiver_http_connections_closed_total{reason=\"idle\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(idle >= 2, "{text}");
    // An HTTP/2 connection with no streams is closed too (after a GOAWAY).
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let driver = tokio::spawn(conn);
    let req = hyper::Request::get(s.url("/healthz"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
    tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("the idle h2 connection is closed")
        .unwrap()
        .unwrap();
    s.shutdown().await.unwrap();
}

/// Sends `GET /healthz` on a kept-alive connection and reads the whole answer.
async fn healthz(tcp: &mut TcpStream) -> String {
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return text.into_owned();
            }
        }
    }
}

/// Past the connection cap a new connection gets a 503 problem and is closed, while the
/// admitted ones are served; the slot comes back when one closes.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn connections_past_the_cap_are_refused_with_503(pool: PgPool) {
    let config = ServerConfig {
        max_connections: 3,
        ..ServerConfig::default()
    };
    let mut s = start(pool, config, None).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        assert!(healthz(&mut tcp).await.starts_with("HTTP/1.1 200"));
        held.push(tcp);
    }
    // Ten times the cap at once: every one past it is refused, the cap holds, and the
    // admitted connections are still served.
    let mut over = Vec::new();
    for _ in 0..30 {
        over.push(TcpStream::connect(s.addr).await.unwrap());
    }
    for tcp in &mut over {
        let answer = String::from_utf8(closed_within(tcp, Duration::from_secs(5)).await).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(answer.contains("too many open connections"), "{answer}");
    }
    for tcp in &mut held {
        assert!(healthz(tcp).await.starts_with("HTTP/1.1 200"));
    }
    let text = metrics(&s).await;
    assert!(text.contains("quiver_http_connections_open 3"), "{text}");
    assert!(
        text.contains("quiver_http_connections_closed_total{reason=\"refused\"} 30"),
        "{text}"
    );
    drop(held.pop());
    crate::support::eventually("a slot is free again", || async {
        s.http
            .get(s.url("/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    s.shutdown().await.unwrap();
}

/// A body that trickles in holds no concurrency permit: with one permit, another
/// client is served meanwhile, and the slow one gets 408 at the body deadline.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_slow_body_holds_no_permit_and_gets_408(pool: PgPool) {
    let config = ServerConfig {
        max_concurrency: 1,
        body_read_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    };
    let mut s = start(pool, config, None).await;
    let mut slow = TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/posts HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"kind\"",
        s.token(3)
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..5 {
        let resp = s.get("/api/v1/users/2", Some(4)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut answer))
        .await
        .expect("the slow body is answered at its deadline")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 500 ms"), "{answer}");
    s.shutdown().await.unwrap();
}

/// NUL in a post body was a 500 from PostgreSQL; it is a 422 naming the field, and
/// nothing is written.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_nul_in_a_post_is_a_422_naming_the_field(pool: PgPool) {
    let mut s = start(pool, ServerConfig::default(), None).await;
    let before = scalar(&s.pool, "SELECT count(*) FROM posts").await;
    let resp = s
        .http
        .post(s.url("/api/v1/posts"))
        .bearer_auth(s.token(3))
        .header("content-type", "application/json")
        .body(r#"{"kind":"post","body":"a\u0000b"}"#)
        .send()
        .await
        .unwrap();
    let body = problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["errors"][0]["field"], "body", "{body}");
    assert_eq!(scalar(&s.pool, "SELECT count(*) FROM posts").await, before);
    s.shutdown().await.unwrap();
}

/// Probing the next order id used to cache "no items" for it (in L1 and Redis), so the
/// real order placed next rendered with none. Another's order, and one not yet placed,
/// both answer 404 alike.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn probing_the_next_order_id_cannot_hide_its_items(pool: PgPool) {
    let mut s = start(pool, ServerConfig::default(), None).await;
    let (wish, customer): (i64, i64) = sqlx::query_as(
        "SELECT p.id, u.id FROM posts p, users u
         WHERE p.kind = 'wish' AND u.id <> p.author_id
           AND NOT EXISTS (SELECT 1 FROM blocks WHERE blocker_id IN (u.id, p.author_id)
                                                  AND blocked_id IN (u.id, p.author_id))
         ORDER BY p.id, u.id LIMIT 1",
    )
    .fetch_one(&s.pool)
    .await
    .unwrap();
    let prober = if customer == 1 { 2 } else { 1 };
    let next = scalar(&s.pool, "SELECT coalesce(max(id), 0) + 1 FROM orders").await;
    for _ in 0..2 {
        let resp = s
            .get(&format!("/api/v1/orders/{next}"), Some(prober))
            .send()
            .await
            .unwrap();
        problem(resp, StatusCode::NOT_FOUND).await;
    }
    let resp = s
        .http
        .post(s.url("/api/v1/orders"))
        .bearer_auth(s.token(customer))
        .header("content-type", "application/json")
        .header("idempotency-key", "probe-test")
        .body(format!(
            r#"{{"items":[{{"post_id":{wish},"quantity":1}}]}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(body["id"], next, "{body}");
    assert_eq!(body["items"][0]["post_id"], wish, "{body}");
    let (_, again) = json(
        s.get(&format!("/api/v1/orders/{next}"), Some(customer))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(again["items"][0]["post_id"], wish, "{again}");
    // To the prober it is still "not found", the same answer as before it existed.
    let resp = s
        .get(&format!("/api/v1/orders/{next}"), Some(prober))
        .send()
        .await
        .unwrap();
    problem(resp, StatusCode::NOT_FOUND).await;
    s.shutdown().await.unwrap();
}

/// A client that hangs up while its post is being written cannot skip what follows the
/// commit: the author's own cached feed head is forgotten, so their next read shows it.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_hang_up_during_a_write_still_invalidates_after_the_commit(pool: PgPool) {
    let mut s = start(pool, ServerConfig::default(), None).await;
    let author = 5;
    let feed = |s: &crate::support::Server| s.get("/api/v1/feed?limit=100", Some(author)).send();
    let (_, before) = json(feed(&s).await.unwrap()).await;
    let before: Vec<i64> = ids(&before);
    // Hold the author's row, so the post's transaction waits at its first statement.
    let mut lock = s.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
        .bind(author)
        .execute(&mut *lock)
        .await
        .unwrap();
    let post = s
        .http
        .post(s.url("/api/v1/posts"))
        .bearer_auth(s.token(author))
        .header("content-type", "application/json")
        .body(r#"{"kind":"post","body":"written after a hang-up"}"#)
        .send();
    let client = tokio::spawn(post);
    crate::support::eventually("the write waits for the lock", || async {
        scalar(
            &s.pool,
            "SELECT count(*) FROM pg_stat_activity
             WHERE wait_event_type = 'Lock' AND query LIKE '%FOR NO KEY UPDATE%'",
        )
        .await
            == 1
    })
    .await;
    client.abort();
    let _ = client.await;
    lock.commit().await.unwrap();
    let committed = "SELECT coalesce(max(id), 0) FROM posts WHERE body = 'written after a hang-up'";
    crate::support::eventually("the post commits", || async {
        scalar(&s.pool, committed).await > 0
    })
    .await;
    let id = scalar(&s.pool, committed).await;
    crate::support::eventually("the author's feed shows the post", || async {
        let (_, page) = json(feed(&s).await.unwrap()).await;
        ids(&page).contains(&id)
    })
    .await;
    assert!(!before.contains(&id));
    s.shutdown().await.unwrap();
}

fn ids(page: &serde_json::Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect()
}

/// A client that hangs up mid-profile used to leave every later profile refused (409)
/// until restart.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_dropped_profile_does_not_block_the_next(pool: PgPool) {
    let mut s = start(pool, ServerConfig::default(), None).await;
    let hung_up = s
        .http
        .get(s.admin_url("/debug/pprof/profile?seconds=120"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(hung_up.is_err(), "the client gave up");
    crate::support::eventually("a new profile can be taken", || async {
        let resp = s
            .http
            .get(s.admin_url("/debug/pprof/profile?seconds=1"))
            .send()
            .await
            .unwrap();
        resp.status() == StatusCode::OK
    })
    .await;
    s.shutdown().await.unwrap();
}

/// Behind a trusted load balancer anonymous clients are charged by the address it names,
/// each its own bucket; a peer that is not trusted cannot choose its bucket by header.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget(pool: PgPool) {
    let config = ServerConfig {
        rate_per_second: 1,
        rate_burst: 2,
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..ServerConfig::default()
    };
    let mut s = start(pool, config, None).await;
    let from = |client: &str| {
        s.http
            .get(s.url("/api/v1/users/2"))
            .header("x-forwarded-for", format!("{client}, 127.0.0.1"))
            .send()
    };
    for i in 0..10 {
        let resp = from(&format!("203.0.113.{i}")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "client {i}");
    }
    for _ in 0..2 {
        assert_eq!(from("198.51.100.9").await.unwrap().status(), StatusCode::OK);
    }
    let third = from("198.51.100.9").await.unwrap();
    problem(third, StatusCode::TOO_MANY_REQUESTS).await;
    // IPv6 clients share their /64.
    for (i, client) in ["2001:db8:1:2::1", "2001:db8:1:2::2"].iter().enumerate() {
        assert_eq!(from(client).await.unwrap().status(), StatusCode::OK, "{i}");
    }
    problem(
        from("2001:db8:1:2:ffff::3").await.unwrap(),
        StatusCode::TOO_MANY_REQUESTS,
    )
    .await;
    s.shutdown().await.unwrap();
}

/// A flood of readiness probes costs a couple of checks, not one database round trip
/// each: probes that arrive while a check runs share the next one.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn concurrent_readiness_probes_share_their_checks(pool: PgPool) {
    // With Redis unreachable each check waits out its Redis timeout (500 ms), so every
    // probe arrives while the first check runs.
    let dead = Some("redis://127.0.0.1:1".to_owned());
    let mut s = start(pool, ServerConfig::default(), dead).await;
    let probes: Vec<_> = (0..40)
        .map(|_| {
            let req = s.http.get(s.url("/readyz"));
            tokio::spawn(async move { req.send().await.unwrap().status() })
        })
        .collect();
    for p in probes {
        assert_eq!(p.await.unwrap(), StatusCode::OK);
    }
    let text = metrics(&s).await;
    let checks: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("quiver_readiness_checks_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    // The first check, and one for those that arrived during it (one per probe without
    // the sharing).
    assert!((1..=3).contains(&checks), "{checks} checks for 40 probes");
    s.shutdown().await.unwrap();
}
