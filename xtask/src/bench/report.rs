//! The report: ratios to the limits, targets, ablations, and the comparison with a
//! baseline (`markdown.rs` renders it).

use super::*;

/// The machine's own limits each scenario is compared with.
pub(crate) struct Limits {
    /// The warm pages' size sent as a static body.
    pub(crate) static_body: Value,
    /// pgbench running the cold page's statements.
    pub(crate) pg: Value,
    /// redis-benchmark running the L2 page's MGETs.
    pub(crate) redis: Value,
}

pub(crate) fn report(
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
    // Per ablation: its runs before and after.
    let mut ablations: BTreeMap<String, (Option<&Value>, Option<&Value>)> = BTreeMap::new();
    for r in results {
        let group = r["group"].as_str().unwrap_or("");
        let rps = r["peak"]["rps"].as_f64().unwrap_or(0.0);
        let cpu = r["cpu_us_per_request"].as_f64();
        if let Some(rest) = group.strip_prefix("ablation:") {
            let (name, side) = rest.rsplit_once(':').unwrap_or((rest, "after"));
            let e = ablations.entry(name.to_owned()).or_default();
            if side == "before" {
                e.0 = Some(r);
            } else {
                e.1 = Some(r);
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
        // Measured against the static body in alternating rounds on the scenario's own
        // server where it was (every read); else against the static-body limit's run.
        let paired = &r["paired"];
        if paired["with"] == "static" {
            s["cpu_ratio_to_static"] = paired["ratio"].clone();
            s["cpu_ratio_to_static_range"] = paired["ratio_range"].clone();
        } else {
            s["cpu_ratio_to_static"] = json!(cpu_ratio(cpu, static_cpu));
        }
        scenarios.push(s);
    }
    let ablations: Vec<Value> = ablations
        .into_iter()
        .map(|(name, (before, after))| {
            let rps = |r: Option<&Value>| r.and_then(|r| r["peak"]["rps"].as_f64());
            let cpu = |r: Option<&Value>| r.and_then(|r| r["cpu_us_per_request"].as_f64());
            let factor = match (rps(before), rps(after)) {
                (Some(b), Some(a)) if b > 0.0 => Some(a / b),
                _ => None,
            };
            // Above 1: the optimization saves server CPU per request.
            let cpu_factor = match (cpu(before), cpu(after)) {
                (Some(b), Some(a)) if a > 0.0 => Some(b / a),
                _ => None,
            };
            // Each round's own factor (the sides' rounds are paired by position).
            let rounds = |r: Option<&Value>| -> Vec<f64> {
                r.and_then(|r| r["rounds_cpu_us"].as_array())
                    .map(|a| a.iter().filter_map(Value::as_f64).collect())
                    .unwrap_or_default()
            };
            let per_round: Vec<f64> = rounds(before)
                .iter()
                .zip(rounds(after))
                .filter(|(_, a)| *a > 0.0)
                .map(|(b, a)| b / a)
                .collect();
            let range = range(&per_round);
            json!({"name": name,
                "before_rps": rps(before), "after_rps": rps(after), "factor": factor,
                "before_cpu_us_per_request": cpu(before),
                "after_cpu_us_per_request": cpu(after),
                "cpu_factor_range": range,
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
        let Some(s) = find(name) else { continue };
        let busy = |v: &Value| {
            v["machine_cores"].as_f64().map_or(String::new(), |c| {
                format!(", {c:.2} cores of the machine busy")
            })
        };
        if let Some(p99) = s["at_rate"]["p99_ms"].as_f64() {
            targets.push(
                json!({"target": format!("{name}: P99 ≤ 2 ms at half the peak rate (open loop)"),
                "measured": format!("{p99:.2} ms{}", busy(&s["at_rate"])), "met": p99 <= 2.0}),
            );
        }
        let h = &s["at_half_machine"];
        if let (Some(p99), Some(rate)) = (h["p99_ms"].as_f64(), h["rate"].as_f64()) {
            targets.push(json!({
                "target": format!("{name}: P99 ≤ 2 ms with the machine half busy (open loop; the generator shares its cores)"),
                "measured": format!("{p99:.2} ms at {rate:.0} req/s{}", busy(h)),
                "met": p99 <= 2.0}));
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
        let name = a["name"].as_str().unwrap_or("");
        let range = match (
            a["cpu_factor_range"][0].as_f64(),
            a["cpu_factor_range"][1].as_f64(),
        ) {
            (Some(lo), Some(hi)) => format!(" (CPU {lo:.2}–{hi:.2}× by round)"),
            _ => String::new(),
        };
        if name == "traces off" {
            // Spans compiled in but off against compiled out: the claim is that they cost
            // nothing the run can tell from its own noise.
            if let Some(f) = a["cpu_factor"].as_f64() {
                let within = a["cpu_factor_range"][1]
                    .as_f64()
                    .is_some_and(|hi| hi >= 1.0);
                targets.push(
                    json!({"target": "trace spans, off, cost no CPU beyond the rounds' noise",
                    "measured": format!("{f:.2}×{range}"), "met": f >= 1.0 || within}),
                );
            }
        } else if let Some(f) = a["factor"].as_f64() {
            targets.push(
                json!({"target": format!("{name} is not slower than without it"),
                "measured": format!("{f:.2}×{range}"), "met": f >= 1.0}),
            );
        }
    }
    // What revalidating a warm page costs against sending it.
    let conditional = match (find("warm"), find("warm 304")) {
        (Some(full), Some(not_modified)) => json!({
            "cpu_us_200": full["cpu_us_per_request"],
            "cpu_us_304": not_modified["cpu_us_per_request"],
            "cpu_ratio": cpu_ratio(not_modified["cpu_us_per_request"].as_f64(),
                full["cpu_us_per_request"].as_f64().unwrap_or(0.0)),
            "rps_200": full["peak"]["rps"],
            "rps_304": not_modified["peak"]["rps"],
            "bytes_200": full["bytes_per_request"],
            "bytes_304": not_modified["bytes_per_request"],
        }),
        _ => Value::Null,
    };
    json!({
        "targets": targets,
        "conditional": conditional,
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
pub(crate) fn cpu_ratio(cpu: Option<f64>, static_cpu: f64) -> Option<f64> {
    cpu.filter(|_| static_cpu > 0.0).map(|c| c / static_cpu)
}

pub(crate) fn chrono_like_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

pub(crate) fn machine() -> Value {
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

/// The ratios `--baseline` compares, each with whether higher is better: a scenario's
/// server CPU per request over the static body's (the headline; lower is better), its
/// throughput over its limit, an ablation's throughput and CPU factors.
pub(crate) fn ratios(r: &Value) -> BTreeMap<String, (f64, bool)> {
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
pub(crate) fn regressions(report: &Value, base: &Value) -> Vec<String> {
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
pub(crate) fn compare(report: &Value, baseline: &Path) -> Result<()> {
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

    pub(crate) fn scenario(name: &str, rps: f64, cpu: f64) -> Value {
        json!({"name": name, "group": "scenario", "peak": {"rps": rps}, "cpu_us_per_request": cpu})
    }

    fn quick_options() -> Options {
        Options {
            quick: true,
            scale: "small",
            baseline: None,
            soak: None,
            pgo: false,
        }
    }

    pub(crate) fn sample(warm_cpu: f64, warm_rps: f64) -> Value {
        let o = quick_options();
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
    pub(crate) fn the_headline_is_cpu_per_request_over_the_static_bodys() {
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
    pub(crate) fn a_read_measured_in_rounds_against_the_static_body_takes_that_ratio() {
        let mut profile = scenario("profile", 8000.0, 15.0);
        profile["paired"] = json!({"with": "static", "ratio": 1.2, "ratio_range": [1.1, 1.3],
            "cpu_us_per_request": 15.0, "with_cpu_us_per_request": 12.5, "rounds": 4});
        let o = quick_options();
        let limits = Limits {
            static_body: json!({"name": "static", "cpu_us_per_request": 10.0,
                "peak": {"rps": 10_000.0}}),
            pg: json!({}),
            redis: json!({}),
        };
        let r = report(&o, 8, &[profile], json!({}), limits, Duration::from_secs(1));
        let s = &r["scenarios"][0];
        // Not 15 / 10 from the limit's run: the rounds' own ratio.
        assert!((s["cpu_ratio_to_static"].as_f64().unwrap() - 1.2).abs() < 1e-9);
        let target = r["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["target"].as_str().unwrap().starts_with("GET /users/{id}"))
            .unwrap();
        assert_eq!(target["met"], true);
        let md = markdown(&r);
        assert!(md.contains("| profile | 1.20 (1.10–1.30) | 15.0 |"), "{md}");
    }

    #[test]
    pub(crate) fn the_baseline_fails_on_a_worse_ratio_either_way() {
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
}
