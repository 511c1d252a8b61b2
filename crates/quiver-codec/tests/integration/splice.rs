//! Splicing fragments writes exactly what encoding the whole page writes, for generated
//! inputs full of quotes, backslashes, control characters, non-ASCII and emoji; and every
//! encoder writes JSON that serde_json reads back to the same value.

use proptest::collection::vec;
use proptest::prelude::*;
use quiver_codec::encode::{encode, encode_serde_json, encode_simd_serde};
use quiver_codec::fragment::{AuthorFragment, PostFragment, SplicedItem, splice_page, splice_post};
use quiver_codec::wire::*;

/// Text that exercises every JSON escape and multi-byte UTF-8.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[\"\\\\/\u{0}-\u{1f}\u{7f}\u{2028}\u{2029}a-zé漢😀🏳️‍🌈 ]{0,24}",
        any::<String>(),
        Just(String::new()),
    ]
}

fn media() -> impl Strategy<Value = MediaWire> {
    (
        text(),
        prop_oneof![Just("image"), Just("video")],
        1..=16384i32,
        1..=16384i32,
        any::<i64>(),
        0..16i16,
    )
        .prop_map(
            |(url, kind, width, height, size_bytes, position)| MediaWire {
                url,
                kind: kind.into(),
                width,
                height,
                size_bytes,
                position,
            },
        )
}

fn post() -> impl Strategy<Value = PostFieldsWire> {
    (
        any::<i64>(),
        text(),
        text(),
        vec(media(), 0..=10),
        vec(text(), 0..=10),
        proptest::option::of((any::<i64>(), text(), text())),
    )
        .prop_map(|(id, body, created_at, media, tags, wish)| PostFieldsWire {
            id,
            kind: if wish.is_some() { "wish" } else { "post" }.into(),
            body,
            created_at,
            media,
            tags,
            wish: wish.map(|(price_cents, currency, product_url)| WishWire {
                price_cents,
                currency,
                product_url,
            }),
        })
}

fn author() -> impl Strategy<Value = AuthorWire> {
    (
        any::<i64>(),
        text(),
        text(),
        proptest::option::of(text()),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(id, handle, display_name, avatar_url, verified, creator)| AuthorWire {
                id,
                handle,
                display_name,
                avatar_url,
                verified,
                creator,
            },
        )
}

fn viewer() -> impl Strategy<Value = Option<ViewerWire>> {
    proptest::option::of((any::<bool>(), any::<bool>()).prop_map(
        |(follows_author, followed_by_author)| ViewerWire {
            follows_author,
            followed_by_author,
        },
    ))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn spliced_pages_equal_whole_encodings(
        items in vec((post(), author(), viewer()), 0..=30),
        next_page in proptest::option::of(text()),
        seed in proptest::option::of(any::<u64>()),
        partial in proptest::sample::subsequence(vec!["media", "tags", "a \"quoted\" part"], 0..=3),
    ) {
        let fragments: Vec<(PostFragment, AuthorFragment, Option<ViewerWire>)> = items
            .iter()
            .map(|(p, a, v)| (PostFragment::encode(p), AuthorFragment::encode(a), *v))
            .collect();
        let spliced_items: Vec<SplicedItem<'_>> = fragments
            .iter()
            .map(|(post, author, viewer)| SplicedItem { post, author, viewer: *viewer })
            .collect();
        let spliced = splice_page(&spliced_items, next_page.as_deref(), seed, &partial);

        let whole = FeedPageWire {
            items: items.into_iter().map(|(p, a, v)| p.into_item(a, v)).collect(),
            next_page,
            seed,
            partial: partial.iter().map(|p| p.to_string()).collect(),
        };
        let expected = encode_serde_json(&whole);
        // Byte for byte, so also the same JSON value.
        prop_assert_eq!(String::from_utf8_lossy(&spliced), String::from_utf8_lossy(&expected));
        let back: FeedPageWire = serde_json::from_slice(&spliced).unwrap();
        prop_assert_eq!(back, whole.clone());

        // Every encoder writes valid JSON of the same value.
        let value = serde_json::to_value(&whole).unwrap();
        let simd: serde_json::Value = serde_json::from_slice(&encode_simd_serde(&whole)).unwrap();
        prop_assert_eq!(&simd, &value);
        let derived: serde_json::Value = serde_json::from_slice(&encode(&whole)).unwrap();
        prop_assert_eq!(&derived, &value);
    }

    #[test]
    fn a_spliced_post_equals_its_whole_encoding(
        (p, a, v) in (post(), author(), viewer()),
        partial in proptest::sample::subsequence(vec!["media", "tags"], 0..=2),
    ) {
        let (pf, af) = (PostFragment::encode(&p), AuthorFragment::encode(&a));
        let spliced = splice_post(&SplicedItem { post: &pf, author: &af, viewer: v }, &partial);
        let whole = PostDetailWire {
            item: p.into_item(a, v),
            partial: partial.iter().map(|p| p.to_string()).collect(),
        };
        let expected = encode_serde_json(&whole);
        prop_assert_eq!(String::from_utf8_lossy(&spliced), String::from_utf8_lossy(&expected));
    }
}

#[test]
fn a_maximal_page_splices_like_its_whole_encoding() {
    let post = PostFieldsWire {
        id: i64::MAX,
        kind: "wish".into(),
        body: "é\"\\\u{1}😀".repeat(1000),
        created_at: "2026-03-01T12:00:00.000000Z".into(),
        media: (0..10)
            .map(|i| MediaWire {
                url: format!("https://m/{i}"),
                kind: "video".into(),
                width: 16384,
                height: 1,
                size_bytes: i64::MIN,
                position: i,
            })
            .collect(),
        tags: (0..10).map(|i| format!("t{i}")).collect(),
        wish: Some(WishWire {
            price_cents: 100_000_000_000,
            currency: "EUR".into(),
            product_url: "https://s".into(),
        }),
    };
    let author = AuthorWire {
        id: -1,
        handle: "h".into(),
        display_name: "\u{0}".into(),
        avatar_url: None,
        verified: true,
        creator: true,
    };
    let (pf, af) = (PostFragment::encode(&post), AuthorFragment::encode(&author));
    let items: Vec<SplicedItem<'_>> = (0..100)
        .map(|_| SplicedItem {
            post: &pf,
            author: &af,
            viewer: None,
        })
        .collect();
    let spliced = splice_page(&items, Some("x"), Some(u64::MAX), &[]);
    let whole = FeedPageWire {
        items: (0..100)
            .map(|_| post.clone().into_item(author.clone(), None))
            .collect(),
        next_page: Some("x".into()),
        seed: Some(u64::MAX),
        partial: vec![],
    };
    assert_eq!(spliced, encode_serde_json(&whole));
}
