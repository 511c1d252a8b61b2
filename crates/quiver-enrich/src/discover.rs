//! Discovery: a window of recent posts shuffled by a seed, and the engine's assembly of
//! a discovery page from it. Each post's rank is a fixed mix of the seed and its id, so
//! the order is the same in every process and every release, and a page continues after
//! the last `(rank, id)` served: pages never repeat an item, even when posts in the
//! window are deleted between requests.

use crate::engine::{Engine, Timings};
use crate::error::{EnrichError, Part};
use crate::hydrate::{Assembled, Chunk, MoreFn};
use quiver_model::{Cursor, DiscoverCursor, FeedHead, PostId, PostRef, UserId, Window};
use std::sync::Arc;
use std::time::Instant;

/// The position of `id` in the shuffle of `seed`.
pub(crate) fn rank(seed: u64, id: PostId) -> u64 {
    mix(seed ^ mix(id.0 as u64))
}

/// A new seed, below 2^53 so JavaScript clients keep it exact.
pub(crate) fn fresh_seed() -> u64 {
    rand::random::<u64>() >> 11
}

/// The splitmix64 finalizer: a bijection on `u64` whose output bits each depend on every
/// input bit. A specified function on purpose: `std`'s hashers may change between
/// releases, and the same seed must give the same order forever.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A discovery page before presentation, with its next position and the ids that page
/// will start from.
pub(crate) struct Discovered {
    pub(crate) page: Assembled,
    pub(crate) next: Option<DiscoverCursor>,
    pub(crate) upcoming: Vec<PostId>,
}

impl Engine {
    pub(crate) async fn assemble_discover(
        &self,
        viewer: UserId,
        seed: u64,
        position: Option<DiscoverCursor>,
        limit: usize,
        t: &mut Timings,
    ) -> Result<Discovered, EnrichError> {
        let s = &self.inner.sources;
        let start = Instant::now();
        let window_len = self.inner.config.discovery_window;
        let (graph, window) = lookups!(self.concurrent(), self.graph(Some(viewer)), async {
            let at = Window(position.map(|p| p.anchor));
            let cached = match &s.windows {
                Some(windows) => windows
                    .load_shared(&[at])
                    .await
                    .map_err(EnrichError::load(Part::Skeleton))?
                    .pop()
                    .flatten(),
                None => None,
            };
            match cached {
                Some(w) => Ok(w),
                None => s
                    .skeletons
                    .recent(at.0, window_len)
                    .await
                    .map(|page| Arc::new(FeedHead::from(page)))
                    .map_err(EnrichError::load(Part::Skeleton)),
            }
        });
        let (graph, window) = (graph?, window?);
        // The window is anchored at its newest post on the first page and keeps that
        // anchor in every cursor, so later pages shuffle the same posts.
        let anchor = match position {
            Some(p) => p.anchor,
            None => match window.refs.first() {
                Some(newest) => Cursor {
                    created_at: newest.created_at + chrono::Duration::microseconds(1),
                    id: i64::MIN,
                },
                None => Cursor {
                    created_at: chrono::DateTime::<chrono::Utc>::MAX_UTC,
                    id: i64::MIN,
                },
            },
        };
        let mut ranked: Vec<(u64, PostRef)> = window
            .refs
            .iter()
            .map(|r| (rank(seed, r.id), *r))
            .filter(|(k, r)| position.is_none_or(|p| (*k, r.id.0) > (p.rank, p.id)))
            .collect();
        let total = ranked.len();
        // Only the front of the order is ever read by one request (the page, its
        // refills and the next page's first refs): select it, then sort just that.
        let need = limit * (self.inner.config.refills as usize + 2);
        if ranked.len() > need {
            ranked.select_nth_unstable_by_key(need, |(k, r)| (*k, r.id.0));
            ranked.truncate(need);
        }
        ranked.sort_unstable_by_key(|(k, r)| (*k, r.id.0));
        let refs: Vec<PostRef> = ranked.into_iter().map(|(_, r)| r).collect();
        t.skeleton += start.elapsed();

        let chunk_at = |from: usize| Chunk {
            refs: refs[from.min(refs.len())..(from + limit).min(refs.len())].to_vec(),
            more: from + limit < total,
        };
        let first = chunk_at(0);
        let mut offset = 0;
        let more: MoreFn<'_> = Box::new(move |_last| {
            offset += limit;
            let chunk = chunk_at(offset);
            Box::pin(std::future::ready(Ok(chunk)))
        });
        let page = self.assemble(graph, first, limit, more, t).await?;
        let next = page.filled.next.map(|r| DiscoverCursor {
            anchor,
            seed,
            rank: rank(seed, r.id),
            id: r.id.0,
        });
        // The refs the next page starts from: everything ranked after the last one read.
        let upcoming = match page.filled.next {
            Some(last) => {
                let from = refs
                    .iter()
                    .position(|r| r.id == last.id)
                    .map_or(refs.len(), |i| i + 1);
                refs[from..(from + limit).min(refs.len())]
                    .iter()
                    .map(|r| r.id)
                    .collect()
            }
            None => Vec::new(),
        };
        Ok(Discovered {
            page,
            next,
            upcoming,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_are_fixed_values_so_orders_never_change() {
        // Pinned: a change here would reorder every client's discovery feed mid-walk.
        assert_eq!(rank(0, PostId(0)), 0xa706_dd2f_4d19_7e6f);
        assert_eq!(rank(42, PostId(7)), rank(42, PostId(7)));
    }

    #[test]
    fn different_seeds_give_different_orders() {
        let order = |seed| {
            let mut ids: Vec<i64> = (1..=50).collect();
            ids.sort_by_key(|&i| rank(seed, PostId(i)));
            ids
        };
        assert_eq!(order(1), order(1));
        assert_ne!(order(1), order(2));
        assert_ne!(order(1), (1..=50).collect::<Vec<_>>());
    }

    #[test]
    fn fresh_seeds_fit_in_a_javascript_number() {
        for _ in 0..1000 {
            assert!(fresh_seed() < 1 << 53);
        }
    }
}
