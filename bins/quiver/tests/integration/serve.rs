//! `quiver serve` and `quiver token` as a user runs them: the README's demo command, a
//! clean stop on SIGTERM, and configuration errors that exit before anything is opened.

use quiver_model::UserId;
use quiver_server::auth::Auth;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const SECRET: &str = "a test secret of at least 32 bytes!!";

/// Kills the server if the test fails before stopping it, so no orphan outlives the test.
pub(crate) struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `quiver serve --demo` in a fresh directory with `extra` flags: the process, and its
/// stderr lines (read to the end on a thread, so the server never blocks on the pipe).
pub(crate) fn demo(
    extra: &[&str],
) -> (
    Running,
    std::sync::mpsc::Receiver<String>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["serve", "--demo", "--listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0", "--log-format", "json"])
        .args(extra)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("QUIVER_JWT_SECRET")
        .env("RUST_LOG", "warn")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Running(child);
    let stderr = BufReader::new(child.0.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx, dir)
}

/// The next line of `lines` that contains `needle` (failing after a minute).
fn line_with(lines: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no line with {needle:?} on the server's stderr"));
        if line.contains(needle) {
            return line;
        }
    }
}

/// The token and feed URL of the demo's curl line.
pub(crate) fn curl_line(lines: &std::sync::mpsc::Receiver<String>) -> (String, String) {
    let curl = line_with(lines, "curl -H");
    let token = curl
        .split("Bearer ")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    let url = curl.split_whitespace().last().unwrap();
    (token.to_owned(), url.to_owned())
}

#[tokio::test]
async fn serve_demo_answers_the_readme_curl_and_stops_cleanly_on_sigterm() {
    // Every request is "slow": its log line shows the stage breakdown.
    let (mut child, lines, dir) = demo(&["--slow-request-ms", "0"]);
    // The demo prints a ready-to-run curl line with a token and the bound address.
    let (token, url) = curl_line(&lines);
    let next_line_with = |needle: &str| line_with(&lines, needle);
    let resp = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp_id = resp.headers()["x-request-id"].clone();
    let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert!(
        !body["items"].as_array().unwrap().is_empty(),
        "the demo data is seeded"
    );
    assert!(dir.path().join("quiver-demo.db").exists());
    let request_id = resp_id.to_str().unwrap().to_owned();
    // The slow-request line is JSON, carries the request id and the stage timings.
    let logged = next_line_with("slow request");
    let log: serde_json::Value = serde_json::from_str(&logged).unwrap();
    assert_eq!(log["span"]["id"], request_id.as_str(), "{logged}");
    assert_eq!(log["fields"]["route"], "/api/v1/feed", "{logged}");
    for stage in ["skeleton_ms", "hydrate_ms", "present_ms"] {
        assert!(
            log["fields"][stage].as_f64().is_some(),
            "{stage} in {logged}"
        );
    }

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.0.wait().unwrap();
    assert!(exit.success(), "serve exits 0 after draining: {exit:?}");
}

fn serve_with(args: &[&str], envs: &[(&str, &str)], db: &std::path::Path) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quiver"));
    cmd.arg("serve")
        .args(args)
        .env("DATABASE_URL", format!("sqlite:{}", db.display()))
        .env_remove("QUIVER_JWT_SECRET")
        .env_remove("REDIS_URL");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn invalid_configuration_is_a_usage_error_before_anything_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("untouched.db");
    let secret = ("QUIVER_JWT_SECRET", SECRET);
    for (args, envs, needle) in [
        (vec![], vec![], "QUIVER_JWT_SECRET"),
        (
            vec![],
            vec![("QUIVER_JWT_SECRET", "short")],
            "at least 32 bytes",
        ),
        (
            vec!["--rate-per-second", "0"],
            vec![secret],
            "--rate-per-second must be greater than 0",
        ),
        (vec!["--listen", "not-an-address"], vec![secret], "--listen"),
        (
            vec!["--request-timeout-ms", "soon"],
            vec![secret],
            "--request-timeout-ms",
        ),
        (
            vec![],
            vec![secret, ("REDIS_URL", "http://x")],
            "REDIS_URL must start with redis://, rediss://, redis-cluster://",
        ),
        (
            vec![
                "--listen",
                "127.0.0.1:7000",
                "--admin-listen",
                "127.0.0.1:7000",
            ],
            vec![secret],
            "must differ",
        ),
        // The demo's signing secret is public: not on an address others can reach.
        (
            vec!["--demo", "--listen", "0.0.0.0:0"],
            vec![],
            "loopback only",
        ),
        (
            vec!["--demo", "--listen", "[::]:0"],
            vec![],
            "loopback only",
        ),
    ] {
        let out = serve_with(&args, &envs, &db);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains(SECRET), "the secret is never printed");
        assert!(!db.exists(), "{args:?}: nothing was opened");
    }
    let help = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["serve", "--help"])
        .env("QUIVER_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(!String::from_utf8_lossy(&help.stdout).contains(SECRET));
}

