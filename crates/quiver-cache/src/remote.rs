//! The L2 behind a small trait of our own (fred has had no release since Feb 2025, so no
//! fred type crosses this boundary), and its Redis implementation.
//!
//! Fencing follows memcache leases: every cache key has a version key. `invalidate` bumps
//! the version, deletes the value and publishes the keys, atomically in one script; a
//! fill writes a value only if the version is still the one read when the load started.
//!
//! On a Redis Cluster (`redis-cluster://` URLs) a key and its version share a hash tag,
//! so they live in one slot, and a batch is split by slot: one `MGET` or script per slot,
//! all sent at once, each to its slot's node. Classic pub/sub
//! reaches every node of a cluster, so the invalidation channel needs nothing more.

use async_trait::async_trait;
use bytes::Bytes;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::RespVersion;
use std::fmt;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

/// A failed or timed-out Redis call. The message never reaches API clients.
#[derive(Debug, thiserror::Error)]
#[error("redis call failed: {0}")]
pub struct RemoteError(String);

impl From<fred::error::Error> for RemoteError {
    fn from(e: fred::error::Error) -> Self {
        Self(format!("{:?}: {}", e.kind(), e.details()))
    }
}

/// One value to write if its key's version is still `version`.
#[derive(Clone, Debug)]
pub struct Fill {
    pub key: String,
    pub version: i64,
    pub value: Vec<u8>,
    pub ttl_secs: u64,
}

/// What the invalidation listener hears.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteEvent {
    /// These keys (as written by [`key_text`](crate::Tiered)) changed somewhere.
    Invalidated(Vec<String>),
    /// Invalidations may have been missed (the connection dropped, reconnected, or the
    /// listener lagged): the L1 can no longer be trusted.
    Lost,
}

/// The operations the tiered cache needs from its L2.
#[async_trait]
pub trait Remote: Send + Sync + fmt::Debug {
    /// Values and versions of `keys`, in order, in one round trip.
    async fn fetch(&self, keys: &[String]) -> Result<Vec<(Option<Bytes>, i64)>, RemoteError>;
    /// Writes each fill whose version is unchanged, in one round trip; says for each
    /// whether it was written (`false`: an invalidation came first).
    async fn fill(&self, fills: &[Fill]) -> Result<Vec<bool>, RemoteError>;
    /// Bumps versions, deletes values and publishes `keys` on `channel`, atomically.
    async fn invalidate(&self, keys: &[String], channel: &str) -> Result<(), RemoteError>;
    /// Starts listening on `channel`.
    async fn listen(
        &self,
        channel: &str,
    ) -> Result<mpsc::UnboundedReceiver<RemoteEvent>, RemoteError>;
}

/// How long version keys live: longer than any value, so a load that read "no version"
/// cannot miss a bump.
const VERSION_TTL_SECS: u64 = 86_400;

const FILL_SCRIPT: &str = r#"
local written = {}
for i = 1, #KEYS / 2 do
  local current = redis.call('GET', KEYS[2 * i]) or '0'
  if current == ARGV[3 * i - 2] then
    redis.call('SET', KEYS[2 * i - 1], ARGV[3 * i - 1], 'EX', ARGV[3 * i])
    written[i] = 1
  else
    written[i] = 0
  end
end
return written
"#;

const INVALIDATE_SCRIPT: &str = r#"
for i = 1, #KEYS / 2 do
  redis.call('INCR', KEYS[2 * i])
  redis.call('EXPIRE', KEYS[2 * i], ARGV[3])
  redis.call('DEL', KEYS[2 * i - 1])
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return #KEYS / 2
"#;

/// The Redis key of a cache key: the whole key is its hash tag, which its version key
/// shares, so the two are always in one slot of a cluster.
fn value_key(key: &str) -> String {
    format!("{{{key}}}")
}

fn version_key(key: &str) -> String {
    format!("{{{key}}}:v")
}

/// Each key's value key and version key, in order.
fn key_pairs<'a>(keys: impl Iterator<Item = &'a str>) -> Vec<String> {
    keys.flat_map(|k| [value_key(k), version_key(k)]).collect()
}

/// Settings of the Redis connection.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://…`
    pub url: String,
    /// Command connections (the listener has its own).
    pub pool_size: usize,
    /// Timeout of every command; past it the call fails and counts for the breaker.
    pub command_timeout: Duration,
}

