//! `quiver serve` and `quiver token`: configuration from flags (with environment
//! fallbacks), checked before anything binds, then composed into the server.

use crate::db::DEMO_DB;
use anyhow::{Context, Result};
use clap::Args;
use clap::error::ErrorKind;
use quiver_cache::{BatchConfig, RedisConfig, RedisRemote, Remote};
use quiver_enrich::{EngineConfig, PrefetchConfig};
use quiver_events::EventsConfig;
use quiver_model::UserId;
use quiver_server::ServerConfig;
use quiver_server::auth::Auth;
use quiver_server::compose::{self, Settings, StackConfig};
use quiver_store::events::FanOut;
use quiver_store::seed::{SeedConfig, generate};
use quiver_store::{Database, DatabaseUrl, PgConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The longest a minted token may live: tokens cannot be revoked, only expire.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The secret `--demo` signs with when none is given: fine on a laptop, refused otherwise.
const DEMO_SECRET: &str = "quiver-demo-secret-do-not-use-in-production";

/// Every default below is the library's own (`…Config::default()`): one source, shown
/// by `--help`.
#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Run on the embedded default: SQLite ./quiver-demo.db (seeded on first run), L1
    /// cache only, a demo signing secret
    #[arg(long)]
    demo: bool,
    /// Database: postgres://… or sqlite:PATH
    #[arg(long, env = "DATABASE_URL", required_unless_present = "demo")]
    database_url: Option<String>,
    /// PostgreSQL streaming replicas that take the reads, comma-separated postgres://…
    /// URLs (writes answer once every replica in rotation has replayed them)
    #[arg(
        long,
        env = "DATABASE_READ_URLS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    database_read_urls: Vec<String>,
    /// How long a write waits for a replica before the replica leaves the rotation,
    /// milliseconds
    #[arg(long, env = "QUIVER_REPLICA_MAX_LAG_MS", default_value_t = millis(PgConfig::default().replica_max_lag))]
    replica_max_lag_ms: u64,
    /// Redis for the shared L2 cache and the event stream (none: L1 only, events in
    /// process); redis-cluster://host:port?node=host:port names a Redis Cluster
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// Prefix of every Redis key, channel and stream; replicas of one deployment share it
    #[arg(long, env = "QUIVER_REDIS_NAMESPACE", default_value_t = StackConfig::default().namespace)]
    redis_namespace: String,
    /// Address of the public API
    #[arg(long, env = "QUIVER_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the admin listener (/metrics, /debug/pprof)
    #[arg(long, env = "QUIVER_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    admin_listen: SocketAddr,
    /// HS256 secret of bearer tokens, at least 32 bytes (required unless --demo)
    #[arg(long, env = "QUIVER_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Secret that signs pagination cursors (defaults to one derived from the JWT secret)
    #[arg(long, env = "QUIVER_CURSOR_SECRET", hide_env_values = true)]
    cursor_secret: Option<String>,
    /// Most database connections
    #[arg(long, env = "QUIVER_DB_MAX_CONNECTIONS", default_value_t = PgConfig::default().max_connections)]
    db_max_connections: u32,
    /// Server-side statement timeout, milliseconds
    #[arg(long, env = "QUIVER_DB_STATEMENT_TIMEOUT_MS", default_value_t = millis(PgConfig::default().statement_timeout))]
    db_statement_timeout_ms: u64,
    /// L1 cache size per entity cache, MiB (0 disables L1)
    #[arg(long, env = "QUIVER_L1_MIB", default_value_t = StackConfig::default().l1_capacity_bytes >> 20)]
    l1_mib: u64,
    /// Soft TTL of every entity cache, seconds: past it an entry is served stale while
    /// it is refreshed in the background
    #[arg(long, env = "QUIVER_CACHE_SOFT_TTL_SECS", default_value_t = StackConfig::default().soft_ttl.as_secs_f64())]
    cache_soft_ttl_secs: f64,
    /// The last part of the soft TTL (0 to 1) in which a read refreshes an entry ahead,
    /// in the background, so that entries read often never go stale (0 disables)
    #[arg(long, env = "QUIVER_REFRESH_AHEAD", default_value_t = StackConfig::default().refresh_ahead)]
    refresh_ahead: f64,
    /// Disable every cache tier (each lookup goes to the database)
    #[arg(long, env = "QUIVER_NO_CACHE")]
    no_cache: bool,
    /// Entries of each viewer's home feed and of each author's posts cached as one value,
    /// which pages are cut from without a database query (0 reads every such page, and
    /// every discovery window, from the database; at most 1000)
    #[arg(long, env = "QUIVER_HOME_HEAD", default_value_t = StackConfig::default().home_head)]
    home_head: u32,
    /// Finished pages (home, and discovery of a given seed), MiB, served again while
    /// every cached input they were built from is unchanged (0 disables; needs the L1)
    #[arg(long, env = "QUIVER_FINISHED_PAGES_MIB", default_value_t = EngineConfig::default().finished_pages_bytes >> 20)]
    finished_pages_mib: u64,
    /// Disable cross-request coalescing of database batches
    #[arg(long, env = "QUIVER_NO_COALESCE")]
    no_coalesce: bool,
    /// Coalescing: the longest a batch waits for the one loading before it, microseconds
    #[arg(long, env = "QUIVER_COALESCE_WINDOW_US", default_value_t = BatchConfig::default().window.as_micros() as u64)]
    coalesce_window_us: u64,
    /// Encode every feed item and author for every page instead of splicing the
    /// fragments stored with the cached items (to measure what storing them ready buys)
    #[arg(long, env = "QUIVER_NO_FRAGMENTS")]
    no_fragments: bool,
    /// How feed pages are encoded: `spliced` (pre-encoded fragments, the default) or
    /// `serde-json` (whole pages through serde_json, to measure what splicing buys)
    #[arg(long, env = "QUIVER_SERIALIZER", default_value = "spliced", value_parser = ["spliced", "serde-json"])]
    serializer: String,
    /// Prefetch workers warming next pages (0 disables prefetch)
    #[arg(long, env = "QUIVER_PREFETCH_WORKERS", default_value_t = PrefetchConfig::default().workers)]
    prefetch_workers: usize,
    /// Prefetch jobs that may wait; more are dropped
    #[arg(long, env = "QUIVER_PREFETCH_QUEUE", default_value_t = PrefetchConfig::default().queue)]
    prefetch_queue: usize,
    /// Requests handled at once at most: the ceiling of the adaptive limit
    #[arg(long, env = "QUIVER_MAX_CONCURRENCY", default_value_t = ServerConfig::default().max_concurrency)]
    max_concurrency: usize,
    /// Keep the concurrency limit at --max-concurrency instead of adapting it to latency
    #[arg(long, env = "QUIVER_FIXED_CONCURRENCY", default_value_t = !ServerConfig::default().adaptive_concurrency)]
    fixed_concurrency: bool,
    /// How long a request may wait for a slot before 503, milliseconds
    #[arg(long, env = "QUIVER_QUEUE_TIMEOUT_MS", default_value_t = millis(ServerConfig::default().queue_timeout))]
    queue_timeout_ms: u64,
    /// Requests per second per client
    #[arg(long, env = "QUIVER_RATE_PER_SECOND", default_value_t = ServerConfig::default().rate_per_second)]
    rate_per_second: u32,
    /// Burst above the rate per client
    #[arg(long, env = "QUIVER_RATE_BURST", default_value_t = ServerConfig::default().rate_burst)]
    rate_burst: u32,
    /// Load balancers whose Forwarded / X-Forwarded-For names the client of an anonymous
    /// request (comma-separated addresses or CIDR blocks); none: the peer is the client
    #[arg(long, env = "QUIVER_TRUSTED_PROXIES", value_delimiter = ',', value_parser = address_or_block)]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Request deadline, milliseconds
    #[arg(long, env = "QUIVER_REQUEST_TIMEOUT_MS", default_value_t = millis(ServerConfig::default().request_timeout))]
    request_timeout_ms: u64,
    /// Connections open at once; past it a new one gets a 503 and is closed
    #[arg(long, env = "QUIVER_MAX_CONNECTIONS", default_value_t = ServerConfig::default().max_connections)]
    max_connections: usize,
    /// A connection with no request in flight this long is closed, milliseconds
    #[arg(long, env = "QUIVER_IDLE_TIMEOUT_MS", default_value_t = millis(ServerConfig::default().idle_timeout))]
    idle_timeout_ms: u64,
    /// How long a client may take to send a request head (and a new connection its
    /// first request), milliseconds
    #[arg(long, env = "QUIVER_HEADER_READ_TIMEOUT_MS", default_value_t = millis(ServerConfig::default().header_read_timeout))]
    header_read_timeout_ms: u64,
    /// How long a client may take to send a request body, milliseconds (408 past it)
    #[arg(long, env = "QUIVER_BODY_READ_TIMEOUT_MS", default_value_t = millis(ServerConfig::default().body_read_timeout))]
    body_read_timeout_ms: u64,
    /// Concurrent HTTP/2 streams per connection
    #[arg(long, env = "QUIVER_MAX_STREAMS_PER_CONNECTION", default_value_t = ServerConfig::default().max_streams_per_connection)]
    max_streams_per_connection: u32,
    /// Largest request body, bytes
    #[arg(long, env = "QUIVER_MAX_BODY_BYTES", default_value_t = ServerConfig::default().max_body_bytes)]
    max_body_bytes: u64,
    /// Requests slower than this are logged with stage timings, milliseconds
    #[arg(long, env = "QUIVER_SLOW_REQUEST_MS", default_value_t = millis(ServerConfig::default().slow_request))]
    slow_request_ms: u64,
    /// How long a shared cache (CDN) may keep anonymous reads of posts, profiles and
    /// user posts, seconds (`Cache-Control: public, max-age`); 0 makes them revalidate
    #[arg(long, env = "QUIVER_PUBLIC_MAX_AGE", default_value_t = ServerConfig::default().public_max_age.as_secs())]
    public_max_age: u64,
    /// Compress bodies of at least this many bytes (gzip or zstd, as the client accepts)
    #[arg(long, env = "QUIVER_COMPRESSION_MIN_BYTES", default_value_t = ServerConfig::default().compression_min_bytes)]
    compression_min_bytes: usize,
    /// Never compress responses
    #[arg(long, env = "QUIVER_NO_COMPRESSION")]
    no_compression: bool,
    /// Do not relay the outbox here (events wait for another replica's relay, or for a
    /// restart without this flag)
    #[arg(long, env = "QUIVER_NO_RELAY")]
    no_relay: bool,
    /// Event consumers in this process, each on its own Redis connection (with REDIS_URL)
    #[arg(long, env = "QUIVER_EVENT_CONSUMERS", default_value_t = EventsConfig::default().consumers)]
    event_consumers: usize,
    /// Event streams, by user (on a Redis Cluster each lives on one node; change only
    /// with nothing pending); each gets --event-consumers consumers
    #[arg(long, env = "QUIVER_EVENT_PARTITIONS", default_value_t = EventsConfig::default().partitions)]
    event_partitions: u16,
    /// Authors with more followers than this are celebrities: their posts are merged
    /// into followers' home feeds at read time instead of fanned out (for good)
    #[arg(long, env = "QUIVER_CELEBRITY_FOLLOWERS", default_value_t = FanOut::default().celebrity_followers)]
    celebrity_followers: u32,
    /// Pending events idle this long are reclaimed from their consumer, milliseconds
    #[arg(long, env = "QUIVER_EVENT_CLAIM_IDLE_MS", default_value_t = millis(EventsConfig::default().claim_idle))]
    event_claim_idle_ms: u64,
    /// An event failing this many deliveries goes to the dead-letter stream
    #[arg(long, env = "QUIVER_EVENT_MAX_DELIVERIES", default_value_t = EventsConfig::default().max_deliveries)]
    event_max_deliveries: u64,
}

