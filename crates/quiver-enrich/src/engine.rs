//! The engine: every response as skeleton → hydrate → present. The skeleton is an ordered
//! list of ids (a home page is cut from the viewer's cached head when it can be);
//! hydration loads ready items and authors for all of them in one batch each, by
//! position, as shared values; presentation splices their encoded fragments with the
//! per-viewer part. Blocked content is removed before presentation, and a page left
//! short by filtering is refilled from the next skeleton page a bounded number of times.

use crate::discover::{fresh_seed, rank};
use crate::error::{EnrichError, Part};
use crate::items::{AuthorItem, FeedItem, encode_author, encode_post};
use crate::prefetch::{PrefetchPool, PrefetchStats};
use crate::source::Sources;
use futures::future::BoxFuture;
use quiver_codec::encode::encode;
use quiver_codec::fragment::{AuthorFragment, PostFragment, SplicedItem, splice_page, splice_post};
use quiver_codec::wire::{OrderWire, OrdersPageWire, ProfileWire, ViewerWire};
use quiver_model::{
    Cursor, CursorCodec, DiscoverCursor, DynLoader, FeedHead, FollowEdge, HasErrorCode, LoadError,
    OrderId, OrderStatus, Page, PostId, PostRef, UserId, ViewerGraph, Window,
};
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
    /// The JSON body.
    pub body: Vec<u8>,
    pub timings: Timings,
    /// Optional parts that could not be loaded (also in the body of pages and posts).
    pub partial: Vec<Part>,
    /// Ids of what the body shows, in order: posts, orders, or the one user.
    pub ids: Vec<i64>,
    /// The token of the next page, if there is one.
    pub next: Option<String>,
    /// The discovery seed, on discovery pages.
    pub seed: Option<u64>,
}

/// The feed engine. Cheap to clone; clones share the prefetch pool.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    sources: Sources,
    config: EngineConfig,
    cursors: CursorCodec,
    prefetch: Option<PrefetchPool>,
    /// Next pages being warmed, by viewer and the cursor that leads to them, so a page
    /// requested again before its warming finished is not warmed twice. An entry lives
    /// from submission to the end of its job (or its drop), so the set is bounded by the
    /// pool's queue and workers.
    warming: Mutex<HashSet<(i64, i64)>>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// A slice of a skeleton: refs in order, and whether more follow.
struct Chunk {
    refs: Vec<PostRef>,
    more: bool,
}

impl From<Page<PostRef>> for Chunk {
    fn from(p: Page<PostRef>) -> Self {
        Self {
            more: p.next.is_some(),
            refs: p.items,
        }
    }
}

/// A filled page: the items to show and where the next page starts (after this ref).
struct Filled {
    items: Vec<Arc<FeedItem>>,
    next: Option<PostRef>,
}

/// The distinct authors of a page, each with whether they follow the viewer, and for
/// each shown item the index of its author.
struct Authors {
    items: Vec<Option<Arc<AuthorItem>>>,
    followed_by: Vec<bool>,
    of_item: Vec<usize>,
}

/// What a feed page needs before it is presented.
struct Assembled {
    graph: Arc<ViewerGraph>,
    filled: Filled,
    authors: Authors,
}

/// Awaits independent lookups concurrently, or one after another when the engine is
/// configured to (the ablation the benches measure). Yields every result, like `join!`.
macro_rules! lookups {
    ($concurrent:expr, $($f:expr),+ $(,)?) => {
        if $concurrent {
            tokio::join!($($f),+)
        } else {
            ($($f.await),+ ,)
        }
    };
}

type MoreFn<'a> = Box<dyn FnMut(PostRef) -> BoxFuture<'a, Result<Chunk, EnrichError>> + Send + 'a>;

impl Engine {
    /// An engine over `sources`, signing cursors with `cursors`, warming next pages on
    /// `prefetch` when given.
    pub fn new(
        sources: Sources,
        cursors: CursorCodec,
        config: EngineConfig,
        prefetch: Option<PrefetchPool>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                sources,
                config,
                cursors,
                prefetch,
                warming: Mutex::new(HashSet::new()),
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
        let after = self.keyset(cursor)?;
        let mut t = Timings::default();
        let (a, head) = self.assemble_home(viewer, after, limit, &mut t).await?;
        let rendered = self.present_feed(&a, self.keyset_next(&a), None, &mut t);
        self.warm_next(viewer.0, &a, head.as_deref(), limit);
        Ok(rendered)
    }

