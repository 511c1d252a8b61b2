//! What an outbox event says, as one typed enum: the store writes each event's payload
//! from an [`Event`] in the transaction of its write, and the consumers read it back into
//! one, so the two sides cannot disagree on a field's name or type.

use crate::{EventKind, OrderId, OutboxEvent, PostId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An outbox event's meaning; its payload is the JSON object of the variant's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    PostCreated {
        post: PostId,
        author: UserId,
    },
    PostDeleted {
        post: PostId,
        author: UserId,
    },
    UserFollowed {
        follower: UserId,
        followee: UserId,
    },
    UserUnfollowed {
        follower: UserId,
        followee: UserId,
    },
    UserBlocked {
        blocker: UserId,
        blocked: UserId,
    },
    UserUnblocked {
        blocker: UserId,
        blocked: UserId,
    },
    /// Who bought what from whom, so consumers notify without reading.
    OrderCreated {
        order: OrderId,
        customer: UserId,
        items: Vec<OrderedItem>,
    },
}

/// One line of an `order.created` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderedItem {
    pub post_id: PostId,
    pub owner_id: UserId,
    pub quantity: i32,
}

/// A payload that does not say what its kind must.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {id} ({kind}) has a malformed payload: {reason}")]
pub struct EventError {
    id: i64,
    kind: &'static str,
    reason: String,
}

/// The payload of the post events.
#[derive(Serialize, Deserialize)]
struct PostPayload {
    post_id: PostId,
    author_id: UserId,
}

#[derive(Serialize, Deserialize)]
struct FollowPayload {
    follower: UserId,
    followee: UserId,
}

#[derive(Serialize, Deserialize)]
struct BlockPayload {
    blocker: UserId,
    blocked: UserId,
}

#[derive(Serialize, Deserialize)]
struct OrderPayload {
    order_id: OrderId,
    customer_id: UserId,
    items: Vec<OrderedItem>,
}

impl Event {
    /// The kind it is written under (the event's name on the stream).
    pub fn kind(&self) -> EventKind {
        match self {
            Self::PostCreated { .. } => EventKind::PostCreated,
            Self::PostDeleted { .. } => EventKind::PostDeleted,
            Self::UserFollowed { .. } => EventKind::UserFollowed,
            Self::UserUnfollowed { .. } => EventKind::UserUnfollowed,
            Self::UserBlocked { .. } => EventKind::UserBlocked,
            Self::UserUnblocked { .. } => EventKind::UserUnblocked,
            Self::OrderCreated { .. } => EventKind::OrderCreated,
        }
    }

    /// The payload stored in the outbox row and carried on the stream.
    pub fn payload(&self) -> Value {
        let v = match self {
            Self::PostCreated { post, author } | Self::PostDeleted { post, author } => {
                serde_json::to_value(PostPayload {
                    post_id: *post,
                    author_id: *author,
                })
            }
            Self::UserFollowed { follower, followee }
            | Self::UserUnfollowed { follower, followee } => serde_json::to_value(FollowPayload {
                follower: *follower,
                followee: *followee,
            }),
            Self::UserBlocked { blocker, blocked } | Self::UserUnblocked { blocker, blocked } => {
                serde_json::to_value(BlockPayload {
                    blocker: *blocker,
                    blocked: *blocked,
                })
            }
            Self::OrderCreated {
                order,
                customer,
                items,
            } => serde_json::to_value(OrderPayload {
                order_id: *order,
                customer_id: *customer,
                items: items.clone(),
            }),
        };
        v.expect("ids and numbers always serialize")
    }

