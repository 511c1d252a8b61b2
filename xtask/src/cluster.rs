//! `cargo xtask cluster up|down|status`: a production-shaped deployment on the loopback,
//! from the machine's own packages: a six-node Redis Cluster (three primaries, three
//! replicas), a PostgreSQL primary with a streaming replica (`pg_basebackup -R`), three
//! quiver replicas reading through the replica, and HAProxy in front, seeded. Its state
//! and logs live in `target/cluster/`.

use crate::bench::target_dir;
use crate::services::{pg_command, postgres_bindir, psql, run_quiet, tool};
use anyhow::{Context, Result, bail};
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REDIS_PORTS: [u16; 6] = [7001, 7002, 7003, 7004, 7005, 7006];
const PG_PRIMARY: u16 = 55440;
const PG_REPLICA: u16 = 55441;
/// Each replica's API and admin ports.
const QUIVER: [(u16, u16); 3] = [(8081, 9081), (8082, 9082), (8083, 9083)];
const BALANCER: u16 = 8080;
/// Signs the cluster's tokens; it never leaves the loopback.
const SECRET: &str = "quiver-local-cluster-secret-do-not-deploy";

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let dir = target_dir(root).join("cluster");
    match args.first().map(String::as_str) {
        Some("up") => up(root, &dir),
        Some("down") => down(&dir),
        Some("status") => status(&dir),
        _ => bail!("usage: cargo xtask cluster up|down|status"),
    }
}

