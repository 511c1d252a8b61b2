//! Mechanical checks of the tree, run by `cargo xtask lint` and as tests (as
//! rust-analyzer's `tidy` does): every crate and file ARCHITECTURE.md names exists, every
//! crate is named there, the map stays short, the dependencies between our crates are
//! exactly the ones its table lists, each pointing to a crate further down the table, and
//! no source file is longer than [`MAX_LINES`] without a reason written at its top.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The heading of the dependency table in ARCHITECTURE.md.
const TABLE_HEADING: &str = "## Dependencies between our crates";

/// The longest ARCHITECTURE.md allowed, in bytes: a map, not a manual.
const MAX_MAP_BYTES: usize = 20 * 1024;

/// The most lines a source file has without a reason for more.
pub(crate) const MAX_LINES: usize = 600;

/// What a longer file's leading `//!` block says, followed by why.
const LONG_FILE_MARK: &str = "//! Long file:";

/// Every check, on the tree at `root`.
pub(crate) fn check(root: &Path) -> Result<()> {
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md"))
        .context("cannot read ARCHITECTURE.md")?;
    let mut problems = named_paths(&map, |p| root.join(p).exists());
    if map.len() > MAX_MAP_BYTES {
        problems.push(format!(
            "ARCHITECTURE.md is {} bytes, over {MAX_MAP_BYTES}: move detail to module docs or benches/RESULTS.md",
            map.len()
        ));
    }
    let packages = workspace_packages(root)?;
    problems.extend(crates_named(&map, &packages));
    problems.extend(layering(&map, &packages));
    let mut sources = Vec::new();
    for dir in ["crates", "bins", "benches", "xtask"] {
        sources.extend(
            files_under(&root.join(dir))?
                .into_iter()
                .filter(|p| p.extension().is_some_and(|x| x == "rs")),
        );
    }
    for path in &sources {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let shown = path
            .strip_prefix(root)
            .unwrap_or(path)
            .display()
            .to_string();
        problems.extend(too_long(&shown, &text));
    }
    if !problems.is_empty() {
        bail!(
            "the tree fails its tidy checks:\n  - {}",
            problems.join("\n  - ")
        );
    }
    eprintln!(
        "ARCHITECTURE.md matches the tree ({} crates, layering checked); {} source files within {MAX_LINES} lines or saying why not",
        packages.len(),
        sources.len()
    );
    Ok(())
}

/// Every file under `dir` (none when it does not exist), build output excluded, sorted.
pub(crate) fn files_under(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
        for entry in
            std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    walk(&path, out)?;
                }
            } else {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, &mut out)?;
    }
    out.sort();
    Ok(out)
}

/// A problem when `text` (the file `name`) is over [`MAX_LINES`] lines and its leading
/// comment block gives no reason (a line starting with [`LONG_FILE_MARK`] and more).
fn too_long(name: &str, text: &str) -> Option<String> {
    let lines = text.lines().count();
    if lines <= MAX_LINES {
        return None;
    }
    let reason = text.lines().take_while(|l| l.starts_with("//")).any(|l| {
        l.strip_prefix(LONG_FILE_MARK)
            .is_some_and(|r| !r.trim().is_empty())
    });
    (!reason).then(|| {
        format!(
            "{name} has {lines} lines, over {MAX_LINES}: split it by job, or say why not at its top (`{LONG_FILE_MARK} …`)"
        )
    })
}

/// One workspace package: where it lives and the workspace crates it depends on.
#[derive(Debug, Default)]
struct Package {
    /// Its directory, relative to the root (`crates/quiver-model`).
    dir: String,
    /// Normal and build dependencies on workspace crates.
    deps: BTreeSet<String>,
    /// Dev-dependencies on workspace crates.
    dev: BTreeSet<String>,
}

/// The workspace's packages from `cargo metadata`.
fn workspace_packages(root: &Path) -> Result<BTreeMap<String, Package>> {
    let out = crate::cargo()
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: Value = serde_json::from_slice(&out.stdout).context("cargo metadata's json")?;
    packages_of(&meta, root)
}

fn packages_of(meta: &Value, root: &Path) -> Result<BTreeMap<String, Package>> {
    let mut packages = BTreeMap::new();
    for p in meta["packages"].as_array().context("packages")? {
        let name = p["name"].as_str().context("a package name")?.to_owned();
        let manifest = Path::new(p["manifest_path"].as_str().context("a manifest path")?);
        let dir = manifest
            .parent()
            .and_then(|d| d.strip_prefix(root).ok())
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut package = Package {
            dir,
            ..Package::default()
        };
        for d in p["dependencies"].as_array().context("dependencies")? {
            if d["path"].is_null() {
                continue;
            }
            let dep = d["name"].as_str().context("a dependency name")?.to_owned();
            match d["kind"].as_str() {
                Some("dev") => package.dev.insert(dep),
                _ => package.deps.insert(dep),
            };
        }
        packages.insert(name, package);
    }
    Ok(packages)
}

