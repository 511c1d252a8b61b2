//! `cargo xtask bench`: the release server measured end to end with a real load generator
//! (oha, one process per viewer of a fixed set: `load.rs`), side by side with the
//! machine's own limits measured in the same run (the same server returning a static
//! body, pgbench running the cold path's SQL, redis-benchmark running the L2 path's MGET),
//! plus ablations, each a configuration of one binary.
//! Writes `target/bench/report.{json,md}` and SVG plots; `--baseline` compares ratios.

use crate::load::{self, Kind, Load, Stream, Target};
use crate::services::{self, Services};
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "bench secret: at least thirty-two bytes long";
/// A ratio may fall this much below the baseline's before `--baseline` fails.
const TOLERANCE: f64 = 0.25;

struct Options {
    quick: bool,
    scale: &'static str,
    baseline: Option<PathBuf>,
}

/// How long each phase runs.
struct Phases {
    warmup: Duration,
    peak: Duration,
    rate: Duration,
    /// Connections in all, shared by the streams.
    concurrency: u32,
    /// How many viewers the feed scenarios load (one oha process each).
    viewers: usize,
}

pub(crate) fn bench(args: &[String]) -> Result<()> {
    let mut o = Options {
        quick: false,
        scale: "medium",
        baseline: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--micro" => {
                return crate::run(crate::cargo().args(["bench", "-p", "quiver-benches"]));
            }
            "--scale" => {
                o.scale = match it.next().map(String::as_str) {
                    Some("small") => "small",
                    Some("medium") => "medium",
                    Some("large") => "large",
                    other => bail!("--scale takes small, medium or large, not {other:?}"),
                }
            }
            "--baseline" => {
                o.baseline = Some(it.next().context("--baseline takes a report.json")?.into())
            }
            other => bail!(
                "unknown bench option {other:?}; usage: cargo xtask bench [--quick] [--scale small|medium|large] [--baseline FILE] [--micro]"
            ),
        }
    }
    if o.quick {
        o.scale = "small";
    }
    let phases = if o.quick {
        Phases {
            warmup: Duration::from_secs(1),
            peak: Duration::from_secs(3),
            rate: Duration::from_secs(3),
            concurrency: 16,
            viewers: 8,
        }
    } else {
        Phases {
            warmup: Duration::from_secs(3),
            peak: Duration::from_secs(10),
            rate: Duration::from_secs(10),
            concurrency: 32,
            viewers: 16,
        }
    };
    let root = crate::project_root();
    let out_dir = target_dir(&root).join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let oha = ensure_oha()?;
    let services = Services::start()?;
    let env: BTreeMap<String, String> = services.env().into_iter().collect();
    let database_admin = env["DATABASE_URL"].clone();
    let redis = env
        .get("REDIS_URL")
        .cloned()
        .context("the bench needs redis")?;

    // `--quick` is a smoke test of the whole bench (CI runs it): it builds the dev
    // profile, whose dependencies the tests have already built, instead of a fat-LTO
    // release build; its numbers say so in the report and are not comparable.
    let profile = if o.quick { "debug" } else { "release" };
    eprintln!("building the {profile} server (with the bench-only static route)");
    let mut build = crate::cargo();
    build.args(["build", "-p", "quiver", "--features", "bench-routes"]);
    if !o.quick {
        build.arg("--release");
    }
    crate::run(&mut build)?;
    let bin = target_dir(&root).join(profile).join("quiver");
    let bin = copy_aside(&bin, &out_dir.join("quiver-mimalloc"))?;
    let system_bin = if o.quick {
        None
    } else {
        eprintln!("building the release server with the system allocator (ablation)");
        crate::run(crate::cargo().args([
            "build",
            "--release",
            "-p",
            "quiver",
            "--no-default-features",
            "--features",
            "bench-routes",
        ]))?;
        let b = target_dir(&root).join("release/quiver");
        Some(copy_aside(&b, &out_dir.join("quiver-system"))?)
    };

    let db = database(&bin, &database_admin, o.scale)?;
    let mut fixture = Fixture::pick(&db, &bin, phases.viewers)?;
    let started = Instant::now();
    {
        // Each viewer's first pages, with the cursors a client would follow: the feed
        // scenarios cycle through them.
        let server = Server::start(&bin, &db, &redis, &[], true)?;
        for v in fixture.viewers.clone() {
            let pages = feed_pages(&server, &fixture.tokens[&v], 5)?;
            fixture.feed_pages.insert(v, pages);
        }
    }
    let runs = scenarios(&fixture, o.quick, system_bin.is_some());
    let bar = ProgressBar::new(runs.len() as u64 + 3);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template"),
    );
    let mut results = Vec::new();
    let mut page_bytes = 0.0;
    for run in &runs {
        bar.set_message(run.name.clone());
        let binary = if run.system_allocator {
            system_bin.as_ref().expect("built when needed")
        } else {
            &bin
        };
        let server = Server::start(binary, &db, &redis, &run.flags, run.redis)?;
        let r = measure(&oha, &server, run, &fixture, &phases)?;
        if run.name == "warm" {
            page_bytes = r["bytes_per_request"].as_f64().unwrap_or(0.0);
        }
        results.push(r);
        bar.inc(1);
    }
    bar.set_message("limit: static body");
    let static_limit = {
        // The warm scenario's streams (the same processes, connections and headers),
        // each asking for a static body of the warm pages' mean size.
        let server = Server::start(&bin, &db, &redis, &[], true)?;
        let path = format!("/bench/static?bytes={}", page_bytes.max(2.0) as usize);
        let streams = fixture.as_viewers(|_| vec![path.clone()]);
        measure(
            &oha,
            &server,
            &Run::new("static", streams),
            &fixture,
            &phases,
        )?
    };
    bar.inc(1);
    bar.set_message("limit: pgbench");
    let pg_limit = pgbench(&db, &fixture, &phases)?;
    bar.inc(1);
    bar.set_message("limit: redis-benchmark");
    let redis_limit = redis_benchmark(&redis, &phases)?;
    bar.inc(1);
    bar.finish_with_message(format!("done in {:.0?}", started.elapsed()));

    let report = report(
        &o,
        fixture.viewers.len(),
        &results,
        &static_limit,
        pg_limit,
        redis_limit,
        started.elapsed(),
    );
    std::fs::write(
        out_dir.join("report.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    let md = markdown(&report);
    std::fs::write(out_dir.join("report.md"), &md)?;
    crate::plots::latency_curves(&report, &out_dir.join("latency.svg"))?;
    crate::plots::ablations(&report, &out_dir.join("ablations.svg"))?;
    println!("{md}");
    eprintln!(
        "wrote {}/report.json, report.md, latency.svg and ablations.svg",
        out_dir.display()
    );
    if let Some(base) = &o.baseline {
        compare(&report, base)?;
    }
    Ok(())
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

fn copy_aside(bin: &Path, to: &Path) -> Result<PathBuf> {
    std::fs::copy(bin, to).with_context(|| format!("cannot copy {}", bin.display()))?;
    Ok(to.to_path_buf())
}

/// oha on PATH or in cargo's bin folder; installed with `cargo install` when missing.
fn ensure_oha() -> Result<PathBuf> {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|h| h.join("bin/oha"));
    let found = services::which("oha").or(cargo_bin.clone().filter(|p| p.is_file()));
    if let Some(p) = found {
        return Ok(p);
    }
    eprintln!("oha not found: installing it with cargo install (once)");
    crate::run(crate::cargo().args(["install", "oha", "--version", "^1.16", "--locked"]))?;
    services::which("oha")
        .or(cargo_bin.filter(|p| p.is_file()))
        .context("oha was installed but is not on PATH or in ~/.cargo/bin")
}

/// A fresh database for this run, copied from the seeded database of its scale (seeded
/// once, and again only when its seed changes): the scenarios write (posts, follows), and
/// no run may read what an earlier one wrote.
fn database(bin: &Path, admin: &str, scale: &str) -> Result<String> {
    let (users, posts, follows, depth) = match scale {
        "small" => (2_000, 10, 20, 100),
        "medium" => (100_000, 10, 30, 200),
        _ => (300_000, 20, 40, 200),
    };
    let seeded = format!("quiver_bench_e2e_{scale}_seed");
    let name = format!("quiver_bench_e2e_{scale}");
    let marker = format!("quiver bench {users} {posts} {follows} {depth} v1");
    let url_of = |db: &str| format!("{}/{db}", admin.rsplit_once('/').map_or(admin, |(b, _)| b));
    let migrate = |db: &str, args: &[String]| -> Result<()> {
        let status = Command::new(bin)
            .args(args)
            .env("DATABASE_URL", url_of(db))
            .env("RUST_LOG", "warn")
            .status()?;
        if !status.success() {
            bail!("quiver {} failed on {db}", args[0]);
        }
        Ok(())
    };
    let current = services::psql_query(
        admin,
        &format!(
            "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = '{seeded}'"
        ),
    )?;
    if current.trim() == marker {
        eprintln!("copying {seeded} (seeded with {users} users) to {name}");
    } else {
        eprintln!("seeding {seeded}: {users} users, {posts} posts each (once; later runs copy it)");
        services::psql(
            admin,
            &format!("DROP DATABASE IF EXISTS {seeded} WITH (FORCE)"),
        )?;
        services::psql(admin, &format!("CREATE DATABASE {seeded}"))?;
        migrate(&seeded, &["migrate".to_owned()])?;
        migrate(
            &seeded,
            &[
                "seed".to_owned(),
                "--users".to_owned(),
                users.to_string(),
                "--posts-per-user".to_owned(),
                posts.to_string(),
                "--follows-per-user".to_owned(),
                follows.to_string(),
                "--timeline-depth".to_owned(),
                depth.to_string(),
            ],
        )?;
        services::psql(
            admin,
            &format!("COMMENT ON DATABASE {seeded} IS '{marker}'"),
        )?;
    }
    services::psql(
        admin,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )?;
    services::psql(
        admin,
        &format!("CREATE DATABASE {name} WITH TEMPLATE = {seeded} STRATEGY = FILE_COPY"),
    )?;
    // A migration newer than the seed applies to the copy.
    migrate(&name, &["migrate".to_owned()])?;
    Ok(url_of(&name))
}

/// The viewers and ids the scenarios use, picked from the seeded data.
struct Fixture {
    /// A fixed set of viewers spread over the follow graph: the first of each equal slice
    /// of everyone who follows at least ten accounts, by followee count (so the one who
    /// follows the most comes first).
    viewers: Vec<i64>,
    /// Customers with active orders, most orders first.
    customers: Vec<i64>,
    /// Profiles to read and accounts to follow.
    users: Vec<i64>,
    /// Bearer tokens of every viewer and customer.
    tokens: BTreeMap<i64, String>,
    /// Per viewer, the paths of their first feed pages, each with the cursor of the one
    /// before, as a client following `next_page` sends them.
    feed_pages: BTreeMap<i64, Vec<String>>,
}

impl Fixture {
    fn pick(db: &str, bin: &Path, viewers: usize) -> Result<Self> {
        let ids = |sql: &str| -> Result<Vec<i64>> {
            let v: Vec<i64> = services::psql_query(db, sql)?
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if v.is_empty() {
                bail!("no row for {sql}");
            }
            Ok(v)
        };
        // Slice 1 starts with whoever follows the most accounts.
        let picked = ids(&format!(
            "SELECT DISTINCT ON (slice) follower_id FROM (
               SELECT follower_id, n, ntile({viewers}) OVER (ORDER BY n DESC, follower_id) AS slice
               FROM (SELECT follower_id, count(*) AS n FROM follows GROUP BY follower_id
                     HAVING count(*) >= 10) c) s
             ORDER BY slice, n DESC, follower_id"
        ))?;
        let customers = ids(&format!(
            "SELECT customer_id FROM orders WHERE status = 'active'
             GROUP BY customer_id ORDER BY count(*) DESC, customer_id LIMIT {viewers}"
        ))?;
        let users = ids("SELECT id FROM users ORDER BY id LIMIT 500")?;
        let tokens = picked
            .iter()
            .chain(&customers)
            .map(|u| Ok((*u, mint(bin, *u)?)))
            .collect::<Result<_>>()?;
        Ok(Self {
            viewers: picked,
            customers,
            users,
            tokens,
            feed_pages: BTreeMap::new(),
        })
    }

    /// One stream per viewer, sending `paths(viewer)` with the viewer's token; equal shares.
    fn as_viewers(&self, paths: impl Fn(i64) -> Vec<String>) -> Vec<Stream> {
        self.viewers
            .iter()
            .map(|v| Stream::get(Some(*v), paths(*v)))
            .collect()
    }

    /// Every viewer walking their own first feed pages.
    fn feeds(&self) -> Vec<Stream> {
        self.as_viewers(|v| self.feed_pages[&v].clone())
    }
}

