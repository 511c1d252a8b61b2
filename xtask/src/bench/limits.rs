//! The machine's own limits besides the static body: pgbench on the cold page's
//! statements and redis-benchmark on the L2 page's MGETs.

use super::*;

/// The server's home head: how many entries a cold page's timeline statement reads (and
/// one more), `quiver serve`'s default `--home-head`.
const HOME_HEAD: u32 = 100;
/// Statements of one cold page.
const STATEMENTS: u32 = 8;

/// pgbench running the statements of one cold home-feed first page as one transaction,
/// one script per viewer of the fixture, chosen at random per transaction.
pub(crate) fn pgbench(db: &str, f: &Fixture, ph: &Phases) -> Result<Value> {
    let bin = services::which("pgbench")
        .or_else(|| services::postgres_bindir().map(|d| d.join("pgbench")))
        .filter(|p| p.is_file())
        .context("pgbench not found: install postgresql-contrib or the server package")?;
    let list = |v: &[i64]| v.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let mut files = Vec::new();
    for &v in &f.viewers {
        let page = services::psql_query(
            db,
            &format!(
                "SELECT t.post_id || ',' || p.author_id FROM home_timeline t JOIN posts p ON p.id = t.post_id
                 WHERE t.user_id = {v} ORDER BY t.created_at DESC, t.post_id DESC LIMIT 20"
            ),
        )?;
        let pairs: Vec<(i64, i64)> = page
            .lines()
            .filter_map(|l| {
                let (a, b) = l.trim().split_once(',')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            })
            .collect();
        let mut page_authors: Vec<i64> = pairs.iter().map(|p| p.1).collect();
        page_authors.sort_unstable();
        page_authors.dedup();
        let page_posts: Vec<i64> = pairs.iter().map(|p| p.0).collect();
        let (posts, authors) = (list(&page_posts), list(&page_authors));
        // The statements a cold first page runs (PostgreSQL's log of one, 2026-12-04): the
        // viewer's graph with its mutuals, the celebrities, the home head (its 100 entries
        // and one more, cut to pages later), then the page's posts, media, tags, authors and
        // their flags; "followed by" comes from the graph's mutuals.
        let script = format!(
            "SELECT ARRAY(SELECT followee_id FROM follows WHERE follower_id = {v}), ARRAY(SELECT f.followee_id FROM follows f JOIN follows back ON back.follower_id = f.followee_id AND back.followee_id = {v} WHERE f.follower_id = {v}), ARRAY(SELECT blocked_id FROM blocks WHERE blocker_id = {v}), ARRAY(SELECT blocker_id FROM blocks WHERE blocked_id = {v});
SELECT u.id FROM users u WHERE u.celebrity_from IS NOT NULL AND EXISTS (SELECT 1 FROM follows f WHERE f.follower_id = {v} AND f.followee_id = u.id) ORDER BY u.id;
SELECT post_id AS id, created_at FROM home_timeline WHERE user_id = {v} AND (created_at, post_id) < ('9999-12-31'::timestamptz, 9223372036854775807) ORDER BY created_at DESC, post_id DESC LIMIT {head};
SELECT id, author_id, kind, body, price_cents, currency, product_url, created_at FROM posts WHERE id = ANY('{{{posts}}}'::bigint[]);
SELECT id, post_id, kind, url, width, height, size_bytes, position FROM media WHERE post_id = ANY('{{{posts}}}'::bigint[]) ORDER BY post_id, position;
SELECT post_id, tag FROM post_tags WHERE post_id = ANY('{{{posts}}}'::bigint[]) ORDER BY post_id, tag;
SELECT id, handle, display_name, bio, avatar_url, created_at FROM users WHERE id = ANY('{{{authors}}}'::bigint[]);
SELECT id, verified, creator, private FROM users WHERE id = ANY('{{{authors}}}'::bigint[]);
",
            head = HOME_HEAD + 1
        );
        let file =
            std::env::temp_dir().join(format!("quiver-cold-page-{}-{v}.sql", std::process::id()));
        std::fs::write(&file, script)?;
        files.push(file);
    }
    let cpu0 = load::children_cpu();
    let out = Command::new(bin)
        .args([
            "-n",
            "-M",
            "prepared",
            "-j",
            "2",
            "-c",
            &ph.concurrency.to_string(),
            "-T",
        ])
        .arg(ph.peak.as_secs().to_string())
        .args(
            files
                .iter()
                .flat_map(|f| [std::ffi::OsStr::new("-f"), f.as_os_str()]),
        )
        .arg(db)
        .output()
        .context("cannot run pgbench")?;
    for f in &files {
        let _ = std::fs::remove_file(f);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps ="))
        .and_then(|l| l.split_whitespace().nth(2)?.parse::<f64>().ok())
        .with_context(|| {
            format!(
                "pgbench printed no tps: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let client_cpu = load::children_cpu() - cpu0;
    Ok(
        json!({"pages_per_second": tps, "statements_per_page": STATEMENTS, "viewers": files.len(),
        "client_cpu_seconds": client_cpu,
        "client_cores": client_cpu / ph.peak.as_secs_f64().max(1.0)}),
    )
}

/// redis-benchmark running the MGET the L2 path sends per cache batch (20 keys with
/// their version keys).
pub(crate) fn redis_benchmark(redis: &str, ph: &Phases) -> Result<Value> {
    let bin = services::which("redis-benchmark")
        .context("redis-benchmark not found (Debian: redis-tools)")?;
    let hp = redis
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:6379");
    let (host, port) = hp.rsplit_once(':').unwrap_or((hp, "6379"));
    let keys: Vec<String> = (0..20)
        .flat_map(|i| [format!("bench:post:{i}"), format!("bench:post:{i}:v")])
        .collect();
    let n = if ph.peak.as_secs() < 5 {
        50_000
    } else {
        200_000
    };
    let cpu0 = load::children_cpu();
    let out = Command::new(bin)
        .args([
            "-h",
            host,
            "-p",
            port,
            "-c",
            &ph.concurrency.to_string(),
            "-n",
            &n.to_string(),
        ])
        .args(["--csv", "MGET"])
        .args(&keys)
        .output()
        .context("cannot run redis-benchmark")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .filter(|l| l.contains("MGET"))
        .find_map(|l| l.split(',').nth(1)?.trim_matches('"').parse::<f64>().ok())
        .with_context(|| format!("redis-benchmark printed no rate: {text}"))?;
    let client_cpu = load::children_cpu() - cpu0;
    Ok(
        json!({"mget_per_second": rps, "keys_per_mget": 40, "mgets_per_page": 7,
        "client_cpu_seconds": client_cpu,
        "client_cpu_us_per_mget": client_cpu * 1e6 / n as f64}),
    )
}
