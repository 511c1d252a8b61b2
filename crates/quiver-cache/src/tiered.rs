//! `Tiered`: the L1 → L2 → loader read path, single flight, fencing, stale-while-
//! revalidate, adaptive TTLs and cross-replica invalidation.

use crate::CacheConfig;
use crate::breaker::Breaker;
use crate::codec::{JsonCodec, ValueCodec};
use crate::fence::{Fence, Ticket};
use crate::outcome::{Outcome, Stats, StatsSnapshot};
use crate::remote::{Remote, RemoteError, RemoteEvent};
use async_trait::async_trait;
use quick_cache::sync::{Cache, DefaultLifecycle};
use quick_cache::{DefaultHashBuilder, OptionsBuilder, Weighter};
use quiver_model::{ErrorCode, HasErrorCode, LoadError, Loader};
use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::{self, Display};
use std::hash::Hash;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

mod flight;
mod load;
mod refresh;
mod stamp;

use stamp::FenceStamp;

use flight::Inflight;
use refresh::Refreshes;

/// Keys a tiered cache can hold: hashable, and written as text in Redis keys and
/// invalidation messages (`Display`), read back from those messages (`FromStr`).
pub trait CacheKey: Clone + Eq + Hash + Send + Sync + Display + FromStr + 'static {}
impl<T: Clone + Eq + Hash + Send + Sync + Display + FromStr + 'static> CacheKey for T {}

/// Why an invalidation could not be delivered. The L1 of this process is already clean;
/// other replicas and the L2 are not, so the caller should retry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// Redis refused or failed the call.
    #[error("cache invalidation failed")]
    Remote(#[source] RemoteError),
    /// Redis did not answer in time.
    #[error("cache invalidation timed out")]
    Timeout,
}

impl HasErrorCode for CacheError {
    fn code(&self) -> ErrorCode {
        ErrorCode::Unavailable
    }
}

tokio::task_local! {
    /// Set inside [`consistent`]: lookups skip the L1 and loads already in flight.
    static CONSISTENT: ();
}

/// Runs `f` with consistent reads: every lookup inside it (in its task) skips this
/// process's L1 and any load already in flight, so it sees every invalidation that
/// completed before `f` started, on whichever replica it ran. An invalidation clears the
/// L2 before it returns, while other replicas' L1s hear of it through pub/sub a moment
/// later; this closes that window for a client that has just written (read your writes).
/// What the lookups load still fills both tiers.
pub async fn consistent<F: std::future::Future>(f: F) -> F::Output {
    CONSISTENT.scope((), f).await
}

/// Whether the running task is inside [`consistent`].
fn consistent_reads() -> bool {
    CONSISTENT.try_with(|()| ()).is_ok()
}

/// One L1 entry. `value: None` is a cached "does not exist". Copying it out of the L1
/// (what a hit costs) is one reference count: the value is shared, never cloned.
#[derive(Clone)]
struct Entry<V> {
    value: Option<Arc<V>>,
    /// From here a read refreshes the entry ahead of its soft TTL.
    ahead: Instant,
    soft: Instant,
    hard: Instant,
    weight: u64,
}

/// The fast hasher of the maps on the miss path (keys are our own ids, not attacker
/// chosen strings, and these maps live for one lookup).
type Fast = foldhash::fast::RandomState;

#[derive(Clone, Debug)]
struct EntryWeighter;

impl<K, V> Weighter<K, Entry<V>> for EntryWeighter {
    fn weight(&self, _: &K, entry: &Entry<V>) -> u64 {
        entry.weight
    }
}

type L1<K, V> =
    Cache<K, Entry<V>, EntryWeighter, DefaultHashBuilder, DefaultLifecycle<K, Entry<V>>>;
/// One key's answer and where it came from.
type Answer<V> = (Option<Arc<V>>, Outcome);

/// Bytes an entry costs beyond its value (key, timestamps, bookkeeping).
const ENTRY_OVERHEAD: u64 = 64;
/// A decoded value's heap over its encoded length: strings, sets and vectors carry
/// headers and spare capacity, so a value resides in 2 to 4 times its JSON. Weighing
/// entries at 3 times keeps an L1's byte budget near the memory it really holds.
const RESIDENT_FACTOR: u64 = 3;

