//! One run measured: the closed-loop peak and the open-loop phase at half of it (again
//! at the rate that leaves the machine half busy, when half the peak did not), with
//! the server's CPU, cache outcomes and event lag beside the generator's numbers; and an
//! ablation's two sides measured in alternating rounds on two servers running at once.

use super::*;

/// Runs `phase` and adds the server's side of it: CPU seconds, cores and CPU per answered
/// request (from `/proc`), RSS at the end, whether the server or the generator was
/// the busier (`server_share`: the server's part of the CPU both used), and how many of
/// the machine's cores were busy with anything (`machine_cores`).
pub(crate) fn with_server_cpu(
    server: &Server,
    phase: impl FnOnce() -> Result<Value>,
) -> Result<Value> {
    let (cpu0, _) = server.usage();
    let busy0 = crate::cpu::machine_busy();
    let started = Instant::now();
    let mut v = phase()?;
    let wall = started.elapsed().as_secs_f64().max(f64::MIN_POSITIVE);
    let busy1 = crate::cpu::machine_busy();
    let (cpu1, rss) = server.usage();
    let cpu = (cpu1 - cpu0).max(0.0);
    let requests = v["requests"].as_f64().unwrap_or(0.0).max(1.0);
    let generator = v["generator"]["cpu_seconds"].as_f64().unwrap_or(0.0);
    let share = cpu / (cpu + generator).max(f64::MIN_POSITIVE);
    v["server"] = json!({
        "cpu_seconds": cpu,
        "cores": cpu / wall,
        "cpu_us_per_request": cpu * 1e6 / requests,
        "rss_bytes": rss,
    });
    v["server_share"] = json!(share);
    if let (Some(b0), Some(b1)) = (busy0, busy1) {
        v["machine_cores"] = json!((b1 - b0).max(0.0) / wall);
    }
    v["generator_bound"] = json!(generator > GENERATOR_CPU_MAX * cpu);
    Ok(v)
}

/// How long PostgreSQL may take to publish a backend's statistics once it is idle.
const STATS_FLUSH: Duration = Duration::from_millis(1500);

/// Warm-up, then the peak phase (fixed concurrency), the rounds against `paired` (the
/// static body) when given, and, for scenarios, the open-loop phase at half the peak
/// rate; CPU of the server and of the load generator per phase, RSS of the server from
/// `/proc`, cache outcomes and event lag from its `/metrics`.
pub(crate) fn measure(
    wrk: &Path,
    server: &Server,
    run: &Run,
    paired: Option<&Run>,
    f: &Fixture,
    ph: &Phases,
) -> Result<Value> {
    let dir = std::env::temp_dir();
    let t = Target::new(wrk, server.api, &f.tokens, &dir);
    // The warm-up is recorded (it gives the answers' body size); the peak is counted.
    let closed = Load::Concurrency(ph.concurrency);
    let warmup = load::phase(&t, &run.name, &run.streams, ph.warmup, closed)?;
    // What each request asks of Redis and PostgreSQL (the capacity model's inputs),
    // over the peak phase, each side after PostgreSQL has published its counts.
    std::thread::sleep(STATS_FLUSH);
    let (redis0, pg0) = server.backend_ops();
    let peak = with_server_cpu(server, || {
        load::phase(
            &t,
            &run.name,
            &run.streams,
            ph.peak,
            peak_load(&run.streams, ph),
        )
    })?;
    std::thread::sleep(STATS_FLUSH);
    let (redis1, pg1) = server.backend_ops();
    let answered = peak["requests"].as_f64().unwrap_or(0.0).max(1.0);
    let mut result = json!({
        "name": run.name,
        "group": run.group,
        "flags": run.flags,
        "streams": run.streams.len(),
        "bytes_per_request": warmup["bytes_per_request"],
        "cpu_us_per_request": peak["server"]["cpu_us_per_request"],
        "server_cores": peak["server"]["cores"],
        "rss_bytes": peak["server"]["rss_bytes"],
        "generator_cpu_us_per_request": peak["generator"]["cpu_us_per_request"],
        "generator_cores": peak["generator"]["cores"],
        "generator_bound": peak["generator_bound"],
        "redis_commands_per_request": (redis1 - redis0).max(0.0) / answered,
        "pg_transactions_per_request": (pg1 - pg0).max(0.0) / answered,
        "peak": peak,
    });
    if let Some(other) = paired {
        result["paired"] = paired_rounds(&t, server, [run, other], ph)?;
    }
    if run.at_rate {
        let rate = (result["peak"]["rps"].as_f64().unwrap_or(0.0) / 2.0).max(1.0);
        let at = |rate: f64, secs: Duration| {
            with_server_cpu(server, || {
                let load = Load::Rate(rate, ph.concurrency);
                load::phase(&t, &run.name, &run.streams, secs, load)
            })
        };
        let at_rate = at(rate, ph.rate)?;
        // The generator shares the machine and, pacing and recording each request, costs
        // about as much per request as the server: at half the peak the machine may be
        // far more than half busy, and the tail is then its queueing, not the server's.
        // When it was, the same again at the rate that leaves the machine half busy.
        let half = f64::from(crate::cpu::cores()) / 2.0;
        let busy = |v: &Value| v["machine_cores"].as_f64().unwrap_or(0.0);
        if busy(&at_rate) > half {
            // A request costs more CPU at a lower rate (fewer answered per wake-up), so
            // the rate is scaled down in short probes until the machine is about half busy.
            let (mut r, mut b) = (rate, busy(&at_rate));
            for _ in 0..HALF_MACHINE_PROBES {
                r = (r * half / b.max(f64::MIN_POSITIVE)).max(1.0);
                b = busy(&at(r, (ph.rate / 5).max(Duration::from_secs(1)))?);
                if b <= half * 1.1 {
                    break;
                }
            }
            let mut v = at(r, ph.rate)?;
            v["rate"] = json!(r);
            result["at_half_machine"] = v;
        }
        result["rate"] = json!(rate);
        result["at_rate"] = at_rate;
    }
    let metrics = server.metrics();
    result["cache"] = cache_outcomes(&metrics);
    if run.writes() {
        result["events"] = event_lag(server)?;
    }
    Ok(result)
}

