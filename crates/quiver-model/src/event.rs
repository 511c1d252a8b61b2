//! What an outbox event says, as one typed enum: the store writes each event's payload
//! from an [`Event`] in the transaction of its write, and the consumers read it back into
//! one, so the two sides cannot disagree on a field's name or type.

use crate::{EventKind, OrderId, OutboxEvent, PostId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An outbox event's meaning. Stored as its kind (the variant's name on the stream) and a
/// payload, the JSON object of the variant's fields: serde's adjacent tagging is exactly
/// that pair, so the field names below are the stored ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload")]
pub enum Event {
    #[serde(rename = "post.created")]
    PostCreated { post_id: PostId, author_id: UserId },
    #[serde(rename = "post.deleted")]
    PostDeleted { post_id: PostId, author_id: UserId },
    #[serde(rename = "user.followed")]
    UserFollowed { follower: UserId, followee: UserId },
    #[serde(rename = "user.unfollowed")]
    UserUnfollowed { follower: UserId, followee: UserId },
    #[serde(rename = "user.blocked")]
    UserBlocked { blocker: UserId, blocked: UserId },
    #[serde(rename = "user.unblocked")]
    UserUnblocked { blocker: UserId, blocked: UserId },
    /// Who bought what from whom, so consumers notify without reading.
    #[serde(rename = "order.created")]
    OrderCreated {
        order_id: OrderId,
        customer_id: UserId,
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
        match serde_json::to_value(self) {
            Ok(Value::Object(mut tagged)) => tagged.remove("payload").unwrap_or(Value::Null),
            _ => unreachable!("an adjacently tagged enum of ids serializes to an object"),
        }
    }

    /// The event an outbox row or stream entry carries: its payload read as its kind
    /// says, every id positive.
    pub fn of(e: &OutboxEvent) -> Result<Self, EventError> {
        let fail = |reason: String| EventError {
            id: e.id.0,
            kind: e.kind.as_str(),
            reason,
        };
        let tagged = serde_json::json!({ "kind": e.kind, "payload": e.payload });
        let event = Self::deserialize(tagged).map_err(|err| fail(err.to_string()))?;
        if let Some(bad) = event.ids().into_iter().find(|id| *id <= 0) {
            return Err(fail(format!("id {bad} is not positive")));
        }
        Ok(event)
    }

    /// Every id the event names.
    fn ids(&self) -> Vec<i64> {
        match self {
            Self::PostCreated { post_id, author_id } | Self::PostDeleted { post_id, author_id } => {
                vec![post_id.0, author_id.0]
            }
            Self::UserFollowed {
                follower: a,
                followee: b,
            }
            | Self::UserUnfollowed {
                follower: a,
                followee: b,
            }
            | Self::UserBlocked {
                blocker: a,
                blocked: b,
            }
            | Self::UserUnblocked {
                blocker: a,
                blocked: b,
            } => vec![a.0, b.0],
            Self::OrderCreated {
                order_id,
                customer_id,
                items,
            } => [order_id.0, customer_id.0]
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
            trace_context: None,
        }
    }

    #[test]
    fn every_event_reads_back_as_written() {
        let (a, b) = (UserId(3), UserId(4));
        for event in [
            Event::PostCreated {
                post_id: PostId(9),
                author_id: a,
            },
            Event::PostDeleted {
                post_id: PostId(9),
                author_id: a,
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
                order_id: OrderId(5),
                customer_id: a,
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
            post_id: PostId(1),
            author_id: UserId(2),
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
