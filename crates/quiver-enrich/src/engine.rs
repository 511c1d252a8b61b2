//! The engine's entry points: every response as skeleton → hydrate (`hydrate.rs`) →
//! present (`present.rs`), then, for feeds, the next page warmed (`prefetch.rs`). This
//! file holds the configuration, the public calls, and orders, which need no skeleton
//! cutting or splicing.

use crate::discover::fresh_seed;
use crate::error::{EnrichError, Part};
use crate::hydrate::{Assembled, Filled};
use crate::pages::{Feed, PageKey, PageStats, Pages};
use crate::prefetch::{PrefetchPool, PrefetchStats};
use crate::present::viewer_part;
use crate::source::Sources;
use quiver_codec::encode::encode;
use quiver_codec::fragment::{SplicedItem, splice_post};
use quiver_codec::wire::{OrderWire, OrdersPageWire, ProfileWire, ViewerWire};
use quiver_model::fence::recording;
use quiver_model::{Cursor, CursorCodec, DiscoverCursor, OrderId, OrderStatus, PostId, UserId};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Knobs of the engine.
#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    /// The largest page a caller may ask for.
    pub max_limit: u32,
    /// How many more skeleton pages a page left short by filtering may read.
    pub refills: u32,
    /// How many recent posts the discovery feed shuffles.
    pub discovery_window: u32,
    /// Whether pages splice the items' stored fragments (off: every item and author is
    /// encoded again for every page, to measure what storing them ready buys).
    pub reuse_fragments: bool,
    /// Whether independent lookups run concurrently (off only to measure what that buys).
    pub concurrent_lookups: bool,
    /// Encode feed pages whole with serde_json instead of splicing pre-encoded fragments
    /// (on only to measure what the chosen path buys; the bytes are the same).
    pub serde_json_pages: bool,
    /// Bytes of finished pages (home, and discovery of a given seed) kept per viewer and
    /// served again while every input they were built from holds (0: none; 16 MiB by
    /// default). A feed keeps them only when every source it reads records fences
    /// ([`quiver_model::Loader::fences`]).
    pub finished_pages_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_limit: 100,
            refills: 3,
            discovery_window: 1000,
            reuse_fragments: true,
            concurrent_lookups: true,
            serde_json_pages: false,
            finished_pages_bytes: 16 << 20,
        }
    }
}

/// Time spent in each stage of one response (the server's `Server-Timing`). Skeleton
/// reads and hydration run concurrently in places; each stage counts its wall time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    pub skeleton: Duration,
    pub hydrate: Duration,
    pub present: Duration,
}

/// An assembled response.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// The JSON body (shared: a page served again from the finished-page cache is not
    /// copied).
    pub body: bytes::Bytes,
    pub timings: Timings,
    /// Optional parts that could not be loaded (also in the body of pages and posts).
    pub partial: Vec<Part>,
    /// Ids of what the body shows, in order: posts, orders, or the one user.
    pub ids: Vec<i64>,
    /// The token of the next page, if there is one.
    pub next: Option<String>,
    /// The discovery seed, on discovery pages.
    pub seed: Option<u64>,
    /// The body's XXH3-128 when it is already known: a page served again from the
    /// finished-page cache carries the one taken when it was kept, so a caller that tags
    /// the body (an `ETag`) need not hash 14 KB on every request.
    pub digest: Option<u128>,
}

/// The feed engine. Cheap to clone; clones share the prefetch pool.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) sources: Sources,
    pub(crate) config: EngineConfig,
    pub(crate) cursors: CursorCodec,
    pub(crate) prefetch: Option<PrefetchPool>,
    /// Next pages being warmed, by viewer and the cursor that leads to them, so a page
    /// requested again before its warming finished is not warmed twice. An entry lives
    /// from submission to the end of its job (or its drop), so the set is bounded by the
    /// pool's queue and workers.
    pub(crate) warming: Mutex<HashSet<(i64, i64)>>,
    /// Discovery windows in the order of a seed, shared by the pages of a walk.
    pub(crate) shuffles: crate::discover::Shuffles,
    /// Home heads merged with their celebrities' heads, reused while those are unchanged.
    pub(crate) merges: crate::hydrate::Merges,
    /// Finished pages, when configured and every source of a feed fences.
    pub(crate) pages: Option<Pages>,
    /// Which feeds keep finished pages.
    pub(crate) finished: Finished,
}