/// Short probes that look for the rate which leaves the machine half busy.
const HALF_MACHINE_PROBES: usize = 3;

/// The peak phase's load: counted by wrk alone (no record per answer, the generator's
/// cheapest mode) unless a stream expects a status a count cannot tell apart.
pub(crate) fn peak_load(streams: &[Stream], ph: &Phases) -> Load {
    if streams.iter().all(Stream::countable) {
        Load::Counted(ph.concurrency)
    } else {
        Load::Concurrency(ph.concurrency)
    }
}

/// Rounds of an ablation: each side's peak is split into this many phases, alternating
/// with the other side's, so a drift of the shared machine falls on both alike.
pub(crate) const ABLATION_ROUNDS: u32 = 4;

/// An ablation's two runs (`before`, `after`) measured on two servers running at once:
/// both warmed up, then `ABLATION_ROUNDS` rounds of counted peak phases, half a peak each
/// (so each side gets twice a scenario's peak), in the order before–after, after–before,
/// and so on. Each side's CPU per request is over all its rounds; `rounds_cpu_us` keeps
/// the rounds', so the report can show their spread.
pub(crate) fn measure_ablation(
    wrk: &Path,
    servers: [&Server; 2],
    runs: [&Run; 2],
    f: &Fixture,
    ph: &Phases,
) -> Result<[Value; 2]> {
    let dir = std::env::temp_dir();
    let targets = servers.map(|s| Target::new(wrk, s.api, &f.tokens, &dir));
    let mut warmups = Vec::new();
    for (t, run) in targets.iter().zip(runs) {
        let closed = Load::Concurrency(ph.concurrency);
        warmups.push(load::phase(t, &run.name, &run.streams, ph.warmup, closed)?);
    }
    let round = (ph.peak / 2).max(Duration::from_secs(1));
    let secs = round.as_secs_f64() * f64::from(ABLATION_ROUNDS);
    let sides = alternate(
        [
            (&targets[0], servers[0], runs[0]),
            (&targets[1], servers[1], runs[1]),
        ],
        round,
        ph,
    )?;
    let side = |i: usize| {
        let Side {
            cpu,
            requests,
            generator,
            unexpected,
            ref rounds,
        } = sides[i];
        let server = servers[i];
        json!({
            "name": runs[i].name,
            "group": runs[i].group,
            "flags": runs[i].flags,
            "streams": runs[i].streams.len(),
            "bytes_per_request": warmups[i]["bytes_per_request"],
            "cpu_us_per_request": cpu * 1e6 / requests.max(1.0),
            "rounds_cpu_us": rounds,
            "server_cores": cpu / secs,
            "rss_bytes": server.usage().1,
            "generator_cpu_us_per_request": generator * 1e6 / requests.max(1.0),
            "generator_cores": generator / secs,
            "generator_bound": generator > GENERATOR_CPU_MAX * cpu,
            "peak": {
                "rps": requests / secs,
                "requests": requests,
                "unexpected": unexpected,
                "rounds": ABLATION_ROUNDS,
            },
            "cache": cache_outcomes(&server.metrics()),
        })
    };
    Ok([side(0), side(1)])
}

