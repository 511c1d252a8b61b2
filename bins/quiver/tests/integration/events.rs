//! The event layer across real `quiver serve` processes sharing PostgreSQL and Redis: a
//! process killed with SIGKILL after its commit and before any relay loses nothing, and
//! a follow on one replica shows in another replica's feed within a second.

use crate::{ok, quiver};
use quiver_model::UserId;
use quiver_server::auth::Auth;
use sqlx::Connection as _;
use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "a test secret of at least 32 bytes!!";

/// A fresh PostgreSQL database, migrated and seeded by the binary, dropped at the end.
pub(crate) struct Database {
    admin: String,
    name: String,
    pub(crate) url: String,
}

impl Database {
    fn seeded(tag: &str) -> Self {
        Self::seeded_on(&quiver_testkit::database_url(), tag, 80)
    }

    /// A database on the server of `admin` (a URL of any of its databases), seeded with
    /// `users` users.
    pub(crate) fn seeded_on(admin: &str, tag: &str, users: u32) -> Self {
        let admin = admin.to_owned();
        let name = format!("quiver_bin_{tag}_{}", std::process::id());
        block_on(async {
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            for sql in [
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                format!("CREATE DATABASE {name}"),
            ] {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
        });
        let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
        ok(quiver(&["migrate"], &url));
        ok(quiver(
            &[
                "seed",
                "--users",
                &users.to_string(),
                "--posts-per-user",
                "5",
                "--timeline-depth",
                "30",
            ],
            &url,
        ));
        Self { admin, name, url }
    }

    /// The database's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn scalar(&self, sql: &str) -> i64 {
        let url = self.url.clone();
        let sql = sql.to_owned();
        block_on(async move {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
            n
        })
    }

    pub(crate) fn pair(&self, sql: &str) -> (i64, i64) {
        let url = self.url.clone();
        let sql = sql.to_owned();
        block_on(async move {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            let row: (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
            row
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        block_on(async move {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await;
            }
        });
    }
}

/// Runs `fut` on a runtime of its own (the tests themselves are plain threads that
/// drive processes).
pub(crate) fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(fut)
}

/// A `quiver serve` process on PostgreSQL and Redis, on ports it chose.
pub(crate) struct Replica {
    child: std::process::Child,
    pub(crate) api: SocketAddr,
    admin: SocketAddr,
    /// The process's last warnings and errors, shown if the test fails.
    warnings: Arc<Mutex<VecDeque<String>>>,
}

/// How many of a process's warnings a failed test shows (the latest).
const WARNINGS_KEPT: usize = 100;

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let warnings = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!("warnings of the process at {}:", self.api);
            for line in warnings.iter() {
                eprintln!("  {line}");
            }
        }
    }
}

impl Replica {
    fn start(db: &Database, namespace: &str, extra: &[&str]) -> Self {
        Self::start_on(db, &quiver_testkit::redis_url(), namespace, extra, &[])
    }