/// The values found by a lookup, and where each key's answer came from.
#[derive(Debug)]
pub struct Lookup<K, V> {
    /// Values of the keys that exist.
    pub values: HashMap<K, V>,
    /// One outcome per distinct requested key.
    pub outcomes: HashMap<K, Outcome>,
}

/// Outcomes of one batch, added to the shared counters once per batch rather than once
/// per key (the counters' cache line would otherwise move between cores on every key).
#[derive(Default)]
struct Tally([u64; 6]);

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        self.0[outcome as usize] += 1;
    }
}

/// A tiered cache in front of `L`: a process-local L1 (quick_cache, weighted by encoded
/// bytes) over an optional shared L2 (Redis), coherent across every replica that shares
/// the L2. It is itself a [`Loader`], so it wraps any loader and can be wrapped again.
///
/// Cloning is cheap: clones share the same tiers.
pub struct Tiered<L: Loader> {
    inner: Arc<Inner<L>>,
}

impl<L: Loader> Clone for Tiered<L> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<L: Loader> fmt::Debug for Tiered<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tiered")
            .field("name", &self.inner.config.name)
            .finish_non_exhaustive()
    }
}

struct Inner<L: Loader> {
    config: CacheConfig,
    loader: L,
    codec: Box<dyn ValueCodec<L::Value>>,
    l1: Option<L1<L::Key, L::Value>>,
    /// The heaviest entry one L1 shard admits (its share of the capacity).
    l1_max_weight: u64,
    remote: Option<Arc<dyn Remote>>,
    /// `{namespace}:{name}:`, the prefix of every Redis key of this cache.
    key_prefix: String,
    /// The pub/sub channel that carries this cache's invalidations.
    channel: String,
    breaker: Breaker,
    /// Generations that keep a load which started before an invalidation from filling
    /// the L1 after it (the L2 has its own fence, the version keys), and that fence what
    /// the engine builds from this cache's values ([`quiver_model::fence`]).
    fence: Arc<Fence>,
    /// Single flight: the keys being loaded right now, each with the channel its result
    /// will be published on. An entry lives from the claim to the end of the load; a
    /// lookup that finds one waits instead of loading. Dropping the loader's future
    /// drops the sender, and the waiters then load themselves.
    inflight: Inflight<L::Key, L::Value>,
    /// Stale keys waiting for, or in, their background refresh.
    refreshing: Mutex<Refreshes<L::Key>>,
    stats: Stats,
    /// Raised by the caller under load: TTLs stretch up to `max_stretch`.
    pressure: AtomicBool,
}

impl<L> Tiered<L>
where
    L: Loader + 'static,
    L::Key: CacheKey,
    L::Value: Serialize + DeserializeOwned,
{
    /// A cache over `loader`, with values stored in Redis as JSON. `remote: None` is the
    /// embedded mode: L1 only, same API.
    pub async fn new(config: CacheConfig, loader: L, remote: Option<Arc<dyn Remote>>) -> Self {
        Self::with_codec(config, loader, remote, Box::new(JsonCodec::default())).await
    }
}

