//! Faults under steady load, each with numbers: Redis killed and restarted (no request
//! fails, Redis is used again without a restart), PostgreSQL refusing connections (warm
//! pages keep serving, cold ones get 503 with `Retry-After`, and reads recover).

use crate::http::{json, problem};
use crate::support::{OwnPool, Server, eventually, start};
use quiver_server::ServerConfig;
use reqwest::StatusCode;
use sqlx::PgPool;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Readers that GET `paths` in a loop until stopped, counting every status.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<u16>>>,
}

impl Load {
    fn start(s: &Server, paths: &[String], readers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..readers)
            .map(|r| {
                let stop = stop.clone();
                let http = s.http.clone();
                let urls: Vec<String> = paths.iter().map(|p| s.url(p)).collect();
                let token = s.token(3);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut i = r;
                    while !stop.load(Ordering::SeqCst) {
                        let url = &urls[i % urls.len()];
                        i += 1;
                        let status = match http.get(url).bearer_auth(&token).send().await {
                            Ok(resp) => resp.status().as_u16(),
                            Err(_) => 0,
                        };
                        seen.push(status);
                    }
                    seen
                })
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops the readers; every status they saw.
    async fn finish(self) -> Vec<u16> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.unwrap());
        }
        all
    }
}

/// Limits out of the way: the load is one viewer.
fn config() -> ServerConfig {
    ServerConfig {
        rate_per_second: 1_000_000,
        rate_burst: 1_000_000,
        ..ServerConfig::default()
    }
}

/// Warms `paths` and checks that each answers 200.
async fn warm(s: &Server, paths: &[String]) {
    for p in paths {
        let resp = s.get(p, Some(3)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{p}");
    }
}

fn warm_paths() -> Vec<String> {
    let mut paths: Vec<String> = (1..=8).map(|u| format!("/api/v1/users/{u}")).collect();
    paths.extend((1..=8).map(|p| format!("/api/v1/posts/{p}")));
    paths
}

/// A Redis of the test's own on `port`, so that the test can kill it.
fn redis_server(port: u16) -> Child {
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (Debian's redis-server package) for this test")
}

/// What `redis-cli -p port <args>` prints (empty when it cannot run).
fn redis_cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn redis_answers(port: u16) -> bool {
    redis_cli(port, &["ping"]) == "PONG"
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn redis_killed_and_restarted_under_load_fails_no_request(pool: PgPool) {
    let port = free_port();
    let mut redis = redis_server(port);
    eventually("the test's redis answers", || async { redis_answers(port) }).await;
    let url = format!("redis://127.0.0.1:{port}");
    let mut s = start(pool, config(), Some(url)).await;
    let paths = warm_paths();
    warm(&s, &paths).await;
    let load = Load::start(&s, &paths, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill().unwrap();
    redis.wait().unwrap();
    // Cold reads while Redis is gone are served from PostgreSQL.
    for p in 20..30 {
        let resp = s
            .get(&format!("/api/v1/posts/{p}"), Some(3))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let body: serde_json::Value = s
        .get("/readyz", None)
        .send()
        .await
        .unwrap()
        .json_value()
        .await;
    assert_eq!(body["redis"], "down");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut redis = redis_server(port);
    eventually("redis is back", || async { redis_answers(port) }).await;
    eventually("the server uses redis again", || async {
        let body: serde_json::Value = s
            .get("/readyz", None)
            .send()
            .await
            .unwrap()
            .json_value()
            .await;
        body["redis"] == "ok"
    })
    .await;
    // Cold reads fill Redis again: no restart needed.
    eventually("values reach the restarted redis", || async {
        for p in 30..40 {
            let _ = s.get(&format!("/api/v1/posts/{p}"), Some(3)).send().await;
        }
        redis_cli(port, &["dbsize"]).parse::<u64>().unwrap_or(0) > 0
    })
    .await;
    let statuses = load.finish().await;
    let failed = statuses.iter().filter(|s| **s != 200).count();
    assert!(
        statuses.len() > 100,
        "steady load: {} requests",
        statuses.len()
    );
    assert_eq!(failed, 0, "of {} requests", statuses.len());
    s.shutdown().await.unwrap();
    redis.kill().unwrap();
    redis.wait().unwrap();
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn postgres_refusing_connections_under_load_keeps_warm_pages_and_recovers(pool: PgPool) {
    let mut own = OwnPool::start(pool, "quiver-under-fault", config()).await;
    let s = &own.server;
    let paths = warm_paths();
    warm(s, &paths).await;
    let load = Load::start(s, &paths, 4);
    own.cut().await;
    // A cold page needs the database: 503 problem+json with Retry-After.
    let cold = s.get("/api/v1/posts/41", Some(3)).send().await.unwrap();
    assert_eq!(cold.headers()["retry-after"], "1");
    problem(cold, StatusCode::SERVICE_UNAVAILABLE).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let during = load.finish().await;
    own.restore().await;
    eventually("cold pages are served again", || async {
        s.get("/api/v1/posts/41", Some(3))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    let (_, post) = json(s.get("/api/v1/posts/42", Some(3)).send().await.unwrap()).await;
    assert_eq!(post["id"], 42);
    let failed = during.iter().filter(|s| **s != 200).count();
    assert!(during.len() > 100, "steady load: {} requests", during.len());
    assert_eq!(
        failed,
        0,
        "warm pages failed {failed} of {} times",
        during.len()
    );
    own.server.shutdown().await.unwrap();
}

/// `resp.json()` without reqwest's `json` feature.
trait JsonValue {
    async fn json_value(self) -> serde_json::Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> serde_json::Value {
        serde_json::from_slice(&self.bytes().await.unwrap()).unwrap()
    }
}
