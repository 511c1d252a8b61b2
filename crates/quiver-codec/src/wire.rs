//! Wire types: the JSON shapes of every response, and the explicit conversions from
//! domain entities. Conventions, for every type here:
//!
//! - field names are snake_case; ids are JSON numbers; money is integer minor units
//!   (`price_cents`) with an ISO 4217 `currency`;
//! - timestamps are RFC 3339 in UTC with microseconds: `2026-03-01T12:00:00.000000Z`;
//! - an optional field is always present, as `null` when it has no value (never omitted),
//!   so clients can rely on the shape.

use chrono::{DateTime, SecondsFormat, Utc};
use quiver_model::{Media, Notification, Order, OrderItem, Post, User, UserFlags};
use serde::{Deserialize, Serialize};

/// Formats a timestamp the one way the API does.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A post's author as embedded in feed items and posts.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    simd_json_derive::Serialize,
    utoipa::ToSchema,
)]
pub struct AuthorWire {
    pub id: i64,
    pub handle: String,
    pub display_name: String,
    #[schema(required = true)]
    pub avatar_url: Option<String>,
    pub verified: bool,
    pub creator: bool,
}

impl AuthorWire {
    /// The author part of `user` with its flags.
    pub fn new(user: &User, flags: &UserFlags) -> Self {
        Self {
            id: user.id.0,
            handle: user.handle.clone(),
            display_name: user.display_name.clone(),
            avatar_url: user.avatar_url.clone(),
            verified: flags.verified,
            creator: flags.creator,
        }
    }
}

/// One media attachment.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    simd_json_derive::Serialize,
    utoipa::ToSchema,
)]
pub struct MediaWire {
    pub url: String,
    pub kind: String,
    pub width: i32,
    pub height: i32,
    pub size_bytes: i64,
    pub position: i16,
}

impl From<&Media> for MediaWire {
    fn from(m: &Media) -> Self {
        Self {
            url: m.url.clone(),
            kind: m.kind.as_str().to_owned(),
            width: m.width,
            height: m.height,
            size_bytes: m.size_bytes,
            position: m.position,
        }
    }
}

/// The buyable part of a wish.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    simd_json_derive::Serialize,
    utoipa::ToSchema,
)]
pub struct WishWire {
    pub price_cents: i64,
    pub currency: String,
    pub product_url: String,
}

/// How the viewer relates to an item's author; `null` for anonymous requests.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    simd_json_derive::Serialize,
    utoipa::ToSchema,
)]
pub struct ViewerWire {
    pub follows_author: bool,
    pub followed_by_author: bool,
}

/// A post as the API shows it: in feeds, in a user's posts, and alone.
///
/// Field order matters: everything up to `wish` is the post's cached fragment, then the
/// author's fragment, then the per-viewer part (see [`crate::fragment`]).
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    simd_json_derive::Serialize,
    utoipa::ToSchema,
)]
pub struct FeedItemWire {
    pub id: i64,
    pub kind: String,
    pub body: String,
    pub created_at: String,
    pub media: Vec<MediaWire>,
    pub tags: Vec<String>,
    #[schema(required = true)]
    pub wish: Option<WishWire>,
    pub author: AuthorWire,
    #[schema(required = true)]
    pub viewer: Option<ViewerWire>,
}

/// The post-owned part of a [`FeedItemWire`]: what a post fragment encodes.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    simd_json_derive::Serialize,
    utoipa::ToSchema,
)]
pub struct PostFieldsWire {
    pub id: i64,
    pub kind: String,
    pub body: String,
    pub created_at: String,
    pub media: Vec<MediaWire>,
    pub tags: Vec<String>,
    #[schema(required = true)]
    pub wish: Option<WishWire>,
}

impl PostFieldsWire {
    /// The post with its media (in position order) and tags.
    pub fn new(post: &Post, media: &[Media], tags: &[String]) -> Self {
        Self {
            id: post.id.0,
            kind: post.kind.as_str().to_owned(),
            body: post.body.clone(),
            created_at: timestamp(post.created_at),
            media: media.iter().map(MediaWire::from).collect(),
            tags: tags.to_vec(),
            wish: post.wish.as_ref().map(|w| WishWire {
                price_cents: w.price.amount_cents,
                currency: w.price.currency.as_str().to_owned(),
                product_url: w.product_url.clone(),
            }),
        }
    }

    /// The full item: these fields, the author and the viewer part.
    pub fn into_item(self, author: AuthorWire, viewer: Option<ViewerWire>) -> FeedItemWire {
        FeedItemWire {
            id: self.id,
            kind: self.kind,
            body: self.body,
            created_at: self.created_at,
            media: self.media,
            tags: self.tags,
            wish: self.wish,
            author,
            viewer,
        }
    }
}

