//! Finished home and discovery pages per viewer, served again while every input they
//! were built from is unchanged: a page is kept only when each of its lookups was
//! answered by a cache's L1 before its soft TTL, with the fences those lookups recorded
//! ([`quiver_model::fence`]); a hit checks them all (no invalidation of any key it read
//! since, no input due a refresh, the task not reading its own writes). A page served
//! past its inputs' earliest refresh-ahead mark, and again past their latest, has its
//! inputs read again in the background, so their caches reload them while the page is
//! still served and it is built again from fresh inputs, not from stale ones.

use crate::engine::{Rendered, Timings};
use quiver_model::fence::Fences;
use quiver_model::{Cursor, DiscoverCursor, UserId};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use tokio::time::Instant;

/// A page's identity: whose, which feed from where, how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PageKey {
    pub(crate) viewer: UserId,
    pub(crate) feed: Feed,
    pub(crate) limit: usize,
}

/// Which feed a page is of, and its position in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Feed {
    /// The home feed after a keyset cursor.
    Home(Option<Cursor>),
    /// Discovery in the order of a seed, after a position (a first page has none).
    Discover(u64, Option<DiscoverCursor>),
}

pub(crate) struct Page {
    rendered: Rendered,
    fences: Fences,
    /// How many of the inputs' refresh-ahead marks (earliest, latest) a hit has read
    /// the inputs again past.
    refreshed: AtomicU8,
}

/// A page served again, and whether its inputs are to be read again now (refresh ahead).
pub(crate) struct Hit {
    pub(crate) rendered: Rendered,
    pub(crate) refresh: bool,
}

/// Weighs a page by its body, so the capacity is in bytes.
#[derive(Clone)]
struct ByBody;

/// What a page costs beside its body (the key, the fences, the ids).
const PAGE_OVERHEAD: u64 = 1024;

impl quick_cache::Weighter<PageKey, Arc<Page>> for ByBody {
    fn weight(&self, _: &PageKey, page: &Arc<Page>) -> u64 {
        page.rendered.body.len() as u64 + PAGE_OVERHEAD
    }
}

/// Counters of the finished-page cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageStats {
    /// Pages served from the cache.
    pub hits: u64,
    /// Pages built (no page, or one whose inputs changed).
    pub built: u64,
    /// Built pages kept (every input fenced).
    pub kept: u64,
    /// Pages whose inputs were read again ahead of their soft TTL, while being served.
    pub refreshed: u64,
}

pub(crate) struct Pages {
    cache: quick_cache::sync::Cache<PageKey, Arc<Page>, ByBody>,
    hits: AtomicU64,
    built: AtomicU64,
    kept: AtomicU64,
    refreshed: AtomicU64,
}

impl Pages {
    pub(crate) fn new(capacity_bytes: u64) -> Self {
        // About 16 KB a page: the estimate only sizes the cache's tables.
        let estimated = (capacity_bytes / 16_384).max(16) as usize;
        Self {
            cache: quick_cache::sync::Cache::with_weighter(estimated, capacity_bytes, ByBody),
            hits: AtomicU64::new(0),
            built: AtomicU64::new(0),
            kept: AtomicU64::new(0),
            refreshed: AtomicU64::new(0),
        }
    }

    /// The page under `key` if every input it was built from still holds; `refresh` is
    /// set for the first hit past the inputs' earliest refresh-ahead mark, and for the
    /// first past their latest.
    pub(crate) fn get(&self, key: &PageKey) -> Option<Hit> {
        let page = self.cache.get(key)?;
        let now = Instant::now();
        if !page.fences.hold(now) {
            return None;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        let marks = page.fences.marks_passed(now);
        let refresh = marks > page.refreshed.load(Ordering::Relaxed)
            && page.refreshed.fetch_max(marks, Ordering::Relaxed) < marks;
        if refresh {
            self.refreshed.fetch_add(1, Ordering::Relaxed);
        }
        // Served, not built: no stage took any time.
        let rendered = Rendered {
            timings: Timings::default(),
            ..page.rendered.clone()
        };
        Some(Hit { rendered, refresh })
    }

    /// Keeps a page just built, if every input was fenced and none is missing.
    pub(crate) fn offer(&self, key: PageKey, rendered: &Rendered, fences: Fences) {
        self.built.fetch_add(1, Ordering::Relaxed);
        if fences.hold(Instant::now()) && rendered.partial.is_empty() {
            self.kept.fetch_add(1, Ordering::Relaxed);
            let mut rendered = rendered.clone();
            // Hashed once here rather than by every request that serves it again.
            let digest = xxhash_rust::xxh3::xxh3_128(&rendered.body);
            rendered.digest = Some(digest);
            let refreshed = AtomicU8::new(0);
            let page = Page {
                rendered,
                fences,
                refreshed,
            };
            self.cache.insert(key, Arc::new(page));
        } else {
            self.cache.remove(&key);
        }
    }

    pub(crate) fn stats(&self) -> PageStats {
        PageStats {
            hits: self.hits.load(Ordering::Relaxed),
            built: self.built.load(Ordering::Relaxed),
            kept: self.kept.load(Ordering::Relaxed),
            refreshed: self.refreshed.load(Ordering::Relaxed),
        }
    }
}
