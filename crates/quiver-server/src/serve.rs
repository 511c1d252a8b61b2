//! The accept loop: every connection is served by hyper-util's auto builder (HTTP/1.1 with
//! keep-alive, or HTTP/2 by prior knowledge) under a cap on open connections and a
//! watchdog that closes a connection with no request in flight for too long (from accept
//! to the first request, and between requests). On shutdown the listener closes,
//! connections finish their requests (up to the drain timeout) and `serve` returns.

use crate::app::App;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long a connection told to close (idle, or shutting down with nothing in flight)
/// may take to say goodbye (an HTTP/2 GOAWAY) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let config = app.config().clone();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(config.max_streams_per_connection.max(1))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut housekeeping = tokio::time::interval(Duration::from_secs(60));
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(5);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        refuse(&stream);
                        app.metrics().connection_closed("refused");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let (app, builder, stopping) = (app.clone(), builder.clone(), stopping.clone());
                    connections.spawn(async move {
                        let _slot = slot;
                        connection(stream, peer, app, &builder, stopping).await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait, then accept again.
                    tracing::warn!(error = %e, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = housekeeping.tick() => app.shrink_rate_limits(),
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(
        connections = connections.len(),
        "shutting down: draining connections"
    );
    let _ = stop.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    match tokio::time::timeout(config.drain_timeout, drained).await {
        Ok(()) => tracing::info!("drained"),
        Err(_) => {
            tracing::warn!(
                timeout_ms = config.drain_timeout.as_millis() as u64,
                "drain timed out; closing the remaining connections"
            );
            connections.shutdown().await;
        }
    }
    Ok(())
}

/// Answers a connection over the cap with a 503 (best effort: whatever the socket takes
/// without waiting) and closes it.
fn refuse(stream: &TcpStream) {
    const BODY: &str = r#"{"type":"https://quiver.dev/problems/unavailable","title":"Service unavailable","status":503,"detail":"the server has too many open connections; retry shortly"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

/// When a connection last finished a request, and how many it has in flight.
struct Activity {
    opened: Instant,
    /// Milliseconds after `opened` when the last request finished (0: none yet).
    last_done_ms: AtomicU64,
    served: AtomicU64,
    in_flight: AtomicUsize,
    /// Signalled when a request ends, so the watchdog sets its next deadline.
    done: tokio::sync::Notify,
}

impl Activity {
    /// When the connection is idle for too long if nothing happens before: `None` while a
    /// request is in flight.
    fn deadline(&self, first: Duration, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if self.served.load(Ordering::Acquire) == 0 {
            return Some(self.opened + first);
        }
        let done = Duration::from_millis(self.last_done_ms.load(Ordering::Acquire));
        Some(self.opened + done + idle)
    }
}

/// Marks a request in flight until dropped (however the request ends).
struct Busy(Arc<Activity>);

impl Busy {
    fn new(a: &Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(a.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = a.opened.elapsed().as_millis().max(1) as u64;
        a.last_done_ms.fetch_max(ms, Ordering::AcqRel);
        a.served.fetch_add(1, Ordering::AcqRel);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
        a.done.notify_one();
    }
}

/// Serves one connection until it ends, is idle too long, or the server drains.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Arc<App>,
    builder: &Builder<TokioExecutor>,
    mut stopping: watch::Receiver<bool>,
) {
    let _open = app.metrics().connection();
    let config = app.config().clone();
    let activity = Arc::new(Activity {
        opened: Instant::now(),
        last_done_ms: AtomicU64::new(0),
        served: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        done: tokio::sync::Notify::new(),
    });
    let service = {
        let (app, activity) = (app.clone(), activity.clone());
        service_fn(move |req| {
            let app = app.clone();
            let busy = Busy::new(&activity);
            async move {
                let resp = app.handle(req, peer.ip()).await;
                drop(busy);
                Ok::<_, Infallible>(resp)
            }
        })
    };
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    // Set once the connection was told to close: then it has `CLOSE_GRACE` to finish.
    let mut closing: Option<Instant> = None;
    let far = || Instant::now() + Duration::from_secs(3600);
    loop {
        let wake = closing.unwrap_or_else(|| {
            activity
                .deadline(config.header_read_timeout, config.idle_timeout)
                .unwrap_or_else(far)
        });
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                return;
            }
            Ok(()) = stopping.changed(), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                // Requests in flight finish (the drain timeout bounds them).
                closing = Some(far());
            }
            // A request ended: the next deadline counts from now.
            () = activity.done.notified(), if closing.is_none() => {}
            () = tokio::time::sleep_until(wake) => {
                if closing.is_some() {
                    // It did not close in its grace: drop it.
                    return;
                }
                if activity
                    .deadline(config.header_read_timeout, config.idle_timeout)
                    .is_some_and(|at| Instant::now() >= at)
                {
                    app.metrics().connection_closed("idle");
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + CLOSE_GRACE);
                }
            }
        }
    }
}
