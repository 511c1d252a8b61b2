//! Bulk loading into SQLite: multi-row INSERTs, one transaction per table.

use super::{SqliteStore, to_micros};
use crate::StoreError;
use crate::seed::{Cell, Dataset, Progress, tables};
use std::time::{Duration as StdDuration, Instant};

/// Rows per INSERT statement: SQLite allows 32,766 bound variables per statement.
const SQLITE_ROWS_PER_INSERT: usize = 500;

impl SqliteStore {
    /// Loads `dataset` into an empty database with batched multi-row inserts, one
    /// transaction per table.
    pub async fn load_dataset(
        &self,
        ds: &Dataset,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Vec<(&'static str, u64, StdDuration)>, StoreError> {
        let mut report = Vec::new();
        let mut cells = Vec::new();
        for t in tables(ds) {
            let started = Instant::now();
            progress(Progress::Start {
                table: t.name,
                rows: t.rows as u64,
            });
            let mut tx = self.pool().begin().await?;
            for chunk_start in (0..t.rows).step_by(SQLITE_ROWS_PER_INSERT) {
                let end = (chunk_start + SQLITE_ROWS_PER_INSERT).min(t.rows);
                let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!(
                    "INSERT INTO {} {} ",
                    t.name, t.columns
                ));
                qb.push_values(chunk_start..end, |mut b, i| {
                    cells.clear();
                    (t.row)(i, &mut cells);
                    for cell in &cells {
                        match *cell {
                            Cell::Int(v) => b.push_bind(v),
                            Cell::Text(s) => b.push_bind(s.to_owned()),
                            Cell::Bool(v) => b.push_bind(v),
                            Cell::Time(t) => b.push_bind(to_micros(t)),
                            Cell::Null => b.push_bind(None::<i64>),
                        };
                    }
                });
                qb.build().execute(&mut *tx).await?;
                progress(Progress::Advance {
                    table: t.name,
                    rows: (end - chunk_start) as u64,
                });
            }
            tx.commit().await?;
            progress(Progress::Finish { table: t.name });
            report.push((t.name, t.rows as u64, started.elapsed()));
        }
        sqlx::query("ANALYZE").execute(self.pool()).await?;
        Ok(report)
    }

    /// Whether the data tables hold any user.
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)")
            .fetch_one(self.pool())
            .await?;
        Ok(!any)
    }

    /// Deletes every row of every data table (the schema stays).
    pub async fn reset(&self) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        for table in [
            "idempotency_keys",
            "home_timeline",
            "notifications",
            "order_items",
            "orders",
            "post_tags",
            "media",
            "posts",
            "blocks",
            "follows",
            "outbox",
            "users",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