/// Walks `pages` pages of the feed with `token`, returning each page's path.
fn feed_pages(server: &Server, token: &str, pages: usize) -> Result<Vec<String>> {
    let mut paths = vec!["/api/v1/feed?limit=20".to_owned()];
    while paths.len() < pages {
        let out = Command::new("curl")
            .args(["-sf", "-H", &format!("Authorization: Bearer {token}")])
            .arg(format!(
                "http://{}{}",
                server.api,
                paths.last().expect("one")
            ))
            .output()
            .context("cannot run curl")?;
        let page: Value = serde_json::from_slice(&out.stdout).context("the feed answers json")?;
        match page["next_page"].as_str() {
            Some(c) => paths.push(format!("/api/v1/feed?limit=20&cursor={c}")),
            None => break,
        }
    }
    Ok(paths)
}

/// One measured configuration: server flags and the streams oha sends.
struct Run {
    name: String,
    /// `scenario` (compared to a limit) or `ablation:<name>:<before|after>`.
    group: String,
    flags: Vec<String>,
    redis: bool,
    system_allocator: bool,
    streams: Vec<Stream>,
    /// Whether to run the fixed-rate phase (latency percentiles).
    at_rate: bool,
}

impl Run {
    fn new(name: &str, streams: Vec<Stream>) -> Self {
        Self {
            name: name.to_owned(),
            group: "scenario".to_owned(),
            flags: Vec::new(),
            redis: true,
            system_allocator: false,
            streams,
            at_rate: true,
        }
    }
    fn flags(mut self, flags: &[&str]) -> Self {
        self.flags = flags.iter().map(|f| (*f).to_owned()).collect();
        self
    }
    fn ablation(mut self, name: &str, side: &str) -> Self {
        self.group = format!("ablation:{name}:{side}");
        self.name = format!("{name} {side}");
        self.at_rate = false;
        self
    }
    fn writes(&self) -> bool {
        self.streams.iter().any(|s| s.kind == Kind::Write)
    }
}

