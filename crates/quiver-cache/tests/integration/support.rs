//! An in-memory loader that counts its calls and can be held mid-load, and Redis helpers.

use async_trait::async_trait;
use quiver_cache::{CacheConfig, RedisConfig, RedisRemote, Remote, Tiered};
use quiver_model::{LoadError, Loader};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// The source of truth the cache sits in front of.
#[derive(Default)]
pub(crate) struct Source {
    data: Mutex<HashMap<u64, String>>,
    calls: AtomicUsize,
    /// When set, every load reads its values, then waits for a permit before returning.
    gate: Mutex<Option<Arc<Semaphore>>>,
    /// Loads that have read their values (and may now be waiting at the gate).
    entered: AtomicUsize,
}

impl Source {
    pub(crate) fn set(&self, key: u64, value: &str) {
        self.data.lock().unwrap().insert(key, value.to_owned());
    }

    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub(crate) fn entered(&self) -> usize {
        self.entered.load(Ordering::SeqCst)
    }

    /// Lets later loads through without waiting (permits still release held ones).
    pub(crate) fn release(&self) {
        *self.gate.lock().unwrap() = None;
    }

    /// Holds every later load after it has read the data, until permits are added.
    pub(crate) fn hold(&self) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        *self.gate.lock().unwrap() = Some(gate.clone());
        gate
    }
}

/// A loader over a shared [`Source`].
#[derive(Clone)]
pub(crate) struct SourceLoader(pub(crate) Arc<Source>);

#[async_trait]
impl Loader for SourceLoader {
    type Key = u64;
    type Value = String;

    async fn load_many(&self, keys: &[u64]) -> Result<HashMap<u64, String>, LoadError> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        let found: HashMap<u64, String> = {
            let data = self.0.data.lock().unwrap();
            keys.iter()
                .filter_map(|k| data.get(k).map(|v| (*k, v.clone())))
                .collect()
        };
        self.0.entered.fetch_add(1, Ordering::SeqCst);
        let gate = self.0.gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            gate.acquire().await.expect("gate open").forget();
        }
        Ok(found)
    }
}

pub(crate) use quiver_testkit::{namespace, redis_url};

pub(crate) async fn remote(url: &str) -> Arc<dyn Remote> {
    let r = RedisRemote::connect(&RedisConfig {
        url: url.to_owned(),
        ..RedisConfig::default()
    })
    .expect("valid redis config");
    assert!(
        r.wait_connected(Duration::from_secs(5)).await,
        "redis at {url} is not reachable"
    );
    Arc::new(r)
}

pub(crate) fn config(ns: &str) -> CacheConfig {
    CacheConfig {
        namespace: ns.to_owned(),
        redis_timeout: Duration::from_millis(500),
        ..CacheConfig::new("items")
    }
}

/// A replica: its own L1 and Redis connections, over `source`.
pub(crate) async fn replica(
    cfg: CacheConfig,
    source: &Arc<Source>,
    url: &str,
) -> Tiered<SourceLoader> {
    Tiered::new(cfg, SourceLoader(source.clone()), Some(remote(url).await)).await
}
