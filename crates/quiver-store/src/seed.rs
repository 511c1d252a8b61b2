//! A deterministic, realistic data set, and the fastest way to load it into each backend:
//! `COPY` for PostgreSQL, batched transactions for SQLite.
//!
//! The same [`SeedConfig`] always generates the same rows (ChaCha8 from a fixed seed, a
//! fixed epoch, no clock reads). The shape follows real social graphs: follower counts are
//! Zipf-distributed (a few accounts with very many followers), out-degrees are Pareto
//! (some users follow thousands), about a third of posts are wishes, posts carry 0–4 media
//! and 0–5 tags, and orders exist in every status.

use crate::sqlite::to_micros;
use crate::{PgStore, SqliteStore, StoreError};
use chrono::{DateTime, Duration, TimeZone, Utc};
use quiver_model::{
    Block, Currency, Follow, Media, MediaId, MediaKind, Money, Notification, NotificationId,
    NotificationKind, Order, OrderId, OrderItem, OrderStatus, Post, PostId, PostKind, User,
    UserFlags, UserId, Wish,
};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Pareto, Zipf};
use std::collections::{BinaryHeap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration as StdDuration, Instant};

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedConfig {
    /// Number of users.
    pub users: u32,
    /// Mean posts per user (each user gets between 0 and twice this).
    pub posts_per_user: u32,
    /// Mean accounts a user follows (Pareto-distributed, so some follow thousands).
    pub follows_per_user: u32,
    /// The random seed: the same seed gives the same rows.
    pub seed: u64,
    /// Depth of each user's materialized home timeline; deeper pages merge at read time.
    pub timeline_depth: u32,
}

impl SeedConfig {
    /// The small data set of the embedded demo.
    pub fn demo() -> Self {
        Self {
            users: 200,
            posts_per_user: 10,
            follows_per_user: 15,
            seed: 42,
            timeline_depth: 200,
        }
    }
}

impl Default for SeedConfig {
    fn default() -> Self {
        Self {
            users: 10_000,
            posts_per_user: 20,
            follows_per_user: 30,
            seed: 42,
            timeline_depth: 200,
        }
    }
}

/// A progress event, for a progress bar per table.
#[derive(Clone, Copy, Debug)]
pub enum Progress {
    /// Loading of `table` starts; `rows` will be written.
    Start { table: &'static str, rows: u64 },
    /// `rows` more rows of `table` were written.
    Advance { table: &'static str, rows: u64 },
    /// `table` is done.
    Finish { table: &'static str },
}

/// How long each table took, for the summary.
#[derive(Clone, Debug, Default)]
pub struct SeedReport {
    /// `(table, rows, time)` in load order.
    pub tables: Vec<(&'static str, u64, StdDuration)>,
    /// Time spent generating the data set in memory.
    pub generate: StdDuration,
    /// Time spent loading, indexing and analyzing.
    pub load: StdDuration,
}

impl SeedReport {
    /// Rows written over all tables.
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.1).sum()
    }

    /// Rows per second of loading (not generation).
    pub fn rows_per_sec(&self) -> f64 {
        self.total_rows() as f64 / self.load.as_secs_f64().max(1e-9)
    }
}

/// The whole generated data set, in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dataset {
    pub users: Vec<(User, UserFlags)>,
    pub follows: Vec<Follow>,
    pub blocks: Vec<Block>,
    /// In ascending id order, which is creation order.
    pub posts: Vec<Post>,
    pub media: Vec<Media>,
    /// `(post, tag)`.
    pub tags: Vec<(i64, &'static str)>,
    pub orders: Vec<Order>,
    pub order_items: Vec<OrderItem>,
    pub notifications: Vec<Notification>,
    /// `(user, created_at, post, author)`.
    pub home_timeline: Vec<(i64, DateTime<Utc>, i64, i64)>,
}

const WORDS: &[&str] = &[
    "amber", "bright", "calm", "daring", "eager", "fuzzy", "gentle", "happy", "icy", "jolly",
    "kind", "lucky", "mellow", "nimble", "odd", "proud", "quiet", "rapid", "shy", "tidy", "urban",
    "vivid", "witty", "young", "zesty", "otter", "falcon", "maple", "river", "comet", "pixel",
    "harbor", "meadow", "ember", "cedar", "willow", "quartz", "lantern", "orbit", "pepper",
    "saffron", "tundra", "violet", "walnut", "yarrow", "zephyr", "beacon", "canyon", "dune",
    "fjord", "grove", "haven", "island", "jungle", "kettle", "lagoon", "mesa", "nectar",
];
const TAGS: &[&str] = &[
    "books",
    "travel",
    "coffee",
    "tech",
    "music",
    "art",
    "garden",
    "kitchen",
    "outdoors",
    "fitness",
    "gaming",
    "photo",
    "design",
    "fashion",
    "kids",
    "pets",
    "cycling",
    "running",
    "camping",
    "diy",
    "vintage",
    "vinyl",
    "tea",
    "wine",
    "beer",
    "cooking",
    "baking",
    "yoga",
    "ski",
    "surf",
    "climbing",
    "film",
    "anime",
    "comics",
    "boardgames",
    "lego",
    "knitting",
    "woodwork",
    "ceramics",
    "plants",
    "birthday",
    "wedding",
    "housewarming",
    "gift_ideas",
    "minimal",
    "luxury",
    "budget",
    "eco",
    "handmade",
    "local",
];
const CURRENCIES: &[&str] = &["USD", "EUR", "GBP"];

fn currency(code: &str) -> Currency {
    code.parse()
        .expect("the generator's currency codes are valid")
}

/// The fixed epoch of generated timestamps; nothing reads the clock.
fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// A time within the 180 days after the epoch, at whole seconds so equal timestamps occur
/// (keyset pagination must break those ties by id).
fn random_time(rng: &mut ChaCha8Rng, after: DateTime<Utc>) -> DateTime<Utc> {
    let end = epoch() + Duration::days(180);
    let span = (end - after).num_seconds().max(1);
    after + Duration::seconds(rng.random_range(0..span))
}

fn sentence(rng: &mut ChaCha8Rng, min: usize, max: usize) -> String {
    let n = rng.random_range(min..=max);
    let mut s = String::with_capacity(n * 8);
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS.choose(rng).expect("non-empty"));
    }
    s
}

