//! The load side of `cargo xtask bench`: a run is a set of streams, each with its own
//! identity (bearer token), requests and share of the load, sent by one wrk process
//! (`load.lua`, one thread per core) whose every request is the next of a weighted
//! schedule of the streams; each answer is matched to its request by the `x-request-id`
//! the server echoes, and the records are merged into one latency histogram.
//!
//! One process for every stream keeps the load generator's own CPU small next to the
//! server's on a machine they share, and that CPU is reported beside the results: a
//! limit is only a limit of the server when the server, not the generator, is busy. A
//! peak is counted rather than recorded (`Load::Counted`): recording each answer makes
//! wrk copy its headers and body into Lua, about a third more of its CPU per request.

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) use crate::cpu::{CpuTimes, children_cpu};

/// The Lua script wrk runs: streams, schedule, pacing and per-request records.
const SCRIPT: &str = include_str!("load.lua");
/// Slots of the weighted schedule every connection walks (divisible by 16 and 32, so
/// equal weights over 8, 16 or 32 streams are exact).
const SCHEDULE_SLOTS: usize = 960;

/// Reads are compared with a limit; writes in a mixed run are reported on their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Read,
    Write,
}

/// What one stream sends, as whom, and its share of the run's requests.
#[derive(Clone, Debug)]
pub(crate) struct Stream {
    pub(crate) kind: Kind,
    /// Whose bearer token it sends (none: anonymous).
    pub(crate) user: Option<i64>,
    pub(crate) method: &'static str,
    /// The paths it cycles through, one per request.
    pub(crate) paths: Vec<String>,
    pub(crate) body: Option<String>,
    /// Headers it sends besides the token's (`If-None-Match`, say).
    pub(crate) headers: Vec<(&'static str, &'static str)>,
    /// Its share of the run's requests, closed loop and open loop alike.
    pub(crate) weight: f64,
    /// Statuses that are a correct answer here (a repeated follow is 409, say).
    pub(crate) expect: &'static [u16],
}

impl Stream {
    /// Whether a counted phase (which sees only statuses of 400 or more) can check it.
    pub(crate) fn countable(&self) -> bool {
        self.expect.iter().all(|&c| c < 400)
    }

    pub(crate) fn get(user: Option<i64>, paths: Vec<String>) -> Self {
        Self {
            kind: Kind::Read,
            user,
            method: "GET",
            paths,
            body: None,
            headers: Vec::new(),
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
    /// `Concurrency` counted by wrk alone, without a record per answer (the generator's
    /// cheapest mode, for a peak): totals only, requests, bytes with headers, answers with
    /// a status of 400 or more (`unexpected`) and socket errors. Only for streams whose
    /// every expected status is below 400: a 200 where a 304 was expected goes unseen
    /// here (the open-loop phase, recorded, checks each status).
    Counted(u32),
    /// Open loop: this many requests per second in all, latency measured from when each
    /// request was due, on this many connections.
    Rate(f64, u32),
    /// Clients that read each answer before asking again: this many connections, each
    /// waiting this long before every request, from one generator thread (so each
    /// stream's paths go out in order). The summary adds `first_lap`: the answers to the
    /// first pass over each stream's paths, the first path (`first_page`) and the others
    /// (`later_pages`) apart.
    Paused(u32, Duration),
}

/// One answered request, from the script's records.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Record {
    /// Index into the phase's streams (none: the answer carried no id the script sent).
    stream: Option<usize>,
    micros: u64,
    status: u16,
    bytes: u64,
    /// Which of the stream's paths, from 1 (0: unknown).
    path: u32,
    /// How many passes over the stream's paths its thread had made before, from 0.
    lap: u32,
}

/// Where the streams go and with which tokens.
pub(crate) struct Target<'a> {
    pub(crate) wrk: &'a Path,
    pub(crate) api: SocketAddr,
    pub(crate) tokens: &'a BTreeMap<i64, String>,
    pub(crate) dir: &'a Path,
}

