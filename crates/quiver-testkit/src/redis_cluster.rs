//! A real Redis Cluster for one test: six `redis-server`s on the loopback (three primaries,
//! three replicas) joined by `redis-cli --cluster create`, stopped when dropped. Each test
//! takes its own, so it may kill nodes without disturbing any other.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A running cluster.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<(u16, Option<Child>)>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts six nodes and waits until the cluster serves every slot.
    pub fn start() -> Self {
        for tool in ["redis-server", "redis-cli"] {
            assert!(
                Command::new(tool).arg("--version").output().is_ok(),
                "{tool} is not installed: the Redis Cluster tests start a cluster of their own \
                 (Debian: apt-get install redis-server)"
            );
        }
        static CLUSTERS: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "quiver-redis-cluster-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("cluster directory");
        let mut cluster = Self {
            nodes: Vec::new(),
            dir,
        };
        for _ in 0..6 {
            let (port, child) = cluster.start_node();
            cluster.nodes.push((port, Some(child)));
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for (port, _) in &cluster.nodes {
            create.arg(format!("127.0.0.1:{port}"));
        }
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = create.output().expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for (port, _) in &cluster.nodes {
            wait_until(&format!("node {port} sees the cluster ok"), || {
                cli(*port, &["cluster", "info"]).is_some_and(|o| o.contains("cluster_state:ok"))
            });
            wait_until(
                &format!("node {port} is a primary or a synced replica"),
                || {
                    cli(*port, &["info", "replication"]).is_some_and(|o| {
                        o.contains("role:master") || o.contains("master_link_status:up")
                    })
                },
            );
        }
        cluster
    }

    /// `redis-cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let mut nodes = self.nodes.iter().map(|(p, _)| format!("127.0.0.1:{p}"));
        let first = nodes.next().expect("six nodes");
        let rest: Vec<String> = nodes.map(|n| format!("node={n}")).collect();
        format!("redis-cluster://{first}?{}", rest.join("&"))
    }

    /// Ports of the nodes that are primaries now.
    pub fn primaries(&self) -> Vec<u16> {
        let live = self
            .nodes
            .iter()
            .find(|(_, c)| c.is_some())
            .expect("a live node")
            .0;
        let nodes = cli(live, &["cluster", "nodes"]).expect("cluster nodes");
        nodes
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .filter_map(|l| {
                let addr = l.split_whitespace().nth(1)?;
                addr.split(['@', ':']).nth(1)?.parse().ok()
            })
            .collect()
    }

    /// Kills the node on `port` at once (SIGKILL), as a crash would.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|(p, _)| *p == port)
            .expect("a node of this cluster");
        if let Some(mut child) = node.1.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A node on a free port, once it answers. The port is free when picked, but another
    /// test's connection may take it as its own before the node binds it: a node that
    /// exits (or a port that another process answers on) is given up for another port.
    fn start_node(&self) -> (u16, Child) {
        let mut why = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut child = self.spawn(port);
            let ours = format!("process_id:{}", child.id());
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if cli(port, &["info", "server"]).is_some_and(|o| o.contains(&ours)) {
                    return (port, child);
                }
                if let Ok(Some(status)) = child.try_wait() {
                    why = format!(
                        "redis-server on port {port} exited ({status}): {}",
                        std::fs::read_to_string(self.log(port)).unwrap_or_default()
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting until node {port} answers: {}",
                    std::fs::read_to_string(self.log(port)).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("no cluster node started on five free ports; the last: {why}");
    }

    fn log(&self, port: u16) -> PathBuf {
        self.dir.join(format!("node-{port}.log"))
    }

    fn spawn(&self, port: u16) -> Child {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            // Replicas sync at once and may always take over: a test kills primaries
            // seconds after the cluster formed.
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--cluster-replica-validity-factor", "0"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::fs::File::create(self.log(port)).expect("a node's log"))
            .spawn()
            .expect("redis-server starts")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-cli -p port args…`'s output, `None` when it failed.
fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls a server's state: start-up has no other readiness signal.
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free port whose cluster bus port (+10000) is free too.
fn free_port() -> u16 {
    loop {
        let Ok(l) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let port = l.local_addr().expect("bound").port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}
