//! The OpenAPI 3.1 components of every wire type, request body and the problem body.
//! Response types are generated from the types themselves so they cannot drift; request
//! bodies are written from the validation's own limits ([`exact_request_schemas`]), so
//! the document accepts exactly what validation does (schemathesis checks both ways in
//! `cargo xtask test`). The server adds its paths.

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

/// A control character no text field may hold (all of Unicode's `Cc` but newline,
/// carriage return and tab), as a regex class body.
const FORBIDDEN_CONTROLS: &str = r"\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F";

/// An http(s) URL of visible ASCII with a host, at most `MAX_URL_LEN` characters.
fn url_schema() -> serde_json::Value {
    use crate::request::MAX_URL_LEN;
    serde_json::json!({
        "type": "string",
        "maxLength": MAX_URL_LEN,
        // The first character after `://` starts the host: not `/`, `?` or `#`.
        "pattern": r#"^https?://[!-"$-.0->@-~][!-~]*$"#,
        "description": "An http or https URL of visible ASCII characters with a host",
    })
}

/// The request-body schemas, exactly as validation accepts them, by component name.
pub fn exact_request_schemas() -> Vec<(&'static str, serde_json::Value)> {
    use crate::request::*;
    use serde_json::json;
    let text = format!("[^{FORBIDDEN_CONTROLS}]");
    let body = json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_BODY_CHARS,
        // Some character that is not white space, and no control characters.
        "pattern": format!(r"^{text}*[^\s{FORBIDDEN_CONTROLS}]{text}*$"),
        "description": "The text: 1 to 5000 characters, not only white space, no control \
                        characters but newline, carriage return and tab",
    });
    let media = json!({
        "type": "array",
        "maxItems": MAX_MEDIA,
        "items": {"$ref": "#/components/schemas/MediaInput"},
    });
    let tags = json!({
        "type": "array",
        "maxItems": MAX_TAGS,
        "uniqueItems": true,
        "items": {"type": "string", "pattern": "^[a-z0-9_]{1,32}$"},
    });
    let wish = json!({"$ref": "#/components/schemas/WishInput"});
    vec![
        (
            "CreatePostBody",
            json!({
                "description": "A post (`wish` absent or null) or a wish (with `wish`)",
                "type": "object",
                "additionalProperties": false,
                "required": ["kind", "body"],
                "properties": {
                    "kind": {"type": "string", "enum": ["post", "wish"]},
                    "body": body,
                    "media": media,
                    "tags": tags,
                    "wish": {"anyOf": [{"type": "null"}, wish]},
                },
                "if": {"required": ["kind"], "properties": {"kind": {"const": "wish"}}},
                "then": {"required": ["wish"], "properties": {"wish": wish}},
                "else": {"properties": {"wish": {"type": "null"}}},
            }),
        ),
        (
            "MediaInput",
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["url", "kind", "width", "height", "size_bytes"],
                "properties": {
                    "url": url_schema(),
                    "kind": {"type": "string", "enum": ["image", "video"]},
                    "width": {"type": "integer", "minimum": 1, "maximum": 16384},
                    "height": {"type": "integer", "minimum": 1, "maximum": 16384},
                    "size_bytes": {"type": "integer", "minimum": 0, "maximum": 1_073_741_824},
                },
            }),
        ),
        (
            "WishInput",
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["price_cents", "currency", "product_url"],
                "properties": {
                    "price_cents": {"type": "integer", "minimum": 1, "maximum": MAX_PRICE_CENTS},
                    "currency": {"type": "string", "pattern": "^[A-Z]{3}$",
                                 "description": "An ISO 4217 code such as EUR"},
                    "product_url": url_schema(),
                },
            }),
        ),
        (
            "CreateOrderBody",
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["items"],
                "properties": {
                    "items": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_ORDER_ITEMS,
                        "items": {"$ref": "#/components/schemas/OrderLineInput"},
                        "description": "Distinct wishes of other users",
                    },
                },
            }),
        ),
        (
            "OrderLineInput",
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["post_id", "quantity"],
                "properties": {
                    "post_id": {"type": "integer", "format": "int64", "minimum": 1,
                                "maximum": i64::MAX},
                    "quantity": {"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY},
                },
            }),
        ),
    ]
}
