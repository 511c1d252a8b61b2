//! The OpenAPI 3.1 document served at `/openapi.json`: the codec's schemas plus a path
//! item for every route of the table, with its parameters, security and responses.

use crate::router::{ROUTES, Route};
use quiver_codec::problem::PROBLEM_CONTENT_TYPE;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, Required};

/// What each route is, returns and takes.
fn describe(route: Route) -> (&'static str, Option<&'static str>, &'static [&'static str]) {
    match route {
        Route::Feed => (
            "The viewer's home feed",
            Some("FeedPageWire"),
            &["limit", "cursor"],
        ),
        Route::Discover => (
            "The discovery feed: recent posts shuffled by a seed",
            Some("FeedPageWire"),
            &["limit", "cursor", "seed"],
        ),
        Route::Post => ("One post", Some("PostDetailWire"), &["id"]),
        Route::User => ("A profile", Some("ProfileWire"), &["id"]),
        Route::UserPosts => (
            "A user's posts",
            Some("FeedPageWire"),
            &["id", "limit", "cursor"],
        ),
        Route::Order => ("One order (its customer only)", Some("OrderWire"), &["id"]),
        Route::CustomerOrders => (
            "A customer's orders (the customer only)",
            Some("OrdersPageWire"),
            &["id", "limit", "cursor", "status"],
        ),
        Route::CreatePost => (
            "Create a post or a wish; answers 201 with the post",
            Some("PostDetailWire"),
            &[],
        ),
        Route::DeletePost => ("Delete your post (it leaves every feed)", None, &["id"]),
        Route::CreateOrder => (
            "Order wishes of others; totals are computed from the wishes' prices. \
             The same Idempotency-Key with the same body returns the first order",
            Some("OrderWire"),
            &["Idempotency-Key"],
        ),
        Route::Notifications => (
            "The viewer's notifications, newest first",
            Some("NotificationsPageWire"),
            &["limit", "cursor"],
        ),
        Route::Follow => ("Follow the user (409 if you already do)", None, &["id"]),
        Route::Unfollow => ("Stop following the user (idempotent)", None, &["id"]),
        Route::Block => (
            "Block the user; follows both ways are removed (409 if you already do)",
            None,
            &["id"],
        ),
        Route::Unblock => ("Unblock the user (idempotent)", None, &["id"]),
        Route::Healthz => ("Liveness", None, &[]),
        Route::Readyz => ("Readiness: the database is reachable", None, &[]),
        Route::OpenApi => ("This document", None, &[]),
        Route::Docs => ("This document as a page for people", None, &[]),
    }
}

fn parameter(name: &str) -> utoipa::openapi::path::Parameter {
    use utoipa::openapi::schema::SchemaFormat;
    use utoipa::openapi::{KnownFormat, schema::Object};
    let int = |min: f64, max: f64| -> Object {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(min))
            .maximum(Some(max))
            .build()
    };
    let (place, schema, doc) = match name {
        "id" => (
            ParameterIn::Path,
            int(1.0, i64::MAX as f64),
            "A positive id",
        ),
        "limit" => (
            ParameterIn::Query,
            int(1.0, crate::ServerConfig::default().max_limit as f64),
            "Page size, 1 to 100 (default 20)",
        ),
        "cursor" => (
            ParameterIn::Query,
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[A-Za-z0-9_-]{1,96}$"))
                .build(),
            "`next_page` of the previous page, as this server issued it (any other is a 400)",
        ),
        "seed" => (
            ParameterIn::Query,
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0.0))
                .maximum(Some(u64::MAX as f64))
                .build(),
            "Shuffle seed; a new one when absent",
        ),
        "Idempotency-Key" => (
            ParameterIn::Header,
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[!-~]{1,255}$"))
                .build(),
            "Required: 1 to 255 visible ASCII characters naming this request; a retry \
             with the same key and body returns the first answer",
        ),
        "If-None-Match" => (
            ParameterIn::Header,
            ObjectBuilder::new().schema_type(Type::String).build(),
            "The `ETag` of the copy the client has: if it is still current, 304 without a body",
        ),
        _ => (
            ParameterIn::Query,
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(
                    quiver_model::OrderStatus::ALL.iter().map(|s| s.as_str()),
                ))
                .build(),
            "Only orders in this status",
        ),
    };
    ParameterBuilder::new()
        .name(name)
        .parameter_in(place.clone())
        .required(if place == ParameterIn::Path || name == "Idempotency-Key" {
            Required::True
        } else {
            Required::False
        })
        .description(Some(doc))
        .schema(Some(schema))
        .build()
}

