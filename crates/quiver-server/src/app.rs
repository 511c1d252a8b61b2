//! The request pipeline of the public listener, in order: request id, URI and body-size
//! limits, routing (404/405), authentication, per-client rate limit, concurrency permit
//! (load shedding), deadline, the route's handler, then compression, metrics and logs.

use crate::admission::Admission;
use crate::auth::{Auth, AuthError};
use crate::compose::Caches;
use crate::conditional;
use crate::config::ServerConfig;
use crate::metrics::{Metrics, Sample};
use crate::respond::{self, Body, Timed};
use crate::router::{Matched, Route, Router};
use crate::written;
use bytes::Bytes;
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter, clock::DefaultClock, state::keyed::DefaultKeyedStateStore};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use quiver_cache::Remote;
use quiver_codec::problem::ProblemType;
use quiver_enrich::{Engine, EnrichError, Rendered, Timings};
use quiver_model::{OrderId, OrderStatus, PostId, UserId};
use quiver_store::Store;
use quiver_store::write::Writes;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

mod probes;
mod query;
mod reads;
mod render;
mod writes;

use query::{Query, Reject, path_id};
use render::{enrich_problem, ms};

/// Whom a rate limit counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Client {
    Viewer(UserId),
    Peer(IpAddr),
}

type Limiter =
    RateLimiter<Client, DefaultKeyedStateStore<Client>, DefaultClock, StateInformationMiddleware>;

/// Everything a request needs: the engine, the store (for readiness), the caches (for
/// metrics), and the service's limits.
pub struct App {
    engine: Engine,
    store: Arc<dyn Store>,
    writes: Arc<dyn Writes>,
    remote: Option<Arc<dyn Remote>>,
    caches: Caches,
    /// The relay and consumers, when this process runs them: woken after each commit,
    /// sampled for metrics, stopped at shutdown.
    events: Option<quiver_events::Events>,
    auth: Auth,
    config: ServerConfig,
    metrics: Metrics,
    limiter: Limiter,
    admission: Admission,
    router: Router,
    openapi: Bytes,
    /// `/docs`: the document as a page.
    docs: Bytes,
    /// `Cache-Control` of anonymous reads (from `config.public_max_age`).
    public_cache: HeaderValue,
    /// The last readiness answer and when its check started.
    readiness: tokio::sync::Mutex<Option<(Instant, StatusCode, Vec<u8>)>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The parts an [`App`] is made of.
#[derive(Debug)]
pub struct Parts {
    pub engine: Engine,
    pub store: Arc<dyn Store>,
    /// The social-graph writes (the same database as `store`).
    pub writes: Arc<dyn Writes>,
    /// Redis, when the service has one (reported by `/readyz`).
    pub remote: Option<Arc<dyn Remote>>,
    pub caches: Caches,
    /// The event layer to run (relay and consumers); `None` runs none, leaving events
    /// to another replica.
    pub events: Option<crate::compose::EventsSetup>,
    pub auth: Auth,
    pub config: ServerConfig,
}

impl App {
    /// Builds the service and starts its event layer (which fails only for an invalid
    /// Redis URL).
    pub fn new(parts: Parts) -> Result<Self, quiver_events::EventsError> {
        let Parts {
            engine,
            store,
            writes,
            remote,
            caches,
            events,
            auth,
            config,
        } = parts;
        let metrics = Metrics::default();
        let events = events
            .map(|setup| {
                let handler = Arc::new(quiver_events::EffectsHandler::new(
                    setup.effects,
                    Some(Arc::new(caches.clone())),
                    setup.config.fan_out,
                ));
                quiver_events::Events::start(
                    setup.outbox,
                    handler,
                    setup.redis_url.as_deref(),
                    setup.config,
                    Some(metrics.event_lag_observer()),
                )
            })
            .transpose()?;
        let rate = NonZeroU32::new(config.rate_per_second.max(1)).expect("at least 1");
        let burst = NonZeroU32::new(config.rate_burst.max(1)).expect("at least 1");
        let limiter = RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
            .with_middleware::<StateInformationMiddleware>();
        let document = crate::openapi::document_value();
        let openapi = Bytes::from(serde_json::to_vec(&document).expect("the document serializes"));
        let docs = Bytes::from(crate::docs::page(&document));
        let public_cache = match config.public_max_age.as_secs() {
            0 => HeaderValue::from_static("public, no-cache"),
            s => HeaderValue::from_str(&format!("public, max-age={s}")).expect("ascii"),
        };
        Ok(Self {
            public_cache,
            admission: Admission::new(config.max_concurrency, config.adaptive_concurrency),
            engine,
            store,
            writes,
            remote,
            caches,
            events,
            auth,
            config,
            metrics,
            limiter,
            router: Router::default(),
            openapi,
            docs,
            readiness: tokio::sync::Mutex::new(None),
        })
    }