fn up(root: &Path, dir: &Path) -> Result<()> {
    if dir.join("up").exists() {
        bail!("a cluster is up already: `cargo xtask cluster down` first");
    }
    let ports = REDIS_PORTS
        .iter()
        .chain(&[PG_PRIMARY, PG_REPLICA, BALANCER])
        .copied()
        .chain(QUIVER.iter().flat_map(|(a, b)| [*a, *b]));
    for port in ports {
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!("port {port} is taken: the cluster needs it");
        }
    }
    let haproxy = tool("haproxy", "haproxy")?;
    tool("redis-server", "redis-server")?;
    tool("redis-cli", "redis-tools")?;
    let Some(bindir) = postgres_bindir().filter(|d| d.join("pg_basebackup").exists()) else {
        bail!("PostgreSQL's server binaries were not found (Debian: apt-get install postgresql)");
    };
    eprintln!("building the release server");
    crate::run(crate::cargo().args(["build", "--release", "-p", "quiver"]))?;
    let quiver = target_dir(root).join("release/quiver");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    std::fs::write(dir.join("up"), "")?;

    eprintln!("starting the Redis Cluster on ports 7001-7006");
    let redis_dir = dir.join("redis");
    std::fs::create_dir_all(&redis_dir)?;
    for port in REDIS_PORTS {
        let p = port.to_string();
        run_quiet(
            Command::new("redis-server")
                .args(["--port", &p, "--bind", "127.0.0.1", "--daemonize", "yes"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .args(["--cluster-config-file", &format!("nodes-{p}.conf")])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&redis_dir)
                .arg("--pidfile")
                .arg(redis_dir.join(format!("{p}.pid")))
                .arg("--logfile")
                .arg(logs.join(format!("redis-{p}.log"))),
        )?;
    }
    for port in REDIS_PORTS {
        wait(&format!("redis {port}"), || {
            redis_cli(port, &["ping"]).is_some()
        })?;
    }
    let mut create = Command::new("redis-cli");
    create.args(["--cluster", "create"]);
    create.args(REDIS_PORTS.iter().map(|p| format!("127.0.0.1:{p}")));
    run_quiet(create.args(["--cluster-replicas", "1", "--cluster-yes"]))?;
    for port in REDIS_PORTS {
        wait(&format!("redis {port} in a healthy cluster"), || {
            redis_cli(port, &["cluster", "info"]).is_some_and(|o| o.contains("cluster_state:ok"))
        })?;
    }

    eprintln!("starting PostgreSQL: primary on {PG_PRIMARY}, streaming replica on {PG_REPLICA}");
    let pg = dir.join("pg");
    std::fs::create_dir_all(&pg)?;
    let as_postgres = crate::services::is_root();
    if as_postgres {
        run_quiet(Command::new("chown").args(["-R", "postgres"]).arg(&pg))?;
    }
    let sockets = pg.display().to_string();
    let mut initdb = pg_command(&bindir, "initdb", as_postgres);
    initdb.arg("-D").arg(pg.join("primary"));
    run_quiet(initdb.args(["-U", "postgres", "--auth=trust", "--no-sync"]))?;
    pg_start(
        &bindir,
        as_postgres,
        &pg.join("primary"),
        PG_PRIMARY,
        &sockets,
        &logs,
    )?;
    let admin = format!("postgres://postgres@127.0.0.1:{PG_PRIMARY}/postgres");
    psql(&admin, "CREATE DATABASE quiver")?;
    let mut backup = pg_command(&bindir, "pg_basebackup", as_postgres);
    backup.arg("-D").arg(pg.join("replica"));
    run_quiet(backup.args(["-R", "-X", "stream", "--checkpoint=fast", "-d", &admin]))?;
    pg_start(
        &bindir,
        as_postgres,
        &pg.join("replica"),
        PG_REPLICA,
        &sockets,
        &logs,
    )?;

    let primary = format!("postgres://postgres@127.0.0.1:{PG_PRIMARY}/quiver");
    let replica = format!("postgres://postgres@127.0.0.1:{PG_REPLICA}/quiver");
    eprintln!("seeding (5,000 users)");
    run_quiet(
        Command::new(&quiver)
            .args(["migrate"])
            .env("DATABASE_URL", &primary),
    )?;
    run_quiet(
        Command::new(&quiver)
            .args(["seed", "--users", "5000", "--posts-per-user", "10"])
            .args(["--follows-per-user", "30"])
            .env("DATABASE_URL", &primary),
    )?;

    let redis = format!(
        "redis-cluster://127.0.0.1:{}?{}",
        REDIS_PORTS[0],
        REDIS_PORTS[1..]
            .iter()
            .map(|p| format!("node=127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join("&")
    );
    eprintln!("starting three quiver replicas on 8081-8083");
    for (i, (api, admin_port)) in QUIVER.iter().enumerate() {
        let log = std::fs::File::create(logs.join(format!("quiver-{}.log", i + 1)))?;
        let child = Command::new(&quiver)
            .arg("serve")
            .env("DATABASE_URL", &primary)
            .env("DATABASE_READ_URLS", &replica)
            .env("REDIS_URL", &redis)
            .env("QUIVER_EVENT_PARTITIONS", "3")
            .env("QUIVER_JWT_SECRET", SECRET)
            .env("QUIVER_LISTEN", format!("127.0.0.1:{api}"))
            .env("QUIVER_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
            .env("QUIVER_TRUSTED_PROXIES", "127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start quiver")?;
        std::fs::write(
            dir.join(format!("quiver-{}.pid", i + 1)),
            child.id().to_string(),
        )?;
    }
    for (api, _) in QUIVER {
        wait(&format!("quiver on {api} ready"), || {
            http_status(api, "/readyz") == Some(200)
        })?;
    }

    eprintln!("starting HAProxy on {BALANCER}");
    let config = dir.join("haproxy.cfg");
    std::fs::write(&config, haproxy_config())?;
    run_quiet(
        Command::new(haproxy)
            .arg("-f")
            .arg(&config)
            .arg("-D")
            .arg("-p")
            .arg(dir.join("haproxy.pid")),
    )?;
    wait("haproxy", || http_status(BALANCER, "/readyz") == Some(200))?;

    let token = Command::new(&quiver)
        .args(["token", "--user", "1", "--ttl", "24h"])
        .env("QUIVER_JWT_SECRET", SECRET)
        .output()?;
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    println!("the cluster is up:");
    println!(
        "  API (HAProxy)    http://127.0.0.1:{BALANCER}  (replicas 8081-8083, admin 9081-9083)"
    );
    println!("  token (user 1)   {token}");
    println!(
        "  try              curl -H 'Authorization: Bearer {token}' http://127.0.0.1:{BALANCER}/api/v1/feed"
    );
    println!("  PostgreSQL       {primary} (replica {replica})");
    println!("  Redis Cluster    {redis}");
    println!("  logs             {}", logs.display());
    println!("  stop it with     cargo xtask cluster down");
    Ok(())
}

fn haproxy_config() -> String {
    let servers: String = QUIVER
        .iter()
        .enumerate()
        .map(|(i, (api, _))| format!("    server q{} 127.0.0.1:{api}\n", i + 1))
        .collect();
    include_str!("../haproxy.cfg")
        .replace("{bind}", &format!("127.0.0.1:{BALANCER}"))
        .replace("{servers}", &servers)
}

fn down(dir: &Path) -> Result<()> {
    if !dir.exists() {
        eprintln!("no cluster is up");
        return Ok(());
    }
    let mut pids: Vec<PathBuf> = vec![dir.join("haproxy.pid")];
    pids.extend((1..=QUIVER.len()).map(|i| dir.join(format!("quiver-{i}.pid"))));
    for pid in pids {
        if let Ok(pid) = std::fs::read_to_string(&pid) {
            // SIGTERM: quiver drains what is in flight.
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
    for port in REDIS_PORTS {
        let _ = redis_cli(port, &["shutdown", "nosave"]);
    }
    if let Some(bindir) = postgres_bindir() {
        for node in ["replica", "primary"] {
            let data = dir.join("pg").join(node);
            if data.exists() {
                let mut stop = pg_command(&bindir, "pg_ctl", crate::services::is_root());
                let _ = stop
                    .arg("-D")
                    .arg(&data)
                    .args(["-m", "fast", "stop"])
                    .output();
            }
        }
    }
    for (api, _) in QUIVER {
        let _ = wait(&format!("quiver on {api} stopped"), || {
            http_status(api, "/healthz").is_none()
        });
    }
    std::fs::remove_dir_all(dir)?;
    eprintln!("the cluster is down");
    Ok(())
}

fn status(dir: &Path) -> Result<()> {
    if !dir.join("up").exists() {
        println!("no cluster is up (cargo xtask cluster up)");
        return Ok(());
    }
    let up = |ok: bool| if ok { "up" } else { "DOWN" };
    println!(
        "HAProxy :{BALANCER}      {}",
        up(http_status(BALANCER, "/readyz") == Some(200))
    );
    for (i, (api, _)) in QUIVER.iter().enumerate() {
        println!(
            "quiver-{} :{api}      {}",
            i + 1,
            up(http_status(*api, "/readyz") == Some(200))
        );
    }
    for port in REDIS_PORTS {
        let role = redis_cli(port, &["info", "replication"])
            .and_then(|o| {
                o.lines()
                    .find(|l| l.starts_with("role:"))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "DOWN".to_owned());
        println!("redis :{port}        {}", role.trim());
    }
    for (name, port) in [("primary", PG_PRIMARY), ("replica", PG_REPLICA)] {
        let url = format!("postgres://postgres@127.0.0.1:{port}/quiver");
        let state = crate::services::psql_query(&url, "SELECT pg_is_in_recovery()")
            .map(|r| {
                if r.trim() == "t" {
                    "up, in recovery"
                } else {
                    "up, primary"
                }
            })
            .unwrap_or("DOWN");
        println!("postgresql {name} :{port} {state}");
    }
    println!("logs: {}", dir.join("logs").display());
    Ok(())
}

fn pg_start(
    bindir: &Path,
    as_postgres: bool,
    data: &Path,
    port: u16,
    sockets: &str,
    logs: &Path,
) -> Result<()> {
    let name = data
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let log = logs.join(format!("postgresql-{name}.log"));
    if as_postgres {
        // The server writes its own log: the file must be the postgres user's.
        std::fs::write(&log, "")?;
        run_quiet(Command::new("chown").arg("postgres").arg(&log))?;
    }
    let mut start = pg_command(bindir, "pg_ctl", as_postgres);
    start
        .arg("-D")
        .arg(data)
        .arg("-o")
        .arg(format!(
            "-p {port} -k {sockets} -c listen_addresses=127.0.0.1"
        ))
        .arg("-l")
        .arg(&log)
        .args(["-w", "start"]);
    run_quiet(&mut start).with_context(|| format!("cannot start postgresql on {port}"))
}

fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The status of `GET path` on the loopback `port`, `None` when nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut conn =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
            .ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Polls until `check` holds: a server starting up gives no other signal.
fn wait(what: &str, mut check: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
