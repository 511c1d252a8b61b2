//! Real PostgreSQL and Redis for the tests: the ones at `DATABASE_URL` / `REDIS_URL` when
//! reachable, otherwise throwaway servers started from the machine's binaries and stopped
//! when the task ends.

use anyhow::{Context, Result, bail};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The servers a task uses; throwaway ones stop when this is dropped.
pub(crate) struct Services {
    database_url: String,
    redis_url: Option<String>,
    postgres: Option<ThrowawayPostgres>,
    replication: Option<(ThrowawayPostgres, String, PathBuf)>,
    redis: Option<Child>,
    _dirs: Vec<tempfile::TempDir>,
}

/// A database created for one task and dropped after it.
pub(crate) struct ScratchDb {
    pub(crate) url: String,
    admin_url: String,
    name: String,
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let _ = psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

struct ThrowawayPostgres {
    bindir: PathBuf,
    data: PathBuf,
    as_postgres_user: bool,
}

impl ThrowawayPostgres {
    /// initdb and start a server on a free port, with `options` added to its command line;
    /// returns it, its URL and the directory that holds it.
    fn start(bindir: PathBuf, options: &str) -> Result<(Self, String, tempfile::TempDir)> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let as_postgres_user = is_root();
        if as_postgres_user {
            // PostgreSQL refuses to run as root: hand the directory to the postgres user.
            run_quiet(
                Command::new("chown")
                    .arg("-R")
                    .arg("postgres")
                    .arg(dir.path()),
            )
            .context("running as root needs a `postgres` user to own the throwaway server")?;
        }
        let mut initdb = pg_command(&bindir, "initdb", as_postgres_user);
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run_quiet(&mut initdb).context("initdb failed")?;
        let port = free_port()?;
        let mut start = pg_command(&bindir, "pg_ctl", as_postgres_user);
        start
            .arg("-D")
            .arg(&data)
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off {options}",
                dir.path().display()
            ))
            .arg("-l")
            .arg(dir.path().join("log"))
            .args(["-w", "start"]);
        run_quiet(&mut start).context("pg_ctl start failed")?;
        let server = Self {
            bindir,
            data,
            as_postgres_user,
        };
        Ok((
            server,
            format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir,
        ))
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let mut cmd = pg_command(&self.bindir, "pg_ctl", self.as_postgres_user);
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"]);
        let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        if let Some(mut redis) = self.redis.take() {
            let _ = redis.kill();
            let _ = redis.wait();
        }
        self.postgres.take();
        self.replication.take();
    }
}

impl Services {
    /// PostgreSQL and Redis, both required.
    pub(crate) fn start() -> Result<Self> {
        let mut s = Self::start_postgres_only()?;
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned());
        if which("redis-cli").is_none() {
            bail!(
                "redis-cli is not installed: the Redis Cluster tests form clusters of their own \
                 with it (Debian: apt-get install redis-tools)"
            );
        }
        if reachable(&url) {
            // The cache's outage test starts and kills a redis-server of its own.
            if which("redis-server").is_none() {
                bail!(
                    "redis-server is not installed: the cache's outage test starts one of its own \
                     (Debian: apt-get install redis-server)"
                );
            }
            eprintln!("using redis at {url}");
            s.redis_url = Some(url);
        } else {
            let Some(server) = which("redis-server") else {
                bail!(
                    "redis is not reachable at {url} and redis-server is not installed: \
                     install redis (Debian: apt-get install redis-server) or set REDIS_URL"
                );
            };
            let port = free_port()?;
            let dir = tempfile::tempdir()?;
            let child = Command::new(server)
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .spawn()
                .context("cannot start redis-server")?;
            let url = format!("redis://127.0.0.1:{port}");
            s.redis = Some(child);
            s._dirs.push(dir);
            wait_reachable(&url, Duration::from_secs(10))
                .context("throwaway redis did not start")?;
            eprintln!("started a throwaway redis at {url}");
            s.redis_url = Some(url);
        }
        Ok(s)
    }

    /// PostgreSQL only (the offline-query check needs no Redis).
    pub(crate) fn start_postgres_only() -> Result<Self> {
        let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
        let mut s = Self {
            database_url: url.clone(),
            redis_url: None,
            postgres: None,
            replication: None,
            redis: None,
            _dirs: Vec::new(),
        };
        if url.starts_with("postgres") && reachable(&url) {
            eprintln!("using postgresql at {}", redact(&url));
            return Ok(s);
        }
        let Some(bindir) = postgres_bindir() else {
            bail!(
                "postgresql is not reachable at {} and its server binaries (initdb, pg_ctl) were not found \
                 on PATH or by `pg_config --bindir`: install postgresql (Debian: apt-get install postgresql) \
                 or set DATABASE_URL to a server you can reach",
                redact(&url)
            );
        };
        let (postgres, url, dir) = ThrowawayPostgres::start(bindir, "")?;
        s.postgres = Some(postgres);
        s.database_url = url;
        s._dirs.push(dir);
        eprintln!("started a throwaway postgresql at {}", s.database_url);
        Ok(s)
    }

    /// Adds a throwaway primary that streaming replicas can follow (the machine's own
    /// server need not allow replication connections): the read-replica tests take
    /// replicas of it with `pg_basebackup` (`QUIVER_TEST_PRIMARY_URL`, `QUIVER_PG_BINDIR`).
    pub(crate) fn with_replication(mut self) -> Result<Self> {
        let Some(bindir) = postgres_bindir().filter(|d| d.join("pg_basebackup").exists()) else {
            bail!(
                "the read-replica tests start a PostgreSQL primary and replicas of their own, and \
                 initdb, pg_ctl or pg_basebackup was not found on PATH or by `pg_config --bindir`: \
                 install postgresql (Debian: apt-get install postgresql)"
            );
        };
        let (primary, url, dir) =
            ThrowawayPostgres::start(bindir.clone(), "-c wal_level=replica -c hot_standby=on")?;
        eprintln!("started a replication primary at {url}");
        self.replication = Some((primary, url, bindir));
        self._dirs.push(dir);
        Ok(self)
    }

    /// Environment for the test processes.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("DATABASE_URL".to_owned(), self.database_url.clone())];
        if let Some(redis) = &self.redis_url {
            env.push(("REDIS_URL".to_owned(), redis.clone()));
        }
        if let Some((_, url, bindir)) = &self.replication {
            env.push(("QUIVER_TEST_PRIMARY_URL".to_owned(), url.clone()));
            env.push(("QUIVER_PG_BINDIR".to_owned(), bindir.display().to_string()));
        }
        env
    }

    /// A fresh database named after `prefix` on this server, dropped with the guard.
    pub(crate) fn scratch_database(&self, prefix: &str) -> Result<ScratchDb> {
        let name = format!("{prefix}_{}", std::process::id());
        psql(
            &self.database_url,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )?;
        psql(&self.database_url, &format!("CREATE DATABASE {name}"))?;
        let base = self
            .database_url
            .rsplit_once('/')
            .map_or(self.database_url.as_str(), |(b, _)| b);
        Ok(ScratchDb {
            url: format!("{base}/{name}"),
            admin_url: self.database_url.clone(),
            name,
        })
    }
}

