//! The lookups example as its users run it: on SQLite alone, a profile is loaded once and
//! then served from the L1; two processes sharing Redis share values, and an invalidation
//! in one reaches the other.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `quiver-lookups`, killed when dropped.
struct Service {
    child: Child,
    conn: BufReader<TcpStream>,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    fn start(db: &std::path::Path, redis: Option<(&str, &str)>) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quiver-lookups"));
        cmd.env("DATABASE_URL", format!("sqlite:{}", db.display()))
            .env("LOOKUPS_LISTEN", "127.0.0.1:0")
            .env_remove("REDIS_URL")
            .stdout(Stdio::piped());
        if let Some((url, namespace)) = redis {
            cmd.env("REDIS_URL", url)
                .env("LOOKUPS_NAMESPACE", namespace);
        }
        let mut child = cmd.spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("serving lookups on ")
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Self {
            child,
            conn: BufReader::new(stream),
        }
    }

    fn ask(&mut self, line: &str) -> serde_json::Value {
        writeln!(self.conn.get_mut(), "{line}").unwrap();
        let mut answer = String::new();
        self.conn.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap()
    }
}

#[test]
fn a_profile_is_loaded_once_then_served_from_the_l1() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Service::start(&dir.path().join("lookups.db"), None);
    let first = s.ask("7");
    assert_eq!(first["outcome"], "miss", "{first}");
    assert_eq!(first["user"]["id"], 7);
    assert!(first["user"]["handle"].is_string());
    assert_eq!(s.ask("7")["outcome"], "hit_l1");
    let absent = s.ask("999999");
    assert!(absent["user"].is_null(), "{absent}");
    assert!(
        s.ask("seven")["error"]
            .as_str()
            .unwrap()
            .contains("expected a user id")
    );
    assert_eq!(s.ask("invalidate 7")["invalidated"], 7);
    assert_eq!(
        s.ask("7")["outcome"],
        "miss",
        "invalidated, so loaded again"
    );
}

#[test]
fn processes_on_one_redis_share_values_and_invalidations() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lookups.db");
    let redis = quiver_testkit::redis_url();
    let ns = quiver_testkit::namespace("lookups");
    let mut a = Service::start(&db, Some((&redis, &ns)));
    let mut b = Service::start(&db, Some((&redis, &ns)));
    assert_eq!(a.ask("3")["outcome"], "miss");
    assert_eq!(
        b.ask("3")["outcome"],
        "hit_l2",
        "b finds what a loaded in Redis"
    );
    assert_eq!(b.ask("3")["outcome"], "hit_l1");
    assert_eq!(a.ask("invalidate 3")["invalidated"], 3);
    quiver_testkit::eventually_blocking(
        "a's invalidation evicts the profile from b's L1",
        quiver_testkit::DEADLINE,
        || b.ask("3")["outcome"] != "hit_l1",
    );
}
