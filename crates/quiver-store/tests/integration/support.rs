//! Fixtures and instruments shared by the integration tests.

use chrono::{DateTime, Duration, TimeZone, Utc};
use quiver_model::{
    Block, Currency, Follow, Media, MediaId, MediaKind, Money, Notification, NotificationId,
    NotificationKind, Order, OrderId, OrderItem, OrderStatus, Post, PostId, PostKind, User,
    UserFlags, UserId, Wish,
};
use quiver_store::seed::Dataset;
use std::future::Future;
use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub(crate) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

/// Users 1..=6. 1 follows 2 and 3; 4 blocks 1; 1 blocks 5; 6 exists with no posts.
/// Posts 1..=12 by users 2, 3 and 1, several sharing one `created_at` to exercise ties.
/// Post 3 and 7 are wishes. Orders of user 1 in every status.
pub(crate) fn fixture(timeline_depth: usize) -> Dataset {
    let eur: Currency = "EUR".parse().unwrap();
    let money = |amount_cents| Money {
        amount_cents,
        currency: eur,
    };
    let mut ds = Dataset::default();
    for id in 1..=6 {
        let user = User {
            id: UserId(id),
            handle: format!("user_{id}"),
            display_name: format!("User {id}"),
            bio: if id == 2 {
                "tab\there, newline\nthere, back\\slash".into()
            } else {
                String::new()
            },
            avatar_url: (id % 2 == 0).then(|| format!("https://a.example.com/{id}.png")),
            created_at: t0() - Duration::days(100 - id),
        };
        let flags = UserFlags {
            verified: id == 2,
            creator: id == 3,
            private: id == 6,
        };
        ds.users.push((user, flags));
    }
    let follow = |a, b| Follow {
        follower: UserId(a),
        followee: UserId(b),
        created_at: t0(),
    };
    ds.follows = vec![follow(1, 2), follow(1, 3), follow(2, 1), follow(3, 2)];
    let block = |a, b| Block {
        blocker: UserId(a),
        blocked: UserId(b),
        created_at: t0(),
    };
    ds.blocks = vec![block(4, 1), block(1, 5)];
    // (id, author, seconds after t0): ids 4, 5 and 6 share a timestamp; so do 9 and 10.
    let posts = [
        (1, 2, 10),
        (2, 3, 20),
        (3, 2, 30),
        (4, 3, 40),
        (5, 2, 40),
        (6, 1, 40),
        (7, 3, 50),
        (8, 4, 55),
        (9, 2, 60),
        (10, 3, 60),
        (11, 5, 70),
        (12, 1, 80),
    ];
    for (id, author, secs) in posts {
        let wish = (id == 3 || id == 7).then(|| Wish {
            price: money(1999 + id),
            product_url: format!("https://shop.example.com/{id}"),
        });
        ds.posts.push(Post {
            id: PostId(id),
            author_id: UserId(author),
            kind: if wish.is_some() {
                PostKind::Wish
            } else {
                PostKind::Post
            },
            body: format!("post {id}"),
            wish,
            created_at: t0() + Duration::seconds(secs),
        });
    }
    // Post 1 has three media (inserted out of position order), post 2 one; 3 none.
    for (id, post, pos) in [(1, 1, 2), (2, 1, 0), (3, 1, 1), (4, 2, 0)] {
        ds.media.push(Media {
            id: MediaId(id),
            post_id: PostId(post),
            kind: if pos == 1 {
                MediaKind::Video
            } else {
                MediaKind::Image
            },
            url: format!("https://m.example.com/{post}/{pos}.jpg"),
            width: 1080,
            height: 720,
            size_bytes: 1000 * id,
            position: pos,
        });
    }
    ds.tags = vec![(1, "zeta"), (1, "alpha"), (2, "books"), (12, "tea")];
    let statuses = [
        OrderStatus::Pending,
        OrderStatus::Active,
        OrderStatus::Shipped,
        OrderStatus::Cancelled,
    ];
    let order = |id: i64, customer, status, total, created_at| Order {
        id: OrderId(id),
        customer_id: UserId(customer),
        status,
        total: money(total),
        created_at,
        updated_at: created_at,
    };
    for id in 1..=8 {
        // Orders 5 and 6 share a timestamp.
        let created_at = t0() + Duration::minutes(id.min(5)) + Duration::minutes((id - 6).max(0));
        ds.orders.push(order(
            id,
            1,
            statuses[(id as usize - 1) % 4],
            2002 * id,
            created_at,
        ));
        ds.order_items.push(OrderItem {
            order_id: OrderId(id),
            post_id: PostId(3),
            quantity: id as i32 % 3 + 1,
            unit_price: money(2002),
        });
    }
    ds.order_items.push(OrderItem {
        order_id: OrderId(1),
        post_id: PostId(7),
        quantity: 1,
        unit_price: money(2006),
    });
    ds.orders.push(order(9, 2, OrderStatus::Active, 2006, t0()));
    ds.notifications.push(Notification {
        id: NotificationId(1),
        user_id: UserId(2),
        kind: NotificationKind::Followed,
        actor_id: Some(UserId(1)),
        post_id: None,
        order_id: None,
        created_at: t0(),
        read_at: None,
    });
    ds.fill_home_timelines(timeline_depth);
    ds
}

tokio::task_local! {
    static STATEMENTS: Arc<AtomicUsize>;
}

/// Counts the `sqlx::query` events (one per executed statement) emitted inside the task
/// it scopes. PostgreSQL connections log in the caller's task, so concurrent tests do not
/// see each other's statements.
struct StatementCounter;

impl<S: Subscriber> Layer<S> for StatementCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            let _ = STATEMENTS.try_with(|n| n.fetch_add(1, Ordering::SeqCst));
        }
    }
}

/// Runs `fut` and returns its output with the number of SQL statements it executed.
pub(crate) async fn count_statements<F: Future>(fut: F) -> (F::Output, usize) {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::filter::Targets::new()
            .with_target("sqlx::query", tracing::Level::TRACE);
        tracing_subscriber::registry()
            .with(StatementCounter.with_filter(filter))
            .init();
    });
    let n = Arc::new(AtomicUsize::new(0));
    let out = STATEMENTS.scope(n.clone(), fut).await;
    (out, n.load(Ordering::SeqCst))
}