/// Generates the data set `config` describes. Pure: same config, same rows.
pub fn generate(config: &SeedConfig) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let n_users = config.users.max(2) as usize;
    let mut ds = Dataset::default();

    // Popularity: rank r (Zipf) maps through a shuffled permutation to a user, so the
    // celebrities are spread over the id space.
    let mut by_rank: Vec<i64> = (1..=n_users as i64).collect();
    rand::seq::SliceRandom::shuffle(by_rank.as_mut_slice(), &mut rng);
    let celebrity_cut = (n_users / 100).max(1);
    let celebrities: HashSet<i64> = by_rank[..celebrity_cut].iter().copied().collect();

    for id in 1..=n_users as i64 {
        let a = WORDS.choose(&mut rng).expect("non-empty");
        let b = WORDS.choose(&mut rng).expect("non-empty");
        let creator = celebrities.contains(&id) || rng.random_bool(0.08);
        // Draws stay in this order: the data set must not change with refactors.
        let bio = if rng.random_bool(0.7) {
            sentence(&mut rng, 3, 20)
        } else {
            String::new()
        };
        let avatar_url = rng
            .random_bool(0.8)
            .then(|| format!("https://avatars.example.com/{id}.jpg"));
        let flags = UserFlags {
            verified: celebrities.contains(&id) && rng.random_bool(0.6) || rng.random_bool(0.01),
            creator,
            private: rng.random_bool(0.05),
        };
        let user = User {
            id: UserId(id),
            handle: format!("{a}_{b}{id}"),
            display_name: format!("{} {}", capitalize(a), capitalize(b)),
            bio,
            avatar_url,
            created_at: epoch() - Duration::days(400)
                + Duration::seconds(rng.random_range(0..400 * 86_400)),
        };
        ds.users.push((user, flags));
    }

    // Follows: Pareto out-degree around the configured mean, Zipf-chosen followees.
    let zipf = Zipf::new(n_users as f64, 1.1).expect("valid zipf");
    let mean = f64::from(config.follows_per_user.max(1));
    let pareto = Pareto::new(mean / 3.0, 1.5).expect("valid pareto");
    let max_out = (n_users - 1).min(5000);
    let mut follows_set: HashSet<(i64, i64)> = HashSet::new();
    for follower in 1..=n_users as i64 {
        let want = (pareto.sample(&mut rng).round() as usize).min(max_out);
        let mut got = 0;
        let mut tries = 0;
        while got < want && tries < want * 4 {
            tries += 1;
            let rank = zipf.sample(&mut rng) as usize - 1;
            let followee = by_rank[rank.min(n_users - 1)];
            if followee != follower && follows_set.insert((follower, followee)) {
                got += 1;
            }
        }
    }
    // Blocks: about 1 % of users block one to three others; a block removes follows both ways.
    let mut blocks_set: HashSet<(i64, i64)> = HashSet::new();
    for blocker in 1..=n_users as i64 {
        if rng.random_bool(0.01) {
            for _ in 0..rng.random_range(1..=3) {
                let blocked = rng.random_range(1..=n_users as i64);
                if blocked != blocker {
                    blocks_set.insert((blocker, blocked));
                }
            }
        }
    }
    for (a, b) in &blocks_set {
        follows_set.remove(&(*a, *b));
        follows_set.remove(&(*b, *a));
    }
    let mut follows: Vec<(i64, i64)> = follows_set.into_iter().collect();
    follows.sort_unstable();
    ds.follows = follows
        .into_iter()
        .map(|(a, b)| Follow {
            follower: UserId(a),
            followee: UserId(b),
            created_at: random_time(&mut rng, epoch() - Duration::days(30)),
        })
        .collect();
    let mut blocks: Vec<(i64, i64)> = blocks_set.into_iter().collect();
    blocks.sort_unstable();
    ds.blocks = blocks
        .into_iter()
        .map(|(a, b)| Block {
            blocker: UserId(a),
            blocked: UserId(b),
            created_at: random_time(&mut rng, epoch() - Duration::days(30)),
        })
        .collect();

    // Posts: ids in creation order, as an identity column would assign them.
    let mut drafts: Vec<(DateTime<Utc>, i64)> = Vec::new();
    for author in 1..=n_users as i64 {
        let n = rng.random_range(0..=config.posts_per_user * 2);
        for _ in 0..n {
            drafts.push((random_time(&mut rng, epoch()), author));
        }
    }
    drafts.sort_unstable();
    for (i, (created_at, author_id)) in drafts.into_iter().enumerate() {
        let id = i as i64 + 1;
        let wish = rng.random_bool(1.0 / 3.0).then(|| Wish {
            price: Money {
                amount_cents: rng.random_range(5..=500) * 100 - 1,
                currency: currency(CURRENCIES.choose(&mut rng).expect("non-empty")),
            },
            product_url: format!(
                "https://shop.example.com/p/{}",
                rng.random_range(1..1_000_000)
            ),
        });
        ds.posts.push(Post {
            id: PostId(id),
            author_id: UserId(author_id),
            kind: if wish.is_some() {
                PostKind::Wish
            } else {
                PostKind::Post
            },
            body: sentence(&mut rng, 3, 40),
            wish,
            created_at,
        });
        let n_media = *[0, 0, 1, 1, 1, 2, 2, 3, 4]
            .choose(&mut rng)
            .expect("non-empty");
        for position in 0..n_media {
            let video = rng.random_bool(0.15);
            ds.media.push(Media {
                id: MediaId(ds.media.len() as i64 + 1),
                post_id: PostId(id),
                kind: if video {
                    MediaKind::Video
                } else {
                    MediaKind::Image
                },
                url: format!(
                    "https://media.example.com/{id}/{position}.{}",
                    if video { "mp4" } else { "jpg" }
                ),
                width: *[640, 1080, 1280, 1920].choose(&mut rng).expect("non-empty"),
                height: *[480, 720, 1080, 1350].choose(&mut rng).expect("non-empty"),
                size_bytes: rng.random_range(20_000..5_000_000),
                position,
            });
        }
        let n_tags = rng.random_range(0..=5);
        let mut tags: Vec<&'static str> = TAGS.choose_multiple(&mut rng, n_tags).copied().collect();
        tags.sort_unstable();
        ds.tags.extend(tags.into_iter().map(|t| (id, t)));
    }

    generate_orders(&mut rng, n_users, &mut ds);
    for f in ds.follows.iter().filter(|f| f.created_at >= epoch()) {
        ds.notifications.push(Notification {
            id: NotificationId(0),
            user_id: f.followee,
            kind: NotificationKind::Followed,
            actor_id: Some(f.follower),
            post_id: None,
            order_id: None,
            created_at: f.created_at,
            read_at: None,
        });
    }
    ds.notifications.sort_by_key(|n| n.created_at);
    for (i, n) in ds.notifications.iter_mut().enumerate() {
        n.id = NotificationId(i as i64 + 1);
    }
    ds.fill_home_timelines(config.timeline_depth as usize);
    ds
}