/// Every backquoted path in the map that names a file or folder (it has a `/` or ends in
/// `.rs`), resolved under the crate whose section it is in, else under the root, that
/// `exists` says is not there.
fn named_paths(map: &str, exists: impl Fn(&str) -> bool) -> Vec<String> {
    let mut problems = Vec::new();
    let mut section_dir: Option<String> = None;
    let mut in_code = false;
    for line in map.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        if let Some(h) = line.strip_prefix("### ") {
            // `### `crates/quiver-store``: names in this section are its files.
            section_dir = h
                .strip_prefix('`')
                .and_then(|h| h.strip_suffix('`'))
                .filter(|d| d.starts_with("crates/") && !d.contains(' '))
                .map(str::to_owned);
            if let Some(d) = &section_dir
                && !exists(d)
            {
                problems.push(format!("the section {d} names a crate that does not exist"));
            }
            continue;
        }
        if line.starts_with("## ") {
            section_dir = None;
        }
        for name in line.split('`').skip(1).step_by(2) {
            let looks_like_path = (name.contains('/') || name.ends_with(".rs"))
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
                && !name.starts_with('/')
                && !name.starts_with("../")
                // Files made at run time (`./quiver-demo.db`).
                && !name.starts_with("./");
            if !looks_like_path {
                continue;
            }
            let candidates: Vec<String> = match &section_dir {
                Some(d) if !name.contains('/') || !exists(name) => {
                    vec![format!("{d}/src/{name}"), format!("{d}/{name}")]
                }
                _ => vec![name.to_owned()],
            };
            if !candidates.iter().any(|c| exists(c)) {
                problems.push(format!(
                    "`{name}` is named but {} does not exist",
                    candidates[0]
                ));
            }
        }
    }
    problems
}

/// Every package is named in the map: by its name or its directory in backquotes, or a
/// path under its directory.
fn crates_named(map: &str, packages: &BTreeMap<String, Package>) -> Vec<String> {
    packages
        .iter()
        .filter(|(name, p)| {
            ![
                format!("`{name}`"),
                format!("`{}`", p.dir),
                format!("`{}/", p.dir),
            ]
            .iter()
            .any(|n| map.contains(n.as_str()))
        })
        .map(|(name, p)| format!("the crate {name} ({}) is not named", p.dir))
        .collect()
}

/// One row of the dependency table: `name ──► a, b (dev: c)`.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    name: String,
    deps: BTreeSet<String>,
    dev: BTreeSet<String>,
}

fn table(map: &str) -> Result<Vec<Row>, String> {
    let start = map
        .find(TABLE_HEADING)
        .ok_or_else(|| format!("no \"{TABLE_HEADING}\" section"))?;
    let rest = &map[start..];
    let block = rest
        .split("```")
        .nth(1)
        .ok_or_else(|| "the dependency section has no table in a code block".to_owned())?;
    let names = |s: &str| -> BTreeSet<String> {
        s.split(',')
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty() && n != "nothing")
            .collect()
    };
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, deps) = l
                .split_once('►')
                .ok_or_else(|| format!("a table row without ►: {l:?}"))?;
            let name = name.trim_end_matches(['─', ' ']).trim().to_owned();
            let (deps, dev) = match deps.split_once("(dev:") {
                Some((deps, dev)) => (deps, dev.trim().trim_end_matches(')')),
                None => (deps, ""),
            };
            Ok(Row {
                name,
                deps: names(deps),
                dev: names(dev),
            })
        })
        .collect()
}

