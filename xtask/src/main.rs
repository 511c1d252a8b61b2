//! quiver's developer tasks, run as `cargo xtask <task>`:
//!
//! - `test`: every test, against real PostgreSQL and Redis; throwaway servers are started
//!   from the machine's binaries when none is reachable at `DATABASE_URL` / `REDIS_URL`;
//!   then schemathesis against the served OpenAPI document (`fuzz.rs`).
//! - `fuzz`: that schemathesis step alone.
//! - `lint`: formatting, clippy with `-D warnings`, the offline-query check, and `tidy.rs`
//!   (ARCHITECTURE.md against the tree and at most 20 KB, the layering of our crates, and
//!   no source file over 600 lines without a reason at its top).
//! - `ci`: exactly what CI runs: `lint`, `test`, then `bench --quick`.
//! - `prepare`: regenerates `crates/quiver-store/.sqlx/` (the compile-time query data, kept in the crate so its package builds alone) from a scratch database.
//! - `bench`: the release server end to end against the machine's own limits, with
//!   ablations; `--soak` watches CPU per request over uptime; `--micro` runs the
//!   criterion benches of every layer.
//! - `pgo`: a release server built with a profile of the bench's own mix
//!   (`target/pgo/quiver`); the full bench measures it as an ablation.

mod bench;
mod cluster;
mod cpu;
mod fuzz;
mod load;
mod pgo;
mod plots;
mod services;
mod tidy;

use anyhow::{Context, Result, bail};
use services::Services;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = project_root();
    std::env::set_current_dir(&root).context("cannot enter the project root")?;
    match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("ci") => ci(&root),
        Some("lint") => lint(&root),
        Some("prepare") => sqlx_data(&root, Mode::Write),
        Some("bench") => bench::bench(&args[1..]),
        Some("pgo") => pgo::pgo(&args[1..]),
        Some("cluster") => cluster::run(&root, &args[1..]),
        Some("fuzz") => fuzz::run(&root, &Services::start()?),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 test [ARGS]  run every test against real PostgreSQL and Redis (ARGS go to the test runner)\n  \
                 fuzz         only schemathesis against the server on PostgreSQL+Redis and on SQLite (part of test)\n  \
                 lint         fmt --check, clippy -D warnings, ARCHITECTURE.md, layering and file lengths, offline-query check\n  \
                 ci           lint, test, bench --quick: what CI runs\n  \
                 prepare      regenerate .sqlx/ from the queries (needs PostgreSQL)\n  \
                 bench [--quick] [--scale small|medium|large] [--baseline FILE] [--soak [--soak-minutes N]] [--no-pgo] [--micro]\n               \
                 end-to-end load against the machine's limits, with ablations (report in target/bench/)\n  \
                 pgo [--scale small|medium|large]\n               \
                 a release server trained on the bench's mix (target/pgo/quiver)\n  \
                 cluster up|down|status\n               \
                 Redis Cluster, PostgreSQL primary and replica, three quiver replicas behind HAProxy"
            );
            bail!("unknown or missing task")
        }
    }
}

pub(crate) fn project_root() -> PathBuf {
    // The checkout `cargo run` was called in (it sets the variable for the process): the
    // one this binary was compiled in may be another checkout sharing the target
    // directory, whose build cargo took as fresh.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest
        .parent()
        .expect("xtask lives one level below the root")
        .to_path_buf()
}

/// Runs `cmd`, failing with its command line when it does not succeed.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", describe(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed with {status}", describe(cmd));
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn test(extra: &[String]) -> Result<()> {
    let services = Services::start()?.with_replication()?;
    let mut env = services.env();
    // Programs the binary's tests run (installed when missing): HAProxy in front of the
    // topology tests' servers, promtool for the deploy test's rules and live /metrics,
    // Chromium to load /docs.
    for (program, package, var, tests) in [
        ("haproxy", "haproxy", "QUIVER_HAPROXY", "the topology tests"),
        (
            "promtool",
            "prometheus",
            "QUIVER_PROMTOOL",
            "the deploy test",
        ),
        ("chromium", "chromium", "QUIVER_CHROMIUM", "the /docs test"),
    ] {
        match services::tool(program, package) {
            Ok(path) => env.push((var.to_owned(), path.display().to_string())),
            Err(e) => eprintln!("{e:#}: {tests} will fail for want of it"),
        }
    }
    if has_nextest() {
        let mut cmd = cargo();
        cmd.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
        cmd.args(extra).envs(env.iter().cloned());
        run(&mut cmd)?;
    } else {
        eprintln!(
            "cargo-nextest not found: running cargo test (install it with `cargo install cargo-nextest --locked` for faster runs)"
        );
        let mut cmd = cargo();
        cmd.args(["test", "--workspace", "--lib", "--bins", "--tests"]);
        cmd.args(extra).envs(env.iter().cloned());
        run(&mut cmd)?;
    }
    // nextest does not run doc-tests.
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--doc"])
        .envs(env.iter().cloned());
    run(&mut cmd)?;
    fuzz::run(&project_root(), &services)?;
    drop(services);
    Ok(())
}

