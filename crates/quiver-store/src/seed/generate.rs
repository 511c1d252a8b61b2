//! The generator: users, a skewed follow graph, posts and wishes with media and tags,
//! orders in every status, notifications and materialized home timelines, all drawn from
//! one ChaCha8 stream so the same config always gives the same rows.

use super::{Dataset, SeedConfig};
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
}
