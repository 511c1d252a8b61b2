//! The domain entities. These are not wire types: the codec converts them explicitly.

use crate::cursor::Cursor;
use crate::ids::{EventId, MediaId, NotificationId, OrderId, PostId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

/// A string did not name any variant of an enum stored as text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct ParseEnumError {
    kind: &'static str,
    value: String,
}

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The text stored in the database and used on the wire.
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(ParseEnumError { kind: $what, value: s.to_owned() }),
                }
            }
        }
    };
}

text_enum!(
    /// Whether a post is a plain post or a wish someone can buy.
    PostKind, "post kind" { Post = "post", Wish = "wish" }
);
text_enum!(
    /// The kind of a media attachment.
    MediaKind, "media kind" { Image = "image", Video = "video" }
);
text_enum!(
    /// The life cycle of an order.
    OrderStatus, "order status" {
        /// Created, not yet paid.
        Pending = "pending",
        /// Paid and being fulfilled; the hot query of the orders page.
        Active = "active",
        /// Handed to the carrier.
        Shipped = "shipped",
        /// Will not be fulfilled.
        Cancelled = "cancelled",
    }
);
text_enum!(
    /// What a notification tells its user.
    NotificationKind, "notification kind" {
        /// Someone followed the user.
        Followed = "followed",
        /// Someone bought one of the user's wishes.
        WishBought = "wish_bought",
        /// The user's order was confirmed.
        OrderConfirmed = "order_confirmed",
    }
);
text_enum!(
    /// The kind of an outbox event; the text is the event's name on the stream.
    EventKind, "event kind" {
        PostCreated = "post.created",
        PostDeleted = "post.deleted",
        UserFollowed = "user.followed",
        UserUnfollowed = "user.unfollowed",
        UserBlocked = "user.blocked",
        UserUnblocked = "user.unblocked",
        OrderCreated = "order.created",
    }
);

/// An ISO 4217 currency code: three ASCII capital letters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

/// A currency code that is not three ASCII capital letters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("currency must be three capital letters, got {0:?}")]
pub struct CurrencyError(String);

impl Currency {
    /// The code as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("validated ascii")
    }
}

impl FromStr for Currency {
    type Err = CurrencyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => Ok(Self([*a, *b, *c])),
            _ => Err(CurrencyError(s.to_owned())),
        }
    }
}

impl TryFrom<String> for Currency {
    type Error = CurrencyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> Self {
        c.as_str().to_owned()
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.as_str())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount in minor units (cents) of a currency; never a float.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Amount in minor units.
    pub amount_cents: i64,
    /// The currency of the amount.
    pub currency: Currency,
}

/// A user's public profile data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    /// Unique, lowercase handle.
    pub handle: String,
    pub display_name: String,
    pub bio: String,
    pub avatar_url: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Flags shown next to a user's name, loaded and cached apart from the profile because
/// they change on a different schedule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UserFlags {
    pub verified: bool,
    pub creator: bool,
    /// A badge only: no read, follow or feed path consults it (there are no follow
    /// requests to gate posts on).
    pub private: bool,
}

/// `follower` follows `followee`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Follow {
    pub follower: UserId,
    pub followee: UserId,
    pub created_at: DateTime<Utc>,
}

/// `blocker` blocks `blocked`: neither sees the other's posts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Block {
    pub blocker: UserId,
    pub blocked: UserId,
    pub created_at: DateTime<Utc>,
}

/// The buyable part of a wish.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Wish {
    pub price: Money,
    pub product_url: String,
}

/// A post or a wish. `wish` is `Some` exactly when `kind` is [`PostKind::Wish`]; the schema
/// enforces it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Post {
    pub id: PostId,
    pub author_id: UserId,
    pub kind: PostKind,
    pub body: String,
    pub wish: Option<Wish>,
    pub created_at: DateTime<Utc>,
}

impl Post {
    /// The keyset position of this post.
    pub fn as_ref(&self) -> PostRef {
        PostRef {
            id: self.id,
            created_at: self.created_at,
        }
    }
}

/// A media attachment; `position` orders the attachments of one post.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    pub id: MediaId,
    pub post_id: PostId,
    pub kind: MediaKind,
    pub url: String,
    pub width: i32,
    pub height: i32,
    /// Size of the file in bytes.
    pub size_bytes: i64,
    pub position: i16,
}

/// An order placed by `customer_id`. `total` is computed from the items by the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub customer_id: UserId,
    pub status: OrderStatus,
    pub total: Money,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One line of an order: a quantity of a wish at the price it had when ordered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderItem {
    pub order_id: OrderId,
    pub post_id: PostId,
    pub quantity: i32,
    pub unit_price: Money,
}

/// Something that happened that a user should hear about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: NotificationId,
    pub user_id: UserId,
    pub kind: NotificationKind,
    pub actor_id: Option<UserId>,
    pub post_id: Option<PostId>,
    pub order_id: Option<OrderId>,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
}

/// A side effect recorded in the same transaction as the write that caused it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEvent {
    pub id: EventId,
    pub kind: EventKind,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    /// The W3C `traceparent` of the request that wrote it, when that request was traced:
    /// the relay and the consumers continue its trace.
    pub trace_context: Option<String>,
}

