//! The load side of `cargo xtask bench`: a run is a set of streams, each one oha process
//! with its own identity (bearer token), requests and share of the load, all started
//! together; their per-request records are merged into one latency histogram.
//!
//! oha sends one `Authorization` header per process, so a fixed set of viewers is a set of
//! processes, and a weighted mix (reads beside writes) is a set of processes whose rates
//! (open loop) or connections (closed loop) follow the weights. Percentiles of several
//! processes cannot be combined from their summaries, hence oha's per-request CSV.

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Reads are compared with a limit; writes in a mixed run are reported on their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Read,
    Write,
}

/// What one oha process sends, as whom, and its share of the run's load.
#[derive(Clone, Debug)]
pub(crate) struct Stream {
    pub(crate) kind: Kind,
    /// Whose bearer token it sends (none: anonymous).
    pub(crate) user: Option<i64>,
    pub(crate) method: &'static str,
    /// One path, or several that oha picks from at random (`--urls-from-file`).
    pub(crate) paths: Vec<String>,
    pub(crate) body: Option<String>,
    /// Its share of the run's connections (closed loop) or rate (open loop).
    pub(crate) weight: f64,
    /// Statuses that are a correct answer here (a repeated follow is 409, say).
    pub(crate) expect: &'static [u16],
}

impl Stream {
    pub(crate) fn get(user: Option<i64>, paths: Vec<String>) -> Self {
        Self {
            kind: Kind::Read,
            user,
            method: "GET",
            paths,
            body: None,
            weight: 1.0,
            expect: &[200],
        }
    }
}

/// How a phase loads the server.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Load {
    /// Closed loop: this many connections in all, each sending its next request when the
    /// last one is answered.
    Concurrency(u32),
    /// Open loop: this many requests per second in all, latency measured from when each
    /// request was due (oha's `--latency-correction`), on at most this many connections.
    Rate(f64, u32),
}

/// One answered request, from oha's CSV.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Record {
    micros: u64,
    status: u16,
    bytes: u64,
}

/// Where the streams go and with which tokens.
pub(crate) struct Target<'a> {
    pub(crate) oha: &'a Path,
    pub(crate) api: SocketAddr,
    pub(crate) tokens: &'a BTreeMap<i64, String>,
    pub(crate) dir: &'a Path,
}

/// Each stream's share of `total`, by weight; at least `min`.
fn split(streams: &[Stream], total: f64, min: f64) -> Vec<f64> {
    let sum: f64 = streams
        .iter()
        .map(|s| s.weight)
        .sum::<f64>()
        .max(f64::MIN_POSITIVE);
    streams
        .iter()
        .map(|s| (total * s.weight / sum).max(min))
        .collect()
}

/// Runs every stream for `duration` under `load`, all at once, and summarizes the merged
/// records: all requests, and reads and writes apart when the run has both.
pub(crate) fn phase(
    t: &Target<'_>,
    name: &str,
    streams: &[Stream],
    duration: Duration,
    load: Load,
) -> Result<Value> {
    if streams.is_empty() {
        bail!("{name} has no streams");
    }
    let (connections, rates) = match load {
        Load::Concurrency(c) => (split(streams, f64::from(c), 1.0), None),
        Load::Rate(r, c) => (
            split(streams, f64::from(c), 2.0),
            Some(split(streams, r, 0.0)),
        ),
    };
    let stamp = std::process::id();
    let mut children: Vec<(Child, PathBuf)> = Vec::new();
    for (i, s) in streams.iter().enumerate() {
        let out = t.dir.join(format!("oha-{stamp}-{i}.csv"));
        let mut cmd = Command::new(t.oha);
        // Compression off: on loopback it only spends CPU, and the static-body limit
        // is then the same bytes on the wire as the page it is compared with.
        cmd.args([
            "--no-tui",
            "--disable-compression",
            "--output-format",
            "csv",
        ])
        .args(["--worker-threads", "1", "-w", "-z"])
        .arg(format!("{}ms", duration.as_millis()))
        .args(["-m", s.method, "-c"])
        .arg(format!("{:.0}", connections[i].round()))
        .arg("-o")
        .arg(&out);
        if let Some(rates) = &rates {
            cmd.args(["-q", &format!("{:.3}", rates[i].max(0.001))])
                .arg("--latency-correction");
        }
        if let Some(user) = s.user {
            let token = t.tokens.get(&user).context("a token for every user")?;
            cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        if let Some(body) = &s.body {
            cmd.args(["-H", "Content-Type: application/json", "-d", body]);
        }
        let urls: Vec<String> = s
            .paths
            .iter()
            .map(|p| format!("http://{}{p}", t.api))
            .collect();
        match urls.as_slice() {
            [] => bail!("a stream of {name} has no paths"),
            [one] => {
                cmd.arg(one);
            }
            many => {
                let file = t.dir.join(format!("urls-{stamp}-{i}.txt"));
                std::fs::write(&file, many.join("\n"))?;
                cmd.arg("--urls-from-file").arg(&file);
            }
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot run oha")?;
        children.push((child, out));
    }
    let mut reads = Vec::new();
    let mut writes = Vec::new();
    let mut unexpected = 0u64;
    let mut failed = None;
    for ((mut child, out), s) in children.into_iter().zip(streams) {
        let status = child.wait().context("cannot wait for oha")?;
        if !status.success() {
            failed = Some(format!("oha failed for {name} ({status})"));
            continue;
        }
        let text = std::fs::read_to_string(&out)
            .with_context(|| format!("oha wrote no csv at {}", out.display()))?;
        let _ = std::fs::remove_file(&out);
        let records = parse_csv(&text)?;
        unexpected += records
            .iter()
            .filter(|r| !s.expect.contains(&r.status))
            .count() as u64;
        match s.kind {
            Kind::Read => reads.extend(records),
            Kind::Write => writes.extend(records),
        }
    }
    if let Some(f) = failed {
        bail!(f);
    }
    let secs = duration.as_secs_f64();
    let all: Vec<Record> = reads.iter().chain(&writes).copied().collect();
    let mut v = summarize(&all, secs)?;
    v["unexpected"] = json!(unexpected);
    v["streams"] = json!(streams.len());
    if let Load::Rate(r, _) = load {
        v["target_rps"] = json!(r);
    }
    if !reads.is_empty() && !writes.is_empty() {
        v["reads"] = summarize(&reads, secs)?;
        v["writes"] = summarize(&writes, secs)?;
        v["write_share"] = json!(writes.len() as f64 / all.len() as f64);
    }
    Ok(v)
}

/// oha's CSV: `request-start,DNS,DNS+dialup,Response-delay,request-duration,bytes,status`,
/// durations in seconds (latency corrected when the run was).
fn parse_csv(text: &str) -> Result<Vec<Record>> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    if !header.starts_with("request-start,") {
        bail!("oha's csv has an unexpected header: {header:?}");
    }
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let field = |i: usize| f.get(i).copied().unwrap_or("");
            let secs: f64 = field(4)
                .parse()
                .with_context(|| format!("no duration in {l:?}"))?;
            Ok(Record {
                micros: ((secs * 1e6).round() as u64).max(1),
                bytes: field(5)
                    .parse()
                    .with_context(|| format!("no size in {l:?}"))?,
                status: field(6)
                    .parse()
                    .with_context(|| format!("no status in {l:?}"))?,
            })
        })
        .collect()
}