/// Each viewer in `by` writing as themselves: a post, or follows of `f.users`.
fn writers(f: &Fixture, by: &[i64], post: bool, weight: f64) -> Vec<Stream> {
    by.iter()
        .map(|v| {
            let (method, paths, body, expect): (_, _, _, &'static [u16]) = if post {
                (
                    "POST",
                    vec!["/api/v1/posts".to_owned()],
                    Some(
                        r#"{"kind": "post", "body": "a bench post", "tags": ["bench"]}"#.to_owned(),
                    ),
                    &[201],
                )
            } else {
                (
                    "PUT",
                    f.users
                        .iter()
                        .filter(|u| *u != v)
                        .map(|u| format!("/api/v1/users/{u}/follow"))
                        .collect(),
                    None,
                    // A follow that exists already is refused with 409, by design.
                    &[204, 409],
                )
            };
            Stream {
                kind: Kind::Write,
                user: Some(*v),
                method,
                paths,
                body,
                weight,
                expect,
            }
        })
        .collect()
}

fn scenarios(f: &Fixture, quick: bool, allocator: bool) -> Vec<Run> {
    let feeds = f.feeds();
    let profiles: Vec<String> = f
        .users
        .iter()
        .map(|u| format!("/api/v1/users/{u}"))
        .collect();
    // The mixed scenario: 95 % of requests are every viewer reading their feed, 5 %
    // writes, half posts and half follows, each by two of the viewers.
    let mut mixed = feeds.clone();
    let share = 0.95 / mixed.len() as f64;
    mixed.iter_mut().for_each(|s| s.weight = share);
    let n = f.viewers.len();
    let by: Vec<i64> = f.viewers.iter().rev().take(4).copied().collect();
    let (post_by, follow_by) = by.split_at(by.len() / 2);
    let wshare = |k: &[i64]| 0.025 / k.len().max(1) as f64;
    mixed.extend(writers(f, post_by, true, wshare(post_by)));
    mixed.extend(writers(f, follow_by, false, wshare(follow_by)));
    // Reads first, then the ablations (also reads), and the scenarios that write last, so
    // that every read sees the seeded data and the cursors recorded from it.
    let mut runs = vec![
        Run::new("warm", feeds.clone()),
        Run::new("l2", feeds.clone()).flags(&["--l1-mib", "0"]),
        Run::new("cold", feeds.clone()).flags(&["--no-cache"]),
        Run::new(
            "discover",
            f.as_viewers(|_| vec!["/api/v1/feed/discover?limit=20&seed=7".to_owned()]),
        ),
        Run::new("profile", f.as_viewers(|_| profiles.clone())),
        Run::new(
            "orders",
            f.customers
                .iter()
                .map(|c| {
                    Stream::get(
                        Some(*c),
                        vec![format!("/api/v1/customers/{c}/orders?status=active")],
                    )
                })
                .collect(),
        ),
    ];
    let writes = [
        Run::new("mixed", mixed),
        Run::new("write: create post", writers(f, &f.viewers, true, 1.0)),
        Run::new(
            "write: follow",
            writers(f, &f.viewers[..n.min(8)], false, 1.0),
        ),
    ];
    // Ablations: the same feed reads, the optimization off ("before") and on ("after").
    let ablate = |name: &str, before: &[&str], after: &[&str]| {
        [
            Run::new(name, feeds.clone())
                .flags(before)
                .ablation(name, "before"),
            Run::new(name, feeds.clone())
                .flags(after)
                .ablation(name, "after"),
        ]
    };
    runs.extend(ablate("home heads", &["--home-head", "0"], &[]));
    runs.extend(ablate("L1 cache", &["--l1-mib", "0"], &[]));
    runs.extend(ablate(
        "L2 cache",
        &["--l1-mib", "0", "--no-cache"],
        &["--l1-mib", "0"],
    ));
    runs.extend(ablate("fragments", &["--no-fragments"], &[]));
    runs.extend(ablate("serializer", &["--serializer", "serde-json"], &[]));
    if !quick {
        runs.extend(ablate(
            "coalescing",
            &["--no-cache", "--no-coalesce"],
            &["--no-cache"],
        ));
        runs.extend(ablate(
            "prefetch",
            &["--l1-mib", "0", "--prefetch-workers", "0"],
            &["--l1-mib", "0"],
        ));
    }
    if allocator {
        let mut before = Run::new("allocator", feeds.clone()).ablation("allocator", "before");
        before.system_allocator = true;
        runs.push(before);
        runs.push(Run::new("allocator", feeds).ablation("allocator", "after"));
    }
    runs.extend(writes);
    runs
}

