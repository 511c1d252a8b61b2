//! Bulk loading into PostgreSQL: `COPY` in text format into a database whose foreign keys
//! and secondary indexes are dropped for the load and rebuilt after it, in one transaction.

use super::PgStore;
use crate::StoreError;
use crate::seed::{Cell, Dataset, Progress, tables};
use std::fmt::Write as _;
use std::time::{Duration as StdDuration, Instant};

/// Appends a text value in COPY text format, escaping backslash, tab and line breaks.
fn copy_text(buf: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => buf.push_str("\\\\"),
            '\t' => buf.push_str("\\t"),
            '\n' => buf.push_str("\\n"),
            '\r' => buf.push_str("\\r"),
            c => buf.push(c),
        }
    }
}

/// Appends one row as a COPY text line: tab-separated, `\N` for NULL.
fn copy_line(buf: &mut String, cells: &[Cell<'_>]) {
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            buf.push('\t');
        }
        match *cell {
            Cell::Int(v) => {
                let _ = write!(buf, "{v}");
            }
            Cell::Text(s) => copy_text(buf, s),
            Cell::Bool(v) => buf.push(if v { 't' } else { 'f' }),
            Cell::Time(t) => {
                let _ = write!(buf, "{}", t.format("%Y-%m-%d %H:%M:%S%.6f+00"));
            }
            Cell::Null => buf.push_str("\\N"),
        }
    }
    buf.push('\n');
}

const COPY_CHUNK_ROWS: usize = 20_000;

impl PgStore {
    /// Loads `dataset` with `COPY` into an empty database (see [`PgStore::reset`]), then
    /// moves the identity sequences past the loaded ids, analyzes and vacuums the tables.
    ///
    /// Follows PostgreSQL's advice for populating a database: foreign keys and secondary
    /// indexes are dropped, the rows copied, then the indexes built and the keys validated
    /// in bulk, all in one transaction, so a failure leaves the database as it was. Per-row
    /// foreign-key triggers were 73 % of the load time of `home_timeline` on this machine.
    pub async fn load_dataset(
        &self,
        ds: &Dataset,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Vec<(&'static str, u64, StdDuration)>, StoreError> {
        let tables = tables(ds);
        let names: Vec<String> = tables.iter().map(|t| t.name.to_owned()).collect();
        let mut tx = self.pool().begin().await?;
        let foreign_keys: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT conrelid::regclass::text, conname::text, pg_get_constraintdef(oid)
             FROM pg_constraint
             WHERE contype = 'f' AND conrelid::regclass::text = ANY($1)",
        )
        .bind(&names)
        .fetch_all(&mut *tx)
        .await?;
        let indexes: Vec<(String, String)> = sqlx::query_as(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
             FROM pg_index i
             WHERE i.indrelid::regclass::text = ANY($1)
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
        )
        .bind(&names)
        .fetch_all(&mut *tx)
        .await?;
        for (table, name, _) in &foreign_keys {
            let sql = format!("ALTER TABLE {table} DROP CONSTRAINT {name}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await?;
        }
        for (name, _) in &indexes {
            let sql = format!("DROP INDEX {name}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await?;
        }

        let mut report = Vec::new();
        let mut buf = String::with_capacity(4 << 20);
        let mut cells = Vec::new();
        for t in &tables {
            let started = Instant::now();
            progress(Progress::Start {
                table: t.name,
                rows: t.rows as u64,
            });
            let statement = format!("COPY {} {} FROM STDIN", t.name, t.columns);
            let mut copy = tx.copy_in_raw(&statement).await?;
            for chunk_start in (0..t.rows).step_by(COPY_CHUNK_ROWS) {
                buf.clear();
                let end = (chunk_start + COPY_CHUNK_ROWS).min(t.rows);
                for i in chunk_start..end {
                    cells.clear();
                    (t.row)(i, &mut cells);
                    copy_line(&mut buf, &cells);
                }
                copy.send(buf.as_bytes()).await?;
                progress(Progress::Advance {
                    table: t.name,
                    rows: (end - chunk_start) as u64,
                });
            }
            let rows = copy.finish().await?;
            progress(Progress::Finish { table: t.name });
            report.push((t.name, rows, started.elapsed()));
        }

        let started = Instant::now();
        let constraints = indexes.len() + foreign_keys.len();
        progress(Progress::Start {
            table: "indexes+keys",
            rows: constraints as u64,
        });
        for (_, def) in &indexes {
            sqlx::raw_sql(sqlx::AssertSqlSafe(def.clone()))
                .execute(&mut *tx)
                .await?;
            progress(Progress::Advance {
                table: "indexes+keys",
                rows: 1,
            });
        }
        for (table, name, def) in &foreign_keys {
            let sql = format!("ALTER TABLE {table} ADD CONSTRAINT {name} {def}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await?;
            progress(Progress::Advance {
                table: "indexes+keys",
                rows: 1,
            });
        }
        progress(Progress::Finish {
            table: "indexes+keys",
        });
        tx.commit().await?;
        report.push(("indexes+keys", 0, started.elapsed()));

        sqlx::raw_sql(
            "SELECT setval(pg_get_serial_sequence('users', 'id'), COALESCE(max(id), 0) + 1, false) FROM users;
             SELECT setval(pg_get_serial_sequence('posts', 'id'), COALESCE(max(id), 0) + 1, false) FROM posts;
             SELECT setval(pg_get_serial_sequence('media', 'id'), COALESCE(max(id), 0) + 1, false) FROM media;
             SELECT setval(pg_get_serial_sequence('orders', 'id'), COALESCE(max(id), 0) + 1, false) FROM orders;
             SELECT setval(pg_get_serial_sequence('notifications', 'id'), COALESCE(max(id), 0) + 1, false) FROM notifications;
             ANALYZE;",
        )
        .execute(self.pool())
        .await?;
        // Vacuumed once, as a database in service would have been: until its visibility
        // map is set every index-only scan reads the heap as well (5,000 heap fetches for
        // one medium viewer's followees), and autovacuum would do it later, mid-bench.
        // The names are this crate's own tables.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("VACUUM {}", names.join(", "))))
            .execute(self.pool())
            .await?;
        Ok(report)
    }

    /// Whether the data tables hold any user.
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        let any = sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM users) AS "any!""#)
            .fetch_one(self.pool())
            .await?;
        Ok(!any)
    }

    /// Deletes every row of every data table (the schema stays).
    pub async fn reset(&self) -> Result<(), StoreError> {
        sqlx::raw_sql(
            "TRUNCATE users, follows, blocks, posts, media, post_tags, orders, order_items,
                      notifications, outbox, home_timeline, idempotency_keys RESTART IDENTITY",
        )
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_lines_escape_the_format_specials_and_mark_nulls() {
        let mut b = String::new();
        copy_line(
            &mut b,
            &[
                Cell::Text("a\tb\\c\nd"),
                Cell::Null,
                Cell::Int(-3),
                Cell::Bool(true),
            ],
        );
        assert_eq!(b, "a\\tb\\\\c\\nd\t\\N\t-3\tt\n");
    }
}