impl<L> Tiered<L>
where
    L: Loader + 'static,
    L::Key: CacheKey,
{
    /// A cache over `loader` with an explicit value codec.
    pub async fn with_codec(
        config: CacheConfig,
        loader: L,
        remote: Option<Arc<dyn Remote>>,
        codec: Box<dyn ValueCodec<L::Value>>,
    ) -> Self {
        let mut l1_max_weight = 0;
        let l1 = (config.l1_capacity_bytes > 0).then(|| {
            let cap = config.l1_capacity_bytes;
            // Few shards for small caches: an item heavier than one shard's share is
            // silently not admitted.
            let shards = ((cap >> 20) as usize).clamp(1, 64).next_power_of_two();
            l1_max_weight = cap / shards as u64;
            let options = OptionsBuilder::new()
                .estimated_items_capacity(((cap / 512) as usize).max(16))
                .weight_capacity(cap)
                .shards(shards)
                .build()
                .expect("both capacities are set");
            Cache::with_options(
                options,
                EntryWeighter,
                DefaultHashBuilder::default(),
                DefaultLifecycle::default(),
            )
        });
        let inner = Arc::new(Inner {
            key_prefix: format!("{}:{}:", config.namespace, config.name),
            channel: format!("{}:invalidate:{}", config.namespace, config.name),
            breaker: Breaker::new(config.breaker_failures, config.breaker_cooldown),
            config,
            loader,
            codec,
            l1,
            l1_max_weight,
            remote,
            fence: Arc::new(Fence::new()),
            inflight: Mutex::new(HashMap::default()),
            refreshing: Mutex::new(Refreshes::default()),
            stats: Stats::default(),
            pressure: AtomicBool::new(false),
        });
        if let Some(remote) = &inner.remote {
            match remote.listen(&inner.channel).await {
                Ok(events) => spawn_listener(Arc::downgrade(&inner), events),
                Err(e) => {
                    tracing::warn!(error = %e, cache = %inner.config.name, "no invalidation listener")
                }
            }
        }
        Self { inner }
    }

    /// Values of `keys` with the outcome of each, as maps (for tests and tools; the read
    /// path uses [`Loader::load_shared`], which builds no map and copies no value).
    pub async fn lookup(&self, keys: &[L::Key]) -> Result<Lookup<L::Key, L::Value>, LoadError> {
        let mut outcomes = HashMap::with_capacity(keys.len());
        let found = self
            .resolve(keys, &mut |i, o| {
                outcomes.insert(keys[i].clone(), o);
            })
            .await?;
        let values = keys
            .iter()
            .zip(found)
            .filter_map(|(k, v)| v.map(|v| (k.clone(), L::Value::clone(&v))))
            .collect();
        Ok(Lookup { values, outcomes })
    }

    /// One key: the value if it exists, shared.
    pub async fn get(&self, key: &L::Key) -> Result<Option<Arc<L::Value>>, LoadError> {
        let mut found = self
            .resolve(std::slice::from_ref(key), &mut |_, _| ())
            .await?;
        Ok(found.pop().flatten())
    }

    /// The read path: `out[i]` answers `keys[i]`. L1 hits cost a reference count each and
    /// build nothing; only the keys the L1 cannot answer are deduplicated, claimed
    /// (single flight) and loaded through the L2 and the loader. `seen` hears each
    /// position's outcome.
    async fn resolve(
        &self,
        keys: &[L::Key],
        seen: &mut (dyn FnMut(usize, Outcome) + Send),
    ) -> Result<Vec<Option<Arc<L::Value>>>, LoadError> {
        let inner = &*self.inner;
        let mut out: Vec<Option<Arc<L::Value>>> = Vec::with_capacity(keys.len());
        let mut tally = Tally::default();
        let mut missing: Vec<usize> = Vec::new();
        // Inside a recording: tickets before the reads, and the record stays usable only
        // if every key is answered by the L1 before its soft TTL.
        let mut stamp = quiver_model::fence::is_recording().then(|| {
            FenceStamp::new(
                inner.fence.clone(),
                keys.iter().map(|k| inner.fence.ticket(k)).collect(),
            )
        });
        match &inner.l1 {
            Some(l1) if !consistent_reads() => {
                let now = Instant::now();
                for (i, key) in keys.iter().enumerate() {
                    match l1.get(key) {
                        Some(e) if now < e.hard => {
                            // Stale, or fresh but in its refresh-ahead window
                            // (which ends at the soft TTL): refreshed in the background.
                            if now >= e.ahead {
                                self.refresh(key);
                            }
                            let outcome = if now >= e.soft {
                                Outcome::Stale
                            } else if e.value.is_none() {
                                Outcome::Negative
                            } else {
                                Outcome::HitL1
                            };
                            if let Some(st) = &mut stamp {
                                st.answered(outcome, e.ahead, e.soft);
                            }
                            tally.add(outcome);
                            seen(i, outcome);
                            out.push(e.value);
                        }
                        _ => {
                            out.push(None);
                            missing.push(i);
                        }
                    }
                }
            }
            _ => {
                out.resize(keys.len(), None);
                missing.extend(0..keys.len());
            }
        }
        if let Some(st) = stamp {
            st.record(missing.is_empty());
        }
        let result = if missing.is_empty() {
            Ok(())
        } else {
            inner
                .resolve_missing(keys, &missing, &mut out, &mut tally, seen)
                .await
        };
        inner.stats.add(&tally.0);
        result.map(|()| out)
    }

    /// Removes `keys` from this L1 at once, then from the L2 and every replica's L1
    /// through Redis. A load that started before this call never writes its value into
    /// any tier after it.
    pub async fn invalidate(&self, keys: &[L::Key]) -> Result<(), CacheError> {
        let inner = &self.inner;
        for k in keys {
            inner.forget(k);
        }
        let Some(remote) = &inner.remote else {
            return Ok(());
        };
        let texts: Vec<String> = keys.iter().map(|k| inner.key_text(k)).collect();
        match timeout(
            inner.config.redis_timeout,
            remote.invalidate(&texts, &inner.channel),
        )
        .await
        {
            Ok(Ok(())) => {
                inner.breaker.success();
                Ok(())
            }
            Ok(Err(e)) => {
                inner.redis_failed();
                Err(CacheError::Remote(e))
            }
            Err(_) => {
                inner.redis_failed();
                Err(CacheError::Timeout)
            }
        }
    }

    /// Raises or clears the pressure signal. While raised, new entries live up to
    /// `max_stretch` times longer (never past `max_age`), as the Go service did when its
    /// prefetch pool was full.
    pub fn set_pressure(&self, raised: bool) {
        self.inner.pressure.store(raised, Ordering::Relaxed);
    }

    /// Counters of this cache.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// The cache's name, as in its config.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// Whether the breaker currently keeps lookups away from Redis.
    pub fn l2_bypassed(&self) -> bool {
        self.inner.breaker.is_open()
    }
}