/// A post to create, validated (by the codec, from a request body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPost {
    pub kind: PostKind,
    pub body: String,
    pub media: Vec<NewMedia>,
    pub tags: Vec<String>,
    pub wish: Option<Wish>,
}

/// A validated media attachment of a new post; its position is its index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMedia {
    pub url: String,
    pub kind: MediaKind,
    pub width: i32,
    pub height: i32,
    pub size_bytes: i64,
}

/// A post's position in a feed: what skeleton queries return before hydration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PostRef {
    pub id: PostId,
    pub created_at: DateTime<Utc>,
}

/// An order's position in a customer's order list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrderRef {
    pub id: OrderId,
    pub created_at: DateTime<Utc>,
}

/// A follow edge as a batch key: "does `follower` follow `followee`?". Written
/// `follower>followee` (its cache key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FollowEdge {
    pub follower: UserId,
    pub followee: UserId,
}

impl fmt::Display for FollowEdge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}>{}", self.follower, self.followee)
    }
}

/// Why a string is not a [`FollowEdge`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("follow edge must be written follower>followee")]
pub struct ParseFollowEdgeError;

impl std::str::FromStr for FollowEdge {
    type Err = ParseFollowEdgeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s.split_once('>').ok_or(ParseFollowEdgeError)?;
        Ok(Self {
            follower: a.parse().map_err(|_| ParseFollowEdgeError)?,
            followee: b.parse().map_err(|_| ParseFollowEdgeError)?,
        })
    }
}

/// One page of a keyset-paginated list. `next` is `None` on the last page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

/// A set of user ids with a fast hasher: the viewer graph is probed a few times per item
/// of every page (the ids are our own, and the hasher is seeded per process).
pub type IdSet = HashSet<UserId, foldhash::fast::RandomState>;

/// Who a viewer follows, blocks, and is blocked by: everything feeds need to filter and
/// personalize, loaded in one round trip.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewerGraph {
    pub viewer: Option<UserId>,
    pub followees: IdSet,
    /// The followees who follow the viewer back: "followed by author" for every author
    /// the viewer follows, without a lookup per author.
    pub mutuals: IdSet,
    pub blocked: IdSet,
    pub blocked_by: IdSet,
}

impl ViewerGraph {
    /// Whether content by `author` must be hidden from this viewer (a block either way).
    pub fn hides(&self, author: UserId) -> bool {
        self.blocked.contains(&author) || self.blocked_by.contains(&author)
    }

    /// Whether the viewer follows `author`.
    pub fn follows(&self, author: UserId) -> bool {
        self.followees.contains(&author)
    }

    /// Whether `author` follows the viewer, when the graph can tell: `Some` for the
    /// viewer's followees (from `mutuals`), `None` for anyone else.
    pub fn followed_by(&self, author: UserId) -> Option<bool> {
        self.follows(author).then(|| self.mutuals.contains(&author))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_edges_round_trip_through_their_key() {
        let e = FollowEdge {
            follower: UserId(12),
            followee: UserId(-3),
        };
        assert_eq!(e.to_string(), "12>-3");
        assert_eq!("12>-3".parse::<FollowEdge>(), Ok(e));
        for bad in ["", "12", "12>", ">3", "a>b", "1>2>3"] {
            assert!(bad.parse::<FollowEdge>().is_err(), "{bad}");
        }
    }

    #[test]
    fn text_enums_round_trip_and_reject_unknown_text() {
        for s in OrderStatus::ALL {
            assert_eq!(s.as_str().parse::<OrderStatus>().unwrap(), *s);
        }
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>().unwrap(), *k);
        }
        let err = "Active".parse::<OrderStatus>().unwrap_err();
        assert_eq!(err.to_string(), "unknown order status \"Active\"");
    }

    #[test]
    fn currency_accepts_only_three_capitals() {
        assert_eq!("EUR".parse::<Currency>().unwrap().as_str(), "EUR");
        for bad in ["eur", "EU", "EURO", "E1R", "ÉUR", ""] {
            assert!(bad.parse::<Currency>().is_err(), "{bad}");
        }
    }

    #[test]
    fn viewer_graph_hides_blocks_in_both_directions() {
        let g = ViewerGraph {
            viewer: Some(UserId(1)),
            followees: [UserId(2), UserId(5)].into_iter().collect(),
            mutuals: [UserId(5)].into_iter().collect(),
            blocked: [UserId(3)].into_iter().collect(),
            blocked_by: [UserId(4)].into_iter().collect(),
        };
        assert!(!g.hides(UserId(2)));
        assert!(g.hides(UserId(3)));
        assert!(g.hides(UserId(4)));
        assert!(g.follows(UserId(2)));
        assert_eq!(g.followed_by(UserId(2)), Some(false));
        assert_eq!(g.followed_by(UserId(5)), Some(true));
        assert_eq!(
            g.followed_by(UserId(4)),
            None,
            "not a followee: the graph cannot tell"
        );
    }
}