impl<'a> Target<'a> {
    pub(crate) fn new(
        wrk: &'a Path,
        api: SocketAddr,
        tokens: &'a BTreeMap<i64, String>,
        dir: &'a Path,
    ) -> Self {
        Self {
            wrk,
            api,
            tokens,
            dir,
        }
    }
}

/// `slots` stream indices in which each stream appears in proportion to its weight, and
/// spread out (smooth weighted round robin); every stream with a weight appears at least
/// once.
fn schedule(streams: &[Stream], slots: usize) -> Vec<usize> {
    let sum: f64 = streams.iter().map(|s| s.weight.max(0.0)).sum();
    if sum <= 0.0 {
        return (0..streams.len()).collect();
    }
    let slots = slots.max(streams.iter().filter(|s| s.weight > 0.0).count());
    // Each stream's slot count, rounded and at least one: the schedule's length is
    // `slots` give or take the rounding.
    let counts: Vec<usize> = streams
        .iter()
        .map(|s| {
            if s.weight > 0.0 {
                ((s.weight / sum * slots as f64).round() as usize).max(1)
            } else {
                0
            }
        })
        .collect();
    let total: usize = counts.iter().sum();
    let n = total.max(1) as i64;
    let mut credit = vec![0i64; counts.len()];
    let mut out = Vec::with_capacity(total);
    for _ in 0..total {
        for (c, k) in credit.iter_mut().zip(&counts) {
            *c += *k as i64;
        }
        let (pick, _) = credit
            .iter()
            .enumerate()
            .filter(|(i, _)| counts[*i] > 0)
            .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
            .expect("a stream with a weight");
        credit[pick] -= n;
        out.push(pick);
    }
    out
}

/// `s` as a Lua string literal.
fn lua_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\{b:03}");
            }
        }
    }
    out.push('"');
    out
}

/// The streams and their schedule as the Lua chunk `load.lua` reads.
fn lua_config(streams: &[Stream], tokens: &BTreeMap<i64, String>) -> Result<String> {
    let mut lua = String::from("return {\n  streams = {\n");
    for s in streams {
        if s.paths.is_empty() {
            bail!("a stream has no paths");
        }
        let paths: Vec<String> = s.paths.iter().map(|p| lua_string(p)).collect();
        let mut headers = Vec::new();
        if let Some(user) = s.user {
            let token = tokens.get(&user).context("a token for every user")?;
            headers.push(format!(
                "[\"Authorization\"] = {}",
                lua_string(&format!("Bearer {token}"))
            ));
        }
        if s.body.is_some() {
            headers.push("[\"Content-Type\"] = \"application/json\"".to_owned());
        }
        for (name, value) in &s.headers {
            headers.push(format!("[{}] = {}", lua_string(name), lua_string(value)));
        }
        let _ = writeln!(
            lua,
            "    {{ method = {}, paths = {{ {} }}, headers = {{ {} }}, body = {} }},",
            lua_string(s.method),
            paths.join(", "),
            headers.join(", "),
            s.body.as_deref().map_or("nil".to_owned(), lua_string),
        );
    }
    let slots: Vec<String> = schedule(streams, SCHEDULE_SLOTS)
        .iter()
        .map(|i| (i + 1).to_string())
        .collect();
    let _ = write!(lua, "  }},\n  schedule = {{ {} }},\n}}\n", slots.join(", "));
    Ok(lua)
}

/// wrk's summary of socket errors (requests that got no answer at all).
fn socket_errors(stdout: &str) -> Value {
    let mut out = BTreeMap::new();
    if let Some(line) = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
    {
        for part in line.split(',') {
            let mut w = part.split_whitespace();
            if let (Some(k), Some(Ok(n))) = (w.next(), w.next().map(str::parse::<u64>)) {
                out.insert(k.to_owned(), n);
            }
        }
    }
    json!(out)
}

