//! The last step of `cargo xtask test`: schemathesis, with every check, against a real
//! server from the OpenAPI document it serves, first on PostgreSQL and Redis, then on
//! SQLite; any failure fails the run. schemathesis is a Python package: it is installed
//! (pinned) into a virtual environment under the target directory when missing.

use crate::bench::{Server, mint, target_dir};
use crate::services::Services;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The version the checks were written against; another may add checks of its own.
const SCHEMATHESIS: &str = "4.32.5";
/// Test cases per operation and phase, and the seed that makes a run repeatable.
const EXAMPLES: &str = "25";
const SEED: &str = "1";

pub(crate) fn run(root: &Path, services: &Services) -> Result<()> {
    let st = install(root)?;
    crate::run(crate::cargo().args(["build", "-p", "quiver"]))?;
    let bin = target_dir(root).join("debug/quiver");
    let config = root.join("xtask/schemathesis.toml");
    let env: std::collections::BTreeMap<String, String> = services.env().into_iter().collect();

    let db = services.scratch_database("quiver_fuzz")?;
    seed(&bin, &db.url)?;
    let redis = env.get("REDIS_URL").context("the tests' Redis")?;
    let ns = format!("fuzz-{}", std::process::id());
    let server = Server::start_in(&bin, &db.url, redis, &[], true, &ns)?;
    check(&st, &config, &server, &bin, "PostgreSQL and Redis")?;
    drop(server);

    let dir = tempfile::tempdir()?;
    let sqlite = format!("sqlite:{}", dir.path().join("fuzz.db").display());
    seed(&bin, &sqlite)?;
    let server = Server::start_in(&bin, &sqlite, redis, &[], false, &ns)?;
    check(&st, &config, &server, &bin, "SQLite")
}

/// A small data set, so that generated ids find rows.
fn seed(bin: &Path, url: &str) -> Result<()> {
    crate::run(Command::new(bin).args([
        "seed",
        "--database-url",
        url,
        "--users",
        "300",
        "--posts-per-user",
        "5",
        "--follows-per-user",
        "8",
    ]))
}

fn check(st: &Path, config: &Path, server: &Server, bin: &Path, what: &str) -> Result<()> {
    eprintln!("schemathesis against the server on {what}");
    let token = mint(bin, 1)?;
    let status = Command::new(st)
        // Whatever it writes stays out of the source tree.
        .current_dir(st.parent().expect("the venv's bin directory"))
        .arg("--config-file")
        .arg(config)
        .args(["run", &format!("http://{}/openapi.json", server.api)])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--max-examples", EXAMPLES, "--seed", SEED, "--no-color"])
        .status()
        .context("cannot run schemathesis")?;
    if !status.success() {
        bail!("schemathesis found failures against the server on {what} (above)");
    }
    Ok(())
}

/// The schemathesis executable, installed into `target/schemathesis` when missing.
fn install(root: &Path) -> Result<PathBuf> {
    let venv = target_dir(root).join("schemathesis");
    let st = venv.join("bin/schemathesis");
    let current = Command::new(&st)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(SCHEMATHESIS));
    if current {
        return Ok(st);
    }
    eprintln!(
        "installing schemathesis {SCHEMATHESIS} into {}",
        venv.display()
    );
    let venv_made = || {
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !venv_made() {
        eprintln!("no python3 with venv: installing Debian's python3-venv with apt-get (once)");
        let installed = Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "python3-venv"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success());
        if !installed || !venv_made() {
            bail!(
                "cannot create a Python virtual environment for schemathesis: install the Debian packages python3 and python3-venv"
            );
        }
    }
    crate::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("schemathesis=={SCHEMATHESIS}")),
    )
    .context("cannot install schemathesis from PyPI")?;
    Ok(st)
}