/// Which feeds keep finished pages: those whose every source records its fences.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Finished {
    home: bool,
    discover: bool,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine over `sources`, signing cursors with `cursors`, warming next pages on
    /// `prefetch` when given.
    pub fn new(
        sources: Sources,
        cursors: CursorCodec,
        config: EngineConfig,
        prefetch: Option<PrefetchPool>,
    ) -> Self {
        let on = config.finished_pages_bytes > 0;
        let finished = Finished {
            home: on && sources.home_fences(),
            discover: on && sources.discover_fences(),
        };
        let pages =
            (finished.home || finished.discover).then(|| Pages::new(config.finished_pages_bytes));
        Self {
            inner: Arc::new(Inner {
                sources,
                config,
                cursors,
                prefetch,
                warming: Mutex::new(HashSet::new()),
                shuffles: crate::discover::Shuffles::new(crate::discover::SHUFFLES),
                merges: crate::hydrate::Merges::with_weighter(
                    4096,
                    crate::hydrate::MERGED_REFS,
                    crate::hydrate::ByRefs,
                ),
                pages,
                finished,
            }),
        }
    }

    /// The codec that signs this engine's cursors, for lists served beside it.
    pub fn cursors(&self) -> &CursorCodec {
        &self.inner.cursors
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Counters of the finished-page cache, if there is one.
    pub fn page_stats(&self) -> Option<PageStats> {
        self.inner.pages.as_ref().map(Pages::stats)
    }

    /// Prefetch jobs waiting for a worker (0 without a pool).
    pub fn prefetch_queued(&self) -> usize {
        self.inner.prefetch.as_ref().map_or(0, PrefetchPool::queued)
    }

    /// Counters of the prefetch pool, if there is one.
    pub fn prefetch_stats(&self) -> Option<PrefetchStats> {
        self.inner.prefetch.as_ref().map(PrefetchPool::stats)
    }

    /// The home feed of `viewer`: posts by the accounts they follow and their own, newest
    /// first, without authors in a block with the viewer either way.
    pub async fn home(
        &self,
        viewer: UserId,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Rendered, EnrichError> {
        let limit = self.limit(limit)?;
        let feed = Feed::Home(self.keyset(cursor)?);
        self.finished(PageKey {
            viewer,
            feed,
            limit,
        })
        .await
    }

    /// The discovery feed: the most recent posts, shuffled by `seed` (a fresh one when
    /// absent, returned in the response). A cursor carries its seed; a different `seed`
    /// alongside it is an error.
    pub async fn discover(
        &self,
        viewer: UserId,
        seed: Option<u64>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Rendered, EnrichError> {
        let limit = self.limit(limit)?;
        let position = cursor
            .map(|c| self.inner.cursors.decode_discover(c))
            .transpose()?;
        let seed = match (position, seed) {
            (Some(p), Some(s)) if p.seed != s => return Err(EnrichError::SeedMismatch),
            (Some(p), _) => p.seed,
            (None, Some(s)) => s,
            // A fresh seed: a page nobody asks for again, so none is kept.
            (None, None) => return self.build_discover(viewer, fresh_seed(), None, limit).await,
        };
        let feed = Feed::Discover(seed, position);
        self.finished(PageKey {
            viewer,
            feed,
            limit,
        })
        .await
    }

    /// A home or discovery page: served again from the finished pages while they hold
    /// it, else built (and kept when every input it read was fenced).
    async fn finished(&self, key: PageKey) -> Result<Rendered, EnrichError> {
        let pages = self.inner.pages.as_ref().filter(|_| match key.feed {
            Feed::Home(_) => self.inner.finished.home,
            Feed::Discover(..) => self.inner.finished.discover,
        });
        let Some(pages) = pages else {
            return self.build(key).await;
        };
        if let Some(hit) = pages.get(&key) {
            if hit.refresh {
                self.refresh_ahead(key);
            }
            return Ok(hit.rendered);
        }
        let (rendered, fences) = recording(self.build(key)).await;
        let rendered = rendered?;
        pages.offer(key, &rendered, fences);
        Ok(rendered)
    }

    /// Builds a finished page again in the background, outside any recording, and drops
    /// it: its reads make the inputs' caches refresh those near their soft TTL while the
    /// page is still served, so that it is built again from fresh inputs when it comes
    /// due (not from stale ones, which cannot be kept, until their refreshes land).
    fn refresh_ahead(&self, key: PageKey) {
        let engine = self.clone();
        tokio::spawn(async move {
            if let Err(e) = engine.build(key).await {
                tracing::debug!(error = %e, "a finished page's refresh ahead failed");
            }
        });
    }

    async fn build(&self, key: PageKey) -> Result<Rendered, EnrichError> {
        match key.feed {
            Feed::Home(after) => self.build_home(key.viewer, after, key.limit).await,
            Feed::Discover(seed, at) => self.build_discover(key.viewer, seed, at, key.limit).await,
        }
    }

    async fn build_home(
        &self,
        viewer: UserId,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Rendered, EnrichError> {
        let mut t = Timings::default();
        let (a, head) = self.assemble_home(viewer, after, limit, &mut t).await?;
        let rendered = self.present_feed(&a, self.keyset_next(&a), None, &mut t);
        self.warm_next(viewer.0, &a, head.as_deref(), limit);
        Ok(rendered)
    }

    async fn build_discover(
        &self,
        viewer: UserId,
        seed: u64,
        position: Option<DiscoverCursor>,
        limit: usize,
    ) -> Result<Rendered, EnrichError> {
        let mut t = Timings::default();
        let d = self
            .assemble_discover(viewer, seed, position, limit, &mut t)
            .await?;
        let next = d.next.map(|c| self.inner.cursors.encode_discover(&c));
        let rendered = self.present_feed(&d.page, next, Some(seed), &mut t);
        if let Some(next) = d.next {
            let ends = d.upcoming.first().zip(d.upcoming.last());
            let ends = ends.map(|(f, l)| [*f, *l]);
            self.warm((viewer.0, next.id), ends, || d.upcoming);
        }
        Ok(rendered)
    }

    /// Posts of `user`, newest first; not found when a block separates them from `viewer`.
    pub async fn user_posts(
        &self,
        viewer: Option<UserId>,
        user: UserId,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Rendered, EnrichError> {
        let limit = self.limit(limit)?;
        let after = self.keyset(cursor)?;
        let mut t = Timings::default();
        let (a, head) = self
            .assemble_user_posts(viewer, user, after, limit, &mut t)
            .await?;
        let rendered = self.present_feed(&a, self.keyset_next(&a), None, &mut t);
        self.warm_next(viewer.map_or(0, |v| v.0), &a, head.as_deref(), limit);
        Ok(rendered)
    }

    /// One post; not found when it does not exist or a block hides its author.
    pub async fn post(&self, viewer: Option<UserId>, id: PostId) -> Result<Rendered, EnrichError> {
        let mut t = Timings::default();
        let start = Instant::now();
        let s = &self.inner.sources;
        let (graph, item) = lookups!(self.concurrent(), self.graph(viewer), async {
            s.items
                .load_shared(&[id])
                .await
                .map_err(EnrichError::load(Part::Posts))
        });
        let graph = graph?;
        let item = item?
            .pop()
            .flatten()
            .filter(|i| !graph.hides(i.post.author_id))
            .ok_or(EnrichError::NotFound("post"))?;
        let filled = Filled {
            items: vec![item],
            next: None,
        };
        let authors = self.authors_of(&graph, &filled, &mut t).await?;
        t.hydrate = start.elapsed();
        let start = Instant::now();
        let item = &filled.items[0];
        let Some(author) = &authors.items[0] else {
            return Err(EnrichError::NotFound("post"));
        };
        let (pf, af) = self.fragments(item, author);
        let partial = item.missing.clone();
        let names: Vec<&str> = partial.iter().map(|p| p.as_str()).collect();
        let spliced = SplicedItem {
            post: &pf,
            author: &af,
            viewer: viewer_part(&graph, &authors, 0, item.post.author_id),
        };
        let body = splice_post(&spliced, &names);
        t.present = start.elapsed();
        Ok(Rendered {
            body: body.into(),
            timings: t,
            partial,
            ids: vec![id.0],
            next: None,
            seed: None,
            digest: None,
        })
    }

    /// A profile with the viewer's relationship to it; not found when it does not exist
    /// or a block separates it from `viewer`.
    pub async fn profile(
        &self,
        viewer: Option<UserId>,
        id: UserId,
    ) -> Result<Rendered, EnrichError> {
        let mut t = Timings::default();
        let start = Instant::now();
        let s = &self.inner.sources;
        let (graph, author) = lookups!(self.concurrent(), self.graph(viewer), async {
            s.authors
                .load_shared(&[id])
                .await
                .map_err(EnrichError::load(Part::Authors))
        });
        let (graph, author) = (graph?, author?.pop().flatten());
        let Some(author) = author else {
            return Err(EnrichError::NotFound("user"));
        };
        if graph.hides(id) {
            return Err(EnrichError::NotFound("user"));
        }
        let followed_by = match viewer {
            Some(v) => self.followed_by(&graph, v, &[id]).await?[0],
            None => false,
        };
        t.hydrate = start.elapsed();
        let start = Instant::now();
        let viewer_part = viewer.map(|_| ViewerWire {
            follows_author: graph.follows(id),
            followed_by_author: followed_by,
        });
        let body = encode(&ProfileWire::new(&author.user, &author.flags, viewer_part));
        t.present = start.elapsed();
        Ok(Rendered {
            body: body.into(),
            timings: t,
            partial: Vec::new(),
            ids: vec![id.0],
            next: None,
            seed: None,
            digest: None,
        })
    }

    /// Orders of `customer`, newest first, optionally of one status; only the customer
    /// may list them.
    pub async fn customer_orders(
        &self,
        viewer: UserId,
        customer: UserId,
        status: Option<OrderStatus>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Rendered, EnrichError> {
        if viewer != customer {
            return Err(EnrichError::Forbidden("order list"));
        }
        let limit = self.limit(limit)?;
        let after = self.keyset(cursor)?;
        let mut t = Timings::default();
        let start = Instant::now();
        let page = self
            .inner
            .sources
            .skeletons
            .customer_orders(customer, status, after, limit as u32)
            .await
            .map_err(EnrichError::load(Part::Skeleton))?;
        t.skeleton = start.elapsed();
        let start = Instant::now();
        let ids: Vec<OrderId> = page.items.iter().map(|r| r.id).collect();
        let (orders, items) = self.load_orders(&ids).await?;
        t.hydrate = start.elapsed();
        let start = Instant::now();
        let wires: Vec<OrderWire> = ids
            .iter()
            .filter_map(|id| {
                let order = orders.get(id)?;
                Some(OrderWire::new(
                    order,
                    items.get(id).map_or(&[][..], Vec::as_slice),
                ))
            })
            .collect();
        let shown: Vec<i64> = wires.iter().map(|w| w.id).collect();
        let next = page.next.map(|c| self.inner.cursors.encode(&c));
        let body = encode(&OrdersPageWire {
            items: wires,
            next_page: next.clone(),
        });
        t.present = start.elapsed();
        Ok(Rendered {
            body: body.into(),
            timings: t,
            partial: Vec::new(),
            ids: shown,
            next,
            seed: None,
            digest: None,
        })
    }

    /// One order with its items; only its customer may read it.
    pub async fn order(&self, viewer: UserId, id: OrderId) -> Result<Rendered, EnrichError> {
        let mut t = Timings::default();
        let start = Instant::now();
        let s = &self.inner.sources;
        // The order first: someone else's is "not found" like a missing one (ids are
        // sequential; a different answer would tell how many orders there are), and its
        // items are loaded only for its customer, so nobody can cache the absence of the
        // items of an order that does not exist yet.
        let order = s
            .orders
            .load_many(&[id])
            .await
            .map_err(EnrichError::load(Part::Orders))?
            .remove(&id)
            .filter(|o| o.customer_id == viewer)
            .ok_or(EnrichError::NotFound("order"))?;
        let items = s
            .order_items
            .load_many(&[id])
            .await
            .map_err(EnrichError::load(Part::OrderItems))?
            .remove(&id)
            .unwrap_or_default();
        t.hydrate = start.elapsed();
        let start = Instant::now();
        let body = encode(&OrderWire::new(&order, &items));
        t.present = start.elapsed();
        Ok(Rendered {
            body: body.into(),
            timings: t,
            partial: Vec::new(),
            ids: vec![id.0],
            next: None,
            seed: None,
            digest: None,
        })
    }

    pub(crate) fn concurrent(&self) -> bool {
        self.inner.config.concurrent_lookups
    }

    fn limit(&self, limit: u32) -> Result<usize, EnrichError> {
        let max = self.inner.config.max_limit;
        if (1..=max).contains(&limit) {
            Ok(limit as usize)
        } else {
            Err(EnrichError::Limit { max })
        }
    }

    fn keyset(&self, cursor: Option<&str>) -> Result<Option<Cursor>, EnrichError> {
        Ok(cursor.map(|c| self.inner.cursors.decode(c)).transpose()?)
    }

    async fn load_orders(
        &self,
        ids: &[OrderId],
    ) -> Result<
        (
            HashMap<OrderId, quiver_model::Order>,
            HashMap<OrderId, Vec<quiver_model::OrderItem>>,
        ),
        EnrichError,
    > {
        let s = &self.inner.sources;
        let (orders, items) = lookups!(
            self.concurrent(),
            async {
                s.orders
                    .load_many(ids)
                    .await
                    .map_err(EnrichError::load(Part::Orders))
            },
            async {
                s.order_items
                    .load_many(ids)
                    .await
                    .map_err(EnrichError::load(Part::OrderItems))
            },
        );
        Ok((orders?, items?))
    }

    /// The token of the keyset page after `a`.
    fn keyset_next(&self, a: &Assembled) -> Option<String> {
        a.filled
            .next
            .map(|r| self.inner.cursors.encode(&Cursor::after(&r)))
    }
}