#[derive(Args)]
pub(crate) struct TokenArgs {
    /// The user the token speaks for
    #[arg(long)]
    user: i64,
    /// How long the token is valid (e.g. 30m, 1h, 7d)
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// HS256 secret, the same the server uses
    #[arg(long, env = "QUIVER_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
}

/// A default duration as a flag's whole milliseconds.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `10.0.0.0/8` or a single address (`10.0.0.1`, as `/32`).
fn address_or_block(s: &str) -> Result<ipnet::IpNet, String> {
    s.trim()
        .parse::<ipnet::IpNet>()
        .or_else(|_| s.trim().parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or a CIDR block"))
}

/// Exits with a usage error (status 2), like clap does for malformed flags.
fn usage(message: impl std::fmt::Display) -> ! {
    clap::Error::raw(ErrorKind::ValueValidation, format!("{message}\n")).exit()
}

fn check_secret(secret: &str) {
    if secret.len() < quiver_server::auth::MIN_SECRET_BYTES {
        usage(format!(
            "QUIVER_JWT_SECRET must be at least {} bytes",
            quiver_server::auth::MIN_SECRET_BYTES
        ));
    }
}

/// Checks every value; exits with a usage error before anything is opened or bound.
fn validate(args: &ServeArgs) -> (String, ServerConfig) {
    let secret = match (&args.jwt_secret, args.demo) {
        (Some(s), _) => {
            check_secret(s);
            s.clone()
        }
        // The demo secret is in this repository: anyone could mint tokens with it, so it
        // signs only for a server that nobody else can reach.
        (None, true) if !args.listen.ip().is_loopback() => usage(format!(
            "--demo without QUIVER_JWT_SECRET listens on loopback only (its secret is public), not {}",
            args.listen
        )),
        (None, true) => DEMO_SECRET.to_owned(),
        (None, false) => usage("QUIVER_JWT_SECRET (or --jwt-secret) is required unless --demo"),
    };
    let positive = [
        ("--db-max-connections", u64::from(args.db_max_connections)),
        ("--db-statement-timeout-ms", args.db_statement_timeout_ms),
        ("--replica-max-lag-ms", args.replica_max_lag_ms),
        ("--max-concurrency", args.max_concurrency as u64),
        ("--event-partitions", u64::from(args.event_partitions)),
        ("--queue-timeout-ms", args.queue_timeout_ms),
        ("--rate-per-second", u64::from(args.rate_per_second)),
        ("--rate-burst", u64::from(args.rate_burst)),
        ("--request-timeout-ms", args.request_timeout_ms),
        ("--max-connections", args.max_connections as u64),
        ("--idle-timeout-ms", args.idle_timeout_ms),
        ("--header-read-timeout-ms", args.header_read_timeout_ms),
        ("--body-read-timeout-ms", args.body_read_timeout_ms),
        (
            "--max-streams-per-connection",
            u64::from(args.max_streams_per_connection),
        ),
        ("--max-body-bytes", args.max_body_bytes),
        ("--coalesce-window-us", args.coalesce_window_us),
        ("--event-claim-idle-ms", args.event_claim_idle_ms),
        ("--event-max-deliveries", args.event_max_deliveries),
    ];
    for (name, value) in positive {
        if value == 0 {
            usage(format!("{name} must be greater than 0"));
        }
    }
    if args.home_head > quiver_store::MAX_PAGE_SIZE {
        usage(format!(
            "--home-head is at most {}, not {}",
            quiver_store::MAX_PAGE_SIZE,
            args.home_head
        ));
    }
    if args.listen == args.admin_listen && args.listen.port() != 0 {
        usage("QUIVER_LISTEN and QUIVER_ADMIN_LISTEN must differ");
    }
    if let Some(url) = &args.redis_url
        && ![
            "redis://",
            "rediss://",
            "redis-cluster://",
            "rediss-cluster://",
        ]
        .iter()
        .any(|scheme| url.starts_with(scheme))
    {
        usage(
            "REDIS_URL must start with redis://, rediss://, redis-cluster:// or rediss-cluster://",
        );
    }
    if args.redis_namespace.is_empty()
        || !args
            .redis_namespace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b))
    {
        usage("QUIVER_REDIS_NAMESPACE must be letters, digits and - _ : . only");
    }
    if let Some(url) = &args.database_url
        && !args.demo
        && let Err(e) = url.parse::<DatabaseUrl>()
    {
        usage(format!("DATABASE_URL: {e}"));
    }
    for url in &args.database_read_urls {
        match url.parse::<DatabaseUrl>() {
            Ok(DatabaseUrl::Postgres(_)) if !args.demo => {}
            Ok(_) if !args.demo => usage("DATABASE_READ_URLS: each must be a postgres:// URL"),
            Ok(_) => usage("DATABASE_READ_URLS: the demo runs on SQLite, which has no replicas"),
            Err(e) => usage(format!("DATABASE_READ_URLS: {e}")),
        }
    }
    let config = ServerConfig {
        max_concurrency: args.max_concurrency,
        adaptive_concurrency: !args.fixed_concurrency,
        queue_timeout: Duration::from_millis(args.queue_timeout_ms),
        rate_per_second: args.rate_per_second,
        rate_burst: args.rate_burst,
        trusted_proxies: args.trusted_proxies.clone(),
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        max_body_bytes: args.max_body_bytes,
        slow_request: Duration::from_millis(args.slow_request_ms),
        public_max_age: Duration::from_secs(args.public_max_age),
        compression_min_bytes: args.compression_min_bytes,
        compression: !args.no_compression,
        max_connections: args.max_connections,
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        header_read_timeout: Duration::from_millis(args.header_read_timeout_ms),
        body_read_timeout: Duration::from_millis(args.body_read_timeout_ms),
        max_streams_per_connection: args.max_streams_per_connection,
        ..ServerConfig::default()
    };
    (secret, config)
}

