//! Responses from the engine: the rendered body with its headers (`ETag`,
//! `Cache-Control`, `Vary`, `Server-Timing`, `Link`), and engine errors as problem+json.

use super::*;

impl App {
    pub(super) fn rendered(
        &self,
        r: Rendered,
        path: &str,
        q: &Query,
        viewer_specific: bool,
    ) -> Response<Body> {
        let tag = crate::conditional::etag(&r.body, r.digest);
        let mut resp = respond::json_bytes(StatusCode::OK, r.body);
        let h = resp.headers_mut();
        h.insert(header::ETAG, tag);
        h.insert(
            header::CACHE_CONTROL,
            if viewer_specific {
                HeaderValue::from_static("private, no-cache")
            } else {
                self.public_cache.clone()
            },
        );
        // Every read answers a signed-in viewer differently from an anonymous one, so
        // a shared cache keys the public answers by the (absent) credentials too.
        h.insert(header::VARY, HeaderValue::from_static("authorization"));
        h.insert(respond::SERVER_TIMING.clone(), server_timing(&r.timings));
        if let Some(next) = &r.next {
            let mut link = String::with_capacity(path.len() + next.len() + 48);
            link.push('<');
            link.push_str(path);
            link.push_str("?limit=");
            link.push_str(itoa::Buffer::new().format(q.limit));
            link.push_str("&cursor=");
            link.push_str(next);
            if let Some(s) = q.status {
                link.push_str("&status=");
                link.push_str(s.as_str());
            }
            link.push_str(">; rel=\"next\"");
            h.insert(
                header::LINK,
                HeaderValue::from_maybe_shared(bytes::Bytes::from(link))
                    .expect("cursors are base64url"),
            );
        }
        resp.extensions_mut().insert(Timed(r.timings));
        resp
    }
}

/// The problem response for an engine error.
pub(super) fn enrich_problem(err: &EnrichError) -> Response<Body> {
    match err {
        EnrichError::Cursor(_) | EnrichError::Limit { .. } | EnrichError::SeedMismatch => {
            respond::problem(ProblemType::InvalidParameter, err.to_string())
        }
        EnrichError::NotFound(_) => respond::problem(ProblemType::NotFound, err.to_string()),
        EnrichError::Forbidden(_) => respond::problem(ProblemType::Forbidden, err.to_string()),
        EnrichError::Load { part, source } => {
            let kind = ProblemType::for_code(source.code());
            if kind == ProblemType::Internal {
                tracing::error!(%part, error = %quiver_store::describe(source), "load failed");
            } else {
                tracing::warn!(%part, error = %quiver_store::describe(source), "load failed");
            }
            let mut resp = respond::problem(kind, err.to_string());
            if kind == ProblemType::Unavailable {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            resp
        }
        _ => respond::problem(ProblemType::Internal, "the request could not be served"),
    }
}

/// `Server-Timing` for the three stages, in milliseconds with microsecond digits,
/// written without the formatting machinery (it is on every feed response).
pub(super) fn server_timing(t: &Timings) -> HeaderValue {
    let mut v = String::with_capacity(72);
    for (i, (name, d)) in [
        ("skeleton", t.skeleton),
        ("hydrate", t.hydrate),
        ("present", t.present),
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            v.push_str(", ");
        }
        let micros = d.as_micros().min(u128::from(u64::MAX)) as u64;
        v.push_str(name);
        v.push_str(";dur=");
        v.push_str(itoa::Buffer::new().format(micros / 1000));
        v.push('.');
        let frac = micros % 1000;
        if frac < 100 {
            v.push('0');
        }
        if frac < 10 {
            v.push('0');
        }
        v.push_str(itoa::Buffer::new().format(frac));
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(v)).expect("ascii")
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_writes_milliseconds_with_microsecond_digits() {
        let t = Timings {
            skeleton: Duration::from_micros(5),
            hydrate: Duration::from_micros(1_234_567),
            present: Duration::from_micros(40),
        };
        assert_eq!(
            server_timing(&t).to_str().unwrap(),
            "skeleton;dur=0.005, hydrate;dur=1234.567, present;dur=0.040"
        );
    }
}
