//! Prometheus metrics of the service. Request metrics are recorded as requests finish;
//! counters kept elsewhere (cache outcomes, prefetch, the connection pool) are sampled
//! when `/metrics` is scraped; so are the event layer's, except each event's
//! commit-to-effect lag, which its consumers observe directly.

use hyper::Method;
use prometheus::core::Collector as _;
use prometheus::{
    Counter, Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use quiver_cache::{Outcome, StatsSnapshot};
use quiver_enrich::PrefetchStats;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Methods and statuses whose request metrics are resolved once per route and kept: the
/// request path then touches no label map and takes no lock. Anything else (and
/// unmatched requests) goes through the label values.
const FAST_METHODS: [Method; 5] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
];
const FAST_STATUSES: [u16; 16] = [
    200, 201, 204, 304, 400, 401, 403, 404, 405, 413, 414, 422, 429, 500, 503, 504,
];

/// What the sampled counters read at scrape time.
#[derive(Debug, Default)]
pub(crate) struct Sample {
    pub(crate) caches: Vec<(String, StatsSnapshot)>,
    pub(crate) prefetch: Option<PrefetchStats>,
    pub(crate) prefetch_queued: usize,
    pub(crate) pool_size: u32,
    pub(crate) pool_idle: usize,
    pub(crate) pool_max: u32,
    pub(crate) pool_waits: u64,
    pub(crate) pool_wait_micros: u64,
    pub(crate) replicas: u32,
    pub(crate) replicas_in_rotation: u32,
    pub(crate) replica_reads: u64,
    pub(crate) events: Option<quiver_events::EventsSnapshot>,
    pub(crate) concurrency_limit: usize,
    pub(crate) concurrency_ceiling: usize,
}

