//! An in-memory world (users, posts, follows, blocks, orders) for tests and benches that
//! exercise the layers above the store without a database: skeleton pages and loaders
//! over it that count their batch calls and can be made to fail, and the expected feeds
//! computed directly from the world, independently of any engine.

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use quiver_model::{
    Currency, Cursor, FeedHead, LoadError, Loader, Media, MediaId, MediaKind, Money, Order,
    OrderId, OrderItem, OrderRef, OrderStatus, Page, Post, PostId, PostKind, PostList, PostRef,
    Skeletons, User, UserFlags, UserId, ViewerGraph, Wish,
};
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// The time `minute` minutes after the world's epoch.
pub fn at(minute: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_760_000_000 + minute * 60, 0).unwrap()
}

#[derive(Debug, Default)]
pub struct World {
    pub users: HashMap<UserId, User>,
    pub flags: HashMap<UserId, UserFlags>,
    pub posts: HashMap<PostId, Post>,
    pub media: HashMap<PostId, Vec<Media>>,
    pub tags: HashMap<PostId, Vec<String>>,
    pub follows: HashSet<(UserId, UserId)>,
    /// `(blocker, blocked)`.
    pub blocks: HashSet<(UserId, UserId)>,
    pub orders: HashMap<OrderId, Order>,
    pub order_items: HashMap<OrderId, Vec<OrderItem>>,
}

impl World {
    /// `users` accounts with `posts` posts each. Post times collide across authors (ties
    /// are broken by id). User `u` follows the next `follows` users (wrapping); every
    /// third post is a wish; media and tags vary by post.
    pub fn generate(users: i64, posts: i64, follows: i64) -> Self {
        let mut w = World::default();
        for u in 1..=users {
            let id = UserId(u);
            w.users.insert(
                id,
                User {
                    id,
                    handle: format!("user{u}"),
                    display_name: format!("User \"{u}\""),
                    bio: String::new(),
                    avatar_url: (u % 2 == 0).then(|| format!("https://a/{u}.png")),
                    created_at: at(0),
                },
            );
            w.flags.insert(
                id,
                UserFlags {
                    verified: u % 3 == 0,
                    creator: u % 5 == 0,
                    private: false,
                },
            );
            for k in 1..=follows {
                let other = (u - 1 + k) % users + 1;
                if other != u {
                    w.follows.insert((id, UserId(other)));
                }
            }
        }
        let mut next = 1;
        for n in 0..posts {
            for u in 1..=users {
                let pid = PostId(next);
                next += 1;
                w.add_post(pid, UserId(u), at(n * 7 + u % 3));
            }
        }
        w
    }

    pub fn add_post(&mut self, id: PostId, author: UserId, created_at: DateTime<Utc>) {
        let wish = id.0 % 3 == 0;
        self.posts.insert(
            id,
            Post {
                id,
                author_id: author,
                kind: if wish { PostKind::Wish } else { PostKind::Post },
                body: format!("post {} by {}", id.0, author.0),
                wish: wish.then(|| Wish {
                    price: Money {
                        amount_cents: 100 * id.0,
                        currency: "EUR".parse::<Currency>().unwrap(),
                    },
                    product_url: format!("https://shop/{}", id.0),
                }),
                created_at,
            },
        );
        let media: Vec<Media> = (0..id.0 % 3)
            .map(|i| Media {
                id: MediaId(id.0 * 10 + i),
                post_id: id,
                kind: MediaKind::Image,
                url: format!("https://m/{}/{i}", id.0),
                width: 640,
                height: 480,
                size_bytes: 1000,
                position: i as i16,
            })
            .collect();
        if !media.is_empty() {
            self.media.insert(id, media);
        }
        let tags: Vec<String> = (0..id.0 % 4).map(|i| format!("t{i}")).collect();
        if !tags.is_empty() {
            self.tags.insert(id, tags);
        }
    }

    pub fn block(&mut self, blocker: i64, blocked: i64) {
        self.blocks.insert((UserId(blocker), UserId(blocked)));
    }