impl<L> Inner<L>
where
    L: Loader + 'static,
    L::Key: CacheKey,
{
    fn key_text(&self, key: &L::Key) -> String {
        format!("{}{key}", self.key_prefix)
    }

    fn parse_key(&self, text: &str) -> Option<L::Key> {
        text.strip_prefix(&self.key_prefix)?.parse().ok()
    }

    fn remote_allowed(&self) -> Option<&Arc<dyn Remote>> {
        self.remote.as_ref().filter(|_| self.breaker.allow())
    }

    fn redis_failed(&self) {
        self.breaker.failure();
        self.stats.redis_error();
    }

    fn stretch(&self, d: Duration) -> Duration {
        let factor = if self.pressure.load(Ordering::Relaxed) {
            self.config.max_stretch.max(1)
        } else {
            1
        };
        (d * factor).min(self.config.max_age)
    }

    /// A factor in `1 ± jitter`, drawn per entry so that entries filled together do not
    /// expire together.
    fn jitter(&self) -> f64 {
        let j = self.config.jitter.clamp(0.0, 0.5);
        if j == 0.0 {
            1.0
        } else {
            rand::rng().random_range(1.0 - j..=1.0 + j)
        }
    }

    fn put_l1(
        &self,
        key: &L::Key,
        value: Option<Arc<L::Value>>,
        encoded_len: usize,
        ticket: Ticket,
    ) {
        let Some(l1) = &self.l1 else { return };
        if !self.fence.still_valid(ticket) {
            return;
        }
        let now = Instant::now();
        // Absences are served stale and refreshed like values, on their own TTLs.
        let (soft, hard) = match value {
            Some(_) => (self.config.soft_ttl, self.config.hard_ttl),
            None => (self.config.negative_ttl, self.config.negative_hard_ttl),
        };
        let weight = encoded_len as u64 * RESIDENT_FACTOR + ENTRY_OVERHEAD;
        if weight > self.l1_max_weight {
            // quick_cache would drop it without a word: count it instead (it stays
            // cached in Redis).
            self.stats.l1_oversize();
            return;
        }
        let j = self.jitter();
        let soft = self.stretch(soft.mul_f64(j));
        let hard = self.stretch(hard.mul_f64(j)).max(soft);
        let ahead = soft.mul_f64(1.0 - self.config.refresh_ahead.clamp(0.0, 1.0));
        l1.insert(
            key.clone(),
            Entry {
                value,
                ahead: now + ahead,
                soft: now + soft,
                hard: now + hard,
                weight,
            },
        );
        // An invalidation between the check and the insert bumped the fence before it
        // removed the key, so it either removed this entry or is seen here: no stale
        // value outlives an invalidation (at worst a fresh one is dropped, a miss).
        if !self.fence.still_valid(ticket) {
            l1.remove(key);
        }
    }

    /// L2 time to live with jitter, so entries filled together do not expire together.
    fn l2_ttl_secs(&self, negative: bool) -> u64 {
        let base = self.stretch(if negative {
            self.config.negative_hard_ttl
        } else {
            self.config.l2_ttl
        });
        (base.as_secs_f64() * self.jitter()).round().max(1.0) as u64
    }

    /// Forgets `key` here: loads that started before cannot fill the L1 (the fence),
    /// lookups that start after do not wait for them (their claim ends), and the L1
    /// entry goes.
    fn forget(&self, key: &L::Key) {
        self.fence.invalidate(key);
        self.inflight.lock().expect("inflight lock").remove(key);
        if let Some(l1) = &self.l1 {
            l1.remove(key);
        }
        // Again once the entry is gone: a ticket taken between the first bump and the
        // removal, then a read of the old entry, would otherwise pass.
        self.fence.invalidate(key);
    }

    fn flush_l1(&self) {
        self.fence.invalidate_all();
        self.inflight.lock().expect("inflight lock").clear();
        if let Some(l1) = &self.l1 {
            l1.clear();
        }
        self.stats.l1_flush();
    }
}