/// `runs[0]` against `runs[1]` on one server: `ABLATION_ROUNDS` rounds of a quarter
/// peak each, alternating (0–1, 1–0, …), so the two are measured minutes apart by no
/// drift of the shared machine. The scenario's CPU per request over the other's, over
/// all rounds and the range of the rounds' own ratios.
fn paired_rounds(t: &Target, server: &Server, runs: [&Run; 2], ph: &Phases) -> Result<Value> {
    let round = (ph.peak / ABLATION_ROUNDS).max(Duration::from_secs(1));
    let [a, b] = alternate([(t, server, runs[0]), (t, server, runs[1])], round, ph)?;
    let per_request = |s: &Side| s.cpu * 1e6 / s.requests.max(1.0);
    let ratios: Vec<f64> = a
        .rounds
        .iter()
        .zip(&b.rounds)
        .map(|(a, b)| a / b.max(f64::MIN_POSITIVE))
        .collect();
    Ok(json!({
        "with": runs[1].name,
        "rounds": ABLATION_ROUNDS,
        "cpu_us_per_request": per_request(&a),
        "with_cpu_us_per_request": per_request(&b),
        "ratio": per_request(&a) / per_request(&b).max(f64::MIN_POSITIVE),
        "ratio_range": range(&ratios),
    }))
}

/// One side of alternating rounds: totals over its rounds, and each round's CPU µs per
/// request.
#[derive(Default)]
pub(crate) struct Side {
    cpu: f64,
    requests: f64,
    generator: f64,
    unexpected: u64,
    rounds: Vec<f64>,
}

/// `ABLATION_ROUNDS` rounds of `round` each, the two sides' counted peak phases in
/// alternating order (0–1, 1–0, …), so a drift of the shared machine falls on both alike.
fn alternate(
    sides: [(&Target, &Server, &Run); 2],
    round: Duration,
    ph: &Phases,
) -> Result<[Side; 2]> {
    let mut out = [Side::default(), Side::default()];
    for r in 0..ABLATION_ROUNDS {
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (t, server, run) = sides[side];
            let load = peak_load(&run.streams, ph);
            let v = with_server_cpu(server, || {
                load::phase(t, &run.name, &run.streams, round, load)
            })?;
            let requests = v["requests"].as_f64().unwrap_or(0.0);
            let cpu = v["server"]["cpu_seconds"].as_f64().unwrap_or(0.0);
            let s = &mut out[side];
            s.cpu += cpu;
            s.requests += requests;
            s.generator += v["generator"]["cpu_seconds"].as_f64().unwrap_or(0.0);
            s.unexpected += v["unexpected"].as_u64().unwrap_or(0);
            s.rounds.push(cpu * 1e6 / requests.max(1.0));
        }
    }
    Ok(out)
}

/// The lowest and highest of `xs` (`None` when empty).
pub(crate) fn range(xs: &[f64]) -> Option<[f64; 2]> {
    (!xs.is_empty()).then(|| {
        let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        [lo, hi]
    })
}

/// Cache outcome totals from `/metrics`.
pub(crate) fn cache_outcomes(metrics: &str) -> Value {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("quiver_cache_lookups_total{"))
    {
        let outcome = line
            .split("outcome=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?");
        let n: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *out.entry(outcome.to_owned()).or_default() += n;
    }
    json!(out)
}

/// Waits for the event pipeline to drain, then reads the commit-to-effect lag histogram
/// (percentiles as the upper bound of the bucket they fall in) and the pipeline counters.
pub(crate) fn event_lag(server: &Server) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut metrics;
    loop {
        metrics = server.metrics();
        let backlog = metric(&metrics, "quiver_outbox_backlog").unwrap_or(0.0);
        let relayed = metric(&metrics, "quiver_events_total{stage=\"relayed\"}").unwrap_or(0.0);
        let handled = metric(&metrics, "quiver_events_total{stage=\"handled\"}").unwrap_or(0.0);
        if (backlog == 0.0 && handled >= relayed) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("quiver_event_lag_seconds_bucket{"))
    {
        let le = line.split("le=\"").nth(1).and_then(|r| r.split('"').next());
        let n: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if let Some(le) = le.and_then(|l| l.parse::<f64>().ok()) {
            *buckets.entry((le * 1e6) as u64).or_default() += n;
        }
    }
    let total = buckets.values().copied().fold(0.0, f64::max);
    let quantile = |q: f64| {
        buckets
            .iter()
            .find(|(_, n)| **n >= q * total)
            .map(|(le, _)| *le as f64 / 1000.0)
    };
    Ok(json!({
        "handled": metric(&metrics, "quiver_events_total{stage=\"handled\"}"),
        "dead_lettered": metric(&metrics, "quiver_events_total{stage=\"dead_lettered\"}"),
        "lag_p50_ms_at_most": quantile(0.5),
        "lag_p99_ms_at_most": quantile(0.99),
    }))
}

pub(crate) fn metric(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}
