//! What the bench runs: each scenario and ablation as server flags, a binary and the
//! streams the load sends.

use super::*;

/// Which build of the server a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Binary {
    /// The release build (mimalloc, no profile).
    Default,
    /// The release build with the system allocator (the allocator ablation).
    SystemAllocator,
    /// The release build optimized with the profile of `cargo xtask pgo` (the PGO ablation).
    Pgo,
    /// The release build with every debug-level span compiled out (the traces ablation).
    Untraced,
}

/// One measured configuration: server flags and the streams the load sends.
pub(crate) struct Run {
    pub(crate) name: String,
    /// `scenario` (compared to a limit) or `ablation:<name>:<before|after>`.
    pub(crate) group: String,
    pub(crate) flags: Vec<String>,
    pub(crate) redis: bool,
    pub(crate) binary: Binary,
    pub(crate) streams: Vec<Stream>,
    /// Whether to run the fixed-rate phase (latency percentiles).
    pub(crate) at_rate: bool,
}

impl Run {
    pub(crate) fn new(name: &str, streams: Vec<Stream>) -> Self {
        Self {
            name: name.to_owned(),
            group: "scenario".to_owned(),
            flags: Vec::new(),
            redis: true,
            binary: Binary::Default,
            streams,
            at_rate: true,
        }
    }
    pub(crate) fn flags(mut self, flags: &[&str]) -> Self {
        self.flags = flags.iter().map(|f| (*f).to_owned()).collect();
        self
    }
    pub(crate) fn ablation(mut self, name: &str, side: &str) -> Self {
        self.group = format!("ablation:{name}:{side}");
        self.name = format!("{name} {side}");
        self.at_rate = false;
        self
    }
    /// Whether `after` is the other side of this run's ablation (this one before).
    pub(crate) fn pairs_with(&self, after: &Run) -> bool {
        self.group
            .strip_suffix(":before")
            .is_some_and(|g| after.group.strip_suffix(":after") == Some(g))
    }
    pub(crate) fn writes(&self) -> bool {
        self.streams.iter().any(|s| s.kind == Kind::Write)
    }
}

/// Each viewer in `by` writing as themselves: a post, or follows of `f.users`.
pub(crate) fn writers(f: &Fixture, by: &[i64], post: bool, weight: f64) -> Vec<Stream> {
    by.iter()
        .map(|v| {
            let (method, paths, body, expect): (_, _, _, &'static [u16]) = if post {
                (
                    "POST",
                    vec!["/api/v1/posts".to_owned()],
                    Some(
                        r#"{"kind": "post", "body": "a bench post", "tags": ["bench"]}"#.to_owned(),
                    ),
                    &[201],
                )
            } else {
                (
                    "PUT",
                    f.users
                        .iter()
                        .filter(|u| *u != v)
                        .map(|u| format!("/api/v1/users/{u}/follow"))
                        .collect(),
                    None,
                    // A follow that exists already is refused with 409, by design.
                    &[204, 409],
                )
            };
            Stream {
                kind: Kind::Write,
                user: Some(*v),
                method,
                paths,
                body,
                headers: Vec::new(),
                weight,
                expect,
            }
        })
        .collect()
}

