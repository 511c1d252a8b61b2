//! The write handlers: graph writes, creating and deleting posts, and idempotent orders.
//! Each runs its transaction and then forgets what the write made stale in a spawned
//! task, so a client that hangs up interrupts neither; the answer follows.

use super::*;

/// The work that follows a commit: wake the relay (the write's event should leave now,
/// not at its next poll) and forget what the write made stale here and, through Redis,
/// on every replica, so the writer's next read reflects it.
pub(crate) struct AfterCommit {
    caches: Caches,
    relay: Option<quiver_events::RelayWaker>,
}

/// What a committed write made stale.
pub(crate) enum Stale {
    /// The edge between two users changed.
    Edge(UserId, UserId),
    /// A post of this author appeared or went.
    Authored(UserId, PostId),
    /// A new order (a lookup of its id before it existed may have cached "absent").
    Order(OrderId),
}

impl AfterCommit {
    pub(crate) async fn settle(self, stale: Stale) {
        if let Some(r) = &self.relay {
            r.wake();
        }
        let invalidated = match stale {
            Stale::Edge(a, b) => self.caches.invalidate_edge(a, b).await,
            Stale::Authored(author, post) => self.caches.invalidate_authored(author, post).await,
            Stale::Order(id) => self.caches.invalidate_order(id).await,
        };
        if let Err(e) = invalidated {
            // This process's L1 is clean already; other replicas hear of it from the
            // write's event (every write commits one).
            tracing::warn!(error = ?e, "invalidation after a write failed");
        }
    }
}

impl App {
    /// What runs after a write commits, inside the write's own task: a client that hangs
    /// up (or the deadline) cannot skip it once the write has committed.
    fn after_commit(&self) -> AfterCommit {
        AfterCommit {
            caches: self.caches.clone(),
            relay: self.events.as_ref().map(quiver_events::Events::waker),
        }
    }

    /// A social-graph write. It runs in its own task, so a client that hangs up (or the
    /// deadline) cannot interrupt its transaction; then the writer's cached graph is
    /// invalidated before answering, so their next read sees the write. Following or
    /// blocking someone already followed or blocked changes nothing and is 409; removing
    /// an edge that is not there is 204 (it is gone either way).
    pub(super) async fn write(&self, route: Route, viewer: UserId, n: i64) -> Response<Body> {
        use quiver_store::write::Written;
        if route != Route::DeletePost && n == viewer.0 {
            let what = match route {
                Route::Follow => "follow",
                Route::Unfollow => "unfollow",
                Route::Block => "block",
                _ => "unblock",
            };
            return respond::problem(
                ProblemType::Forbidden,
                format!("you cannot {what} yourself"),
            );
        }
        let writes = self.writes.clone();
        let after = self.after_commit();
        let other = UserId(n);
        let task = tokio::spawn(traced(async move {
            let written = match route {
                Route::Follow => writes.follow(viewer, other).await,
                Route::Unfollow => writes.unfollow(viewer, other).await,
                Route::Block => writes.block(viewer, other).await,
                Route::Unblock => writes.unblock(viewer, other).await,
                _ => writes
                    .delete_post(viewer, PostId(n))
                    .await
                    .map(|()| Written::Changed),
            };
            if matches!(written, Ok(Written::Changed)) {
                after
                    .settle(if route == Route::DeletePost {
                        // Followers' cached heads may still name the post until they
                        // change; hydration skips it (the post is forgotten everywhere).
                        Stale::Authored(viewer, PostId(n))
                    } else {
                        Stale::Edge(viewer, other)
                    })
                    .await;
            }
            written
        }));
        let written = match task.await {
            Ok(result) => result,
            Err(e) => {
                tracing::error!(error = %e, "write task failed");
                return respond::problem(ProblemType::Internal, "the write could not be done");
            }
        };
        match written {
            Ok(Written::Unchanged) if matches!(route, Route::Follow | Route::Block) => {
                respond::problem(
                    ProblemType::Conflict,
                    if route == Route::Follow {
                        format!("you already follow user {n}")
                    } else {
                        format!("you already block user {n}")
                    },
                )
            }
            Ok(_) => {
                let mut resp = Response::new(Body::default());
                *resp.status_mut() = StatusCode::NO_CONTENT;
                resp
            }
            Err(quiver_store::StoreError::NotFound) => respond::problem(
                ProblemType::NotFound,
                if route == Route::DeletePost {
                    format!("post {n} not found")
                } else {
                    format!("user {n} not found")
                },
            ),
            Err(quiver_store::StoreError::NotYours(why)) => {
                respond::problem(ProblemType::Forbidden, why)
            }
            // An ordered wish stays (the order refers to it); a follow past the limit waits
            // for an unfollow: both conflict with the current state.
            Err(quiver_store::StoreError::Refused(why))
                if matches!(route, Route::DeletePost | Route::Follow) =>
            {
                respond::problem(ProblemType::Conflict, why)
            }
            Err(quiver_store::StoreError::Refused(why)) => {
                respond::problem(ProblemType::Validation, why)
            }
            Err(e) => {
                respond::store_failed(&e, "write", "the write could not be done; retry later")
            }
        }
    }

