//! The route table: a radix tree (matchit) from path to the methods it accepts. Unknown
//! paths are 404; known paths with another method are 405 with `Allow`.

use hyper::Method;

/// Every endpoint of the public listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    Feed,
    Discover,
    Post,
    User,
    UserPosts,
    Order,
    CustomerOrders,
    CreatePost,
    DeletePost,
    CreateOrder,
    Notifications,
    Follow,
    Unfollow,
    Block,
    Unblock,
    Healthz,
    Readyz,
    OpenApi,
    Docs,
}

/// How many routes there are (`Route as usize` is below it): the metrics keep a handle
/// per route, method and status.
pub(crate) const ROUTE_COUNT: usize = Route::Docs as usize + 1;

/// `(method, path template, route)`: the table, also used to build the OpenAPI paths.
pub const ROUTES: &[(&str, &str, Route)] = &[
    ("GET", "/api/v1/feed", Route::Feed),
    ("GET", "/api/v1/feed/discover", Route::Discover),
    ("POST", "/api/v1/posts", Route::CreatePost),
    ("GET", "/api/v1/posts/{id}", Route::Post),
    ("DELETE", "/api/v1/posts/{id}", Route::DeletePost),
    ("GET", "/api/v1/users/{id}", Route::User),
    ("GET", "/api/v1/users/{id}/posts", Route::UserPosts),
    ("GET", "/api/v1/notifications", Route::Notifications),
    ("PUT", "/api/v1/users/{id}/follow", Route::Follow),
    ("DELETE", "/api/v1/users/{id}/follow", Route::Unfollow),
    ("PUT", "/api/v1/users/{id}/block", Route::Block),
    ("DELETE", "/api/v1/users/{id}/block", Route::Unblock),
    ("POST", "/api/v1/orders", Route::CreateOrder),
    ("GET", "/api/v1/orders/{id}", Route::Order),
    (
        "GET",
        "/api/v1/customers/{id}/orders",
        Route::CustomerOrders,
    ),
    ("GET", "/healthz", Route::Healthz),
    ("GET", "/readyz", Route::Readyz),
    ("GET", "/openapi.json", Route::OpenApi),
    ("GET", "/docs", Route::Docs),
];

impl Route {
    /// The path template, the route's label in metrics and logs.
    pub fn template(self) -> &'static str {
        ROUTES
            .iter()
            .find(|(_, _, r)| *r == self)
            .map(|(_, t, _)| *t)
            .expect("every route is in the table")
    }

    /// Whether the route needs a signed-in viewer (feeds and orders); posts and profiles
    /// also answer anonymously, without viewer fields.
    pub fn needs_viewer(self) -> bool {
        matches!(
            self,
            Route::Feed
                | Route::Discover
                | Route::Order
                | Route::CustomerOrders
                | Route::CreatePost
                | Route::DeletePost
                | Route::CreateOrder
                | Route::Notifications
                | Route::Follow
                | Route::Unfollow
                | Route::Block
                | Route::Unblock
        )
    }

    /// Whether the route changes data.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Route::Follow
                | Route::Unfollow
                | Route::Block
                | Route::Unblock
                | Route::CreatePost
                | Route::DeletePost
                | Route::CreateOrder
        )
    }

    /// Whether the route takes a JSON body (and answers 201 with what it created).
    pub fn creates(self) -> bool {
        matches!(self, Route::CreatePost | Route::CreateOrder)
    }

    /// Whether the route answers operators rather than API clients: no auth, no rate
    /// limit, no concurrency permit.
    pub fn is_probe(self) -> bool {
        matches!(
            self,
            Route::Healthz | Route::Readyz | Route::OpenApi | Route::Docs
        )
    }

    /// Whether the route reads a JSON request body.
    pub fn takes_body(self) -> bool {
        matches!(self, Route::CreatePost | Route::CreateOrder)
    }
}

/// What a request's method and path matched.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Matched {
    /// The route and its `{id}` parameter, if it has one.
    Route(Route, Option<String>),
    NotFound,
    /// The path exists; these methods (for `Allow`) do not include the request's.
    MethodNotAllowed(String),
}

/// The compiled table.
pub(crate) struct Router {
    tree: matchit::Router<Vec<(Method, Route)>>,
}

impl Default for Router {
    fn default() -> Self {
        let mut tree = matchit::Router::new();
        let mut paths: Vec<&str> = ROUTES.iter().map(|(_, p, _)| *p).collect();
        paths.dedup();
        for path in paths {
            let methods = ROUTES
                .iter()
                .filter(|(_, p, _)| *p == path)
                .map(|(m, _, r)| (m.parse().expect("valid method"), *r))
                .collect();
            tree.insert(path, methods).expect("routes do not conflict");
        }
        Self { tree }
    }
}

impl Router {
    /// Matches `method` and `path`. `HEAD` is answered wherever `GET` is.
    pub(crate) fn matched(&self, method: &Method, path: &str) -> Matched {
        let Ok(m) = self.tree.at(path) else {
            return Matched::NotFound;
        };
        let id = m.params.get("id").map(str::to_owned);
        let want = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        match m.value.iter().find(|(verb, _)| verb == want) {
            Some((_, route)) => Matched::Route(*route, id),
            None => {
                let mut allow: Vec<&str> = m.value.iter().map(|(v, _)| v.as_str()).collect();
                if allow.contains(&"GET") {
                    allow.push("HEAD");
                }
                Matched::MethodNotAllowed(allow.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_own_metrics_slot() {
        let mut seen = std::collections::HashSet::new();
        for (_, _, route) in ROUTES {
            assert!((*route as usize) < ROUTE_COUNT, "{route:?}");
            seen.insert(*route as usize);
        }
        assert_eq!(seen.len(), ROUTE_COUNT, "every slot is some route's");
    }

    #[test]
    fn paths_match_their_routes_and_parameters() {
        let r = Router::default();
        assert_eq!(
            r.matched(&Method::GET, "/api/v1/users/42/posts"),
            Matched::Route(Route::UserPosts, Some("42".into()))
        );
        assert_eq!(
            r.matched(&Method::HEAD, "/api/v1/feed"),
            Matched::Route(Route::Feed, None)
        );
        assert_eq!(r.matched(&Method::GET, "/api/v1/nope"), Matched::NotFound);
        assert_eq!(r.matched(&Method::GET, "/api/v1/feed/"), Matched::NotFound);
        assert_eq!(
            r.matched(&Method::POST, "/api/v1/feed"),
            Matched::MethodNotAllowed("GET, HEAD".into())
        );
        for (_, path, route) in ROUTES {
            assert_eq!(route.template(), *path);
        }
    }
}