    /// A process on `redis`, with `extra` flags and environment `env`.
    pub(crate) fn start_on(
        db: &Database,
        redis: &str,
        namespace: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_quiver"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--event-claim-idle-ms",
                "1000",
            ])
            .args(extra)
            .env("DATABASE_URL", &db.url)
            .env("REDIS_URL", redis)
            .env("QUIVER_REDIS_NAMESPACE", namespace)
            .env("QUIVER_JWT_SECRET", SECRET)
            .env("RUST_LOG", "warn,quiver=info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let warnings = Arc::new(Mutex::new(VecDeque::new()));
        let kept = warnings.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("quiver is serving") {
                    let _ = tx.send(line);
                } else if line.contains(r#""level":"WARN""#) || line.contains(r#""level":"ERROR""#)
                {
                    let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                    if kept.len() == WARNINGS_KEPT {
                        kept.pop_front();
                    }
                    kept.push_back(line);
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server says where it serves");
        let log: serde_json::Value = serde_json::from_str(&line).unwrap();
        let addr = |k: &str| log["fields"][k].as_str().unwrap().parse().unwrap();
        Self {
            api: addr("api"),
            admin: addr("admin"),
            child,
            warnings,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    /// A URL of the admin listener (metrics, profiles).
    pub(crate) fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// One sample of a metric from `/metrics`.
    pub(crate) fn metric(&self, name: &str) -> f64 {
        let body = blocking::get(&self.admin_url("/metrics"));
        body.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

/// A tiny blocking HTTP client over reqwest's async one.
pub(crate) mod blocking {
    pub(crate) fn get(url: &str) -> String {
        super::block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
    }

    pub(crate) fn send(req: reqwest::RequestBuilder) -> (u16, String) {
        super::block_on(async {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        })
    }
}

pub(crate) fn token(user: i64) -> String {
    Auth::new(SECRET.as_bytes())
        .unwrap()
        .mint(UserId(user), Duration::from_secs(600))
}

use quiver_testkit::eventually_blocking as eventually;

pub(crate) fn namespace() -> String {
    quiver_testkit::namespace("bin")
}

/// A pair (a, b) where a does not follow b and no block stands between them.
const FREE_PAIR: &str = "SELECT x.id, y.id FROM users x, users y
     WHERE x.id <> y.id
       AND NOT EXISTS (SELECT 1 FROM follows WHERE follower_id = x.id AND followee_id = y.id)
       AND NOT EXISTS (SELECT 1 FROM blocks WHERE blocker_id IN (x.id, y.id)
                                              AND blocked_id IN (x.id, y.id))
       AND EXISTS (SELECT 1 FROM posts WHERE author_id = y.id)
     ORDER BY x.id, y.id LIMIT 1";

#[test]
fn a_process_killed_after_commit_and_before_relay_loses_no_event() {
    let db = Database::seeded("crash");
    let ns = namespace();
    let (a, b) = db.pair(FREE_PAIR);
    let notified = format!(
        "SELECT count(*) FROM notifications WHERE user_id = {b} AND kind = 'followed' AND actor_id = {a}"
    );
    let before = db.scalar(&notified);

    // The first process commits the follow and its outbox row, and never relays it.
    let mut first = Replica::start(&db, &ns, &["--no-relay"]);
    let http = reqwest::Client::new();
    let (status, _) = blocking::send(
        http.put(first.url(&format!("/api/v1/users/{b}/follow")))
            .bearer_auth(token(a)),
    );
    assert_eq!(status, 204);
    let unpublished = "SELECT count(*) FROM outbox WHERE published_at IS NULL";
    assert_eq!(db.scalar(unpublished), 1, "committed, not relayed");
    first.child.kill().unwrap(); // SIGKILL: no shutdown, no flush.
    first.child.wait().unwrap();
    drop(first);
    assert_eq!(db.scalar(unpublished), 1);
    assert_eq!(db.scalar(&notified), before);

    // After a restart the event is relayed and handled, once.
    let second = Replica::start(&db, &ns, &[]);
    eventually("the notification exists", Duration::from_secs(20), || {
        db.scalar(&notified) == before + 1
    });
    eventually("the event is done", Duration::from_secs(20), || {
        db.scalar(unpublished) == 0
            && second.metric("quiver_events_total{stage=\"handled\"}") >= 1.0
            && second.metric("quiver_consumer_entries{state=\"pending\"}") == 0.0
    });
    assert_eq!(db.scalar(&notified), before + 1, "exactly once");
    let (_, body) = blocking::send(
        http.get(second.url("/api/v1/notifications?limit=100"))
            .bearer_auth(token(b)),
    );
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    let shown = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "followed" && n["actor_id"] == a)
        .count() as i64;
    assert_eq!(shown, before + 1, "{body}");
}

#[test]
fn a_follow_on_one_replica_reaches_the_other_replicas_feed_within_a_second() {
    let db = Database::seeded("replicas");
    let ns = namespace();
    let (viewer, author) = db.pair(FREE_PAIR);
    let one = Replica::start(&db, &ns, &[]);
    let two = Replica::start(&db, &ns, &[]);
    let http = reqwest::Client::new();
    // The author posts (the newest post anywhere), and its fan-out settles.
    let (status, body) = blocking::send(
        http.post(two.url("/api/v1/posts"))
            .bearer_auth(token(author))
            .header("content-type", "application/json")
            .body(r#"{"kind": "post", "body": "from the author"}"#),
    );
    assert_eq!(status, 201, "{body}");
    let post: serde_json::Value = serde_json::from_str(&body).unwrap();
    let post = post["id"].as_i64().unwrap();
    eventually("the outbox is drained", Duration::from_secs(20), || {
        db.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
    });
    let feed_on_two = || {
        let (status, body) = blocking::send(
            http.get(two.url("/api/v1/feed?limit=20"))
                .bearer_auth(token(viewer)),
        );
        assert_eq!(status, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == post)
            .map(|i| i["viewer"]["follows_author"].as_bool().unwrap())
    };
    // Replica two has the viewer's graph and feed cached, without the author.
    assert_eq!(feed_on_two(), None);
    assert_eq!(feed_on_two(), None);

    let (status, _) = blocking::send(
        http.put(one.url(&format!("/api/v1/users/{author}/follow")))
            .bearer_auth(token(viewer)),
    );
    assert_eq!(status, 204);
    let took = eventually(
        "replica two shows the followed author's post",
        Duration::from_secs(5),
        || feed_on_two() == Some(true),
    );
    assert!(
        took < Duration::from_secs(1),
        "replica two's feed took {took:?} to include the new author"
    );
}
