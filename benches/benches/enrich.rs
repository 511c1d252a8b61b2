//! Enrichment benches: assembling a 20-item home page end to end (skeleton, hydration,
//! viewer part, encoding) on the seeded `quiver_bench` database.
//!
//! - `l1/*`: every lookup served from a warm L1 and the skeleton from memory, so this is
//!   the engine's own CPU cost, with and without reusing encoded fragments (target: under
//!   50 µs per page);
//! - `pg/*`: no caches, every lookup a PostgreSQL batch, with the independent batches
//!   run concurrently or one after another (the parallel-calls table).
//!
//! Run with `cargo bench -p quiver-benches --bench enrich` (`DATABASE_URL` picks the
//! server; the database is seeded once by whichever bench runs first).

use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use quiver_benches::{bench_seed, seeded};
use quiver_enrich::{Engine, EngineConfig, Skeletons, Sources};
use quiver_model::{Cursor, CursorCodec, LoadError, OrderRef, OrderStatus, Page, PostRef, UserId};
use quiver_server::compose::{StackConfig, read_stack};
use quiver_store::Store;
use std::sync::Arc;
use tokio::runtime::Runtime;

/// One fixed home page, served from memory.
struct FixedPage(Page<PostRef>);

#[async_trait]
impl Skeletons for FixedPage {
    async fn home(&self, _: UserId, _: Option<Cursor>, _: u32) -> Result<Page<PostRef>, LoadError> {
        Ok(self.0.clone())
    }
    async fn user_posts(
        &self,
        _: UserId,
        _: Option<Cursor>,
        _: u32,
    ) -> Result<Page<PostRef>, LoadError> {
        Ok(self.0.clone())
    }
    async fn recent(&self, _: Option<Cursor>, _: u32) -> Result<Page<PostRef>, LoadError> {
        Ok(self.0.clone())
    }
    async fn customer_orders(
        &self,
        _: UserId,
        _: Option<OrderStatus>,
        _: Option<Cursor>,
        _: u32,
    ) -> Result<Page<OrderRef>, LoadError> {
        Ok(Page {
            items: Vec::new(),
            next: None,
        })
    }
}

fn engine(sources: Sources, config: EngineConfig) -> Engine {
    Engine::new(sources, CursorCodec::new(b"bench"), config, None)
}

fn home_page(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
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

    for fragments in [true, false] {
        let (mut sources, _caches) = rt.block_on(read_stack(
            store.clone(),
            None,
            &StackConfig {
                coalesce: None,
                ..StackConfig::default()
            },
        ));
        let first = rt.block_on(store.home_page(viewer, None, 20)).unwrap();
        sources.skeletons = Arc::new(FixedPage(first));
        let e = engine(
            sources,
            EngineConfig {
                fragment_cache: if fragments { 100_000 } else { 0 },
                ..EngineConfig::default()
            },
        );
        // Warm every cache tier the page touches.
        let warm = rt.block_on(e.home(viewer, None, 20)).unwrap();
        assert_eq!(warm.ids.len(), 20);
        let name = if fragments {
            "l1/fragments"
        } else {
            "l1/encode_every_item"
        };
        g.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| async { e.home(viewer, None, 20).await.unwrap().body.len() })
        });
    }

    for concurrent in [true, false] {
        let (sources, _caches) = rt.block_on(read_stack(
            store.clone(),
            None,
            &StackConfig {
                cache: false,
                coalesce: None,
                ..StackConfig::default()
            },
        ));
        let e = engine(
            sources,
            EngineConfig {
                concurrent_lookups: concurrent,
                ..EngineConfig::default()
            },
        );
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