#[test]
fn token_mints_a_bearer_token_the_server_accepts() {
    let out = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["token", "--user", "5", "--ttl", "2h"])
        .env("QUIVER_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let auth = Auth::new(SECRET.as_bytes()).unwrap();
    assert_eq!(
        auth.viewer(format!("Bearer {}", token.trim()).as_bytes()),
        Ok(UserId(5))
    );
    assert!(
        Auth::new(b"another secret of at least 32 bytes")
            .unwrap()
            .viewer(format!("Bearer {}", token.trim()).as_bytes())
            .is_err()
    );
    for bad in [
        vec!["--user", "5", "--ttl", "soon"],
        vec!["--user", "0"],
        // Tokens cannot be revoked: a long-lived one is refused.
        vec!["--user", "5", "--ttl", "400days"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_quiver"))
            .arg("token")
            .args(&bad)
            .env("QUIVER_JWT_SECRET", SECRET)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
}

/// SIGTERM under steady load: every request the server took is answered in full (no
/// response cut short, no error status), and new connections are refused once it stops
/// accepting.
#[tokio::test]
async fn sigterm_under_load_fails_no_request_in_flight() {
    let (mut child, lines, _dir) = demo(&["--rate-per-second", "100000", "--rate-burst", "100000"]);
    let (token, url) = curl_line(&lines);
    // A new connection per request: after the listener closes, a request either was
    // taken (and must be answered) or cannot connect.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (http, url, token) = (http.clone(), url.clone(), token.clone());
            tokio::spawn(async move {
                let (mut ok, mut broken) = (0u32, Vec::new());
                loop {
                    match http.get(&url).bearer_auth(&token).send().await {
                        Ok(resp) if resp.status() == 200 => match resp.bytes().await {
                            Ok(_) => ok += 1,
                            Err(e) => broken.push(format!("body: {e}")),
                        },
                        Ok(resp) => broken.push(format!("status {}", resp.status())),
                        Err(e) if e.is_connect() => return (ok, broken),
                        // No response at all: the connection was closed or reset before
                        // the server read the request (a connection still in the accept
                        // queue, or accepted as the drain began): not taken, so retried,
                        // as clients retry an idempotent GET. A response cut short would
                        // be a body error above.
                        Err(_) => continue,
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut answered = 0;
    for r in readers {
        let (ok, broken) = r.await.unwrap();
        assert!(broken.is_empty(), "{broken:?}");
        answered += ok;
    }
    assert!(answered > 20, "steady load: {answered} answered");
    let exit = child.0.wait().unwrap();
    assert!(exit.success(), "serve exits 0 after draining: {exit:?}");
}

/// Ten times the connection cap at once, every one silent: the cap holds, the process's
/// memory stays bounded, and a client on an admitted connection is still served.
#[tokio::test]
async fn ten_times_the_connection_cap_is_refused_with_bounded_memory() {
    let (child, lines, _dir) = demo(&["--max-connections", "50"]);
    // The serving line (with the admin address) comes before the curl line.
    let admin = line_with(&lines, "metrics at")
        .split("metrics at ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .to_owned();
    let (token, url) = curl_line(&lines);
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.0.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    // One admitted client, kept alive, served before and during the flood.
    let http = reqwest::Client::new();
    let served = |http: reqwest::Client, url: String, token: String| async move {
        http.get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(served(http.clone(), url.clone(), token.clone()).await, 200);
    let before = rss();
    let addr = url.split('/').nth(2).unwrap().to_owned();
    let mut flood = Vec::new();
    let mut refused = 0;
    for _ in 0..500 {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut first = [0u8; 12];
        // Past the cap the answer is immediate; an admitted one says nothing yet.
        match tokio::time::timeout(
            Duration::from_millis(20),
            tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut first),
        )
        .await
        {
            Ok(Ok(_)) => {
                assert_eq!(&first, b"HTTP/1.1 503");
                refused += 1;
            }
            _ => flood.push(tcp),
        }
    }
    assert!(refused >= 450, "{refused} refused");
    assert!(flood.len() <= 50, "{} admitted", flood.len());
    let during = rss();
    let metrics = http.get(&admin).send().await.unwrap().text().await.unwrap();
    let open: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("quiver_http_connections_open "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(open <= 50, "{open} open");
    eprintln!("RSS {before} bytes before, {during} with {refused} refused and {open} open");
    assert!(
        during < before + (16 << 20),
        "RSS grew from {before} to {during} bytes"
    );
    assert_eq!(served(http, url, token).await, 200);
    drop(flood);
}
