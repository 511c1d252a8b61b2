//! Composition: the read stack (every loader the engine reads is a store batch, coalesced
//! across concurrent requests by a [`Batcher`], behind a [`Tiered`] cache: L1 in process,
//! L2 in Redis when there is one; feed items and authors are cached ready to splice, and
//! each viewer's home feed head is one cached value), and [`app`], which builds the whole
//! service from a store, an optional Redis and [`Settings`].

use async_trait::async_trait;
use quiver_cache::{BatchConfig, Batcher, CacheConfig, Remote, StatsSnapshot, Tiered, ValueCodec};
use quiver_enrich::{
    AuthorLoader, Engine, EngineConfig, FeedItem, ItemLoader, PrefetchConfig, PrefetchPool, Sources,
};
use quiver_model::{CursorCodec, DynLoader, FollowEdge, Loader, PostList, UserId};
use quiver_store::Store;
use quiver_store::loaders::{
    FollowsLoader, HeadLoader, MediaLoader, OrderItemsLoader, OrdersLoader, PostsLoader,
    StoreSkeletons, TagsLoader, UserFlagsLoader, UsersLoader, ViewerGraphLoader, WindowLoader,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How the read stack is built.
#[derive(Clone, Debug)]
pub struct StackConfig {
    /// Prefix of every Redis key and channel (replicas that share caches share it).
    pub namespace: String,
    /// L1 bytes per cache; 0 disables L1.
    pub l1_capacity_bytes: u64,
    /// Whether caches are used at all (off: every lookup goes to the store).
    pub cache: bool,
    /// Cross-request coalescing of store batches; `None` sends each batch on its own.
    pub coalesce: Option<BatchConfig>,
    /// Entries of each viewer's home feed, and of each author's posts, cached as one
    /// value (the heads pages are cut from); 0 reads every such page, and every
    /// discovery window, from the store.
    pub home_head: u32,
    /// Every entity cache's soft TTL (past it an entry is served stale and refreshed).
    pub soft_ttl: Duration,
    /// The last part of the soft TTL in which a read refreshes an entry ahead (0: off).
    pub refresh_ahead: f64,
}

impl Default for StackConfig {
    fn default() -> Self {
        let cache = CacheConfig::new("");
        Self {
            namespace: "quiver".to_owned(),
            l1_capacity_bytes: 64 << 20,
            cache: true,
            coalesce: Some(BatchConfig::default()),
            home_head: 100,
            soft_ttl: cache.soft_ttl,
            refresh_ahead: cache.refresh_ahead,
        }
    }
}

/// A cache of one entity kind, type-erased for stats and pressure.
trait CacheHandle: Send + Sync {
    fn name(&self) -> &str;
    fn stats(&self) -> StatsSnapshot;
    fn set_pressure(&self, raised: bool);
}

impl<L> CacheHandle for Tiered<L>
where
    L: Loader + 'static,
    L::Key: quiver_cache::CacheKey,
{
    fn name(&self) -> &str {
        Tiered::name(self)
    }
    fn stats(&self) -> StatsSnapshot {
        Tiered::stats(self)
    }
    fn set_pressure(&self, raised: bool) {
        Tiered::set_pressure(self, raised)
    }
}

/// A cache over a layered loader of `L`'s keys and values.
type Cached<L> = Arc<Tiered<DynLoader<<L as Loader>::Key, <L as Loader>::Value>>>;

/// The caches of the read stack, for metrics, the prefetch pool's pressure signal, and
/// the invalidation a write does for its writer (read your writes).
#[derive(Clone, Default)]
pub struct Caches {
    all: Vec<Arc<dyn CacheHandle>>,
    graphs: Option<Cached<ViewerGraphLoader>>,
    follows: Option<Cached<FollowsLoader>>,
    items: Option<Cached<ItemLoader>>,
    authors: Option<Cached<AuthorLoader>>,
    orders: Option<Cached<OrdersLoader>>,
    order_items: Option<Cached<OrderItemsLoader>>,
    heads: Option<Cached<HeadLoader>>,
    author_heads: Option<Cached<HeadLoader>>,
    windows: Option<Cached<WindowLoader>>,
}

impl fmt::Debug for Caches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.all.iter().map(|c| c.name().to_owned()))
            .finish()
    }
}

impl Caches {
    /// Outcome counters by cache name.
    pub fn stats(&self) -> Vec<(String, StatsSnapshot)> {
        self.all
            .iter()
            .map(|c| (c.name().to_owned(), c.stats()))
            .collect()
    }