/// A `quiver serve` process for one run.
struct Server {
    child: Child,
    api: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(
        bin: &Path,
        db: &str,
        redis: &str,
        flags: &[String],
        with_redis: bool,
    ) -> Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--log-format", "json", "--slow-request-ms", "60000"])
        .args(["--rate-per-second", "1000000", "--rate-burst", "1000000"])
        .args(["--max-concurrency", "4096", "--queue-timeout-ms", "1000"])
        .args(flags)
        .env("DATABASE_URL", db)
        .env("QUIVER_JWT_SECRET", SECRET)
        .env(
            "QUIVER_REDIS_NAMESPACE",
            format!("bench-{}", std::process::id()),
        )
        .env("RUST_LOG", "warn,quiver=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if with_redis {
            cmd.env("REDIS_URL", redis);
        } else {
            cmd.env_remove("REDIS_URL");
        }
        let mut child = cmd.spawn().context("cannot start quiver serve")?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("quiver is serving") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .context("quiver serve did not start")?;
        let log: Value = serde_json::from_str(&line)?;
        let addr = |k: &str| -> Result<SocketAddr> {
            log["fields"][k]
                .as_str()
                .context("serving line has addresses")?
                .parse()
                .context("an address")
        };
        Ok(Self {
            api: addr("api")?,
            admin: addr("admin")?,
            child,
        })
    }

    /// utime + stime of the process, seconds, and its resident set, bytes (from /proc).
    fn usage(&self) -> (f64, u64) {
        let pid = self.child.id();
        let ticks = 100.0; // USER_HZ on Linux
        let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let after = s.rsplit_once(')')?.1;
                let f: Vec<&str> = after.split_whitespace().collect();
                Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks)
            })
            .unwrap_or(0.0);
        let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
            * 1024;
        (cpu, rss)
    }

    fn metrics(&self) -> String {
        Command::new("curl")
            .args(["-s", &format!("http://{}/metrics", self.admin)])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

/// A bearer token for `user`, minted by the binary under test (`quiver token`).
fn mint(bin: &Path, user: i64) -> Result<String> {
    let out = Command::new(bin)
        .args(["token", "--user", &user.to_string(), "--ttl", "6h"])
        .env("QUIVER_JWT_SECRET", SECRET)
        .output()
        .context("cannot run quiver token")?;
    if !out.status.success() {
        bail!(
            "quiver token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Warm-up, then the peak phase (fixed concurrency) and, for scenarios, the open-loop
/// phase at half the peak rate; CPU and RSS of the server from `/proc`, cache outcomes
/// and event lag from its `/metrics`.
fn measure(oha: &Path, server: &Server, run: &Run, f: &Fixture, ph: &Phases) -> Result<Value> {
    let dir = std::env::temp_dir();
    let t = Target {
        oha,
        api: server.api,
        tokens: &f.tokens,
        dir: &dir,
    };
    let closed = Load::Concurrency(ph.concurrency);
    load::phase(&t, &run.name, &run.streams, ph.warmup, closed)?;
    let (cpu0, _) = server.usage();
    let peak = load::phase(&t, &run.name, &run.streams, ph.peak, closed)?;
    let (cpu1, rss) = server.usage();
    let peak_requests = peak["requests"].as_f64().unwrap_or(1.0).max(1.0);
    let mut result = json!({
        "name": run.name,
        "group": run.group,
        "flags": run.flags,
        "streams": run.streams.len(),
        "peak": peak,
        "bytes_per_request": peak["bytes_per_request"],
        "cpu_us_per_request": (cpu1 - cpu0) * 1e6 / peak_requests,
        "rss_bytes": rss,
    });
    if run.at_rate {
        let rate = (result["peak"]["rps"].as_f64().unwrap_or(0.0) / 2.0).max(1.0);
        let at_rate = load::phase(
            &t,
            &run.name,
            &run.streams,
            ph.rate,
            Load::Rate(rate, ph.concurrency),
        )?;
        result["rate"] = json!(rate);
        result["at_rate"] = at_rate;
    }
    let metrics = server.metrics();
    result["cache"] = cache_outcomes(&metrics);
    if run.writes() {
        result["events"] = event_lag(server)?;
    }
    Ok(result)
}

/// Cache outcome totals from `/metrics`.
fn cache_outcomes(metrics: &str) -> Value {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("quiver_cache_lookups_total{"))
    {
        let outcome = line
            .split("outcome=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?");
        let n: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *out.entry(outcome.to_owned()).or_default() += n;
    }
    json!(out)
}

/// Waits for the event pipeline to drain, then reads the commit-to-effect lag histogram
/// (percentiles as the upper bound of the bucket they fall in) and the pipeline counters.
fn event_lag(server: &Server) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut metrics;
    loop {
        metrics = server.metrics();
        let backlog = metric(&metrics, "quiver_outbox_backlog").unwrap_or(0.0);
        let relayed = metric(&metrics, "quiver_events_total{stage=\"relayed\"}").unwrap_or(0.0);
        let handled = metric(&metrics, "quiver_events_total{stage=\"handled\"}").unwrap_or(0.0);
        if (backlog == 0.0 && handled >= relayed) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("quiver_event_lag_seconds_bucket{"))
    {
        let le = line.split("le=\"").nth(1).and_then(|r| r.split('"').next());
        let n: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if let Some(le) = le.and_then(|l| l.parse::<f64>().ok()) {
            *buckets.entry((le * 1e6) as u64).or_default() += n;
        }
    }
    let total = buckets.values().copied().fold(0.0, f64::max);
    let quantile = |q: f64| {
        buckets
            .iter()
            .find(|(_, n)| **n >= q * total)
            .map(|(le, _)| *le as f64 / 1000.0)
    };
    Ok(json!({
        "handled": metric(&metrics, "quiver_events_total{stage=\"handled\"}"),
        "dead_lettered": metric(&metrics, "quiver_events_total{stage=\"dead_lettered\"}"),
        "lag_p50_ms_at_most": quantile(0.5),
        "lag_p99_ms_at_most": quantile(0.99),
    }))
}

fn metric(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// pgbench running the statements of one cold home-feed first page as one transaction,
/// one script per viewer of the fixture, chosen at random per transaction.
fn pgbench(db: &str, f: &Fixture, ph: &Phases) -> Result<Value> {
    let bin = services::which("pgbench")
        .or_else(|| services::postgres_bindir().map(|d| d.join("pgbench")))
        .filter(|p| p.is_file())
        .context("pgbench not found: install postgresql-contrib or the server package")?;
    let list = |v: &[i64]| v.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let mut files = Vec::new();
    for &v in &f.viewers {
        let page = services::psql_query(
            db,
            &format!(
                "SELECT t.post_id || ',' || p.author_id FROM home_timeline t JOIN posts p ON p.id = t.post_id
                 WHERE t.user_id = {v} ORDER BY t.created_at DESC, t.post_id DESC LIMIT 21"
            ),
        )?;
        let pairs: Vec<(i64, i64)> = page
            .lines()
            .filter_map(|l| {
                let (a, b) = l.trim().split_once(',')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            })
            .collect();
        let mut page_authors: Vec<i64> = pairs.iter().map(|p| p.1).collect();
        page_authors.sort_unstable();
        page_authors.dedup();
        let page_posts: Vec<i64> = pairs.iter().map(|p| p.0).collect();
        let (posts, authors) = (list(&page_posts), list(&page_authors));
        let viewers = list(&vec![v; page_authors.len()]);
        let script = format!(
            "SELECT ARRAY(SELECT followee_id FROM follows WHERE follower_id = {v}), ARRAY(SELECT blocked_id FROM blocks WHERE blocker_id = {v}), ARRAY(SELECT blocker_id FROM blocks WHERE blocked_id = {v});
SELECT post_id AS id, created_at FROM home_timeline WHERE user_id = {v} AND (created_at, post_id) < ('9999-12-31'::timestamptz, 9223372036854775807) ORDER BY created_at DESC, post_id DESC LIMIT 21;
SELECT id, author_id, kind, body, price_cents, currency, product_url, created_at FROM posts WHERE id = ANY('{{{posts}}}'::bigint[]);
SELECT id, post_id, kind, url, width, height, size_bytes, position FROM media WHERE post_id = ANY('{{{posts}}}'::bigint[]) ORDER BY post_id, position;
SELECT post_id, tag FROM post_tags WHERE post_id = ANY('{{{posts}}}'::bigint[]) ORDER BY post_id, tag;
SELECT id, handle, display_name, bio, avatar_url, created_at FROM users WHERE id = ANY('{{{authors}}}'::bigint[]);
SELECT id, verified, creator, private FROM users WHERE id = ANY('{{{authors}}}'::bigint[]);
SELECT f.follower_id, f.followee_id, f.created_at FROM follows f JOIN UNNEST('{{{authors}}}'::bigint[], '{{{viewers}}}'::bigint[]) AS k(follower_id, followee_id) USING (follower_id, followee_id);
"
        );
        let file =
            std::env::temp_dir().join(format!("quiver-cold-page-{}-{v}.sql", std::process::id()));
        std::fs::write(&file, script)?;
        files.push(file);
    }
    let out = Command::new(bin)
        .args([
            "-n",
            "-M",
            "prepared",
            "-j",
            "2",
            "-c",
            &ph.concurrency.to_string(),
            "-T",
        ])
        .arg(ph.peak.as_secs().to_string())
        .args(
            files
                .iter()
                .flat_map(|f| [std::ffi::OsStr::new("-f"), f.as_os_str()]),
        )
        .arg(db)
        .output()
        .context("cannot run pgbench")?;
    for f in &files {
        let _ = std::fs::remove_file(f);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps ="))
        .and_then(|l| l.split_whitespace().nth(2)?.parse::<f64>().ok())
        .with_context(|| {
            format!(
                "pgbench printed no tps: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    Ok(json!({"pages_per_second": tps, "statements_per_page": 8, "viewers": files.len()}))
}

/// redis-benchmark running the MGET the L2 path sends per cache batch (20 keys with
/// their version keys).
fn redis_benchmark(redis: &str, ph: &Phases) -> Result<Value> {
    let bin = services::which("redis-benchmark")
        .context("redis-benchmark not found (Debian: redis-tools)")?;
    let hp = redis
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:6379");
    let (host, port) = hp.rsplit_once(':').unwrap_or((hp, "6379"));
    let keys: Vec<String> = (0..20)
        .flat_map(|i| [format!("bench:post:{i}"), format!("bench:post:{i}:v")])
        .collect();
    let n = if ph.peak.as_secs() < 5 {
        50_000
    } else {
        200_000
    };
    let out = Command::new(bin)
        .args([
            "-h",
            host,
            "-p",
            port,
            "-c",
            &ph.concurrency.to_string(),
            "-n",
            &n.to_string(),
        ])
        .args(["--csv", "MGET"])
        .args(&keys)
        .output()
        .context("cannot run redis-benchmark")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .filter(|l| l.contains("MGET"))
        .find_map(|l| l.split(',').nth(1)?.trim_matches('"').parse::<f64>().ok())
        .with_context(|| format!("redis-benchmark printed no rate: {text}"))?;
    Ok(json!({"mget_per_second": rps, "keys_per_mget": 40, "mgets_per_page": 7}))
}

fn report(
    o: &Options,
    viewers: usize,
    results: &[Value],
    static_limit: &Value,
    pg: Value,
    redis: Value,
    took: Duration,
) -> Value {
    let static_rps = static_limit["peak"]["rps"].as_f64().unwrap_or(0.0);
    let pg_pages = pg["pages_per_second"].as_f64().unwrap_or(0.0);
    let redis_pages = redis["mget_per_second"].as_f64().unwrap_or(0.0) / 7.0;
    let mut scenarios = Vec::new();
    let mut ablations: BTreeMap<String, (Option<f64>, Option<f64>)> = BTreeMap::new();
    for r in results {
        let group = r["group"].as_str().unwrap_or("");
        let rps = r["peak"]["rps"].as_f64().unwrap_or(0.0);
        if let Some(rest) = group.strip_prefix("ablation:") {
            let (name, side) = rest.rsplit_once(':').unwrap_or((rest, "after"));
            let e = ablations.entry(name.to_owned()).or_default();
            if side == "before" {
                e.0 = Some(rps);
            } else {
                e.1 = Some(rps);
            }
            continue;
        }
        let name = r["name"].as_str().unwrap_or("");
        let (limit_name, limit) = match name {
            "cold" => ("pgbench, same statements", pg_pages),
            "l2" => ("redis-benchmark MGET / 7 per page", redis_pages),
            _ => ("static body, same size", static_rps),
        };
        let mut s = r.clone();
        s["limit"] = json!(limit_name);
        s["ratio_to_limit"] = json!(if limit > 0.0 { rps / limit } else { 0.0 });
        scenarios.push(s);
    }
    let ablations: Vec<Value> = ablations
        .into_iter()
        .map(|(name, (before, after))| {
            let factor = match (before, after) {
                (Some(b), Some(a)) if b > 0.0 => Some(a / b),
                _ => None,
            };
            json!({"name": name, "before_rps": before, "after_rps": after, "factor": factor})
        })
        .collect();
    let find = |name: &str| scenarios.iter().find(|s| s["name"] == name);
    let mut targets = Vec::new();
    if let Some(w) = find("warm") {
        let ratio = w["ratio_to_limit"].as_f64().unwrap_or(0.0);
        targets.push(
            json!({"target": "warm home feed ≥ 50 % of the static-body limit",
            "measured": format!("{:.0} %", ratio * 100.0), "met": ratio >= 0.5}),
        );
        let p99 = w["at_rate"]["p99_ms"].as_f64().unwrap_or(f64::INFINITY);
        targets.push(
            json!({"target": "warm home feed P99 < 5 ms at half the peak rate",
            "measured": format!("{p99:.2} ms"), "met": p99 < 5.0}),
        );
    }
    if let Some(c) = find("cold") {
        let ratio = c["ratio_to_limit"].as_f64().unwrap_or(0.0);
        targets.push(
            json!({"target": "cold path ≥ 50 % of pgbench on the same statements",
            "measured": format!("{:.0} %", ratio * 100.0), "met": ratio >= 0.5}),
        );
    }
    for a in &ablations {
        if let Some(f) = a["factor"].as_f64() {
            targets.push(json!({"target": format!("{} is not slower than without it", a["name"].as_str().unwrap_or("")),
                "measured": format!("{f:.2}×"), "met": f >= 1.0}));
        }
    }
    json!({
        "targets": targets,
        "date": chrono_like_now(),
        "machine": machine(),
        "scale": o.scale,
        "quick": o.quick,
        "build": if o.quick { "debug (smoke test: numbers not comparable)" } else { "release" },
        "took_seconds": took.as_secs(),
        "viewers": viewers,
        "limits": {"static_body": static_limit, "pgbench": pg, "redis_benchmark": redis},
        "scenarios": scenarios,
        "ablations": ablations,
        "tolerance": TOLERANCE,
    })
}

fn chrono_like_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_owned();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    json!({"cpu": model, "cores": cores, "memory_gib": mem / 1024 / 1024})
}

fn fmt(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or("–".to_owned(), |x| format!("{x:.digits$}"))
}

fn markdown(r: &Value) -> String {
    let mut md = format!(
        "# quiver bench ({} scale, {} build), {}\n\nMachine: {} × {} cores, {} GiB. Load generator: oha, one process per stream (each viewer of the fixed set of {} is one, and each writer), on the same cores, compression off. Ratios are from this run only.\n\n",
        r["scale"].as_str().unwrap_or(""),
        r["build"].as_str().unwrap_or(""),
        r["date"].as_str().unwrap_or(""),
        r["machine"]["cpu"].as_str().unwrap_or("?"),
        r["machine"]["cores"],
        r["machine"]["memory_gib"],
        r["viewers"],
    );
    md.push_str("## Scenarios\n\nPeak: fixed concurrency. P50–P99.9: open loop at half the peak rate, latency corrected.\n\n");
    md.push_str("| scenario | streams | peak RPS | P50 ms | P90 ms | P99 ms | P99.9 ms | unexpected status | CPU µs/req | RSS MB | limit | ratio |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for s in r["scenarios"].as_array().into_iter().flatten() {
        let a = &s["at_rate"];
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            s["name"].as_str().unwrap_or(""),
            s["streams"],
            fmt(&s["peak"]["rps"], 0),
            fmt(&a["p50_ms"], 2),
            fmt(&a["p90_ms"], 2),
            fmt(&a["p99_ms"], 2),
            fmt(&a["p999_ms"], 2),
            s["peak"]["unexpected"].as_u64().unwrap_or(0) + a["unexpected"].as_u64().unwrap_or(0),
            fmt(&s["cpu_us_per_request"], 0),
            s["rss_bytes"]
                .as_f64()
                .map_or("–".into(), |b| format!("{:.0}", b / 1e6)),
            s["limit"].as_str().unwrap_or(""),
            fmt(&s["ratio_to_limit"], 2),
        ));
    }
    let l = &r["limits"];
    md.push_str(&format!(
        "\nLimits measured in the same run: static body {} RPS; pgbench {} cold pages/s (8 statements each); redis-benchmark {} MGET/s of 40 keys.\n",
        fmt(&l["static_body"]["peak"]["rps"], 0),
        fmt(&l["pgbench"]["pages_per_second"], 0),
        fmt(&l["redis_benchmark"]["mget_per_second"], 0),
    ));
    let events: Vec<&Value> = r["scenarios"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s.get("events").is_some())
        .collect();
    if !events.is_empty() {
        md.push_str("\n## Writes and events\n\nAt half the peak rate. In the mixed scenario, the writes' own percentiles and their share of its requests (5 % by rate).\n\n| scenario | write share | write P50 ms | write P99 ms | events handled | event lag P50 ≤ ms | event lag P99 ≤ ms |\n| --- | --- | --- | --- | --- | --- | --- |\n");
        for s in events {
            let a = &s["at_rate"];
            let (w, share) = if a.get("writes").is_some() {
                (
                    &a["writes"],
                    fmt(&json!(a["write_share"].as_f64().map(|x| x * 100.0)), 1) + " %",
                )
            } else {
                (a, "100 %".to_owned())
            };
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                s["name"].as_str().unwrap_or(""),
                share,
                fmt(&w["p50_ms"], 2),
                fmt(&w["p99_ms"], 2),
                fmt(&s["events"]["handled"], 0),
                fmt(&s["events"]["lag_p50_ms_at_most"], 1),
                fmt(&s["events"]["lag_p99_ms_at_most"], 1),
            ));
        }
    }
    md.push_str("\n## Targets\n\n");
    for t in r["targets"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "- {} {}: {}\n",
            if t["met"].as_bool() == Some(true) {
                "met:"
            } else {
                "NOT met:"
            },
            t["target"].as_str().unwrap_or(""),
            t["measured"].as_str().unwrap_or(""),
        ));
    }
    md.push_str("\n## Ablations (home feed, peak RPS)\n\n| optimization | before | after | factor |\n| --- | --- | --- | --- |\n");
    for a in r["ablations"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {} | {} | {}× |\n",
            a["name"].as_str().unwrap_or(""),
            fmt(&a["before_rps"], 0),
            fmt(&a["after_rps"], 0),
            fmt(&a["factor"], 2),
        ));
    }
    md
}

