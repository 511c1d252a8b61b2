//! Read replicas on a real streaming replica (`pg_basebackup -R` of the replication primary
//! `cargo xtask test` starts): reads go to the replica, every write is readable through it
//! as soon as it returns, and a replica that lags or dies leaves the rotation without a
//! failed read and comes back by itself.

use crate::support::fixture;
use quiver_model::{NewPost, PostKind, UserId};
use quiver_store::write::PostWrites as _;
use quiver_store::{PgConfig, PgStore, Store as _};
use quiver_testkit::replica::{PgReplica, primary_url};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// A fresh database on the primary with the schema and the fixture, a replica of it, and
/// a store reading through the replica.
async fn setup(test: &str, max_lag: Duration) -> (PgStore, PgReplica, String) {
    let db = format!("quiver_replica_{test}_{}", std::process::id());
    let admin = primary_url();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap();
    for sql in [
        format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        format!("CREATE DATABASE {db}"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let base = admin.rsplit_once('/').unwrap().0;
    let url = format!("{base}/{db}");
    let primary = PgStore::connect(&PgConfig {
        url: url.clone(),
        ..PgConfig::default()
    })
    .await
    .unwrap();
    primary.migrate().await.unwrap();
    primary.load_dataset(&fixture(5), &|_| {}).await.unwrap();
    let replica = tokio::task::spawn_blocking(PgReplica::start).await.unwrap();
    let store = PgStore::connect(&PgConfig {
        url: url.clone(),
        read_urls: vec![replica.url(&db)],
        replica_max_lag: max_lag,
        replica_check_interval: Duration::from_millis(50),
        ..PgConfig::default()
    })
    .await
    .unwrap();
    in_rotation(&store, true).await;
    (store, replica, url)
}

/// The post written through the store and the change made behind its back are both
/// visible.
async fn reads_the_write_and_the_change(store: &PgStore, post: quiver_model::PostId) {
    assert!(store.posts(&[post]).await.unwrap().contains_key(&post));
    let users = store.users(&[UserId(2)]).await.unwrap();
    assert_eq!(users[&UserId(2)].display_name, "changed");
}

async fn in_rotation(store: &PgStore, expected: bool) {
    quiver_testkit::eventually(&format!("the replica is in rotation: {expected}"), || {
        let now = store.replicas()[0].in_rotation;
        async move { now == expected }
    })
    .await;
}

fn replica_reads(store: &PgStore) -> u64 {
    store.replicas()[0].reads
}

fn post(body: &str) -> NewPost {
    NewPost {
        kind: PostKind::Post,
        body: body.into(),
        media: vec![],
        tags: vec![],
        wish: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_is_readable_through_the_replica_as_soon_as_it_returns() {
    let (store, _replica, url) = setup("ryw", Duration::from_secs(5)).await;
    let before = replica_reads(&store);
    let started = std::time::Instant::now();
    for i in 0..1000 {
        let written = store
            .create_post(UserId(1), &post(&format!("post {i}")))
            .await
            .unwrap();
        let read = store.posts(&[written.id]).await.unwrap();
        assert_eq!(
            read.get(&written.id).map(|p| p.body.as_str()),
            Some(written.body.as_str()),
            "write {i} was not readable right after it returned"
        );
    }
    let through_replica = started.elapsed() / 1000;
    // Every read went to the replica: the pairs tested it, not the primary.
    assert_eq!(replica_reads(&store) - before, 1000);
    assert!(store.replicas()[0].in_rotation);
    // What waiting for the replica costs a write, for the record (not asserted: timing).
    let alone = PgStore::connect(&PgConfig {
        url,
        ..PgConfig::default()
    })
    .await
    .unwrap();
    let started = std::time::Instant::now();
    for i in 0..1000 {
        let written = alone
            .create_post(UserId(1), &post(&format!("alone {i}")))
            .await
            .unwrap();
        alone.posts(&[written.id]).await.unwrap();
    }
    eprintln!(
        "a write and a read: {through_replica:?} through the replica, {:?} on the primary alone",
        started.elapsed() / 1000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_replaying_leaves_the_rotation_and_comes_back_by_itself() {
    let (store, replica, url) = setup("lag", Duration::from_millis(300)).await;
    let db = url.rsplit_once('/').unwrap().1;
    let mut on_replica = <sqlx::PgConnection as sqlx::Connection>::connect(&replica.url(db))
        .await
        .unwrap();
    let mut on_primary = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let name = |store: PgStore| async move {
        store.users(&[UserId(2)]).await.unwrap()[&UserId(2)]
            .display_name
            .clone()
    };
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&mut on_replica)
        .await
        .unwrap();
    // A change behind the store's back: the replica does not replay it, and reads show
    // that they are the replica's.
    sqlx::query("UPDATE users SET display_name = 'changed' WHERE id = 2")
        .execute(&mut on_primary)
        .await
        .unwrap();
    assert_eq!(name(store.clone()).await, "User 2");
    // A write through the store waits for the replica, gives up after the bound and
    // takes it out of the rotation: from then on the primary answers.
    let written = store
        .create_post(UserId(1), &post("while paused"))
        .await
        .unwrap();
    assert!(!store.replicas()[0].in_rotation);
    reads_the_write_and_the_change(&store, written.id).await;
    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&mut on_replica)
        .await
        .unwrap();
    in_rotation(&store, true).await;
    let before = replica_reads(&store);
    reads_the_write_and_the_change(&store, written.id).await;
    assert_eq!(
        replica_reads(&store) - before,
        2,
        "the replica answers again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_replica_moves_reads_to_the_primary_without_a_failed_read() {
    let (store, replica, _) = setup("kill", Duration::from_millis(500)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (store, stop, reads) = (store.clone(), stop.clone(), reads.clone());
            tokio::spawn(async move {
                let ids: Vec<UserId> = (1..=6).map(UserId).collect();
                while !stop.load(Ordering::Relaxed) {
                    let users = store.users(&ids).await.expect("no read fails");
                    assert_eq!(users.len(), 6);
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let at = |n: u64| {
        let reads = reads.clone();
        async move {
            let target = reads.load(Ordering::Relaxed) + n;
            quiver_testkit::eventually("readers make progress", || {
                let now = reads.load(Ordering::Relaxed);
                async move { now >= target }
            })
            .await;
        }
    };
    at(100).await;
    tokio::task::block_in_place(|| replica.kill());
    in_rotation(&store, false).await;
    let served_while_down = replica_reads(&store);
    at(100).await;
    assert_eq!(
        replica_reads(&store),
        served_while_down,
        "the primary took the reads"
    );
    tokio::task::block_in_place(|| replica.restart());
    in_rotation(&store, true).await;
    at(100).await;
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.expect("a reader failed");
    }
    assert!(
        replica_reads(&store) > served_while_down,
        "the replica is back"
    );
}
