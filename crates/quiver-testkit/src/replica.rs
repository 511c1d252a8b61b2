//! Streaming PostgreSQL replicas for the read-replica tests: each test takes its own
//! replica of the replication primary `cargo xtask test` starts (`pg_basebackup -R`), so
//! it may pause, kill and restart it without disturbing any other test. Each replica has
//! its own replication slot: without one, a checkpoint the primary takes between the copy
//! and the replica's first connection (another test's `--checkpoint=fast` copy, its
//! segment switch) may remove the WAL the replica needs next, and it never catches up.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

/// The primary the replicas follow (`QUIVER_TEST_PRIMARY_URL`); a test that needs one and
/// finds none fails saying how to run it.
pub fn primary_url() -> String {
    std::env::var("QUIVER_TEST_PRIMARY_URL").expect(
        "QUIVER_TEST_PRIMARY_URL must name a PostgreSQL primary that allows replication: \
         run the tests with `cargo xtask test` (it starts one from the postgresql package)",
    )
}

/// A running replica of [`primary_url`], stopped and deleted when dropped.
#[derive(Debug)]
pub struct PgReplica {
    dir: PathBuf,
    port: u16,
    bindir: PathBuf,
    as_postgres: bool,
    /// The primary's replication slot that keeps the WAL this replica has not received.
    slot: String,
}

impl PgReplica {
    /// Copies the primary with `pg_basebackup -R` and starts the copy as a hot standby,
    /// returning once it accepts read-only connections.
    pub fn start() -> Self {
        let primary = primary_url();
        let bindir = PathBuf::from(std::env::var("QUIVER_PG_BINDIR").expect(
            "QUIVER_PG_BINDIR must name PostgreSQL's server binaries: run the tests with `cargo xtask test`",
        ));
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("quiver-replica-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("replica directory");
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let replica = Self {
            dir,
            port,
            bindir,
            as_postgres,
            slot: format!("quiver_replica_{}_{port}", std::process::id()),
        };
        if as_postgres {
            // PostgreSQL refuses to run as root.
            run(Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&replica.dir));
        }
        let mut backup = replica.tool("pg_basebackup");
        backup
            .arg("-D")
            .arg(replica.dir.join("data"))
            .args(["-R", "-X", "stream", "--checkpoint=fast", "--no-sync"])
            .args(["--create-slot", "--slot", &replica.slot, "-d"])
            .arg(&primary);
        run(&mut backup);
        replica.restart();
        replica
    }

    /// The replica's URL, for database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Kills the server at once (`pg_ctl stop -m immediate`), as a crash would.
    pub fn kill(&self) {
        run(self.ctl().args(["-m", "immediate", "stop"]));
    }

    /// Starts the server (again), returning once it accepts connections.
    pub fn restart(&self) {
        let mut start = self.ctl();
        start
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c hot_standby=on",
                self.port,
                self.dir.display()
            ))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "start"]);
        if let Err(e) = try_run(&mut start) {
            let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            panic!("the replica did not start: {e}\n{log}");
        }
    }

    fn ctl(&self) -> Command {
        let mut cmd = self.tool("pg_ctl");
        cmd.arg("-D").arg(self.dir.join("data"));
        cmd
    }

    fn tool(&self, name: &str) -> Command {
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"])
                .arg(self.bindir.join(name));
            cmd
        } else {
            Command::new(self.bindir.join(name))
        }
    }
}

impl Drop for PgReplica {
    fn drop(&mut self) {
        let _ = self.ctl().args(["-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
        // The slot would keep the primary's WAL for as long as it runs. Its walsender may
        // outlive the replica's immediate stop by a moment: the primary waits for it.
        let drop_slot = format!(
            "DO $$ BEGIN
               FOR i IN 1..200 LOOP
                 IF NOT EXISTS (SELECT 1 FROM pg_replication_slots
                                WHERE slot_name = '{slot}' AND active) THEN
                   PERFORM pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                     WHERE slot_name = '{slot}';
                   RETURN;
                 END IF;
                 PERFORM pg_sleep(0.01);
               END LOOP;
             END $$",
            slot = self.slot
        );
        let psql = self
            .tool("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", &drop_slot, "-d"])
            .arg(primary_url())
            .output();
        if let Ok(out) = psql
            && !out.status.success()
        {
            eprintln!(
                "could not drop replication slot {}: {}",
                self.slot,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
}

fn run(cmd: &mut Command) {
    if let Err(e) = try_run(cmd) {
        panic!("{e}");
    }
}

fn try_run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