    /// Forgets what a change to the edge between `a` and `b` makes stale: both users'
    /// viewer graphs, the follow edges between them and both home timelines (a follow
    /// backfills, an unfollow or a block removes), in this process's L1, in Redis and (by
    /// the cache's broadcast) in every other replica's L1.
    pub async fn invalidate_edge(
        &self,
        a: UserId,
        b: UserId,
    ) -> Result<(), quiver_cache::CacheError> {
        // Every cache is asked even when one fails: each clears this process's L1 before
        // it reaches Redis, so read-your-writes holds here while Redis is down.
        let graphs = match &self.graphs {
            Some(graphs) => graphs.invalidate(&[a, b]).await,
            None => Ok(()),
        };
        let follows = match &self.follows {
            Some(follows) => {
                let edges = [
                    FollowEdge {
                        follower: a,
                        followee: b,
                    },
                    FollowEdge {
                        follower: b,
                        followee: a,
                    },
                ];
                follows.invalidate(&edges).await
            }
            None => Ok(()),
        };
        let timelines = self.invalidate_timelines(&[a, b]).await;
        graphs.and(follows).and(timelines)
    }

    /// Forgets, everywhere, what a post of `author` created, changed or deleted makes
    /// stale: its feed item (the post, its media and its tags), the head of the author's
    /// posts and the newest window of recent posts. Each is asked even when one fails.
    pub async fn invalidate_post(
        &self,
        id: quiver_model::PostId,
        author: UserId,
    ) -> Result<(), quiver_cache::CacheError> {
        let item = match &self.items {
            Some(c) => c.invalidate(&[id]).await,
            None => Ok(()),
        };
        let head = match &self.author_heads {
            Some(c) => c.invalidate(&[author]).await,
            None => Ok(()),
        };
        let window = match &self.windows {
            Some(c) => c.invalidate(&[quiver_model::Window(None)]).await,
            None => Ok(()),
        };
        item.and(head).and(window)
    }

    /// Forgets a user's author item (profile and flags) everywhere.
    pub async fn invalidate_user(&self, id: UserId) -> Result<(), quiver_cache::CacheError> {
        match &self.authors {
            Some(c) => c.invalidate(&[id]).await,
            None => Ok(()),
        }
    }

    /// Forgets what a post written or deleted by `author` makes stale for them: the post
    /// (a lookup before it existed may have cached "absent") and the author's own home
    /// head (their timeline changed at commit; followers' heads are the events' job).
    /// Both are asked even when one fails, as in [`Caches::invalidate_edge`].
    pub async fn invalidate_authored(
        &self,
        author: UserId,
        id: quiver_model::PostId,
    ) -> Result<(), quiver_cache::CacheError> {
        let post = self.invalidate_post(id, author).await;
        post.and(self.invalidate_timelines(&[author]).await)
    }

    /// Forgets the cached heads of `users`' home feeds everywhere, a thousand per call to
    /// Redis.
    pub async fn invalidate_timelines(
        &self,
        users: &[UserId],
    ) -> Result<(), quiver_cache::CacheError> {
        let mut result = Ok(());
        if let Some(c) = &self.heads {
            for chunk in users.chunks(1000) {
                // Later chunks still leave this process's L1 when one fails.
                result = result.and(c.invalidate(chunk).await);
            }
        }
        result
    }

    /// Forgets an order (a cached absence of a new id).
    pub async fn invalidate_order(
        &self,
        id: quiver_model::OrderId,
    ) -> Result<(), quiver_cache::CacheError> {
        // Both, even when one fails (as in `invalidate_edge`): a lookup of this id
        // before the order existed may have cached "absent" in each.
        let order = match &self.orders {
            Some(c) => c.invalidate(&[id]).await,
            None => Ok(()),
        };
        let items = match &self.order_items {
            Some(c) => c.invalidate(&[id]).await,
            None => Ok(()),
        };
        order.and(items)
    }

    /// Stretches (or restores) every cache's TTLs.
    pub fn set_pressure(&self, raised: bool) {
        for c in &self.all {
            c.set_pressure(raised);
        }
    }
}

/// Events invalidate through the read stack's caches: everywhere, like the writer's own
/// invalidation.
#[async_trait]
impl quiver_events::Invalidate for Caches {
    async fn edge(
        &self,
        a: UserId,
        b: UserId,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.invalidate_edge(a, b).await?)
    }

    async fn post(
        &self,
        id: quiver_model::PostId,
        author: UserId,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.invalidate_post(id, author).await?)
    }

    async fn timelines(
        &self,
        users: &[UserId],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.invalidate_timelines(users).await?)
    }
}

struct Builder<'a> {
    config: &'a StackConfig,
    remote: Option<Arc<dyn Remote>>,
    caches: Caches,
}