    /// Stops the relay and consumers (after the listener has drained). What they had in
    /// flight is picked up again after restart or by another replica.
    pub async fn shutdown_events(&self) {
        if let Some(e) = &self.events {
            e.shutdown().await;
        }
    }

    /// The event layer's counters, when it runs here.
    pub fn event_stats(&self) -> Option<quiver_events::EventsSnapshot> {
        self.events.as_ref().map(quiver_events::Events::stats)
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The Prometheus exposition, sampling every counter kept elsewhere.
    pub fn render_metrics(&self) -> Vec<u8> {
        let pool = self.store.pool_stats();
        self.metrics.render(&Sample {
            caches: self.cache_stats(),
            prefetch: self.engine.prefetch_stats(),
            prefetch_queued: self.engine.prefetch_queued(),
            pool_size: pool.size,
            pool_idle: pool.idle,
            pool_max: pool.max,
            pool_waits: pool.waits,
            pool_wait_micros: pool.wait_time.as_micros() as u64,
            replicas: pool.replicas,
            replicas_in_rotation: pool.replicas_in_rotation,
            replica_reads: pool.replica_reads,
            events: self.event_stats(),
            concurrency_limit: self.admission.limit(),
            concurrency_ceiling: self.admission.ceiling(),
        })
    }

    /// Every cache's counters, with the finished pages' as a cache named `page` (a page
    /// served again is its `hit_l1`, a page built its `miss`).
    fn cache_stats(&self) -> Vec<(String, quiver_cache::StatsSnapshot)> {
        let mut all = self.caches.stats();
        if let Some(p) = self.engine.page_stats() {
            let mut s = quiver_cache::StatsSnapshot::default();
            s.outcomes[quiver_cache::Outcome::HitL1 as usize] = p.hits;
            s.outcomes[quiver_cache::Outcome::Miss as usize] = p.built;
            all.push(("page".to_owned(), s));
        }
        all
    }

    /// Forgets rate-limit state of clients idle for a while (the keyed state otherwise
    /// grows with every client ever seen). Called periodically by the server.
    pub fn shrink_rate_limits(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Answers one request from `peer` (the socket's address; behind a trusted proxy
    /// the client it names is charged instead).
    pub async fn handle<B>(&self, req: Request<B>, peer: IpAddr) -> Response<Body>
    where
        B: hyper::body::Body + Send,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let request_id = request_id(req.headers());
        let peer = crate::client::bucket(crate::client::address(
            peer,
            req.headers(),
            &self.config.trusted_proxies,
        ));
        let method = req.method().clone();
        let matched = self.router.matched(&method, req.uri().path());
        let (route, label) = match &matched {
            Matched::Route(r, _) => (Some(*r as usize), r.template()),
            Matched::NotFound => (None, "unmatched"),
            Matched::MethodNotAllowed(_) => (None, "method_not_allowed"),
        };
        // At the highest level, so the span (and its request id) is on every line that
        // any filter lets through. It carries the id alone: the subscriber formats a
        // span's fields when the span is made, on every request, whereas the method and
        // the route are written only on the access-log lines below.
        let span = tracing::error_span!("request", id = request_id.as_str());
        // The request's trace span (OpenTelemetry's server span): at debug level, so it
        // costs nothing (not even its fields) unless traces are exported.
        let traced = tracing::debug_span!(
            parent: &span,
            "http",
            otel.name = %format_args!("{method} {label}"),
            otel.kind = "server",
            http.request.method = method.as_str(),
            http.route = label,
            http.response.status_code = tracing::field::Empty,
        );
        let traceparent = req.headers().get(&TRACEPARENT);
        quiver_events::trace::continue_trace(&traced, traceparent.and_then(|v| v.to_str().ok()));
        let accept = req.headers().get(header::ACCEPT_ENCODING).cloned();
        let if_none_match = req.headers().get(header::IF_NONE_MATCH).cloned();
        let resp = self
            .dispatch(req, matched, peer)
            .instrument(traced.clone())
            .instrument(span.clone())
            .await;
        let compress = self.config.compression && method != Method::HEAD;
        let coding = respond::coding(
            &resp,
            accept.as_ref(),
            compress.then_some(self.config.compression_min_bytes),
        );
        let mut resp = conditional::answer(resp, if_none_match.as_ref(), coding);
        resp.headers_mut().insert(
            respond::REQUEST_ID.clone(),
            HeaderValue::from_str(&request_id).expect("request ids are visible ascii"),
        );
        let elapsed = started.elapsed();
        let status = resp.status().as_u16();
        traced.record("http.response.status_code", status);
        self.metrics.request(route, label, &method, status, elapsed);
        let _enter = span.enter();
        match resp.extensions().get::<Timed>() {
            Some(Timed(t)) if elapsed >= self.config.slow_request => tracing::warn!(
                %method,
                route = label,
                status,
                elapsed_ms = ms(elapsed),
                skeleton_ms = ms(t.skeleton),
                hydrate_ms = ms(t.hydrate),
                present_ms = ms(t.present),
                "slow request"
            ),
            _ if elapsed >= self.config.slow_request => tracing::warn!(
                %method,
                route = label,
                status,
                elapsed_ms = ms(elapsed),
                "slow request"
            ),
            _ => tracing::debug!(
                %method,
                route = label,
                status,
                elapsed_ms = ms(elapsed),
                "request"
            ),
        }
        resp
    }

    async fn dispatch<B>(&self, req: Request<B>, matched: Matched, peer: IpAddr) -> Response<Body>
    where
        B: hyper::body::Body + Send,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        #[cfg(feature = "bench-routes")]
        if req.uri().path() == "/bench/static" {
            return bench_static(req.uri().query());
        }
        let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        if uri_len > self.config.max_uri_bytes {
            return respond::problem(
                ProblemType::UriTooLong,
                format!(
                    "the request target is {uri_len} bytes; the limit is {}",
                    self.config.max_uri_bytes
                ),
            );
        }
        // Checked before anything reads the body.
        if let Some(len) = content_length(req.headers())
            && len > self.config.max_body_bytes
        {
            return respond::problem(
                ProblemType::PayloadTooLarge,
                format!(
                    "the body is {len} bytes; the limit is {}",
                    self.config.max_body_bytes
                ),
            );
        }
        if !matches!(matched, Matched::Route(..)) {
            // Misses cost little, but they are logged and counted: a client probing
            // paths or methods is rate limited like anything else.
            if let Err(refused) = self.limiter.check_key(&Client::Peer(peer)) {
                return self.rate_limited(&refused);
            }
        }
        let (route, id) = match matched {
            Matched::Route(r, id) => (r, id),
            Matched::NotFound => {
                return respond::problem(
                    ProblemType::NotFound,
                    format!("no endpoint at {}", req.uri().path()),
                );
            }
            Matched::MethodNotAllowed(allow) => {
                let mut resp = respond::problem(
                    ProblemType::MethodNotAllowed,
                    format!("{} is not allowed here; use {allow}", req.method()),
                );
                resp.headers_mut().insert(
                    header::ALLOW,
                    HeaderValue::from_str(&allow).expect("method names are ascii"),
                );
                return resp;
            }
        };
        if route.is_probe() {
            // The document is the largest answer and compressed per request: charged to
            // the address like any read. Health probes are not (a load balancer sends
            // them all from one address), and readiness checks one at a time.
            if matches!(route, Route::OpenApi | Route::Docs)
                && let Err(refused) = self.limiter.check_key(&Client::Peer(peer))
            {
                return self.rate_limited(&refused);
            }
            return self.probe(route).await;
        }

        let viewer = match req.headers().get(header::AUTHORIZATION) {
            None => None,
            Some(h) => match self.auth.viewer(h.as_bytes()) {
                Ok(v) => Some(v),
                Err(e) => {
                    // A refused token still counts against its address, so guessing
                    // tokens is rate limited like anything else.
                    if let Err(refused) = self.limiter.check_key(&Client::Peer(peer)) {
                        return self.rate_limited(&refused);
                    }
                    return respond::unauthorized(&e);
                }
            },
        };
        if viewer.is_none() && route.needs_viewer() {
            return respond::unauthorized(&AuthError::Missing);
        }
        let client = viewer.map_or(Client::Peer(peer), Client::Viewer);
        let rate = match self.limiter.check_key(&client) {
            Ok(snapshot) => snapshot,
            Err(refused) => return self.rate_limited(&refused),
        };

        // The body is read before a permit is taken, with a deadline of its own: a client
        // that trickles its body holds a connection, never a share of the work.
        let (parts, body) = req.into_parts();
        let body = if route.takes_body() {
            let read = self.json_body(&parts.headers, body);
            match tokio::time::timeout(self.config.body_read_timeout, read).await {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(resp)) => return resp,
                Err(_) => {
                    return respond::problem(
                        ProblemType::BodyTimeout,
                        format!(
                            "the request body did not arrive within {} ms",
                            self.config.body_read_timeout.as_millis()
                        ),
                    );
                }
            }
        } else {
            Bytes::new()
        };

        let permit = within(self.config.queue_timeout, self.admission.acquire()).await;
        let Ok(Ok(ticket)) = permit else {
            self.metrics.shed();
            let mut resp = respond::problem(
                ProblemType::Unavailable,
                "the server is at capacity; retry shortly",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return resp;
        };
        let _in_flight = self.metrics.in_flight();

        // A writer's reads just after a write skip this process's L1, which may not have
        // heard of the write yet (the write may have gone to another replica).
        let consistent = viewer.is_some_and(|v| written::recently(&parts.headers, v));
        // Boxed: the route's future is most of a request's state, and every move of it
        // inline (into the consistent-read scope, the deadline, the span) copies it whole.
        let work = Box::pin(self.route(route, id.as_deref(), parts, body, viewer));
        let work = if consistent {
            futures::future::Either::Left(quiver_cache::consistent(work))
        } else {
            futures::future::Either::Right(work)
        };
        let mut resp = match within(self.config.request_timeout, work).await {
            Ok(resp) => resp,
            Err(_) => {
                self.metrics.timeout();
                respond::problem(
                    ProblemType::Timeout,
                    format!(
                        "the request did not finish within {} ms",
                        self.config.request_timeout.as_millis()
                    ),
                )
            }
        };
        ticket.finish(resp.status().is_server_error());
        if let Some(v) = viewer.filter(|_| route.is_write() && resp.status().is_success()) {
            resp.headers_mut()
                .append(header::SET_COOKIE, written::cookie(v));
        }
        respond::rate_limit_headers(
            resp.headers_mut(),
            self.config.rate_burst,
            rate.remaining_burst_capacity(),
        );
        resp
    }

    /// 429 for a client over its rate.
    fn rate_limited(
        &self,
        refused: &governor::NotUntil<governor::clock::QuantaInstant>,
    ) -> Response<Body> {
        self.metrics.rate_limited();
        let wait = refused.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        respond::rate_limited(self.config.rate_burst, wait)
    }
}

/// `GET /bench/static?bytes=N` (bench builds only): N bytes of JSON through the same
/// connection handling, request id, compression and metrics as every route, but no
/// engine: the floor `cargo xtask bench` measures the service against.
#[cfg(feature = "bench-routes")]
fn bench_static(query: Option<&str>) -> Response<Body> {
    let n = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "bytes")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(16 << 10)
        .clamp(2, 1 << 20);
    let mut body = vec![b' '; n];
    body[0] = b'"';
    body[n - 1] = b'"';
    respond::json(StatusCode::OK, body)
}

/// The W3C trace context header a request may carry.
static TRACEPARENT: header::HeaderName = header::HeaderName::from_static("traceparent");

/// `tokio::time::timeout(limit, f)`, without a timer when `f` is ready at its first poll
/// (a warm read usually is): making one clones the runtime's handle, an atomic shared by
/// every core, twice a request. The limit counts from the call either way.
async fn within<F: std::future::Future>(
    limit: Duration,
    f: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut f = std::pin::pin!(f);
    if let std::task::Poll::Ready(out) = futures::poll!(f.as_mut()) {
        return Ok(out);
    }
    tokio::time::timeout_at(deadline, f).await
}

/// The request's own id if it sent a sane one, else a new one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&respond::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
