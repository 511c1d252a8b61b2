//! `cargo xtask pgo`: a release server optimized with a profile of the bench's own mix.
//! An instrumented build (`-Cprofile-generate`) serves every bench scenario for a few
//! seconds, `llvm-profdata` (the LLVM major version rustc was built with: Debian's
//! `llvm-<major>` package, installed with apt-get when missing) merges what it wrote, and
//! a second build uses it (`-Cprofile-use`). Both builds have target directories of their
//! own under `target/pgo/`, so the default build stays exactly as it was; the result is
//! `target/pgo/quiver`, and the full `cargo xtask bench` measures it as the PGO ablation.

use crate::bench::{self, Bench};
use anyhow::{Context, Result, bail};
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `cargo xtask pgo [--scale small|medium|large]`.
pub(crate) fn pgo(args: &[String]) -> Result<()> {
    let scale = match args {
        [] => "small",
        [flag, s] if flag == "--scale" && ["small", "medium", "large"].contains(&s.as_str()) => {
            s.as_str()
        }
        _ => bail!("usage: cargo xtask pgo [--scale small|medium|large]"),
    };
    let bench = Bench::open()?;
    let bin = build(&bench, scale)?;
    println!("{}", bin.display());
    Ok(())
}

/// Builds the instrumented server, trains it on `scale`, and builds the optimized one;
/// returns the optimized binary's path.
pub(crate) fn build(bench: &Bench, scale: &str) -> Result<PathBuf> {
    let profdata = llvm_profdata()?;
    let dir = bench::target_dir(&crate::project_root()).join("pgo");
    let raw = dir.join("raw");
    if raw.exists() {
        std::fs::remove_dir_all(&raw).with_context(|| format!("cannot empty {}", raw.display()))?;
    }
    std::fs::create_dir_all(&raw)?;

    eprintln!("pgo: building the instrumented release server");
    let generate = release(
        &dir.join("gen"),
        &format!("-Cprofile-generate={}", raw.display()),
    )?;
    bench::train(bench, &generate, scale)?;

    let profiles: Vec<PathBuf> = std::fs::read_dir(&raw)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "profraw"))
        .collect();
    if profiles.is_empty() {
        bail!(
            "the instrumented server wrote no profile to {}: did it exit cleanly?",
            raw.display()
        );
    }
    let merged = dir.join("merged.profdata");
    crate::run(
        Command::new(&profdata)
            .arg("merge")
            .arg("-o")
            .arg(&merged)
            .args(&profiles),
    )?;
    // The profile's content is part of its name, so that a new profile changes the
    // build's flags and cargo rebuilds every crate with it (it does not track the file).
    let bytes = std::fs::read(&merged)?;
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    let named = dir.join(format!("quiver-{:016x}.profdata", h.finish()));
    std::fs::rename(&merged, &named)?;

    eprintln!("pgo: building the release server with the profile");
    let optimized = release(
        &dir.join("use"),
        &format!("-Cprofile-use={}", named.display()),
    )?;
    let out = dir.join("quiver");
    std::fs::copy(&optimized, &out)
        .with_context(|| format!("cannot copy {}", optimized.display()))?;
    eprintln!("pgo: {}", out.display());
    Ok(out)
}

/// `cargo build --release -p quiver --features bench-routes` into `target_dir` with
/// `rustflags`; returns the binary.
fn release(target_dir: &Path, rustflags: &str) -> Result<PathBuf> {
    crate::run(
        crate::cargo()
            .args([
                "build",
                "--release",
                "-p",
                "quiver",
                "--features",
                "bench-routes",
            ])
            .env("CARGO_TARGET_DIR", target_dir)
            .env("RUSTFLAGS", rustflags),
    )?;
    Ok(target_dir.join("release/quiver"))
}

/// The `llvm-profdata` of rustc's LLVM major version; Debian's `llvm-<major>` is
/// installed with apt-get when it is missing.
fn llvm_profdata() -> Result<PathBuf> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("cannot run rustc -vV")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let major = text
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc -vV names no LLVM version")?
        .to_owned();
    let path = PathBuf::from(format!("/usr/lib/llvm-{major}/bin/llvm-profdata"));
    if path.exists() {
        return Ok(path);
    }
    let package = format!("llvm-{major}");
    eprintln!(
        "{} not found: installing the Debian package {package} with apt-get (once)",
        path.display()
    );
    let installed = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", &package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    if !installed || !path.exists() {
        bail!(
            "llvm-profdata of LLVM {major} (rustc's) not found at {} and apt-get could not install it: install the Debian package {package}",
            path.display()
        );
    }
    Ok(path)
}
