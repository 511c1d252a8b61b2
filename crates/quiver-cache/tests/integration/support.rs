//! An in-memory loader that counts its calls and can be held mid-load, and Redis helpers.

use async_trait::async_trait;
use quiver_cache::{CacheConfig, RedisConfig, RedisRemote, Remote, Tiered};
use quiver_model::{LoadError, Loader};
use quiver_testkit::Gate;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The source of truth the cache sits in front of.
#[derive(Default)]
pub(crate) struct Source {
    data: Mutex<HashMap<u64, String>>,
    calls: AtomicUsize,
    /// Every load reads its values, then passes this gate before returning.
    pub(crate) gate: Gate,
}

impl Source {
    pub(crate) fn set(&self, key: u64, value: &str) {
        self.data.lock().unwrap().insert(key, value.to_owned());
    }

    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
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
        self.0.gate.pass().await;
        Ok(found)
    }
}

pub(crate) use quiver_testkit::{namespace, redis_url};

pub(crate) async fn remote(url: &str) -> Arc<dyn Remote> {
    let r = RedisRemote::connect_within(&RedisConfig::at(url), Duration::from_secs(5)).await;
    Arc::new(r.unwrap_or_else(|e| panic!("redis at {url}: {e}")))
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
