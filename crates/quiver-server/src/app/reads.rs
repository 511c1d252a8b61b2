//! The read handlers: a route's query and path parsed strictly, then the engine (or, for
//! notifications, the store) and the rendered page.

use super::*;

impl App {
    pub(super) async fn route(
        &self,
        route: Route,
        id: Option<&str>,
        req: hyper::http::request::Parts,
        body: Bytes,
        viewer: Option<UserId>,
    ) -> Response<Body> {
        let allowed: &[&str] = match route {
            Route::Feed | Route::UserPosts | Route::Notifications => &["limit", "cursor"],
            Route::Discover => &["limit", "cursor", "seed"],
            Route::CustomerOrders => &["limit", "cursor", "status"],
            _ => &[],
        };
        let q = match Query::parse(req.uri.query(), allowed, &self.config) {
            Ok(q) => q,
            Err(r) => return r.response(),
        };
        let n = match id.map(path_id).transpose() {
            Ok(n) => n.unwrap_or_default(),
            Err(r) => return r.response(),
        };
        if route == Route::Notifications {
            let viewer = viewer.expect("notifications need a viewer, checked before");
            return self.notifications(viewer, &q, req.uri.path()).await;
        }
        if route == Route::CreatePost {
            let viewer = viewer.expect("writes need a viewer, checked before");
            return self.create_post(viewer, body).await;
        }
        if route == Route::CreateOrder {
            let viewer = viewer.expect("writes need a viewer, checked before");
            return self.create_order(viewer, &req.headers, body).await;
        }
        if route.is_write() {
            let viewer = viewer.expect("writes need a viewer, checked before");
            return self.write(route, viewer, n).await;
        }
        let e = &self.engine;
        let me = viewer.unwrap_or(UserId(0));
        let cursor = q.cursor.as_deref();
        let rendered = match route {
            Route::Feed => e.home(me, cursor, q.limit).await,
            Route::Discover => e.discover(me, q.seed, cursor, q.limit).await,
            Route::Post => e.post(viewer, PostId(n)).await,
            Route::User => e.profile(viewer, UserId(n)).await,
            Route::UserPosts => e.user_posts(viewer, UserId(n), cursor, q.limit).await,
            Route::Order => e.order(me, OrderId(n)).await,
            Route::CustomerOrders => {
                e.customer_orders(me, UserId(n), q.status, cursor, q.limit)
                    .await
            }
            Route::Healthz | Route::Readyz | Route::OpenApi | Route::Docs => {
                unreachable!("probes are answered before routing")
            }
            Route::Follow
            | Route::Unfollow
            | Route::Block
            | Route::Unblock
            | Route::CreatePost
            | Route::DeletePost
            | Route::CreateOrder
            | Route::Notifications => unreachable!("answered above"),
        };
        match rendered {
            Ok(r) => self.rendered(r, req.uri.path(), &q, viewer.is_some()),
            Err(err) => enrich_problem(&err),
        }
    }

    /// `GET /notifications`: a keyset page straight from the store.
    async fn notifications(&self, viewer: UserId, q: &Query, path: &str) -> Response<Body> {
        use quiver_codec::wire::{NotificationWire, NotificationsPageWire};
        let cursors = self.engine.cursors();
        let after = match q.cursor.as_deref().map(|c| cursors.decode(c)).transpose() {
            Ok(after) => after,
            Err(e) => {
                return respond::problem(
                    ProblemType::InvalidParameter,
                    format!("invalid cursor: {e}"),
                );
            }
        };
        let started = Instant::now();
        let page = match self.store.notifications(viewer, after, q.limit).await {
            Ok(page) => page,
            Err(e) => {
                return respond::store_failed(
                    &e,
                    "notifications",
                    "notifications could not be loaded; retry later",
                );
            }
        };
        let skeleton = started.elapsed();
        let started = Instant::now();
        let next = page.next.map(|c| cursors.encode(&c));
        let body = quiver_codec::encode::encode(&NotificationsPageWire {
            items: page.items.iter().map(NotificationWire::from).collect(),
            next_page: next.clone(),
        });
        let rendered = Rendered {
            body: body.into(),
            timings: quiver_enrich::Timings {
                skeleton,
                hydrate: Duration::ZERO,
                present: started.elapsed(),
            },
            partial: Vec::new(),
            ids: page.items.iter().map(|n| n.id.0).collect(),
            next,
            seed: None,
            digest: None,
        };
        self.rendered(rendered, path, q, true)
    }
}
