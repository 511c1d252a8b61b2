//! The report: ratios to the limits, targets, ablations, markdown, and the comparison
//! with a baseline.

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

pub(crate) fn fmt(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or("–".to_owned(), |x| format!("{x:.digits$}"))
}

pub(crate) fn markdown(r: &Value) -> String {
    let mut md = format!(
        "# quiver bench ({} scale, {} build), {}\n\nMachine: {} × {} cores, {} GiB. Load generator: one wrk process, one thread per core, every request from the next of the streams by weight (each viewer of the fixed set of {} is one stream, and each writer), on the same cores, compression off. Ratios are from this run only.\n\n",
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
        "\nLimits measured in the same run: static body {} RPS at {} µs of server CPU each (the server used {} % of the CPU it and the generator used); pgbench {} cold pages/s (9 statements each; pgbench itself {} cores); redis-benchmark {} MGET/s of 40 keys (redis-benchmark itself {} µs CPU each).\n",
        fmt(&l["static_body"]["peak"]["rps"], 0),
        fmt(&l["static_body"]["cpu_us_per_request"], 1),
        fmt(&json!(l["static_body"]["peak"]["server_share"].as_f64().map(|x| x * 100.0)), 0),
        fmt(&l["pgbench"]["pages_per_second"], 0),
        fmt(&l["pgbench"]["client_cores"], 2),
        fmt(&l["redis_benchmark"]["mget_per_second"], 0),
        fmt(&l["redis_benchmark"]["client_cpu_us_per_mget"], 1),
    ));
    let c = &r["conditional"];
    if !c.is_null() {
        md.push_str(&format!(
            "\nRevalidation: a warm page answered 304 (`If-None-Match`) costs {} µs of server CPU against {} µs for its 200 ({}×; {} against {} RPS), and sends {} body bytes instead of {}.\n",
            fmt(&c["cpu_us_304"], 1),
            fmt(&c["cpu_us_200"], 1),
            fmt(&c["cpu_ratio"], 2),
            fmt(&c["rps_304"], 0),
            fmt(&c["rps_200"], 0),
            fmt(&c["bytes_304"], 0),
            fmt(&c["bytes_200"], 0),
        ));
    }
    md.push_str("\n## What a request asks of Redis and PostgreSQL\n\nPer answered request in the peak phase: commands Redis processed (L2 reads and fills, invalidations, the event stream) and transactions of the database (each read statement is one; a write is one with its outbox row, and its events' effects are more). The capacity model in ARCHITECTURE.md is built from these.\n\n| scenario | peak RPS | Redis commands/req | PostgreSQL transactions/req |\n| --- | --- | --- | --- |\n");
    for s in r["scenarios"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            s["name"].as_str().unwrap_or(""),
            fmt(&s["peak"]["rps"], 0),
            fmt(&s["redis_commands_per_request"], 3),
            fmt(&s["pg_transactions_per_request"], 3),
        ));
    }
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

    pub(crate) fn sample(warm_cpu: f64, warm_rps: f64) -> Value {
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
