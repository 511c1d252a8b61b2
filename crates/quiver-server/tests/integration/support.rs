//! A real server on a loopback port over a seeded PostgreSQL database and Redis (the full
//! read stack: batchers and tiered caches), with a gate in front of the posts loader that holds requests mid-flight, so tests can fill the
//! concurrency limit, pass the deadline, disconnect or shut down at a known point.

use async_trait::async_trait;
use quiver_cache::{RedisConfig, RedisRemote, Remote};
use quiver_enrich::{Engine, EngineConfig, FeedItem};
use quiver_model::{CursorCodec, DynLoader, LoadError, Loader, PostId, UserId};
use quiver_server::auth::Auth;
use quiver_server::compose::{Caches, EventsSetup, StackConfig, read_stack};
use quiver_server::{App, Parts, ServerConfig};
use quiver_store::PgStore;
use quiver_store::seed::{SeedConfig, generate};
use sqlx::PgPool;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub(crate) const SECRET: &[u8] = b"a test secret of at least 32 bytes!!";

struct Gated {
    inner: DynLoader<PostId, FeedItem>,
    gate: Arc<Gate>,
}

#[async_trait]
impl Loader for Gated {
    type Key = PostId;
    type Value = FeedItem;

    async fn load_many(&self, keys: &[PostId]) -> Result<HashMap<PostId, FeedItem>, LoadError> {
        self.gate.pass().await;
        self.inner.load_many(keys).await
    }

    /// Every lookup reaches the cache's own (which records its fences).
    fn fences(&self) -> bool {
        self.inner.fences()
    }
}

pub(crate) struct Server {
    pub(crate) app: Arc<App>,
    pub(crate) addr: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) gate: Arc<Gate>,
    pub(crate) store: PgStore,
    pub(crate) pool: PgPool,
    pub(crate) http: reqwest::Client,
    /// The read stack's caches, for tests that change rows under them.
    pub(crate) caches: Caches,
    auth: Auth,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    pub(crate) fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }
    pub(crate) fn token(&self, user: i64) -> String {
        self.auth.mint(UserId(user), Duration::from_secs(600))
    }
    pub(crate) fn get(&self, path: &str, user: Option<i64>) -> reqwest::RequestBuilder {
        let req = self.http.get(self.url(path));
        match user {
            Some(u) => req.bearer_auth(self.token(u)),
            None => req,
        }
    }
    /// Stops accepting, drains, and returns what `serve` returned.
    pub(crate) async fn shutdown(&mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task
            .take()
            .expect("running")
            .await
            .expect("serve task")
    }
    /// Waits until every committed event has been relayed and handled here.
    pub(crate) async fn settle(&self) {
        use quiver_store::events::Outbox as _;
        eventually("every event is relayed and handled", || async {
            // The relay counts a batch just after committing it as published: until then
            // the database is ahead of the counters, so read both.
            let published: i64 =
                sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
                    .fetch_one(&self.pool)
                    .await
                    .unwrap();
            let stats = self.app.event_stats().expect("events run");
            self.store.backlog().await.unwrap().unpublished == 0
                && stats.relayed >= published as u64
                && stats.handled + stats.dead_lettered >= stats.relayed
        })
        .await;
    }

    pub(crate) fn begin_shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        let _ = self.stop.take().expect("running").send(());
        self.task.take().expect("running")
    }
}

pub(crate) use quiver_testkit::{DEADLINE, Gate, redis_url};

/// Seeds `pool` and serves it with `config`; Redis from `REDIS_URL` unless `redis` is
/// given (a URL, possibly of a dead port).
pub(crate) async fn start(pool: PgPool, config: ServerConfig, redis: Option<String>) -> Server {
    start_on(PgStore::from_pool(pool.clone()), pool, config, redis, false).await
}

/// Like [`start`], with the event layer running: the outbox relayed to a stream of this
/// server's own, consumed by its consumers.
pub(crate) async fn start_with_events(pool: PgPool) -> Server {
    start_on(
        PgStore::from_pool(pool.clone()),
        pool,
        ServerConfig::default(),
        None,
        true,
    )
    .await
}

/// Like [`start`], with the server reading through `store` (its own pool, say) while
/// the test keeps `pool` for its own queries.
pub(crate) async fn start_on(
    store: PgStore,
    pool: PgPool,
    config: ServerConfig,
    redis: Option<String>,
    events: bool,
) -> Server {
    let events = events.then(Events::default);
    let stack = StackConfig::default();
    start_at(store, pool, config, redis, events, &redis_url(), stack).await
}

/// Like [`start`], with the read stack's caches configured by `stack` (its namespace is
/// the test's own).
pub(crate) async fn start_with_stack(pool: PgPool, stack: StackConfig) -> Server {
    let store = PgStore::from_pool(pool.clone());
    let config = ServerConfig::default();
    start_at(store, pool, config, None, None, &redis_url(), stack).await
}

/// How a test server runs its event layer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Events {
    /// Streams the events are spread over.
    pub(crate) partitions: u16,
    /// Followers past which an author is a celebrity, merged at read time.
    pub(crate) celebrity_followers: u32,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            partitions: 1,
            celebrity_followers: quiver_store::events::FanOut::default().celebrity_followers,
        }
    }
}

