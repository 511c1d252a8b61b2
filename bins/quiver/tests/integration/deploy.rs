//! What `deploy/` gives operators, checked against a running `quiver serve`: the
//! Prometheus rules pass `promtool check rules` and their unit tests, the live `/metrics`
//! passes `promtool check metrics`, and every metric the rules and the Grafana dashboard
//! name is one quiver exports (or a rule records).

use crate::events::{Database, Replica, blocking, namespace, token};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file)
}

fn promtool() -> PathBuf {
    crate::tool("QUIVER_PROMTOOL", "promtool", "prometheus")
}

/// Runs promtool with `args` (and `stdin`), failing with what it printed.
fn run_promtool(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write as _;
    let mut child = Command::new(promtool())
        .args(args)
        .current_dir(deploy("prometheus"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{printed}");
    printed
}

/// The metric-like names in `text`: words starting with `quiver_`, `quiver:` or
/// `process_` (words are runs of letters, digits, `_` and `:`).
fn names_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| {
            ["quiver_", "quiver:", "process_"]
                .iter()
                .any(|p| w.len() > p.len() && w.starts_with(p))
        })
        .map(str::to_owned)
        .collect()
}

/// The series names an exposition holds: each family, with a histogram's `_bucket`,
/// `_sum` and `_count`.
fn exported(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        names.insert(name.to_owned());
        if kind == "histogram" || kind == "summary" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

#[test]
fn rules_and_dashboard_name_only_metrics_a_running_quiver_exports() {
    // The rules are valid and their unit tests pass.
    let checked = run_promtool(&["check", "rules", "rules.yml"], None);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run_promtool(&["test", "rules", "rules_test.yml"], None);
    assert!(tested.contains("SUCCESS"), "{tested}");

    // A quiver on PostgreSQL and Redis, with its event layer, after a read and a write
    // whose event has been handled: every family has its series.
    let db = Database::seeded_on(&quiver_testkit::database_url(), "deploy", 40);
    let ns = namespace();
    let server = Replica::start_on(&db, &quiver_testkit::redis_url(), &ns, &[], &[]);
    let (a, b) = db.pair(
        "SELECT x.id, y.id FROM users x, users y WHERE x.id <> y.id
           AND NOT EXISTS (SELECT 1 FROM follows WHERE follower_id = x.id AND followee_id = y.id)
           AND NOT EXISTS (SELECT 1 FROM blocks WHERE blocker_id IN (x.id, y.id)
                                                  AND blocked_id IN (x.id, y.id))
         ORDER BY x.id, y.id LIMIT 1",
    );
    let client = reqwest::Client::new();
    let (status, _) = blocking::send(client.get(server.url("/api/v1/feed")).bearer_auth(token(a)));
    assert_eq!(status, 200);
    let (status, _) = blocking::send(
        client
            .put(server.url(&format!("/api/v1/users/{b}/follow")))
            .bearer_auth(token(a)),
    );
    assert_eq!(status, 204);
    quiver_testkit::eventually_blocking(
        "the follow's event is handled and its lag observed",
        quiver_testkit::DEADLINE,
        || server.metric("quiver_event_lag_seconds_count") > 0.0,
    );
    let exposition = blocking::get(&server.admin_url("/metrics"));

    // The live exposition passes Prometheus's own lint.
    let linted = run_promtool(&["check", "metrics"], Some(&exposition));
    assert!(
        !linted.contains("counter metrics should have"),
        "promtool check metrics: {linted}"
    );

    let mut exported = exported(&exposition);
    let rules = std::fs::read_to_string(deploy("prometheus/rules.yml")).unwrap();
    let recorded: BTreeSet<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .map(|n| n.trim().to_owned())
        .collect();
    assert!(recorded.len() >= 10, "{recorded:?}");
    exported.extend(recorded.iter().cloned());
    let dashboard = std::fs::read_to_string(deploy("grafana/quiver.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let exprs: Vec<&str> = parsed["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    assert!(exprs.len() >= 20, "the dashboard has its panels");
    for (what, text) in [
        ("rules.yml", rules.clone()),
        ("quiver.json", exprs.join("\n")),
    ] {
        let named = names_in(&text);
        assert!(named.len() >= 10, "{what} names metrics: {named:?}");
        let unknown: Vec<_> = named.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{what} names metrics quiver does not export: {unknown:?}\nexported: {exported:?}"
        );
    }
    // And the other way: each family quiver exports is on the dashboard.
    let shown = names_in(&exprs.join("\n"));
    let families: Vec<_> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .filter(|n| n.starts_with("quiver_"))
        .filter(|n| {
            !shown
                .iter()
                .any(|s| s == n || s.strip_prefix(*n).is_some_and(|r| r.starts_with('_')))
        })
        .collect();
    assert!(
        families.is_empty(),
        "exported but on no panel: {families:?}"
    );
}
