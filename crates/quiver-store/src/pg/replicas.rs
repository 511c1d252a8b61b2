//! Streaming read replicas of `PgStore`: reads go round-robin to the replicas in rotation
//! (the primary when there is none), and a write returns only after every replica in
//! rotation has replayed it, so whatever reads after a write's answer sees it, through any
//! replica, on any quiver process: read-your-writes without carrying WAL positions, at the
//! price of the replication lag on writes. A replica that fails a read, cannot be reached,
//! or has not replayed a write within `replica_max_lag` leaves the rotation; a watcher
//! brings it back once it answers and has replayed everything the primary had written
//! when it began to rejoin.

use crate::store::Waits;
use crate::{PoolStats, StoreError};
use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPool;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{Notify, watch};

const IN: u8 = 0;
/// Not read from yet, but waited for by writes: everything written while it catches up is
/// replayed before it is read from.
const JOINING: u8 = 1;
const OUT: u8 = 2;

/// How often a replica is polled while a write waits for it, after `EAGER_POLLS` polls
/// back to back.
const POLL: Duration = Duration::from_millis(1);
const EAGER_POLLS: u32 = 8;

/// The replicas of one store.
#[derive(Debug, Default)]
pub(crate) struct Replicas {
    set: Vec<Arc<Replica>>,
    next: AtomicUsize,
    max_lag: Duration,
}

/// One replica: its pool, where it stands, and how far it has replayed.
#[derive(Debug)]
pub(crate) struct Replica {
    pool: PgPool,
    /// The replica's URL without its password, for logs.
    name: String,
    state: AtomicU8,
    /// The WAL position the replica was last seen to have replayed.
    replayed: watch::Sender<i64>,
    /// The highest position a write waits for.
    wanted: AtomicI64,
    wake: Notify,
    reads: AtomicU64,
    waits: Waits,
}

/// Where one replica stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// Its URL without the password.
    pub name: String,
    /// Whether reads go to it now.
    pub in_rotation: bool,
    /// Reads it answered since the store was created.
    pub reads: u64,
    pub pool: PoolStats,
}

impl Replicas {
    /// Replicas over `pools` (named by their redacted URLs), all out of rotation until
    /// their watchers, started here against `primary`, have seen them caught up.
    pub(crate) fn start(
        pools: Vec<(String, PgPool)>,
        primary: &PgPool,
        max_lag: Duration,
        check_every: Duration,
    ) -> Self {
        let set: Vec<Arc<Replica>> = pools
            .into_iter()
            .map(|(name, pool)| {
                Arc::new(Replica {
                    pool,
                    name,
                    state: AtomicU8::new(OUT),
                    replayed: watch::Sender::new(0),
                    wanted: AtomicI64::new(0),
                    wake: Notify::new(),
                    reads: AtomicU64::new(0),
                    waits: Waits::default(),
                })
            })
            .collect();
        for r in &set {
            tokio::spawn(watch_replica(
                Arc::downgrade(r),
                primary.clone(),
                max_lag,
                check_every,
            ));
        }
        Self {
            set,
            next: AtomicUsize::new(0),
            max_lag,
        }
    }

    /// The next replica in rotation, if any.
    pub(crate) fn pick(&self) -> Option<&Replica> {
        let n = self.set.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &*self.set[(start + i) % n])
            .find(|r| r.state.load(Ordering::SeqCst) == IN)
    }

    /// Waits until every replica in rotation (or joining it) has replayed what `primary`
    /// has written so far; one that does not within `max_lag` leaves the rotation.
    pub(crate) async fn await_replay(&self, primary: &PgPool) {
        if self.set.is_empty() {
            return;
        }
        let target = match current_lsn(primary).await {
            Ok(lsn) => lsn,
            Err(e) => {
                // Without the primary's position no replica can be shown to be current.
                for r in &self.set {
                    r.leave(&format!("the primary's position is unknown: {e}"));
                }
                return;
            }
        };
        let waits = self
            .set
            .iter()
            .filter(|r| r.state.load(Ordering::SeqCst) != OUT)
            .map(|r| r.wait_for(target, self.max_lag));
        futures::future::join_all(waits).await;
    }

    pub(crate) fn status(&self) -> Vec<ReplicaStatus> {
        self.set
            .iter()
            .map(|r| ReplicaStatus {
                name: r.name.clone(),
                in_rotation: r.state.load(Ordering::SeqCst) == IN,
                reads: r.reads.load(Ordering::Relaxed),
                pool: r.waits.stats(&r.pool),
            })
            .collect()
    }

    pub(crate) async fn close(&self) {
        for r in &self.set {
            r.pool.close().await;
        }
    }
}

impl Replica {
    /// A pooled connection to this replica; failing to get one takes it out of the
    /// rotation (the read then goes to the primary).
    pub(crate) async fn conn(&self) -> Option<PoolConnection<Postgres>> {
        match self.waits.acquire(&self.pool).await {
            Ok(conn) => Some(conn),
            Err(e) => {
                self.leave(&crate::describe(&e));
                None
            }
        }
    }

