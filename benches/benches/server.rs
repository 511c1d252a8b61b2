//! The CPU cost of response compression on a 20-item feed page, per encoding, with the
//! compressed sizes printed: what `--compression-min-bytes` trades.
//!
//! Run with `cargo bench -p quiver-benches --bench server`.

use criterion::{Criterion, criterion_group, criterion_main};
use quiver_codec::encode::encode;
use quiver_codec::wire::{AuthorWire, FeedPageWire, PostFieldsWire, ViewerWire};
use quiver_server::compression::{Encoding, encode as compress};
use quiver_store::seed::{SeedConfig, generate};
use std::collections::HashMap;
use std::hint::black_box;

/// A 20-item page of the demo data set, as the API writes it.
fn page() -> Vec<u8> {
    let ds = generate(&SeedConfig::demo());
    let users: HashMap<_, _> = ds.users.iter().map(|(u, f)| (u.id, (u, f))).collect();
    let items = ds
        .posts
        .iter()
        .rev()
        .take(20)
        .map(|p| {
            let media: Vec<_> = ds
                .media
                .iter()
                .filter(|m| m.post_id == p.id)
                .cloned()
                .collect();
            let tags: Vec<String> = ds
                .tags
                .iter()
                .filter(|(id, _)| *id == p.id.0)
                .map(|(_, t)| (*t).to_owned())
                .collect();
            let (u, f) = users[&p.author_id];
            PostFieldsWire::new(p, &media, &tags).into_item(
                AuthorWire::new(u, f),
                Some(ViewerWire {
                    follows_author: true,
                    followed_by_author: false,
                }),
            )
        })
        .collect();
    encode(&FeedPageWire {
        items,
        next_page: Some("AQAGVSszuUsAAAAAAAAACJKWI_omsc31Iogc180".into()),
        seed: None,
        partial: vec![],
    })
}

fn compression(c: &mut Criterion) {
    let body = page();
    for e in [Encoding::Gzip, Encoding::Zstd] {
        let packed = compress(&body, e).unwrap();
        eprintln!(
            "{}: {} -> {} bytes ({:.1}%)",
            e.as_str(),
            body.len(),
            packed.len(),
            100.0 * packed.len() as f64 / body.len() as f64
        );
    }
    let mut g = c.benchmark_group("compress_feed_page_20");
    g.bench_function("identity_copy", |b| b.iter(|| black_box(body.to_vec())));
    g.bench_function("gzip_fast", |b| {
        b.iter(|| compress(black_box(&body), Encoding::Gzip))
    });
    g.bench_function("zstd_1", |b| {
        b.iter(|| compress(black_box(&body), Encoding::Zstd))
    });
    g.finish();
}

criterion_group!(benches, compression);
criterion_main!(benches);
