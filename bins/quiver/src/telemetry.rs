//! Logs and traces: log lines on stderr (text or JSON, filtered by `RUST_LOG`), and
//! OpenTelemetry traces exported over OTLP when, and only when, the standard variables
//! ask for them (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`;
//! `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, the `OTEL_BSP_*`
//! batch settings and the rest are read by the SDK itself). Unset, nothing is built and
//! the spans traces are made of stay disabled at their call sites.

use anyhow::{Context as _, Result};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, Targets, filter_fn};
use tracing_subscriber::layer::Filter;
use tracing_subscriber::prelude::*;

/// What was set up; [`Telemetry::shutdown`] exports what traces are still buffered.
pub(crate) struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber. Called before the async runtime starts: the
    /// exporter's HTTP client runs on a thread of its own.
    pub(crate) fn init(json: bool) -> Result<Self> {
        let filter = LogFilter::from_spec(var("RUST_LOG").as_deref());
        let traces = traces_wanted().then(provider).transpose()?;
        let installed = match (&traces, filter) {
            // Logs alone: `RUST_LOG` filters globally, so whatever it leaves out (the
            // debug-level spans traces are made of) is off at its call site.
            (None, LogFilter::Targets(t)) => tracing_subscriber::registry()
                .with(t)
                .with(logs(json))
                .try_init(),
            (None, LogFilter::Env(e)) => tracing_subscriber::registry()
                .with(e)
                .with(logs(json))
                .try_init(),
            // quiver's spans go to the traces (the request's `http` span and below;
            // `request` only carries the log lines' request id) whatever `RUST_LOG` says
            // of log lines, which it still filters.
            (Some(p), filter) => tracing_subscriber::registry()
                .with(logs(json).with_filter(filter.boxed()))
                .with(
                    tracing_opentelemetry::layer()
                        .with_tracer(p.tracer("quiver"))
                        .with_filter(filter_fn(|m| {
                            m.is_span() && m.target().starts_with("quiver") && m.name() != "request"
                        })),
                )
                .try_init(),
        };
        installed.context("cannot install the log subscriber")?;
        Ok(Self { traces })
    }

    /// Exports the spans still buffered (at exit).
    pub(crate) fn shutdown(self) {
        if let Some(p) = self.traces
            && let Err(e) = p.shutdown()
        {
            eprintln!("traces could not be flushed: {e}");
        }
    }
}

/// `RUST_LOG` (default `info,sqlx=warn`; one that does not parse is the default too).
#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "made once, at start")]
enum LogFilter {
    /// A plain list of `target=level` directives (the usual case): a static filter.
    Targets(Targets),
    /// Directives on spans or fields need an `EnvFilter`, which takes a lock every
    /// thread shares at each entry into and exit from a span (the request's span is
    /// entered at every poll of the request).
    Env(EnvFilter),
}

impl LogFilter {
    const DEFAULT: &str = "info,sqlx=warn";

    fn from_spec(spec: Option<&str>) -> Self {
        let spec = spec.unwrap_or(Self::DEFAULT);
        // `Targets` would read `target[span]` as a target's name: span and field
        // directives go to the `EnvFilter` by their brackets.
        if !spec.contains(['[', '{'])
            && let Ok(t) = spec.parse::<Targets>()
        {
            return Self::Targets(t);
        }
        Self::Env(EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new(Self::DEFAULT)))
    }

    /// As a per-layer filter.
    fn boxed<S>(self) -> Box<dyn Filter<S> + Send + Sync>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        match self {
            Self::Targets(t) => Box::new(t),
            Self::Env(e) => Box::new(e),
        }
    }
}

/// Log lines on stderr, as text or JSON objects.
fn logs<S>(json: bool) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if json {
        logs.json().with_current_span(true).boxed()
    } else {
        logs.boxed()
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Whether the environment asks for traces: an OTLP endpoint, and neither
/// `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none`.
fn traces_wanted() -> bool {
    let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .is_some();
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let none = var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    endpoint && !disabled && !none
}

/// The tracer provider: OTLP over HTTP/protobuf in batches, the sampler of
/// `OTEL_TRACES_SAMPLER`, and `service.name` from `OTEL_SERVICE_NAME` (else `quiver`).
fn provider() -> Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .context("OTEL_EXPORTER_OTLP_ENDPOINT: cannot build the OTLP exporter")?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if var("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("quiver");
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_target_lists_are_static_and_span_directives_need_an_env_filter() {
        for plain in [
            None,
            Some("warn"),
            Some("warn,quiver=info"),
            Some("sqlx=warn"),
        ] {
            let f = LogFilter::from_spec(plain);
            assert!(matches!(f, LogFilter::Targets(_)), "{plain:?}: {f:?}");
        }
        for dynamic in ["info,[request{id=7}]=debug", "quiver[write]=debug"] {
            let f = LogFilter::from_spec(Some(dynamic));
            assert!(matches!(f, LogFilter::Env(_)), "{dynamic}: {f:?}");
        }
        // The default filter still filters: debug is off, info on.
        let LogFilter::Targets(t) = LogFilter::from_spec(None) else {
            unreachable!()
        };
        assert!(t.would_enable("quiver", &tracing::Level::INFO));
        assert!(!t.would_enable("quiver", &tracing::Level::DEBUG));
        assert!(!t.would_enable("sqlx::query", &tracing::Level::INFO));
    }
}