/// Every run, with the build ablations of the variants in `built`.
pub(crate) fn scenarios(f: &Fixture, quick: bool, built: &[Binary]) -> Vec<Run> {
    let feeds = f.feeds();
    let profiles: Vec<String> = f
        .users
        .iter()
        .map(|u| format!("/api/v1/users/{u}"))
        .collect();
    let user_posts: Vec<String> = f
        .users
        .iter()
        .map(|u| format!("/api/v1/users/{u}/posts?limit=20"))
        .collect();
    // The mixed scenario: 95 % of requests are every viewer reading their feed, 5 %
    // writes, half posts and half follows, each by two of the viewers.
    let mut mixed = feeds.clone();
    let share = 0.95 / mixed.len() as f64;
    mixed.iter_mut().for_each(|s| s.weight = share);
    let n = f.viewers.len();
    let by: Vec<i64> = f.viewers.iter().rev().take(4).copied().collect();
    let (post_by, follow_by) = by.split_at(by.len() / 2);
    let wshare = |k: &[i64]| 0.025 / k.len().max(1) as f64;
    mixed.extend(writers(f, post_by, true, wshare(post_by)));
    mixed.extend(writers(f, follow_by, false, wshare(follow_by)));
    // Reads first, then the ablations (also reads), and the scenarios that write last, so
    // that every read sees the seeded data and the cursors recorded from it.
    let mut runs = vec![
        Run::new("warm", feeds.clone()),
        // The same pages revalidated: every answer a 304 without a body (`*` matches
        // whatever the current tag is; the server renders and hashes the page either way).
        Run::new(
            "warm 304",
            feeds
                .iter()
                .cloned()
                .map(|mut s| {
                    s.headers.push(("If-None-Match", "*"));
                    s.expect = &[304];
                    s
                })
                .collect(),
        ),
        Run::new("l2", feeds.clone()).flags(&["--l1-mib", "0"]),
        Run::new("cold", feeds.clone()).flags(&["--no-cache"]),
        Run::new(
            "discover",
            f.as_viewers(|_| vec!["/api/v1/feed/discover?limit=20&seed=7".to_owned()]),
        ),
        Run::new("profile", f.as_viewers(|_| profiles.clone())),
        Run::new("user posts", f.as_viewers(|_| user_posts.clone())),
        Run::new(
            "orders",
            f.customers
                .iter()
                .map(|c| {
                    Stream::get(
                        Some(*c),
                        vec![format!("/api/v1/customers/{c}/orders?status=active")],
                    )
                })
                .collect(),
        ),
    ];
    let writes = [
        Run::new("mixed", mixed),
        Run::new("write: create post", writers(f, &f.viewers, true, 1.0)),
        Run::new(
            "write: follow",
            writers(f, &f.viewers[..n.min(8)], false, 1.0),
        ),
    ];
    // Ablations: the same feed reads, the optimization off ("before") and on ("after"),
    // each with finished pages off on both sides (a page served again would skip what
    // they measure), except the finished pages' own.
    let ablate = |name: &str, before: &[&'static str], after: &[&'static str]| {
        let pages_off = |flags: &[&'static str]| -> Vec<&'static str> {
            let mut f = flags.to_vec();
            if name != "finished pages" {
                f.extend(["--finished-pages-mib", "0"]);
            }
            f
        };
        [
            Run::new(name, feeds.clone())
                .flags(&pages_off(before))
                .ablation(name, "before"),
            Run::new(name, feeds.clone())
                .flags(&pages_off(after))
                .ablation(name, "after"),
        ]
    };
    runs.extend(ablate(
        "finished pages",
        &["--finished-pages-mib", "0"],
        &[],
    ));
    runs.extend(ablate("home heads", &["--home-head", "0"], &[]));
    runs.extend(ablate("L1 cache", &["--l1-mib", "0"], &[]));
    runs.extend(ablate(
        "L2 cache",
        &["--l1-mib", "0", "--no-cache"],
        &["--l1-mib", "0"],
    ));
    runs.extend(ablate("fragments", &["--no-fragments"], &[]));
    runs.extend(ablate("serializer", &["--serializer", "serde-json"], &[]));
    if !quick {
        runs.extend(ablate(
            "coalescing",
            &["--no-cache", "--no-coalesce"],
            &["--no-cache"],
        ));
        // Prefetch warms the L1, so it is measured with one (without an L1 it is off).
        runs.extend(ablate("prefetch", &["--prefetch-workers", "0"], &[]));
    }
    // Ablations of the build, for each variant that was built: the same reads on the
    // default binary and on the variant (the system allocator, no trace spans at all
    // against traces off, PGO).
    for (name, before, after) in [
        ("allocator", Binary::SystemAllocator, Binary::Default),
        ("traces off", Binary::Untraced, Binary::Default),
        ("PGO", Binary::Default, Binary::Pgo),
    ] {
        let variant = if before == Binary::Default {
            after
        } else {
            before
        };
        if !built.contains(&variant) {
            continue;
        }
        for (side, binary) in [("before", before), ("after", after)] {
            let mut run = Run::new(name, feeds.clone()).ablation(name, side);
            run.binary = binary;
            runs.push(run);
        }
    }
    runs.extend(writes);
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ablations_sides_pair_up_and_nothing_else_does() {
        let before = Run::new("x", Vec::new()).ablation("x", "before");
        let after = Run::new("x", Vec::new()).ablation("x", "after");
        let other = Run::new("y", Vec::new()).ablation("y", "after");
        assert!(before.pairs_with(&after));
        assert!(!after.pairs_with(&before));
        assert!(!before.pairs_with(&other));
        assert!(!Run::new("warm", Vec::new()).pairs_with(&after));
    }
}