fn spawn_listener<L>(inner: Weak<Inner<L>>, mut events: mpsc::UnboundedReceiver<RemoteEvent>)
where
    L: Loader + 'static,
    L::Key: CacheKey,
{
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let Some(inner) = inner.upgrade() else { return };
            match event {
                RemoteEvent::Invalidated(texts) => {
                    for text in texts {
                        match inner.parse_key(&text) {
                            Some(key) => inner.forget(&key),
                            // A key we cannot read might be one we hold.
                            None => inner.flush_l1(),
                        }
                    }
                }
                RemoteEvent::Lost => inner.flush_l1(),
            }
        }
    });
}

#[async_trait]
impl<L> Loader for Tiered<L>
where
    L: Loader + 'static,
    L::Key: CacheKey,
{
    type Key = L::Key;
    type Value = L::Value;

    async fn load_many(&self, keys: &[L::Key]) -> Result<HashMap<L::Key, L::Value>, LoadError> {
        Ok(self.lookup(keys).await?.values)
    }

    async fn load_one(&self, key: &L::Key) -> Result<Option<L::Value>, LoadError> {
        Ok(self.get(key).await?.map(|v| L::Value::clone(&v)))
    }

    async fn load_shared(&self, keys: &[L::Key]) -> Result<Vec<Option<Arc<L::Value>>>, LoadError> {
        self.resolve(keys, &mut |_, _| ()).await
    }

    /// Every lookup records its fence inside a recording, with an L1 to answer it.
    fn fences(&self) -> bool {
        self.inner.l1.is_some()
    }

    /// Whether the L1 holds every key before its soft TTL (a peek: it does not count as a
    /// use of the entry).
    fn fresh(&self, keys: &[L::Key]) -> bool {
        let Some(l1) = &self.inner.l1 else {
            return false;
        };
        let now = Instant::now();
        keys.iter()
            .all(|k| l1.peek(k).is_some_and(|e| now < e.soft))
    }
}
