//! The production-shaped topology under test, as `cargo xtask cluster up` runs it: three
//! `quiver serve` processes on a six-node Redis Cluster and a PostgreSQL primary with a
//! streaming replica taking the reads, behind HAProxy. Writes through one process show
//! through the others, a client reads its own writes through the balancer, and killing a
//! Redis primary or the PostgreSQL replica fails no request.

use crate::events::{Database, Replica, block_on, namespace, token};
use quiver_testkit::redis_cluster::RedisCluster;
use quiver_testkit::replica::{PgReplica, primary_url};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Every part, stopped in this order when dropped: the balancer, the processes, Redis,
/// the replica, and the database.
struct Topology {
    balancer: Balancer,
    replicas: Vec<Replica>,
    redis: RedisCluster,
    pg: PgReplica,
    db: Database,
    client: Client,
}

impl Topology {
    fn start(tag: &str) -> Self {
        let haproxy = haproxy();
        let db = Database::seeded_on(&primary_url(), tag, 300);
        // A copy taken after the seed, so it holds the database from the start.
        let pg = PgReplica::start();
        let redis = RedisCluster::start();
        let (url, reads) = (redis.url(), pg.url(db.name()));
        let ns = namespace();
        let replicas: Vec<Replica> = (0..3)
            .map(|_| {
                Replica::start_on(
                    &db,
                    &url,
                    &ns,
                    // The tests poll as fast as they can: no per-user rate limit.
                    &[
                        "--event-partitions",
                        "3",
                        "--rate-per-second",
                        "1000000",
                        "--rate-burst",
                        "1000000",
                    ],
                    &[("DATABASE_READ_URLS", reads.as_str())],
                )
            })
            .collect();
        let balancer = Balancer::start(&haproxy, &replicas);
        Self {
            balancer,
            replicas,
            redis,
            pg,
            db,
            client: Client::default(),
        }
    }

    /// `path` through the balancer.
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.balancer.port)
    }

    /// `(follower, author)` pairs: the follower follows the author, and no block stands
    /// between them or the follower and anyone they follow.
    fn follower_pairs(&self, n: usize) -> Vec<(i64, i64)> {
        (0..n)
            .map(|i| {
                self.db.pair(&format!(
                    "SELECT f.follower_id, f.followee_id FROM follows f
                     WHERE NOT EXISTS (SELECT 1 FROM blocks WHERE blocker_id = f.follower_id
                                                               OR blocked_id = f.follower_id
                                                               OR blocker_id = f.followee_id
                                                               OR blocked_id = f.followee_id)
                     ORDER BY f.follower_id, f.followee_id OFFSET {} LIMIT 1",
                    i * 97
                ))
            })
            .collect()
    }

    fn bases(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.url("")).collect()
    }
}

/// Requests as the users make them, through a client that keeps cookies (a write's
/// answer sets the one that makes its writer's next reads see it on any replica).
#[derive(Clone)]
struct Client(reqwest::Client);

impl Default for Client {
    fn default() -> Self {
        let http = reqwest::Client::builder().cookie_store(true).build();
        Self(http.expect("a client"))
    }
}

impl Client {
    /// The ids on the first page of `viewer`'s home feed at `base` (a process or the
    /// balancer), and the status.
    async fn feed(&self, base: &str, viewer: i64, limit: u32) -> (u16, Vec<i64>) {
        let resp = self
            .0
            .get(format!("{base}/api/v1/feed?limit={limit}"))
            .bearer_auth(token(viewer))
            .send()
            .await;
        let resp = match resp {
            Ok(resp) => resp,
            Err(e) => {
                // No HTTP answer: what the transport said, shown if the test fails.
                eprintln!("GET {base}/api/v1/feed as {viewer}: {e:?}");
                return (0, Vec::new());
            }
        };
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_default();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let ids = body["items"]
            .as_array()
            .map(|items| items.iter().filter_map(|i| i["id"].as_i64()).collect())
            .unwrap_or_default();
        (status, ids)
    }

    /// Posts as `author` at `base`; the new post's id.
    async fn post(&self, base: &str, author: i64) -> Result<i64, String> {
        let resp = self
            .0
            .post(format!("{base}/api/v1/posts"))
            .bearer_auth(token(author))
            .header("content-type", "application/json")
            .body(r#"{"kind": "post", "body": "through the topology"}"#)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        let body: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        match (status, body["id"].as_i64()) {
            (201, Some(id)) => Ok(id),
            _ => Err(format!("{status}: {body}")),
        }
    }
}

