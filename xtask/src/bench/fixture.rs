//! The viewers, customers, users and tokens the scenarios use, picked from the seeded
//! data, and the feed pages each viewer walks.

use super::*;

/// The viewers and ids the scenarios use, picked from the seeded data.
pub(crate) struct Fixture {
    /// A fixed set of viewers spread over the follow graph: the first of each equal slice
    /// of everyone who follows at least ten accounts, by followee count (so the one who
    /// follows the most comes first).
    pub(crate) viewers: Vec<i64>,
    /// Customers with active orders, most orders first.
    pub(crate) customers: Vec<i64>,
    /// Profiles to read and accounts to follow.
    pub(crate) users: Vec<i64>,
    /// Bearer tokens of every viewer and customer.
    pub(crate) tokens: BTreeMap<i64, String>,
    /// Per viewer, the paths of their first feed pages, each with the cursor of the one
    /// before, as a client following `next_page` sends them.
    pub(crate) feed_pages: BTreeMap<i64, Vec<String>>,
    /// The mean body size of those pages, in bytes: the size of the static body every
    /// scenario's CPU is compared with.
    pub(crate) page_bytes: f64,
}

/// How many of each viewer's first feed pages the feed scenarios cycle through.
const FEED_PAGES: usize = 5;

impl Fixture {
    pub(crate) fn pick(db: &str, bin: &Path, viewers: usize) -> Result<Self> {
        let ids = |sql: &str| -> Result<Vec<i64>> {
            let v: Vec<i64> = services::psql_query(db, sql)?
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if v.is_empty() {
                bail!("no row for {sql}");
            }
            Ok(v)
        };
        // Slice 1 starts with whoever follows the most accounts.
        let picked = ids(&format!(
            "SELECT DISTINCT ON (slice) follower_id FROM (
               SELECT follower_id, n, ntile({viewers}) OVER (ORDER BY n DESC, follower_id) AS slice
               FROM (SELECT follower_id, count(*) AS n FROM follows GROUP BY follower_id
                     HAVING count(*) >= 10) c) s
             ORDER BY slice, n DESC, follower_id"
        ))?;
        let customers = ids(&format!(
            "SELECT customer_id FROM orders WHERE status = 'active'
             GROUP BY customer_id ORDER BY count(*) DESC, customer_id LIMIT {viewers}"
        ))?;
        let users = ids("SELECT id FROM users ORDER BY id LIMIT 500")?;
        let tokens = picked
            .iter()
            .chain(&customers)
            .map(|u| Ok((*u, mint(bin, *u)?)))
            .collect::<Result<_>>()?;
        Ok(Self {
            viewers: picked,
            customers,
            users,
            tokens,
            feed_pages: BTreeMap::new(),
            page_bytes: 0.0,
        })
    }

    /// One stream per viewer, sending `paths(viewer)` with the viewer's token; equal shares.
    pub(crate) fn as_viewers(&self, paths: impl Fn(i64) -> Vec<String>) -> Vec<Stream> {
        self.viewers
            .iter()
            .map(|v| Stream::get(Some(*v), paths(*v)))
            .collect()
    }

    /// Records each viewer's first feed pages as `server` serves them, and their mean
    /// body size.
    pub(crate) fn record_feed_pages(&mut self, server: &Server) -> Result<()> {
        let mut bytes = Vec::new();
        for v in self.viewers.clone() {
            let (paths, sizes) = feed_pages(server, &self.tokens[&v], FEED_PAGES)?;
            self.feed_pages.insert(v, paths);
            bytes.extend(sizes);
        }
        self.page_bytes = bytes.iter().sum::<usize>() as f64 / bytes.len().max(1) as f64;
        Ok(())
    }

    /// Every viewer walking their own first feed pages.
    pub(crate) fn feeds(&self) -> Vec<Stream> {
        self.as_viewers(|v| self.feed_pages[&v].clone())
    }
}

/// Walks `pages` pages of the feed with `token`, returning each page's path and body size.
pub(crate) fn feed_pages(
    server: &Server,
    token: &str,
    pages: usize,
) -> Result<(Vec<String>, Vec<usize>)> {
    let mut paths = vec!["/api/v1/feed?limit=20".to_owned()];
    let mut bytes = Vec::new();
    loop {
        let out = Command::new("curl")
            .args(["-sf", "-H", &format!("Authorization: Bearer {token}")])
            .arg(format!(
                "http://{}{}",
                server.api,
                paths.last().expect("one")
            ))
            .output()
            .context("cannot run curl")?;
        bytes.push(out.stdout.len());
        if paths.len() >= pages {
            break;
        }
        let page: Value = serde_json::from_slice(&out.stdout).context("the feed answers json")?;
        match page["next_page"].as_str() {
            Some(c) => paths.push(format!("/api/v1/feed?limit=20&cursor={c}")),
            None => break,
        }
    }
    Ok((paths, bytes))
}
