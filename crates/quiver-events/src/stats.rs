//! Counters and gauges of the relay and the consumers, read by the server at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared by the relay and every consumer of a process.
#[derive(Debug, Default)]
pub struct EventStats {
    relayed: AtomicU64,
    relay_errors: AtomicU64,
    backlog: AtomicU64,
    relay_lag_micros: AtomicU64,
    handled: AtomicU64,
    retries: AtomicU64,
    reclaimed: AtomicU64,
    dead_lettered: AtomicU64,
    /// Pending and undelivered entries of the group, by stream.
    groups: std::sync::Mutex<Vec<(u64, u64)>>,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EventsSnapshot {
    /// Events moved from the outbox to the stream (or dispatched in process).
    pub relayed: u64,
    /// Relay batches that failed (database or Redis down); they are retried.
    pub relay_errors: u64,
    /// Outbox rows not yet published, at the last measurement.
    pub backlog: u64,
    /// Age of the oldest unpublished row at the last measurement, seconds.
    pub relay_lag_seconds: f64,
    /// Events whose effects completed here.
    pub handled: u64,
    /// Handling attempts that failed and were left for redelivery.
    pub retries: u64,
    /// Entries this process took over from a consumer that did not finish them.
    pub reclaimed: u64,
    /// Events moved to the dead-letter stream (or, in process, given up on).
    pub dead_lettered: u64,
    /// Entries delivered to the group and not yet acknowledged.
    pub consumer_pending: u64,
    /// Entries not yet delivered to the group.
    pub consumer_lag: u64,
}

impl EventStats {
    pub(crate) fn relayed(&self, n: usize) {
        self.relayed.fetch_add(n as u64, Ordering::Relaxed);
    }
    pub(crate) fn relay_error(&self) {
        self.relay_errors.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn backlog(&self, rows: u64, lag: std::time::Duration) {
        self.backlog.store(rows, Ordering::Relaxed);
        self.relay_lag_micros
            .store(lag.as_micros() as u64, Ordering::Relaxed);
    }
    pub(crate) fn handled(&self) {
        self.handled.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn reclaimed(&self, n: usize) {
        self.reclaimed.fetch_add(n as u64, Ordering::Relaxed);
    }
    pub(crate) fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn group(&self, partition: usize, pending: u64, lag: u64) {
        let mut groups = self.groups.lock().expect("stats lock");
        if groups.len() <= partition {
            groups.resize(partition + 1, (0, 0));
        }
        groups[partition] = (pending, lag);
    }

    /// The counters now.
    pub fn snapshot(&self) -> EventsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (pending, lag) = {
            let groups = self.groups.lock().expect("stats lock");
            groups.iter().fold((0, 0), |(p, l), g| (p + g.0, l + g.1))
        };
        EventsSnapshot {
            relayed: get(&self.relayed),
            relay_errors: get(&self.relay_errors),
            backlog: get(&self.backlog),
            relay_lag_seconds: get(&self.relay_lag_micros) as f64 / 1e6,
            handled: get(&self.handled),
            retries: get(&self.retries),
            reclaimed: get(&self.reclaimed),
            dead_lettered: get(&self.dead_lettered),
            consumer_pending: pending,
            consumer_lag: lag,
        }
    }
}
