//! Single flight on the miss path: the keys a lookup could not answer from the L1 are
//! deduplicated and split into those it loads itself (published to anyone who asks
//! meanwhile) and those another lookup is already loading (awaited, or loaded again if
//! that lookup was cancelled). An invalidation ends the claims on its keys, so a lookup
//! that starts after it never waits for a load that started before it, and neither does
//! a consistent read.

use super::{Answer, CacheKey, Fast, Inner, Tally};
use crate::outcome::Outcome;
use quiver_model::{LoadError, Loader};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// A per-key result fanned out from the loading lookup to the coalesced ones.
pub(super) type Shared<V> = Option<Result<Option<Arc<V>>, LoadError>>;
/// Keys being loaded, each with the channel its result will be published on.
pub(super) type Inflight<K, V> = Mutex<HashMap<K, watch::Receiver<Shared<V>>, Fast>>;

/// The keys one lookup loads (with their index among the lookup's distinct keys), with
/// the senders that publish their results. Dropping it ends the claim, published or not.
struct Lead<'a, K: Eq + Hash, V> {
    keys: Vec<(usize, K, watch::Sender<Shared<V>>)>,
    inflight: &'a Inflight<K, V>,
}

impl<K: Eq + Hash, V> Lead<'_, K, V> {
    /// Sends each claimed key its result; `result(j)` answers `keys[j]`.
    fn publish(&self, result: impl Fn(usize) -> Result<Option<Arc<V>>, LoadError>) {
        for (j, (_, _, tx)) in self.keys.iter().enumerate() {
            let _ = tx.send(Some(result(j)));
        }
    }
}

impl<K: Eq + Hash, V> Drop for Lead<'_, K, V> {
    fn drop(&mut self) {
        let mut inflight = self.inflight.lock().expect("inflight lock");
        for (_, k, tx) in &self.keys {
            // Only its own claim: an invalidation may have let a newer load claim the key.
            if inflight
                .get(k)
                .is_some_and(|rx| rx.same_channel(&tx.subscribe()))
            {
                inflight.remove(k);
            }
        }
    }
}

/// Keys (by distinct index) that another lookup is loading, with where its result comes.
type Follow<V> = Vec<(usize, watch::Receiver<Shared<V>>)>;
/// What [`Inner::claim`] hands back: keys to load, and keys to wait for.
type Claim<'a, K, V> = (Lead<'a, K, V>, Follow<V>);

impl<L> Inner<L>
where
    L: Loader + 'static,
    L::Key: CacheKey,
{
    /// Fills `out` at the `missing` positions: each distinct key once, claimed for this
    /// lookup or waited for when another lookup is already loading it.
    pub(super) async fn resolve_missing(
        &self,
        keys: &[L::Key],
        missing: &[usize],
        out: &mut [Option<Arc<L::Value>>],
        tally: &mut Tally,
        seen: &mut (dyn FnMut(usize, Outcome) + Send),
    ) -> Result<(), LoadError> {
        let inner = self;
        // The distinct missing keys, and for each missing position its distinct index.
        let mut index: HashMap<&L::Key, usize, Fast> =
            HashMap::with_capacity_and_hasher(missing.len(), Fast::default());
        let mut distinct: Vec<L::Key> = Vec::with_capacity(missing.len());
        let at: Vec<usize> = missing
            .iter()
            .map(|&i| {
                *index.entry(&keys[i]).or_insert_with(|| {
                    distinct.push(keys[i].clone());
                    distinct.len() - 1
                })
            })
            .collect();
        let mut answers: Vec<Option<Answer<L::Value>>> = vec![None; distinct.len()];
        let mut todo: Vec<usize> = (0..distinct.len()).collect();
        while !todo.is_empty() {
            let (lead, follow) = inner.claim(&distinct, &todo);
            if !lead.keys.is_empty() {
                let ask: Vec<L::Key> = lead.keys.iter().map(|(_, k, _)| k.clone()).collect();
                match inner.load(&ask, true).await {
                    Ok(found) => {
                        lead.publish(|j| Ok(found[j].0.clone()));
                        for ((d, _, _), answer) in lead.keys.iter().zip(found) {
                            answers[*d] = Some(answer);
                        }
                    }
                    Err(e) => {
                        lead.publish(|_| Err(e.clone()));
                        return Err(e);
                    }
                }
            }
            drop(lead);
            todo = Vec::new();
            for (d, mut rx) in follow {
                let shared = match rx.wait_for(Option::is_some).await {
                    Ok(v) => v.clone(),
                    // The loading lookup was cancelled before it finished: load again.
                    Err(_) => None,
                };
                match shared {
                    Some(Ok(v)) => answers[d] = Some((v, Outcome::Coalesced)),
                    Some(Err(e)) => return Err(e),
                    None => todo.push(d),
                }
            }
        }
        let mut counted = vec![false; distinct.len()];
        for (&i, &d) in missing.iter().zip(&at) {
            let (value, outcome) = answers[d].clone().expect("every distinct key answered");
            // One outcome per distinct key, as the loader saw it.
            if !std::mem::replace(&mut counted[d], true) {
                tally.add(outcome);
            }
            seen(i, outcome);
            out[i] = value;
        }
        Ok(())
    }

    /// Splits `distinct[todo]` into the keys this lookup will load and those someone
    /// else is loading.
    fn claim(&self, distinct: &[L::Key], todo: &[usize]) -> Claim<'_, L::Key, L::Value> {
        let mut inflight = self.inflight.lock().expect("inflight lock");
        let mut lead = Lead {
            keys: Vec::with_capacity(todo.len()),
            inflight: &self.inflight,
        };
        let mut follow = Vec::new();
        // A consistent read takes the key over, as an invalidation would: the load in
        // flight may have started before the write it must see.
        let follows = !super::consistent_reads();
        for &d in todo {
            let key = &distinct[d];
            match inflight.get(key) {
                Some(rx) if follows => follow.push((d, rx.clone())),
                _ => {
                    let (tx, rx) = watch::channel(None);
                    inflight.insert(key.clone(), rx);
                    lead.keys.push((d, key.clone(), tx));
                }
            }
        }
        (lead, follow)
    }
}