/// A page of a feed. `seed` is set on the discovery feed (send it back to continue the
/// same shuffle) and `null` elsewhere; `next_page` is `null` on the last page. `partial`
/// names the optional parts (`media`, `tags`) that could not be loaded, so items show them
/// empty; it is `[]` on a complete page.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    simd_json_derive::Serialize,
    utoipa::ToSchema,
)]
pub struct FeedPageWire {
    pub items: Vec<FeedItemWire>,
    #[schema(required = true)]
    pub next_page: Option<String>,
    #[schema(required = true)]
    pub seed: Option<u64>,
    pub partial: Vec<String>,
}

/// One post on its own (`GET /posts/{id}`): a feed item plus `partial`, as on pages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PostDetailWire {
    #[serde(flatten)]
    pub item: FeedItemWire,
    pub partial: Vec<String>,
}

/// A user's profile, with the viewer's relationship when there is a viewer.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    simd_json_derive::Serialize,
    utoipa::ToSchema,
)]
pub struct ProfileWire {
    pub id: i64,
    pub handle: String,
    pub display_name: String,
    pub bio: String,
    #[schema(required = true)]
    pub avatar_url: Option<String>,
    pub verified: bool,
    pub creator: bool,
    /// A badge the user chose ("prefers a small audience"). It restricts nothing: posts
    /// are public, and follows need no approval (quiver has no follow requests).
    pub private: bool,
    pub created_at: String,
    #[schema(required = true)]
    pub viewer: Option<ViewerWire>,
}

impl ProfileWire {
    /// The profile of `user` as seen by a viewer (`None` for anonymous requests).
    pub fn new(user: &User, flags: &UserFlags, viewer: Option<ViewerWire>) -> Self {
        Self {
            id: user.id.0,
            handle: user.handle.clone(),
            display_name: user.display_name.clone(),
            bio: user.bio.clone(),
            avatar_url: user.avatar_url.clone(),
            verified: flags.verified,
            creator: flags.creator,
            private: flags.private,
            created_at: timestamp(user.created_at),
            viewer,
        }
    }
}

/// One line of an order.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    simd_json_derive::Serialize,
    utoipa::ToSchema,
)]
pub struct OrderItemWire {
    pub post_id: i64,
    pub quantity: i32,
    pub unit_price_cents: i64,
}

impl From<&OrderItem> for OrderItemWire {
    fn from(i: &OrderItem) -> Self {
        Self {
            post_id: i.post_id.0,
            quantity: i.quantity,
            unit_price_cents: i.unit_price.amount_cents,
        }
    }
}

/// An order with its items.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    simd_json_derive::Serialize,
    utoipa::ToSchema,
)]
pub struct OrderWire {
    pub id: i64,
    pub customer_id: i64,
    pub status: String,
    pub total_cents: i64,
    pub currency: String,
    pub created_at: String,
    pub updated_at: String,
    pub items: Vec<OrderItemWire>,
}

impl OrderWire {
    /// `order` with its `items`.
    pub fn new(order: &Order, items: &[OrderItem]) -> Self {
        Self {
            id: order.id.0,
            customer_id: order.customer_id.0,
            status: order.status.as_str().to_owned(),
            total_cents: order.total.amount_cents,
            currency: order.total.currency.as_str().to_owned(),
            created_at: timestamp(order.created_at),
            updated_at: timestamp(order.updated_at),
            items: items.iter().map(OrderItemWire::from).collect(),
        }
    }
}

/// A page of a customer's orders.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    simd_json_derive::Serialize,
    utoipa::ToSchema,
)]
pub struct OrdersPageWire {
    pub items: Vec<OrderWire>,
    #[schema(required = true)]
    pub next_page: Option<String>,
}

/// One notification.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    simd_json_derive::Serialize,
    utoipa::ToSchema,
)]
pub struct NotificationWire {
    pub id: i64,
    pub kind: String,
    #[schema(required = true)]
    pub actor_id: Option<i64>,
    #[schema(required = true)]
    pub post_id: Option<i64>,
    #[schema(required = true)]
    pub order_id: Option<i64>,
    pub created_at: String,
    pub read: bool,
}

impl From<&Notification> for NotificationWire {
    fn from(n: &Notification) -> Self {
        Self {
            id: n.id.0,
            kind: n.kind.as_str().to_owned(),
            actor_id: n.actor_id.map(|v| v.0),
            post_id: n.post_id.map(|v| v.0),
            order_id: n.order_id.map(|v| v.0),
            created_at: timestamp(n.created_at),
            read: n.read_at.is_some(),
        }
    }
}

/// A page of notifications.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    simd_json_derive::Serialize,
    utoipa::ToSchema,
)]
pub struct NotificationsPageWire {
    pub items: Vec<NotificationWire>,
    #[schema(required = true)]
    pub next_page: Option<String>,
}
