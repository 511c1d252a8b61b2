//! Discovery: a window of recent posts shuffled by a seed, and the engine's assembly of
//! a discovery page from it. Each post's rank is a fixed mix of the seed and its id, so
//! the order is the same in every process and every release, and a page continues after
//! the last `(rank, id)` served: pages never repeat an item, even when posts in the
//! window are deleted between requests.

use crate::engine::{Engine, Timings};
use crate::error::{EnrichError, Part};
use crate::hydrate::{Assembled, Chunk, MoreFn};
use quiver_model::{Cursor, DiscoverCursor, FeedHead, PostId, PostList, PostRef, UserId, Window};
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

/// A window in the order of one seed: every ref with its rank, sorted by `(rank, id)`.
/// Built once per window and seed and shared by every page of that walk (and by every
/// client that asks for the same seed), so a page costs a binary search instead of
/// ranking the whole window again.
pub(crate) struct Shuffle {
    /// The window it was built from: an entry is used only for the same window (the same
    /// cached value, or equal refs), so a window that changed is shuffled again.
    window: Arc<FeedHead>,
    order: Vec<(u64, PostRef)>,
}

/// Shuffles kept: each holds one window's refs (about 32 KB at the default size).
pub(crate) const SHUFFLES: usize = 256;

/// The cache of [`Shuffle`]s, by anchor and seed.
pub(crate) type Shuffles = quick_cache::sync::Cache<(Cursor, u64), Arc<Shuffle>>;

/// `window` in the order of `seed`, from `shuffles` when it was built from this window.
fn shuffle(shuffles: &Shuffles, window: &Arc<FeedHead>, anchor: Cursor, seed: u64) -> Arc<Shuffle> {
    if let Some(s) = shuffles.get(&(anchor, seed))
        && (Arc::ptr_eq(&s.window, window) || s.window.refs == window.refs)
    {
        return s;
    }
    let mut order: Vec<(u64, PostRef)> =
        window.refs.iter().map(|r| (rank(seed, r.id), *r)).collect();
    order.sort_unstable_by_key(|(k, r)| (*k, r.id.0));
    let s = Arc::new(Shuffle {
        window: window.clone(),
        order,
    });
    shuffles.insert((anchor, seed), s.clone());
    s
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
                None => {
                    // Read from the store: nothing fences it.
                    quiver_model::fence::unfenced();
                    s.skeletons
                        .posts(PostList::Recent, at.0, window_len)
                        .await
                        .map(|page| Arc::new(FeedHead::from(page)))
                        .map_err(EnrichError::load(Part::Skeleton))
                }
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
        let shuffle = shuffle(&self.inner.shuffles, &window, anchor, seed);
        // The rest of the order after the last `(rank, id)` served.
        let from = position.map_or(0, |p| {
            shuffle
                .order
                .partition_point(|(k, r)| (*k, r.id.0) <= (p.rank, p.id))
        });
        let refs: &[(u64, PostRef)] = &shuffle.order[from..];
        let total = refs.len();
        t.skeleton += start.elapsed();

        let chunk_at = |from: usize| Chunk {
            refs: refs[from.min(total)..(from + limit).min(total)]
                .iter()
                .map(|(_, r)| *r)
                .collect(),
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
                    .position(|(_, r)| r.id == last.id)
                    .map_or(total, |i| i + 1);
                refs[from..(from + limit).min(total)]
                    .iter()
                    .map(|(_, r)| r.id)
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
    fn a_shuffle_is_reused_only_for_the_window_it_was_built_from() {
        let at = |m: i64| chrono::DateTime::from_timestamp(m * 60, 0).unwrap();
        let window = |ids: &[i64]| crate::hydrate::tests::head(ids, &[]);
        let ids = |s: &Shuffle| {
            let mut v: Vec<i64> = s.order.iter().map(|(_, r)| r.id.0).collect();
            v.sort_unstable();
            v
        };
        let shuffles = Shuffles::new(8);
        let anchor = Cursor {
            created_at: at(100),
            id: i64::MIN,
        };
        let a = window(&[5, 4, 3, 2, 1]);
        let first = shuffle(&shuffles, &a, anchor, 9);
        assert!(first.order.is_sorted_by_key(|(k, r)| (*k, r.id.0)));
        assert_eq!(ids(&first), [1, 2, 3, 4, 5]);
        // The same window (or an equal one, loaded again): the same shuffle.
        assert!(Arc::ptr_eq(&first, &shuffle(&shuffles, &a, anchor, 9)));
        assert!(Arc::ptr_eq(
            &first,
            &shuffle(&shuffles, &window(&[5, 4, 3, 2, 1]), anchor, 9)
        ));
        // Post 3 deleted: the window under the same anchor now reaches post 0, and the
        // walk must see it.
        let b = window(&[5, 4, 2, 1, 0]);
        assert_eq!(ids(&shuffle(&shuffles, &b, anchor, 9)), [0, 1, 2, 4, 5]);
        // Another seed is another order of the same window.
        let other = shuffle(&shuffles, &b, anchor, 10);
        assert_eq!(ids(&other), [0, 1, 2, 4, 5]);
    }

    #[test]
    fn fresh_seeds_fit_in_a_javascript_number() {
        for _ in 0..1000 {
            assert!(fresh_seed() < 1 << 53);
        }
    }
}
