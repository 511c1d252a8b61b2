//! The skeleton seam: ordered id lists by keyset (what a page is made of), and the cached
//! heads of feeds (a viewer's home feed, an author's posts, the window of recent posts)
//! that pages are cut from by the same keyset rule.

use crate::{Cursor, LoadError, OrderRef, OrderStatus, Page, PostRef, UserId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A keyset-ordered list of posts: what a post skeleton or a feed head is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PostList {
    /// Posts by the accounts this viewer follows and their own: the home feed.
    Home(UserId),
    /// Posts of one author.
    Author(UserId),
    /// All posts: the discovery feed's window.
    Recent,
}

/// The skeleton queries: ordered lists of ids, keyset-paginated on
/// `(created_at DESC, id DESC)`, with `next` set exactly when more rows follow. The store
/// implements it; the engine reads it.
#[async_trait]
pub trait Skeletons: Send + Sync {
    /// A page of `list`.
    async fn posts(
        &self,
        list: PostList,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<PostRef>, LoadError>;
    /// Orders of `customer`, optionally of one status.
    async fn customer_orders(
        &self,
        customer: UserId,
        status: Option<OrderStatus>,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<OrderRef>, LoadError>;
}

/// The newest entries of a feed, newest first, and whether more follow: the store's own
/// first page of some length, kept as one cached value so that pages inside it are cut
/// without a query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedHead {
    pub refs: Vec<PostRef>,
    pub more: bool,
    /// Authors whose posts belong to this feed but not to `refs` (a home feed's followed
    /// celebrities, merged at read time): pages come from [`FeedHead::merged`] with
    /// their heads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merge: Vec<UserId>,
}

impl From<Page<PostRef>> for FeedHead {
    fn from(page: Page<PostRef>) -> Self {
        Self {
            more: page.next.is_some(),
            refs: page.items,
            merge: Vec::new(),
        }
    }
}

/// A ref's keyset position, newest greatest.
fn position(r: &PostRef) -> (DateTime<Utc>, i64) {
    (r.created_at, r.id.0)
}

impl FeedHead {
    /// This head together with `others` (the heads of the authors it merges): the union
    /// of their feeds, each entry once, as far down as every head knows it. A complete
    /// head knows its whole feed; an incomplete one only down to its last entry, so the
    /// merged head stops at the newest such last entry and has `more` if any has.
    pub fn merged<'a>(&'a self, others: impl IntoIterator<Item = &'a FeedHead>) -> FeedHead {
        let heads: Vec<&FeedHead> = std::iter::once(self).chain(others).collect();
        let mut horizon = None;
        for h in heads.iter().filter(|h| h.more) {
            let Some(last) = h.refs.last().map(position) else {
                // Knows nothing, so nothing merged is certain.
                return FeedHead {
                    refs: Vec::new(),
                    more: true,
                    merge: Vec::new(),
                };
            };
            horizon = horizon.max(Some(last));
        }
        let mut refs: Vec<PostRef> = heads
            .iter()
            .flat_map(|h| h.refs.iter().copied())
            .filter(|r| horizon.is_none_or(|h| position(r) >= h))
            .collect();
        refs.sort_unstable_by_key(|r| std::cmp::Reverse(position(r)));
        refs.dedup_by_key(|r| r.id);
        FeedHead {
            refs,
            more: horizon.is_some(),
            merge: Vec::new(),
        }
    }

    /// The page after `after` of `limit` entries, exactly as the store would cut it
    /// (cursor included), or `None` when the head does not hold enough of the feed to say.
    pub fn page(&self, after: Option<Cursor>, limit: u32) -> Option<Page<PostRef>> {
        let rest = self.rest(after, limit)?;
        let limit = limit as usize;
        let (items, next) = if rest.len() > limit || (rest.len() == limit && self.more) {
            let items = rest[..limit].to_vec();
            let next = items.last().map(Cursor::after);
            (items, next)
        } else {
            (rest.to_vec(), None)
        };
        Some(Page { items, next })
    }

    /// The refs of the page after `after`, as [`FeedHead::page`] would cut it, without
    /// building the page.
    pub fn refs(&self, after: Option<Cursor>, limit: u32) -> Option<&[PostRef]> {
        let rest = self.rest(after, limit)?;
        Some(&rest[..rest.len().min(limit as usize)])
    }

    /// Everything after `after`, when it holds a whole page or the feed's end.
    fn rest(&self, after: Option<Cursor>, limit: u32) -> Option<&[PostRef]> {
        if limit == 0 {
            return None;
        }
        let start = after.map_or(0, |c| {
            self.refs
                .partition_point(|r| !c.precedes(r.created_at, r.id.0))
        });
        let rest = &self.refs[start..];
        // A whole page, or (a complete head) the feed's end.
        (rest.len() >= limit as usize || !self.more).then_some(rest)
    }
}

/// Which window of recent posts the discovery feed shuffles: the newest one, or the one
/// just before an anchor (later pages of a walk keep their first page's anchor). As a
/// cache key it reads `latest` or `{microseconds}:{id}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window(pub Option<Cursor>);

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("latest"),
            Some(c) => write!(f, "{}:{}", c.created_at.timestamp_micros(), c.id),
        }
    }
}

