//! Domain values for the tests.

use chrono::{TimeZone, Utc};
use quiver_model::*;

pub(crate) fn eur(cents: i64) -> Money {
    Money {
        amount_cents: cents,
        currency: "EUR".parse().unwrap(),
    }
}

pub(crate) fn user() -> (User, UserFlags) {
    let user = User {
        id: UserId(2),
        handle: "ada_l".into(),
        display_name: "Ada \"the first\" Lovelace".into(),
        bio: "engines\nand poems ✨".into(),
        avatar_url: Some("https://a.example.com/2.png".into()),
        created_at: Utc.with_ymd_and_hms(2025, 12, 1, 8, 30, 0).unwrap(),
    };
    (
        user,
        UserFlags {
            verified: true,
            creator: false,
            private: false,
        },
    )
}

pub(crate) fn wish_post() -> (Post, Vec<Media>, Vec<String>) {
    let post = Post {
        id: PostId(7),
        author_id: UserId(2),
        kind: PostKind::Wish,
        body: "a \\ backslash and a \"quote\"".into(),
        wish: Some(Wish {
            price: eur(1999),
            product_url: "https://shop.example.com/p/7".into(),
        }),
        created_at: Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap(),
    };
    let media = vec![Media {
        id: MediaId(1),
        post_id: PostId(7),
        kind: MediaKind::Image,
        url: "https://m.example.com/7/0.jpg".into(),
        width: 1080,
        height: 720,
        size_bytes: 123_456,
        position: 0,
    }];
    (post, media, vec!["gift_ideas".into(), "tea".into()])
}

pub(crate) fn order() -> (Order, Vec<OrderItem>) {
    let at = Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap();
    let order = Order {
        id: OrderId(3),
        customer_id: UserId(1),
        status: OrderStatus::Active,
        total: eur(3998),
        created_at: at,
        updated_at: at,
    };
    (
        order,
        vec![OrderItem {
            order_id: OrderId(3),
            post_id: PostId(7),
            quantity: 2,
            unit_price: eur(1999),
        }],
    )
}

pub(crate) fn notification() -> Notification {
    Notification {
        id: NotificationId(9),
        user_id: UserId(2),
        kind: NotificationKind::WishBought,
        actor_id: Some(UserId(1)),
        post_id: Some(PostId(7)),
        order_id: Some(OrderId(3)),
        created_at: Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 1).unwrap(),
        read_at: None,
    }
}
