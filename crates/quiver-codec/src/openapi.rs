//! The OpenAPI 3.1 components of every wire type, request body and the problem body,
//! generated from the types themselves so they cannot drift. The server adds its paths.

use crate::problem::Problem;
use crate::request::{
    CreateOrderBody, CreatePostBody, FieldError, MediaInput, OrderLineInput, WishInput,
};
use crate::wire::*;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "quiver", description = "A personalized-feed API"),
    components(schemas(
        FeedPageWire,
        FeedItemWire,
        PostDetailWire,
        PostFieldsWire,
        AuthorWire,
        MediaWire,
        WishWire,
        ViewerWire,
        ProfileWire,
        OrderWire,
        OrderItemWire,
        OrdersPageWire,
        NotificationWire,
        NotificationsPageWire,
        CreatePostBody,
        MediaInput,
        WishInput,
        CreateOrderBody,
        OrderLineInput,
        Problem,
        FieldError,
    ))
)]
struct Components;

/// The document with every schema, ready for the server to add paths and publish.
pub fn document() -> utoipa::openapi::OpenApi {
    Components::openapi()
}
