//! Plain configuration structs for the two backends; the binary fills them from env/flags.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// How to connect to PostgreSQL and size the pool.
#[derive(Clone)]
pub struct PgConfig {
    /// `postgres://…` URL; redacted in `Debug`.
    pub url: String,
    /// Upper bound of pooled connections. Size it to the database's cores, not the
    /// request concurrency: more connections than the server can run only queue there.
    pub max_connections: u32,
    /// Connections kept open even when idle, so a burst does not pay for handshakes.
    pub min_connections: u32,
    /// How long a caller waits for a pooled connection before `Unavailable`.
    pub acquire_timeout: Duration,
    /// Idle connections above `min_connections` are closed after this long.
    pub idle_timeout: Option<Duration>,
    /// Connections are recycled after this long (server-side memory, failover).
    pub max_lifetime: Option<Duration>,
    /// Server-side `statement_timeout`: PostgreSQL itself cancels a statement running
    /// longer, so a runaway query cannot hold a connection forever. The default (2 s) is
    /// well inside a request's deadline, so the request can still answer why.
    pub statement_timeout: Duration,
    /// Ping a connection before handing it out. Off by default: it costs a round trip per
    /// checkout, and a broken connection already surfaces as `Unavailable` on first use.
    pub test_before_acquire: bool,
    /// `application_name` shown in `pg_stat_activity`.
    pub application_name: String,
    /// Streaming replicas that take the reads (`postgres://…` each, pooled as above);
    /// empty: the primary takes every read. Redacted in `Debug`.
    pub read_urls: Vec<String>,
    /// How long a write waits for a replica to replay it before taking the replica out
    /// of the rotation (writes answer only once every replica in rotation has it).
    pub replica_max_lag: Duration,
    /// How often a replica is pinged, and one out of the rotation tried again.
    pub replica_check_interval: Duration,
}

impl Default for PgConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/quiver".to_owned(),
            max_connections: 16,
            min_connections: 2,
            acquire_timeout: Duration::from_secs(2),
            idle_timeout: Some(Duration::from_secs(300)),
            max_lifetime: Some(Duration::from_secs(1800)),
            statement_timeout: Duration::from_secs(2),
            test_before_acquire: false,
            application_name: "quiver".to_owned(),
            read_urls: Vec::new(),
            replica_max_lag: Duration::from_millis(500),
            replica_check_interval: Duration::from_secs(1),
        }
    }
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("statement_timeout", &self.statement_timeout)
            .field("test_before_acquire", &self.test_before_acquire)
            .field("application_name", &self.application_name)
            .field(
                "read_urls",
                &self
                    .read_urls
                    .iter()
                    .map(|u| redact_url(u))
                    .collect::<Vec<_>>(),
            )
            .field("replica_max_lag", &self.replica_max_lag)
            .field("replica_check_interval", &self.replica_check_interval)
            .finish()
    }
}

/// `postgres://user:secret@host/db?password=x` → `postgres://user:***@host/db?password=***`.
/// The user part ends at the last `@` (a raw `@` inside a password stays hidden), and
/// password parameters of the query are hidden too.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_owned();
    };
    let (userinfo, after) = match rest.rsplit_once('@') {
        Some((userinfo, after)) => (Some(userinfo), after),
        None => (None, rest),
    };
    let (location, query) = match after.split_once('?') {
        Some((location, query)) => (location, Some(query)),
        None => (after, None),
    };
    let mut out = format!("{scheme}://");
    if let Some(userinfo) = userinfo {
        out.push_str(userinfo.split(':').next().unwrap_or(""));
        if userinfo.contains(':') {
            out.push_str(":***");
        }
        out.push('@');
    }
    out.push_str(location);
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.to_ascii_lowercase().contains("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// Where the embedded SQLite database lives.
#[derive(Clone, Debug)]
pub struct SqliteConfig {
    /// The database file; `None` is a private in-memory database (tests).
    pub path: Option<PathBuf>,
    /// Readers run in parallel under WAL; writes serialize inside SQLite.
    pub max_connections: u32,
    /// How long a caller waits for a pooled connection.
    pub acquire_timeout: Duration,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            path: Some(PathBuf::from("quiver-demo.db")),
            max_connections: 4,
            acquire_timeout: Duration::from_secs(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_password() {
        let cfg = PgConfig {
            url: "postgres://app:hunter2@db:5432/quiver".into(),
            ..PgConfig::default()
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("postgres://app:***@db:5432/quiver"),
            "{shown}"
        );
        for (url, shown) in [
            ("postgres://app:p@ss@word@db/q", "postgres://app:***@db/q"),
            (
                "postgres://db/q?user=app&password=hunter2&sslmode=require",
                "postgres://db/q?user=app&password=***&sslmode=require",
            ),
            ("postgres://app@db/q", "postgres://app@db/q"),
            ("not a url", "***"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
    }
}
