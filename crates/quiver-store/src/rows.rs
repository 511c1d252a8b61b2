//! Backend-neutral row shapes and the one conversion of each into its entity. A backend
//! reads its columns into these (PostgreSQL by `query_as!`, SQLite by `FromRow`); the
//! only thing that differs is how a time is stored, the shapes' type parameter.

use crate::StoreError;
use chrono::{DateTime, Utc};
use quiver_model::{
    EventId, Follow, FollowEdge, Media, MediaId, Money, Notification, NotificationId, Order,
    OrderId, OrderItem, OrderRef, OutboxEvent, Post, PostId, PostKind, PostRef, User, UserFlags,
    UserId, Wish,
};
use std::collections::HashMap;
use std::hash::Hash;

/// A stored time: PostgreSQL's `timestamptz`, or SQLite's integer [`Micros`].
pub(crate) trait Stamp {
    fn time(self) -> Result<DateTime<Utc>, StoreError>;
}

impl Stamp for DateTime<Utc> {
    fn time(self) -> Result<DateTime<Utc>, StoreError> {
        Ok(self)
    }
}

/// A time as SQLite stores it: integer microseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::Type)]
#[sqlx(transparent)]
pub(crate) struct Micros(pub(crate) i64);

impl From<DateTime<Utc>> for Micros {
    fn from(t: DateTime<Utc>) -> Self {
        Self(t.timestamp_micros())
    }
}

impl Stamp for Micros {
    fn time(self) -> Result<DateTime<Utc>, StoreError> {
        DateTime::from_timestamp_micros(self.0).ok_or_else(|| corrupt("timestamp", self.0))
    }
}

pub(crate) fn corrupt(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {err}"))
}

/// Minor units and a stored currency code as `Money`.
pub(crate) fn money(cents: i64, currency: &str) -> Result<Money, StoreError> {
    Ok(Money {
        amount_cents: cents,
        currency: currency.parse().map_err(|e| corrupt("currency", e))?,
    })
}

/// A stored enum text as its domain type.
pub(crate) fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e| corrupt(what, e))
}

/// Collects `(key, value)` rows into per-key lists, keeping row order within each list.
pub(crate) fn group<K: Eq + Hash, V>(
    rows: impl IntoIterator<Item = Result<(K, V), StoreError>>,
) -> Result<HashMap<K, Vec<V>>, StoreError> {
    let mut out: HashMap<K, Vec<V>> = HashMap::new();
    for row in rows {
        let (k, v) = row?;
        out.entry(k).or_default().push(v);
    }
    Ok(out)
}

/// Rows converted by `entity` into a map by key.
pub(crate) fn keyed<R, K: Eq + Hash, V>(
    rows: Vec<R>,
    entity: impl Fn(R) -> Result<(K, V), StoreError>,
) -> Result<HashMap<K, V>, StoreError> {
    rows.into_iter().map(entity).collect()
}

/// `users` as a profile.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct UserRow<T = DateTime<Utc>> {
    pub(crate) id: i64,
    pub(crate) handle: String,
    pub(crate) display_name: String,
    pub(crate) bio: String,
    pub(crate) avatar_url: Option<String>,
    pub(crate) created_at: T,
}

impl<T: Stamp> UserRow<T> {
    pub(crate) fn entity(self) -> Result<(UserId, User), StoreError> {
        let u = User {
            id: UserId(self.id),
            handle: self.handle,
            display_name: self.display_name,
            bio: self.bio,
            avatar_url: self.avatar_url,
            created_at: self.created_at.time()?,
        };
        Ok((u.id, u))
    }
}

/// `users` as flags.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct FlagsRow {
    pub(crate) id: i64,
    pub(crate) verified: bool,
    pub(crate) creator: bool,
    pub(crate) private: bool,
}

impl FlagsRow {
    pub(crate) fn entity(self) -> Result<(UserId, UserFlags), StoreError> {
        let flags = UserFlags {
            verified: self.verified,
            creator: self.creator,
            private: self.private,
        };
        Ok((UserId(self.id), flags))
    }
}

/// `posts`; the wish columns are set exactly for wishes.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct PostRow<T = DateTime<Utc>> {
    pub(crate) id: i64,
    pub(crate) author_id: i64,
    pub(crate) kind: String,
    pub(crate) body: String,
    pub(crate) price_cents: Option<i64>,
    pub(crate) currency: Option<String>,
    pub(crate) product_url: Option<String>,
    pub(crate) created_at: T,
}

impl<T: Stamp> PostRow<T> {
    pub(crate) fn entity(self) -> Result<(PostId, Post), StoreError> {
        let kind: PostKind = parse("post kind", &self.kind)?;
        let wish = match (kind, self.price_cents, self.currency, self.product_url) {
            (PostKind::Wish, Some(cents), Some(cur), Some(url)) => Some(Wish {
                price: money(cents, &cur)?,
                product_url: url,
            }),
            (PostKind::Post, None, None, None) => None,
            _ => {
                return Err(corrupt(
                    "post",
                    format!("wish fields of post {} do not match its kind", self.id),
                ));
            }
        };
        let p = Post {
            id: PostId(self.id),
            author_id: UserId(self.author_id),
            kind,
            body: self.body,
            wish,
            created_at: self.created_at.time()?,
        };
        Ok((p.id, p))
    }
}

