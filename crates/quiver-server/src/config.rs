//! Settings of the HTTP service: limits, timeouts and compression. Plain values with
//! defaults; the binary fills them from flags and the environment.

use std::time::Duration;

/// How the service treats requests.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Requests handled at once at most; more wait up to `queue_timeout`, then get 503.
    pub max_concurrency: usize,
    /// Whether the limit adapts to measured latency below `max_concurrency` (Gradient2)
    /// instead of staying there.
    pub adaptive_concurrency: bool,
    /// How long a request may wait for a concurrency permit before it is shed.
    pub queue_timeout: Duration,
    /// Requests per second each client (viewer, else peer address) may make.
    pub rate_per_second: u32,
    /// Requests a client may make at once above its rate.
    pub rate_burst: u32,
    /// Proxies (load balancers) whose `Forwarded` or `X-Forwarded-For` names the client
    /// an anonymous request is rate limited as; empty: every peer is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Deadline of a request's work; past it the work is cancelled and 504 sent.
    pub request_timeout: Duration,
    /// Largest request body, checked before it is read.
    pub max_body_bytes: u64,
    /// Longest request target (path and query).
    pub max_uri_bytes: usize,
    /// Largest request head (HTTP/1 read buffer; HTTP/2 header list).
    pub max_header_bytes: usize,
    /// How long a client may take to send its request head, and how long a new
    /// connection may stay open before its first request arrives.
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight between requests;
    /// then it is closed (HTTP/2 with a GOAWAY first).
    pub idle_timeout: Duration,
    /// How long a client may take to send a request body (read before a concurrency
    /// permit is taken, so a slow body holds none); past it, 408.
    pub body_read_timeout: Duration,
    /// Connections open at once; past it a new one gets a 503 and is closed.
    pub max_connections: usize,
    /// Concurrent streams an HTTP/2 client may open on one connection.
    pub max_streams_per_connection: u32,
    /// Bodies at least this large are compressed when the client accepts it.
    pub compression_min_bytes: usize,
    /// Whether responses are compressed at all.
    pub compression: bool,
    /// `max-age` of anonymous reads of posts, profiles and user posts, which are
    /// `Cache-Control: public` (a CDN may keep them this long); zero makes them
    /// `no-cache`, revalidated by their `ETag` every time.
    pub public_max_age: Duration,
    /// Requests slower than this are logged with their stage timings.
    pub slow_request: Duration,
    /// How long shutdown waits for requests in flight.
    pub drain_timeout: Duration,
    /// Page size when a request names none.
    pub default_limit: u32,
    /// Largest page size a request may ask for.
    pub max_limit: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_concurrency: 512,
            adaptive_concurrency: true,
            queue_timeout: Duration::from_millis(100),
            rate_per_second: 100,
            rate_burst: 200,
            trusted_proxies: Vec::new(),
            request_timeout: Duration::from_secs(5),
            max_body_bytes: 64 * 1024,
            max_uri_bytes: 4096,
            max_header_bytes: 16 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_streams_per_connection: 100,
            compression_min_bytes: 1024,
            compression: true,
            public_max_age: Duration::from_secs(10),
            slow_request: Duration::from_millis(250),
            drain_timeout: Duration::from_secs(10),
            default_limit: 20,
            max_limit: 100,
        }
    }
}