impl Builder<'_> {
    /// The layered loader, and its cache when caching is on (for invalidation).
    async fn tiered<L>(
        &mut self,
        name: &str,
        loader: L,
    ) -> (DynLoader<L::Key, L::Value>, Option<Cached<L>>)
    where
        L: Loader + 'static,
        L::Key: quiver_cache::CacheKey,
        L::Value: Serialize + DeserializeOwned,
    {
        self.tiered_with(name, loader, Box::new(quiver_cache::JsonCodec::default()))
            .await
    }

    /// [`Builder::tiered`] with an explicit value codec.
    async fn tiered_with<L>(
        &mut self,
        name: &str,
        loader: L,
        codec: Box<dyn ValueCodec<L::Value>>,
    ) -> (DynLoader<L::Key, L::Value>, Option<Cached<L>>)
    where
        L: Loader + 'static,
        L::Key: quiver_cache::CacheKey,
    {
        let loader: DynLoader<L::Key, L::Value> = match self.config.coalesce {
            Some(batch) => Arc::new(Batcher::new(loader, batch)),
            None => Arc::new(loader),
        };
        if !self.config.cache {
            return (loader, None);
        }
        let mut config = CacheConfig::new(name);
        config.namespace = self.config.namespace.clone();
        config.l1_capacity_bytes = self.config.l1_capacity_bytes;
        config.soft_ttl = self.config.soft_ttl;
        config.hard_ttl = config.hard_ttl.max(self.config.soft_ttl);
        config.refresh_ahead = self.config.refresh_ahead;
        // The value formats of these changed with the ready items and the graph's
        // mutuals: entries another version wrote are misses, never misread.
        config.schema_version = 2;
        let tiered = Arc::new(Tiered::with_codec(config, loader, self.remote.clone(), codec).await);
        self.caches.all.push(tiered.clone());
        (tiered.clone(), Some(tiered))
    }
}

/// Feed items in Redis as JSON of their parts; an item built while its media or tags
/// failed to load is never cached.
struct ItemCodec;

impl ValueCodec<FeedItem> for ItemCodec {
    fn encode(&self, value: &FeedItem, out: &mut Vec<u8>) {
        serde_json::to_writer(out, value).expect("serializing to a Vec cannot fail");
    }

    fn decode(&self, bytes: &[u8]) -> Option<FeedItem> {
        serde_json::from_slice(bytes).ok()
    }

    fn admit(&self, value: &FeedItem) -> bool {
        value.is_complete()
    }
}

/// The engine's sources over `store`, cached in L1 and in `remote` when given, for an
/// engine configured by `engine` (its discovery window and whether its lookups run
/// concurrently shape the loaders).
pub async fn read_stack(
    store: Arc<dyn Store>,
    remote: Option<Arc<dyn Remote>>,
    config: &StackConfig,
    engine: &EngineConfig,
) -> (Sources, Caches) {
    let mut b = Builder {
        config,
        remote,
        caches: Caches::default(),
    };
    let s = store;
    // Heads of feeds (cached, or not at all: a head per request would read more than the
    // page): each viewer's home feed, each author's posts, and the discovery windows.
    let head_len = config.home_head;
    let (heads, author_heads, windows) = if head_len > 0 && config.cache {
        let head = |of: fn(UserId) -> PostList| HeadLoader {
            store: s.clone(),
            len: head_len,
            of,
        };
        let (heads, cache) = b.tiered("home", head(PostList::Home)).await;
        b.caches.heads = cache;
        let (author_heads, cache) = b.tiered("author_posts", head(PostList::Author)).await;
        b.caches.author_heads = cache;
        let window = WindowLoader {
            store: s.clone(),
            len: engine.discovery_window,
        };
        let (windows, cache) = b.tiered("window", window).await;
        b.caches.windows = cache;
        (Some(heads), Some(author_heads), Some(windows))
    } else {
        (None, None, None)
    };
    let items = ItemLoader {
        posts: Arc::new(PostsLoader(s.clone())),
        media: Arc::new(MediaLoader(s.clone())),
        tags: Arc::new(TagsLoader(s.clone())),
        concurrent: engine.concurrent_lookups,
    };
    let authors = AuthorLoader {
        users: Arc::new(UsersLoader(s.clone())),
        flags: Arc::new(UserFlagsLoader(s.clone())),
        concurrent: engine.concurrent_lookups,
    };
    let sources = Sources {
        skeletons: Arc::new(StoreSkeletons(s.clone())),
        heads,
        author_heads,
        windows,
        graphs: {
            let (loader, cache) = b.tiered("graph", ViewerGraphLoader(s.clone())).await;
            b.caches.graphs = cache;
            loader
        },
        items: {
            let (loader, cache) = b.tiered_with("item", items, Box::new(ItemCodec)).await;
            b.caches.items = cache;
            loader
        },
        authors: {
            let (loader, cache) = b.tiered("author", authors).await;
            b.caches.authors = cache;
            loader
        },
        follows: {
            let (loader, cache) = b.tiered("follow", FollowsLoader(s.clone())).await;
            b.caches.follows = cache;
            loader
        },
        orders: {
            let (loader, cache) = b.tiered("order", OrdersLoader(s.clone())).await;
            b.caches.orders = cache;
            loader
        },
        order_items: {
            let (loader, cache) = b.tiered("order_items", OrderItemsLoader(s)).await;
            b.caches.order_items = cache;
            loader
        },
    };
    (sources, b.caches)
}

