//! The bench report as markdown: the scenarios beside their limits, open-loop latency
//! beside the machine's load, what each request asks of Redis and PostgreSQL, the
//! writes, the paused walk, the flood, the targets and the ablations.

use super::*;

/// A number with `digits` decimals, or a dash when there is none.
pub(crate) fn fmt(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or("–".to_owned(), |x| format!("{x:.digits$}"))
}

/// A scenario's CPU ratio to the static body, with its rounds' range when it has one.
fn ratio_with_range(s: &Value) -> String {
    let ratio = fmt(&s["cpu_ratio_to_static"], 2);
    match s["cpu_ratio_to_static_range"].as_array().map(Vec::as_slice) {
        Some([lo, hi]) => format!("{ratio} ({}–{})", fmt(lo, 2), fmt(hi, 2)),
        _ => ratio,
    }
}

/// The whole report, as `report.md`.
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
    md.push_str("## Scenarios\n\nCPU ratio: the server's CPU per request over the static body's, lower is better; for a read, measured in alternating rounds on the scenario's own server (the same streams asking for a static body of the warm pages' mean size), with the range of the rounds' own ratios in brackets; for a write, over the static-body limit's row. Server and generator CPU: per answered request in the peak phase (fixed concurrency), and the cores each used then; a run marked generator-bound had a generator using more CPU than the server, so its throughput is the generator's. P50–P99.9: open loop at half the peak rate, latency from when each request was due.\n\n");
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
                ratio_with_range(s)
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
        "\nLimits measured in the same run: static body {} RPS at {} µs of server CPU each (the server used {} % of the CPU it and the generator used); pgbench {} cold pages/s ({} statements each; pgbench itself {} cores); redis-benchmark {} MGET/s of 40 keys (redis-benchmark itself {} µs CPU each).\n",
        fmt(&l["static_body"]["peak"]["rps"], 0),
        fmt(&l["static_body"]["cpu_us_per_request"], 1),
        fmt(&json!(l["static_body"]["peak"]["server_share"].as_f64().map(|x| x * 100.0)), 0),
        fmt(&l["pgbench"]["pages_per_second"], 0),
        fmt(&l["pgbench"]["statements_per_page"], 0),
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
    md.push_str(&latency_and_load(r));
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
    md.push_str("\n## Ablations (home feed, peak phase)\n\nCPU factor: server CPU per request without the optimization over with it (above 1 it saves CPU). Both sides run at once on two servers and are measured in alternating rounds (before–after, after–before, …), half a peak phase each; the factor is over all rounds, and its range is the lowest and highest of the rounds' own factors (the run's noise).\n\n| optimization | CPU µs/req before | after | CPU factor | rounds' range | RPS before | after | RPS factor |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for a in r["ablations"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {} | {} | {}× | {}–{}× | {} | {} | {}× |\n",
            a["name"].as_str().unwrap_or(""),
            fmt(&a["before_cpu_us_per_request"], 1),
            fmt(&a["after_cpu_us_per_request"], 1),
            fmt(&a["cpu_factor"], 2),
            fmt(&a["cpu_factor_range"][0], 2),
            fmt(&a["cpu_factor_range"][1], 2),
            fmt(&a["before_rps"], 0),
            fmt(&a["after_rps"], 0),
            fmt(&a["factor"], 2),
        ));
    }
    md
}

/// The open-loop phases beside how busy the machine was: at half the peak the generator,
/// on the same cores, may leave the machine far more than half busy; where it did, the
/// same load at the rate that leaves it half busy.
fn latency_and_load(r: &Value) -> String {
    let mut md = format!(
        "\n## Open-loop latency and the machine's load\n\nMachine cores: how many of its {} cores were busy with anything (the server, the generator, Redis, PostgreSQL, the kernel), from `/proc/stat`. Where half the peak left more than half of them busy, the second phase runs at the rate that leaves about half busy.\n\n| scenario | half the peak, req/s | machine cores | P50 ms | P99 ms | machine half busy, req/s | machine cores | P50 ms | P99 ms | P99.9 ms |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        r["machine"]["cores"]
    );
    for s in r["scenarios"].as_array().into_iter().flatten() {
        let (a, h) = (&s["at_rate"], &s["at_half_machine"]);
        if a.is_null() {
            continue;
        }
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            s["name"].as_str().unwrap_or(""),
            fmt(&s["rate"], 0),
            fmt(&a["machine_cores"], 2),
            fmt(&a["p50_ms"], 2),
            fmt(&a["p99_ms"], 2),
            fmt(&h["rate"], 0),
            fmt(&h["machine_cores"], 2),
            fmt(&h["p50_ms"], 2),
            fmt(&h["p99_ms"], 2),
            fmt(&h["p999_ms"], 2),
        ));
    }
    md
}
