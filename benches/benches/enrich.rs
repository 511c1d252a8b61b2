//! Enrichment benches: assembling a 20-item home page end to end (head, hydration,
//! viewer part, encoding) on the seeded `quiver_bench` database.
//!
//! - `l1/*`: every lookup served from a warm L1 (the page cut from the viewer's cached
//!   head), so this is the engine's own CPU cost, splicing the items' stored fragments or
//!   encoding every item again, with finished pages off; `l1/finished_page` is the same
//!   page served again from the finished pages (its fences checked). Before measuring,
//!   each counts the heap allocations of one warm page with a counting allocator
//!   (target: at most 60);
//! - `pg/*`: no caches, every lookup a PostgreSQL batch, with the independent batches
//!   run concurrently or one after another (the parallel-calls table).
//!
//! Run with `cargo bench -p quiver-benches --bench enrich` (`DATABASE_URL` picks the
//! server; the database is seeded once by whichever bench runs first).

use criterion::{Criterion, criterion_group, criterion_main};
use quiver_benches::{bench_seed, seeded};
use quiver_enrich::{Engine, EngineConfig, Sources};
use quiver_model::{CursorCodec, UserId};
use quiver_server::compose::{StackConfig, read_stack};
use quiver_store::Store;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn engine(sources: Sources, config: EngineConfig) -> Engine {
    Engine::new(sources, CursorCodec::new(b"bench"), config, None)
}

fn home_page(c: &mut Criterion) {
    // One thread (the allocation count below is of this page alone), and one runtime for
    // everything: the pool's connections belong to the runtime that opened them.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pg = rt
        .block_on(seeded("quiver_bench", &bench_seed()))
        .expect("seeded database");
    // A viewer with about 200 followees: a typical busy feed with many distinct authors.
    let viewer = UserId(
        rt.block_on(
            sqlx::query_scalar::<_, i64>(
                "SELECT follower_id FROM follows GROUP BY follower_id
                 ORDER BY abs(count(*) - 200), follower_id LIMIT 1",
            )
            .fetch_one(pg.pool()),
        )
        .unwrap(),
    );
    let store: Arc<dyn Store> = Arc::new(pg);
    let mut g = c.benchmark_group("enrich_home_page_20");

    let built = EngineConfig {
        finished_pages_bytes: 0,
        ..EngineConfig::default()
    };
    for (name, config) in [
        ("l1/fragments", built),
        (
            "l1/encode_every_item",
            EngineConfig {
                reuse_fragments: false,
                ..built
            },
        ),
        ("l1/finished_page", EngineConfig::default()),
    ] {
        let (sources, _caches) = rt.block_on(read_stack(
            store.clone(),
            None,
            &StackConfig {
                coalesce: None,
                ..StackConfig::default()
            },
            &config,
        ));
        let e = engine(sources, config);
        // Warm every cache tier the page touches (twice: the second page is built from
        // the L1 alone, so a finished page is kept).
        for _ in 0..2 {
            let warm = rt.block_on(e.home(viewer, None, 20)).unwrap();
            assert_eq!(warm.ids.len(), 20);
        }
        let pages = 100;
        let region = Region::new(GLOBAL);
        for _ in 0..pages {
            rt.block_on(e.home(viewer, None, 20)).unwrap();
        }
        let stats = region.change();
        println!(
            "warm page, {name}: {:.1} allocations, {:.0} bytes allocated per page",
            stats.allocations as f64 / pages as f64,
            stats.bytes_allocated as f64 / pages as f64,
        );
        if name == "l1/finished_page" {
            let hits = e.page_stats().expect("finished pages on").hits;
            assert!(hits >= pages, "served from the finished pages ({hits})");
        }
        g.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| async { e.home(viewer, None, 20).await.unwrap().body.len() })
        });
    }

    for concurrent in [true, false] {
        let config = EngineConfig {
            concurrent_lookups: concurrent,
            ..EngineConfig::default()
        };
        let (sources, _caches) = rt.block_on(read_stack(
            store.clone(),
            None,
            &StackConfig {
                cache: false,
                coalesce: None,
                ..StackConfig::default()
            },
            &config,
        ));
        let e = engine(sources, config);
        let name = if concurrent {
            "pg/concurrent_lookups"
        } else {
            "pg/sequential_lookups"
        };
        g.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| async { e.home(viewer, None, 20).await.unwrap().body.len() })
        });
    }
    g.finish();
}

criterion_group!(benches, home_page);
criterion_main!(benches);