/// Everything [`app`] needs besides the store and Redis.
#[derive(Clone, Debug)]
pub struct Settings {
    pub stack: StackConfig,
    pub engine: EngineConfig,
    /// Warming next pages in the background; `None` disables it, and so does a stack
    /// without an L1 (there is nothing for it to warm).
    pub prefetch: Option<PrefetchConfig>,
    pub server: crate::ServerConfig,
    /// Verifies the bearer tokens.
    pub auth: crate::auth::Auth,
    /// The key that signs pagination cursors.
    pub cursor_secret: Vec<u8>,
}

/// What the event layer runs on: the outbox and effects of the same database, and Redis
/// for the stream when there is one (else events are handled in process).
#[derive(Clone)]
pub struct EventsSetup {
    pub outbox: Arc<dyn quiver_store::events::Outbox>,
    pub effects: Arc<dyn quiver_store::events::Effects>,
    /// `redis://…` for the stream and the consumers; `None` dispatches in process.
    pub redis_url: Option<String>,
    pub config: quiver_events::EventsConfig,
}

impl fmt::Debug for EventsSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventsSetup")
            .field("stream", &self.redis_url.is_some())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The service over `store` (and `remote`, when there is a Redis): the read stack, the
/// engine with its prefetch pool wired to the caches' pressure signal, auth, limits and,
/// with `events`, the relay and consumers whose effects invalidate the same caches.
pub async fn app(
    store: Arc<dyn Store>,
    writes: Arc<dyn quiver_store::write::Writes>,
    remote: Option<Arc<dyn Remote>>,
    events: Option<EventsSetup>,
    settings: Settings,
) -> Result<crate::App, quiver_events::EventsError> {
    let (sources, caches) = read_stack(
        store.clone(),
        remote.clone(),
        &settings.stack,
        &settings.engine,
    )
    .await;
    // Prefetch warms the L1: without one, every job would load values only to drop them.
    let has_l1 = settings.stack.cache && settings.stack.l1_capacity_bytes > 0;
    let prefetch = settings.prefetch.filter(|_| has_l1).map(|config| {
        let caches = caches.clone();
        PrefetchPool::new(
            config,
            Arc::new(move |raised: bool| caches.set_pressure(raised)),
        )
    });
    let engine = Engine::new(
        sources,
        CursorCodec::new(&settings.cursor_secret),
        EngineConfig {
            max_limit: settings.server.max_limit,
            ..settings.engine
        },
        prefetch,
    );
    crate::App::new(crate::Parts {
        engine,
        store,
        writes,
        remote,
        caches,
        events,
        auth: settings.auth,
        config: settings.server,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_store::{SqliteConfig, SqliteStore};

    async fn app_with_l1(l1_capacity_bytes: u64) -> crate::App {
        let store = SqliteStore::connect(&SqliteConfig::default())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let store = Arc::new(store);
        let settings = Settings {
            stack: StackConfig {
                l1_capacity_bytes,
                ..StackConfig::default()
            },
            engine: EngineConfig::default(),
            prefetch: Some(PrefetchConfig::default()),
            server: crate::ServerConfig::default(),
            auth: crate::auth::Auth::new(b"a test secret of at least 32 bytes!!").unwrap(),
            cursor_secret: b"cursor".to_vec(),
        };
        app(store.clone(), store, None, None, settings)
            .await
            .unwrap()
    }

    /// Before the fix, a stack without an L1 ran a prefetch job per page whose values
    /// it then dropped: the bench's prefetch ablation came out below 1.0.
    #[tokio::test]
    async fn prefetch_runs_only_over_an_l1_it_can_warm() {
        let with = app_with_l1(1 << 20).await;
        assert!(with.engine().prefetch_stats().is_some());
        let without = app_with_l1(0).await;
        assert!(without.engine().prefetch_stats().is_none());
    }
}
