//! Request bodies: valid ones pass, every kind of bad one gets the typed error, and no
//! input at all makes the parser panic.

use proptest::prelude::*;
use quiver_codec::problem::Problem;
use quiver_codec::request::{BodyError, CreateOrderBody, CreatePostBody, parse};
use quiver_model::PostKind;

const LIMIT: usize = 64 * 1024;

fn post(body: &str) -> Result<quiver_codec::request::NewPost, BodyError> {
    parse::<CreatePostBody>(body.as_bytes(), LIMIT)?.validate()
}

fn fields(err: BodyError) -> Vec<String> {
    match err {
        BodyError::Invalid(errors) => errors.into_iter().map(|e| e.field).collect(),
        other => panic!("expected field errors, got {other:?}"),
    }
}

#[test]
fn a_valid_wish_parses_into_a_new_post() {
    let p = post(r#"{"kind":"wish","body":"want ✨","media":[{"url":"https://m.example.com/1.jpg","kind":"image","width":10,"height":20,"size_bytes":300}],"tags":["tea"],"wish":{"price_cents":1999,"currency":"EUR","product_url":"https://shop.example.com/x"}}"#).unwrap();
    assert_eq!(p.kind, PostKind::Wish);
    assert_eq!(p.wish.unwrap().price.amount_cents, 1999);
    assert_eq!(p.media.len(), 1);
}

#[test]
fn every_bad_field_is_listed() {
    let long = "x".repeat(5001);
    let body = format!(
        r#"{{"kind":"wish","body":"{long}","media":[{{"url":"ftp://x","kind":"gif","width":0,"height":20,"size_bytes":-1}}],"tags":["Bad Tag","ok","ok"],"wish":{{"price_cents":-5,"currency":"euro","product_url":"not a url"}}}}"#
    );
    let got = fields(post(&body).unwrap_err());
    for want in [
        "body",
        "media[0].url",
        "media[0].kind",
        "media[0].width",
        "media[0].size_bytes",
        "tags[0]",
        "tags[2]",
        "wish.price_cents",
        "wish.currency",
        "wish.product_url",
    ] {
        assert!(
            got.contains(&want.to_owned()),
            "{want} missing from {got:?}"
        );
    }
    assert_eq!(fields(post(r#"{"kind":"post","body":"x","wish":{"price_cents":1,"currency":"EUR","product_url":"https://a"}}"#).unwrap_err()), ["wish"]);
    assert_eq!(
        fields(post(r#"{"kind":"wish","body":"x"}"#).unwrap_err()),
        ["wish"]
    );
    assert_eq!(
        fields(post(r#"{"kind":"story","body":"x"}"#).unwrap_err()),
        ["kind"]
    );
}

#[test]
fn wrong_shapes_name_the_field() {
    assert_eq!(
        fields(post(r#"{"kind":"post","body":42}"#).unwrap_err()),
        ["body"]
    );
    assert_eq!(
        fields(post(r#"{"kind":"post","body":"x","extra":1}"#).unwrap_err()),
        ["extra"]
    );
    assert_eq!(fields(post(r#"{"kind":"post"}"#).unwrap_err()), [""]);
    assert_eq!(fields(post(r#"{"kind":"post","body":"x","media":[{"url":"https://a","kind":"image","width":"wide","height":1,"size_bytes":1}]}"#).unwrap_err()), ["media[0].width"]);
    let err = post(r#"{"kind":"post","body":"x","extra":1}"#).unwrap_err();
    let problem = Problem::from_body_error(&err);
    assert_eq!(problem.status, 422);
    assert!(
        problem.errors[0].message.contains("extra"),
        "{:?}",
        problem.errors
    );
}

#[test]
fn not_json_truncated_invalid_utf8_and_deep_nesting_are_refused() {
    for body in [
        b"not json".to_vec(),
        br#"{"kind":"post","body":"x""#.to_vec(),
        b"".to_vec(),
        b"{\"kind\":\"post\",\"body\":\"\xff\xfe\"}".to_vec(),
        "[".repeat(100_000).into_bytes(),
        format!("{}1{}", "{\"a\":".repeat(5000), "}".repeat(5000)).into_bytes(),
    ] {
        let err = parse::<CreatePostBody>(&body, 1 << 20).unwrap_err();
        assert!(
            matches!(err, BodyError::NotJson | BodyError::Invalid(_)),
            "{err:?}"
        );
        assert!(Problem::from_body_error(&err).status < 500);
    }
    assert_eq!(
        parse::<CreatePostBody>(b"not json", LIMIT).unwrap_err(),
        BodyError::NotJson
    );
    assert_eq!(
        parse::<CreatePostBody>(&[b' '; 100], 10).unwrap_err(),
        BodyError::TooLarge { limit: 10 }
    );
}

#[test]
fn orders_are_checked_line_by_line() {
    let ok = parse::<CreateOrderBody>(br#"{"items":[{"post_id":7,"quantity":2}]}"#, LIMIT)
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(ok.len(), 1);
    let bad = parse::<CreateOrderBody>(br#"{"items":[{"post_id":-7,"quantity":0},{"post_id":3,"quantity":1},{"post_id":3,"quantity":101}]}"#, LIMIT)
        .unwrap()
        .validate()
        .unwrap_err();
    assert_eq!(
        fields(bad),
        [
            "items[0].post_id",
            "items[0].quantity",
            "items[2].post_id",
            "items[2].quantity"
        ]
    );
    // JSON Schema's integers include 7.0; fractions are refused by name.
    let whole = parse::<CreateOrderBody>(br#"{"items":[{"post_id":7.0,"quantity":2.0}]}"#, LIMIT)
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(whole, vec![(quiver_model::PostId(7), 2)]);
    let half = parse::<CreateOrderBody>(br#"{"items":[{"post_id":7.5,"quantity":2}]}"#, LIMIT)
        .unwrap_err();
    assert_eq!(fields(half), ["items[0].post_id"]);
    let empty = parse::<CreateOrderBody>(br#"{"items":[]}"#, LIMIT)
        .unwrap()
        .validate()
        .unwrap_err();
    assert_eq!(fields(empty), ["items"]);
}

#[test]
fn control_characters_in_a_body_are_refused_by_name() {
    // PostgreSQL refuses NUL in text: this was a 500 before it was a field error.
    for bad in ["a\\u0000b", "a\\u0001b", "\\u001b[31mred", "a\\u007fb"] {
        let body = format!(r#"{{"kind":"post","body":"{bad}"}}"#);
        assert_eq!(fields(post(&body).unwrap_err()), ["body"], "{bad}");
    }
    let ok = post(r#"{"kind":"post","body":"lines\nand\ttabs\r\n"}"#).unwrap();
    assert_eq!(ok.body, "lines\nand\ttabs\r\n");
}

#[test]
fn a_body_full_of_bad_elements_gets_a_short_answer() {
    // 64 KiB of invalid tags: one error for the list, not one per element.
    let tags = vec!["\"A\""; 10_000].join(",");
    let body = format!(r#"{{"kind":"post","body":"x","tags":[{tags}]}}"#);
    assert!(body.len() < LIMIT);
    assert_eq!(fields(post(&body).unwrap_err()), ["tags"]);
    let items = vec![r#"{"post_id":-1,"quantity":0}"#; 1000].join(",");
    let order = format!(r#"{{"items":[{items}]}}"#);
    let err = parse::<CreateOrderBody>(order.as_bytes(), LIMIT)
        .unwrap()
        .validate()
        .unwrap_err();
    assert_eq!(fields(err), ["items"]);
    // Within the limits every element is checked, and the list is capped with a count
    // of what was left out.
    let media = [r#"{"url":"x","kind":"gif","width":0,"height":0,"size_bytes":-1}"#; 10];
    let body = format!(
        r#"{{"kind":"story","body":"","media":[{}]}}"#,
        media.join(",")
    );
    let err = post(&body).unwrap_err();
    let BodyError::Invalid(errors) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(errors.len(), quiver_codec::request::MAX_FIELD_ERRORS + 1);
    let last = errors.last().unwrap();
    assert_eq!(last.field, "*");
    // 2 + 10 × 5 errors, 20 listed.
    assert_eq!(last.message, "and 32 more errors");
    let problem = Problem::from_body_error(&err);
    assert!(serde_json::to_vec(&problem).unwrap().len() < 8 << 10);
}

proptest! {
    #[test]
    fn no_input_makes_parsing_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(p) = parse::<CreatePostBody>(&bytes, LIMIT) {
            let _ = p.validate();
        }
        if let Ok(o) = parse::<CreateOrderBody>(&bytes, LIMIT) {
            let _ = o.validate();
        }
        let _ = quiver_codec::request::parse_simd_json::<CreatePostBody>(&bytes, LIMIT);
    }

    #[test]
    fn json_with_arbitrary_strings_never_panics(kind in any::<String>(), body in any::<String>(), tag in any::<String>()) {
        let json = serde_json::json!({"kind": kind, "body": body, "tags": [tag]}).to_string();
        if let Ok(p) = parse::<CreatePostBody>(json.as_bytes(), LIMIT) {
            let _ = p.validate();
        }
    }
}

#[test]
fn both_parsers_agree_on_good_and_bad_bodies() {
    use quiver_codec::request::parse_simd_json;
    for body in [
        &br#"{"kind":"post","body":"x"}"#[..],
        br#"{"kind":"post","body":42}"#,
        br#"{"kind":"post","body":"x","extra":1}"#,
        b"not json",
        br#"{"kind":"post","body":"x"} trailing"#,
        b"{\"kind\":\"post\",\"body\":\"\xff\"}",
    ] {
        // Same outcome and same field paths; the wording is each library's.
        let outcome = |r: Result<CreatePostBody, BodyError>| match r {
            Ok(p) => Ok(p.body),
            Err(BodyError::Invalid(errors)) => Err(errors
                .into_iter()
                .map(|e| e.field)
                .collect::<Vec<_>>()
                .join(",")),
            Err(other) => Err(format!("{other:?}")),
        };
        let simd = outcome(parse::<CreatePostBody>(body, LIMIT));
        let serde = outcome(parse_simd_json::<CreatePostBody>(body, LIMIT));
        assert_eq!(simd, serde, "{}", String::from_utf8_lossy(body));
    }
}