/// The table lists every package with a dependency on another, exactly those
/// dependencies, and each points further down the table: the order of the rows is the
/// order of the layers.
fn layering(map: &str, packages: &BTreeMap<String, Package>) -> Vec<String> {
    let rows = match table(map) {
        Ok(rows) => rows,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    let position: BTreeMap<&str, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    for (name, p) in packages {
        let depended_on = packages
            .values()
            .any(|q| q.deps.contains(name) || q.dev.contains(name));
        let Some(&at) = position.get(name.as_str()) else {
            if !p.deps.is_empty() || !p.dev.is_empty() || depended_on {
                problems.push(format!("{name} is missing from the dependency table"));
            }
            continue;
        };
        let row = &rows[at];
        if row.deps != p.deps {
            problems.push(format!(
                "the table says {name} depends on {:?}; its manifest says {:?}",
                row.deps, p.deps
            ));
        }
        if row.dev != p.dev {
            problems.push(format!(
                "the table says {name} dev-depends on {:?}; its manifest says {:?}",
                row.dev, p.dev
            ));
        }
        for dep in p.deps.iter().chain(&p.dev) {
            match position.get(dep.as_str()) {
                Some(&below) if below > at => {}
                Some(_) => problems.push(format!(
                    "{name} depends on {dep}, which is not below it in the table (a dependency pointing up)"
                )),
                None => problems.push(format!("{dep} is missing from the dependency table")),
            }
        }
    }
    for r in &rows {
        if !packages.contains_key(&r.name) {
            problems.push(format!("the table names {}, which is not a crate", r.name));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(dir: &str, deps: &[&str], dev: &[&str]) -> Package {
        Package {
            dir: dir.to_owned(),
            deps: deps.iter().map(|d| (*d).to_owned()).collect(),
            dev: dev.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    fn map(table: &str) -> String {
        format!("# A\n\n### `crates/low`\n\n- `a.rs`: x\n\n{TABLE_HEADING}\n\n```\n{table}\n```\n")
    }

    #[test]
    fn a_long_file_needs_a_reason_at_its_top() {
        let body = "fn f() {}\n".repeat(MAX_LINES);
        let short = format!("//! Short.\n{}", "fn f() {}\n".repeat(MAX_LINES - 1));
        assert_eq!(too_long("a.rs", &short), None);
        let long = format!("//! Long.\n{body}");
        assert!(
            too_long("a.rs", &long)
                .unwrap()
                .contains("a.rs has 601 lines")
        );
        let reasoned =
            format!("//! Long.\n{LONG_FILE_MARK} one table, read top to bottom.\n{body}");
        assert_eq!(too_long("a.rs", &reasoned), None);
        // The mark counts only in the leading comments, and only with a reason.
        let buried = format!("//! Long.\n{body}{LONG_FILE_MARK} too late.\n");
        assert!(too_long("a.rs", &buried).is_some());
        let empty = format!("{LONG_FILE_MARK}\n{body}");
        assert!(too_long("a.rs", &empty).is_some());
    }

    fn packages() -> BTreeMap<String, Package> {
        BTreeMap::from([
            ("top".to_owned(), package("crates/top", &["low"], &["mid"])),
            ("mid".to_owned(), package("crates/mid", &["low"], &[])),
            ("low".to_owned(), package("crates/low", &[], &[])),
        ])
    }

    #[test]
    fn the_map_of_this_tree_is_true() {
        check(&crate::project_root()).unwrap();
    }

    #[test]
    fn a_table_that_matches_the_manifests_passes() {
        let m = map("top ──► low   (dev: mid)\nmid ──► low\nlow ──► nothing");
        assert_eq!(layering(&m, &packages()), Vec::<String>::new());
    }

    #[test]
    fn an_upward_dependency_is_refused() {
        // The table puts mid above top, so top's dev-dependency on mid points up.
        let m = map("mid ──► low\ntop ──► low   (dev: mid)\nlow ──► nothing");
        let problems = layering(&m, &packages());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("top depends on mid"), "{problems:?}");
    }

    #[test]
    fn a_dependency_the_table_does_not_list_is_refused() {
        let m = map("top ──► low\nmid ──► low\nlow ──► nothing");
        let problems = layering(&m, &packages());
        assert!(
            problems.iter().any(|p| p.contains("dev-depends")),
            "{problems:?}"
        );
        let m = map("top ──► low   (dev: mid)\nlow ──► nothing");
        let problems = layering(&m, &packages());
        assert!(
            problems
                .iter()
                .any(|p| p.contains("mid is missing from the dependency table")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_named_file_that_does_not_exist_is_reported_under_its_crate() {
        let m = map("low ──► nothing");
        let exists = |p: &str| p == "crates/low" || p == "crates/low/src/a.rs";
        assert_eq!(named_paths(&m, exists), Vec::<String>::new());
        let gone = |p: &str| p == "crates/low";
        assert_eq!(
            named_paths(&m, gone),
            ["`a.rs` is named but crates/low/src/a.rs does not exist"]
        );
    }

    #[test]
    fn a_crate_the_map_does_not_name_is_reported() {
        let m = map("low ──► nothing") + "`top` and `crates/mid/src/lib.rs`\n";
        let mut p = packages();
        assert_eq!(crates_named(&m, &p), Vec::<String>::new());
        p.insert("hidden".to_owned(), package("crates/hidden", &[], &[]));
        assert_eq!(
            crates_named(&m, &p),
            ["the crate hidden (crates/hidden) is not named"]
        );
    }
}