fn problem(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_CONTENT_TYPE,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

/// `r` with a string header `name`, described.
fn header(r: ResponseBuilder, name: &str, description: &str) -> ResponseBuilder {
    use utoipa::openapi::header::HeaderBuilder;
    r.header(
        name,
        HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::String).build())
            .description(Some(description))
            .build(),
    )
}

/// A read's caching headers (`conditional`, `render`).
fn cached(r: ResponseBuilder) -> ResponseBuilder {
    let r = header(
        r,
        "ETag",
        "Strong tag of this representation (each content coding has its own)",
    );
    header(
        r,
        "Cache-Control",
        "`public, max-age=…` for anonymous reads of posts, profiles and user posts; \
         `private, no-cache` for a viewer's",
    )
}

/// A write's read-your-writes cookie (`written`).
fn written(r: ResponseBuilder) -> ResponseBuilder {
    header(
        r,
        "Set-Cookie",
        "`quiver-written=…; Max-Age=2`: sent back, it makes the writer's reads of the next \
         two seconds see this write on every replica",
    )
}

/// The whole document.
pub(crate) fn document() -> OpenApi {
    let mut doc = quiver_codec::openapi::document();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    for (method, path, route) in ROUTES {
        let (summary, body, params) = describe(*route);
        let (status, ok) = if route.creates() {
            (
                "201",
                written(ResponseBuilder::new().description("Created")).content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(
                            body.expect("creations have a body"),
                        )))
                        .build(),
                ),
            )
        } else if route.is_write() {
            (
                "204",
                written(ResponseBuilder::new().description("Done (or already so)")),
            )
        } else {
            (
                "200",
                match body {
                    Some(schema) => cached(ResponseBuilder::new().description("OK")).content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(schema)))
                            .build(),
                    ),
                    None if *route == Route::Docs => {
                        ResponseBuilder::new().description("OK").content(
                            "text/html",
                            ContentBuilder::new()
                                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                                .build(),
                        )
                    }
                    None => ResponseBuilder::new().description("OK").content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
                            .build(),
                    ),
                },
            )
        };
        let mut op = OperationBuilder::new()
            .summary(Some(summary))
            .operation_id(Some(format!("{route:?}").to_lowercase()))
            .parameters(Some(params.iter().map(|p| parameter(p))))
            .response(status, ok.build());
        if route.creates() {
            let request = if *route == Route::CreatePost {
                "CreatePostBody"
            } else {
                "CreateOrderBody"
            };
            op = op
                .request_body(Some(
                    utoipa::openapi::request_body::RequestBodyBuilder::new()
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name(request)))
                                .build(),
                        )
                        .required(Some(Required::True))
                        .build(),
                ))
                .response("408", problem("The body did not arrive in time"))
                .response("413", problem("The body is over the size limit"))
                .response("415", problem("The body is not application/json"))
                .response(
                    "422",
                    problem(if *route == Route::CreatePost {
                        "The body is invalid; `errors` names each field"
                    } else {
                        "The body is invalid (`errors` names each field, including items \
                         that are not others' wishes), or the Idempotency-Key was used with \
                         another body"
                    }),
                );
        }
        if !route.is_probe() {
            op = op
                .response("400", problem("A parameter is invalid"))
                .response("401", problem("Missing or invalid bearer token"))
                .response("414", problem("The request target is too long"))
                .response("429", problem("Rate limited; see Retry-After"))
                .response("503", problem("Overloaded or a dependency is down"))
                .response("504", problem("The request ran out of time"));
            op = if route.needs_viewer() {
                op.security(SecurityRequirement::new("bearer", Vec::<String>::new()))
            } else {
                op.securities(Some([
                    SecurityRequirement::default(),
                    SecurityRequirement::new("bearer", Vec::<String>::new()),
                ]))
            };
            if !route.is_write() {
                op = op.parameter(parameter("If-None-Match")).response(
                    "304",
                    cached(ResponseBuilder::new().description(
                        "Not modified: the If-None-Match tag is the current one; no body",
                    ))
                    .build(),
                );
            }
            if params.contains(&"id") {
                op = op.response("404", problem("No such resource, or hidden by a block"));
            }
            if matches!(
                route,
                Route::Follow | Route::Unfollow | Route::Block | Route::Unblock
            ) {
                op = op.response("403", problem("The user is yourself"));
            }
            if matches!(route, Route::Follow | Route::Block) {
                op = op.response(
                    "409",
                    problem(
                        "Already following (or blocking) this user, or following the most \
                         accounts allowed (5000)",
                    ),
                );
            }
            if *route == Route::DeletePost {
                op = op.response("409", problem("The wish has been ordered"));
            }
            if matches!(route, Route::CustomerOrders | Route::DeletePost) {
                op = op.response("403", problem("It belongs to someone else"));
            }
        } else if *route == Route::Readyz {
            op = op.response(
                "503",
                ResponseBuilder::new()
                    .description("Database down")
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
                            .build(),
                    )
                    .build(),
            );
        } else if matches!(route, Route::OpenApi | Route::Docs) {
            op = op.response("429", problem("Rate limited; see Retry-After"));
        }
        let verb = match *method {
            "PUT" => HttpMethod::Put,
            "DELETE" => HttpMethod::Delete,
            "POST" => HttpMethod::Post,
            _ => HttpMethod::Get,
        };
        doc.paths.add_path_operation(*path, vec![verb], op.build());
    }
    doc
}