    pub fn add_order(&mut self, id: i64, customer: i64, status: OrderStatus, minute: i64) {
        let id = OrderId(id);
        let eur = "EUR".parse::<Currency>().unwrap();
        self.orders.insert(
            id,
            Order {
                id,
                customer_id: UserId(customer),
                status,
                total: Money {
                    amount_cents: 300,
                    currency: eur,
                },
                created_at: at(minute),
                updated_at: at(minute),
            },
        );
        self.order_items.insert(
            id,
            vec![OrderItem {
                order_id: id,
                post_id: PostId(3),
                quantity: 1,
                unit_price: Money {
                    amount_cents: 300,
                    currency: eur,
                },
            }],
        );
    }

    pub fn graph(&self, viewer: UserId) -> ViewerGraph {
        ViewerGraph {
            viewer: Some(viewer),
            followees: self
                .follows
                .iter()
                .filter(|(a, _)| *a == viewer)
                .map(|(_, b)| *b)
                .collect(),
            mutuals: self
                .follows
                .iter()
                .filter(|(a, b)| *a == viewer && self.follows.contains(&(*b, viewer)))
                .map(|(_, b)| *b)
                .collect(),
            blocked: self
                .blocks
                .iter()
                .filter(|(a, _)| *a == viewer)
                .map(|(_, b)| *b)
                .collect(),
            blocked_by: self
                .blocks
                .iter()
                .filter(|(_, b)| *b == viewer)
                .map(|(a, _)| *a)
                .collect(),
        }
    }

    pub fn hidden(&self, viewer: UserId, author: UserId) -> bool {
        self.blocks.contains(&(viewer, author)) || self.blocks.contains(&(author, viewer))
    }

    /// Posts by `authors`, newest first, in feed order.
    pub fn newest_first(&self, authors: impl Fn(UserId) -> bool) -> Vec<PostRef> {
        let mut refs: Vec<PostRef> = self
            .posts
            .values()
            .filter(|p| authors(p.author_id))
            .map(Post::as_ref)
            .collect();
        refs.sort_unstable_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
        refs
    }

    /// The newest `len` entries of `viewer`'s home feed, as the store's head loader
    /// returns them.
    pub fn home_head(&self, viewer: UserId, len: u32) -> FeedHead {
        let rows = self.newest_first(|a| a == viewer || self.follows.contains(&(viewer, a)));
        FeedHead::from(keyset(rows, |r| (r.created_at, r.id.0), None, len))
    }

    /// The home feed of `viewer` as it must come out: followees and own, unblocked.
    pub fn expected_home(&self, viewer: UserId) -> Vec<i64> {
        self.newest_first(|a| {
            (a == viewer || self.follows.contains(&(viewer, a))) && !self.hidden(viewer, a)
        })
        .into_iter()
        .map(|r| r.id.0)
        .collect()
    }
}

/// The first `limit` rows after `after` (rows newest first), as the store cuts a page.
pub fn keyset<T: Copy>(
    rows: Vec<T>,
    key: impl Fn(&T) -> (DateTime<Utc>, i64),
    after: Option<Cursor>,
    limit: u32,
) -> Page<T> {
    let mut items: Vec<T> = rows
        .into_iter()
        .filter(|r| after.is_none_or(|c| c.precedes(key(r).0, key(r).1)))
        .take(limit as usize + 1)
        .collect();
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next = more
        .then(|| items.last().map(&key))
        .flatten()
        .map(|(created_at, id)| Cursor { created_at, id });
    Page { items, next }
}

/// Batch calls by loader name.
#[derive(Clone, Debug, Default)]
pub struct Calls(Arc<Mutex<HashMap<&'static str, usize>>>);

impl Calls {
    /// Counts one batch call of `name`.
    pub fn hit(&self, name: &'static str) {
        *self.0.lock().unwrap().entry(name).or_default() += 1;
    }
    pub fn get(&self, name: &str) -> usize {
        self.0.lock().unwrap().get(name).copied().unwrap_or(0)
    }
    pub fn total(&self) -> usize {
        self.0.lock().unwrap().values().sum()
    }
    pub fn reset(&self) {
        self.0.lock().unwrap().clear();
    }
}

/// Loaders that fail while their name is in the set.
#[derive(Clone, Debug, Default)]
pub struct Failures(Arc<Mutex<HashSet<&'static str>>>);

impl Failures {
    pub fn set(&self, name: &'static str, failing: bool) {
        let mut s = self.0.lock().unwrap();
        if failing {
            s.insert(name);
        } else {
            s.remove(name);
        }
    }
    /// An error while `name` is failing.
    pub fn check(&self, name: &'static str) -> Result<(), LoadError> {
        if self.0.lock().unwrap().contains(name) {
            Err(LoadError::new(
                quiver_model::ErrorCode::Unavailable,
                format!("{name} is down"),
            ))
        } else {
            Ok(())
        }
    }
}

type Lookup<K, V> = Arc<dyn Fn(&K) -> Option<V> + Send + Sync>;

/// A loader over a map computed from the world, counting calls and keys.
pub struct MapLoader<K, V> {
    name: &'static str,
    values: Lookup<K, V>,
    calls: Calls,
    failures: Failures,
}

impl<K, V> MapLoader<K, V> {
    /// A loader named `name` whose values `values` computes, counting into `calls` and
    /// failing while `failures` names it.
    pub fn new(
        name: &'static str,
        calls: &Calls,
        failures: &Failures,
        values: impl Fn(&K) -> Option<V> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            values: Arc::new(values),
            calls: calls.clone(),
            failures: failures.clone(),
        })
    }
}