    /// `POST /posts`: the body is read up to the size limit, parsed strictly and
    /// validated; the post is written in its own task; the answer is the new post as
    /// `GET /posts/{id}` shows it.
    pub(super) async fn create_post(&self, viewer: UserId, body: Bytes) -> Response<Body> {
        let new = match self.valid_body(&body, |bytes, limit| {
            quiver_codec::request::parse::<quiver_codec::request::CreatePostBody>(bytes, limit)
                .and_then(|b| b.validate())
        }) {
            Ok(new) => new,
            Err(problem) => return respond::from_problem(&problem),
        };
        let writes = self.writes.clone();
        let after = self.after_commit();
        let created = tokio::spawn(traced(async move {
            let created = writes.create_post(viewer, &new).await;
            if let Ok(post) = &created {
                after.settle(Stale::Authored(viewer, post.id)).await;
            }
            created
        }))
        .await;
        let post = match created {
            Ok(Ok(post)) => post,
            Ok(Err(quiver_store::StoreError::NotFound)) => {
                return respond::problem(ProblemType::NotFound, "the author does not exist");
            }
            Ok(Err(e)) => {
                return respond::store_failed(
                    &e,
                    "create post",
                    "the post could not be created; retry later",
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "create post task failed");
                return respond::problem(ProblemType::Internal, "the post could not be created");
            }
        };
        match self.engine.post(Some(viewer), post.id).await {
            Ok(r) => {
                let mut resp = respond::json_bytes(StatusCode::CREATED, r.body);
                resp.headers_mut().insert(
                    header::LOCATION,
                    HeaderValue::from_str(&format!("/api/v1/posts/{}", post.id)).expect("ascii"),
                );
                resp
            }
            Err(err) => enrich_problem(&err),
        }
    }

    /// A JSON body (read by [`App::json_body`]) parsed and validated by `parse` (given
    /// the bytes and the body limit); any failure is the problem to answer with.
    fn valid_body<V>(
        &self,
        bytes: &[u8],
        parse: impl FnOnce(&[u8], usize) -> Result<V, quiver_codec::request::BodyError>,
    ) -> Result<V, quiver_codec::problem::Problem> {
        parse(bytes, self.config.max_body_bytes as usize)
            .map_err(|e| quiver_codec::problem::Problem::from_body_error(&e))
    }