/// `media`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct MediaRow {
    pub(crate) id: i64,
    pub(crate) post_id: i64,
    pub(crate) kind: String,
    pub(crate) url: String,
    pub(crate) width: i32,
    pub(crate) height: i32,
    pub(crate) size_bytes: i64,
    pub(crate) position: i16,
}

impl MediaRow {
    pub(crate) fn entity(self) -> Result<(PostId, Media), StoreError> {
        let m = Media {
            id: MediaId(self.id),
            post_id: PostId(self.post_id),
            kind: parse("media kind", &self.kind)?,
            url: self.url,
            width: self.width,
            height: self.height,
            size_bytes: self.size_bytes,
            position: self.position,
        };
        Ok((m.post_id, m))
    }
}

/// `post_tags`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct TagRow {
    pub(crate) post_id: i64,
    pub(crate) tag: String,
}

impl TagRow {
    pub(crate) fn entity(self) -> Result<(PostId, String), StoreError> {
        Ok((PostId(self.post_id), self.tag))
    }
}

/// `orders`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct OrderRow<T = DateTime<Utc>> {
    pub(crate) id: i64,
    pub(crate) customer_id: i64,
    pub(crate) status: String,
    pub(crate) total_cents: i64,
    pub(crate) currency: String,
    pub(crate) created_at: T,
    pub(crate) updated_at: T,
}

impl<T: Stamp> OrderRow<T> {
    pub(crate) fn entity(self) -> Result<(OrderId, Order), StoreError> {
        let o = Order {
            id: OrderId(self.id),
            customer_id: UserId(self.customer_id),
            status: parse("order status", &self.status)?,
            total: money(self.total_cents, &self.currency)?,
            created_at: self.created_at.time()?,
            updated_at: self.updated_at.time()?,
        };
        Ok((o.id, o))
    }
}

/// `order_items`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct OrderItemRow {
    pub(crate) order_id: i64,
    pub(crate) post_id: i64,
    pub(crate) quantity: i32,
    pub(crate) unit_price_cents: i64,
    pub(crate) currency: String,
}

impl OrderItemRow {
    pub(crate) fn entity(self) -> Result<(OrderId, OrderItem), StoreError> {
        let item = OrderItem {
            order_id: OrderId(self.order_id),
            post_id: PostId(self.post_id),
            quantity: self.quantity,
            unit_price: money(self.unit_price_cents, &self.currency)?,
        };
        Ok((item.order_id, item))
    }
}

/// `follows`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct FollowRow<T = DateTime<Utc>> {
    pub(crate) follower_id: i64,
    pub(crate) followee_id: i64,
    pub(crate) created_at: T,
}

impl<T: Stamp> FollowRow<T> {
    pub(crate) fn entity(self) -> Result<(FollowEdge, Follow), StoreError> {
        let edge = FollowEdge {
            follower: UserId(self.follower_id),
            followee: UserId(self.followee_id),
        };
        let follow = Follow {
            follower: edge.follower,
            followee: edge.followee,
            created_at: self.created_at.time()?,
        };
        Ok((edge, follow))
    }
}

/// `notifications`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct NotificationRow<T = DateTime<Utc>> {
    pub(crate) id: i64,
    pub(crate) user_id: i64,
    pub(crate) kind: String,
    pub(crate) actor_id: Option<i64>,
    pub(crate) post_id: Option<i64>,
    pub(crate) order_id: Option<i64>,
    pub(crate) created_at: T,
    pub(crate) read_at: Option<T>,
}

impl<T: Stamp> NotificationRow<T> {
    pub(crate) fn entity(self) -> Result<Notification, StoreError> {
        Ok(Notification {
            id: NotificationId(self.id),
            user_id: UserId(self.user_id),
            kind: parse("notification kind", &self.kind)?,
            actor_id: self.actor_id.map(UserId),
            post_id: self.post_id.map(PostId),
            order_id: self.order_id.map(OrderId),
            created_at: self.created_at.time()?,
            read_at: self.read_at.map(Stamp::time).transpose()?,
        })
    }
}

/// One row of a skeleton query: a position in a keyset-ordered list.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RefRow<T = DateTime<Utc>> {
    pub(crate) id: i64,
    pub(crate) created_at: T,
}

impl<T: Stamp> RefRow<T> {
    /// The row with its time decoded.
    pub(crate) fn timed(self) -> Result<RefRow, StoreError> {
        Ok(RefRow {
            id: self.id,
            created_at: self.created_at.time()?,
        })
    }
}

impl From<RefRow> for PostRef {
    fn from(r: RefRow) -> Self {
        PostRef {
            id: PostId(r.id),
            created_at: r.created_at,
        }
    }
}

impl From<RefRow> for OrderRef {
    fn from(r: RefRow) -> Self {
        OrderRef {
            id: OrderId(r.id),
            created_at: r.created_at,
        }
    }
}

/// `outbox`, as the relay claims it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct OutboxRow<T = DateTime<Utc>> {
    pub(crate) id: i64,
    pub(crate) kind: String,
    #[sqlx(json)]
    pub(crate) payload: serde_json::Value,
    pub(crate) created_at: T,
    pub(crate) trace_context: Option<String>,
}

impl<T: Stamp> OutboxRow<T> {
    pub(crate) fn entity(self) -> Result<OutboxEvent, StoreError> {
        Ok(OutboxEvent {
            id: EventId(self.id),
            kind: parse("event kind", &self.kind)?,
            payload: self.payload,
            created_at: self.created_at.time()?,
            published_at: None,
            trace_context: self.trace_context,
        })
    }
}