impl<K, V> std::fmt::Debug for MapLoader<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapLoader")
            .field("name", &self.name)
            .finish()
    }
}

#[async_trait]
impl<K, V> Loader for MapLoader<K, V>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    type Key = K;
    type Value = V;

    async fn load_many(&self, keys: &[K]) -> Result<HashMap<K, V>, LoadError> {
        self.calls.hit(self.name);
        // Yield once, like real I/O, so concurrent callers interleave.
        tokio::task::yield_now().await;
        self.failures.check(self.name)?;
        Ok(keys
            .iter()
            .filter_map(|k| (self.values)(k).map(|v| (k.clone(), v)))
            .collect())
    }
}

/// Skeleton pages cut from the world by the store's keyset rule, counted as `skeleton`.
#[derive(Debug)]
pub struct MemSkeletons {
    world: Arc<World>,
    calls: Calls,
    failures: Failures,
}

impl MemSkeletons {
    /// Pages of `world`, counting into `calls`, failing while `failures` names `skeleton`.
    pub fn new(world: Arc<World>, calls: &Calls, failures: &Failures) -> Self {
        Self {
            world,
            calls: calls.clone(),
            failures: failures.clone(),
        }
    }
}

#[async_trait]
impl Skeletons for MemSkeletons {
    async fn posts(
        &self,
        list: PostList,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<PostRef>, LoadError> {
        self.calls.hit("skeleton");
        self.failures.check("skeleton")?;
        let w = &self.world;
        let rows = match list {
            // Like the store: followees and own, blocks are the engine's business.
            PostList::Home(viewer) => {
                w.newest_first(|a| a == viewer || w.follows.contains(&(viewer, a)))
            }
            PostList::Author(user) => w.newest_first(|a| a == user),
            PostList::Recent => w.newest_first(|_| true),
        };
        Ok(keyset(rows, |r| (r.created_at, r.id.0), after, limit))
    }

    async fn customer_orders(
        &self,
        customer: UserId,
        status: Option<OrderStatus>,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<OrderRef>, LoadError> {
        self.calls.hit("skeleton");
        self.failures.check("skeleton")?;
        let mut rows: Vec<OrderRef> = self
            .world
            .orders
            .values()
            .filter(|o| o.customer_id == customer && status.is_none_or(|s| s == o.status))
            .map(|o| OrderRef {
                id: o.id,
                created_at: o.created_at,
            })
            .collect();
        rows.sort_unstable_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
        Ok(keyset(rows, |r| (r.created_at, r.id.0), after, limit))
    }
}

/// A loader that says it holds `warm` keys fresh, as a cache would, and otherwise passes
/// every call through.
pub struct Warm<L: Loader> {
    pub inner: L,
    pub warm: Mutex<HashSet<L::Key>>,
}

impl<L: Loader> std::fmt::Debug for Warm<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let warm = self.warm.lock().unwrap().len();
        f.debug_struct("Warm").field("warm", &warm).finish()
    }
}

#[async_trait]
impl<L: Loader> Loader for Warm<L> {
    type Key = L::Key;
    type Value = L::Value;

    async fn load_many(&self, keys: &[L::Key]) -> Result<HashMap<L::Key, L::Value>, LoadError> {
        self.inner.load_many(keys).await
    }

    fn fresh(&self, keys: &[L::Key]) -> bool {
        let warm = self.warm.lock().unwrap();
        keys.iter().all(|k| warm.contains(k))
    }
}
