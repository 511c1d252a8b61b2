//! A deterministic, realistic data set, and the fastest way to load it into each backend:
//! `COPY` for PostgreSQL, batched transactions for SQLite.
//!
//! The same [`SeedConfig`] always generates the same rows (ChaCha8 from a fixed seed, a
//! fixed epoch, no clock reads). The shape follows real social graphs: follower counts are
//! Zipf-distributed (a few accounts with very many followers), out-degrees are Pareto
//! (some users follow thousands), about a third of posts are wishes, posts carry 0–4 media
//! and 0–5 tags, and orders exist in every status.
//!
//! [`generate`] builds the rows in memory; `tables` presents them as typed cells, which
//! each backend's bulk loader (`pg/bulk.rs`, `sqlite/bulk.rs`) writes in its own format.

mod generate;
mod tables;

pub use generate::generate;
pub(crate) use tables::{Cell, tables};

use chrono::{DateTime, Utc};
use quiver_model::{Block, Follow, Media, Notification, Order, OrderItem, Post, User, UserFlags};
use std::time::Duration as StdDuration;

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