    /// Warms the page after `a` when `head` holds it: past the head its skeleton is a
    /// query, and warming it would cost what it saves.
    fn warm_next(&self, viewer: i64, a: &Assembled, head: Option<&FeedHead>, limit: usize) {
        if let (Some(next), Some(head)) = (a.filled.next, head)
            && let Some(refs) = head.refs(Some(Cursor::after(&next)), limit as u32)
        {
            let ids = refs.iter().map(|r| r.id).collect();
            self.warm((viewer, next.id.0), ids);
        }
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
            (None, None) => fresh_seed(),
        };
        let mut t = Timings::default();
        let d = self
            .assemble_discover(viewer, seed, position, limit, &mut t)
            .await?;
        let next = d.next.map(|c| self.inner.cursors.encode_discover(&c));
        let rendered = self.present_feed(&d.page, next, Some(seed), &mut t);
        if let Some(next) = d.next {
            self.warm((viewer.0, next.id), d.upcoming);
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
            body,
            timings: t,
            partial,
            ids: vec![id.0],
            next: None,
            seed: None,
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
            body,
            timings: t,
            partial: Vec::new(),
            ids: vec![id.0],
            next: None,
            seed: None,
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
            body,
            timings: t,
            partial: Vec::new(),
            ids: shown,
            next,
            seed: None,
        })
    }

    /// One order with its items; only its customer may read it.
    pub async fn order(&self, viewer: UserId, id: OrderId) -> Result<Rendered, EnrichError> {
        let mut t = Timings::default();
        let start = Instant::now();
        let (mut orders, mut items) = self.load_orders(&[id]).await?;
        t.hydrate = start.elapsed();
        let order = orders.remove(&id).ok_or(EnrichError::NotFound("order"))?;
        if order.customer_id != viewer {
            return Err(EnrichError::Forbidden("order"));
        }
        let start = Instant::now();
        let body = encode(&OrderWire::new(
            &order,
            &items.remove(&id).unwrap_or_default(),
        ));
        t.present = start.elapsed();
        Ok(Rendered {
            body,
            timings: t,
            partial: Vec::new(),
            ids: vec![id.0],
            next: None,
            seed: None,
        })
    }

    fn concurrent(&self) -> bool {
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

    /// Warms the items and authors of a next page in the background, unless they are
    /// all fresh already or the same page is being warmed. The job only loads (what the
    /// caches lack); it never renders.
    fn warm(&self, key: (i64, i64), ids: Vec<PostId>) {
        let Some(pool) = &self.inner.prefetch else {
            return;
        };
        let s = &self.inner.sources;
        // A page's items are loaded together (by the page, or by a warming), so its first
        // and last stand for the rest: two peeks instead of one per item on every request.
        // A page warm but for a few items is not warmed; it loads those in line.
        let probe = match ids.as_slice() {
            [] => {
                pool.skipped_warm();
                return;
            }
            [one] => [*one, *one],
            [first, .., last] => [*first, *last],
        };
        if s.items.fresh(&probe) {
            pool.skipped_warm();
            return;
        }
        if !self.inner.warming.lock().expect("warming lock").insert(key) {
            pool.skipped_warm();
            return;
        }
        let engine = self.clone();
        let job: BoxFuture<'static, Result<(), EnrichError>> = Box::pin(async move {
            let _done = Warming(&engine.inner.warming, key);
            let s = &engine.inner.sources;
            let items = s
                .items
                .load_shared(&ids)
                .await
                .map_err(EnrichError::load(Part::Posts))?;
            let mut authors: Vec<UserId> = Vec::with_capacity(items.len());
            for item in items.iter().flatten() {
                if !authors.contains(&item.post.author_id) {
                    authors.push(item.post.author_id);
                }
            }
            if !s.authors.fresh(&authors) {
                s.authors
                    .load_shared(&authors)
                    .await
                    .map_err(EnrichError::load(Part::Authors))?;
            }
            Ok(())
        });
        let submitted = pool.submit(Box::pin(async move {
            job.await
                .map_err(|e| LoadError::new(e.code(), e.to_string()))
        }));
        if !submitted {
            self.inner
                .warming
                .lock()
                .expect("warming lock")
                .remove(&key);
        }
    }

    /// The viewer's graph, shared; anonymous viewers have an empty one.
    async fn graph(&self, viewer: Option<UserId>) -> Result<Arc<ViewerGraph>, EnrichError> {
        let Some(v) = viewer else {
            return Ok(Arc::new(ViewerGraph::default()));
        };
        let graph = self
            .inner
            .sources
            .graphs
            .load_shared(&[v])
            .await
            .map_err(EnrichError::load(Part::Graph))?
            .pop()
            .flatten();
        Ok(match graph {
            Some(g) if g.viewer == Some(v) => g,
            Some(g) => Arc::new(ViewerGraph {
                viewer: Some(v),
                ..ViewerGraph::clone(&g)
            }),
            None => Arc::new(ViewerGraph {
                viewer: Some(v),
                ..ViewerGraph::default()
            }),
        })
    }

    /// A page's skeleton: cut from the cached head of `feed` when it holds the page,
    /// else read from the skeleton source. Returns the head too, when there is one.
    async fn chunk(
        &self,
        feed: Feed,
        key: UserId,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<(Chunk, Option<Arc<FeedHead>>), EnrichError> {
        let s = &self.inner.sources;
        let heads: Option<&DynLoader<UserId, FeedHead>> = match feed {
            Feed::Home => s.heads.as_ref(),
            Feed::Author => s.author_heads.as_ref(),
        };
        let head = match heads {
            Some(heads) => heads
                .load_shared(&[key])
                .await
                .map_err(EnrichError::load(Part::Skeleton))?
                .pop()
                .flatten(),
            None => None,
        };
        if let Some(head) = &head
            && let Some(page) = head.page(after, limit as u32)
        {
            return Ok((page.into(), Some(head.clone())));
        }
        let page = match feed {
            Feed::Home => s.skeletons.home(key, after, limit as u32).await,
            Feed::Author => s.skeletons.user_posts(key, after, limit as u32).await,
        }
        .map_err(EnrichError::load(Part::Skeleton))?;
        Ok((page.into(), head))
    }

    async fn assemble_home(
        &self,
        viewer: UserId,
        after: Option<Cursor>,
        limit: usize,
        t: &mut Timings,
    ) -> Result<(Assembled, Option<Arc<FeedHead>>), EnrichError> {
        let start = Instant::now();
        let (graph, first) = lookups!(
            self.concurrent(),
            self.graph(Some(viewer)),
            self.chunk(Feed::Home, viewer, after, limit)
        );
        let (graph, (first, head)) = (graph?, first?);
        t.skeleton += start.elapsed();
        let more = self.keyset_more(Feed::Home, viewer, limit);
        Ok((self.assemble(graph, first, limit, more, t).await?, head))
    }

    /// The next chunks of `feed` after a ref, for refills.
    fn keyset_more(&self, feed: Feed, key: UserId, limit: usize) -> MoreFn<'_> {
        Box::new(move |last| {
            Box::pin(async move {
                self.chunk(feed, key, Some(Cursor::after(&last)), limit)
                    .await
                    .map(|(chunk, _)| chunk)
            })
        })
    }

    /// Hydrates a page from its first chunk (refilling through `more`) and its authors.
    async fn assemble(
        &self,
        graph: Arc<ViewerGraph>,
        first: Chunk,
        limit: usize,
        more: MoreFn<'_>,
        t: &mut Timings,
    ) -> Result<Assembled, EnrichError> {
        let filled = self.fill(&graph, first, limit, more, t).await?;
        let authors = self.authors_of(&graph, &filled, t).await?;
        Ok(Assembled {
            graph,
            filled,
            authors,
        })
    }

    async fn assemble_user_posts(
        &self,
        viewer: Option<UserId>,
        user: UserId,
        after: Option<Cursor>,
        limit: usize,
        t: &mut Timings,
    ) -> Result<(Assembled, Option<Arc<FeedHead>>), EnrichError> {
        let s = &self.inner.sources;
        let start = Instant::now();
        let (graph, exists, first) = lookups!(
            self.concurrent(),
            self.graph(viewer),
            async {
                s.authors
                    .load_shared(&[user])
                    .await
                    .map_err(EnrichError::load(Part::Authors))
            },
            self.chunk(Feed::Author, user, after, limit),
        );
        let (graph, exists, (first, head)) = (graph?, exists?, first?);
        t.skeleton += start.elapsed();
        if exists.iter().all(Option::is_none) || graph.hides(user) {
            return Err(EnrichError::NotFound("user"));
        }
        let more = self.keyset_more(Feed::Author, user, limit);
        Ok((self.assemble(graph, first, limit, more, t).await?, head))
    }

    async fn assemble_discover(
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

    /// Hydrates `first` and keeps the items the viewer may see; while the page is short
    /// and the skeleton has more, reads up to `refills` more chunks. The next page starts
    /// after the last item shown when the page overflowed, else after the last ref read.
    async fn fill(
        &self,
        graph: &ViewerGraph,
        first: Chunk,
        limit: usize,
        mut more: MoreFn<'_>,
        t: &mut Timings,
    ) -> Result<Filled, EnrichError> {
        let mut items: Vec<Arc<FeedItem>> = Vec::with_capacity(limit);
        let mut shown: Vec<PostRef> = Vec::with_capacity(limit);
        let mut chunk = first;
        let mut refills = 0;
        loop {
            let start = Instant::now();
            let ids: Vec<PostId> = chunk.refs.iter().map(|r| r.id).collect();
            let found = self
                .inner
                .sources
                .items
                .load_shared(&ids)
                .await
                .map_err(EnrichError::load(Part::Posts))?;
            t.hydrate += start.elapsed();
            for (r, item) in chunk.refs.iter().zip(found) {
                if let Some(item) = item
                    && !graph.hides(item.post.author_id)
                {
                    items.push(item);
                    shown.push(*r);
                }
            }
            let last = chunk.refs.last().copied();
            if shown.len() > limit {
                items.truncate(limit);
                shown.truncate(limit);
                let next = shown.last().copied();
                return Ok(Filled { items, next });
            }
            let next = last.filter(|_| chunk.more);
            if shown.len() == limit || refills == self.inner.config.refills {
                return Ok(Filled { items, next });
            }
            let Some(last) = next else {
                return Ok(Filled { items, next });
            };
            refills += 1;
            let start = Instant::now();
            chunk = more(last).await?;
            t.skeleton += start.elapsed();
        }
    }

    /// The authors of the shown items, in one batch, and whether each follows the viewer:
    /// from the viewer graph for the viewer's followees (every author of a home page), by
    /// one batch of follow edges for the others.
    async fn authors_of(
        &self,
        graph: &ViewerGraph,
        filled: &Filled,
        t: &mut Timings,
    ) -> Result<Authors, EnrichError> {
        let start = Instant::now();
        let mut distinct: Vec<UserId> = Vec::with_capacity(filled.items.len());
        let of_item: Vec<usize> = filled
            .items
            .iter()
            .map(|i| {
                let a = i.post.author_id;
                distinct.iter().position(|d| *d == a).unwrap_or_else(|| {
                    distinct.push(a);
                    distinct.len() - 1
                })
            })
            .collect();
        let s = &self.inner.sources;
        let (items, followed_by) = lookups!(
            self.concurrent(),
            async {
                s.authors
                    .load_shared(&distinct)
                    .await
                    .map_err(EnrichError::load(Part::Authors))
            },
            async {
                match graph.viewer {
                    Some(v) => self.followed_by(graph, v, &distinct).await,
                    None => Ok(vec![false; distinct.len()]),
                }
            },
        );
        t.hydrate += start.elapsed();
        Ok(Authors {
            items: items?,
            followed_by: followed_by?,
            of_item,
        })
    }

    /// Whether each of `authors` follows `viewer`: from the graph's mutuals for the
    /// viewer's followees, from one batch of follow edges for the rest (never for the
    /// viewer themself).
    async fn followed_by(
        &self,
        graph: &ViewerGraph,
        viewer: UserId,
        authors: &[UserId],
    ) -> Result<Vec<bool>, EnrichError> {
        let mut answers: Vec<bool> = Vec::with_capacity(authors.len());
        let mut ask: Vec<FollowEdge> = Vec::new();
        let mut asked: Vec<usize> = Vec::new();
        for (i, &a) in authors.iter().enumerate() {
            match graph.followed_by(a) {
                Some(known) => answers.push(known),
                None => {
                    answers.push(false);
                    if a != viewer {
                        ask.push(FollowEdge {
                            follower: a,
                            followee: viewer,
                        });
                        asked.push(i);
                    }
                }
            }
        }
        if !ask.is_empty() {
            let found = self
                .inner
                .sources
                .follows
                .load_shared(&ask)
                .await
                .map_err(EnrichError::load(Part::Relationships))?;
            for (i, edge) in asked.into_iter().zip(found) {
                answers[i] = edge.is_some();
            }
        }
        Ok(answers)
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

    /// The fragments of an item and its author: the stored ones, or freshly encoded when
    /// reuse is off (the ablation).
    fn fragments(&self, item: &FeedItem, author: &AuthorItem) -> (PostFragment, AuthorFragment) {
        if self.inner.config.reuse_fragments {
            (item.fragment.clone(), author.fragment.clone())
        } else {
            (
                encode_post(&item.post, &item.media, &item.tags),
                encode_author(&author.user, &author.flags),
            )
        }
    }

    /// A feed page: fragments spliced with each item's viewer part (or, for the
    /// serializer ablation, the whole page through serde_json: the same bytes).
    fn present_feed(
        &self,
        a: &Assembled,
        next: Option<String>,
        seed: Option<u64>,
        t: &mut Timings,
    ) -> Rendered {
        let start = Instant::now();
        // An author that vanished between the post and its profile is not shown.
        let shown: Vec<(&FeedItem, &AuthorItem, usize)> = a
            .filled
            .items
            .iter()
            .zip(&a.authors.of_item)
            .filter_map(|(item, &at)| Some((&**item, a.authors.items[at].as_deref()?, at)))
            .collect();
        let mut partial: Vec<Part> = Vec::new();
        for (item, _, _) in &shown {
            for p in &item.missing {
                if !partial.contains(p) {
                    partial.push(*p);
                }
            }
        }
        partial.sort_unstable();
        let names: Vec<&str> = partial.iter().map(|p| p.as_str()).collect();
        let viewer =
            |item: &FeedItem, at: usize| viewer_part(&a.graph, &a.authors, at, item.post.author_id);
        let body = if self.inner.config.serde_json_pages {
            serde_json_page(&shown, &viewer, next.clone(), seed, &names)
        } else if self.inner.config.reuse_fragments {
            let items: Vec<SplicedItem<'_>> = shown
                .iter()
                .map(|(item, author, at)| SplicedItem {
                    post: &item.fragment,
                    author: &author.fragment,
                    viewer: viewer(item, *at),
                })
                .collect();
            splice_page(&items, next.as_deref(), seed, &names)
        } else {
            let fragments: Vec<(PostFragment, AuthorFragment)> = shown
                .iter()
                .map(|(item, author, _)| self.fragments(item, author))
                .collect();
            let items: Vec<SplicedItem<'_>> = shown
                .iter()
                .zip(&fragments)
                .map(|((item, _, at), (post, author))| SplicedItem {
                    post,
                    author,
                    viewer: viewer(item, *at),
                })
                .collect();
            splice_page(&items, next.as_deref(), seed, &names)
        };
        t.present += start.elapsed();
        Rendered {
            body,
            timings: *t,
            partial,
            ids: shown.iter().map(|(item, _, _)| item.post.id.0).collect(),
            next,
            seed,
        }
    }
}

/// The feeds whose pages are cut from cached heads.
#[derive(Clone, Copy)]
enum Feed {
    /// A viewer's home feed.
    Home,
    /// An author's posts.
    Author,
}

/// Ends a warming entry when its job finishes or is dropped.
struct Warming<'a>(&'a Mutex<HashSet<(i64, i64)>>, (i64, i64));