/// Runs every stream for `duration` under `load`, from one wrk process, and summarizes
/// the merged records: all requests, and reads and writes apart when the run has both,
/// with the generator's own CPU.
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
    let (connections, rate, pause) = match load {
        Load::Concurrency(c) | Load::Counted(c) => (c.max(1), 0.0, Duration::ZERO),
        Load::Rate(r, c) => (c.max(1), r.max(0.001), Duration::ZERO),
        Load::Paused(c, p) => (c.max(1), 0.0, p),
    };
    // One thread per core: more only adds context switches to the generator's CPU.
    let cores = crate::cpu::cores();
    let threads = if pause.is_zero() {
        cores.min(connections)
    } else {
        1
    };
    let work = tempfile::Builder::new()
        .prefix("quiver-load-")
        .tempdir_in(t.dir)
        .context("cannot create a folder for the load's records")?;
    let script = work.path().join("load.lua");
    std::fs::write(&script, SCRIPT).context("cannot write the load script")?;
    let config = work.path().join("streams.lua");
    std::fs::write(&config, lua_config(streams, t.tokens)?).context("cannot write the streams")?;
    let counted = matches!(load, Load::Counted(_));
    if counted && !streams.iter().all(Stream::countable) {
        bail!("{name} expects a status of 400 or more, which a counted phase cannot tell apart");
    }
    let out = work.path().join("records");
    let secs = duration.as_secs().max(1);
    let cpu0 = children_cpu();
    let started = Instant::now();
    // No Accept-Encoding: on loopback compression only spends CPU, and the static-body
    // limit is then the same bytes on the wire as the page it is compared with.
    let output = Command::new(t.wrk)
        .args(["-t", &threads.to_string(), "-c", &connections.to_string()])
        .args(["-d", &format!("{secs}s"), "--timeout", "10s", "-s"])
        .arg(&script)
        .arg(format!("http://{}/", t.api))
        .env("QUIVER_LOAD_STREAMS", &config)
        .env("QUIVER_LOAD_THREADS", threads.to_string())
        .env("QUIVER_LOAD_RATE", format!("{rate:.3}"))
        .env("QUIVER_LOAD_PAUSE_MS", pause.as_millis().to_string())
        .env("QUIVER_LOAD_OUT", &out)
        .env("QUIVER_LOAD_RECORDS", if counted { "0" } else { "1" })
        .stdin(Stdio::null())
        .output()
        .context("cannot run wrk")?;
    let wall = started.elapsed().as_secs_f64();
    let generator_cpu = children_cpu() - cpu0;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() || !stderr.trim().is_empty() {
        bail!(
            "wrk failed for {name} ({}): {}",
            output.status,
            stderr.trim()
        );
    }
    let generator = |requests: f64| {
        json!({"tool": "wrk", "cpu_seconds": generator_cpu,
        "cores": generator_cpu / wall.max(f64::MIN_POSITIVE),
        "cpu_us_per_request": generator_cpu * 1e6 / requests.max(1.0)})
    };
    if counted {
        let file = work.path().join("records-summary.csv");
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("wrk wrote no totals at {}", file.display()))?;
        let totals = parse_totals(&text)?;
        let n = totals[0] as f64;
        return Ok(json!({
            "rps": n / secs as f64,
            "requests": totals[0],
            "wire_bytes_per_request": totals[1] as f64 / n.max(1.0),
            "unexpected": totals[2],
            "unpaired": 0,
            "counted": true,
            "streams": streams.len(),
            "connections": connections,
            "socket_errors": socket_errors(&stdout),
            "generator": generator(n),
        }));
    }
    let mut records = Vec::new();
    for id in 0..threads {
        let file = work.path().join(format!("records-{id}.csv"));
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("wrk wrote no records at {}", file.display()))?;
        records.extend(parse_records(&text, streams.len())?);
    }
    let unpaired = records.iter().filter(|r| r.stream.is_none()).count();
    let unexpected = records
        .iter()
        .filter(|r| {
            r.stream
                .is_none_or(|s| !streams[s].expect.contains(&r.status))
        })
        .count();
    let (reads, writes): (Vec<Record>, Vec<Record>) = records
        .iter()
        .partition(|r| r.stream.is_none_or(|s| streams[s].kind == Kind::Read));
    let secs = secs as f64;
    let mut v = summarize(&records, secs)?;
    v["unexpected"] = json!(unexpected);
    v["unpaired"] = json!(unpaired);
    v["streams"] = json!(streams.len());
    v["connections"] = json!(connections);
    v["socket_errors"] = socket_errors(&stdout);
    v["generator"] = generator(records.len() as f64);
    if let Load::Rate(r, _) = load {
        v["target_rps"] = json!(r);
    }
    if !pause.is_zero() {
        let lap = |later: bool| -> Vec<Record> {
            records
                .iter()
                .filter(|r| r.stream.is_some() && r.lap == 0 && (r.path > 1) == later)
                .copied()
                .collect()
        };
        v["pause_ms"] = json!(pause.as_millis() as u64);
        v["first_lap"] = json!({
            "first_page": summarize(&lap(false), secs)?,
            "later_pages": summarize(&lap(true), secs)?,
        });
    }
    if !reads.is_empty() && !writes.is_empty() {
        v["reads"] = summarize(&reads, secs)?;
        v["writes"] = summarize(&writes, secs)?;
        v["write_share"] = json!(writes.len() as f64 / records.len() as f64);
    }
    Ok(v)
}

