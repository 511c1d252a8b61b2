//! PostgreSQL-only checks: one statement per batch, and query plans on a seeded data set.

use crate::contract::Backend;
use crate::support::{count_statements, fixture};
use quiver_model::{Cursor, OrderId, PostId, PostList, UserId};
use quiver_store::seed::{SeedConfig, generate};
use quiver_store::{PgStore, Store as _};
use sqlx::PgPool;

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn each_batch_loader_runs_one_statement_whatever_the_number_of_keys(pool: PgPool) {
    let store = Backend::Pg(PgStore::from_pool(pool))
        .load(&fixture(100))
        .await;
    for n in [1usize, 5, 500] {
        let users: Vec<UserId> = (1..=n as i64).map(UserId).collect();
        let posts: Vec<PostId> = (1..=n as i64).map(PostId).collect();
        let orders: Vec<OrderId> = (1..=n as i64).map(OrderId).collect();
        let calls: Vec<(&str, usize)> = vec![
            ("users", count_statements(store.users(&users)).await.1),
            (
                "user_flags",
                count_statements(store.user_flags(&users)).await.1,
            ),
            ("posts", count_statements(store.posts(&posts)).await.1),
            (
                "media",
                count_statements(store.media_by_post(&posts)).await.1,
            ),
            ("tags", count_statements(store.tags_by_post(&posts)).await.1),
            ("orders", count_statements(store.orders(&orders)).await.1),
            (
                "order_items",
                count_statements(store.order_items(&orders)).await.1,
            ),
            (
                "viewer_graph",
                count_statements(store.viewer_graph(UserId(1))).await.1,
            ),
        ];
        for (name, statements) in calls {
            assert_eq!(statements, 1, "{name} with {n} keys");
        }
    }
    let (found, statements) = count_statements(store.posts(&[])).await;
    assert!(found.unwrap().is_empty());
    assert_eq!(statements, 0, "an empty batch runs no statement");
}