impl Drop for Warming<'_> {
    fn drop(&mut self) {
        self.0.lock().expect("warming lock").remove(&self.1);
    }
}

/// A discovery page before presentation, with its next position and the ids that page
/// will start from.
struct Discovered {
    page: Assembled,
    next: Option<DiscoverCursor>,
    upcoming: Vec<PostId>,
}

/// A feed page built as wire values and encoded by serde_json: the "before" of the
/// serializer ablation.
fn serde_json_page(
    shown: &[(&FeedItem, &AuthorItem, usize)],
    viewer: &dyn Fn(&FeedItem, usize) -> Option<ViewerWire>,
    next_page: Option<String>,
    seed: Option<u64>,
    partial: &[&str],
) -> Vec<u8> {
    use quiver_codec::wire::{AuthorWire, FeedItemWire, FeedPageWire, PostFieldsWire};
    let items = shown
        .iter()
        .map(|(item, author, at)| {
            let f = PostFieldsWire::new(&item.post, &item.media, &item.tags);
            FeedItemWire {
                id: f.id,
                kind: f.kind,
                body: f.body,
                created_at: f.created_at,
                media: f.media,
                tags: f.tags,
                wish: f.wish,
                author: AuthorWire::new(&author.user, &author.flags),
                viewer: viewer(item, *at),
            }
        })
        .collect();
    let page = FeedPageWire {
        items,
        next_page,
        seed,
        partial: partial.iter().map(|p| (*p).to_owned()).collect(),
    };
    serde_json::to_vec(&page).expect("wire values serialize")
}

/// The per-viewer part of an item by `author` (the page's author number `at`): `None`
/// for anonymous viewers.
fn viewer_part(
    graph: &ViewerGraph,
    authors: &Authors,
    at: usize,
    author: UserId,
) -> Option<ViewerWire> {
    graph.viewer.map(|_| ViewerWire {
        follows_author: graph.follows(author),
        followed_by_author: authors.followed_by[at],
    })
}