/// Fails when a ratio (a scenario's ratio to its limit, an ablation's factor) fell more
/// than `TOLERANCE` below the baseline's.
fn compare(report: &Value, baseline: &Path) -> Result<()> {
    let base: Value = serde_json::from_slice(
        &std::fs::read(baseline).with_context(|| format!("cannot read {}", baseline.display()))?,
    )?;
    let ratios = |r: &Value| -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        for s in r["scenarios"].as_array().into_iter().flatten() {
            if let (Some(n), Some(x)) = (s["name"].as_str(), s["ratio_to_limit"].as_f64()) {
                m.insert(format!("scenario {n}"), x);
            }
        }
        for a in r["ablations"].as_array().into_iter().flatten() {
            if let (Some(n), Some(x)) = (a["name"].as_str(), a["factor"].as_f64()) {
                m.insert(format!("ablation {n}"), x);
            }
        }
        m
    };
    let (now, then) = (ratios(report), ratios(&base));
    let mut regressions = Vec::new();
    for (k, old) in &then {
        if let Some(new) = now.get(k)
            && *new < old * (1.0 - TOLERANCE)
        {
            regressions.push(format!("{k}: {new:.2} against {old:.2}"));
        }
    }
    if regressions.is_empty() {
        eprintln!(
            "no ratio regressed more than {:.0} % against {}",
            TOLERANCE * 100.0,
            baseline.display()
        );
        Ok(())
    } else {
        bail!(
            "ratios regressed more than {:.0} % against {}:\n  {}",
            TOLERANCE * 100.0,
            baseline.display(),
            regressions.join("\n  ")
        )
    }
}