/// Like [`start_with_events`], on the Redis at `live` (a cluster, say) with the events
/// spread over `partitions` streams.
pub(crate) async fn start_with_events_at(pool: PgPool, live: &str, events: Events) -> Server {
    let store = PgStore::from_pool(pool.clone());
    start_at(
        store,
        pool,
        ServerConfig::default(),
        None,
        Some(events),
        live,
        StackConfig::default(),
    )
    .await
}

async fn start_at(
    store: PgStore,
    pool: PgPool,
    config: ServerConfig,
    redis: Option<String>,
    events: Option<Events>,
    live: &str,
    stack: StackConfig,
) -> Server {
    let ds = generate(&SeedConfig {
        users: 60,
        posts_per_user: 6,
        follows_per_user: 6,
        seed: 3,
        timeline_depth: 50,
    });
    store.load_dataset(&ds, &|_| {}).await.unwrap();
    let remote = match redis {
        // Only ever an address meant to be unreachable.
        Some(dead) => RedisRemote::connect(&RedisConfig::at(&dead)).expect("a redis url"),
        None => RedisRemote::connect_within(&RedisConfig::at(live), DEADLINE)
            .await
            .expect("redis at REDIS_URL is reachable"),
    };
    let remote: Arc<dyn Remote> = Arc::new(remote);
    let gate = Arc::new(Gate::default());
    // Tests share one Redis: each server caches and streams under its own namespace.
    let namespace = quiver_testkit::namespace("http");
    let (mut sources, caches) = read_stack(
        Arc::new(store.clone()),
        Some(remote.clone()),
        &StackConfig {
            namespace: namespace.clone(),
            ..stack
        },
        &EngineConfig::default(),
    )
    .await;
    let events = events.map(|events| EventsSetup {
        outbox: Arc::new(store.clone()),
        effects: Arc::new(store.clone()),
        redis_url: Some(live.to_owned()),
        config: quiver_events::EventsConfig {
            namespace,
            partitions: events.partitions,
            relay_poll: Duration::from_millis(20),
            read_block: Duration::from_millis(200),
            claim_idle: Duration::from_secs(2),
            claim_interval: Duration::from_millis(500),
            fan_out: quiver_store::events::FanOut {
                batch: 7,
                celebrity_followers: events.celebrity_followers,
            },
            ..quiver_events::EventsConfig::default()
        },
    });
    sources.items = Arc::new(Gated {
        inner: sources.items,
        gate: gate.clone(),
    });
    let engine = Engine::new(
        sources,
        CursorCodec::new(b"cursor key"),
        EngineConfig::default(),
        None,
    );
    let auth = Auth::new(SECRET).unwrap();
    let app = Arc::new(
        App::new(Parts {
            engine,
            store: Arc::new(store.clone()),
            writes: Arc::new(store.clone()),
            remote: Some(remote),
            caches: caches.clone(),
            events,
            auth: auth.clone(),
            config,
        })
        .expect("the events start"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, admin_addr) = (listener.local_addr().unwrap(), admin.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(quiver_server::admin::serve(
        admin,
        app.clone(),
        std::future::pending(),
    ));
    let task = tokio::spawn(quiver_server::serve(listener, app.clone(), async move {
        let _ = stopped.await;
    }));
    Server {
        app,
        addr,
        admin: admin_addr,
        gate,
        store,
        pool,
        http: reqwest::Client::new(),
        caches,
        auth,
        stop: Some(stop),
        task: Some(task),
    }
}

pub(crate) use quiver_testkit::eventually;

/// A server over a pool of its own, named `app`, and what cuts that pool's database off
/// and back: a database cannot refuse connections to itself, so it is switched from the
/// server's maintenance database, and only the connections named `app` are ended (other
/// tests' servers run at the same time).
pub(crate) struct OwnPool {
    pub(crate) server: Server,
    admin: PgPool,
    db: String,
    app: &'static str,
}

impl OwnPool {
    pub(crate) async fn start(pool: PgPool, app: &'static str, config: ServerConfig) -> Self {
        let options = (*pool.connect_options()).clone().application_name(app);
        let own = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_millis(500))
            .connect_with(options)
            .await
            .unwrap();
        let db: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&pool)
            .await
            .unwrap();
        let server = start_on(PgStore::from_pool(own), pool, config, None, false).await;
        let admin = PgPool::connect(&std::env::var("DATABASE_URL").unwrap())
            .await
            .unwrap();
        Self {
            server,
            admin,
            db,
            app,
        }
    }

    async fn run(&self, sql: String) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&self.admin)
            .await
            .unwrap();
    }

    /// The database refuses new connections and the server's open ones end.
    pub(crate) async fn cut(&self) {
        let db = &self.db;
        self.run(format!(r#"ALTER DATABASE "{db}" ALLOW_CONNECTIONS false"#))
            .await;
        self.run(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = '{}' AND datname = '{db}'",
            self.app
        ))
        .await;
    }

    /// The database takes connections again.
    pub(crate) async fn restore(&self) {
        let db = &self.db;
        self.run(format!(r#"ALTER DATABASE "{db}" ALLOW_CONNECTIONS true"#))
            .await;
    }
}
