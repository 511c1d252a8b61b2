//! `--soak`: the warm feed at half its peak rate for minutes, one row per minute, with
//! CPU profiles of the first and last minute.

use super::*;

/// One row of the soak table from a one-minute open-loop phase.
pub(crate) fn soak_row(minute: u64, uptime: Duration, v: &Value) -> Value {
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
pub(crate) fn soak(
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
        load::phase(&t, "soak", &streams, ph.peak, peak_load(&streams, ph))
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
pub(crate) struct Profile {
    pub(crate) child: Child,
    pub(crate) data: PathBuf,
    pub(crate) minute: u64,
}

impl Profile {
    pub(crate) fn start(server: &Server, out_dir: &Path, minute: u64) -> Option<Self> {
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
    pub(crate) fn finish(mut self) -> Result<Value> {
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
pub(crate) fn soak_markdown(r: &Value) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn a_soak_minute_is_a_row() {
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
