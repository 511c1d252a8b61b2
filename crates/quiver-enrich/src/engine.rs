//! The engine: every response as skeleton → hydrate → present. The skeleton is an ordered
//! list of ids; hydration loads each kind of entity for all of them in one batch, the
//! independent batches concurrently; presentation splices cached fragments with the
//! per-viewer part. Blocked content is removed before presentation, and a page left short
//! by filtering is refilled from the next skeleton page a bounded number of times.

use crate::discover::{fresh_seed, rank};
use crate::error::{EnrichError, Part};
use crate::prefetch::{PrefetchPool, PrefetchStats};
use crate::present::{FragmentStats, Fragments, encode_author, encode_post};
use crate::source::Sources;
use futures::future::BoxFuture;
use quiver_codec::encode::encode;
use quiver_codec::fragment::{AuthorFragment, PostFragment, SplicedItem, splice_page, splice_post};
use quiver_codec::wire::{OrderWire, OrdersPageWire, ProfileWire, ViewerWire};
use quiver_model::{
    Cursor, CursorCodec, DiscoverCursor, FollowEdge, HasErrorCode, LoadError, Media, OrderId,
    OrderStatus, Page, Post, PostId, PostRef, User, UserFlags, UserId, ViewerGraph,
};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
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
    /// Posts (and as many authors) whose encoded fragments are kept; 0 encodes every
    /// item every time.
    pub fragment_cache: usize,
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
            fragment_cache: 100_000,
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

/// The feed engine. Cheap to clone; clones share caches and the prefetch pool.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    sources: Sources,
    config: EngineConfig,
    cursors: CursorCodec,
    fragments: Option<Fragments>,
    prefetch: Option<PrefetchPool>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Posts kept for a page, with what was loaded alongside them.
#[derive(Default)]
struct Hydrated {
    posts: Vec<Post>,
    media: HashMap<PostId, Vec<Media>>,
    tags: HashMap<PostId, Vec<String>>,
    partial: BTreeSet<Part>,
}

