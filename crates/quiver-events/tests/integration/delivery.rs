//! Events from the outbox to their effects: through the stream, in process, twice,
//! after a consumer dies mid-handling, to the dead-letter stream, and with relays racing.

use crate::support::{AlwaysFails, HangsOnce, config, eventually, redis_url, start, users};
use quiver_events::streams::RedisStreams;
use quiver_events::{EffectsHandler, Events, Handler};
use quiver_model::{EventKind, UserId};
use quiver_store::events::{FanOut, Outbox};
use quiver_store::write::GraphWrites;
use quiver_store::{PgStore, SqliteStore};
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub(crate) async fn followed_notifications(pool: &PgPool, user: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM notifications WHERE user_id = $1 AND kind = 'followed'",
    )
    .bind(user)
    .fetch_one(pool)
    .await
    .unwrap()
}

pub(crate) fn streams() -> RedisStreams {
    RedisStreams::connect(&redis_url(), Duration::from_secs(1), Duration::from_secs(1)).unwrap()
}

/// Waits until the group has acknowledged everything delivered.
pub(crate) async fn nothing_pending(s: &RedisStreams, config: &quiver_events::EventsConfig) {
    eventually("nothing is pending", || async {
        s.group_state(&config.stream(), &config.group)
            .await
            .unwrap()
            .pending
            == 0
    })
    .await;
}

/// What the handler asked to invalidate.
#[derive(Debug, Default)]
pub(crate) struct Forgotten {
    edges: std::sync::Mutex<Vec<(UserId, UserId)>>,
    posts: std::sync::Mutex<Vec<quiver_model::PostId>>,
    timelines: std::sync::Mutex<Vec<UserId>>,
}

#[async_trait::async_trait]
impl quiver_events::Invalidate for Forgotten {
    async fn edge(
        &self,
        a: UserId,
        b: UserId,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.edges.lock().unwrap().push((a, b));
        Ok(())
    }
    async fn post(
        &self,
        id: quiver_model::PostId,
        _author: UserId,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.posts.lock().unwrap().push(id);
        Ok(())
    }
    async fn timelines(
        &self,
        users: &[UserId],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.timelines.lock().unwrap().extend_from_slice(users);
        Ok(())
    }
}