    /// A JSON request body, read up to the size limit: 415 unless it is
    /// `application/json`, 413 past the limit (with or without `Content-Length`).
    pub(super) async fn json_body<B>(
        &self,
        headers: &HeaderMap,
        body: B,
    ) -> Result<Bytes, Response<Body>>
    where
        B: hyper::body::Body + Send,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use http_body_util::BodyExt as _;
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
            });
        if !json {
            return Err(respond::problem(
                ProblemType::UnsupportedMediaType,
                "the body must be application/json",
            ));
        }
        let limit = self.config.max_body_bytes as usize;
        match http_body_util::Limited::new(body, limit).collect().await {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) => Err(
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    respond::problem(
                        ProblemType::PayloadTooLarge,
                        format!("the body is over {limit} bytes"),
                    )
                } else {
                    respond::problem(ProblemType::MalformedBody, "the body could not be read")
                },
            ),
        }
    }

    /// `POST /orders`: an `Idempotency-Key` is required; the body is parsed strictly and
    /// validated; the order is priced and written in its own task, under the key, so a
    /// retry with the same key and body gets the first order (and `Idempotent-Replayed`)
    /// and a different body under the key is refused.
    pub(super) async fn create_order(
        &self,
        viewer: UserId,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Response<Body> {
        let key = match idempotency_key(headers) {
            Ok(k) => k,
            Err(r) => return r.response(),
        };
        let lines = match self.valid_body(&body, |bytes, limit| {
            quiver_codec::request::parse::<quiver_codec::request::CreateOrderBody>(bytes, limit)
                .and_then(|b| b.validate())
        }) {
            Ok(lines) => lines,
            Err(problem) => return respond::from_problem(&problem),
        };
        let fingerprint = order_fingerprint(&lines);
        let writes = self.writes.clone();
        let task_lines = lines.clone();
        let after = self.after_commit();
        let placed = tokio::spawn(traced(async move {
            let placed = writes
                .create_order(viewer, &key, &fingerprint, &task_lines)
                .await;
            if let Ok(p) = &placed
                && !p.replayed
            {
                after.settle(Stale::Order(p.order)).await;
            }
            placed
        }))
        .await;
        let placed = match placed {
            Ok(Ok(placed)) => placed,
            Ok(Err(quiver_store::StoreError::KeyReused)) => {
                return respond::problem(
                    ProblemType::Validation,
                    "the Idempotency-Key was already used with a different request body",
                );
            }
            Ok(Err(quiver_store::StoreError::Unorderable(refused))) => {
                let errors = refused
                    .iter()
                    .map(|(i, why)| quiver_codec::request::FieldError {
                        field: format!("items[{i}].post_id"),
                        message: format!("post {} {}", lines[*i].0, why.message()),
                    })
                    .collect();
                return respond::from_problem(&quiver_codec::problem::Problem::from_body_error(
                    &quiver_codec::request::BodyError::Invalid(errors),
                ));
            }
            Ok(Err(e)) => {
                return respond::store_failed(
                    &e,
                    "create order",
                    "the order could not be placed; retry later",
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "create order task failed");
                return respond::problem(ProblemType::Internal, "the order could not be placed");
            }
        };
        match self.engine.order(viewer, placed.order).await {
            Ok(r) => {
                let mut resp = respond::json_bytes(StatusCode::CREATED, r.body);
                let h = resp.headers_mut();
                h.insert(
                    header::LOCATION,
                    HeaderValue::from_str(&format!("/api/v1/orders/{}", placed.order))
                        .expect("ascii"),
                );
                if placed.replayed {
                    h.insert("idempotent-replayed", HeaderValue::from_static("true"));
                }
                resp
            }
            Err(err) => enrich_problem(&err),
        }
    }
}

/// The `Idempotency-Key` header: required, 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<String, Reject> {
    let bad = |detail: &str| Reject(ProblemType::InvalidParameter, detail.to_owned());
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Err(bad(
            "the Idempotency-Key header is required: a unique value per order you place",
        ));
    };
    if values.next().is_some() {
        return Err(bad("the Idempotency-Key header is given more than once"));
    }
    match value.to_str() {
        Ok(k) if (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(k.to_owned())
        }
        _ => Err(bad(
            "the Idempotency-Key header must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// What makes two order requests "the same body": their validated lines, in order.
fn order_fingerprint(lines: &[(PostId, i32)]) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for (post, quantity) in lines {
        h.update(post.0.to_be_bytes());
        h.update(quantity.to_be_bytes());
    }
    hex::encode(h.finalize())
}

/// `write` as the spawned task of a write: in a span under this request's, whose trace
/// context each outbox event it commits keeps (so the relay and the consumers, on any
/// replica, continue the request's trace).
fn traced<F: std::future::Future>(write: F) -> impl std::future::Future<Output = F::Output> {
    use tracing::Instrument as _;
    let span = tracing::debug_span!("write");
    let traceparent = quiver_events::trace::traceparent(&span);
    quiver_store::write::traced(traceparent, write).instrument(span)
}
