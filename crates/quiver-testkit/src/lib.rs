#![doc = include_str!("../README.md")]
mod gate;
pub mod redis_cluster;
pub mod replica;
pub mod world;

pub use gate::Gate;

use std::future::Future;
use std::time::{Duration, Instant};

/// How long a wait lasts before it fails the test.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// How often a wait checks again.
const POLL: Duration = Duration::from_millis(20);

/// The Redis the tests use (`REDIS_URL`); a test that needs one and finds none fails
/// saying how to run it.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .expect("REDIS_URL must name a Redis server: run the tests with `cargo xtask test`")
}

/// The PostgreSQL server the tests use (`DATABASE_URL`), as for [`redis_url`].
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .expect("DATABASE_URL must name a PostgreSQL server: run the tests with `cargo xtask test`")
}

/// A Redis key namespace that no other test, process or run uses, so tests sharing one
/// Redis never see each other's keys, channels or streams.
pub fn namespace(test: &str) -> String {
    use std::hash::{BuildHasher, RandomState};
    let salt = RandomState::new().hash_one(std::time::SystemTime::now());
    format!("qtest:{test}:{}:{salt:x}", std::process::id())
}

/// Waits until `check` holds, failing the test after [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits, blocking the thread, until `check` holds, failing the test after `within`;
/// returns how long it took (for tests outside a runtime, such as those that drive a
/// server process).
pub fn eventually_blocking(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        if check() {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "timed out waiting until {what}");
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_differ_between_calls() {
        assert_ne!(namespace("a"), namespace("a"));
        assert!(namespace("cache").starts_with("qtest:cache:"));
    }

    #[test]
    #[should_panic(expected = "timed out waiting until never")]
    fn a_wait_that_never_holds_fails() {
        eventually_blocking("never", Duration::from_millis(50), || false);
    }
}
