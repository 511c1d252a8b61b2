//! Building responses: JSON and problem+json bodies, the auth and rate-limit headers,
//! and compression of large bodies for clients that accept it.

use crate::auth::AuthError;
use crate::compression;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use quiver_codec::problem::{PROBLEM_CONTENT_TYPE, Problem, ProblemType};
use quiver_enrich::Timings;
use std::time::Duration;

/// Every response body: complete bytes.
pub(crate) type Body = Full<Bytes>;

/// Header names of our own, parsed once (a `&str` name is parsed and checked on every
/// insert).
pub(crate) static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");
static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Headers an API response carries, so the map is allocated once at its final size.
const HEADERS: usize = 12;

/// The stage timings of a response, kept for the slow-request log.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timed(pub(crate) Timings);

pub(crate) fn json(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    json_bytes(status, Bytes::from(body))
}

pub(crate) fn json_bytes(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    *resp.headers_mut() = HeaderMap::with_capacity(HEADERS);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A problem+json response of `kind` saying `detail`.
pub(crate) fn problem(kind: ProblemType, detail: impl Into<String>) -> Response<Body> {
    from_problem(&Problem::new(kind, detail))
}

/// The response for a built problem (with its field errors).
pub(crate) fn from_problem(p: &Problem) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(p.to_json())));
    *resp.status_mut() = StatusCode::from_u16(p.status).expect("problem statuses are valid");
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    resp
}

/// The answer to a failed store call that the caller has no better word for: logged
/// with its whole cause (`describe`), answered by its error code
/// (`ProblemType::for_code`: an outage is a 503) with `detail`, never the driver's text.
pub(crate) fn store_failed(
    e: &quiver_store::StoreError,
    call: &str,
    detail: &str,
) -> Response<Body> {
    tracing::warn!(error = %e, cause = %quiver_store::describe(e), call, "store call failed");
    problem(
        ProblemType::for_code(quiver_model::HasErrorCode::code(e)),
        detail,
    )
}

/// 401 with the challenge RFC 6750 asks for.
pub(crate) fn unauthorized(err: &AuthError) -> Response<Body> {
    let mut resp = problem(ProblemType::Unauthorized, err.to_string());
    let challenge = match err {
        AuthError::Missing | AuthError::Scheme => r#"Bearer realm="quiver""#,
        AuthError::Expired => {
            r#"Bearer realm="quiver", error="invalid_token", error_description="the token has expired""#
        }
        AuthError::Invalid => r#"Bearer realm="quiver", error="invalid_token""#,
    };
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    resp
}

/// 429 with `Retry-After` and the `RateLimit-*` headers.
pub(crate) fn rate_limited(burst: u32, wait: Duration) -> Response<Body> {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut resp = problem(
        ProblemType::RateLimited,
        format!("too many requests; retry in {secs} s"),
    );
    let h = resp.headers_mut();
    h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    rate_limit_headers(h, burst, 0);
    h.insert(RATELIMIT_RESET.clone(), HeaderValue::from(secs.max(1)));
    resp
}

/// `RateLimit-Limit` and `RateLimit-Remaining` (draft-ietf-httpapi-ratelimit-headers).
pub(crate) fn rate_limit_headers(h: &mut HeaderMap, burst: u32, remaining: u32) {
    h.insert(RATELIMIT_LIMIT.clone(), HeaderValue::from(burst));
    h.insert(RATELIMIT_REMAINING.clone(), HeaderValue::from(remaining));
}

/// How a response's body is to be sent.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Coding {
    /// The body could be compressed (big enough, not already encoded), so the answer
    /// depends on `Accept-Encoding` whatever this client sent.
    pub(crate) varies: bool,
    /// The coding to send it in, when the client accepts one.
    pub(crate) encoding: Option<compression::Encoding>,
}

/// The coding for `resp`: zstd or gzip when `accept` allows one and the body is at least
/// `min` bytes (`None`: compression is off) and not already encoded.
pub(crate) fn coding(
    resp: &Response<Body>,
    accept: Option<&HeaderValue>,
    min: Option<usize>,
) -> Coding {
    use hyper::body::Body as _;
    let Some(min) = min else {
        return Coding::default();
    };
    if resp.headers().contains_key(header::CONTENT_ENCODING)
        || resp.body().size_hint().exact().unwrap_or(0) < min as u64
    {
        return Coding::default();
    }
    Coding {
        varies: true,
        encoding: accept
            .and_then(|a| a.to_str().ok())
            .and_then(compression::choose),
    }
}

/// Sends the body in the coding [`coding`] chose, with that representation's `ETag`.
pub(crate) fn compress(resp: &mut Response<Body>, coding: Coding) {
    use futures::FutureExt as _;
    use http_body_util::BodyExt as _;
    let Some(encoding) = coding.encoding else {
        return;
    };
    // A `Full` body is complete: collecting it is ready at once.
    let body = std::mem::take(resp.body_mut());
    let bytes = body
        .collect()
        .now_or_never()
        .and_then(Result::ok)
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    match compression::encode(&bytes, encoding) {
        Some(c) => {
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_static(encoding.as_str()),
            );
            h.remove(header::CONTENT_LENGTH);
            if let Some(tag) = h.get(header::ETAG) {
                let tag = crate::conditional::encoded(tag, encoding);
                h.insert(header::ETAG, tag);
            }
            *resp.body_mut() = Full::new(Bytes::from(c));
        }
        None => *resp.body_mut() = Full::new(bytes),
    }
}