/// An embedded store at `path` (`None`: in memory, one connection) with users 1 and 2,
/// and 1's follow of 2 committed to the outbox.
pub(crate) async fn sqlite_follow(path: Option<std::path::PathBuf>) -> SqliteStore {
    let store = SqliteStore::connect(&quiver_store::SqliteConfig {
        max_connections: if path.is_some() { 4 } else { 1 },
        path,
        ..quiver_store::SqliteConfig::default()
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    sqlx::query(
        "INSERT INTO users (id, handle, display_name, created_at)
         VALUES (1, 'a', 'A', 0), (2, 'b', 'B', 0)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    store.follow(UserId(1), UserId(2)).await.unwrap();
    store
}

pub(crate) fn handler(store: &PgStore) -> Arc<dyn Handler> {
    Arc::new(EffectsHandler::new(
        Arc::new(store.clone()),
        None,
        FanOut::batches_of(2),
    ))
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_committed_follow_reaches_the_stream_and_notifies_once(pool: PgPool) {
    users(&pool, 3).await;
    let store = PgStore::from_pool(pool.clone());
    store.follow(UserId(1), UserId(2)).await.unwrap();
    let config = config();
    let events = start(&store, handler(&store), Some(&redis_url()), config.clone());
    eventually("the follow is handled", || async {
        events.stats().handled >= 1
    })
    .await;
    assert_eq!(followed_notifications(&pool, 2).await, 1);
    let actor: Option<i64> =
        sqlx::query_scalar("SELECT actor_id FROM notifications WHERE user_id = 2")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(actor, Some(1));
    let entries = streams().entries(&config.stream()).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["kind"], "user.followed");
    eventually("the outbox is published", || async {
        store.backlog().await.unwrap().unpublished == 0
    })
    .await;
    let s = events.stats();
    assert_eq!((s.relayed, s.dead_lettered, s.retries), (1, 0, 0));
    events.shutdown().await;
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn an_event_delivered_twice_creates_one_notification(pool: PgPool) {
    users(&pool, 3).await;
    let store = PgStore::from_pool(pool.clone());
    store.follow(UserId(3), UserId(1)).await.unwrap();
    // Publish the same outbox row twice, as a relay that crashed after XADD and before
    // its commit would.
    let claim = store.claim(10).await.unwrap();
    let config = config();
    let s = streams();
    s.append(&config.stream(), claim.events()).await.unwrap();
    s.append(&config.stream(), claim.events()).await.unwrap();
    claim.release().await.unwrap();
    let events = start(
        &store,
        handler(&store),
        Some(&redis_url()),
        quiver_events::EventsConfig {
            relay: false,
            ..config.clone()
        },
    );
    eventually("both deliveries are handled", || async {
        events.stats().handled >= 2
    })
    .await;
    assert_eq!(followed_notifications(&pool, 1).await, 1);
    nothing_pending(&s, &config).await;
    events.shutdown().await;
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn an_entry_whose_consumer_dies_mid_handling_is_reclaimed_and_takes_effect_once(
    pool: PgPool,
) {
    users(&pool, 3).await;
    let store = PgStore::from_pool(pool.clone());
    store.follow(UserId(1), UserId(3)).await.unwrap();
    let config = config();
    let hangs = Arc::new(HangsOnce {
        inner: handler(&store),
        calls: AtomicUsize::new(0),
        inside: Arc::new(tokio::sync::Notify::new()),
    });
    let inside = hangs.inside.clone();
    let dies = start(
        &store,
        hangs.clone(),
        Some(&redis_url()),
        quiver_events::EventsConfig {
            consumer_prefix: "dies".into(),
            ..config.clone()
        },
    );
    // The first consumer has done the effect and hangs before acknowledging; then it
    // is gone (its tasks stop at their await point; nothing is acknowledged).
    inside.notified().await;
    assert_eq!(followed_notifications(&pool, 3).await, 1);
    dies.shutdown().await;
    let s = streams();
    let state = s
        .group_state(&config.stream(), &config.group)
        .await
        .unwrap();
    assert_eq!(state.pending, 1, "left pending by the dead consumer");

    let takes_over = start(
        &store,
        handler(&store),
        Some(&redis_url()),
        quiver_events::EventsConfig {
            consumer_prefix: "takes-over".into(),
            relay: false,
            ..config.clone()
        },
    );
    eventually("the entry is reclaimed and handled", || async {
        let st = takes_over.stats();
        st.reclaimed >= 1 && st.handled >= 1
    })
    .await;
    nothing_pending(&s, &config).await;
    assert_eq!(
        followed_notifications(&pool, 3).await,
        1,
        "the effect happened once"
    );
    takes_over.shutdown().await;
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn failing_and_malformed_events_end_in_the_dead_letter_stream(pool: PgPool) {
    users(&pool, 3).await;
    let store = PgStore::from_pool(pool.clone());
    store.follow(UserId(2), UserId(3)).await.unwrap();
    let config = config();
    let s = streams();
    // An entry no consumer can decode.
    s.append_raw(
        &config.stream(),
        vec![("kind".into(), "user.followed".into())],
    )
    .await
    .unwrap();
    let fails = Arc::new(AlwaysFails::default());
    let events = start(&store, fails.clone(), Some(&redis_url()), config.clone());
    eventually("both are dead-lettered", || async {
        events.stats().dead_lettered >= 2
    })
    .await;
    let dead = s.entries(&config.dead_stream()).await.unwrap();
    assert_eq!(dead.len(), 2);
    let malformed = dead.iter().find(|d| !d.contains_key("id")).unwrap();
    assert_eq!(malformed["error"], "entry has no `id` field");
    assert_eq!(malformed["deliveries"], "1");
    let failed = dead.iter().find(|d| d.contains_key("id")).unwrap();
    assert_eq!(failed["kind"], "user.followed");
    assert_eq!(failed["deliveries"], "3");
    assert!(failed["error"].contains("injected failure"), "{failed:?}");
    // Tried at every delivery, never more.
    assert_eq!(fails.calls.load(Ordering::SeqCst), 3);
    let st = events.stats();
    assert_eq!(st.retries, 2);
    assert_eq!(st.handled, 0);
    nothing_pending(&s, &config).await;
    events.shutdown().await;
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn relays_racing_publish_every_event_exactly_once(pool: PgPool) {
    users(&pool, 41).await;
    let store = PgStore::from_pool(pool.clone());
    for followee in 2..=41 {
        store.follow(UserId(1), UserId(followee)).await.unwrap();
    }
    let config = quiver_events::EventsConfig {
        consumers: 0,
        relay_batch: 3,
        ..config()
    };
    let start = || start(&store, handler(&store), Some(&redis_url()), config.clone());
    let (a, b, c) = (start(), start(), start());
    eventually("the outbox is drained", || async {
        store.backlog().await.unwrap().unpublished == 0
    })
    .await;
    let entries = streams().entries(&config.stream()).await.unwrap();
    let mut ids: Vec<i64> = entries.iter().map(|e| e["id"].parse().unwrap()).collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!((n, ids.len()), (40, 40), "each event once");
    let relayed = a.stats().relayed + b.stats().relayed + c.stats().relayed;
    assert_eq!(relayed, 40);
    for e in [a, b, c] {
        e.shutdown().await;
    }
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_new_post_fans_out_to_current_followers_in_batches(pool: PgPool) {
    users(&pool, 6).await;
    let store = PgStore::from_pool(pool.clone());
    for follower in 2..=6 {
        store.follow(UserId(follower), UserId(1)).await.unwrap();
    }
    store.unfollow(UserId(6), UserId(1)).await.unwrap();
    let post = quiver_store::write::PostWrites::create_post(
        &store,
        UserId(1),
        &quiver_model::NewPost {
            kind: quiver_model::PostKind::Post,
            body: "hello".into(),
            media: vec![],
            tags: vec![],
            wish: None,
        },
    )
    .await
    .unwrap();
    let timelines = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT user_id FROM home_timeline WHERE post_id = $1 ORDER BY user_id",
        )
        .bind(post.id.0)
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    assert_eq!(timelines().await, [1], "only the author's at commit");
    let observed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = observed.clone();
    let forgotten = Arc::new(Forgotten::default());
    let events = Events::start(
        Arc::new(store.clone()),
        Arc::new(EffectsHandler::new(
            Arc::new(store.clone()),
            Some(forgotten.clone()),
            FanOut::batches_of(2),
        )),
        Some(&redis_url()),
        config(),
        Some(Arc::new(move |kind: EventKind, lag: Duration| {
            seen.lock().unwrap().push((kind, lag));
        })),
    )
    .unwrap();
    eventually("every event is handled", || async {
        events.stats().handled >= 7
    })
    .await;
    // Batches of 2 over followers 2..=5.
    assert_eq!(timelines().await, [1, 2, 3, 4, 5]);
    let mut told = forgotten.timelines.lock().unwrap().clone();
    told.sort_unstable();
    told.dedup();
    assert_eq!(
        told,
        [2, 3, 4, 5].map(UserId),
        "the cached timelines of every follower the post reached are forgotten"
    );
    assert!(forgotten.posts.lock().unwrap().contains(&post.id));
    assert!(
        forgotten
            .edges
            .lock()
            .unwrap()
            .contains(&(UserId(6), UserId(1))),
        "the unfollow's edge"
    );
    let kinds: Vec<EventKind> = observed.lock().unwrap().iter().map(|(k, _)| *k).collect();
    assert!(kinds.contains(&EventKind::PostCreated));
    assert!(kinds.contains(&EventKind::UserUnfollowed));
    events.shutdown().await;
}