/// Requests per second over `secs`, percentiles in milliseconds, sizes and statuses.
fn summarize(records: &[Record], secs: f64) -> Result<Value> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
        .context("histogram bounds are valid")?;
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    let mut bytes = 0u64;
    for r in records {
        h.saturating_record(r.micros);
        *codes.entry(r.status.to_string()).or_default() += 1;
        bytes += r.bytes;
    }
    let n = records.len() as u64;
    let ms = |q: f64| (n > 0).then(|| h.value_at_quantile(q) as f64 / 1000.0);
    Ok(json!({
        "rps": n as f64 / secs.max(f64::MIN_POSITIVE),
        "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
        "requests": n,
        "non_2xx": records.iter().filter(|r| !(200..300).contains(&r.status)).count(),
        "bytes_per_request": if n > 0 { bytes as f64 / n as f64 } else { 0.0 },
        "status_codes": codes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "request-start,DNS,DNS+dialup,Response-delay,request-duration,bytes,status
0.001,0,0.0001,0.0009,0.001,100,200
0.002,0,0,0.002,0.002,100,200
0.003,0,0,0.003,0.010,50,409
";

    #[test]
    fn reads_oha_csv_records() {
        let r = parse_csv(CSV).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[2],
            Record {
                micros: 10_000,
                status: 409,
                bytes: 50
            }
        );
        assert!(parse_csv("duration,status\n1,200").is_err());
        assert!(parse_csv("request-start,a,b,c,d,e,f\n0,0,0,0,x,1,200").is_err());
    }

    #[test]
    fn merged_percentiles_come_from_every_record() {
        // Two processes' records: the slow ones of the second must move the tail.
        let fast: Vec<Record> = (0..990)
            .map(|_| Record {
                micros: 1_000,
                status: 200,
                bytes: 10,
            })
            .collect();
        let slow: Vec<Record> = (0..10)
            .map(|_| Record {
                micros: 50_000,
                status: 503,
                bytes: 10,
            })
            .collect();
        let all: Vec<Record> = fast.into_iter().chain(slow).collect();
        let v = summarize(&all, 2.0).unwrap();
        assert_eq!(v["rps"], 500.0);
        assert_eq!(v["requests"], 1000);
        assert_eq!(v["non_2xx"], 10);
        assert!((v["p50_ms"].as_f64().unwrap() - 1.0).abs() < 0.01);
        assert!((v["p999_ms"].as_f64().unwrap() - 50.0).abs() < 0.1);
        assert_eq!(v["status_codes"]["503"], 10);
    }

    #[test]
    fn load_is_split_by_weight_with_a_floor() {
        let mut w = Stream::get(None, vec!["/".into()]);
        w.weight = 0.05;
        let mut r = Stream::get(None, vec!["/".into()]);
        r.weight = 0.95;
        let c = split(&[r.clone(), w.clone()], 32.0, 1.0);
        assert!((c[0] - 30.4).abs() < 1e-9 && (c[1] - 1.6).abs() < 1e-9);
        let q = split(&[r, w], 1000.0, 0.0);
        assert!((q[0] - 950.0).abs() < 1e-9 && (q[1] - 50.0).abs() < 1e-9);
        let floor = split(&vec![Stream::get(None, vec![]); 40], 32.0, 1.0);
        assert!(floor.iter().all(|c| *c >= 1.0));
    }
}
