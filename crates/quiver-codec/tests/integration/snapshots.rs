//! Snapshots of every response shape, as the encoders write them (timestamps redacted).

use crate::fixtures::*;
use quiver_codec::encode::encode;
use quiver_codec::fragment::{AuthorFragment, PostFragment, SplicedItem, splice_page};
use quiver_codec::problem::{Problem, ProblemType};
use quiver_codec::request::{BodyError, FieldError};
use quiver_codec::wire::*;
use serde_json::Value;

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("encoders write valid json")
}

fn item(viewer: Option<ViewerWire>) -> FeedItemWire {
    let (user, flags) = user();
    let (post, media, tags) = wish_post();
    PostFieldsWire::new(&post, &media, &tags).into_item(AuthorWire::new(&user, &flags), viewer)
}

#[test]
fn feed_page() {
    let (user, flags) = user();
    let (post, media, tags) = wish_post();
    let pf = PostFragment::encode(&PostFieldsWire::new(&post, &media, &tags));
    let af = AuthorFragment::encode(&AuthorWire::new(&user, &flags));
    let viewer = Some(ViewerWire {
        follows_author: true,
        followed_by_author: false,
    });
    let page = splice_page(
        &[SplicedItem {
            post: &pf,
            author: &af,
            viewer,
        }],
        Some("next-cursor"),
        None,
        &["tags"],
    );
    insta::assert_json_snapshot!("feed_page", json(&page), { ".items[].created_at" => "[timestamp]" });
}

#[test]
fn discovery_page_with_seed_and_anonymous_post() {
    let page = FeedPageWire {
        items: vec![item(None)],
        next_page: None,
        seed: Some(42),
        partial: vec![],
    };
    insta::assert_json_snapshot!("discovery_page", json(&encode(&page)), { ".items[].created_at" => "[timestamp]" });
    insta::assert_json_snapshot!("post", json(&encode(&item(None))), { ".created_at" => "[timestamp]" });
}

#[test]
fn profile_and_user_posts() {
    let (user, flags) = user();
    let viewer = Some(ViewerWire {
        follows_author: false,
        followed_by_author: true,
    });
    insta::assert_json_snapshot!("profile", json(&encode(&ProfileWire::new(&user, &flags, viewer))), {
        ".created_at" => "[timestamp]"
    });
    let page = FeedPageWire {
        items: vec![item(viewer)],
        next_page: Some("c2".into()),
        seed: None,
        partial: vec![],
    };
    insta::assert_json_snapshot!("user_posts", json(&encode(&page)), { ".items[].created_at" => "[timestamp]" });
}

#[test]
fn orders_and_notifications() {
    let (order, items) = order();
    let wire = OrderWire::new(&order, &items);
    insta::assert_json_snapshot!("order", json(&encode(&wire)), {
        ".created_at" => "[timestamp]", ".updated_at" => "[timestamp]"
    });
    let page = OrdersPageWire {
        items: vec![wire],
        next_page: None,
    };
    insta::assert_json_snapshot!("orders", json(&encode(&page)), {
        ".items[].created_at" => "[timestamp]", ".items[].updated_at" => "[timestamp]"
    });
    let page = NotificationsPageWire {
        items: vec![NotificationWire::from(&notification())],
        next_page: Some("n2".into()),
    };
    insta::assert_json_snapshot!("notifications", json(&encode(&page)), { ".items[].created_at" => "[timestamp]" });
}

#[test]
fn errors() {
    let invalid = BodyError::Invalid(vec![
        FieldError {
            field: "body".into(),
            message: "must not be empty".into(),
        },
        FieldError {
            field: "wish.price_cents".into(),
            message: "must be between 1 and 100000000000".into(),
        },
    ]);
    insta::assert_json_snapshot!(
        "problem_validation",
        json(&Problem::from_body_error(&invalid).to_json())
    );
    insta::assert_json_snapshot!(
        "problem_not_found",
        json(&Problem::new(ProblemType::NotFound, "post 7 does not exist").to_json())
    );
}

#[test]
fn timestamps_are_rfc3339_utc_with_microseconds() {
    let v = json(&encode(&item(None)));
    assert_eq!(v["created_at"], "2026-03-01T12:00:00.000000Z");
}

#[test]
fn the_openapi_document_has_every_wire_type() {
    let doc = serde_json::to_value(quiver_codec::openapi::document()).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "FeedPageWire",
        "FeedItemWire",
        "AuthorWire",
        "MediaWire",
        "WishWire",
        "ViewerWire",
        "ProfileWire",
        "OrderWire",
        "OrderItemWire",
        "OrdersPageWire",
        "NotificationWire",
        "NotificationsPageWire",
        "CreatePostBody",
        "CreateOrderBody",
        "Problem",
        "FieldError",
    ] {
        assert!(
            schemas.contains_key(name),
            "{name} missing from the openapi components"
        );
    }
    // Optional fields are documented as nullable and still required (always present).
    let item = &schemas["FeedItemWire"];
    assert!(
        item["required"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "wish"),
        "{item}"
    );
}
