//! Events from the outbox to their effects: through the stream, in process, twice,
//! after a consumer dies mid-handling, to the dead-letter stream, and with relays racing.

use crate::support::{AlwaysFails, HangsOnce, config, eventually, redis_url, users};
use quiver_events::streams::RedisStreams;
use quiver_events::{EffectsHandler, Events, Handler};
use quiver_model::{EventKind, UserId};
use quiver_store::events::Outbox;
use quiver_store::write::GraphWrites;
use quiver_store::{PgStore, SqliteStore};
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

async fn followed_notifications(pool: &PgPool, user: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM notifications WHERE user_id = $1 AND kind = 'followed'",
    )
    .bind(user)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn streams() -> RedisStreams {
    RedisStreams::connect(&redis_url(), Duration::from_secs(1), Duration::from_secs(1)).unwrap()
}

/// Waits until the group has acknowledged everything delivered.
async fn nothing_pending(s: &RedisStreams, config: &quiver_events::EventsConfig) {
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
struct Forgotten {
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
async fn sqlite_follow(path: Option<std::path::PathBuf>) -> SqliteStore {
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

fn handler(store: &PgStore) -> Arc<dyn Handler> {
    Arc::new(EffectsHandler::new(Arc::new(store.clone()), None, 2))
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_committed_follow_reaches_the_stream_and_notifies_once(pool: PgPool) {
    users(&pool, 3).await;
    let store = PgStore::from_pool(pool.clone());
    store.follow(UserId(1), UserId(2)).await.unwrap();
    let config = config();
    let events = Events::start(
        Arc::new(store.clone()),
        handler(&store),
        Some(&redis_url()),
        config.clone(),
        None,
    )
    .unwrap();
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
    let events = Events::start(
        Arc::new(store.clone()),
        handler(&store),
        Some(&redis_url()),
        quiver_events::EventsConfig {
            relay: false,
            ..config.clone()
        },
        None,
    )
    .unwrap();
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
    let dies = Events::start(
        Arc::new(store.clone()),
        hangs.clone(),
        Some(&redis_url()),
        quiver_events::EventsConfig {
            consumer_prefix: "dies".into(),
            ..config.clone()
        },
        None,
    )
    .unwrap();
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

    let takes_over = Events::start(
        Arc::new(store.clone()),
        handler(&store),
        Some(&redis_url()),
        quiver_events::EventsConfig {
            consumer_prefix: "takes-over".into(),
            relay: false,
            ..config.clone()
        },
        None,
    )
    .unwrap();
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
    let events = Events::start(
        Arc::new(store.clone()),
        fails.clone(),
        Some(&redis_url()),
        config.clone(),
        None,
    )
    .unwrap();
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
    let start = || {
        Events::start(
            Arc::new(store.clone()),
            handler(&store),
            Some(&redis_url()),
            config.clone(),
            None,
        )
        .unwrap()
    };
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
            2,
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

#[tokio::test]
async fn without_redis_events_are_handled_in_process_from_the_outbox() {
    let dir = std::env::temp_dir().join(format!("quiver-events-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = sqlite_follow(Some(dir.join("db.sqlite"))).await;
    // A handler that fails: retried, then given up on, and the outbox moves on.
    let fails = Arc::new(AlwaysFails::default());
    let config = quiver_events::EventsConfig {
        relay_poll: Duration::from_millis(10),
        max_deliveries: 3,
        ..quiver_events::EventsConfig::default()
    };
    let events = Events::start(
        Arc::new(store.clone()),
        fails.clone(),
        None,
        config.clone(),
        None,
    )
    .unwrap();
    eventually("the failing event is given up on", || async {
        events.stats().dead_lettered == 1
    })
    .await;
    assert_eq!(fails.calls.load(Ordering::SeqCst), 3);
    assert_eq!(events.stats().retries, 2);
    events.shutdown().await;
    // The dead letter is kept in the outbox with its cause, out of the queue.
    let (failed, error): (Option<i64>, Option<String>) =
        sqlx::query_as("SELECT failed_at, error FROM outbox ORDER BY id LIMIT 1")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(failed.is_some());
    assert!(error.unwrap().contains("injected failure"));

    store.unfollow(UserId(1), UserId(2)).await.unwrap();
    store.follow(UserId(1), UserId(2)).await.unwrap();
    let events = Events::start(
        Arc::new(store.clone()),
        Arc::new(EffectsHandler::new(Arc::new(store.clone()), None, 10)),
        None,
        config,
        None,
    )
    .unwrap();
    events.wake();
    eventually("the outbox is published", || async {
        store.backlog().await.unwrap().unpublished == 0
    })
    .await;
    assert_eq!(events.stats().handled, 2);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications WHERE user_id = 2")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(n, 1, "one notification for the second follow");
    events.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// An idle `XREADGROUP … BLOCK` answers nil; it used to fail to decode, so consumers
/// logged an error, slept and rebuilt their group on every quiet read.
#[tokio::test]
async fn an_idle_read_is_an_empty_batch_not_an_error() {
    let config = config();
    let s = streams();
    s.ensure_group(&config.stream(), &config.group)
        .await
        .unwrap();
    for _ in 0..3 {
        let got = s
            .read_group(
                &config.stream(),
                &config.group,
                "idle",
                10,
                Duration::from_millis(50),
            )
            .await
            .unwrap();
        assert!(got.is_empty());
    }
}

/// `count` follows of user `to` by users 1..=count, committed to the outbox.
async fn follows(store: &PgStore, count: i64, to: i64) {
    for i in 1..=count {
        store.follow(UserId(i), UserId(to)).await.unwrap();
    }
}

/// The stream is trimmed of what the group acknowledged, never of what it has not:
/// entries not yet delivered and entries pending stay until they are done.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn only_acknowledged_entries_are_trimmed(pool: PgPool) {
    users(&pool, 51).await;
    let store = PgStore::from_pool(pool.clone());
    follows(&store, 50, 51).await;
    let config = config();
    let (stream, group) = (config.stream(), config.group.clone());
    let s = streams();
    // Nothing to trim before there is a stream, or a group to have acknowledged anything.
    assert_eq!(s.trim_acknowledged(&stream).await.unwrap(), 0);
    let relay = Events::start(
        Arc::new(store.clone()),
        handler(&store),
        Some(&redis_url()),
        quiver_events::EventsConfig {
            consumers: 0,
            trim_interval: Duration::from_millis(20),
            ..config.clone()
        },
        None,
    )
    .unwrap();
    eventually("all 50 are relayed", || async {
        relay.stats().relayed >= 50
    })
    .await;
    // Stopped before the trims below: its own trimming would race them.
    relay.shutdown().await;
    assert_eq!(
        s.trim_acknowledged(&stream).await.unwrap(),
        0,
        "no group yet"
    );
    s.ensure_group(&stream, &group).await.unwrap();
    assert_eq!(
        s.trim_acknowledged(&stream).await.unwrap(),
        0,
        "none delivered"
    );
    // Ten delivered and pending: still kept.
    let taken = s
        .read_group(&stream, &group, "probe", 10, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(taken.len(), 10);
    assert_eq!(
        s.trim_acknowledged(&stream).await.unwrap(),
        0,
        "all pending"
    );
    let first: Vec<String> = taken.iter().take(5).map(|d| d.entry.clone()).collect();
    s.ack(&stream, &group, &first[1..]).await.unwrap();
    assert_eq!(
        s.trim_acknowledged(&stream).await.unwrap(),
        0,
        "the oldest is still pending"
    );
    s.ack(&stream, &group, &first[..1]).await.unwrap();
    assert_eq!(s.trim_acknowledged(&stream).await.unwrap(), 5);
    assert_eq!(s.len(&stream).await.unwrap(), 45);
    // The rest (five pending with the probe, forty never delivered) reach their effects
    // through a consumer, and the relay's own trimming then empties the stream.
    let events = Events::start(
        Arc::new(store.clone()),
        handler(&store),
        Some(&redis_url()),
        quiver_events::EventsConfig {
            trim_interval: Duration::from_millis(20),
            ..config.clone()
        },
        None,
    )
    .unwrap();
    eventually("the other 45 are handled", || async {
        events.stats().handled >= 45
    })
    .await;
    assert_eq!(followed_notifications(&pool, 51).await, 45);
    eventually("the relay trims what is done", || async {
        s.len(&stream).await.unwrap() == 0
    })
    .await;
    events.shutdown().await;
}

/// A pending entry whose data was deleted from the stream is reported by XAUTOCLAIM
/// once; it is dead-lettered by id, not dropped in silence.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_pending_entry_deleted_from_the_stream_is_dead_lettered(pool: PgPool) {
    users(&pool, 4).await;
    let store = PgStore::from_pool(pool.clone());
    follows(&store, 3, 4).await;
    let config = config();
    let (stream, group) = (config.stream(), config.group.clone());
    let s = streams();
    let claim = store.claim(10).await.unwrap();
    s.append(&stream, claim.events()).await.unwrap();
    let ids: Vec<_> = claim.events().iter().map(|e| e.id).collect();
    claim.published(&ids).await.unwrap();
    s.ensure_group(&stream, &group).await.unwrap();
    // A consumer that took all three and died; one entry is then deleted.
    let taken = s
        .read_group(&stream, &group, "died", 10, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(taken.len(), 3);
    assert_eq!(
        s.delete_entries(&stream, &[taken[1].entry.clone()])
            .await
            .unwrap(),
        1
    );
    let events = Events::start(
        Arc::new(store.clone()),
        handler(&store),
        Some(&redis_url()),
        config.clone(),
        None,
    )
    .unwrap();
    eventually("two are handled and one dead-lettered", || async {
        let st = events.stats();
        st.handled >= 2 && st.dead_lettered >= 1
    })
    .await;
    assert_eq!(followed_notifications(&pool, 4).await, 2);
    let dead = s.entries(&config.dead_stream()).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["entry"], taken[1].entry);
    assert!(dead[0]["error"].contains("deleted"), "{:?}", dead[0]);
    nothing_pending(&s, &config).await;
    events.shutdown().await;
}

/// Following, unfollowing and following again ten times notifies the followee once.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn follow_toggling_notifies_once(pool: PgPool) {
    users(&pool, 2).await;
    let store = PgStore::from_pool(pool.clone());
    for _ in 0..10 {
        store.follow(UserId(1), UserId(2)).await.unwrap();
        store.unfollow(UserId(1), UserId(2)).await.unwrap();
    }
    let events = Events::start(
        Arc::new(store.clone()),
        handler(&store),
        Some(&redis_url()),
        config(),
        None,
    )
    .unwrap();
    eventually("all twenty events are handled", || async {
        events.stats().handled >= 20
    })
    .await;
    assert_eq!(followed_notifications(&pool, 2).await, 1);
    events.shutdown().await;
}

/// Fails every call until `until`, then succeeds.
struct FailsUntil {
    until: tokio::time::Instant,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl Handler for FailsUntil {
    async fn handle(
        &self,
        _: &quiver_model::OutboxEvent,
    ) -> Result<(), quiver_events::EventsError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if tokio::time::Instant::now() < self.until {
            Err(quiver_events::EventsError::Redis("injected failure".into()))
        } else {
            Ok(())
        }
    }
}

/// In process, retries are spaced: writes waking the relay every few milliseconds used
/// to spend an event's whole budget within a transient fault of a quarter second.
#[tokio::test]
async fn in_process_retries_are_spaced_and_outlast_a_short_fault() {
    let store = sqlite_follow(None).await;
    let handler = Arc::new(FailsUntil {
        until: tokio::time::Instant::now() + Duration::from_millis(250),
        calls: AtomicUsize::new(0),
    });
    let events = Events::start(
        Arc::new(store.clone()),
        handler.clone(),
        None,
        quiver_events::EventsConfig {
            relay_poll: Duration::from_millis(10),
            retry_backoff: Duration::from_millis(100),
            max_deliveries: 4,
            ..quiver_events::EventsConfig::default()
        },
        None,
    )
    .unwrap();
    // Writes elsewhere wake the relay all the time.
    for _ in 0..80 {
        events.wake();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eventually("the event is handled", || async {
        events.stats().handled == 1
    })
    .await;
    assert_eq!(events.stats().dead_lettered, 0);
    let calls = handler.calls.load(Ordering::SeqCst);
    assert!((2..=4).contains(&calls), "{calls} attempts");
    events.shutdown().await;
}

/// Consumers of stopped processes (nothing pending, idle) leave the group.
#[tokio::test]
async fn idle_consumers_with_nothing_pending_are_removed() {
    let config = config();
    let (stream, group) = (config.stream(), config.group.clone());
    let s = streams();
    s.ensure_group(&stream, &group).await.unwrap();
    for _ in 0..3 {
        s.append_raw(&stream, vec![("id".to_owned(), "1".to_owned())])
            .await
            .unwrap();
    }
    // Two that read an entry each and acknowledged it, then stopped …
    for name in ["gone-1", "gone-2"] {
        let got = s
            .read_group(&stream, &group, name, 1, Duration::from_millis(10))
            .await
            .unwrap();
        s.ack(&stream, &group, &[got[0].entry.clone()])
            .await
            .unwrap();
    }
    // … and one that holds an entry: it stays, however idle.
    let held = s
        .read_group(&stream, &group, "holding", 10, Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        s.remove_idle_consumers(&stream, &group, Duration::from_secs(60))
            .await
            .unwrap(),
        0,
        "none idle that long"
    );
    assert_eq!(
        s.remove_idle_consumers(&stream, &group, Duration::from_millis(20))
            .await
            .unwrap(),
        2
    );
    assert_eq!(s.group_state(&stream, &group).await.unwrap().pending, 1);
}

/// The database is down while `down` holds: handling and the readiness probe fail as an
/// unreachable database does.
struct Outage {
    inner: Arc<dyn Handler>,
    down: AtomicBool,
    failed: AtomicUsize,
    probes: AtomicUsize,
}

fn unreachable() -> quiver_events::EventsError {
    quiver_events::EventsError::Store(quiver_store::StoreError::Unavailable(
        sqlx::Error::PoolTimedOut,
    ))
}

#[async_trait::async_trait]
impl Handler for Outage {
    async fn handle(
        &self,
        event: &quiver_model::OutboxEvent,
    ) -> Result<(), quiver_events::EventsError> {
        if self.down.load(Ordering::SeqCst) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(unreachable());
        }
        self.inner.handle(event).await
    }

    async fn ready(&self) -> Result<(), quiver_events::EventsError> {
        self.probes.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            Err(unreachable())
        } else {
            Ok(())
        }
    }
}

/// An outage longer than `max_deliveries` claims dead-letters nothing: the consumer
/// waits for the database instead of spending the entry's deliveries on it, and the
/// event takes effect once it is back.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn an_outage_longer_than_the_delivery_budget_loses_nothing(pool: PgPool) {
    users(&pool, 2).await;
    let store = PgStore::from_pool(pool.clone());
    store.follow(UserId(1), UserId(2)).await.unwrap();
    let config = quiver_events::EventsConfig {
        retry_backoff: Duration::from_millis(20),
        ..config()
    };
    let outage = Arc::new(Outage {
        inner: handler(&store),
        down: AtomicBool::new(true),
        failed: AtomicUsize::new(0),
        probes: AtomicUsize::new(0),
    });
    let events = Events::start(
        Arc::new(store.clone()),
        outage.clone(),
        Some(&redis_url()),
        config.clone(),
        None,
    )
    .unwrap();
    eventually("the outage is met", || async {
        outage.failed.load(Ordering::SeqCst) >= 1
    })
    .await;
    let met = tokio::time::Instant::now();
    // Six probes, 20 + 40 + … + 640 ms apart: longer than the three deliveries that
    // claims 300 ms apart would have spent.
    eventually("the consumer waits for the database", || async {
        outage.probes.load(Ordering::SeqCst) >= 6
    })
    .await;
    let budget = config.claim_idle * config.max_deliveries as u32;
    assert!(met.elapsed() >= budget, "the outage outlasted the budget");
    assert_eq!(
        outage.failed.load(Ordering::SeqCst),
        1,
        "no delivery during it"
    );
    assert_eq!(events.stats().dead_lettered, 0);
    outage.down.store(false, Ordering::SeqCst);
    eventually("the event takes effect after the outage", || async {
        events.stats().handled >= 1
    })
    .await;
    assert_eq!(followed_notifications(&pool, 2).await, 1);
    let s = streams();
    nothing_pending(&s, &config).await;
    assert!(s.entries(&config.dead_stream()).await.unwrap().is_empty());
    assert_eq!(events.stats().dead_lettered, 0);
    events.shutdown().await;
}

/// Panics on its first call.
struct PanicsOnce {
    inner: Arc<dyn Handler>,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl Handler for PanicsOnce {
    async fn handle(
        &self,
        event: &quiver_model::OutboxEvent,
    ) -> Result<(), quiver_events::EventsError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("injected panic");
        }
        self.inner.handle(event).await
    }
}

/// A handler that panics dead-letters that entry and no other: the consumer lives on.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_panicking_handler_dead_letters_its_entry_and_the_consumer_lives_on(pool: PgPool) {
    users(&pool, 3).await;
    let store = PgStore::from_pool(pool.clone());
    store.follow(UserId(1), UserId(2)).await.unwrap();
    let config = config();
    let panics = Arc::new(PanicsOnce {
        inner: handler(&store),
        calls: AtomicUsize::new(0),
    });
    let events = Events::start(
        Arc::new(store.clone()),
        panics.clone(),
        Some(&redis_url()),
        config.clone(),
        None,
    )
    .unwrap();
    eventually("the panicking entry is dead-lettered", || async {
        events.stats().dead_lettered >= 1
    })
    .await;
    // A later event reaches the same (only) consumer.
    store.follow(UserId(3), UserId(2)).await.unwrap();
    events.wake();
    eventually("the next event is handled", || async {
        events.stats().handled >= 1
    })
    .await;
    let s = streams();
    let dead = s.entries(&config.dead_stream()).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0]["error"].contains("injected panic"), "{dead:?}");
    assert_eq!(followed_notifications(&pool, 2).await, 1);
    nothing_pending(&s, &config).await;
    events.shutdown().await;
}