    /// Counts a read this replica answered.
    pub(crate) fn served(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// What a failed read here means: `None` when the primary should answer it instead
    /// (the replica broke, and leaves the rotation, or canceled the statement for a
    /// conflict with recovery, 40001), else the error to return.
    pub(crate) fn failed(&self, e: sqlx::Error) -> Option<StoreError> {
        let conflict = e
            .as_database_error()
            .is_some_and(|db| db.code().as_deref() == Some("40001"));
        match StoreError::from(e) {
            e @ StoreError::Unavailable(_) => {
                self.leave(&crate::describe(&e));
                None
            }
            _ if conflict => None,
            e => Some(e),
        }
    }

    async fn wait_for(&self, target: i64, bound: Duration) {
        if *self.replayed.borrow() >= target {
            return;
        }
        self.wanted.fetch_max(target, Ordering::SeqCst);
        self.wake.notify_one();
        let mut seen = self.replayed.subscribe();
        let caught_up = tokio::time::timeout(bound, seen.wait_for(|&lsn| lsn >= target)).await;
        if !matches!(caught_up, Ok(Ok(_))) {
            self.leave(&format!("it did not replay a write within {bound:?}"));
        }
    }

    fn leave(&self, why: &str) {
        if self.state.swap(OUT, Ordering::SeqCst) != OUT {
            tracing::warn!(replica = %self.name, reason = why, "read replica left the rotation");
        }
    }
}

/// Follows one replica for as long as its store lives: polls its replay position while
/// writes wait for it, pings it every `check_every`, and brings it back into rotation.
async fn watch_replica(
    replica: Weak<Replica>,
    primary: PgPool,
    max_lag: Duration,
    check_every: Duration,
) {
    // The first check runs at once, so a healthy replica takes reads from the start.
    let mut due = tokio::time::Instant::now();
    loop {
        let Some(r) = replica.upgrade() else { return };
        let woken = r.wake.notified();
        tokio::pin!(woken);
        tokio::select! {
            () = &mut woken => {}
            () = tokio::time::sleep_until(due) => {}
        }
        if tokio::time::Instant::now() >= due {
            due = tokio::time::Instant::now() + check_every;
            if r.state.load(Ordering::SeqCst) == OUT {
                rejoin(&r, &primary, max_lag).await;
                continue;
            }
        }
        // Until every waiting write is satisfied (a write gives up after `max_lag`).
        let wanted = || r.wanted.load(Ordering::SeqCst);
        if let Err(why) = catch_up(&r, wanted, max_lag).await {
            r.leave(&why);
        }
    }
}

/// Out → joining → in: writes start waiting for the replica, then it must replay what the
/// primary had written by then (every write that did not wait for it is older).
async fn rejoin(r: &Replica, primary: &PgPool, max_lag: Duration) {
    if let Err(why) = replay_lsn(&r.pool).await {
        tracing::debug!(replica = %r.name, reason = why, "read replica still unavailable");
        return;
    }
    r.state.store(JOINING, Ordering::SeqCst);
    let caught_up = match current_lsn(primary).await {
        Ok(target) => catch_up(r, || target, max_lag).await,
        Err(_) => Ok(false),
    };
    let next = if caught_up == Ok(true) { IN } else { OUT };
    if r.state
        .compare_exchange(JOINING, next, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
        && next == IN
    {
        tracing::info!(replica = %r.name, "read replica in rotation");
    }
}

/// Polls the replica's replay position, publishing each reading, until it reaches
/// `target()` (`Ok(true)`), the replica leaves the rotation or `within` passes
/// (`Ok(false)`), or it cannot answer (`Err`, saying why). Back to back at first (replay
/// on a healthy replica takes well under a millisecond), then every `POLL`.
async fn catch_up(r: &Replica, target: impl Fn() -> i64, within: Duration) -> Result<bool, String> {
    let deadline = tokio::time::Instant::now() + within;
    let mut attempt = 0;
    loop {
        let lsn = replay_lsn(&r.pool).await?;
        r.replayed.send_replace(lsn);
        if lsn >= target() {
            return Ok(true);
        }
        if r.state.load(Ordering::SeqCst) == OUT || tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        if attempt < EAGER_POLLS {
            attempt += 1;
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The primary's WAL write position, in bytes.
async fn current_lsn(primary: &PgPool) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar!(r#"SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS "lsn!""#)
            .fetch_one(primary)
            .await?,
    )
}

/// How far a replica has replayed, in bytes; a server that is not replaying (not a
/// standby, or promoted) is not a replica.
/// `Err` says why, for logs.
async fn replay_lsn(replica: &PgPool) -> Result<i64, String> {
    sqlx::query_scalar!(r#"SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint AS lsn"#)
        .fetch_one(replica)
        .await
        .map_err(|e| crate::describe(&StoreError::from(e)))?
        .ok_or_else(|| "it is not a standby".to_owned())
}