/// The plan of `sql` as text, with generic parameters so it matches a prepared statement.
async fn plan(pool: &PgPool, sql: &str) -> String {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL plan_cache_mode = force_generic_plan")
        .execute(&mut *tx)
        .await
        .unwrap();
    let prepare = format!("PREPARE q AS {sql}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(prepare))
        .execute(&mut *tx)
        .await
        .unwrap();
    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(
        "EXPLAIN EXECUTE q(2, '9999-12-31', 9223372036854775807, 21)".to_owned(),
    ))
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    sqlx::raw_sql("DEALLOCATE q")
        .execute(&mut *tx)
        .await
        .unwrap();
    rows.join("\n")
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn indexes_serve_the_hot_queries_on_a_seeded_data_set(pool: PgPool) {
    let ds = generate(&SeedConfig {
        users: 2500,
        posts_per_user: 21,
        follows_per_user: 20,
        seed: 1,
        timeline_depth: 20,
    });
    assert!(ds.posts.len() >= 50_000, "{} posts", ds.posts.len());
    let store = Backend::Pg(PgStore::from_pool(pool.clone()))
        .load(&ds)
        .await;
    let posts: i64 = sqlx::query_scalar("SELECT count(*) FROM posts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(posts as usize, ds.posts.len());

    let active = plan(
        &pool,
        "SELECT id, created_at FROM orders
         WHERE customer_id = $1 AND status = 'active' AND (created_at, id) < ($2, $3)
         ORDER BY created_at DESC, id DESC LIMIT $4",
    )
    .await;
    assert!(active.contains("orders_active_by_customer"), "{active}");

    let author = plan(
        &pool,
        "SELECT id, created_at FROM posts
         WHERE author_id = $1 AND (created_at, id) < ($2, $3)
         ORDER BY created_at DESC, id DESC LIMIT $4",
    )
    .await;
    assert!(author.contains("posts_by_author"), "{author}");
    assert!(!author.contains("Seq Scan"), "{author}");

    let merged = plan(
        &pool,
        "SELECT p.id, p.created_at FROM unnest(ARRAY[$1::bigint, 3, 4]) AS a(author_id)
         CROSS JOIN LATERAL (
             SELECT id, created_at FROM posts
             WHERE posts.author_id = a.author_id AND (created_at, id) < ($2, $3)
             ORDER BY created_at DESC, id DESC LIMIT $4) p
         ORDER BY p.created_at DESC, p.id DESC LIMIT $4",
    )
    .await;
    assert!(
        merged.contains("posts_by_author") && !merged.contains("Seq Scan"),
        "{merged}"
    );

    // The seeded home feed agrees with merge-at-read across the timeline's depth.
    let viewer = UserId(7);
    let g = store.viewer_graph(viewer).await.unwrap();
    let mut authors: Vec<UserId> = g.followees.into_iter().collect();
    authors.push(viewer);
    let mut cursor: Option<Cursor> = None;
    for _ in 0..5 {
        let home = store
            .post_page(PostList::Home(viewer), cursor, 15)
            .await
            .unwrap();
        let merged = store.author_page(&authors, cursor, 15).await.unwrap();
        assert_eq!(home, merged);
        match home.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
}

#[tokio::test]
async fn checkouts_that_find_no_idle_connection_are_counted_as_waits() {
    let url = quiver_testkit::database_url();
    let store = PgStore::connect(&quiver_store::PgConfig {
        url,
        max_connections: 1,
        min_connections: 1,
        ..quiver_store::PgConfig::default()
    })
    .await
    .unwrap();
    store.ping().await.unwrap();
    assert_eq!(store.pool_stats().waits, 0, "an idle connection was there");
    let (a, b, c) = tokio::join!(store.ping(), store.ping(), store.ping());
    a.unwrap();
    b.unwrap();
    c.unwrap();
    let stats = store.pool_stats();
    assert!(
        stats.waits >= 1,
        "one connection for three callers: {stats:?}"
    );
    assert_eq!((stats.size, stats.max), (1, 1));
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn relays_claiming_at_once_never_take_the_same_rows(pool: PgPool) {
    use quiver_store::events::Outbox;
    use quiver_store::write::GraphWrites;
    let store = quiver_store::PgStore::from_pool(pool);
    store
        .load_dataset(&crate::support::fixture(3), &|_| {})
        .await
        .unwrap();
    for followee in [2, 3, 4, 5] {
        let _ = store
            .follow(quiver_model::UserId(6), quiver_model::UserId(followee))
            .await
            .unwrap();
    }
    // 4 blocks nobody but 1, and 6 is free to follow 2, 3, 4 and 5: four events.
    assert_eq!(store.backlog().await.unwrap().unpublished, 4);
    let a = store.claim(3).await.unwrap();
    // While `a` holds its rows, a second relay gets only the rest.
    let b = store.claim(3).await.unwrap();
    assert_eq!((a.events().len(), b.events().len()), (3, 1));
    let ids_a: Vec<_> = a.events().iter().map(|e| e.id).collect();
    let ids_b: Vec<_> = b.events().iter().map(|e| e.id).collect();
    assert!(ids_b.iter().all(|id| !ids_a.contains(id)));
    b.published(&ids_b).await.unwrap();
    a.published(&ids_a).await.unwrap();
    assert_eq!(store.backlog().await.unwrap().unpublished, 0);
}

/// A write PostgreSQL refuses is described for logs with its SQLSTATE (here 22021, NUL in
/// text), while the error's own message stays free of driver text.
#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_refused_write_is_described_with_its_sqlstate(pool: PgPool) {
    use quiver_store::write::PostWrites as _;
    let store = PgStore::from_pool(pool);
    Backend::Pg(store.clone()).load(&fixture(5)).await;
    let new = quiver_model::NewPost {
        kind: quiver_model::PostKind::Post,
        body: "a\0b".into(),
        media: vec![],
        tags: vec![],
        wish: None,
    };
    let err = store.create_post(UserId(1), &new).await.unwrap_err();
    assert_eq!(err.to_string(), "database error");
    let text = quiver_store::describe(&err);
    assert!(text.contains("code 22021"), "{text}");
}

/// Before the fix `quiver serve` applied migrations under the request path's statement
/// timeout, so a migration that builds an index on a large table failed and the server
/// would not start.
#[sqlx::test(migrations = false)]
async fn a_migration_may_outlast_the_statement_timeout_that_requests_keep(pool: PgPool) {
    let options = pool.connect_options().as_ref().clone();
    let timed = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.options([("statement_timeout", "100")]))
        .await
        .unwrap();
    let store = PgStore::from_pool(timed.clone());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("1_slow.sql"),
        "SELECT pg_sleep(0.5); CREATE TABLE slow_done (id int);",
    )
    .unwrap();
    let slow = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    store
        .migrate_with(&slow)
        .await
        .expect("the slow migration applies");
    let done: i64 = sqlx::query_scalar("SELECT count(*) FROM slow_done")
        .fetch_one(&timed)
        .await
        .unwrap();
    assert_eq!(done, 0, "the migration ran to its end");
    let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&timed)
        .await
        .unwrap();
    assert_eq!(
        timeout, "100ms",
        "the pool's connections keep the request timeout"
    );
    let err = sqlx::query("SELECT pg_sleep(0.5)")
        .execute(&timed)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("statement timeout"), "{err}");
}