/// A text that is not a [`Window`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a window: {0:?}")]
pub struct ParseWindowError(String);

impl FromStr for Window {
    type Err = ParseWindowError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "latest" {
            return Ok(Self(None));
        }
        let bad = || ParseWindowError(s.to_owned());
        let (micros, id) = s.split_once(':').ok_or_else(bad)?;
        let created_at = micros
            .parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_micros)
            .ok_or_else(bad)?;
        let id = id.parse::<i64>().map_err(|_| bad())?;
        Ok(Self(Some(Cursor { created_at, id })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PostId;
    use chrono::{TimeZone, Utc};

    /// `n` refs, newest first, two sharing each timestamp (ties broken by id).
    fn refs(n: i64) -> Vec<PostRef> {
        (0..n)
            .map(|i| PostRef {
                id: PostId(1000 - i),
                created_at: Utc.timestamp_opt(1_000_000 - i / 2, 0).unwrap(),
            })
            .collect()
    }

    /// The store's rule: rows after the cursor, `limit + 1` fetched, `next` when more.
    fn store_page(all: &[PostRef], after: Option<Cursor>, limit: u32) -> Page<PostRef> {
        let mut rows: Vec<PostRef> = all
            .iter()
            .filter(|r| after.is_none_or(|c| c.precedes(r.created_at, r.id.0)))
            .take(limit as usize + 1)
            .copied()
            .collect();
        let next = (rows.len() > limit as usize).then(|| {
            rows.truncate(limit as usize);
            Cursor::after(rows.last().expect("a row"))
        });
        Page { items: rows, next }
    }

    #[test]
    fn pages_cut_from_the_head_equal_the_store_s_until_it_cannot_tell() {
        let feed = refs(57);
        for head_len in [1_u32, 10, 20, 56, 57, 100] {
            let head = FeedHead::from(store_page(&feed, None, head_len));
            for limit in [1_u32, 3, 7, 20, 100] {
                // Walk the whole feed; every page the head answers must be the store's.
                let mut after = None;
                let mut answered = 0;
                loop {
                    let want = store_page(&feed, after, limit);
                    match head.page(after, limit) {
                        Some(got) => {
                            assert_eq!(got, want, "head {head_len}, limit {limit}");
                            assert_eq!(
                                head.refs(after, limit),
                                Some(&got.items[..]),
                                "refs agree with the page"
                            );
                            answered += 1;
                        }
                        None => {
                            assert!(
                                head.more,
                                "a complete head answers everything (head {head_len})"
                            );
                            assert_eq!(head.refs(after, limit), None);
                        }
                    }
                    match want.next {
                        Some(c) => after = Some(c),
                        None => break,
                    }
                }
                if head_len as usize >= feed.len() || limit < head_len {
                    assert!(answered > 0, "head {head_len}, limit {limit}");
                }
            }
        }
    }

    #[test]
    fn a_merged_head_cuts_the_pages_of_the_union_of_its_feeds() {
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let all = refs(120);
        for round in 0..200 {
            // A home feed and up to three merged authors' feeds, overlapping at times
            // (a celebrity's older posts may sit in the timeline too).
            let feeds: Vec<Vec<PostRef>> = (0..1 + next(4))
                .map(|_| {
                    let keep = 2 + next(6);
                    all.iter().filter(|_| next(keep) == 0).copied().collect()
                })
                .collect();
            let mut union: Vec<PostRef> = feeds.iter().flatten().copied().collect();
            union.sort_unstable_by_key(|r| std::cmp::Reverse(position(r)));
            union.dedup();
            let heads: Vec<FeedHead> = feeds
                .iter()
                .map(|f| FeedHead::from(store_page(f, None, 1 + next(40) as u32)))
                .collect();
            let merged = heads[0].merged(&heads[1..]);
            for limit in [1_u32, 5, 20] {
                let mut after = None;
                loop {
                    let want = store_page(&union, after, limit);
                    match merged.page(after, limit) {
                        Some(got) => assert_eq!(got, want, "round {round}, limit {limit}"),
                        None => assert!(merged.more, "round {round}"),
                    }
                    match want.next {
                        Some(c) => after = Some(c),
                        None => break,
                    }
                }
            }
        }
    }

    #[test]
    fn windows_round_trip_through_their_key_text() {
        let anchored = Window(Some(Cursor {
            created_at: Utc.timestamp_opt(1_700_000_000, 123_456_000).unwrap(),
            id: i64::MIN,
        }));
        for w in [Window(None), anchored] {
            assert_eq!(w.to_string().parse::<Window>(), Ok(w));
        }
        for bad in ["", "latest:", "12", "a:b", "1:x", "x:1"] {
            assert!(bad.parse::<Window>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_empty_feed_is_one_empty_page_and_a_zero_limit_goes_to_the_store() {
        let head = FeedHead::default();
        assert_eq!(
            head.page(None, 20),
            Some(Page {
                items: Vec::new(),
                next: None
            })
        );
        assert_eq!(head.page(None, 0), None);
    }
}