impl RedisConfig {
    /// The default settings for the Redis at `url`.
    pub fn at(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            ..Self::default()
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            pool_size: 4,
            command_timeout: Duration::from_millis(50),
        }
    }
}

/// Redis through fred: a command pool plus a dedicated subscriber connection (a
/// subscribed connection cannot run other commands).
#[derive(Clone)]
pub struct RedisRemote {
    pool: Pool,
    subscriber: SubscriberClient,
    clustered: bool,
}

impl fmt::Debug for RedisRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRemote").finish_non_exhaustive()
    }
}

impl RedisRemote {
    /// Starts connecting and returns at once: a Redis that is down at start-up must not
    /// stop the service. Commands fail at `command_timeout` until it is reachable, and the
    /// connections keep reconnecting with exponential back-off.
    pub fn connect(config: &RedisConfig) -> Result<Self, RemoteError> {
        let mut base = Config::from_url(&config.url)?;
        let clustered = base.server.is_clustered();
        base.fail_fast = false;
        base.version = RespVersion::RESP2;
        let timeout = config.command_timeout;
        let builder = |b: &mut Builder| {
            b.with_performance_config(|p| {
                p.default_command_timeout = timeout;
                p.broadcast_channel_capacity = 1024;
            })
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(1);
                c.unresponsive.max_timeout = Some(Duration::from_secs(2));
                c.unresponsive.interval = Duration::from_millis(500);
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2));
        };
        let mut b = Builder::from_config(base.clone());
        builder(&mut b);
        let pool = b.build_pool(config.pool_size.max(1))?;
        let mut b = Builder::from_config(base);
        builder(&mut b);
        let subscriber = b.build_subscriber_client()?;
        drop(pool.connect());
        drop(subscriber.connect());
        drop(subscriber.manage_subscriptions());
        Ok(Self {
            pool,
            subscriber,
            clustered,
        })
    }

    /// Positions of `keys` grouped so each group's keys share a slot: one group when
    /// Redis is not a cluster.
    fn by_slot<'a>(&self, keys: impl Iterator<Item = &'a str>) -> Vec<Vec<usize>> {
        let keys: Vec<&str> = keys.collect();
        if !self.clustered {
            return vec![(0..keys.len()).collect()];
        }
        let mut groups: std::collections::BTreeMap<u16, Vec<usize>> = Default::default();
        for (i, k) in keys.iter().enumerate() {
            groups
                .entry(fred::util::redis_keyslot(value_key(k).as_bytes()))
                .or_default()
                .push(i);
        }
        groups.into_values().collect()
    }

    /// Connects and waits up to `within` for both connections, failing when they are not
    /// up by then: for callers that must not start without Redis (tests, tools).
    pub async fn connect_within(
        config: &RedisConfig,
        within: Duration,
    ) -> Result<Self, RemoteError> {
        let r = Self::connect(config)?;
        if r.wait_connected(within).await {
            Ok(r)
        } else {
            Err(RemoteError(format!(
                "redis did not connect within {within:?}"
            )))
        }
    }

    /// Waits until the command pool and the invalidation connection are connected, at
    /// most `within`.
    pub async fn wait_connected(&self, within: Duration) -> bool {
        let both = async {
            self.pool.wait_for_connect().await?;
            self.subscriber.wait_for_connect().await
        };
        tokio::time::timeout(within, both)
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

#[async_trait]
impl Remote for RedisRemote {
    async fn fetch(&self, keys: &[String]) -> Result<Vec<(Option<Bytes>, i64)>, RemoteError> {
        let groups = self.by_slot(keys.iter().map(String::as_str));
        // One `MGET` per slot, sent at once (the connections pipeline them).
        let reads = groups.iter().map(|group| {
            let all = key_pairs(group.iter().map(|&i| keys[i].as_str()));
            self.pool.mget::<Vec<Option<Bytes>>, _>(all)
        });
        let replies = futures::future::try_join_all(reads).await?;
        let mut out = vec![(None, 0); keys.len()];
        for (group, values) in groups.iter().zip(replies) {
            for (&i, pair) in group.iter().zip(values.chunks(2)) {
                let version = pair[1]
                    .as_ref()
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                    .unwrap_or(0);
                out[i] = (pair[0].clone(), version);
            }
        }
        Ok(out)
    }

    async fn fill(&self, fills: &[Fill]) -> Result<Vec<bool>, RemoteError> {
        if fills.is_empty() {
            return Ok(Vec::new());
        }
        let groups = self.by_slot(fills.iter().map(|f| f.key.as_str()));
        // One script per slot, sent at once, as the reads.
        let scripts = groups.iter().map(|group| {
            let keys = key_pairs(group.iter().map(|&i| fills[i].key.as_str()));
            let mut args: Vec<Value> = Vec::with_capacity(group.len() * 3);
            for f in group.iter().map(|&i| &fills[i]) {
                args.push(f.version.to_string().into());
                args.push(Bytes::from(f.value.clone()).into());
                args.push((f.ttl_secs.max(1) as i64).into());
            }
            self.pool.eval::<Vec<i64>, _, _, _>(FILL_SCRIPT, keys, args)
        });
        let replies = futures::future::try_join_all(scripts).await?;
        let mut out = vec![false; fills.len()];
        for (group, written) in groups.iter().zip(replies) {
            for (&i, w) in group.iter().zip(written) {
                out[i] = w == 1;
            }
        }
        Ok(out)
    }

    async fn invalidate(&self, keys: &[String], channel: &str) -> Result<(), RemoteError> {
        if keys.is_empty() {
            return Ok(());
        }
        // One script per slot, each bumping, deleting and publishing its own keys.
        let scripts = self
            .by_slot(keys.iter().map(String::as_str))
            .into_iter()
            .map(|group| {
                let named: Vec<&str> = group.iter().map(|&i| keys[i].as_str()).collect();
                let all = key_pairs(named.iter().copied());
                let message = serde_json::to_string(&named).expect("strings serialize");
                let args: Vec<Value> = vec![
                    channel.into(),
                    message.into(),
                    (VERSION_TTL_SECS as i64).into(),
                ];
                self.pool.eval::<i64, _, _, _>(INVALIDATE_SCRIPT, all, args)
            });
        futures::future::try_join_all(scripts).await?;
        Ok(())
    }

    async fn listen(
        &self,
        channel: &str,
    ) -> Result<mpsc::UnboundedReceiver<RemoteEvent>, RemoteError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut messages = self.subscriber.message_rx();
        let mut errors = self.subscriber.error_rx();
        let mut reconnects = self.subscriber.reconnect_rx();
        let channel_name = channel.to_owned();
        let subscriber = self.subscriber.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    m = messages.recv() => match m {
                        Ok(m) if *m.channel == *channel_name => {
                            let keys = m.value.as_bytes().and_then(|b| serde_json::from_slice(b).ok());
                            match keys {
                                Some(keys) => RemoteEvent::Invalidated(keys),
                                // An unreadable message named keys we cannot evict.
                                None => RemoteEvent::Lost,
                            }
                        }
                        Ok(_) => continue,
                        Err(RecvError::Lagged(_)) => RemoteEvent::Lost,
                        Err(RecvError::Closed) => return,
                    },
                    e = errors.recv() => match e {
                        // An established connection dropped; `None` is a failed retry.
                        Ok((_, Some(_))) | Err(RecvError::Lagged(_)) => RemoteEvent::Lost,
                        Ok((_, None)) => continue,
                        Err(RecvError::Closed) => return,
                    },
                    r = reconnects.recv() => match r {
                        // Messages sent while we were away are gone. Subscribe again: a
                        // subscription that failed while Redis was down is not restored
                        // by the client.
                        Ok(_) | Err(RecvError::Lagged(_)) => {
                            let (subscriber, channel) = (subscriber.clone(), channel_name.clone());
                            tokio::spawn(async move {
                                if let Err(e) = subscriber.subscribe(channel).await {
                                    tracing::warn!(error = %e, "cannot resubscribe to invalidations");
                                }
                            });
                            RemoteEvent::Lost
                        }
                        Err(RecvError::Closed) => return,
                    },
                };
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        if let Err(e) = self.subscriber.subscribe(channel).await {
            // Not fatal: the listener subscribes again when the connection comes up.
            tracing::warn!(error = %e, channel, "cannot subscribe to invalidations yet");
        }
        Ok(rx)
    }
}
