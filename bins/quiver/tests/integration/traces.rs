//! OpenTelemetry traces across processes, against an OTLP/HTTP endpoint this test runs and
//! decodes with the protocol's own protobuf types: a post written through one replica,
//! with a `traceparent` from its client, is one trace from the request to the fan-out that
//! another replica's consumer runs; a feed page's trace has its stages, cache tiers and
//! database batches under the request.

use crate::events::{Database, Replica, blocking, namespace, token};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message as _;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One received span: the service that sent it, its ids, name and attributes.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    trace: String,
    id: String,
    parent: String,
    name: String,
    attributes: HashMap<String, String>,
}

/// An OTLP/HTTP endpoint on loopback that keeps every span it is sent.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
}

fn text(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn decode(body: &[u8]) -> Vec<Received> {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
    let mut out = Vec::new();
    for rs in request.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .map(|a| text(a.value.as_ref()))
            .unwrap_or_default();
        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
            out.push(Received {
                service: service.clone(),
                trace: hex(&span.trace_id),
                id: hex(&span.span_id),
                parent: hex(&span.parent_span_id),
                name: span.name,
                attributes: span
                    .attributes
                    .iter()
                    .map(|a| (a.key.clone(), text(a.value.as_ref())))
                    .collect(),
            });
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Collector {
    fn start() -> Self {
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = spans.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let (tcp, _) = listener.accept().await.unwrap();
                    let kept = kept.clone();
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let kept = kept.clone();
                            async move {
                                let path = req.uri().path().to_owned();
                                let body = req.into_body().collect().await?.to_bytes();
                                assert_eq!(path, "/v1/traces", "traces go to the OTLP path");
                                kept.lock().unwrap().extend(decode(&body));
                                let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                                resp.headers_mut().insert(
                                    "content-type",
                                    hyper::header::HeaderValue::from_static(
                                        "application/x-protobuf",
                                    ),
                                );
                                Ok::<_, hyper::Error>(resp)
                            }
                        },
                    );
                    tokio::spawn(
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
                    );
                }
            });
        });
        Self {
            addr: rx.recv().unwrap(),
            spans,
        }
    }

    /// The spans of `trace` received so far.
    fn trace(&self, trace: &str) -> Vec<Received> {
        let spans = self.spans.lock().unwrap();
        spans.iter().filter(|s| s.trace == trace).cloned().collect()
    }

    /// The spans of `trace` once it has one of each of `names` (failing with what
    /// arrived).
    fn wait(&self, trace: &str, names: &[&str]) -> Vec<Received> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let spans = self.trace(trace);
            if names.iter().all(|n| spans.iter().any(|s| s.name == *n)) {
                return spans;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "spans {names:?} of trace {trace} did not all arrive; received: {:#?}",
                self.spans.lock().unwrap()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn env(&self, service: &'static str) -> Vec<(&'static str, String)> {
        vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://{}", self.addr),
            ),
            ("OTEL_SERVICE_NAME", service.to_owned()),
            ("OTEL_TRACES_SAMPLER", "parentbased_always_on".to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50".to_owned()),
        ]
    }
}

/// The one span of `spans` named `name` (failing with all of them).
fn one<'a>(spans: &'a [Received], name: &str) -> &'a Received {
    let found: Vec<&Received> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} span in {spans:#?}");
    found[0]
}

#[test]
fn a_post_is_one_trace_from_the_request_to_the_fan_out_on_another_replica() {
    let collector = Collector::start();
    let db = Database::seeded_on(&quiver_testkit::database_url(), "traces", 60);
    let ns = namespace();
    let redis = quiver_testkit::redis_url();
    let start = |service: &'static str, flags: &[&str]| {
        let env = collector.env(service);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Replica::start_on(&db, &redis, &ns, flags, &env)
    };
    // A takes the request but neither relays nor consumes: B does both.
    let a = start("quiver-a", &["--no-relay", "--event-consumers", "0"]);
    let _b = start("quiver-b", &[]);
    let author = db.scalar(
        "SELECT followee_id FROM follows GROUP BY followee_id ORDER BY count(*) DESC, followee_id LIMIT 1",
    );

    // The client's own trace: the server continues it.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let (status, _) = blocking::send(
        reqwest::Client::new()
            .post(a.url("/api/v1/posts"))
            .bearer_auth(token(author))
            .header("traceparent", format!("00-{trace}-{client_span}-01"))
            .header("content-type", "application/json")
            .body(r#"{"kind": "post", "body": "traced", "tags": []}"#),
    );
    assert_eq!(status, 201);
    let spans = collector.wait(
        trace,
        &[
            "POST /api/v1/posts",
            "write",
            "publish",
            "handle",
            "fan_out",
        ],
    );
    let http = one(&spans, "POST /api/v1/posts");
    assert_eq!(http.service, "quiver-a");
    assert_eq!(
        http.parent, client_span,
        "the request continues the client's span"
    );
    assert_eq!(http.attributes["http.route"], "/api/v1/posts");
    assert_eq!(http.attributes["http.request.method"], "POST");
    assert_eq!(http.attributes["http.response.status_code"], "201");
    let write = one(&spans, "write");
    assert_eq!(
        (write.service.as_str(), write.parent.as_str()),
        ("quiver-a", http.id.as_str())
    );
    // The outbox row carried the write's context to B's relay, and the stream entry the
    // relay's to B's consumer.
    let publish = one(&spans, "publish");
    assert_eq!(publish.service, "quiver-b", "a does not relay");
    assert_eq!(publish.parent, write.id);
    let handle = one(&spans, "handle");
    assert_eq!(handle.service, "quiver-b");
    assert_eq!(handle.parent, publish.id);
    assert_eq!(handle.attributes["event.kind"], "post.created");
    let fan_out = one(&spans, "fan_out");
    assert_eq!(
        (fan_out.service.as_str(), fan_out.parent.as_str()),
        ("quiver-b", handle.id.as_str())
    );

    // A feed page: its stages under the request, and the batches under the stages.
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let (status, _) = blocking::send(
        reqwest::Client::new()
            .get(a.url("/api/v1/feed?limit=5"))
            .bearer_auth(token(author))
            .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01")),
    );
    assert_eq!(status, 200);
    let spans = collector.wait(
        trace,
        &[
            "GET /api/v1/feed",
            "skeleton",
            "hydrate",
            "present",
            "posts",
            "cache.load",
        ],
    );
    let http = one(&spans, "GET /api/v1/feed");
    for stage in ["skeleton", "hydrate", "present"] {
        let s = spans.iter().find(|s| s.name == stage).unwrap();
        assert_eq!(s.parent, http.id, "{stage} is a stage of the request");
    }
    let by_id: HashMap<&str, &Received> = spans.iter().map(|s| (s.id.as_str(), s)).collect();
    let batches: Vec<&Received> = spans
        .iter()
        .filter(|s| s.attributes.contains_key("db.operation"))
        .collect();
    assert!(
        batches.len() >= 3,
        "posts, media, tags, users, ...: {spans:#?}"
    );
    for db in batches {
        let mut up = db;
        while let Some(parent) = by_id.get(up.parent.as_str()) {
            up = parent;
        }
        assert_eq!(up.id, http.id, "every batch is under the request: {db:?}");
        assert!(!db.attributes["db.operation"].is_empty());
    }
}
