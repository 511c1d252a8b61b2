//! A `quiver serve` process for one run: started on free ports, its CPU and memory read
//! from `/proc`, its metrics scraped, stopped with SIGTERM.

use super::*;

/// A `quiver serve` process for one run.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) api: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) started: Instant,
    /// The database it runs on, and its Redis when it has one.
    db: String,
    redis: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub(crate) fn start(
        bin: &Path,
        db: &str,
        redis: &str,
        flags: &[String],
        with_redis: bool,
    ) -> Result<Self> {
        let ns = format!("bench-{}", std::process::id());
        Self::start_in(bin, db, redis, flags, with_redis, &ns)
    }

    /// `start` with the Redis key namespace `ns`.
    pub(crate) fn start_in(
        bin: &Path,
        db: &str,
        redis: &str,
        flags: &[String],
        with_redis: bool,
        ns: &str,
    ) -> Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--log-format", "json", "--slow-request-ms", "60000"])
        .args(["--rate-per-second", "1000000", "--rate-burst", "1000000"])
        .args(["--max-concurrency", "4096", "--queue-timeout-ms", "1000"])
        .args(flags)
        .env("DATABASE_URL", db)
        .env("QUIVER_JWT_SECRET", SECRET)
        .env("QUIVER_REDIS_NAMESPACE", ns)
        .env("RUST_LOG", "warn,quiver=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if with_redis {
            cmd.env("REDIS_URL", redis);
        } else {
            cmd.env_remove("REDIS_URL");
        }
        let mut child = cmd.spawn().context("cannot start quiver serve")?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("quiver is serving") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .context("quiver serve did not start")?;
        let log: Value = serde_json::from_str(&line)?;
        let addr = |k: &str| -> Result<SocketAddr> {
            log["fields"][k]
                .as_str()
                .context("serving line has addresses")?
                .parse()
                .context("an address")
        };
        Ok(Self {
            api: addr("api")?,
            admin: addr("admin")?,
            child,
            started: Instant::now(),
            db: db.to_owned(),
            redis: with_redis.then(|| redis.to_owned()),
        })
    }

    /// utime + stime of the process, seconds, and its resident set, bytes (from /proc).
    pub(crate) fn usage(&self) -> (f64, u64) {
        let pid = self.child.id();
        let cpu = load::CpuTimes::of(&pid.to_string()).map_or(0.0, |t| t.own());
        let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
            * 1024;
        (cpu, rss)
    }

    /// Waits until the events this server's writes caused have taken effect (nothing
    /// unpublished in the outbox, nothing pending or undelivered in the group, for two
    /// seconds running), at most `limit`; says so when they have not.
    pub(crate) fn drain(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut quiet_since: Option<Instant> = None;
        while Instant::now() < deadline {
            let m = self.metrics();
            let value = |name: &str| {
                m.lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            let busy = value("quiver_outbox_backlog ")
                + value("quiver_consumer_entries{state=\"pending\"}")
                + value("quiver_consumer_entries{state=\"lag\"}");
            if busy > 0.0 {
                quiet_since = None;
            } else if quiet_since.get_or_insert_with(Instant::now).elapsed()
                >= Duration::from_secs(2)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!("events still pending after {limit:?}; the next run starts anyway");
    }

    /// Commands Redis has processed (every client's: nothing else uses it during a run)
    /// and transactions of the server's database, committed or not, so far. PostgreSQL
    /// publishes a backend's counts within a second of its going idle: sample after a
    /// second's pause.
    pub(crate) fn backend_ops(&self) -> (f64, f64) {
        let redis = self.redis.as_ref().map_or(0.0, |url| {
            Command::new("redis-cli")
                .args(["-u", url, "info", "stats"])
                .output()
                .ok()
                .and_then(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .find_map(|l| l.strip_prefix("total_commands_processed:"))
                        .and_then(|v| v.trim().parse().ok())
                })
                .unwrap_or(0.0)
        });
        let pg = crate::services::psql_query(
            &self.db,
            "SELECT xact_commit + xact_rollback FROM pg_stat_database
             WHERE datname = current_database()",
        )
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
        (redis, pg)
    }

    pub(crate) fn metrics(&self) -> String {
        Command::new("curl")
            .args(["-s", &format!("http://{}/metrics", self.admin)])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

/// A bearer token for `user`, minted by the binary under test (`quiver token`).
pub(crate) fn mint(bin: &Path, user: i64) -> Result<String> {
    let out = Command::new(bin)
        .args(["token", "--user", &user.to_string(), "--ttl", "6h"])
        .env("QUIVER_JWT_SECRET", SECRET)
        .output()
        .context("cannot run quiver token")?;
    if !out.status.success() {
        bail!(
            "quiver token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