/// The database, seeded on the demo's first run.
async fn open_store(args: &ServeArgs) -> Result<Database> {
    let url = match (&args.database_url, args.demo) {
        (Some(url), true) if url.starts_with("sqlite:") => url.clone(),
        (_, true) => format!("sqlite:{DEMO_DB}"),
        (Some(url), false) => url.clone(),
        (None, false) => unreachable!("clap requires it"),
    };
    let db = crate::db::open(
        &url.parse()?,
        &PgConfig {
            max_connections: args.db_max_connections,
            statement_timeout: Duration::from_millis(args.db_statement_timeout_ms),
            read_urls: args.database_read_urls.clone(),
            replica_max_lag: Duration::from_millis(args.replica_max_lag_ms),
            ..PgConfig::default()
        },
    )
    .await?;
    if args.demo && db.is_empty().await? {
        tracing::info!(url, "seeding the demo data set (first run)");
        db.load_dataset(&generate(&SeedConfig::demo()), &|_| {})
            .await
            .context("cannot seed the demo database")?;
    }
    Ok(db)
}

pub(crate) async fn serve(args: ServeArgs) -> Result<()> {
    let (secret, config) = validate(&args);
    let db = open_store(&args).await?;
    let store = db.store();
    let redis_url = args.redis_url.clone().filter(|_| !args.demo);
    let remote: Option<Arc<dyn Remote>> = match &args.redis_url {
        Some(url) if !args.demo => {
            let r = RedisRemote::connect(&RedisConfig::at(url))
                .context("invalid redis configuration")?;
            if !r.wait_connected(Duration::from_secs(5)).await {
                tracing::warn!("redis is not reachable yet; serving from L1 and the database");
            }
            Some(Arc::new(r))
        }
        _ => None,
    };
    let cursor_secret = args
        .cursor_secret
        .clone()
        .unwrap_or_else(|| format!("cursor:{secret}"));
    let auth = Auth::new(secret.as_bytes()).context("invalid QUIVER_JWT_SECRET")?;
    let settings = Settings {
        stack: StackConfig {
            l1_capacity_bytes: args.l1_mib << 20,
            soft_ttl: Duration::try_from_secs_f64(args.cache_soft_ttl_secs)
                .ok()
                .filter(|t| !t.is_zero())
                .context("--cache-soft-ttl-secs must be a positive number of seconds")?,
            refresh_ahead: Some(args.refresh_ahead)
                .filter(|r| (0.0..=1.0).contains(r))
                .context("--refresh-ahead must be between 0 and 1")?,
            cache: !args.no_cache,
            coalesce: (!args.no_coalesce).then(|| BatchConfig {
                window: Duration::from_micros(args.coalesce_window_us),
                ..BatchConfig::default()
            }),
            namespace: args.redis_namespace.clone(),
            home_head: args.home_head,
        },
        engine: EngineConfig {
            reuse_fragments: !args.no_fragments,
            serde_json_pages: args.serializer == "serde-json",
            finished_pages_bytes: args.finished_pages_mib << 20,
            ..EngineConfig::default()
        },
        prefetch: (args.prefetch_workers > 0).then_some(PrefetchConfig {
            workers: args.prefetch_workers,
            queue: args.prefetch_queue,
        }),
        server: config,
        auth: auth.clone(),
        cursor_secret: cursor_secret.into_bytes(),
    };
    let demo_token = args
        .demo
        .then(|| auth.mint(UserId(1), Duration::from_secs(24 * 3600)));
    let events = compose::EventsSetup {
        outbox: db.outbox(),
        effects: db.effects(),
        redis_url,
        config: EventsConfig {
            namespace: args.redis_namespace.clone(),
            relay: !args.no_relay,
            consumers: args.event_consumers,
            partitions: args.event_partitions,
            consumer_prefix: consumer_prefix(),
            claim_idle: Duration::from_millis(args.event_claim_idle_ms),
            claim_interval: Duration::from_millis(args.event_claim_idle_ms / 4)
                .clamp(Duration::from_millis(50), Duration::from_secs(5)),
            max_deliveries: args.event_max_deliveries,
            fan_out: FanOut {
                celebrity_followers: args.celebrity_followers,
                ..FanOut::default()
            },
            ..EventsConfig::default()
        },
    };
    let app = Arc::new(
        compose::app(store.clone(), db.writes(), remote, Some(events), settings)
            .await
            .context("cannot start the event relay")?,
    );

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let admin = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.admin_listen))?;
    tracing::info!(
        api = %listener.local_addr()?,
        admin = %admin.local_addr()?,
        "quiver is serving"
    );
    if let Some(token) = demo_token {
        let api = listener.local_addr()?;
        eprintln!(
            "demo: serving http://{api} (metrics at http://{}/metrics)",
            admin.local_addr()?
        );
        eprintln!("demo: a token for user 1, valid 24 h: {token}");
        eprintln!("demo: curl -H 'Authorization: Bearer {token}' http://{api}/api/v1/feed");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let admin_app = app.clone();
    let mut admin_stop = stop_rx.clone();
    let admin_task = tokio::spawn(async move {
        quiver_server::admin::serve(admin, admin_app, async move {
            let _ = admin_stop.wait_for(|s| *s).await;
        })
        .await
    });
    quiver_server::serve(listener, app.clone(), shutdown_signal()).await?;
    let _ = stop_tx.send(true);
    let _ = admin_task.await;
    app.shutdown_events().await;
    store.close().await;
    Ok(())
}

/// This process's consumer names: host and pid, so an operator can tell whose pending
/// entries are whose.
fn consumer_prefix() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "quiver".to_owned());
    format!("{host}-{}", std::process::id())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown requested");
}

pub(crate) fn token(args: TokenArgs) -> Result<()> {
    check_secret(&args.jwt_secret);
    if args.user <= 0 {
        usage("--user must be a positive user id");
    }
    if args.ttl > MAX_TOKEN_TTL || args.ttl.is_zero() {
        usage("--ttl must be between 1s and 30d");
    }
    println!(
        "{}",
        match Auth::new(args.jwt_secret.as_bytes()) {
            Ok(auth) => auth,
            Err(e) => usage(e),
        }
        .mint(UserId(args.user), args.ttl)
    );
    Ok(())
}
