//! Id newtypes, so a post id can never be passed where a user id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map(Self)
            }
        }

        impl From<i64> for $name {
            fn from(v: i64) -> Self {
                Self(v)
            }
        }

        impl From<$name> for i64 {
            fn from(v: $name) -> Self {
                v.0
            }
        }
    };
}

id_type!(
    /// Identifies a user (an account that posts, follows, blocks and orders).
    UserId
);
id_type!(
    /// Identifies a post or a wish.
    PostId
);
id_type!(
    /// Identifies one media attachment of a post.
    MediaId
);
id_type!(
    /// Identifies an order.
    OrderId
);
id_type!(
    /// Identifies a notification.
    NotificationId
);
id_type!(
    /// Identifies an outbox event; ids grow in commit order within one database.
    EventId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        assert_eq!("42".parse::<UserId>().unwrap(), UserId(42));
        assert_eq!(
            PostId(-7).to_string().parse::<PostId>().unwrap(),
            PostId(-7)
        );
        assert!("x1".parse::<OrderId>().is_err());
    }
}
