//! The probes: liveness, readiness (one database round trip at a time, however many
//! probes arrive), the OpenAPI document and its page.

use super::*;

impl App {
    pub(super) async fn probe(&self, route: Route) -> Response<Body> {
        match route {
            Route::Healthz => respond::json(StatusCode::OK, br#"{"status":"ok"}"#.to_vec()),
            Route::Readyz => {
                // One check at a time: a request that waited for another's check takes
                // its answer if that check started after this request arrived (so it is
                // as fresh as one of its own), and a flood of probes costs one database
                // round trip at a time.
                let arrived = Instant::now();
                let mut last = self.readiness.lock().await;
                if let Some((started, status, body)) = &*last
                    && *started >= arrived
                {
                    return respond::json(*status, body.clone());
                }
                let started = Instant::now();
                self.metrics.readiness_check();
                let (status, body) = self.readiness().await;
                *last = Some((started, status, body.clone()));
                respond::json(status, body)
            }
            Route::OpenApi => respond::json_bytes(StatusCode::OK, self.openapi.clone()),
            Route::Docs => {
                let mut resp = respond::json_bytes(StatusCode::OK, self.docs.clone());
                let h = resp.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                // The page runs nothing and loads nothing but its own inline style.
                h.insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
                );
                resp
            }
            _ => unreachable!("only probes are routed here"),
        }
    }

    /// Whether the database answers (and how Redis does): the readiness status and body.
    async fn readiness(&self) -> (StatusCode, Vec<u8>) {
        let db = tokio::time::timeout(Duration::from_secs(2), self.store.ping()).await;
        let db_ok = matches!(db, Ok(Ok(())));
        let redis = match &self.remote {
            None => "disabled",
            Some(r) => {
                let key = ["quiver:readyz".to_owned()];
                match tokio::time::timeout(Duration::from_millis(500), r.fetch(&key)).await {
                    Ok(Ok(_)) => "ok",
                    _ => "down",
                }
            }
        };
        let body = format!(
            r#"{{"status":"{}","database":"{}","redis":"{redis}"}}"#,
            if db_ok { "ready" } else { "unavailable" },
            if db_ok { "ok" } else { "down" },
        );
        let status = if db_ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, body.into_bytes())
    }
}
