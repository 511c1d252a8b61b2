//! Two replicas of a service sharing one Redis: a value loaded by one is served to the
//! other from Redis, and an invalidation on one evicts it from both.
//!
//! Run with `cargo run -p quiver-cache --example replicas` (`REDIS_URL` picks the server,
//! default `redis://127.0.0.1:6379`).

use async_trait::async_trait;
use quiver_cache::{CacheConfig, RedisConfig, RedisRemote, Remote, Tiered};
use quiver_model::{LoadError, Loader};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Stands in for the database.
struct Profiles(Mutex<HashMap<u64, String>>);

#[async_trait]
impl Loader for Profiles {
    type Key = u64;
    type Value = String;
    async fn load_many(&self, keys: &[u64]) -> Result<HashMap<u64, String>, LoadError> {
        let db = self.0.lock().unwrap();
        Ok(keys
            .iter()
            .filter_map(|k| db.get(k).map(|v| (*k, v.clone())))
            .collect())
    }
}

async fn replica(db: &Arc<Profiles>, url: &str) -> Tiered<Arc<Profiles>> {
    let redis = RedisRemote::connect(&RedisConfig::at(url)).expect("valid redis url");
    if !redis.wait_connected(Duration::from_secs(2)).await {
        eprintln!("redis at {url} is not reachable: lookups will use the L1 and the loader only");
    }
    let remote: Arc<dyn Remote> = Arc::new(redis);
    let config = CacheConfig {
        namespace: "example".into(),
        ..CacheConfig::new("profiles")
    };
    Tiered::new(config, db.clone(), Some(remote)).await
}

#[tokio::main]
async fn main() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let db = Arc::new(Profiles(Mutex::new(HashMap::from([(1, "Ada".to_owned())]))));
    let (a, b) = (replica(&db, &url).await, replica(&db, &url).await);

    println!("a: {:?}", a.lookup(&[1]).await.unwrap().outcomes);
    println!("b: {:?}", b.lookup(&[1]).await.unwrap().outcomes);
    println!("b: {:?}", b.lookup(&[1]).await.unwrap().outcomes);

    db.0.lock().unwrap().insert(1, "Ada Lovelace".to_owned());
    a.invalidate(&[1])
        .await
        .expect("invalidation reaches redis");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after = b.lookup(&[1]).await.unwrap();
    println!(
        "b after a's invalidation: {:?} {:?}",
        after.values[&1], after.outcomes
    );
    println!("stats of a: {:?}", a.stats());
}
