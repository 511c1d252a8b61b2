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
//!
//! This file holds the options, the order of the runs and the setup (builds, database,
//! services); `scenarios.rs` says what runs, `server.rs` starts each server, `measure.rs`
//! measures a run, `limits.rs`, `walk.rs`, `flood.rs` and `soak.rs` are the other
//! measurements, and `report.rs` turns them into the report.

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

mod fixture;
mod flood;
mod limits;
mod markdown;
mod measure;
mod report;
mod scenarios;
mod server;
mod soak;
mod walk;

use fixture::*;
use flood::*;
use limits::*;
use markdown::*;
use measure::*;
use report::*;
use scenarios::*;
pub(crate) use server::{Server, mint};
use soak::*;
use walk::*;

pub(crate) const SECRET: &str = "bench secret: at least thirty-two bytes long";
/// A ratio may fall this much below the baseline's before `--baseline` fails.
pub(crate) const TOLERANCE: f64 = 0.25;

pub(crate) struct Options {
    pub(crate) quick: bool,
    pub(crate) scale: &'static str,
    pub(crate) baseline: Option<PathBuf>,
    /// `--soak`: minutes of the warm feed at half its peak rate, instead of the bench.
    pub(crate) soak: Option<u64>,
    /// `--no-pgo`: skip the PGO build and its ablation (the full bench has them).
    pub(crate) pgo: bool,
}

/// `--soak` without `--soak-minutes`.
pub(crate) const SOAK_MINUTES: u64 = 30;
/// A run's throughput is the server's only when the load generator, on the same cores,
/// used no more CPU than the server: a busier generator is the bottleneck.
pub(crate) const GENERATOR_CPU_MAX: f64 = 1.0;

/// How long each phase runs.
pub(crate) struct Phases {
    pub(crate) warmup: Duration,
    pub(crate) peak: Duration,
    pub(crate) rate: Duration,
    /// Connections in all, shared by the streams.
    pub(crate) concurrency: u32,
    /// How many viewers the feed scenarios load (one stream each).
    pub(crate) viewers: usize,
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
    let variant = |what: &str, name: &str, features: &[&str]| -> Result<PathBuf> {
        eprintln!("building the release server {what} (ablation)");
        // A target directory of its own: built into `target/release`, this binary would
        // replace the one `cargo build --release` made there.
        let dir = target_dir(&root).join(format!("bench-{name}"));
        crate::run(
            crate::cargo()
                .args(["build", "--release", "-p", "quiver"])
                .args(features)
                .arg("--target-dir")
                .arg(&dir),
        )?;
        copy_aside(
            &dir.join("release/quiver"),
            &out_dir.join(format!("quiver-{name}")),
        )
    };
    let system_bin = full
        .then(|| {
            let f = ["--no-default-features", "--features", "bench-routes"];
            variant("with the system allocator", "system", &f)
        })
        .transpose()?;
    // Every debug-level span (the traces are made of them) compiled out: what traces cost
    // when they are off is this build against the default one.
    let untraced_bin = full
        .then(|| {
            let f = ["--features", "bench-routes,no-traces"];
            variant("without trace spans", "untraced", &f)
        })
        .transpose()?;
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
        fixture.record_feed_pages(&server)?;
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
    let built: Vec<Binary> = [
        (Binary::SystemAllocator, &system_bin),
        (Binary::Untraced, &untraced_bin),
        (Binary::Pgo, &pgo_bin),
    ]
    .into_iter()
    .filter_map(|(b, bin)| bin.as_ref().map(|_| b))
    .collect();
    let runs = scenarios(&fixture, o.quick, &built);
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
    // The runs that write go last, after the flood and the limits, and each waits for
    // the events it caused to take effect before its server stops: a later run must not
    // spend its CPU (nor PostgreSQL's) on an earlier run's fan-out backlog.
    let first_write = runs.iter().position(|r| r.writes()).unwrap_or(runs.len());
    let binary = |run: &Run| match run.binary {
        Binary::Default => &bin,
        Binary::SystemAllocator => system_bin.as_ref().expect("built when needed"),
        Binary::Pgo => pgo_bin.as_ref().expect("built when needed"),
        Binary::Untraced => untraced_bin.as_ref().expect("built when needed"),
    };
    let start = |run: &Run| Server::start(binary(run), &db, redis, &run.flags, run.redis);
    // The static body of the warm pages' mean size, on the warm scenario's streams (the
    // same processes, connections and headers): every read scenario's CPU per request is
    // compared with it in alternating rounds on the scenario's own server, and it is the
    // static-body limit.
    let static_run = {
        let path = format!(
            "/bench/static?bytes={}",
            fixture.page_bytes.max(2.0) as usize
        );
        Run::new("static", fixture.as_viewers(|_| vec![path.clone()]))
    };
    let run_one = |run: &Run, results: &mut Vec<Value>| -> Result<()> {
        bar.set_message(run.name.clone());
        let server = start(run)?;
        let paired = (!run.writes()).then_some(&static_run);
        let r = measure(wrk, &server, run, paired, &fixture, &phases)?;
        if run.writes() {
            server.drain(Duration::from_secs(180));
        }
        results.push(r);
        bar.inc(1);
        Ok(())
    };
    // An ablation's two sides (adjacent, before then after) run at once, alternating.
    let mut reads = runs[..first_write].iter().peekable();
    while let Some(run) = reads.next() {
        if let Some(after) = reads.next_if(|next| run.pairs_with(next)) {
            bar.set_message(run.name.clone());
            let servers = [start(run)?, start(after)?];
            let [b, a] = measure_ablation(
                wrk,
                [&servers[0], &servers[1]],
                [run, after],
                &fixture,
                &phases,
            )?;
            results.extend([b, a]);
            bar.inc(2);
            continue;
        }
        run_one(run, &mut results)?;
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
        let server = Server::start(&bin, &db, redis, &[], true)?;
        measure(wrk, &server, &static_run, None, &fixture, &phases)?
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

/// What the bench and the PGO training share: the services (throwaway ones when the
/// machine's are not reachable), the load generator and the admin database URL.
pub(crate) struct Bench {
    pub(crate) services: Services,
    pub(crate) wrk: PathBuf,
    pub(crate) admin: String,
    pub(crate) redis: String,
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
        fixture.record_feed_pages(&server)?;
    }
    let dir = std::env::temp_dir();
    for run in scenarios(&fixture, true, &[])
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

pub(crate) fn copy_aside(bin: &Path, to: &Path) -> Result<PathBuf> {
    std::fs::copy(bin, to).with_context(|| format!("cannot copy {}", bin.display()))?;
    Ok(to.to_path_buf())
}

/// wrk (built with LuaJIT, as Debian's is) on PATH; installed with apt-get when missing.
pub(crate) fn ensure_wrk() -> Result<PathBuf> {
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
pub(crate) fn database(bin: &Path, admin: &str, scale: &str) -> Result<String> {
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
