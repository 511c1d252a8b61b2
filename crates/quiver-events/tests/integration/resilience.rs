//! Events under faults: without Redis, through trims and deleted entries, retries, idle
//! consumers, outages longer than the delivery budget and panicking handlers.

use crate::delivery::*;
use crate::support::{AlwaysFails, config, eventually, redis_url, start, users};
use quiver_events::{EffectsHandler, Handler};
use quiver_model::UserId;
use quiver_store::PgStore;
use quiver_store::events::{FanOut, Outbox};
use quiver_store::write::GraphWrites;
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

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
    let events = start(&store, fails.clone(), None, config.clone());
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
    let events = start(
        &store,
        Arc::new(EffectsHandler::new(
            Arc::new(store.clone()),
            None,
            FanOut::batches_of(10),
        )),
        None,
        config,
    );
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
    let relay = start(
        &store,
        handler(&store),
        Some(&redis_url()),
        quiver_events::EventsConfig {
            consumers: 0,
            trim_interval: Duration::from_millis(20),
            ..config.clone()
        },
    );
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
    let events = start(
        &store,
        handler(&store),
        Some(&redis_url()),
        quiver_events::EventsConfig {
            trim_interval: Duration::from_millis(20),
            ..config.clone()
        },
    );
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
    let events = start(&store, handler(&store), Some(&redis_url()), config.clone());
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
    let events = start(&store, handler(&store), Some(&redis_url()), config());
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
    let events = start(
        &store,
        handler.clone(),
        None,
        quiver_events::EventsConfig {
            relay_poll: Duration::from_millis(10),
            retry_backoff: Duration::from_millis(100),
            max_deliveries: 4,
            ..quiver_events::EventsConfig::default()
        },
    );
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
    let events = start(&store, outage.clone(), Some(&redis_url()), config.clone());
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
    let events = start(&store, panics.clone(), Some(&redis_url()), config.clone());
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
