//! Encoding one realistic 20-item feed page four ways (serde_json, simd-json's serde
//! serializer, simd-json-derive, fragment splicing) and parsing a post-creation body with
//! serde_json against simd-json. `cargo bench -p quiver-benches --bench codec`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quiver_codec::encode::{encode, encode_serde_json, encode_simd_serde};
use quiver_codec::fragment::{AuthorFragment, PostFragment, SplicedItem, splice_page};
use quiver_codec::request::{CreatePostBody, parse, parse_simd_json};
use quiver_codec::wire::*;
use std::hint::black_box;

/// A page like the seeded data: sentences of plain words, a few escapes and one emoji,
/// one or two media, a few tags, a third of items wishes.
fn page() -> (
    Vec<PostFieldsWire>,
    Vec<AuthorWire>,
    Vec<Option<ViewerWire>>,
) {
    let words = [
        "amber", "river", "cedar", "lantern", "otter", "quiet", "vivid", "meadow",
    ];
    let mut posts = Vec::new();
    let mut authors = Vec::new();
    let mut viewers = Vec::new();
    for i in 0..20i64 {
        let body: Vec<&str> = (0..25).map(|w| words[((i * 7 + w) % 8) as usize]).collect();
        let mut body = body.join(" ");
        if i % 5 == 0 {
            body.push_str(" \"quoted\" ✨");
        }
        posts.push(PostFieldsWire {
            id: 1_000_000 + i,
            kind: if i % 3 == 0 { "wish" } else { "post" }.into(),
            body,
            created_at: format!("2026-03-01T12:{:02}:00.000000Z", i),
            media: (0..(1 + i % 2))
                .map(|p| MediaWire {
                    url: format!("https://media.example.com/{}/{p}.jpg", 1_000_000 + i),
                    kind: "image".into(),
                    width: 1080,
                    height: 1350,
                    size_bytes: 345_678,
                    position: p as i16,
                })
                .collect(),
            tags: ["travel", "gift_ideas", "coffee"]
                .iter()
                .take((i % 4) as usize)
                .map(|t| t.to_string())
                .collect(),
            wish: (i % 3 == 0).then(|| WishWire {
                price_cents: 4999,
                currency: "EUR".into(),
                product_url: format!("https://shop.example.com/p/{i}"),
            }),
        });
        authors.push(AuthorWire {
            id: 500 + i % 7,
            handle: format!("meadow_otter{}", 500 + i % 7),
            display_name: "Meadow Otter".into(),
            avatar_url: Some(format!("https://avatars.example.com/{}.jpg", 500 + i % 7)),
            verified: i % 7 == 0,
            creator: i % 2 == 0,
        });
        viewers.push(Some(ViewerWire {
            follows_author: true,
            followed_by_author: i % 3 == 0,
        }));
    }
    (posts, authors, viewers)
}

fn encode_page(c: &mut Criterion) {
    let (posts, authors, viewers) = page();
    let whole = FeedPageWire {
        items: posts
            .iter()
            .zip(&authors)
            .zip(&viewers)
            .map(|((p, a), v)| p.clone().into_item(a.clone(), *v))
            .collect(),
        next_page: Some("AQAGEzIHtsAAAAAAAA9CQN1uPTs8dZ-l2mGo1w".into()),
        seed: None,
        partial: vec![],
    };
    // Fragments are encoded once, when entities enter the cache: not part of a request.
    let post_fragments: Vec<PostFragment> = posts.iter().map(PostFragment::encode).collect();
    let author_fragments: Vec<AuthorFragment> =
        authors.iter().map(AuthorFragment::encode).collect();
    let splice = || {
        let items: Vec<SplicedItem<'_>> = post_fragments
            .iter()
            .zip(&author_fragments)
            .zip(&viewers)
            .map(|((post, author), viewer)| SplicedItem {
                post,
                author,
                viewer: *viewer,
            })
            .collect();
        splice_page(&items, whole.next_page.as_deref(), whole.seed, &[])
    };
    let bytes = encode_serde_json(&whole).len();
    assert_eq!(
        splice(),
        encode_serde_json(&whole),
        "splicing writes the same bytes"
    );
    println!("feed page: {} items, {bytes} bytes", whole.items.len());

    let mut g = c.benchmark_group("encode_feed_page");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("serde_json", |b| {
        b.iter(|| encode_serde_json(black_box(&whole)))
    });
    g.bench_function("simd_json_serde", |b| {
        b.iter(|| encode_simd_serde(black_box(&whole)))
    });
    g.bench_function("simd_json_derive", |b| b.iter(|| encode(black_box(&whole))));
    g.bench_function("splice_fragments", |b| b.iter(|| black_box(splice())));
    g.finish();
}

fn parse_body(c: &mut Criterion) {
    let body = br#"{"kind":"wish","body":"a lantern for the meadow, quiet and vivid, for long evenings by the river","media":[{"url":"https://media.example.com/1/0.jpg","kind":"image","width":1080,"height":1350,"size_bytes":345678},{"url":"https://media.example.com/1/1.jpg","kind":"image","width":1080,"height":1350,"size_bytes":245678}],"tags":["travel","gift_ideas","outdoors"],"wish":{"price_cents":4999,"currency":"EUR","product_url":"https://shop.example.com/p/1"}}"#;
    let mut g = c.benchmark_group("parse_post_body");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("serde_json", |b| {
        b.iter(|| parse::<CreatePostBody>(black_box(body), 1 << 20).unwrap())
    });
    g.bench_function("simd_json", |b| {
        b.iter(|| parse_simd_json::<CreatePostBody>(black_box(body), 1 << 20).unwrap())
    });
    g.finish();
}

criterion_group!(benches, encode_page, parse_body);
criterion_main!(benches);
