//! `cargo xtask bench`: the release server measured end to end with a real load generator
//! (one wrk process sending every viewer's requests of a fixed set: `load.rs`), side by
//! side with the machine's own limits measured in the same run (the same server returning
//! a static body, pgbench running the cold path's SQL, redis-benchmark running the L2
//! path's MGET), plus ablations, each a configuration of one binary. The server's CPU per
//! request is the headline, as a ratio to the static body's; the generator's CPU is
//! reported beside it. `--soak` runs the warm feed at half its peak rate for minutes and
//! reports CPU per request and RSS per minute.
//! Writes `target/bench/report.{json,md}` (`soak.{json,md}`) and SVG plots; `--baseline`
//! compares ratios.

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
    /// `--soak`: minutes of the warm feed at half its peak rate, instead of the bench.
    soak: Option<u64>,
    /// `--no-pgo`: skip the PGO build and its ablation (the full bench has them).
    pgo: bool,
}

/// `--soak` without `--soak-minutes`.
const SOAK_MINUTES: u64 = 30;
/// A run's throughput is the server's only when the load generator, on the same cores,
/// used no more CPU than the server: a busier generator is the bottleneck.
const GENERATOR_CPU_MAX: f64 = 1.0;

/// How long each phase runs.
struct Phases {
    warmup: Duration,
    peak: Duration,
    rate: Duration,
    /// Connections in all, shared by the streams.
    concurrency: u32,
    /// How many viewers the feed scenarios load (one stream each).
    viewers: usize,
}