    /// The event an outbox row or stream entry carries: its payload read as its kind
    /// says, every id positive.
    pub fn of(e: &OutboxEvent) -> Result<Self, EventError> {
        let fail = |reason: String| EventError {
            id: e.id.0,
            kind: e.kind.as_str(),
            reason,
        };
        fn read<T: for<'de> Deserialize<'de>>(v: &Value) -> Result<T, String> {
            T::deserialize(v).map_err(|err| err.to_string())
        }
        let event = match e.kind {
            EventKind::PostCreated | EventKind::PostDeleted => {
                let p: PostPayload = read(&e.payload).map_err(fail)?;
                let (post, author) = (p.post_id, p.author_id);
                if e.kind == EventKind::PostCreated {
                    Self::PostCreated { post, author }
                } else {
                    Self::PostDeleted { post, author }
                }
            }
            EventKind::UserFollowed | EventKind::UserUnfollowed => {
                let p: FollowPayload = read(&e.payload).map_err(fail)?;
                let (follower, followee) = (p.follower, p.followee);
                if e.kind == EventKind::UserFollowed {
                    Self::UserFollowed { follower, followee }
                } else {
                    Self::UserUnfollowed { follower, followee }
                }
            }
            EventKind::UserBlocked | EventKind::UserUnblocked => {
                let p: BlockPayload = read(&e.payload).map_err(fail)?;
                let (blocker, blocked) = (p.blocker, p.blocked);
                if e.kind == EventKind::UserBlocked {
                    Self::UserBlocked { blocker, blocked }
                } else {
                    Self::UserUnblocked { blocker, blocked }
                }
            }
            EventKind::OrderCreated => {
                let p: OrderPayload = read(&e.payload).map_err(fail)?;
                Self::OrderCreated {
                    order: p.order_id,
                    customer: p.customer_id,
                    items: p.items,
                }
            }
        };
        if let Some(bad) = event.ids().into_iter().find(|id| *id <= 0) {
            return Err(fail(format!("id {bad} is not positive")));
        }
        Ok(event)
    }

    /// Every id the event names.
    fn ids(&self) -> Vec<i64> {
        match self {
            Self::PostCreated { post, author } | Self::PostDeleted { post, author } => {
                vec![post.0, author.0]
            }
            Self::UserFollowed { follower, followee }
            | Self::UserUnfollowed { follower, followee } => vec![follower.0, followee.0],
            Self::UserBlocked { blocker, blocked } | Self::UserUnblocked { blocker, blocked } => {
                vec![blocker.0, blocked.0]
            }
            Self::OrderCreated {
                order,
                customer,
                items,
            } => [order.0, customer.0]
                .into_iter()
                .chain(items.iter().flat_map(|i| [i.post_id.0, i.owner_id.0]))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventId;
    use chrono::Utc;

    fn row(kind: EventKind, payload: Value) -> OutboxEvent {
        OutboxEvent {
            id: EventId(7),
            kind,
            payload,
            created_at: Utc::now(),
            published_at: None,
        }
    }

    #[test]
    fn every_event_reads_back_as_written() {
        let (a, b) = (UserId(3), UserId(4));
        for event in [
            Event::PostCreated {
                post: PostId(9),
                author: a,
            },
            Event::PostDeleted {
                post: PostId(9),
                author: a,
            },
            Event::UserFollowed {
                follower: a,
                followee: b,
            },
            Event::UserUnfollowed {
                follower: a,
                followee: b,
            },
            Event::UserBlocked {
                blocker: a,
                blocked: b,
            },
            Event::UserUnblocked {
                blocker: a,
                blocked: b,
            },
            Event::OrderCreated {
                order: OrderId(5),
                customer: a,
                items: vec![OrderedItem {
                    post_id: PostId(9),
                    owner_id: b,
                    quantity: 2,
                }],
            },
        ] {
            let stored = row(event.kind(), event.payload());
            assert_eq!(Event::of(&stored).unwrap(), event);
        }
    }

    #[test]
    fn the_payloads_keep_their_field_names() {
        // Rows written before this type existed must still read.
        let p = Event::PostCreated {
            post: PostId(1),
            author: UserId(2),
        }
        .payload();
        assert_eq!(p, serde_json::json!({"post_id": 1, "author_id": 2}));
        let p = Event::UserBlocked {
            blocker: UserId(1),
            blocked: UserId(2),
        }
        .payload();
        assert_eq!(p, serde_json::json!({"blocker": 1, "blocked": 2}));
    }

    #[test]
    fn a_payload_that_does_not_match_its_kind_is_an_error() {
        let wrong_kind = row(
            EventKind::UserBlocked,
            serde_json::json!({"follower": 1, "followee": 2}),
        );
        let err = Event::of(&wrong_kind).unwrap_err().to_string();
        assert!(
            err.starts_with("event 7 (user.blocked) has a malformed payload"),
            "{err}"
        );
        let zero = row(
            EventKind::PostCreated,
            serde_json::json!({"post_id": 0, "author_id": 2}),
        );
        assert!(Event::of(&zero).unwrap_err().to_string().contains("id 0"));
        let text = row(
            EventKind::OrderCreated,
            serde_json::json!({"order_id": 1, "customer_id": 2, "items": "none"}),
        );
        assert!(Event::of(&text).is_err());
    }
}
