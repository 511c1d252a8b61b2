//! Fixtures and instruments shared by the integration tests.

use chrono::{DateTime, Duration, TimeZone, Utc};
use quiver_model::{MediaKind, NotificationKind, OrderStatus, PostKind};
use quiver_store::seed::{
    Dataset, MediaRow, NotificationRow, OrderItemRow, OrderRow, PostRow, UserRow,
};
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
    let mut ds = Dataset::default();
    for id in 1..=6 {
        ds.users.push(UserRow {
            id,
            handle: format!("user_{id}"),
            display_name: format!("User {id}"),
            bio: if id == 2 {
                "tab\there, newline\nthere, back\\slash".into()
            } else {
                String::new()
            },
            avatar_url: (id % 2 == 0).then(|| format!("https://a.example.com/{id}.png")),
            verified: id == 2,
            creator: id == 3,
            private: id == 6,
            created_at: t0() - Duration::days(100 - id),
        });
    }
    ds.follows = vec![(1, 2, t0()), (1, 3, t0()), (2, 1, t0()), (3, 2, t0())];
    ds.blocks = vec![(4, 1, t0()), (1, 5, t0())];
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
        let wish = (id == 3 || id == 7)
            .then(|| (1999 + id, "EUR", format!("https://shop.example.com/{id}")));
        ds.posts.push(PostRow {
            id,
            author_id: author,
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
        ds.media.push(MediaRow {
            id,
            post_id: post,
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
    for id in 1..=8 {
        ds.orders.push(OrderRow {
            id,
            customer_id: 1,
            status: statuses[(id as usize - 1) % 4],
            total_cents: 2002 * id,
            currency: "EUR",
            // Orders 5 and 6 share a timestamp.
            created_at: t0() + Duration::minutes(id.min(5)) + Duration::minutes((id - 6).max(0)),
        });
        ds.order_items.push(OrderItemRow {
            order_id: id,
            post_id: 3,
            quantity: id as i32 % 3 + 1,
            unit_price_cents: 2002,
            currency: "EUR",
        });
    }
    ds.order_items.push(OrderItemRow {
        order_id: 1,
        post_id: 7,
        quantity: 1,
        unit_price_cents: 2006,
        currency: "EUR",
    });
    ds.orders.push(OrderRow {
        id: 9,
        customer_id: 2,
        status: OrderStatus::Active,
        total_cents: 2006,
        currency: "EUR",
        created_at: t0(),
    });
    ds.notifications.push(NotificationRow {
        id: 1,
        user_id: 2,
        kind: NotificationKind::Followed,
        actor_id: Some(1),
        post_id: None,
        order_id: None,
        created_at: t0(),
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