/// HAProxy in front of the processes, as `cargo xtask cluster up` configures it.
struct Balancer {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Balancer {
    fn start(haproxy: &PathBuf, replicas: &[Replica]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let servers: String = replicas
            .iter()
            .enumerate()
            .map(|(i, r)| format!("    server q{i} {}\n", r.api))
            .collect();
        // As the cluster runs it, plus a log of every session that ended abnormally
        // (an error, a retry, a server marked down), shown if the test fails.
        let config = include_str!("../../../../xtask/haproxy.cfg")
            .replace("{bind}", &format!("127.0.0.1:{port}"))
            .replace("{servers}", &servers)
            .replace("global\n", "global\n    log stderr format raw local0\n")
            .replace(
                "defaults\n",
                "defaults\n    log global\n    option httplog\n    option dontlog-normal\n",
            );
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).expect("the config is written");
        let log = dir.path().join("haproxy.log");
        let child = Command::new(haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("haproxy's log"))
            .spawn()
            .expect("haproxy starts");
        let balancer = Self {
            child,
            port,
            log,
            _dir: dir,
        };
        let ready = format!("http://127.0.0.1:{port}/readyz");
        quiver_testkit::eventually_blocking(
            "haproxy forwards to every process",
            Duration::from_secs(20),
            || {
                // Three answers in a row: round robin has reached each process.
                (0..3).all(|_| {
                    block_on(async { reqwest::get(&ready).await.map(|r| r.status().as_u16()) })
                        .is_ok_and(|s| s == 200)
                })
            },
        );
        balancer
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("haproxy's log of abnormal sessions and server states:\n{log}");
        }
    }
}

fn haproxy() -> PathBuf {
    crate::tool("QUIVER_HAPROXY", "haproxy", "haproxy")
}

/// The `q`-quantile of `samples`.
fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1]
}

