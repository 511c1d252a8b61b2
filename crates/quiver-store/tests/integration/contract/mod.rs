//! The contract suite: every `Store` behaviour that callers rely on, run against both
//! backends on the same fixture.

mod celebrities;
mod events;
mod reads;
mod writes;

use celebrities::*;
use events::*;
use reads::*;
use writes::*;

use chrono::{DateTime, Utc};
use quiver_model::{
    Cursor, FollowEdge, IdSet, Loader, MediaKind, OrderId, OrderStatus, PostId, PostKind, PostList,
    UserId,
};
use quiver_store::events::{Effects, FanOut, NewNotification, Outbox};
use quiver_store::loaders::{
    FollowsLoader, MediaLoader, OrderItemsLoader, OrdersLoader, PostsLoader, TagsLoader,
    UserFlagsLoader, UsersLoader,
};
use quiver_store::seed::{Dataset, Progress};
use quiver_store::write::{GraphWrites, LineRefusal, OrderWrites, PostWrites, Written};
use quiver_store::{PgStore, SqliteStore, Store, StoreError};
use std::collections::HashSet;
use std::sync::Arc;

/// A fresh, migrated, empty database of one backend.
pub(crate) enum Backend {
    Pg(PgStore),
    Sqlite(SqliteStore),
}

impl Backend {
    /// The post writes of this backend.
    pub(crate) fn post_writes(&self) -> Arc<dyn PostWrites> {
        match self {
            Backend::Pg(s) => Arc::new(s.clone()),
            Backend::Sqlite(s) => Arc::new(s.clone()),
        }
    }

    /// The order writes of this backend.
    pub(crate) fn orders(&self) -> Arc<dyn OrderWrites> {
        match self {
            Backend::Pg(s) => Arc::new(s.clone()),
            Backend::Sqlite(s) => Arc::new(s.clone()),
        }
    }

    /// The event effects of this backend.
    pub(crate) fn effects(&self) -> Arc<dyn Effects> {
        match self {
            Backend::Pg(s) => Arc::new(s.clone()),
            Backend::Sqlite(s) => Arc::new(s.clone()),
        }
    }

    /// The outbox of this backend.
    pub(crate) fn outbox_relay(&self) -> Arc<dyn Outbox> {
        match self {
            Backend::Pg(s) => Arc::new(s.clone()),
            Backend::Sqlite(s) => Arc::new(s.clone()),
        }
    }

    /// Counts rows with `sql` (a `SELECT count(*) …` that runs on both backends).
    pub(crate) async fn count(&self, sql: &str) -> i64 {
        match self {
            Backend::Pg(s) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(s.pool())
                .await
                .unwrap(),
            Backend::Sqlite(s) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(s.pool())
                .await
                .unwrap(),
        }
    }

    /// Runs `pg` or `sqlite` (statements separated by `;`), whichever is this backend's
    /// dialect.
    pub(crate) async fn exec(&self, pg: &str, sqlite: &str) {
        match self {
            Backend::Pg(s) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(pg))
                    .execute(s.pool())
                    .await
                    .unwrap();
            }
            Backend::Sqlite(s) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sqlite))
                    .execute(s.pool())
                    .await
                    .unwrap();
            }
        }
    }

    /// The graph writes of this backend.
    pub(crate) fn writes(&self) -> Arc<dyn GraphWrites> {
        match self {
            Backend::Pg(s) => Arc::new(s.clone()),
            Backend::Sqlite(s) => Arc::new(s.clone()),
        }
    }

    /// Every outbox row as `(kind, payload)`, in order.
    pub(crate) async fn outbox(&self) -> Vec<(String, serde_json::Value)> {
        let rows: Vec<(String, String)> = match self {
            Backend::Pg(s) => sqlx::query_as("SELECT kind, payload::text FROM outbox ORDER BY id")
                .fetch_all(s.pool())
                .await
                .unwrap(),
            Backend::Sqlite(s) => sqlx::query_as("SELECT kind, payload FROM outbox ORDER BY id")
                .fetch_all(s.pool())
                .await
                .unwrap(),
        };
        rows.into_iter()
            .map(|(k, p)| (k, serde_json::from_str(&p).unwrap()))
            .collect()
    }

    /// Replaces the database's rows with `ds` and returns the store over it.
    pub(crate) async fn load(&self, ds: &Dataset) -> Arc<dyn Store> {
        let quiet = |_: Progress| {};
        match self {
            Backend::Pg(s) => {
                s.reset().await.expect("reset");
                s.load_dataset(ds, &quiet).await.expect("load fixture");
                Arc::new(s.clone())
            }
            Backend::Sqlite(s) => {
                s.reset().await.expect("reset");
                s.load_dataset(ds, &quiet).await.expect("load fixture");
                Arc::new(s.clone())
            }
        }
    }
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod pg {
            $(
                #[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
                async fn $name(pool: sqlx::PgPool) {
                    super::$name(super::Backend::Pg(quiver_store::PgStore::from_pool(pool))).await
                }
            )*
        }
        mod sqlite {
            $(
                #[sqlx::test(migrator = "quiver_store::SQLITE_MIGRATOR")]
                async fn $name(pool: sqlx::SqlitePool) {
                    super::$name(super::Backend::Sqlite(quiver_store::SqliteStore::from_pool(pool))).await
                }
            )*
        }
    };
}

contract!(
    loaders_return_exactly_the_existing_keys,
    loaders_keep_values_intact,
    empty_input_runs_no_statement,
    author_pages_walk_every_post_without_duplicates_or_gaps,
    home_pages_match_the_merged_feed_at_every_timeline_depth,
    viewer_graph_sees_follows_and_blocks_both_ways,
    follow_edges_return_exactly_the_existing_pairs,
    recent_posts_walk_every_post_newest_first,
    graph_writes_change_rows_and_record_one_event_per_change,
    graph_writes_keep_home_feeds_exact_at_every_timeline_depth,
    posts_are_created_into_every_timeline_and_deleted_by_their_author_only,
    orders_are_priced_from_wishes_and_keyed_for_replay,
    concurrent_orders_with_one_key_create_one_order,
    the_outbox_is_claimed_oldest_first_and_published_once,
    notifications_from_events_are_inserted_once_per_key,
    notifications_walk_newest_first_with_values_intact,
    user_posts_and_customer_orders_page_by_status,
    page_limits_out_of_range_are_rejected,
    housekeeping_prunes_what_outlived_its_retention_and_trims_timelines,
    a_late_fan_out_keeps_timelines_contiguous,
    celebrities_are_merged_at_read_time_not_fanned_out,
    follows_stop_at_the_limit,
);