pub(crate) fn bench(args: &[String]) -> Result<()> {
    let mut o = Options {
        quick: false,
        scale: "medium",
        baseline: None,
        soak: None,
        pgo: true,
    };
    let mut soak_minutes = None;
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
            "--soak" => o.soak = Some(SOAK_MINUTES),
            "--no-pgo" => o.pgo = false,
            "--soak-minutes" => {
                let n: u64 = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .context("--soak-minutes takes a whole number of minutes above zero")?;
                soak_minutes = Some(n);
            }
            other => bail!(
                "unknown bench option {other:?}; usage: cargo xtask bench [--quick] [--scale small|medium|large] [--baseline FILE] [--soak [--soak-minutes N]] [--no-pgo] [--micro]"
            ),
        }
    }
    if let Some(n) = soak_minutes {
        if o.soak.is_none() {
            bail!("--soak-minutes needs --soak");
        }
        o.soak = Some(n);
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
    // `--quick` is a smoke test of the whole bench (CI runs it): it builds the dev
    // profile, whose dependencies the tests have already built, instead of a fat-LTO
    // release build; its numbers say so in the report and are not comparable.
    let profile = if o.quick { "debug" } else { "release" };
    eprintln!("building the {profile} server (with the bench-only static route)");
    let mut build = crate::cargo();
    build.args(["build", "-p", "quiver", "--features", "bench-routes"]);
    // The release build has a target directory of its own: in `target/release` it would
    // replace the server a user built there with one that serves the unauthenticated
    // bench route. (The debug one shares `target/debug` with the tests, whose build it
    // reuses: debug builds are not what anyone deploys.)
    let dir = if o.quick {
        target_dir(&root)
    } else {
        build.arg("--release");
        target_dir(&root).join("bench-build")
    };
    build.arg("--target-dir").arg(&dir);
    crate::run(&mut build)?;
    let bin = dir.join(profile).join("quiver");
    let bin = copy_aside(&bin, &out_dir.join("quiver-mimalloc"))?;
    let full = !o.quick && o.soak.is_none();
    let system_bin = if full {
        eprintln!("building the release server with the system allocator (ablation)");
        // A target directory of its own: built into `target/release`, this binary would
        // replace the one `cargo build --release` made there with a different allocator.
        let dir = target_dir(&root).join("bench-system");
        crate::run(
            crate::cargo()
                .args([
                    "build",
                    "--release",
                    "-p",
                    "quiver",
                    "--no-default-features",
                    "--features",
                    "bench-routes",
                    "--target-dir",
                ])
                .arg(&dir),
        )?;
        let b = dir.join("release/quiver");
        Some(copy_aside(&b, &out_dir.join("quiver-system"))?)
    } else {
        None
    };
    let bench = Bench::open()?;
    // The PGO build trains on a database and Redis namespace of its own, so it runs
    // before the bench's database is copied.
    let pgo_bin = if full && o.pgo {
        Some(crate::pgo::build(&bench, o.scale)?)
    } else {
        None
    };
    let Bench {
        services: _services,
        wrk,
        redis,
        ..
    } = &bench;
    let db = database(&bin, &bench.admin, o.scale)?;
    let mut fixture = Fixture::pick(&db, &bin, phases.viewers)?;
    let started = Instant::now();
    {
        // Each viewer's first pages, with the cursors a client would follow: the feed
        // scenarios cycle through them.
        let server = Server::start(&bin, &db, redis, &[], true)?;
        for v in fixture.viewers.clone() {
            let pages = feed_pages(&server, &fixture.tokens[&v], 5)?;
            fixture.feed_pages.insert(v, pages);
        }
    }
    if o.soak.is_some() {
        let report = soak(&o, &out_dir, &bench, &bin, &db, &fixture, &phases)?;
        std::fs::write(
            out_dir.join("soak.json"),
            serde_json::to_vec_pretty(&report)?,
        )?;
        let md = soak_markdown(&report);
        std::fs::write(out_dir.join("soak.md"), &md)?;
        println!("{md}");
        eprintln!("wrote {}/soak.json and soak.md", out_dir.display());
        return Ok(());
    }
    let runs = scenarios(&fixture, o.quick, system_bin.is_some(), pgo_bin.is_some());
    // Reads only, before any run writes: the walkers' cursors stay valid.
    let walk = {
        let server = Server::start(&bin, &db, redis, &[], true)?;
        let n = if o.quick { 24 } else { 128 };
        Walk::pick(&db, &bin, &server, &fixture.viewers, n, o.quick)?
    };
    eprintln!(
        "paused walk: {} viewers, prefetch off, then on",
        walk.pages.len()
    );
    let walk = json!({
        "off": walk.run(wrk, &bin, &db, redis, false)?,
        "on": walk.run(wrk, &bin, &db, redis, true)?,
        "pause_ms": walk.pause.as_millis() as u64,
        "connections": walk.connections,
    });
    let bar = ProgressBar::new(runs.len() as u64 + 3);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template"),
    );
    let mut results = Vec::new();
    let mut page_bytes = 0.0;
    // The runs that write go last, after the flood and the limits, and each waits for
    // the events it caused to take effect before its server stops: a later run must not
    // spend its CPU (nor PostgreSQL's) on an earlier run's fan-out backlog.
    let first_write = runs.iter().position(|r| r.writes()).unwrap_or(runs.len());
    let run_one = |run: &Run, results: &mut Vec<Value>| -> Result<()> {
        bar.set_message(run.name.clone());
        let binary = match run.binary {
            Binary::Default => &bin,
            Binary::SystemAllocator => system_bin.as_ref().expect("built when needed"),
            Binary::Pgo => pgo_bin.as_ref().expect("built when needed"),
        };
        let server = Server::start(binary, &db, redis, &run.flags, run.redis)?;
        let r = measure(wrk, &server, run, &fixture, &phases)?;
        if run.writes() {
            server.drain(Duration::from_secs(180));
        }
        results.push(r);
        bar.inc(1);
        Ok(())
    };
    for run in &runs[..first_write] {
        run_one(run, &mut results)?;
        if run.name == "warm" {
            page_bytes = results
                .last()
                .and_then(|r| r["bytes_per_request"].as_f64())
                .unwrap_or(0.0);
        }
    }
    bar.set_message("connection flood");
    let flood = {
        let warm_rps = results
            .iter()
            .find(|r| r["name"] == "warm")
            .and_then(|r| r["peak"]["rps"].as_f64())
            .unwrap_or(1000.0);
        connection_flood(wrk, &bin, &db, redis, &fixture, &phases, warm_rps / 2.0)?
    };
    bar.set_message("limit: static body");
    let static_limit = {
        // The warm scenario's streams (the same processes, connections and headers),
        // each asking for a static body of the warm pages' mean size.
        let server = Server::start(&bin, &db, redis, &[], true)?;
        let path = format!("/bench/static?bytes={}", page_bytes.max(2.0) as usize);
        let streams = fixture.as_viewers(|_| vec![path.clone()]);
        measure(
            wrk,
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
    let redis_limit = redis_benchmark(redis, &phases)?;
    bar.inc(1);
    for run in &runs[first_write..] {
        run_one(run, &mut results)?;
    }
    bar.finish_with_message(format!("done in {:.0?}", started.elapsed()));

    let mut report = report(
        &o,
        fixture.viewers.len(),
        &results,
        walk,
        Limits {
            static_body: static_limit,
            pg: pg_limit,
            redis: redis_limit,
        },
        started.elapsed(),
    );
    report["connection_flood"] = flood;
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

/// The warm feed at `rate` (open loop) on a server whose connection cap is just above
/// the generator's connections, first alone, then while connections arrive at ten times
/// the cap, held silent (refused past the cap, closed by the server when idle): what
/// admitted clients' latency does under a connection flood, measured in one run.
fn connection_flood(
    wrk: &Path,
    bin: &Path,
    db: &str,
    redis: &str,
    f: &Fixture,
    ph: &Phases,
    rate: f64,
) -> Result<Value> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let cap = ph.concurrency + 16;
    let server = Server::start(
        bin,
        db,
        redis,
        &["--max-connections".into(), cap.to_string()],
        true,
    )?;
    let dir = std::env::temp_dir();
    let t = Target::new(wrk, server.api, &f.tokens, &dir);
    let streams = f.feeds();
    load::phase(
        &t,
        "flood",
        &streams,
        ph.warmup,
        Load::Concurrency(ph.concurrency),
    )?;
    let at_rate = Load::Rate(rate, ph.concurrency);
    let quiet = load::phase(&t, "flood", &streams, ph.rate, at_rate)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (refused, opened) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let flooder = {
        let (stop, refused, opened, api) =
            (stop.clone(), refused.clone(), opened.clone(), server.api);
        std::thread::spawn(move || {
            // After the generator's connections are made (they are admitted).
            std::thread::sleep(Duration::from_millis(500));
            let mut held = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // Ten times the cap at once, then again each time they are gone.
                for _ in 0..cap * 10 {
                    let Ok(s) =
                        std::net::TcpStream::connect_timeout(&api, Duration::from_millis(200))
                    else {
                        continue;
                    };
                    opened.fetch_add(1, Ordering::Relaxed);
                    let _ = s.set_read_timeout(Some(Duration::from_millis(5)));
                    let mut head = [0u8; 12];
                    match std::io::Read::read(&mut &s, &mut head) {
                        Ok(12) if &head == b"HTTP/1.1 503" => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => held.push(s),
                    }
                }
                held.clear();
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let flooded = load::phase(&t, "flood", &streams, ph.rate, at_rate)?;
    stop.store(true, Ordering::Relaxed);
    let _ = flooder.join();
    let side = |v: &Value| {
        json!({"p50_ms": v["p50_ms"], "p99_ms": v["p99_ms"], "rps": v["rps"],
               "unexpected": v["unexpected"]})
    };
    Ok(json!({
        "cap": cap,
        "rate": rate,
        "quiet": side(&quiet),
        "flooded": side(&flooded),
        "connections_opened": opened.load(Ordering::Relaxed),
        "connections_refused": refused.load(Ordering::Relaxed),
    }))
}

/// What the bench and the PGO training share: the services (throwaway ones when the
/// machine's are not reachable), the load generator and the admin database URL.
pub(crate) struct Bench {
    services: Services,
    wrk: PathBuf,
    admin: String,
    redis: String,
}

impl Bench {
    pub(crate) fn open() -> Result<Self> {
        let wrk = ensure_wrk()?;
        let services = Services::start()?;
        let env: BTreeMap<String, String> = services.env().into_iter().collect();
        let admin = env["DATABASE_URL"].clone();
        let redis = env
            .get("REDIS_URL")
            .cloned()
            .context("the bench needs redis")?;
        Ok(Self {
            services,
            wrk,
            admin,
            redis,
        })
    }
}

/// Runs `bin` (an instrumented build) through the bench's own mix, for `cargo xtask pgo`:
/// every scenario that is not an ablation (feeds warm, from L2 and cold, discovery,
/// profiles, orders, the writes), a few seconds each, on a database copied for the
/// training and a Redis namespace of its own. Each server is stopped with SIGTERM, so it
/// writes its profile as it exits.
pub(crate) fn train(bench: &Bench, bin: &Path, scale: &str) -> Result<()> {
    let phases = Phases {
        warmup: Duration::from_secs(1),
        peak: Duration::from_secs(4),
        rate: Duration::ZERO,
        concurrency: 16,
        viewers: 8,
    };
    let db = database(bin, &bench.admin, scale)?;
    let mut fixture = Fixture::pick(&db, bin, phases.viewers)?;
    let ns = format!("pgo-{}", std::process::id());
    {
        let server = Server::start_in(bin, &db, &bench.redis, &[], true, &ns)?;
        for v in fixture.viewers.clone() {
            let pages = feed_pages(&server, &fixture.tokens[&v], 5)?;
            fixture.feed_pages.insert(v, pages);
        }
    }
    let dir = std::env::temp_dir();
    for run in scenarios(&fixture, true, false, false)
        .iter()
        .filter(|r| r.group == "scenario")
    {
        eprintln!("pgo training: {}", run.name);
        let server = Server::start_in(bin, &db, &bench.redis, &run.flags, run.redis, &ns)?;
        let t = Target::new(&bench.wrk, server.api, &fixture.tokens, &dir);
        let closed = Load::Concurrency(phases.concurrency);
        load::phase(&t, &run.name, &run.streams, phases.peak, closed)?;
    }
    Ok(())
}

pub(crate) fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

fn copy_aside(bin: &Path, to: &Path) -> Result<PathBuf> {
    std::fs::copy(bin, to).with_context(|| format!("cannot copy {}", bin.display()))?;
    Ok(to.to_path_buf())
}

/// wrk (built with LuaJIT, as Debian's is) on PATH; installed with apt-get when missing.
fn ensure_wrk() -> Result<PathBuf> {
    if let Some(p) = services::which("wrk") {
        return Ok(p);
    }
    eprintln!("wrk not found: installing the Debian package wrk with apt-get (once)");
    let installed = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "wrk"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success())
        || (Command::new("apt-get")
            .arg("update")
            .status()
            .is_ok_and(|s| s.success())
            && Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "wrk"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success()));
    if !installed {
        bail!("wrk not found and apt-get could not install it: install the Debian package wrk");
    }
    services::which("wrk").context("the Debian package wrk was installed but wrk is not on PATH")
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

/// The paused walk: more viewers than the fixture's, each walking their first pages once
/// as a client who reads a page before asking for the next, on a server with cold caches
/// (a new process and a Redis namespace of its own), with prefetch on and off: the
/// pages after the first are what prefetch can have warmed meanwhile.
struct Walk {
    pages: BTreeMap<i64, Vec<String>>,
    tokens: BTreeMap<i64, String>,
    connections: u32,
    pause: Duration,
}

impl Walk {
    /// `n` viewers who follow at least ten accounts and are not among `skip`, each with
    /// the paths of their first `pages` feed pages (recorded through `server`).
    fn pick(
        db: &str,
        bin: &Path,
        server: &Server,
        skip: &[i64],
        n: usize,
        quick: bool,
    ) -> Result<Self> {
        let pages = if quick { 3 } else { 5 };
        let ids: Vec<i64> = services::psql_query(
            db,
            &format!(
                "SELECT follower_id FROM follows GROUP BY follower_id HAVING count(*) >= 10
                 ORDER BY follower_id DESC LIMIT {}",
                n + skip.len()
            ),
        )?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|v| !skip.contains(v))
        .take(n)
        .collect();
        if ids.is_empty() {
            bail!("no viewer to walk the feed");
        }
        let mut walk = Self {
            pages: BTreeMap::new(),
            tokens: BTreeMap::new(),
            connections: if quick { 4 } else { 16 },
            pause: Duration::from_millis(if quick { 50 } else { 200 }),
        };
        for v in ids {
            let token = mint(bin, v)?;
            walk.pages.insert(v, feed_pages(server, &token, pages)?);
            walk.tokens.insert(v, token);
        }
        Ok(walk)
    }

    /// One run of the walk, prefetch on or off; the server's CPU and its prefetch counters
    /// beside the latencies of the first pass.
    fn run(&self, wrk: &Path, bin: &Path, db: &str, redis: &str, prefetch: bool) -> Result<Value> {
        let flags: Vec<String> = if prefetch {
            Vec::new()
        } else {
            vec!["--prefetch-workers".into(), "0".into()]
        };
        let ns = format!(
            "walk-{}-{}",
            std::process::id(),
            if prefetch { "on" } else { "off" }
        );
        let server = Server::start_in(bin, db, redis, &flags, true, &ns)?;
        let streams: Vec<Stream> = self
            .pages
            .iter()
            .map(|(v, p)| Stream::get(Some(*v), p.clone()))
            .collect();
        let requests: usize = self.pages.values().map(Vec::len).sum();
        // Long enough for one pass: each connection sends one request per pause at most.
        let pass = self.pause.as_secs_f64() * requests as f64 / f64::from(self.connections);
        let dir = std::env::temp_dir();
        let t = Target::new(wrk, server.api, &self.tokens, &dir);
        let mut v = with_server_cpu(&server, || {
            load::phase(
                &t,
                "paused walk",
                &streams,
                Duration::from_secs_f64(pass * 1.3 + 1.0),
                Load::Paused(self.connections, self.pause),
            )
        })?;
        let metrics = server.metrics();
        let prefetch_jobs: BTreeMap<String, f64> = [
            "submitted",
            "skipped_warm",
            "dropped",
            "succeeded",
            "failed",
        ]
        .iter()
        .filter_map(|r| {
            Some((
                (*r).to_owned(),
                metric(
                    &metrics,
                    &format!("quiver_prefetch_jobs_total{{result=\"{r}\"}}"),
                )?,
            ))
        })
        .collect();
        v["prefetch"] = json!(prefetch);
        v["prefetch_jobs"] = json!(prefetch_jobs);
        v["cache"] = cache_outcomes(&metrics);
        v["walkers"] = json!(self.pages.len());
        v["pages_per_walker"] = json!(self.pages.values().map(Vec::len).max().unwrap_or(0));
        Ok(v)
    }
}

/// Which build of the server a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Binary {
    /// The release build (mimalloc, no profile).
    Default,
    /// The release build with the system allocator (the allocator ablation).
    SystemAllocator,
    /// The release build optimized with the profile of `cargo xtask pgo` (the PGO ablation).
    Pgo,
}

/// One measured configuration: server flags and the streams the load sends.
struct Run {
    name: String,
    /// `scenario` (compared to a limit) or `ablation:<name>:<before|after>`.
    group: String,
    flags: Vec<String>,
    redis: bool,
    binary: Binary,
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
            binary: Binary::Default,
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

fn scenarios(f: &Fixture, quick: bool, allocator: bool, pgo: bool) -> Vec<Run> {
    let feeds = f.feeds();
    let profiles: Vec<String> = f
        .users
        .iter()
        .map(|u| format!("/api/v1/users/{u}"))
        .collect();
    let user_posts: Vec<String> = f
        .users
        .iter()
        .map(|u| format!("/api/v1/users/{u}/posts?limit=20"))
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
        Run::new("user posts", f.as_viewers(|_| user_posts.clone())),
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
        before.binary = Binary::SystemAllocator;
        runs.push(before);
        runs.push(Run::new("allocator", feeds.clone()).ablation("allocator", "after"));
    }
    if pgo {
        runs.push(Run::new("PGO", feeds.clone()).ablation("PGO", "before"));
        let mut after = Run::new("PGO", feeds).ablation("PGO", "after");
        after.binary = Binary::Pgo;
        runs.push(after);
    }
    runs.extend(writes);
    runs
}

/// A `quiver serve` process for one run.
pub(crate) struct Server {
    child: Child,
    pub(crate) api: SocketAddr,
    admin: SocketAddr,
    started: Instant,
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
        let ns = format!("bench-{}", std::process::id());
        Self::start_in(bin, db, redis, flags, with_redis, &ns)
    }

    /// `start` with the Redis key namespace `ns`.
    pub(crate) fn start_in(
        bin: &Path,
        db: &str,
        redis: &str,
        flags: &[String],
        with_redis: bool,
        ns: &str,
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
        .env("QUIVER_REDIS_NAMESPACE", ns)
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
            started: Instant::now(),
        })
    }

    /// utime + stime of the process, seconds, and its resident set, bytes (from /proc).
    fn usage(&self) -> (f64, u64) {
        let pid = self.child.id();
        let cpu = load::CpuTimes::of(&pid.to_string()).map_or(0.0, |t| t.own());
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

    /// Waits until the events this server's writes caused have taken effect (nothing
    /// unpublished in the outbox, nothing pending or undelivered in the group, for two
    /// seconds running), at most `limit`; says so when they have not.
    fn drain(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut quiet_since: Option<Instant> = None;
        while Instant::now() < deadline {
            let m = self.metrics();
            let value = |name: &str| {
                m.lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            let busy = value("quiver_outbox_backlog ")
                + value("quiver_consumer_entries{state=\"pending\"}")
                + value("quiver_consumer_entries{state=\"lag\"}");
            if busy > 0.0 {
                quiet_since = None;
            } else if quiet_since.get_or_insert_with(Instant::now).elapsed()
                >= Duration::from_secs(2)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!("events still pending after {limit:?}; the next run starts anyway");
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
pub(crate) fn mint(bin: &Path, user: i64) -> Result<String> {
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

/// Runs `phase` and adds the server's side of it: CPU seconds, cores and CPU per answered
/// request (from `/proc`), RSS at the end, and whether the server or the generator was
/// the busier (`server_share`: the server's part of the CPU both used).
fn with_server_cpu(server: &Server, phase: impl FnOnce() -> Result<Value>) -> Result<Value> {
    let (cpu0, _) = server.usage();
    let started = Instant::now();
    let mut v = phase()?;
    let wall = started.elapsed().as_secs_f64().max(f64::MIN_POSITIVE);
    let (cpu1, rss) = server.usage();
    let cpu = (cpu1 - cpu0).max(0.0);
    let requests = v["requests"].as_f64().unwrap_or(0.0).max(1.0);
    let generator = v["generator"]["cpu_seconds"].as_f64().unwrap_or(0.0);
    let share = cpu / (cpu + generator).max(f64::MIN_POSITIVE);
    v["server"] = json!({
        "cpu_seconds": cpu,
        "cores": cpu / wall,
        "cpu_us_per_request": cpu * 1e6 / requests,
        "rss_bytes": rss,
    });
    v["server_share"] = json!(share);
    v["generator_bound"] = json!(generator > GENERATOR_CPU_MAX * cpu);
    Ok(v)
}

/// Warm-up, then the peak phase (fixed concurrency) and, for scenarios, the open-loop
/// phase at half the peak rate; CPU of the server and of the load generator per phase,
/// RSS of the server from `/proc`, cache outcomes and event lag from its `/metrics`.
fn measure(wrk: &Path, server: &Server, run: &Run, f: &Fixture, ph: &Phases) -> Result<Value> {
    let dir = std::env::temp_dir();
    let t = Target::new(wrk, server.api, &f.tokens, &dir);
    let closed = Load::Concurrency(ph.concurrency);
    load::phase(&t, &run.name, &run.streams, ph.warmup, closed)?;
    let peak = with_server_cpu(server, || {
        load::phase(&t, &run.name, &run.streams, ph.peak, closed)
    })?;
    let mut result = json!({
        "name": run.name,
        "group": run.group,
        "flags": run.flags,
        "streams": run.streams.len(),
        "bytes_per_request": peak["bytes_per_request"],
        "cpu_us_per_request": peak["server"]["cpu_us_per_request"],
        "server_cores": peak["server"]["cores"],
        "rss_bytes": peak["server"]["rss_bytes"],
        "generator_cpu_us_per_request": peak["generator"]["cpu_us_per_request"],
        "generator_cores": peak["generator"]["cores"],
        "generator_bound": peak["generator_bound"],
        "peak": peak,
    });
    if run.at_rate {
        let rate = (result["peak"]["rps"].as_f64().unwrap_or(0.0) / 2.0).max(1.0);
        let at_rate = with_server_cpu(server, || {
            load::phase(
                &t,
                &run.name,
                &run.streams,
                ph.rate,
                Load::Rate(rate, ph.concurrency),
            )
        })?;
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

/// One row of the soak table from a one-minute open-loop phase.
fn soak_row(minute: u64, uptime: Duration, v: &Value) -> Value {
    json!({
        "minute": minute,
        "uptime_s": uptime.as_secs(),
        "rps": v["rps"],
        "target_rps": v["target_rps"],
        "cpu_us_per_request": v["server"]["cpu_us_per_request"],
        "server_cores": v["server"]["cores"],
        "rss_bytes": v["server"]["rss_bytes"],
        "p50_ms": v["p50_ms"],
        "p99_ms": v["p99_ms"],
        "unexpected": v["unexpected"],
        "generator_cpu_us_per_request": v["generator"]["cpu_us_per_request"],
    })
}

/// `--soak`: one server in the warm configuration; its peak measured as in the warm
/// scenario, then the warm feed at half that rate (open loop) for `minutes` minutes, one
/// row per minute, so that a change of CPU per request (or RSS) with uptime shows.
fn soak(
    o: &Options,
    out_dir: &Path,
    bench: &Bench,
    bin: &Path,
    db: &str,
    f: &Fixture,
    ph: &Phases,
) -> Result<Value> {
    let (wrk, redis) = (&bench.wrk, &bench.redis);
    let minutes = o.soak.unwrap_or(SOAK_MINUTES);
    let server = Server::start(bin, db, redis, &[], true)?;
    let dir = std::env::temp_dir();
    let t = Target::new(wrk, server.api, &f.tokens, &dir);
    let streams = f.feeds();
    let closed = Load::Concurrency(ph.concurrency);
    load::phase(&t, "soak", &streams, ph.warmup, closed)?;
    let peak = with_server_cpu(&server, || {
        load::phase(&t, "soak", &streams, ph.peak, closed)
    })?;
    let rate = (peak["rps"].as_f64().unwrap_or(0.0) / 2.0).max(1.0);
    eprintln!(
        "soak: warm peak {:.0} requests/s at {:.1} µs of server CPU each; {minutes} min at {rate:.0}/s",
        peak["rps"].as_f64().unwrap_or(0.0),
        peak["server"]["cpu_us_per_request"].as_f64().unwrap_or(0.0),
    );
    let mut rows = Vec::new();
    let mut profiles = Vec::new();
    for minute in 1..=minutes {
        // The first and the last minute are profiled (when perf is here), so that what
        // grows with uptime, if anything, shows as a difference between the two.
        let perf = if minute == 1 || minute == minutes {
            Profile::start(&server, out_dir, minute)
        } else {
            None
        };
        let v = with_server_cpu(&server, || {
            load::phase(
                &t,
                "soak",
                &streams,
                Duration::from_secs(60),
                Load::Rate(rate, ph.concurrency),
            )
        })?;
        if let Some(p) = perf {
            profiles.push(p.finish()?);
        }
        let row = soak_row(minute, server.started.elapsed(), &v);
        eprintln!(
            "soak minute {minute}/{minutes}: {} requests/s, {} µs CPU/request, RSS {} MB, P99 {} ms",
            fmt(&row["rps"], 0),
            fmt(&row["cpu_us_per_request"], 1),
            fmt(&json!(row["rss_bytes"].as_f64().map(|b| b / 1e6)), 1),
            fmt(&row["p99_ms"], 2),
        );
        rows.push(row);
    }
    Ok(json!({
        "date": chrono_like_now(),
        "machine": machine(),
        "scale": o.scale,
        "quick": o.quick,
        "build": if o.quick { "debug (smoke test: numbers not comparable)" } else { "release" },
        "viewers": f.viewers.len(),
        "peak": peak,
        "rate": rate,
        "minutes": rows,
        "profiles": profiles,
    }))
}

/// A CPU profile of the server during one soak minute: `perf record` for 30 s, then
/// `perf report` of the hottest symbols, next to the soak report.
struct Profile {
    child: Child,
    data: PathBuf,
    minute: u64,
}

impl Profile {
    fn start(server: &Server, out_dir: &Path, minute: u64) -> Option<Self> {
        let perf = services::which("perf")?;
        let data = out_dir.join(format!("soak-minute-{minute}.perf.data"));
        let child = Command::new(perf)
            .args(["record", "-F", "499", "-g", "-o"])
            .arg(&data)
            .args(["-p", &server.child.id().to_string(), "--", "sleep", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Self {
            child,
            data,
            minute,
        })
    }

    /// Waits for the recording and writes the report; returns where both are.
    fn finish(mut self) -> Result<Value> {
        self.child.wait().context("perf record")?;
        let report = self.data.with_extension("txt");
        let out = Command::new("perf")
            .args(["report", "--stdio", "--no-children", "--sort", "symbol"])
            .args(["--percent-limit", "0.5", "-g", "none", "-i"])
            .arg(&self.data)
            .output()
            .context("cannot run perf report")?;
        std::fs::write(&report, &out.stdout)?;
        Ok(json!({"minute": self.minute, "data": self.data, "report": report}))
    }
}

/// The soak report as markdown: one row per minute.
fn soak_markdown(r: &Value) -> String {
    let mut md = format!(
        "# quiver soak ({} scale, {} build), {}\n\nThe warm home feed of {} viewers at {} requests/s (half its peak of {} at {} µs of server CPU each), open loop, one row per minute of uptime.\n\n| minute | uptime s | RPS | server CPU µs/req | server cores | RSS MB | P50 ms | P99 ms | unexpected status | generator CPU µs/req |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        r["scale"].as_str().unwrap_or(""),
        r["build"].as_str().unwrap_or(""),
        r["date"].as_str().unwrap_or(""),
        r["viewers"],
        fmt(&r["rate"], 0),
        fmt(&r["peak"]["rps"], 0),
        fmt(&r["peak"]["server"]["cpu_us_per_request"], 1),
    );
    for m in r["minutes"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            m["minute"],
            m["uptime_s"],
            fmt(&m["rps"], 0),
            fmt(&m["cpu_us_per_request"], 1),
            fmt(&m["server_cores"], 2),
            fmt(&json!(m["rss_bytes"].as_f64().map(|b| b / 1e6)), 1),
            fmt(&m["p50_ms"], 2),
            fmt(&m["p99_ms"], 2),
            m["unexpected"].as_u64().unwrap_or(0),
            fmt(&m["generator_cpu_us_per_request"], 1),
        ));
    }
    let profiles: Vec<&Value> = r["profiles"].as_array().into_iter().flatten().collect();
    if !profiles.is_empty() {
        md.push_str("\nCPU profiles (perf, 30 s of the minute; the sampling adds a little to those minutes' CPU, equally): ");
        let names: Vec<String> = profiles
            .iter()
            .map(|p| {
                format!(
                    "minute {}: `{}`",
                    p["minute"],
                    p["report"].as_str().unwrap_or("")
                )
            })
            .collect();
        md.push_str(&names.join(", "));
        md.push('\n');
    }
    md
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
    let cpu0 = load::children_cpu();
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
    let client_cpu = load::children_cpu() - cpu0;
    Ok(
        json!({"pages_per_second": tps, "statements_per_page": 8, "viewers": files.len(),
        "client_cpu_seconds": client_cpu,
        "client_cores": client_cpu / ph.peak.as_secs_f64().max(1.0)}),
    )
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
    let cpu0 = load::children_cpu();
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
    let client_cpu = load::children_cpu() - cpu0;
    Ok(
        json!({"mget_per_second": rps, "keys_per_mget": 40, "mgets_per_page": 7,
        "client_cpu_seconds": client_cpu,
        "client_cpu_us_per_mget": client_cpu * 1e6 / n as f64}),
    )
}

/// The machine's own limits each scenario is compared with.
struct Limits {
    /// The warm pages' size sent as a static body.
    static_body: Value,
    /// pgbench running the cold page's statements.
    pg: Value,
    /// redis-benchmark running the L2 page's MGETs.
    redis: Value,
}

fn report(
    o: &Options,
    viewers: usize,
    results: &[Value],
    walk: Value,
    limits: Limits,
    took: Duration,
) -> Value {
    let Limits {
        static_body: static_limit,
        pg,
        redis,
    } = limits;
    let static_limit = &static_limit;
    let static_rps = static_limit["peak"]["rps"].as_f64().unwrap_or(0.0);
    let static_cpu = static_limit["cpu_us_per_request"].as_f64().unwrap_or(0.0);
    let pg_pages = pg["pages_per_second"].as_f64().unwrap_or(0.0);
    let redis_pages = redis["mget_per_second"].as_f64().unwrap_or(0.0) / 7.0;
    let mut scenarios = Vec::new();
    // Per ablation: (requests/s, server CPU µs per request) before and after.
    type Side = Option<(f64, Option<f64>)>;
    let mut ablations: BTreeMap<String, (Side, Side)> = BTreeMap::new();
    for r in results {
        let group = r["group"].as_str().unwrap_or("");
        let rps = r["peak"]["rps"].as_f64().unwrap_or(0.0);
        let cpu = r["cpu_us_per_request"].as_f64();
        if let Some(rest) = group.strip_prefix("ablation:") {
            let (name, side) = rest.rsplit_once(':').unwrap_or((rest, "after"));
            let e = ablations.entry(name.to_owned()).or_default();
            if side == "before" {
                e.0 = Some((rps, cpu));
            } else {
                e.1 = Some((rps, cpu));
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
        s["cpu_ratio_to_static"] = json!(cpu_ratio(cpu, static_cpu));
        scenarios.push(s);
    }
    let ablations: Vec<Value> = ablations
        .into_iter()
        .map(|(name, (before, after))| {
            let factor = match (before, after) {
                (Some((b, _)), Some((a, _))) if b > 0.0 => Some(a / b),
                _ => None,
            };
            // Above 1: the optimization saves server CPU per request.
            let cpu_factor = match (before, after) {
                (Some((_, Some(b))), Some((_, Some(a)))) if a > 0.0 => Some(b / a),
                _ => None,
            };
            json!({"name": name,
                "before_rps": before.map(|b| b.0), "after_rps": after.map(|a| a.0), "factor": factor,
                "before_cpu_us_per_request": before.and_then(|b| b.1),
                "after_cpu_us_per_request": after.and_then(|a| a.1),
                "cpu_factor": cpu_factor})
        })
        .collect();
    let find = |name: &str| scenarios.iter().find(|s| s["name"] == name);
    let mut targets = Vec::new();
    let share = static_limit["peak"]["server_share"].as_f64().unwrap_or(0.0);
    targets.push(json!({"target":
            "the static-body limit is the server's: the load generator used no more CPU than the server",
        "measured": format!("server {:.0} % of the CPU both used ({} generator CPU µs/request)",
            share * 100.0, fmt(&static_limit["generator_cpu_us_per_request"], 1)),
        "met": static_limit["generator_bound"] == json!(false)}));
    let cpu_of = |name: &str| find(name).and_then(|s| s["cpu_us_per_request"].as_f64());
    let static_ratio = |name: &str| find(name).and_then(|s| s["cpu_ratio_to_static"].as_f64());
    let mut ratio_target = |target: String, ratio: Option<f64>, at_most: f64| {
        if let Some(r) = ratio {
            targets.push(
                json!({"target": target, "measured": format!("{r:.2}×"), "met": r <= at_most}),
            );
        }
    };
    ratio_target(
        "warm home feed: server CPU per request ≤ 2× the static body's".into(),
        static_ratio("warm"),
        2.0,
    );
    ratio_target(
        "warm home feed (stretch): server CPU per request ≤ 1.4× the static body's".into(),
        static_ratio("warm"),
        1.4,
    );
    ratio_target(
        "GET /users/{id}: server CPU per request ≤ 1.3× the static body's".into(),
        static_ratio("profile"),
        1.3,
    );
    for page in ["discover", "user posts"] {
        let r = cpu_of(page).zip(cpu_of("warm")).map(|(p, w)| p / w);
        ratio_target(
            format!("warm {page} page: server CPU per request ≤ 1.5× the warm home page's"),
            r,
            1.5,
        );
    }
    for name in ["warm", "profile"] {
        if let Some(p99) = find(name).and_then(|w| w["at_rate"]["p99_ms"].as_f64()) {
            targets.push(
                json!({"target": format!("{name}: P99 ≤ 2 ms at half the peak rate (open loop)"),
                "measured": format!("{p99:.2} ms"), "met": p99 <= 2.0}),
            );
        }
    }
    if let Some(c) = find("cold") {
        let ratio = c["ratio_to_limit"].as_f64().unwrap_or(0.0);
        targets.push(
            json!({"target": "cold path ≥ 1.0× pgbench on the same statements",
            "measured": format!("{ratio:.2}×"), "met": ratio >= 1.0}),
        );
    }
    let later = |side: &str| walk[side]["first_lap"]["later_pages"]["p50_ms"].as_f64();
    if let (Some(off), Some(on)) = (later("off"), later("on")) {
        targets.push(json!({"target": "prefetch: clients who pause get their later pages no slower (P50, cold caches)",
            "measured": format!("{on:.2} ms with prefetch, {off:.2} ms without"), "met": on <= off}));
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
        "paused_walk": walk,
        "tolerance": TOLERANCE,
    })
}

/// A scenario's server CPU per request over the static body's (`None` without both).
fn cpu_ratio(cpu: Option<f64>, static_cpu: f64) -> Option<f64> {
    cpu.filter(|_| static_cpu > 0.0).map(|c| c / static_cpu)
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
        "# quiver bench ({} scale, {} build), {}\n\nMachine: {} × {} cores, {} GiB. Load generator: one wrk process, one thread per connection, every request from the next of the streams by weight (each viewer of the fixed set of {} is one stream, and each writer), on the same cores, compression off. Ratios are from this run only.\n\n",
        r["scale"].as_str().unwrap_or(""),
        r["build"].as_str().unwrap_or(""),
        r["date"].as_str().unwrap_or(""),
        r["machine"]["cpu"].as_str().unwrap_or("?"),
        r["machine"]["cores"],
        r["machine"]["memory_gib"],
        r["viewers"],
    );
    md.push_str("## Scenarios\n\nCPU ratio: the server's CPU per request over the static body's (the same server, the same streams), lower is better. Server and generator CPU: per answered request in the peak phase (fixed concurrency), and the cores each used then; a run marked generator-bound had a generator using more CPU than the server, so its throughput is the generator's. P50–P99.9: open loop at half the peak rate, latency from when each request was due.\n\n");
    md.push_str("| scenario | CPU ratio to static | server CPU µs/req | peak RPS | P50 ms | P90 ms | P99 ms | P99.9 ms | unexpected status | server cores | generator CPU µs/req | generator cores | RSS MB | limit | ratio to limit |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    let rows = r["scenarios"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(std::iter::once(&r["limits"]["static_body"]));
    for s in rows {
        let a = &s["at_rate"];
        let name = s["name"].as_str().unwrap_or("");
        let bound = if s["generator_bound"] == json!(true) {
            " (generator-bound)"
        } else {
            ""
        };
        let static_row = name == "static";
        md.push_str(&format!(
            "| {}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            if static_row {
                "static body (limit)"
            } else {
                name
            },
            bound,
            if static_row {
                "1.00".to_owned()
            } else {
                fmt(&s["cpu_ratio_to_static"], 2)
            },
            fmt(&s["cpu_us_per_request"], 1),
            fmt(&s["peak"]["rps"], 0),
            fmt(&a["p50_ms"], 2),
            fmt(&a["p90_ms"], 2),
            fmt(&a["p99_ms"], 2),
            fmt(&a["p999_ms"], 2),
            s["peak"]["unexpected"].as_u64().unwrap_or(0) + a["unexpected"].as_u64().unwrap_or(0),
            fmt(&s["server_cores"], 2),
            fmt(&s["generator_cpu_us_per_request"], 1),
            fmt(&s["generator_cores"], 2),
            s["rss_bytes"]
                .as_f64()
                .map_or("–".into(), |b| format!("{:.0}", b / 1e6)),
            if static_row {
                ""
            } else {
                s["limit"].as_str().unwrap_or("")
            },
            if static_row {
                "1.00".to_owned()
            } else {
                fmt(&s["ratio_to_limit"], 2)
            },
        ));
    }
    let l = &r["limits"];
    md.push_str(&format!(
        "\nLimits measured in the same run: static body {} RPS at {} µs of server CPU each (the server used {} % of the CPU it and the generator used); pgbench {} cold pages/s (8 statements each; pgbench itself {} cores); redis-benchmark {} MGET/s of 40 keys (redis-benchmark itself {} µs CPU each).\n",
        fmt(&l["static_body"]["peak"]["rps"], 0),
        fmt(&l["static_body"]["cpu_us_per_request"], 1),
        fmt(&json!(l["static_body"]["peak"]["server_share"].as_f64().map(|x| x * 100.0)), 0),
        fmt(&l["pgbench"]["pages_per_second"], 0),
        fmt(&l["pgbench"]["client_cores"], 2),
        fmt(&l["redis_benchmark"]["mget_per_second"], 0),
        fmt(&l["redis_benchmark"]["client_cpu_us_per_mget"], 1),
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
    let w = &r["paused_walk"];
    if w.get("on").is_some() {
        md.push_str(&format!(
            "\n## Paused walk: what prefetch buys\n\n{} other viewers each walk their first {} feed pages once, as clients who read a page before asking for the next ({} connections, each waiting {} ms before every request; a viewer's next page comes about {} requests later), on a server with cold caches (a new process and an empty Redis namespace). Latency from when each request was sent.\n\n| prefetch | first page P50 ms | P99 ms | later pages P50 ms | P90 ms | P99 ms | server CPU µs/req | prefetch jobs (submitted / skipped warm / dropped) |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n",
            fmt(&w["on"]["walkers"], 0),
            fmt(&w["on"]["pages_per_walker"], 0),
            fmt(&w["connections"], 0),
            fmt(&w["pause_ms"], 0),
            fmt(&w["on"]["walkers"], 0),
        ));
        for side in ["off", "on"] {
            let v = &w[side];
            let (first, later) = (
                &v["first_lap"]["first_page"],
                &v["first_lap"]["later_pages"],
            );
            let jobs = |k: &str| fmt(&v["prefetch_jobs"][k], 0);
            md.push_str(&format!(
                "| {side} | {} | {} | {} | {} | {} | {} | {} / {} / {} |\n",
                fmt(&first["p50_ms"], 2),
                fmt(&first["p99_ms"], 2),
                fmt(&later["p50_ms"], 2),
                fmt(&later["p90_ms"], 2),
                fmt(&later["p99_ms"], 2),
                fmt(&v["server"]["cpu_us_per_request"], 1),
                jobs("submitted"),
                jobs("skipped_warm"),
                jobs("dropped"),
            ));
        }
    }
    let fl = &r["connection_flood"];
    if fl.is_object() {
        md.push_str(&format!(
            "\n## Connection flood: what admitted clients see\n\nThe warm feed at {} requests/s (open loop) on a server capped at {} connections, alone and then while connections arrive at ten times the cap and stay silent ({} opened, {} refused with 503).\n\n| | P50 ms | P99 ms | requests/s | unexpected |\n| --- | --- | --- | --- | --- |\n",
            fmt(&fl["rate"], 0),
            fmt(&fl["cap"], 0),
            fmt(&fl["connections_opened"], 0),
            fmt(&fl["connections_refused"], 0),
        ));
        for side in ["quiet", "flooded"] {
            let v = &fl[side];
            md.push_str(&format!(
                "| {side} | {} | {} | {} | {} |\n",
                fmt(&v["p50_ms"], 2),
                fmt(&v["p99_ms"], 2),
                fmt(&v["rps"], 0),
                fmt(&v["unexpected"], 0),
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
    md.push_str("\n## Ablations (home feed, peak phase)\n\nCPU factor: server CPU per request without the optimization over with it (above 1 it saves CPU).\n\n| optimization | CPU µs/req before | after | CPU factor | RPS before | after | RPS factor |\n| --- | --- | --- | --- | --- | --- | --- |\n");
    for a in r["ablations"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {} | {} | {}× | {} | {} | {}× |\n",
            a["name"].as_str().unwrap_or(""),
            fmt(&a["before_cpu_us_per_request"], 1),
            fmt(&a["after_cpu_us_per_request"], 1),
            fmt(&a["cpu_factor"], 2),
            fmt(&a["before_rps"], 0),
            fmt(&a["after_rps"], 0),
            fmt(&a["factor"], 2),
        ));
    }
    md
}

/// The ratios `--baseline` compares, each with whether higher is better: a scenario's
/// server CPU per request over the static body's (the headline; lower is better), its
/// throughput over its limit, an ablation's throughput and CPU factors.
fn ratios(r: &Value) -> BTreeMap<String, (f64, bool)> {
    let mut m = BTreeMap::new();
    for s in r["scenarios"].as_array().into_iter().flatten() {
        let Some(n) = s["name"].as_str() else {
            continue;
        };
        if let Some(x) = s["cpu_ratio_to_static"].as_f64() {
            m.insert(format!("scenario {n} CPU ratio to static"), (x, false));
        }
        if let Some(x) = s["ratio_to_limit"].as_f64() {
            m.insert(format!("scenario {n}"), (x, true));
        }
    }
    for a in r["ablations"].as_array().into_iter().flatten() {
        let Some(n) = a["name"].as_str() else {
            continue;
        };
        if let Some(x) = a["factor"].as_f64() {
            m.insert(format!("ablation {n}"), (x, true));
        }
        if let Some(x) = a["cpu_factor"].as_f64() {
            m.insert(format!("ablation {n} CPU factor"), (x, true));
        }
    }
    m
}

/// Every ratio that got worse than the baseline's by more than `TOLERANCE` (of those in
/// both reports).
fn regressions(report: &Value, base: &Value) -> Vec<String> {
    let now = ratios(report);
    let mut out = Vec::new();
    for (k, (old, higher_is_better)) in ratios(base) {
        let Some((new, _)) = now.get(&k) else {
            continue;
        };
        let worse = if higher_is_better {
            *new < old * (1.0 - TOLERANCE)
        } else {
            *new > old * (1.0 + TOLERANCE)
        };
        if worse {
            out.push(format!("{k}: {new:.2} against {old:.2}"));
        }
    }
    out
}

/// Fails when a ratio (a scenario's CPU ratio to the static body or its ratio to its
/// limit, an ablation's factor) got more than `TOLERANCE` worse than the baseline's.
fn compare(report: &Value, baseline: &Path) -> Result<()> {
    let base: Value = serde_json::from_slice(
        &std::fs::read(baseline).with_context(|| format!("cannot read {}", baseline.display()))?,
    )
    .with_context(|| format!("{} is not a report.json", baseline.display()))?;
    let regressions = regressions(report, &base);
    if regressions.is_empty() {
        eprintln!(
            "no ratio got more than {:.0} % worse against {}",
            TOLERANCE * 100.0,
            baseline.display()
        );
        Ok(())
    } else {
        bail!(
            "ratios got more than {:.0} % worse against {}:\n  {}",
            TOLERANCE * 100.0,
            baseline.display(),
            regressions.join("\n  ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(name: &str, rps: f64, cpu: f64) -> Value {
        json!({"name": name, "group": "scenario", "peak": {"rps": rps}, "cpu_us_per_request": cpu})
    }

    fn sample(warm_cpu: f64, warm_rps: f64) -> Value {
        let o = Options {
            quick: true,
            scale: "small",
            baseline: None,
            soak: None,
            pgo: false,
        };
        let mut before = scenario("home heads before", 1000.0, 200.0);
        before["group"] = json!("ablation:home heads:before");
        let mut after = scenario("home heads after", 2000.0, 100.0);
        after["group"] = json!("ablation:home heads:after");
        let limit = json!({"name": "static", "peak": {"rps": 10_000.0, "server_share": 0.8},
            "cpu_us_per_request": 10.0, "generator_bound": false});
        report(
            &o,
            8,
            &[
                scenario("warm", warm_rps, warm_cpu),
                scenario("cold", 500.0, 400.0),
                before,
                after,
            ],
            json!({
                "off": {"first_lap": {"later_pages": {"p50_ms": 9.0}}},
                "on": {"first_lap": {"later_pages": {"p50_ms": 3.0}}},
            }),
            Limits {
                static_body: limit,
                pg: json!({"pages_per_second": 1000.0}),
                redis: json!({"mget_per_second": 70_000.0}),
            },
            Duration::from_secs(1),
        )
    }

    #[test]
    fn the_headline_is_cpu_per_request_over_the_static_bodys() {
        let r = sample(50.0, 5000.0);
        let warm = &r["scenarios"][0];
        assert_eq!(warm["name"], "warm");
        assert!((warm["cpu_ratio_to_static"].as_f64().unwrap() - 5.0).abs() < 1e-9);
        assert!((warm["ratio_to_limit"].as_f64().unwrap() - 0.5).abs() < 1e-9);
        let cold = &r["scenarios"][1];
        assert!((cold["cpu_ratio_to_static"].as_f64().unwrap() - 40.0).abs() < 1e-9);
        assert!((cold["ratio_to_limit"].as_f64().unwrap() - 0.5).abs() < 1e-9);
        let a = &r["ablations"][0];
        assert!((a["factor"].as_f64().unwrap() - 2.0).abs() < 1e-9);
        assert!((a["cpu_factor"].as_f64().unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(r["targets"][0]["met"], true);
        let md = markdown(&r);
        assert!(md.contains("| warm | 5.00 | 50.0 | 5000 |"), "{md}");
        assert!(
            md.contains("| static body (limit) | 1.00 | 10.0 | 10000 |"),
            "{md}"
        );
        assert_eq!(cpu_ratio(Some(5.0), 0.0), None);
    }

    #[test]
    fn the_baseline_fails_on_a_worse_ratio_either_way() {
        let base = sample(50.0, 5000.0);
        assert!(regressions(&sample(60.0, 4000.0), &base).is_empty());
        // CPU per request up by more than 25 %: lower is better for this one.
        let worse = regressions(&sample(70.0, 5000.0), &base);
        assert_eq!(
            worse,
            ["scenario warm CPU ratio to static: 7.00 against 5.00"]
        );
        // Throughput down by more than 25 %.
        let worse = regressions(&sample(50.0, 3000.0), &base);
        assert_eq!(worse, ["scenario warm: 0.30 against 0.50"]);
        // An older baseline without CPU ratios still compares what it has.
        let mut old = base.clone();
        for s in old["scenarios"].as_array_mut().unwrap() {
            s.as_object_mut().unwrap().remove("cpu_ratio_to_static");
        }
        assert!(regressions(&sample(90.0, 5000.0), &old).is_empty());
    }

    #[test]
    fn a_soak_minute_is_a_row() {
        let v = json!({"rps": 100.0, "target_rps": 100.0, "p50_ms": 1.0, "p99_ms": 3.0, "unexpected": 0,
            "server": {"cpu_us_per_request": 80.0, "cores": 0.8, "rss_bytes": 50_000_000},
            "generator": {"cpu_us_per_request": 5.0}});
        let row = soak_row(3, Duration::from_secs(200), &v);
        assert_eq!(row["minute"], 3);
        assert_eq!(row["uptime_s"], 200);
        assert_eq!(row["cpu_us_per_request"], 80.0);
        assert_eq!(row["rss_bytes"], 50_000_000);
        let md = soak_markdown(
            &json!({"scale": "small", "build": "release", "date": "d", "viewers": 8,
            "rate": 100.0, "peak": {"rps": 200.0, "server": {"cpu_us_per_request": 70.0}},
            "minutes": [row]}),
        );
        assert!(
            md.contains("| 3 | 200 | 100 | 80.0 | 0.80 | 50.0 | 1.00 | 3.00 | 0 | 5.0 |"),
            "{md}"
        );
    }
}