fn capitalize(w: &str) -> String {
    let mut c = w.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn generate_orders(rng: &mut ChaCha8Rng, n_users: usize, ds: &mut Dataset) {
    // (post, owner, price, posted at) of every wish.
    let wishes: Vec<(PostId, UserId, Money, DateTime<Utc>)> = ds
        .posts
        .iter()
        .filter_map(|p| {
            p.wish
                .as_ref()
                .map(|w| (p.id, p.author_id, w.price, p.created_at))
        })
        .collect();
    if wishes.is_empty() {
        return;
    }
    let statuses = [
        (OrderStatus::Pending, 15),
        (OrderStatus::Active, 35),
        (OrderStatus::Shipped, 40),
        (OrderStatus::Cancelled, 10),
    ];
    for customer in (1..=n_users as i64).map(UserId) {
        if !rng.random_bool(0.3) {
            continue;
        }
        for _ in 0..rng.random_range(1..=5) {
            let first = wishes.choose(rng).expect("non-empty");
            if first.1 == customer {
                continue;
            }
            let currency = first.2.currency;
            let order_id = OrderId(ds.orders.len() as i64 + 1);
            let mut items = vec![*first];
            for _ in 0..rng.random_range(0..=2) {
                let w = wishes.choose(rng).expect("non-empty");
                if w.1 != customer && w.2.currency == currency && items.iter().all(|i| i.0 != w.0) {
                    items.push(*w);
                }
            }
            let created_at = random_time(rng, items.iter().map(|i| i.3).max().expect("one item"));
            let mut total = 0;
            for (post_id, owner, price, _) in &items {
                let quantity = rng.random_range(1..=3);
                total += price.amount_cents * i64::from(quantity);
                ds.order_items.push(OrderItem {
                    order_id,
                    post_id: *post_id,
                    quantity,
                    unit_price: *price,
                });
                ds.notifications.push(Notification {
                    id: NotificationId(0),
                    user_id: *owner,
                    kind: NotificationKind::WishBought,
                    actor_id: Some(customer),
                    post_id: Some(*post_id),
                    order_id: Some(order_id),
                    created_at,
                    read_at: None,
                });
            }
            let status = statuses
                .choose_weighted(rng, |s| s.1)
                .expect("positive weights")
                .0;
            ds.notifications.push(Notification {
                id: NotificationId(0),
                user_id: customer,
                kind: NotificationKind::OrderConfirmed,
                actor_id: None,
                post_id: None,
                order_id: Some(order_id),
                created_at,
                read_at: None,
            });
            ds.orders.push(Order {
                id: order_id,
                customer_id: customer,
                status,
                total: Money {
                    amount_cents: total,
                    currency,
                },
                created_at,
                updated_at: created_at,
            });
        }
    }
}

impl Dataset {
    /// Rebuilds every user's home timeline: the newest `depth` posts of the accounts they
    /// follow and their own, by a k-way merge of the authors' newest-first post lists.
    pub fn fill_home_timelines(&mut self, depth: usize) {
        self.home_timeline = home_timelines(self, depth);
    }
}

fn home_timelines(ds: &Dataset, depth: usize) -> Vec<(i64, DateTime<Utc>, i64, i64)> {
    let n_users = ds.users.iter().map(|u| u.0.id.0).max().unwrap_or(0) as usize;
    // Posts per author, newest first (posts are in ascending id = creation order).
    let mut by_author: Vec<Vec<(DateTime<Utc>, i64)>> = vec![Vec::new(); n_users + 1];
    for p in ds.posts.iter().rev() {
        by_author[p.author_id.0 as usize].push((p.created_at, p.id.0));
    }
    let mut followees: Vec<Vec<i64>> = vec![Vec::new(); n_users + 1];
    for f in &ds.follows {
        followees[f.follower.0 as usize].push(f.followee.0);
    }
    let mut out = Vec::new();
    if depth == 0 {
        return out;
    }
    for user in ds.users.iter().map(|u| u.0.id.0) {
        let mut heap = BinaryHeap::new();
        for author in followees[user as usize].iter().copied().chain([user]) {
            if let Some(&(at, id)) = by_author[author as usize].first() {
                heap.push((at, id, author, 0usize));
            }
        }
        let mut taken = 0;
        while let Some((at, id, author, idx)) = heap.pop() {
            out.push((user, at, id, author));
            taken += 1;
            if taken == depth {
                break;
            }
            if let Some(&(at, id)) = by_author[author as usize].get(idx + 1) {
                heap.push((at, id, author, idx + 1));
            }
        }
    }
    out
}

impl Dataset {
    /// Row counts per table, in load order.
    pub fn counts(&self) -> [(&'static str, u64); 10] {
        [
            ("users", self.users.len() as u64),
            ("follows", self.follows.len() as u64),
            ("blocks", self.blocks.len() as u64),
            ("posts", self.posts.len() as u64),
            ("media", self.media.len() as u64),
            ("post_tags", self.tags.len() as u64),
            ("orders", self.orders.len() as u64),
            ("order_items", self.order_items.len() as u64),
            ("notifications", self.notifications.len() as u64),
            ("home_timeline", self.home_timeline.len() as u64),
        ]
    }
}

// ---------------------------------------------------------------------------------------
// The tables of a data set, as typed cells that each backend writes in its own format.

/// One value of a generated row.
#[derive(Clone, Copy, Debug)]
enum Cell<'a> {
    Int(i64),
    Text(&'a str),
    Bool(bool),
    Time(DateTime<Utc>),
    Null,
}

fn opt_int(v: Option<i64>) -> Cell<'static> {
    v.map_or(Cell::Null, Cell::Int)
}

/// Writes row `i` of a table as cells, in the table's column order.
type RowWriter<'a> = Box<dyn Fn(usize, &mut Vec<Cell<'a>>) + 'a>;

