//! A second service that links `quiver-store` and `quiver-cache` alone, without the quiver
//! server: it answers profile lookups over TCP, one request per line, each answer one JSON
//! line saying where the profile came from (this process's L1, Redis, or the database).
//!
//! ```text
//! $ cargo run -p quiver-lookups          # then, from another shell:
//! $ printf '1\n1\ninvalidate 1\n1\n' | nc 127.0.0.1 7878
//! {"id":1,"outcome":"miss","user":{"id":1,"handle":…}}
//! {"id":1,"outcome":"hit_l1","user":{…}}
//! {"invalidated":1}
//! {"id":1,"outcome":"miss","user":{…}}
//! ```
//!
//! `DATABASE_URL` is `postgres://…` or `sqlite:PATH` (default `sqlite:lookups-demo.db`,
//! seeded with the demo data on first run); with `REDIS_URL` the cache has its Redis
//! tier and every process on that Redis and `LOOKUPS_NAMESPACE` (default `lookups`)
//! shares values and invalidations; `LOOKUPS_LISTEN` is where it listens (default
//! `127.0.0.1:7878`).

use anyhow::{Context as _, Result};
use quiver_cache::{CacheConfig, RedisConfig, RedisRemote, Remote, Tiered};
use quiver_model::UserId;
use quiver_store::loaders::UsersLoader;
use quiver_store::seed::{SeedConfig, generate};
use quiver_store::{Database, DatabaseUrl, PgConfig, SqliteConfig};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

type Users = Tiered<UsersLoader>;

#[tokio::main]
async fn main() -> Result<()> {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let url: DatabaseUrl = env("DATABASE_URL", "sqlite:lookups-demo.db")
        .parse()
        .context("DATABASE_URL")?;
    let db = Database::open(&url, &PgConfig::default(), &SqliteConfig::default()).await?;
    if db.is_empty().await? {
        db.load_dataset(&generate(&SeedConfig::demo()), &|_| {})
            .await?;
    }
    let remote = match std::env::var("REDIS_URL") {
        Ok(url) => {
            let redis = RedisRemote::connect(&RedisConfig::at(&url)).context("REDIS_URL")?;
            // Until its invalidation connection is up a process cannot hear others'
            // invalidations, so it serves from the L1 only after that.
            if !redis.wait_connected(Duration::from_secs(5)).await {
                eprintln!("redis at {url} is not reachable yet: the L1 fills once it is");
            }
            Some(Arc::new(redis) as Arc<dyn Remote>)
        }
        Err(_) => None,
    };
    let config = CacheConfig {
        namespace: env("LOOKUPS_NAMESPACE", "lookups"),
        ..CacheConfig::new("user")
    };
    let users = Arc::new(Tiered::new(config, UsersLoader(db.store()), remote).await);
    let listener = TcpListener::bind(env("LOOKUPS_LISTEN", "127.0.0.1:7878")).await?;
    println!("serving lookups on {}", listener.local_addr()?);
    loop {
        let (socket, _) = listener.accept().await?;
        let users = users.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(socket, &users).await {
                eprintln!("connection failed: {e}");
            }
        });
    }
}

/// Answers each line of one connection: a user id, or `invalidate ID`.
async fn serve(socket: TcpStream, users: &Users) -> Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let mut answer = answer(line.trim(), users).await.to_string();
        answer.push('\n');
        write.write_all(answer.as_bytes()).await?;
    }
    Ok(())
}

async fn answer(line: &str, users: &Users) -> Value {
    if let Some(id) = line.strip_prefix("invalidate ") {
        return match id.trim().parse() {
            // Evicts the profile here, in Redis and in every process's L1.
            Ok(id) => match users.invalidate(&[UserId(id)]).await {
                Ok(()) => json!({ "invalidated": id }),
                Err(e) => json!({ "error": format!("invalidation failed: {e}") }),
            },
            Err(_) => json!({ "error": format!("not a user id: {id:?}") }),
        };
    }
    let Ok(id) = line.parse() else {
        return json!({ "error": format!("expected a user id or `invalidate ID`, got {line:?}") });
    };
    let key = UserId(id);
    match users.lookup(&[key]).await {
        Ok(found) => json!({
            "id": id,
            "outcome": found.outcomes[&key].as_str(),
            "user": found.values.get(&key),
        }),
        Err(e) => json!({ "id": id, "error": format!("lookup failed: {e}") }),
    }
}
