//! The admin listener (loopback by default): Prometheus metrics at `/metrics` and a CPU
//! profile at `/debug/pprof/profile?seconds=N` (pprof protobuf, as `go tool pprof` reads).

use crate::app::App;
use crate::respond::{self, Body};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use quiver_codec::problem::ProblemType;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;

/// Only one profile runs at a time.
static PROFILING: AtomicBool = AtomicBool::new(false);

/// Serves the admin endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(5);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => {
                        backoff = Duration::from_millis(5);
                        stream
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(error = %e, "admin accept failed; backing off");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                };
                let app = app.clone();
                let service = service_fn(move |req| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(handle(&app, req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                tokio::spawn(conn);
            }
            () = &mut shutdown => return Ok(()),
        }
    }
}

async fn handle<B>(app: &App, req: Request<B>) -> Response<Body> {
    match req.uri().path() {
        "/metrics" => {
            let mut resp = Response::new(Full::new(Bytes::from(app.render_metrics())));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            resp
        }
        "/debug/pprof/profile" => {
            let seconds = req
                .uri()
                .query()
                .and_then(|q| {
                    form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == "seconds")
                        .map(|(_, v)| v.into_owned())
                })
                .map_or(Ok(30), |v| v.parse::<u64>());
            match seconds {
                Ok(s) if (1..=300).contains(&s) => profile(Duration::from_secs(s)).await,
                _ => respond::problem(
                    ProblemType::InvalidParameter,
                    "`seconds` must be a whole number from 1 to 300",
                ),
            }
        }
        other => respond::problem(
            ProblemType::NotFound,
            format!("no admin endpoint at {other}"),
        ),
    }
}

/// Clears [`PROFILING`] however the profile ends, even when its request is dropped (a
/// client that hangs up mid-profile must not leave every later profile refused).
struct Profiling;

impl Drop for Profiling {
    fn drop(&mut self) {
        PROFILING.store(false, Ordering::Release);
    }
}

async fn profile(duration: Duration) -> Response<Body> {
    if PROFILING.swap(true, Ordering::AcqRel) {
        return respond::problem(ProblemType::Conflict, "a profile is already being taken");
    }
    let running = Profiling;
    let result = async {
        let guard = pprof::ProfilerGuardBuilder::default()
            .frequency(99)
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()
            .map_err(|e| e.to_string())?;
        tokio::time::sleep(duration).await;
        let report = guard.report().build().map_err(|e| e.to_string())?;
        let profile = report.pprof().map_err(|e| e.to_string())?;
        use pprof::protos::Message as _;
        Ok::<_, String>(profile.encode_to_vec())
    }
    .await;
    drop(running);
    match result {
        Ok(bytes) => {
            let mut resp = Response::new(Full::new(Bytes::from(bytes)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            *resp.status_mut() = StatusCode::OK;
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "profiling failed");
            respond::problem(ProblemType::Internal, "the profile could not be taken")
        }
    }
}
