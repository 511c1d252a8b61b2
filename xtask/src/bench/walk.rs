//! The paused walk: clients who read a page before asking for the next, on cold
//! caches, with prefetch on and off.

use super::*;

/// The paused walk: more viewers than the fixture's, each walking their first pages once
/// as a client who reads a page before asking for the next, on a server with cold caches
/// (a new process and a Redis namespace of its own), with prefetch on and off: the
/// pages after the first are what prefetch can have warmed meanwhile.
pub(crate) struct Walk {
    pub(crate) pages: BTreeMap<i64, Vec<String>>,
    pub(crate) tokens: BTreeMap<i64, String>,
    pub(crate) connections: u32,
    pub(crate) pause: Duration,
}

impl Walk {
    /// `n` viewers who follow at least ten accounts and are not among `skip`, each with
    /// the paths of their first `pages` feed pages (recorded through `server`).
    pub(crate) fn pick(
        db: &str,
        bin: &Path,
        server: &Server,
        skip: &[i64],
        n: usize,
        quick: bool,
    ) -> Result<Self> {
        let pages = if quick { 3 } else { 5 };
        let ids: Vec<i64> = services::psql_query(
            db,
            &format!(
                "SELECT follower_id FROM follows GROUP BY follower_id HAVING count(*) >= 10
                 ORDER BY follower_id DESC LIMIT {}",
                n + skip.len()
            ),
        )?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|v| !skip.contains(v))
        .take(n)
        .collect();
        if ids.is_empty() {
            bail!("no viewer to walk the feed");
        }
        let mut walk = Self {
            pages: BTreeMap::new(),
            tokens: BTreeMap::new(),
            connections: if quick { 4 } else { 16 },
            pause: Duration::from_millis(if quick { 50 } else { 200 }),
        };
        for v in ids {
            let token = mint(bin, v)?;
            walk.pages.insert(v, feed_pages(server, &token, pages)?.0);
            walk.tokens.insert(v, token);
        }
        Ok(walk)
    }

    /// One run of the walk, prefetch on or off; the server's CPU and its prefetch counters
    /// beside the latencies of the first pass.
    pub(crate) fn run(
        &self,
        wrk: &Path,
        bin: &Path,
        db: &str,
        redis: &str,
        prefetch: bool,
    ) -> Result<Value> {
        let flags: Vec<String> = if prefetch {
            Vec::new()
        } else {
            vec!["--prefetch-workers".into(), "0".into()]
        };
        let ns = format!(
            "walk-{}-{}",
            std::process::id(),
            if prefetch { "on" } else { "off" }
        );
        let server = Server::start_in(bin, db, redis, &flags, true, &ns)?;
        let streams: Vec<Stream> = self
            .pages
            .iter()
            .map(|(v, p)| Stream::get(Some(*v), p.clone()))
            .collect();
        let requests: usize = self.pages.values().map(Vec::len).sum();
        // Long enough for one pass: each connection sends one request per pause at most.
        let pass = self.pause.as_secs_f64() * requests as f64 / f64::from(self.connections);
        let dir = std::env::temp_dir();
        let t = Target::new(wrk, server.api, &self.tokens, &dir);
        let mut v = with_server_cpu(&server, || {
            load::phase(
                &t,
                "paused walk",
                &streams,
                Duration::from_secs_f64(pass * 1.3 + 1.0),
                Load::Paused(self.connections, self.pause),
            )
        })?;
        let metrics = server.metrics();
        let prefetch_jobs: BTreeMap<String, f64> = [
            "submitted",
            "skipped_warm",
            "dropped",
            "succeeded",
            "failed",
        ]
        .iter()
        .filter_map(|r| {
            Some((
                (*r).to_owned(),
                metric(
                    &metrics,
                    &format!("quiver_prefetch_jobs_total{{result=\"{r}\"}}"),
                )?,
            ))
        })
        .collect();
        v["prefetch"] = json!(prefetch);
        v["prefetch_jobs"] = json!(prefetch_jobs);
        v["cache"] = cache_outcomes(&metrics);
        v["walkers"] = json!(self.pages.len());
        v["pages_per_walker"] = json!(self.pages.values().map(Vec::len).max().unwrap_or(0));
        Ok(v)
    }
}
