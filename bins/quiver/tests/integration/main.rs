//! The `quiver` binary as a user runs it: `migrate` and `seed` on the embedded SQLite
//! default and on PostgreSQL; `serve` and `token` in `serve.rs`.

mod deploy;
mod docs;
mod events;
mod serve;
mod topology;
mod traces;

use sqlx::{Connection, Row, SqliteConnection};
use std::path::{Path, PathBuf};

/// A program a test needs: the path in `env` (as `cargo xtask test` sets it, installing the
/// package when it may), else `name` on PATH or in /usr/sbin; none fails the test naming
/// the Debian `package` to install.
pub(crate) fn tool(env: &str, name: &str, package: &str) -> PathBuf {
    std::env::var_os(env)
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .chain([PathBuf::from("/usr/sbin")])
                .map(|d| d.join(name))
                .find(|p| p.exists())
        })
        .unwrap_or_else(|| {
            panic!(
                "this test needs {name}: install Debian's {package} package \
                 (`cargo xtask test` installs it when it may)"
            )
        })
}
use std::process::{Command, Output};

fn quiver(args: &[&str], database_url: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("quiver runs")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "quiver failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every row of every data table, as text, in key order.
async fn dump(path: &Path) -> Vec<String> {
    let mut conn = SqliteConnection::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    let mut out = Vec::new();
    for table in [
        "users",
        "follows",
        "blocks",
        "posts",
        "media",
        "post_tags",
        "orders",
        "order_items",
        "notifications",
        "home_timeline",
    ] {
        let sql = format!("SELECT * FROM {table}");
        for row in sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut conn)
            .await
            .unwrap()
        {
            let cells: Vec<String> = (0..row.columns().len())
                .map(|i| match row.try_get::<Option<i64>, _>(i) {
                    Ok(v) => format!("{v:?}"),
                    Err(_) => format!("{:?}", row.get::<Option<String>, _>(i)),
                })
                .collect();
            out.push(format!("{table}: {}", cells.join("|")));
        }
    }
    // Row order on disk is not part of the promise; contents are.
    out.sort_unstable();
    out
}

#[tokio::test]
async fn seed_is_deterministic_and_refuses_to_overwrite_without_reset() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    let args = [
        "seed",
        "--users",
        "150",
        "--posts-per-user",
        "5",
        "--seed",
        "9",
    ];
    let summary = ok(quiver(&args, &format!("sqlite:{}", a.display())));
    assert!(summary.contains("total (load)"), "{summary}");
    ok(quiver(&args, &format!("sqlite:{}", b.display())));
    let (rows_a, rows_b) = (dump(&a).await, dump(&b).await);
    assert!(rows_a.len() > 1000, "{} rows", rows_a.len());
    assert!(rows_a.iter().any(|r| r.starts_with("home_timeline: ")));
    assert_eq!(rows_a, rows_b, "the same seed must give the same rows");

    // A different seed gives different rows.
    let c = dir.path().join("c.db");
    let other = [
        "seed",
        "--users",
        "150",
        "--posts-per-user",
        "5",
        "--seed",
        "10",
    ];
    ok(quiver(&other, &format!("sqlite:{}", c.display())));
    assert_ne!(rows_a, dump(&c).await);

    // Seeding a non-empty database needs --reset, and --reset replaces the rows.
    let out = quiver(&other, &format!("sqlite:{}", a.display()));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --reset"));
    let mut reset = other.to_vec();
    reset.push("--reset");
    ok(quiver(&reset, &format!("sqlite:{}", a.display())));
    assert_eq!(dump(&a).await, dump(&c).await);
}

#[test]
fn demo_seed_creates_the_embedded_database_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["seed", "--demo"])
        .env_remove("DATABASE_URL")
        .current_dir(dir.path())
        .output()
        .unwrap();
    ok(out);
    assert!(dir.path().join("quiver-demo.db").exists());
}

#[test]
fn bad_database_urls_get_clear_errors() {
    let out = quiver(&["migrate"], "mysql://localhost/x");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported database url"), "{err}");
    let out = quiver(&["migrate"], "postgres://nobody@127.0.0.1:1/none");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to postgresql"), "{err}");
}

#[test]
fn migrate_and_seed_work_on_postgresql() {
    let admin = quiver_testkit::database_url();
    let name = format!("quiver_bin_test_{}", std::process::id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
    });
    let base = admin.rsplit_once('/').unwrap().0;
    let url = format!("{base}/{name}");
    ok(quiver(&["migrate"], &url));
    let summary = ok(quiver(
        &["seed", "--users", "300", "--posts-per-user", "4"],
        &url,
    ));
    assert!(summary.contains("home_timeline"), "{summary}");
    let users: i64 = rt.block_on(async {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let n = sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let mut admin = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        n
    });
    assert_eq!(users, 300);
}