/// The document as served: [`document`] with the request bodies' exact schemas and the
/// links from what a creation answers to the operations on it (so generated tests reach
/// real ids).
pub(crate) fn document_value() -> serde_json::Value {
    let mut doc = serde_json::to_value(document()).expect("the document serializes");
    let schemas = &mut doc["components"]["schemas"];
    for (name, schema) in quiver_codec::openapi::exact_request_schemas() {
        schemas[name] = schema;
    }
    let link = |operation: &str| {
        serde_json::json!({
            "operationId": operation,
            "parameters": {"id": "$response.body#/id"},
        })
    };
    doc["paths"]["/api/v1/posts"]["post"]["responses"]["201"]["links"] = serde_json::json!({
        "GetPost": link("post"),
        "DeletePost": link("deletepost"),
    });
    doc["paths"]["/api/v1/orders"]["post"]["responses"]["201"]["links"] = serde_json::json!({
        "GetOrder": link("order"),
    });
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_parameters_and_schemas() {
        let doc = document_value();
        assert_eq!(doc["openapi"], "3.1.0");
        for (method, path, route) in ROUTES {
            let op = &doc["paths"][path][method.to_lowercase()];
            assert!(op.is_object(), "{method} {path} is missing");
            let (_, body, params) = describe(*route);
            let names: Vec<&str> = op["parameters"]
                .as_array()
                .map(|a| a.iter().map(|p| p["name"].as_str().unwrap()).collect())
                .unwrap_or_default();
            let mut expected = params.to_vec();
            if !route.is_probe() && !route.is_write() {
                expected.push("If-None-Match");
            }
            assert_eq!(names, expected, "{path}");
            if path.contains("{id}") {
                assert!(names.contains(&"id"), "{path} documents its id");
            }
            if route.creates() {
                let r = op["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
                    .as_str()
                    .unwrap();
                assert_eq!(r, format!("#/components/schemas/{}", body.unwrap()));
                assert!(op["requestBody"]["required"].as_bool().unwrap());
            }
            if let Some(schema) = body.filter(|_| !route.is_write()) {
                let r = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
                    .as_str()
                    .unwrap();
                assert_eq!(r, format!("#/components/schemas/{schema}"));
                assert!(
                    doc["components"]["schemas"][schema].is_object(),
                    "{schema} is defined"
                );
            }
        }
        assert!(doc["components"]["schemas"]["Problem"].is_object());
    }
}
