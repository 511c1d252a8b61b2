//! The miss path: L2 values and fence versions in one round trip, the loader for the rest,
//! then fills of both tiers that an invalidation meanwhile refuses.

use super::{Answer, CacheKey, Inner};
use crate::codec;
use crate::fence::Ticket;
use crate::outcome::Outcome;
use crate::remote::Fill;
use quiver_model::{LoadError, Loader};
use std::sync::Arc;
use tokio::time::timeout;
use tracing::Instrument as _;

impl<L> Inner<L>
where
    L: Loader + 'static,
    L::Key: CacheKey,
{
    /// Loads `keys` (all claimed by the caller) through L2 and the loader and fills the
    /// tiers. `use_l2_values: false` reads only the fence versions from Redis (refresh).
    pub(super) async fn load(
        &self,
        keys: &[L::Key],
        use_l2_values: bool,
    ) -> Result<Vec<Answer<L::Value>>, LoadError> {
        let schema = self.config.schema_version;
        let tickets: Vec<Ticket> = keys.iter().map(|k| self.fence.ticket(k)).collect();
        let texts: Vec<String> = keys.iter().map(|k| self.key_text(k)).collect();
        let mut found: Vec<Answer<L::Value>> = vec![(None, Outcome::Miss); keys.len()];
        let mut versions: Option<Vec<i64>> = None;
        let mut todo: Vec<usize> = (0..keys.len()).collect();

        if let Some(remote) = self.remote_allowed() {
            let fetch = remote.fetch(&texts).instrument(tracing::debug_span!(
                "cache.l2",
                cache = %self.config.name,
                keys = texts.len()
            ));
            match timeout(self.config.redis_timeout, fetch).await {
                Ok(Ok(rows)) => {
                    self.breaker.success();
                    todo.clear();
                    let mut vs = Vec::with_capacity(rows.len());
                    for (i, (bytes, version)) in rows.into_iter().enumerate() {
                        vs.push(version);
                        let opened = bytes.filter(|_| use_l2_values).and_then(|b| {
                            codec::open(&*self.codec, schema, &b).map(|v| (v, b.len()))
                        });
                        match opened {
                            Some((value, len)) => {
                                let value = value.map(Arc::new);
                                self.put_l1(&keys[i], value.clone(), len, tickets[i]);
                                let outcome = if value.is_some() {
                                    Outcome::HitL2
                                } else {
                                    Outcome::Negative
                                };
                                found[i] = (value, outcome);
                            }
                            None => todo.push(i),
                        }
                    }
                    versions = Some(vs);
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "l2 fetch failed");
                    self.redis_failed();
                }
                Err(_) => self.redis_failed(),
            }
        }
        if todo.is_empty() {
            return Ok(found);
        }

        let ask: Vec<L::Key> = todo.iter().map(|&i| keys[i].clone()).collect();
        self.stats.loader_call();
        let mut loaded = self
            .loader
            .load_many(&ask)
            .instrument(tracing::debug_span!(
                "cache.load",
                cache = %self.config.name,
                keys = ask.len()
            ))
            .await?;
        let mut fills = Vec::new();
        // (position, encoded length) of what goes into the L1 once the L2 has answered.
        let mut local = Vec::new();
        for &i in &todo {
            let value = loaded.remove(&keys[i]).map(Arc::new);
            if value.as_deref().is_some_and(|v| !self.codec.admit(v)) {
                found[i] = (value, Outcome::Miss);
                continue;
            }
            let sealed = codec::seal(&*self.codec, schema, value.as_deref());
            if self.fence.still_valid(tickets[i]) {
                local.push((i, sealed.len()));
                // Without the version read before the load there is nothing to fence
                // with (Redis was skipped or failed): leave the L2 alone.
                if let Some(vs) = &versions {
                    fills.push(Fill {
                        key: texts[i].clone(),
                        version: vs[i],
                        ttl_secs: self.l2_ttl_secs(value.is_none()),
                        value: sealed,
                    });
                }
            }
            found[i] = (value, Outcome::Miss);
        }
        // The L2's fence first: a fill it refuses lost to an invalidation, maybe one made
        // on another replica whose message has not reached this one yet; such a value
        // stays out of this L1 too.
        let mut refused = Vec::new();
        if !fills.is_empty()
            && let Some(remote) = self.remote_allowed()
        {
            match timeout(self.config.redis_timeout, remote.fill(&fills)).await {
                Ok(Ok(written)) => {
                    self.breaker.success();
                    refused = written.iter().map(|w| !w).collect();
                }
                _ => self.redis_failed(),
            }
        }
        // `fills` and `local` list the same positions in the same order when Redis was
        // asked; otherwise `refused` is empty.
        for (n, &(i, len)) in local.iter().enumerate() {
            if !refused.get(n).copied().unwrap_or(false) {
                self.put_l1(&keys[i], found[i].0.clone(), len, tickets[i]);
            }
        }
        Ok(found)
    }
}