fn ci(root: &Path) -> Result<()> {
    lint(root)?;
    test(&[])?;
    bench::bench(&["--quick".to_owned()])
}

fn lint(root: &Path) -> Result<()> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Every crate's docs build without a warning (broken links, bad code blocks).
    run(cargo()
        .args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    package_libraries(root)?;
    tidy::check(root)?;
    sqlx_data(root, Mode::Check)
}

/// `cargo package` of every library crate (`crates/*`), each verified by building it
/// from its package alone against the others' packages: their metadata, files and query
/// data are complete.
fn package_libraries(root: &Path) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["package", "--allow-dirty"]);
    let mut names: Vec<String> = std::fs::read_dir(root.join("crates"))
        .context("cannot list crates/")?
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    for name in &names {
        cmd.args(["-p", name]);
    }
    // Cargo verifies each package against the others' as if they came from a registry,
    // and never rebuilds a registry crate of the same version: in a target directory
    // of its own, our crates' build state is dropped first, so each run builds them from
    // the packages it just made (their dependencies stay built).
    let dir = bench::target_dir(root).join("package-verify");
    if let Ok(entries) = std::fs::read_dir(dir.join("debug/.fingerprint")) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("quiver-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    cmd.arg("--target-dir").arg(&dir);
    // Nor unpacks one again: drop the earlier runs' copies of ours under
    // `$CARGO_HOME/registry/src`.
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(Ok(registries)) = home.map(|h| std::fs::read_dir(h.join("registry/src"))) {
        for registry in registries.flatten() {
            for name in &names {
                let unpacked = format!("{name}-{}", env!("CARGO_PKG_VERSION"));
                let _ = std::fs::remove_dir_all(registry.path().join(unpacked));
            }
        }
    }
    run(&mut cmd)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Write,
    Check,
}

/// Regenerates the query data of every `query!` against a scratch database built from
/// `sql/migrations`, then writes it to `.sqlx/` or checks `.sqlx/` is identical, as
/// `cargo sqlx prepare --workspace [--check]` does, without needing sqlx-cli installed.
fn sqlx_data(root: &Path, mode: Mode) -> Result<()> {
    let services = Services::start_postgres_only()?;
    let db = services.scratch_database("quiver_sqlx")?;
    let out = root.join("target").join("sqlx-prepare");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).context("cannot create target/sqlx-prepare")?;
    // Apply the schema with psql, not `quiver migrate`: building quiver needs the very
    // query data this task is about to regenerate.
    let mut migrations: Vec<PathBuf> = std::fs::read_dir(root.join("sql/migrations"))
        .context("cannot list sql/migrations")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    migrations.sort();
    for file in &migrations {
        services::psql_file(&db.url, file)?;
    }
    // The macros re-run only when their crate recompiles: touch its sources.
    for path in tidy::files_under(&root.join("crates/quiver-store/src"))? {
        let file = std::fs::File::options().append(true).open(&path)?;
        file.set_modified(std::time::SystemTime::now())?;
    }
    run(cargo()
        .args(["check", "-p", "quiver-store", "--all-targets"])
        .env("SQLX_OFFLINE", "false")
        .env("SQLX_OFFLINE_DIR", &out)
        .env("DATABASE_URL", &db.url))?;
    let fresh = read_queries(&out)?;
    let committed_dir = root.join("crates/quiver-store/.sqlx");
    match mode {
        Mode::Write => {
            let _ = std::fs::remove_dir_all(&committed_dir);
            std::fs::create_dir_all(&committed_dir)?;
            for (name, body) in &fresh {
                std::fs::write(committed_dir.join(name), body)?;
            }
            eprintln!("wrote {} queries to .sqlx/", fresh.len());
        }
        Mode::Check => {
            let committed = read_queries(&committed_dir)?;
            let stale: Vec<&String> = fresh
                .iter()
                .filter(|(name, body)| committed.get(*name) != Some(body))
                .map(|(name, _)| name)
                .chain(committed.keys().filter(|name| !fresh.contains_key(*name)))
                .collect();
            if !stale.is_empty() {
                bail!(
                    ".sqlx/ is out of date ({} files differ: {stale:?}); run `cargo xtask prepare` and commit .sqlx/",
                    stale.len()
                );
            }
            eprintln!(".sqlx/ is current ({} queries)", fresh.len());
        }
    }
    Ok(())
}

fn read_queries(dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("query-") && name.ends_with(".json") {
            out.insert(name, std::fs::read_to_string(&path)?);
        }
    }
    Ok(out)
}