/// The script's totals: `requests,bytes,answers with a status of 400 or more`.
fn parse_totals(text: &str) -> Result<[u64; 3]> {
    let fields: Vec<u64> = text
        .trim()
        .split(',')
        .map(|f| f.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("wrk's totals are not three numbers: {text:?}"))?;
    <[u64; 3]>::try_from(fields).map_err(|f| anyhow::anyhow!("wrk wrote {} totals, not 3", f.len()))
}

/// The script's records: `stream,micros,status,bytes` per line, the stream counted from 1
/// (0: an answer the script could not match to a request).
fn parse_records(text: &str, streams: usize) -> Result<Vec<Record>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split(',');
            let mut field = |what: &str| -> Result<u64> {
                f.next()
                    .and_then(|x| x.trim().parse().ok())
                    .with_context(|| format!("no {what} in record {l:?}"))
            };
            let stream = field("stream")? as usize;
            if stream > streams {
                bail!("record {l:?} names stream {stream} of {streams}");
            }
            Ok(Record {
                stream: stream.checked_sub(1),
                micros: field("latency")?.max(1),
                status: u16::try_from(field("status")?).context("a status fits u16")?,
                bytes: field("size")?,
                path: u32::try_from(field("path")?).context("a path index fits u32")?,
                lap: u32::try_from(field("lap")?).context("a lap fits u32")?,
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

    #[test]
    fn reads_the_scripts_totals() {
        assert_eq!(
            parse_totals("120,1730000,3\n").unwrap(),
            [120, 1_730_000, 3]
        );
        assert!(parse_totals("120,1730000\n").is_err());
        assert!(parse_totals("120,x,3").is_err());
    }

    #[test]
    fn reads_the_scripts_records() {
        let r = parse_records(
            "1,1000,200,100,1,0\n2,10000,409,50,3,2\n\n0,0,400,9,0,0\n",
            2,
        )
        .unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[2].stream, None);
        assert_eq!(
            r[1],
            Record {
                stream: Some(1),
                micros: 10_000,
                status: 409,
                bytes: 50,
                path: 3,
                lap: 2,
            }
        );
        // A zero latency still counts as a request.
        assert_eq!(parse_records("1,0,200,1,1,0", 1).unwrap()[0].micros, 1);
        assert!(parse_records("3,1000,200,100,1,0", 2).is_err());
        assert!(parse_records("1,x,200,100,1,0", 2).is_err());
        assert!(parse_records("1,1000,200,100", 1).is_err());
        assert!(parse_records("1,1000,200", 2).is_err());
    }

    #[test]
    fn merged_percentiles_come_from_every_record() {
        // Two streams' records: the slow ones of the second must move the tail.
        let fast: Vec<Record> = (0..990)
            .map(|_| Record {
                stream: Some(0),
                micros: 1_000,
                status: 200,
                bytes: 10,
                path: 1,
                lap: 0,
            })
            .collect();
        let slow: Vec<Record> = (0..10)
            .map(|_| Record {
                stream: Some(1),
                micros: 50_000,
                status: 503,
                bytes: 10,
                path: 1,
                lap: 0,
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

    fn weighted(weights: &[f64]) -> Vec<Stream> {
        weights
            .iter()
            .map(|w| {
                let mut s = Stream::get(None, vec!["/".into()]);
                s.weight = *w;
                s
            })
            .collect()
    }

    #[test]
    fn the_schedule_follows_the_weights_and_spreads_them() {
        // The mixed scenario: 16 readers at 95 %, two posters and two followers at 2.5 %.
        let mut w = vec![0.95 / 16.0; 16];
        w.extend([0.0125; 4]);
        let s = schedule(&weighted(&w), SCHEDULE_SLOTS);
        let count = |i: usize| s.iter().filter(|x| **x == i).count();
        assert!((count(0) as f64 - 57.0).abs() <= 1.0, "{}", count(0));
        assert_eq!(count(16), 12);
        let writes = (16..20).map(count).sum::<usize>() as f64 / s.len() as f64;
        assert!((writes - 0.05).abs() < 0.002, "{writes}");
        // Equal weights: a plain rotation, every stream once per round.
        let s = schedule(&weighted(&[1.0; 16]), SCHEDULE_SLOTS);
        assert_eq!(s.len(), SCHEDULE_SLOTS);
        assert_eq!(&s[..16], (0..16).collect::<Vec<_>>().as_slice());
        assert_eq!(&s[16..32], &s[..16]);
        // Spread: no two slots of a 1-in-4 stream are adjacent.
        let s = schedule(&weighted(&[3.0, 1.0]), 8);
        assert!(s.windows(2).all(|p| p != [1, 1]), "{s:?}");
        assert_eq!(s.iter().filter(|x| **x == 1).count(), 2);
        // A tiny weight still gets a slot; a zero weight none.
        let s = schedule(&weighted(&[1000.0, 0.001, 0.0]), 100);
        assert!(s.contains(&1) && !s.contains(&2));
    }

    #[test]
    fn streams_become_a_lua_chunk() {
        assert_eq!(lua_string("a\"b\\c\n"), r#""a\"b\\c\010""#);
        let mut post = Stream::get(Some(7), vec!["/api/v1/posts".into()]);
        post.method = "POST";
        post.body = Some(r#"{"kind": "post"}"#.into());
        let tokens = BTreeMap::from([(7, "tok".to_owned())]);
        let lua = lua_config(
            &[post.clone(), Stream::get(None, vec!["/a".into()])],
            &tokens,
        )
        .unwrap();
        assert!(
            lua.contains(r#"method = "POST", paths = { "/api/v1/posts" }"#),
            "{lua}"
        );
        assert!(lua.contains(r#"["Authorization"] = "Bearer tok""#), "{lua}");
        assert!(lua.contains(r#"body = "{\"kind\": \"post\"}""#), "{lua}");
        assert!(lua.contains("schedule = { 1, 2, 1, 2,"), "{lua}");
        post.user = Some(8);
        assert!(lua_config(&[post], &tokens).is_err());
        assert!(lua_config(&[Stream::get(None, vec![])], &tokens).is_err());
    }

    #[test]
    fn reads_wrks_socket_errors() {
        let out = "  10 requests in 1.00s\n  Socket errors: connect 3, read 1, write 0, timeout 2\nRequests/sec: 10\n";
        let e = socket_errors(out);
        assert_eq!(e["connect"], 3);
        assert_eq!(e["timeout"], 2);
        assert_eq!(socket_errors("Requests/sec: 10"), json!({}));
    }
}