/// Every metric, in one registry.
pub(crate) struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    in_flight: IntGauge,
    concurrency: IntGaugeVec,
    shed: IntCounter,
    rate_limited: IntCounter,
    timeouts: IntCounter,
    cache_outcomes: IntCounterVec,
    cache_events: IntCounterVec,
    readiness_checks: IntCounter,
    prefetch: IntCounterVec,
    prefetch_queue: IntGauge,
    pool: IntGaugeVec,
    pool_waits: IntCounterVec,
    pool_wait_seconds: Counter,
    replicas: IntGaugeVec,
    replica_reads: IntCounterVec,
    events: IntCounterVec,
    outbox_backlog: IntGauge,
    relay_lag: Gauge,
    consumer: IntGaugeVec,
    event_lag: HistogramVec,
    connections_open: IntGauge,
    connections_closed: IntCounterVec,
    /// The request counter and latency histogram of each (route, method, status) of
    /// `FAST_METHODS` × `FAST_STATUSES`, resolved on first use.
    handles: Box<[OnceLock<(IntCounter, prometheus::Histogram)>]>,
    /// Last sampled values of counters kept elsewhere, to add only the difference.
    seen: Mutex<HashMap<(String, String), u64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "quiver_http_requests_total",
                "Requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "quiver_http_request_duration_seconds",
                "Request latency by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        let in_flight =
            IntGauge::new("quiver_http_in_flight", "Requests being handled").expect("valid");
        let concurrency = IntGaugeVec::new(
            Opts::new(
                "quiver_http_concurrency_limit",
                "Requests handled at once at most: the adaptive limit now and its ceiling",
            ),
            &["limit"],
        )
        .expect("valid metric");
        let shed = IntCounter::new(
            "quiver_http_shed_total",
            "Requests refused with 503 because no concurrency permit came in time",
        )
        .expect("valid");
        let rate_limited = IntCounter::new(
            "quiver_http_rate_limited_total",
            "Requests refused with 429 by the per-client rate limit",
        )
        .expect("valid");
        let timeouts = IntCounter::new(
            "quiver_http_timeouts_total",
            "Requests cancelled at their deadline (504)",
        )
        .expect("valid");
        let cache_outcomes = IntCounterVec::new(
            Opts::new(
                "quiver_cache_lookups_total",
                "Cache lookups by cache and outcome",
            ),
            &["cache", "outcome"],
        )
        .expect("valid metric");
        let readiness_checks = IntCounter::new(
            "quiver_readiness_checks_total",
            "Readiness checks run (database ping, Redis fetch): concurrent /readyz \
             requests share one",
        )
        .expect("valid");
        let cache_events = IntCounterVec::new(
            Opts::new(
                "quiver_cache_events_total",
                "Cache events by cache: l1_flush (invalidations may have been missed), \
                 l1_oversize (a value too heavy for the L1, kept in Redis only), \
                 redis_error",
            ),
            &["cache", "event"],
        )
        .expect("valid metric");
        let prefetch = IntCounterVec::new(
            Opts::new(
                "quiver_prefetch_jobs_total",
                "Next pages by what prefetch did: skipped_warm (already warm or being warmed), submitted, dropped (queue full), succeeded, failed",
            ),
            &["result"],
        )
        .expect("valid metric");
        let prefetch_queue = IntGauge::new(
            "quiver_prefetch_queue_depth",
            "Prefetch jobs waiting for a worker",
        )
        .expect("valid");
        let pool = IntGaugeVec::new(
            Opts::new(
                "quiver_db_pool_connections",
                "Database pool connections by state",
            ),
            &["state"],
        )
        .expect("valid metric");
        let pool_waits = IntCounterVec::new(
            Opts::new(
                "quiver_db_pool_waits_total",
                "Database pool checkouts that found no idle connection",
            ),
            &[],
        )
        .expect("valid metric");
        let pool_wait_seconds = Counter::new(
            "quiver_db_pool_wait_seconds_total",
            "Time checkouts waited for a database connection",
        )
        .expect("valid");
        let replicas = IntGaugeVec::new(
            Opts::new(
                "quiver_db_replicas",
                "PostgreSQL read replicas: configured, and in rotation (taking reads) now",
            ),
            &["state"],
        )
        .expect("valid metric");
        let replica_reads = IntCounterVec::new(
            Opts::new(
                "quiver_db_replica_reads_total",
                "Reads the PostgreSQL read replicas answered",
            ),
            &[],
        )
        .expect("valid metric");
        let events = IntCounterVec::new(
            Opts::new(
                "quiver_events_total",
                "Events by stage: relayed (outbox to stream), handled, retried (a failed \
                 attempt), reclaimed (taken over from another consumer), dead_lettered, \
                 relay_errors (failed relay batches)",
            ),
            &["stage"],
        )
        .expect("valid metric");
        let outbox_backlog = IntGauge::new(
            "quiver_outbox_backlog",
            "Outbox rows committed and not yet published",
        )
        .expect("valid");
        let relay_lag = Gauge::new(
            "quiver_relay_lag_seconds",
            "Age of the oldest unpublished outbox row",
        )
        .expect("valid");
        let consumer = IntGaugeVec::new(
            Opts::new(
                "quiver_consumer_entries",
                "Consumer group entries: pending (delivered, not acknowledged) and lag \
                 (not yet delivered)",
            ),
            &["state"],
        )
        .expect("valid metric");
        let event_lag = HistogramVec::new(
            HistogramOpts::new(
                "quiver_event_lag_seconds",
                "From an event's commit to the end of its effects, by kind",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["kind"],
        )
        .expect("valid metric");
        let connections_open = IntGauge::new(
            "quiver_http_connections_open",
            "Client connections open on the public listener",
        )
        .expect("valid");
        let connections_closed = IntCounterVec::new(
            Opts::new(
                "quiver_http_connections_closed_total",
                "Connections the server closed on its own: refused (over the connection \
                 cap) or idle (no request in flight for the idle timeout, or none at all \
                 before the header timeout)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(connections_open.clone()),
            Box::new(connections_closed.clone()),
            Box::new(events.clone()),
            Box::new(outbox_backlog.clone()),
            Box::new(relay_lag.clone()),
            Box::new(consumer.clone()),
            Box::new(event_lag.clone()),
            Box::new(latency.clone()),
            Box::new(in_flight.clone()),
            Box::new(concurrency.clone()),
            Box::new(shed.clone()),
            Box::new(rate_limited.clone()),
            Box::new(timeouts.clone()),
            Box::new(cache_outcomes.clone()),
            Box::new(cache_events.clone()),
            Box::new(readiness_checks.clone()),
            Box::new(prefetch.clone()),
            Box::new(prefetch_queue.clone()),
            Box::new(pool.clone()),
            Box::new(pool_waits.clone()),
            Box::new(pool_wait_seconds.clone()),
            Box::new(replicas.clone()),
            Box::new(replica_reads.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        // Exported at zero from the start, so rules and dashboards see the series.
        for reason in ["refused", "idle"] {
            connections_closed.with_label_values(&[reason]);
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process metrics register once");
        Self {
            registry,
            requests,
            latency,
            in_flight,
            concurrency,
            shed,
            rate_limited,
            timeouts,
            cache_outcomes,
            cache_events,
            readiness_checks,
            prefetch,
            prefetch_queue,
            pool,
            pool_waits,
            pool_wait_seconds,
            replicas,
            replica_reads,
            events,
            outbox_backlog,
            relay_lag,
            consumer,
            event_lag,
            connections_open,
            connections_closed,
            handles: (0..crate::router::ROUTE_COUNT * FAST_METHODS.len() * FAST_STATUSES.len())
                .map(|_| OnceLock::new())
                .collect(),
            seen: Mutex::default(),
        }
    }
}

/// Decrements the in-flight gauge when a request ends, however it ends.
pub(crate) struct InFlight<'a>(&'a IntGauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Decrements the open-connections gauge when a connection ends.
pub(crate) struct Connection<'a>(&'a IntGauge);

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// Counts a request as in flight until the guard drops.
    pub(crate) fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    /// Records a finished request.
    /// Counts a finished request of `route` (its index, when it matched one; `label` is
    /// its template or what became of it).
    pub(crate) fn request(
        &self,
        route: Option<usize>,
        label: &str,
        method: &Method,
        status: u16,
        elapsed: Duration,
    ) {
        let fast = route.and_then(|r| {
            let m = FAST_METHODS.iter().position(|x| x == method)?;
            let s = FAST_STATUSES.iter().position(|x| *x == status)?;
            Some((r * FAST_METHODS.len() + m) * FAST_STATUSES.len() + s)
        });
        let resolve = || {
            (
                self.requests.with_label_values(&[
                    label,
                    method_label(method),
                    status_label(status),
                ]),
                self.latency.with_label_values(&[label]),
            )
        };
        let resolved;
        let (count, latency) = match fast.and_then(|i| self.handles.get(i)) {
            Some(slot) => slot.get_or_init(resolve),
            None => {
                resolved = resolve();
                &resolved
            }
        };
        count.inc();
        latency.observe(elapsed.as_secs_f64());
    }

    /// Counts a connection as open until the guard drops.
    pub(crate) fn connection(&self) -> Connection<'_> {
        self.connections_open.inc();
        Connection(&self.connections_open)
    }

    /// Counts a connection the server closed on its own, by why.
    pub(crate) fn connection_closed(&self, reason: &'static str) {
        self.connections_closed.with_label_values(&[reason]).inc();
    }

    pub(crate) fn readiness_check(&self) {
        self.readiness_checks.inc();
    }

    pub(crate) fn shed(&self) {
        self.shed.inc();
    }

    pub(crate) fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    pub(crate) fn timeout(&self) {
        self.timeouts.inc();
    }

    /// What consumers tell each event's commit-to-effect lag.
    pub(crate) fn event_lag_observer(&self) -> quiver_events::LagObserver {
        let lag = self.event_lag.clone();
        std::sync::Arc::new(move |kind: quiver_model::EventKind, took: Duration| {
            lag.with_label_values(&[kind.as_str()])
                .observe(took.as_secs_f64());
        })
    }

    /// The text exposition, after sampling `sample`.
    pub(crate) fn render(&self, sample: &Sample) -> Vec<u8> {
        if let Some(e) = sample.events {
            for (stage, n) in [
                ("relayed", e.relayed),
                ("handled", e.handled),
                ("retried", e.retries),
                ("reclaimed", e.reclaimed),
                ("dead_lettered", e.dead_lettered),
                ("relay_errors", e.relay_errors),
            ] {
                self.add_counter(&self.events, &[stage], n);
            }
            self.outbox_backlog.set(e.backlog as i64);
            self.relay_lag.set(e.relay_lag_seconds);
            self.consumer
                .with_label_values(&["pending"])
                .set(e.consumer_pending as i64);
            self.consumer
                .with_label_values(&["lag"])
                .set(e.consumer_lag as i64);
        }
        for (cache, stats) in &sample.caches {
            for outcome in Outcome::ALL {
                self.add_counter(
                    &self.cache_outcomes,
                    &[cache, outcome.as_str()],
                    stats.get(outcome),
                );
            }
            for (event, n) in [
                ("l1_flush", stats.l1_flushes),
                ("l1_oversize", stats.l1_oversize),
                ("redis_error", stats.redis_errors),
            ] {
                self.add_counter(&self.cache_events, &[cache, event], n);
            }
        }
        if let Some(p) = sample.prefetch {
            for (result, n) in [
                ("skipped_warm", p.skipped),
                ("submitted", p.submitted),
                ("dropped", p.dropped),
                ("succeeded", p.succeeded),
                ("failed", p.failed),
            ] {
                self.add_counter(&self.prefetch, &[result], n);
            }
        }
        self.prefetch_queue.set(sample.prefetch_queued as i64);
        self.concurrency
            .with_label_values(&["current"])
            .set(sample.concurrency_limit as i64);
        self.concurrency
            .with_label_values(&["ceiling"])
            .set(sample.concurrency_ceiling as i64);
        self.pool
            .with_label_values(&["open"])
            .set(i64::from(sample.pool_size));
        self.pool
            .with_label_values(&["idle"])
            .set(sample.pool_idle as i64);
        self.pool
            .with_label_values(&["max"])
            .set(i64::from(sample.pool_max));
        self.add_counter(&self.pool_waits, &[], sample.pool_waits);
        let waited = self.advance(
            (
                "quiver_db_pool_wait_seconds_total".to_owned(),
                String::new(),
            ),
            sample.pool_wait_micros,
        );
        self.pool_wait_seconds.inc_by(waited as f64 / 1e6);
        self.replicas
            .with_label_values(&["configured"])
            .set(i64::from(sample.replicas));
        self.replicas
            .with_label_values(&["in_rotation"])
            .set(i64::from(sample.replicas_in_rotation));
        self.add_counter(&self.replica_reads, &[], sample.replica_reads);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding to a Vec cannot fail");
        out
    }

    /// Brings a counter up to `value`, a total kept elsewhere.
    fn add_counter(&self, vec: &IntCounterVec, labels: &[&str], value: u64) {
        // Touching the series exports it at 0 before anything happened.
        let counter = vec.with_label_values(labels);
        let key = (vec.desc()[0].fq_name.clone(), labels.join("\u{0}"));
        counter.inc_by(self.advance(key, value));
    }

    /// How far the total under `key` moved since the last sample, now that it is `value`.
    fn advance(&self, key: (String, String), value: u64) -> u64 {
        let mut seen = self.seen.lock().expect("metrics lock");
        let last = seen.entry(key).or_insert(0);
        let moved = value.saturating_sub(*last);
        *last = (*last).max(value);
        moved
    }
}

/// The method as a label: the standard ones by name, any extension method as `other`
/// (a client can send any token as a method; each would otherwise be a new series).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        204 => "204",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        413 => "413",
        414 => "414",
        422 => "422",
        429 => "429",
        500 => "500",
        503 => "503",
        504 => "504",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}