/// One table of a data set: its name, its column list and its rows.
struct Table<'a> {
    name: &'static str,
    columns: &'static str,
    rows: usize,
    row: RowWriter<'a>,
}

/// Every table of `ds`, parents before children.
fn tables(ds: &Dataset) -> Vec<Table<'_>> {
    use Cell::{Bool, Int, Null, Text, Time};
    vec![
        Table {
            name: "users",
            columns: "(id, handle, display_name, bio, avatar_url, verified, creator, private, created_at)",
            rows: ds.users.len(),
            row: Box::new(|i, r| {
                let (u, f) = &ds.users[i];
                r.extend([
                    Int(u.id.0),
                    Text(&u.handle),
                    Text(&u.display_name),
                    Text(&u.bio),
                    u.avatar_url.as_deref().map_or(Null, Text),
                    Bool(f.verified),
                    Bool(f.creator),
                    Bool(f.private),
                    Time(u.created_at),
                ]);
            }),
        },
        Table {
            name: "follows",
            columns: "(follower_id, followee_id, created_at)",
            rows: ds.follows.len(),
            row: Box::new(|i, r| {
                let f = &ds.follows[i];
                r.extend([Int(f.follower.0), Int(f.followee.0), Time(f.created_at)]);
            }),
        },
        Table {
            name: "blocks",
            columns: "(blocker_id, blocked_id, created_at)",
            rows: ds.blocks.len(),
            row: Box::new(|i, r| {
                let b = &ds.blocks[i];
                r.extend([Int(b.blocker.0), Int(b.blocked.0), Time(b.created_at)]);
            }),
        },
        Table {
            name: "posts",
            columns: "(id, author_id, kind, body, price_cents, currency, product_url, created_at)",
            rows: ds.posts.len(),
            row: Box::new(|i, r| {
                let p = &ds.posts[i];
                r.extend([
                    Int(p.id.0),
                    Int(p.author_id.0),
                    Text(p.kind.as_str()),
                    Text(&p.body),
                ]);
                match &p.wish {
                    Some(w) => r.extend([
                        Int(w.price.amount_cents),
                        Text(w.price.currency.as_str()),
                        Text(&w.product_url),
                    ]),
                    None => r.extend([Null, Null, Null]),
                }
                r.push(Time(p.created_at));
            }),
        },
        Table {
            name: "media",
            columns: "(id, post_id, kind, url, width, height, size_bytes, position)",
            rows: ds.media.len(),
            row: Box::new(|i, r| {
                let m = &ds.media[i];
                r.extend([
                    Int(m.id.0),
                    Int(m.post_id.0),
                    Text(m.kind.as_str()),
                    Text(&m.url),
                    Int(m.width.into()),
                    Int(m.height.into()),
                    Int(m.size_bytes),
                    Int(m.position.into()),
                ]);
            }),
        },
        Table {
            name: "post_tags",
            columns: "(post_id, tag)",
            rows: ds.tags.len(),
            row: Box::new(|i, r| {
                let (post, tag) = ds.tags[i];
                r.extend([Int(post), Text(tag)]);
            }),
        },
        Table {
            name: "orders",
            columns: "(id, customer_id, status, total_cents, currency, created_at, updated_at)",
            rows: ds.orders.len(),
            row: Box::new(|i, r| {
                let o = &ds.orders[i];
                r.extend([
                    Int(o.id.0),
                    Int(o.customer_id.0),
                    Text(o.status.as_str()),
                    Int(o.total.amount_cents),
                    Text(o.total.currency.as_str()),
                    Time(o.created_at),
                    Time(o.updated_at),
                ]);
            }),
        },
        Table {
            name: "order_items",
            columns: "(order_id, post_id, quantity, unit_price_cents, currency)",
            rows: ds.order_items.len(),
            row: Box::new(|i, r| {
                let it = &ds.order_items[i];
                r.extend([
                    Int(it.order_id.0),
                    Int(it.post_id.0),
                    Int(it.quantity.into()),
                    Int(it.unit_price.amount_cents),
                    Text(it.unit_price.currency.as_str()),
                ]);
            }),
        },
        Table {
            name: "notifications",
            columns: "(id, user_id, kind, actor_id, post_id, order_id, created_at)",
            rows: ds.notifications.len(),
            row: Box::new(|i, r| {
                let n = &ds.notifications[i];
                r.extend([
                    Int(n.id.0),
                    Int(n.user_id.0),
                    Text(n.kind.as_str()),
                    opt_int(n.actor_id.map(|v| v.0)),
                    opt_int(n.post_id.map(|v| v.0)),
                    opt_int(n.order_id.map(|v| v.0)),
                    Time(n.created_at),
                ]);
            }),
        },
        Table {
            name: "home_timeline",
            columns: "(user_id, created_at, post_id, author_id)",
            rows: ds.home_timeline.len(),
            row: Box::new(|i, r| {
                let (user, at, post, author) = ds.home_timeline[i];
                r.extend([Int(user), Time(at), Int(post), Int(author)]);
            }),
        },
    ]
}