/// Runs one SQL command through `psql` (part of every PostgreSQL client install).
pub(crate) fn psql(url: &str, sql: &str) -> Result<()> {
    let psql = which("psql").or_else(|| postgres_bindir().map(|d| d.join("psql")));
    let Some(psql) = psql else {
        bail!("psql not found: install the postgresql client")
    };
    run_quiet(Command::new(psql).args(["-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql]))
}

/// The rows `sql` returns, unaligned and without headers (`psql -tA`).
pub(crate) fn psql_query(url: &str, sql: &str) -> Result<String> {
    let psql = which("psql").or_else(|| postgres_bindir().map(|d| d.join("psql")));
    let Some(psql) = psql else {
        bail!("psql not found: install the postgresql client")
    };
    let out = Command::new(psql)
        .args(["-q", "-tA", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .output()
        .context("cannot run psql")?;
    if !out.status.success() {
        bail!(
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs one SQL file through `psql`, stopping at the first error.
pub(crate) fn psql_file(url: &str, file: &Path) -> Result<()> {
    let psql = which("psql").or_else(|| postgres_bindir().map(|d| d.join("psql")));
    let Some(psql) = psql else {
        bail!("psql not found: install the postgresql client")
    };
    run_quiet(
        Command::new(psql)
            .args(["-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f"])
            .arg(file),
    )
    .with_context(|| format!("cannot apply {}", file.display()))
}

pub(crate) fn run_quiet(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub(crate) fn pg_command(bindir: &Path, tool: &str, as_postgres_user: bool) -> Command {
    if as_postgres_user {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(bindir.join(tool));
        cmd
    } else {
        Command::new(bindir.join(tool))
    }
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Where `initdb` and `pg_ctl` live: PATH, `pg_config --bindir` (Debian keeps them off
/// PATH), or the newest `/usr/lib/postgresql/*/bin`.
pub(crate) fn postgres_bindir() -> Option<PathBuf> {
    let has_tools = |d: &Path| d.join("initdb").exists() && d.join("pg_ctl").exists();
    // A link on PATH (as some images put there) leads to the real directory, which has
    // the other tools too.
    if let Some(initdb) = which("initdb").and_then(|p| p.canonicalize().ok())
        && let Some(dir) = initdb.parent()
        && has_tools(dir)
    {
        return Some(dir.to_path_buf());
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_tools(&dir) {
            return Some(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| has_tools(d))
        .collect();
    versions.sort();
    versions.pop()
}

pub(crate) fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `scheme://[user[:pass]@]host[:port][/…]` → `host:port`.
fn host_port(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = rest.split(['/', '?']).next()?;
    let default = if url.starts_with("redis") { 6379 } else { 5432 };
    Some(if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:{default}")
    })
}

fn reachable(url: &str) -> bool {
    let Some(addr) = host_port(url) else {
        return false;
    };
    let Ok(mut addrs) = addr.to_socket_addrs() else {
        return false;
    };
    addrs.any(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok())
}

/// Polls until the server accepts connections: start-up has no other readiness signal.
fn wait_reachable(url: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if reachable(url) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{url} not reachable after {within:?}")
}

fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://…@{host}"),
        _ => url.to_owned(),
    }
}

/// The path of `name`, installing Debian's `package` when it is missing and we may.
pub(crate) fn tool(name: &str, package: &str) -> Result<PathBuf> {
    if let Some(path) = which(name).or_else(|| {
        let sbin = PathBuf::from("/usr/sbin").join(name);
        sbin.exists().then_some(sbin)
    }) {
        return Ok(path);
    }
    eprintln!("{name} is missing: installing Debian's {package}");
    let installed = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", package])
        .status()
        .is_ok_and(|s| s.success());
    match which(name).or_else(|| Some(PathBuf::from("/usr/sbin").join(name)).filter(|p| p.exists()))
    {
        Some(path) if installed => Ok(path),
        _ => bail!("{name} is not installed and could not be: apt-get install {package}"),
    }
}