/// A write through one process shows in a follower's feed on both others within 100 ms
/// at P99 over 1,000 writes; and 1,000 write-then-read pairs through the balancer (and so
/// through the PostgreSQL replica) each read their own write.
#[test]
fn writes_show_everywhere_at_once_and_clients_read_their_own_through_the_balancer() {
    let t = Topology::start("topo_writes");
    let pairs = t.follower_pairs(2);
    let bases = t.bases();
    let lanes = pairs.len();
    let mut visible: Vec<Duration> = block_on(async {
        // Warm every follower's feed on every process first.
        for (follower, _) in &pairs {
            for base in &bases {
                assert_eq!(t.client.feed(base, *follower, 5).await.0, 200);
            }
        }
        let lane = |l: usize| {
            let (t, bases) = (&t, &bases);
            let (follower, author) = pairs[l];
            async move {
                let mut took = Vec::new();
                for i in (l..1000).step_by(lanes) {
                    let writer = i % bases.len();
                    let post = t
                        .client
                        .post(&bases[writer], author)
                        .await
                        .expect("the write");
                    let written = Instant::now();
                    for (r, base) in bases.iter().enumerate().filter(|(r, _)| *r != writer) {
                        loop {
                            let (status, ids) = t.client.feed(base, follower, 5).await;
                            assert_eq!(status, 200);
                            if ids.contains(&post) {
                                break;
                            }
                            assert!(
                                written.elapsed() < Duration::from_secs(10),
                                "post {post} never reached process {r}"
                            );
                            // A poll every millisecond or so, not a busy loop that takes
                            // the processes' CPU (the measure is then within a poll).
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    took.push(written.elapsed());
                }
                took
            }
        };
        futures::future::join_all((0..lanes).map(lane))
            .await
            .into_iter()
            .flatten()
            .collect()
    });
    assert_eq!(visible.len(), 1000);
    let p50 = quantile(&mut visible, 0.5);
    let p99 = quantile(&mut visible, 0.99);
    eprintln!("a write shows on every other process: P50 {p50:?}, P99 {p99:?} over 1,000 writes");
    assert!(p99 <= Duration::from_millis(100), "P99 {p99:?}");

    // Read your writes through the balancer: each pair's read lands on another process
    // than its write (round robin), reading through the replica.
    let reads_before: f64 = t
        .replicas
        .iter()
        .map(|r| r.metric("quiver_db_replica_reads_total"))
        .sum();
    let (me, _) = pairs[0];
    let lb = t.url("");
    block_on(async {
        let mut last = None;
        for i in 0..1000 {
            if i % 2 == 0 {
                let post = t.client.post(&lb, me).await.expect("the write");
                let (status, ids) = t.client.feed(&lb, me, 1).await;
                assert_eq!((status, ids.first()), (200, Some(&post)), "pair {i}");
                last = Some(post);
            } else {
                let post = last.take().expect("a post to delete");
                let resp = t
                    .client
                    .0
                    .delete(t.url(&format!("/api/v1/posts/{post}")))
                    .bearer_auth(token(me))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status().as_u16(), 204, "pair {i}");
                let (status, ids) = t.client.feed(&lb, me, 20).await;
                assert_eq!(status, 200);
                assert!(!ids.contains(&post), "pair {i}: the deleted post is gone");
            }
        }
    });
    let reads_after: f64 = t
        .replicas
        .iter()
        .map(|r| r.metric("quiver_db_replica_reads_total"))
        .sum();
    assert!(
        reads_after > reads_before + 100.0,
        "the pairs read through the replica ({reads_before} → {reads_after})"
    );
}

/// Steady reads (and a trickle of writes) through the balancer while a Redis primary
/// dies, then while the PostgreSQL replica dies: no request fails, the replica leaves
/// every process's rotation, and writes reach followers after the failover.
#[test]
fn killing_a_redis_primary_or_the_postgresql_replica_fails_no_request() {
    let mut t = Topology::start("topo_faults");
    let pairs = t.follower_pairs(8);
    let lb = t.url("");
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // The load: four readers over the followers' feeds, one writer posting every 50 ms.
    let load = {
        let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
        let (probe, lb, pairs) = (t.client.clone(), lb.clone(), pairs.clone());
        std::thread::spawn(move || {
            block_on(async {
                let reader = |r: usize| {
                    let (stop, served, failed, probe, lb, pairs) =
                        (&stop, &served, &failed, &probe, &lb, &pairs);
                    async move {
                        let mut i = r;
                        while !stop.load(Ordering::Relaxed) {
                            let (follower, _) = pairs[i % pairs.len()];
                            match probe.feed(lb, follower, 20).await.0 {
                                200 => served.fetch_add(1, Ordering::Relaxed),
                                status => {
                                    // Shown with the test's failure: which request, how.
                                    eprintln!("a read of {follower}'s feed answered {status}");
                                    failed.fetch_add(1, Ordering::Relaxed)
                                }
                            };
                            i += 4;
                        }
                    }
                };
                let writer = async {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let (_, author) = pairs[i % pairs.len()];
                        match probe.post(&lb, author).await {
                            Ok(_) => served.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                eprintln!("a post by {author} failed: {e}");
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                        i += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                };
                futures::join!(futures::future::join_all((0..4).map(reader)), writer);
            });
        })
    };
    let progress = |what: &str| {
        // Some requests served since now: the load runs through the fault.
        let from = served.load(Ordering::Relaxed);
        quiver_testkit::eventually_blocking(what, Duration::from_secs(30), || {
            served.load(Ordering::Relaxed) > from + 200
        });
    };
    progress("the load runs");

    // A Redis primary dies; a replica takes over.
    let primary = t.redis.primaries()[0];
    t.redis.kill(primary);
    let killed = Instant::now();
    quiver_testkit::eventually_blocking(
        "a replica takes the dead primary's slots",
        Duration::from_secs(30),
        || t.redis.primaries().len() == 3 && !t.redis.primaries().contains(&primary),
    );
    eprintln!("redis failover took {:?}", killed.elapsed());
    progress("the load runs after the redis failover");
    // Writes resume: a new post reaches its follower on every process.
    let (follower, author) = pairs[0];
    let post = block_on(t.client.post(&lb, author)).expect("a write after the failover");
    for base in t.bases() {
        quiver_testkit::eventually_blocking(
            "the post shows on every process",
            Duration::from_secs(20),
            || {
                block_on(t.client.feed(&base, follower, 20))
                    .1
                    .contains(&post)
            },
        );
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests failed (redis)");

    // The PostgreSQL replica dies: reads move to the primary.
    let on_replica = |t: &Topology| -> f64 {
        t.replicas
            .iter()
            .map(|r| r.metric("quiver_db_replicas{state=\"in_rotation\"}"))
            .sum()
    };
    assert_eq!(
        on_replica(&t),
        3.0,
        "every process reads through the replica"
    );
    let replica_reads = |t: &Topology| -> f64 {
        t.replicas
            .iter()
            .map(|r| r.metric("quiver_db_replica_reads_total"))
            .sum()
    };
    let before = replica_reads(&t);
    progress("the load reads through the replica");
    assert!(
        replica_reads(&t) > before,
        "the load reads through the replica"
    );
    t.pg.kill();
    quiver_testkit::eventually_blocking(
        "the replica leaves every process's rotation",
        Duration::from_secs(30),
        || on_replica(&t) == 0.0,
    );
    progress("the load runs on the primary alone");
    stop.store(true, Ordering::Relaxed);
    load.join().expect("the load ends");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed (postgresql)"
    );
    eprintln!(
        "{} requests through both faults, none failed",
        served.load(Ordering::Relaxed)
    );
}
