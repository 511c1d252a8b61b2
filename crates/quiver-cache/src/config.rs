//! Plain configuration of a tiered cache; the binary fills it from env and flags.

use std::time::Duration;

/// How one named cache behaves. Every duration is a base value: jitter and the adaptive
/// stretch apply on top, and nothing is ever served older than `max_age`.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Name used in Redis keys, invalidation messages and metrics (`users`, `posts`, …).
    pub name: String,
    /// Prefix of every Redis key this cache writes, shared by all replicas of a service.
    pub namespace: String,
    /// Version of the value format. Replicas of another version treat entries as misses,
    /// so a rolling deploy that changes the format never decodes the other's bytes.
    pub schema_version: u16,
    /// Bytes of encoded values the L1 may hold (0 disables the L1).
    pub l1_capacity_bytes: u64,
    /// Past this age an L1 entry is served as `Stale` and refreshed in the background.
    pub soft_ttl: Duration,
    /// The last part of an entry's soft TTL (a fraction, 0 turns it off) in which a read
    /// that finds it also refreshes it in the background (refresh ahead): an entry read
    /// often is reloaded before it goes stale, so its readers never see it stale.
    pub refresh_ahead: f64,
    /// Past this age an entry is not served; it is loaded in line.
    pub hard_ttl: Duration,
    /// Time to live of a value in Redis (±10 % jitter, stretched under pressure).
    pub l2_ttl: Duration,
    /// How long "does not exist" is served as fresh; past it, it is served stale and
    /// refreshed in the background, like a value past `soft_ttl`.
    pub negative_ttl: Duration,
    /// Past this age "does not exist" is not served; also its time to live in Redis.
    pub negative_hard_ttl: Duration,
    /// Every TTL, in both tiers, is multiplied by a factor drawn per entry from
    /// `1 ± jitter` (at most 0.5), so that entries filled together expire apart.
    pub jitter: f64,
    /// The absolute limit: no entry is served older than this, whatever the pressure.
    pub max_age: Duration,
    /// TTLs are multiplied by up to this factor while the caller reports pressure.
    pub max_stretch: u32,
    /// Timeout of every Redis call; a slow Redis counts as a failed one.
    pub redis_timeout: Duration,
    /// Consecutive Redis failures that open the breaker.
    pub breaker_failures: u32,
    /// How long the open breaker skips Redis before letting one probe through.
    pub breaker_cooldown: Duration,
}

impl CacheConfig {
    /// Defaults for a cache called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: "quiver".to_owned(),
            schema_version: 1,
            l1_capacity_bytes: 64 << 20,
            soft_ttl: Duration::from_secs(30),
            refresh_ahead: 0.2,
            hard_ttl: Duration::from_secs(120),
            l2_ttl: Duration::from_secs(600),
            negative_ttl: Duration::from_secs(10),
            negative_hard_ttl: Duration::from_secs(40),
            jitter: 0.1,
            max_age: Duration::from_secs(900),
            max_stretch: 4,
            redis_timeout: Duration::from_millis(50),
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(1),
        }
    }
}