/// The authors of a page and whether each follows the viewer.
struct Authors {
    users: HashMap<UserId, User>,
    flags: HashMap<UserId, UserFlags>,
    follow_viewer: HashSet<UserId>,
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

/// A filled page: the posts to show and where the next page starts (after this ref).
struct Filled {
    hydrated: Hydrated,
    next: Option<PostRef>,
}

/// What a feed page needs before it is presented.
struct Assembled {
    graph: ViewerGraph,
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
        let fragments = (config.fragment_cache > 0).then(|| Fragments::new(config.fragment_cache));
        Self {
            inner: Arc::new(Inner {
                sources,
                config,
                cursors,
                fragments,
                prefetch,
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

    /// Counters of the fragment cache (zero when it is disabled).
    pub fn fragment_stats(&self) -> FragmentStats {
        self.inner
            .fragments
            .as_ref()
            .map(Fragments::stats)
            .unwrap_or_default()
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
        let a = self.assemble_home(viewer, after, limit, &mut t).await?;
        let rendered = self.present_feed(&a, self.keyset_next(&a), None, &mut t);
        if let Some(next) = a.filled.next {
            let (engine, after) = (self.clone(), Cursor::after(&next));
            self.prefetch(Box::pin(async move {
                let mut t = Timings::default();
                let a = engine
                    .assemble_home(viewer, Some(after), limit, &mut t)
                    .await?;
                engine.present_feed(&a, None, None, &mut t);
                Ok(())
            }));
        }
        Ok(rendered)
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
        let a = self
            .assemble_discover(viewer, seed, position, limit, &mut t)
            .await?;
        let next = a.next.map(|c| self.inner.cursors.encode_discover(&c));
        let rendered = self.present_feed(&a.page, next, Some(seed), &mut t);
        if let Some(next) = a.next {
            let engine = self.clone();
            self.prefetch(Box::pin(async move {
                let mut t = Timings::default();
                let a = engine
                    .assemble_discover(viewer, seed, Some(next), limit, &mut t)
                    .await?;
                engine.present_feed(&a.page, None, Some(seed), &mut t);
                Ok(())
            }));
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
        let a = self
            .assemble_user_posts(viewer, user, after, limit, &mut t)
            .await?;
        let rendered = self.present_feed(&a, self.keyset_next(&a), None, &mut t);
        if let Some(next) = a.filled.next {
            let (engine, after) = (self.clone(), Cursor::after(&next));
            self.prefetch(Box::pin(async move {
                let mut t = Timings::default();
                let a = engine
                    .assemble_user_posts(viewer, user, Some(after), limit, &mut t)
                    .await?;
                engine.present_feed(&a, None, None, &mut t);
                Ok(())
            }));
        }
        Ok(rendered)
    }

    /// One post; not found when it does not exist or a block hides its author.
    pub async fn post(&self, viewer: Option<UserId>, id: PostId) -> Result<Rendered, EnrichError> {
        let mut t = Timings::default();
        let start = Instant::now();
        let mut h = Hydrated::default();
        let ids = [id];
        let (graph, posts) = lookups!(
            self.concurrent(),
            self.graph(viewer),
            self.load_posts(&ids, &mut h)
        );
        let (graph, mut posts) = (graph?, posts?);
        let post = posts
            .remove(&id)
            .filter(|p| !graph.hides(p.author_id))
            .ok_or(EnrichError::NotFound("post"))?;
        let authors = self.load_authors(viewer, &[post.author_id]).await?;
        t.hydrate = start.elapsed();
        let start = Instant::now();
        let (Some(user), Some(flags)) = (
            authors.users.get(&post.author_id),
            authors.flags.get(&post.author_id),
        ) else {
            return Err(EnrichError::NotFound("post"));
        };
        let complete = h.partial.is_empty();
        let pf = self.post_fragment(&post, &h, complete);
        let af = self.author_fragment(user, flags);
        let partial: Vec<Part> = h.partial.into_iter().collect();
        let names: Vec<&str> = partial.iter().map(|p| p.as_str()).collect();
        let item = SplicedItem {
            post: &pf,
            author: &af,
            viewer: viewer_part(&graph, &authors, post.author_id),
        };
        let body = splice_post(&item, &names);
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
        let edge = viewer.map(|v| FollowEdge {
            follower: id,
            followee: v,
        });
        let (graph, user, flags, follows) = lookups!(
            self.concurrent(),
            self.graph(viewer),
            async {
                s.users
                    .load_one(&id)
                    .await
                    .map_err(EnrichError::load(Part::Authors))
            },
            async {
                s.flags
                    .load_one(&id)
                    .await
                    .map_err(EnrichError::load(Part::Flags))
            },
            async {
                match edge {
                    Some(e) => s
                        .follows
                        .load_one(&e)
                        .await
                        .map(|f| f.is_some())
                        .map_err(EnrichError::load(Part::Relationships)),
                    None => Ok(false),
                }
            },
        );
        let (graph, user, flags, follows) = (graph?, user?, flags?, follows?);
        t.hydrate = start.elapsed();
        let (Some(user), Some(flags)) = (user, flags) else {
            return Err(EnrichError::NotFound("user"));
        };
        if graph.hides(id) {
            return Err(EnrichError::NotFound("user"));
        }
        let start = Instant::now();
        let viewer_part = viewer.map(|_| ViewerWire {
            follows_author: graph.follows(id),
            followed_by_author: follows,
        });
        let body = encode(&ProfileWire::new(&user, &flags, viewer_part));
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

    fn prefetch(&self, job: BoxFuture<'static, Result<(), EnrichError>>) {
        if let Some(pool) = &self.inner.prefetch {
            pool.submit(Box::pin(async move {
                job.await
                    .map_err(|e| LoadError::new(e.code(), e.to_string()))
            }));
        }
    }

    /// The viewer's graph; anonymous viewers have an empty one.
    async fn graph(&self, viewer: Option<UserId>) -> Result<ViewerGraph, EnrichError> {
        let Some(v) = viewer else {
            return Ok(ViewerGraph::default());
        };
        let graph = self
            .inner
            .sources
            .graphs
            .load_one(&v)
            .await
            .map_err(EnrichError::load(Part::Graph))?;
        let mut graph = graph.unwrap_or_default();
        graph.viewer = Some(v);
        Ok(graph)
    }

    async fn assemble_home(
        &self,
        viewer: UserId,
        after: Option<Cursor>,
        limit: usize,
        t: &mut Timings,
    ) -> Result<Assembled, EnrichError> {
        let skeletons = &self.inner.sources.skeletons;
        let start = Instant::now();
        let (graph, first) = lookups!(self.concurrent(), self.graph(Some(viewer)), async {
            skeletons
                .home(viewer, after, limit as u32)
                .await
                .map_err(EnrichError::load(Part::Skeleton))
        });
        let (graph, first) = (graph?, first?);
        t.skeleton += start.elapsed();
        let more: MoreFn<'_> = Box::new(move |last| {
            Box::pin(async move {
                skeletons
                    .home(viewer, Some(Cursor::after(&last)), limit as u32)
                    .await
                    .map(Chunk::from)
                    .map_err(EnrichError::load(Part::Skeleton))
            })
        });
        let filled = self.fill(&graph, first.into(), limit, more, t).await?;
        let authors = self.authors_of(Some(viewer), &filled, t).await?;
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
    ) -> Result<Assembled, EnrichError> {
        let s = &self.inner.sources;
        let skeletons = &s.skeletons;
        let start = Instant::now();
        let (graph, exists, first) = lookups!(
            self.concurrent(),
            self.graph(viewer),
            async {
                s.users
                    .load_one(&user)
                    .await
                    .map_err(EnrichError::load(Part::Authors))
            },
            async {
                skeletons
                    .user_posts(user, after, limit as u32)
                    .await
                    .map_err(EnrichError::load(Part::Skeleton))
            },
        );
        let (graph, exists, first) = (graph?, exists?, first?);
        t.skeleton += start.elapsed();
        if exists.is_none() || graph.hides(user) {
            return Err(EnrichError::NotFound("user"));
        }
        let more: MoreFn<'_> = Box::new(move |last| {
            Box::pin(async move {
                skeletons
                    .user_posts(user, Some(Cursor::after(&last)), limit as u32)
                    .await
                    .map(Chunk::from)
                    .map_err(EnrichError::load(Part::Skeleton))
            })
        });
        let filled = self.fill(&graph, first.into(), limit, more, t).await?;
        let authors = self.authors_of(viewer, &filled, t).await?;
        Ok(Assembled {
            graph,
            filled,
            authors,
        })
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
        let (graph, window) = lookups!(self.concurrent(), self.graph(Some(viewer)), async {
            s.skeletons
                .recent(
                    position.map(|p| p.anchor),
                    self.inner.config.discovery_window,
                )
                .await
                .map_err(EnrichError::load(Part::Skeleton))
        });
        let (graph, window) = (graph?, window?);
        // The window is anchored at its newest post on the first page and keeps that
        // anchor in every cursor, so later pages shuffle the same posts.
        let anchor = match position {
            Some(p) => p.anchor,
            None => match window.items.first() {
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
            .items
            .iter()
            .map(|r| (rank(seed, r.id), *r))
            .filter(|(k, r)| position.is_none_or(|p| (*k, r.id.0) > (p.rank, p.id)))
            .collect();
        ranked.sort_unstable_by_key(|(k, r)| (*k, r.id.0));
        let refs: Vec<PostRef> = ranked.into_iter().map(|(_, r)| r).collect();
        t.skeleton += start.elapsed();

        let chunk_at = |from: usize| Chunk {
            refs: refs[from.min(refs.len())..(from + limit).min(refs.len())].to_vec(),
            more: from + limit < refs.len(),
        };
        let first = chunk_at(0);
        let mut offset = 0;
        let more: MoreFn<'_> = Box::new(move |_last| {
            offset += limit;
            let chunk = chunk_at(offset);
            Box::pin(std::future::ready(Ok(chunk)))
        });
        let filled = self.fill(&graph, first, limit, more, t).await?;
        let authors = self.authors_of(Some(viewer), &filled, t).await?;
        let next = filled.next.map(|r| DiscoverCursor {
            anchor,
            seed,
            rank: rank(seed, r.id),
            id: r.id.0,
        });
        Ok(Discovered {
            page: Assembled {
                graph,
                filled,
                authors,
            },
            next,
        })
    }

    /// Hydrates `first` and keeps the posts the viewer may see; while the page is short
    /// and the skeleton has more, reads up to `refills` more chunks. The next page starts
    /// after the last post shown when the page overflowed, else after the last ref read.
    async fn fill(
        &self,
        graph: &ViewerGraph,
        first: Chunk,
        limit: usize,
        mut more: MoreFn<'_>,
        t: &mut Timings,
    ) -> Result<Filled, EnrichError> {
        let mut h = Hydrated::default();
        let mut shown: Vec<PostRef> = Vec::with_capacity(limit);
        let mut chunk = first;
        let mut refills = 0;
        loop {
            let start = Instant::now();
            let ids: Vec<PostId> = chunk.refs.iter().map(|r| r.id).collect();
            let mut posts = self.load_posts(&ids, &mut h).await?;
            t.hydrate += start.elapsed();
            for r in &chunk.refs {
                if let Some(p) = posts.remove(&r.id)
                    && !graph.hides(p.author_id)
                {
                    h.posts.push(p);
                    shown.push(*r);
                }
            }
            let last = chunk.refs.last().copied();
            if shown.len() > limit {
                h.posts.truncate(limit);
                shown.truncate(limit);
                let next = shown.last().copied();
                return Ok(Filled { hydrated: h, next });
            }
            let next = last.filter(|_| chunk.more);
            if shown.len() == limit || refills == self.inner.config.refills {
                return Ok(Filled { hydrated: h, next });
            }
            let Some(last) = next else {
                return Ok(Filled { hydrated: h, next });
            };
            refills += 1;
            let start = Instant::now();
            chunk = more(last).await?;
            t.skeleton += start.elapsed();
        }
    }

    /// Posts, media and tags of `ids`, concurrently, each in one batch. Media and tags are
    /// optional: a failure is recorded in `h.partial` and the page goes on without them.
    async fn load_posts(
        &self,
        ids: &[PostId],
        h: &mut Hydrated,
    ) -> Result<HashMap<PostId, Post>, EnrichError> {
        let s = &self.inner.sources;
        let (posts, media, tags) = lookups!(
            self.concurrent(),
            s.posts.load_many(ids),
            s.media.load_many(ids),
            s.tags.load_many(ids)
        );
        match media {
            Ok(m) => h.media.extend(m),
            Err(e) => {
                tracing::warn!(error = %e, "media unavailable, serving a partial page");
                h.partial.insert(Part::Media);
            }
        }
        match tags {
            Ok(m) => h.tags.extend(m),
            Err(e) => {
                tracing::warn!(error = %e, "tags unavailable, serving a partial page");
                h.partial.insert(Part::Tags);
            }
        }
        posts.map_err(EnrichError::load(Part::Posts))
    }

    async fn authors_of(
        &self,
        viewer: Option<UserId>,
        filled: &Filled,
        t: &mut Timings,
    ) -> Result<Authors, EnrichError> {
        let start = Instant::now();
        let mut seen = HashSet::new();
        let authors: Vec<UserId> = filled
            .hydrated
            .posts
            .iter()
            .map(|p| p.author_id)
            .filter(|a| seen.insert(*a))
            .collect();
        let authors = self.load_authors(viewer, &authors).await?;
        t.hydrate += start.elapsed();
        Ok(authors)
    }

    /// Profiles, flags and "follows the viewer" of `authors`, concurrently, each in one
    /// batch.
    async fn load_authors(
        &self,
        viewer: Option<UserId>,
        authors: &[UserId],
    ) -> Result<Authors, EnrichError> {
        let s = &self.inner.sources;
        let edges: Vec<FollowEdge> = viewer
            .map(|v| {
                authors
                    .iter()
                    .filter(|a| **a != v)
                    .map(|a| FollowEdge {
                        follower: *a,
                        followee: v,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (users, flags, follows) = lookups!(
            self.concurrent(),
            async {
                s.users
                    .load_many(authors)
                    .await
                    .map_err(EnrichError::load(Part::Authors))
            },
            async {
                s.flags
                    .load_many(authors)
                    .await
                    .map_err(EnrichError::load(Part::Flags))
            },
            async {
                s.follows
                    .load_many(&edges)
                    .await
                    .map_err(EnrichError::load(Part::Relationships))
            },
        );
        let (users, flags, follows) = (users?, flags?, follows?);
        Ok(Authors {
            users,
            flags,
            follow_viewer: follows.into_keys().map(|e| e.follower).collect(),
        })
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
        let h = &a.filled.hydrated;
        // An author that vanished between the post and its profile is not shown.
        let shown: Vec<(&Post, &User, &UserFlags)> = h
            .posts
            .iter()
            .filter_map(|post| {
                let author = post.author_id;
                Some((
                    post,
                    a.authors.users.get(&author)?,
                    a.authors.flags.get(&author)?,
                ))
            })
            .collect();
        let partial: Vec<Part> = h.partial.iter().copied().collect();
        let names: Vec<&str> = partial.iter().map(|p| p.as_str()).collect();
        let body = if self.inner.config.serde_json_pages {
            serde_json_page(a, &shown, next.clone(), seed, &names)
        } else {
            let complete = h.partial.is_empty();
            let fragments: Vec<(PostFragment, AuthorFragment, Option<ViewerWire>)> = shown
                .iter()
                .map(|(post, user, flags)| {
                    (
                        self.post_fragment(post, h, complete),
                        self.author_fragment(user, flags),
                        viewer_part(&a.graph, &a.authors, post.author_id),
                    )
                })
                .collect();
            let items: Vec<SplicedItem<'_>> = fragments
                .iter()
                .map(|(post, author, viewer)| SplicedItem {
                    post,
                    author,
                    viewer: *viewer,
                })
                .collect();
            splice_page(&items, next.as_deref(), seed, &names)
        };
        t.present += start.elapsed();
        Rendered {
            body,
            timings: *t,
            partial,
            ids: shown.iter().map(|(post, _, _)| post.id.0).collect(),
            next,
            seed,
        }
    }

    fn post_fragment(&self, post: &Post, h: &Hydrated, complete: bool) -> PostFragment {
        let media = h.media.get(&post.id).map_or(&[][..], Vec::as_slice);
        let tags = h.tags.get(&post.id).map_or(&[][..], Vec::as_slice);
        match &self.inner.fragments {
            Some(f) => f.post(post, media, tags, complete),
            None => encode_post(post, media, tags),
        }
    }

    fn author_fragment(&self, user: &User, flags: &UserFlags) -> AuthorFragment {
        match &self.inner.fragments {
            Some(f) => f.author(user, flags),
            None => encode_author(user, flags),
        }
    }
}

/// A discovery page before presentation, with its next position.
struct Discovered {
    page: Assembled,
    next: Option<DiscoverCursor>,
}

/// A feed page built as wire values and encoded by serde_json: the "before" of the
/// serializer ablation.
fn serde_json_page(
    a: &Assembled,
    shown: &[(&Post, &User, &UserFlags)],
    next_page: Option<String>,
    seed: Option<u64>,
    partial: &[&str],
) -> Vec<u8> {
    use quiver_codec::wire::{AuthorWire, FeedItemWire, FeedPageWire, PostFieldsWire};
    let h = &a.filled.hydrated;
    let items = shown
        .iter()
        .map(|(post, user, flags)| {
            let media = h.media.get(&post.id).map_or(&[][..], Vec::as_slice);
            let tags = h.tags.get(&post.id).map_or(&[][..], Vec::as_slice);
            let f = PostFieldsWire::new(post, media, tags);
            FeedItemWire {
                id: f.id,
                kind: f.kind,
                body: f.body,
                created_at: f.created_at,
                media: f.media,
                tags: f.tags,
                wish: f.wish,
                author: AuthorWire::new(user, flags),
                viewer: viewer_part(&a.graph, &a.authors, post.author_id),
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

/// The per-viewer part of an item by `author`: `None` for anonymous viewers.
fn viewer_part(graph: &ViewerGraph, authors: &Authors, author: UserId) -> Option<ViewerWire> {
    graph.viewer.map(|_| ViewerWire {
        follows_author: graph.follows(author),
        followed_by_author: authors.follow_viewer.contains(&author),
    })
}