// ---------------------------------------------------------------------------------------
// PostgreSQL: COPY in text format.

/// Appends a text value in COPY text format, escaping backslash, tab and line breaks.
fn copy_text(buf: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => buf.push_str("\\\\"),
            '\t' => buf.push_str("\\t"),
            '\n' => buf.push_str("\\n"),
            '\r' => buf.push_str("\\r"),
            c => buf.push(c),
        }
    }
}

/// Appends one row as a COPY text line: tab-separated, `\N` for NULL.
fn copy_line(buf: &mut String, cells: &[Cell<'_>]) {
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            buf.push('\t');
        }
        match *cell {
            Cell::Int(v) => {
                let _ = write!(buf, "{v}");
            }
            Cell::Text(s) => copy_text(buf, s),
            Cell::Bool(v) => buf.push(if v { 't' } else { 'f' }),
            Cell::Time(t) => {
                let _ = write!(buf, "{}", t.format("%Y-%m-%d %H:%M:%S%.6f+00"));
            }
            Cell::Null => buf.push_str("\\N"),
        }
    }
    buf.push('\n');
}

const COPY_CHUNK_ROWS: usize = 20_000;

impl PgStore {
    /// Loads `dataset` with `COPY` into an empty database (see [`PgStore::reset`]), then
    /// moves the identity sequences past the loaded ids and analyzes the tables.
    ///
    /// Follows PostgreSQL's advice for populating a database: foreign keys and secondary
    /// indexes are dropped, the rows copied, then the indexes built and the keys validated
    /// in bulk, all in one transaction, so a failure leaves the database as it was. Per-row
    /// foreign-key triggers were 73 % of the load time of `home_timeline` on this machine.
    pub async fn load_dataset(
        &self,
        ds: &Dataset,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Vec<(&'static str, u64, StdDuration)>, StoreError> {
        let tables = tables(ds);
        let names: Vec<String> = tables.iter().map(|t| t.name.to_owned()).collect();
        let mut tx = self.pool().begin().await?;
        let foreign_keys: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT conrelid::regclass::text, conname::text, pg_get_constraintdef(oid)
             FROM pg_constraint
             WHERE contype = 'f' AND conrelid::regclass::text = ANY($1)",
        )
        .bind(&names)
        .fetch_all(&mut *tx)
        .await?;
        let indexes: Vec<(String, String)> = sqlx::query_as(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
             FROM pg_index i
             WHERE i.indrelid::regclass::text = ANY($1)
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
        )
        .bind(&names)
        .fetch_all(&mut *tx)
        .await?;
        for (table, name, _) in &foreign_keys {
            let sql = format!("ALTER TABLE {table} DROP CONSTRAINT {name}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await?;
        }
        for (name, _) in &indexes {
            let sql = format!("DROP INDEX {name}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await?;
        }

        let mut report = Vec::new();
        let mut buf = String::with_capacity(4 << 20);
        let mut cells = Vec::new();
        for t in &tables {
            let started = Instant::now();
            progress(Progress::Start {
                table: t.name,
                rows: t.rows as u64,
            });
            let statement = format!("COPY {} {} FROM STDIN", t.name, t.columns);
            let mut copy = tx.copy_in_raw(&statement).await?;
            for chunk_start in (0..t.rows).step_by(COPY_CHUNK_ROWS) {
                buf.clear();
                let end = (chunk_start + COPY_CHUNK_ROWS).min(t.rows);
                for i in chunk_start..end {
                    cells.clear();
                    (t.row)(i, &mut cells);
                    copy_line(&mut buf, &cells);
                }
                copy.send(buf.as_bytes()).await?;
                progress(Progress::Advance {
                    table: t.name,
                    rows: (end - chunk_start) as u64,
                });
            }
            let rows = copy.finish().await?;
            progress(Progress::Finish { table: t.name });
            report.push((t.name, rows, started.elapsed()));
        }

        let started = Instant::now();
        let constraints = indexes.len() + foreign_keys.len();
        progress(Progress::Start {
            table: "indexes+keys",
            rows: constraints as u64,
        });
        for (_, def) in &indexes {
            sqlx::raw_sql(sqlx::AssertSqlSafe(def.clone()))
                .execute(&mut *tx)
                .await?;
            progress(Progress::Advance {
                table: "indexes+keys",
                rows: 1,
            });
        }
        for (table, name, def) in &foreign_keys {
            let sql = format!("ALTER TABLE {table} ADD CONSTRAINT {name} {def}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await?;
            progress(Progress::Advance {
                table: "indexes+keys",
                rows: 1,
            });
        }
        progress(Progress::Finish {
            table: "indexes+keys",
        });
        tx.commit().await?;
        report.push(("indexes+keys", 0, started.elapsed()));

        sqlx::raw_sql(
            "SELECT setval(pg_get_serial_sequence('users', 'id'), COALESCE(max(id), 0) + 1, false) FROM users;
             SELECT setval(pg_get_serial_sequence('posts', 'id'), COALESCE(max(id), 0) + 1, false) FROM posts;
             SELECT setval(pg_get_serial_sequence('media', 'id'), COALESCE(max(id), 0) + 1, false) FROM media;
             SELECT setval(pg_get_serial_sequence('orders', 'id'), COALESCE(max(id), 0) + 1, false) FROM orders;
             SELECT setval(pg_get_serial_sequence('notifications', 'id'), COALESCE(max(id), 0) + 1, false) FROM notifications;
             ANALYZE;",
        )
        .execute(self.pool())
        .await?;
        Ok(report)
    }

    /// Whether the data tables hold any user.
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        let any = sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM users) AS "any!""#)
            .fetch_one(self.pool())
            .await?;
        Ok(!any)
    }

    /// Deletes every row of every data table (the schema stays).
    pub async fn reset(&self) -> Result<(), StoreError> {
        sqlx::raw_sql(
            "TRUNCATE users, follows, blocks, posts, media, post_tags, orders, order_items,
                      notifications, outbox, home_timeline, idempotency_keys RESTART IDENTITY",
        )
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// SQLite: multi-row INSERTs in one transaction per table.

/// Rows per INSERT statement: SQLite allows 32,766 bound variables per statement.
const SQLITE_ROWS_PER_INSERT: usize = 500;

impl SqliteStore {
    /// Loads `dataset` into an empty database with batched multi-row inserts, one
    /// transaction per table.
    pub async fn load_dataset(
        &self,
        ds: &Dataset,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Vec<(&'static str, u64, StdDuration)>, StoreError> {
        let mut report = Vec::new();
        let mut cells = Vec::new();
        for t in tables(ds) {
            let started = Instant::now();
            progress(Progress::Start {
                table: t.name,
                rows: t.rows as u64,
            });
            let mut tx = self.pool().begin().await?;
            for chunk_start in (0..t.rows).step_by(SQLITE_ROWS_PER_INSERT) {
                let end = (chunk_start + SQLITE_ROWS_PER_INSERT).min(t.rows);
                let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!(
                    "INSERT INTO {} {} ",
                    t.name, t.columns
                ));
                qb.push_values(chunk_start..end, |mut b, i| {
                    cells.clear();
                    (t.row)(i, &mut cells);
                    for cell in &cells {
                        match *cell {
                            Cell::Int(v) => b.push_bind(v),
                            Cell::Text(s) => b.push_bind(s.to_owned()),
                            Cell::Bool(v) => b.push_bind(v),
                            Cell::Time(t) => b.push_bind(to_micros(t)),
                            Cell::Null => b.push_bind(None::<i64>),
                        };
                    }
                });
                qb.build().execute(&mut *tx).await?;
                progress(Progress::Advance {
                    table: t.name,
                    rows: (end - chunk_start) as u64,
                });
            }
            tx.commit().await?;
            progress(Progress::Finish { table: t.name });
            report.push((t.name, t.rows as u64, started.elapsed()));
        }
        sqlx::query("ANALYZE").execute(self.pool()).await?;
        Ok(report)
    }

    /// Whether the data tables hold any user.
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)")
            .fetch_one(self.pool())
            .await?;
        Ok(!any)
    }

    /// Deletes every row of every data table (the schema stays).
    pub async fn reset(&self) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        for table in [
            "idempotency_keys",
            "home_timeline",
            "notifications",
            "order_items",
            "orders",
            "post_tags",
            "media",
            "posts",
            "blocks",
            "follows",
            "outbox",
            "users",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SeedConfig {
        SeedConfig {
            users: 300,
            posts_per_user: 6,
            follows_per_user: 12,
            seed: 7,
            timeline_depth: 50,
        }
    }

    #[test]
    fn the_same_seed_generates_the_same_rows_and_another_seed_does_not() {
        let a = generate(&small());
        assert_eq!(a, generate(&small()));
        assert_ne!(a, generate(&SeedConfig { seed: 8, ..small() }));
    }

    #[test]
    fn the_data_set_has_the_promised_shape() {
        let ds = generate(&SeedConfig {
            users: 2000,
            ..small()
        });
        let wishes = ds.posts.iter().filter(|p| p.kind == PostKind::Wish).count();
        let share = wishes as f64 / ds.posts.len() as f64;
        assert!((0.28..0.39).contains(&share), "wish share {share}");
        // Skew: the most-followed account has far more followers than the median one.
        let mut followers = vec![0u32; 2001];
        for f in &ds.follows {
            followers[f.followee.0 as usize] += 1;
        }
        let max = *followers.iter().max().unwrap();
        let mut sorted = followers[1..].to_vec();
        sorted.sort_unstable();
        assert!(max > 20 * sorted[sorted.len() / 2].max(1), "max {max}");
        // Every status occurs, media and tags stay in range, blocks exist.
        for s in OrderStatus::ALL {
            assert!(ds.orders.iter().any(|o| o.status == *s), "{s}");
        }
        assert!(ds.media.iter().all(|m| (0..4).contains(&m.position)));
        assert!(!ds.blocks.is_empty());
        // A block removes follows both ways.
        let follows: HashSet<(UserId, UserId)> = ds
            .follows
            .iter()
            .map(|f| (f.follower, f.followee))
            .collect();
        for b in &ds.blocks {
            assert!(
                !follows.contains(&(b.blocker, b.blocked))
                    && !follows.contains(&(b.blocked, b.blocker))
            );
        }
    }

    #[test]
    fn home_timelines_are_the_newest_posts_of_followees_and_self() {
        let ds = generate(&small());
        let user = UserId(5);
        let mut authors: HashSet<UserId> = ds
            .follows
            .iter()
            .filter(|f| f.follower == user)
            .map(|f| f.followee)
            .collect();
        authors.insert(user);
        let mut expected: Vec<(DateTime<Utc>, i64)> = ds
            .posts
            .iter()
            .filter(|p| authors.contains(&p.author_id))
            .map(|p| (p.created_at, p.id.0))
            .collect();
        expected.sort_unstable_by(|a, b| b.cmp(a));
        expected.truncate(50);
        let got: Vec<(DateTime<Utc>, i64)> = ds
            .home_timeline
            .iter()
            .filter(|h| h.0 == user.0)
            .map(|h| (h.1, h.2))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn copy_lines_escape_the_format_specials_and_mark_nulls() {
        let mut b = String::new();
        copy_line(
            &mut b,
            &[
                Cell::Text("a\tb\\c\nd"),
                Cell::Null,
                Cell::Int(-3),
                Cell::Bool(true),
            ],
        );
        assert_eq!(b, "a\\tb\\\\c\\nd\t\\N\t-3\tt\n");
    }
}
