//! Home-feed skeletons from a cached head of each viewer's feed: the newest entries (a few
//! pages' worth) are one cache value per viewer, so a warm home page reads no PostgreSQL
//! at all. Pages the head cannot answer exactly (past its end) go to the store.
//!
//! A page cut from the head is the page the store would return, cursor included: the head
//! is the store's own first page of `len` entries, cut by the same keyset rule. The head
//! is forgotten everywhere whenever the timeline under it changes: by the writer for
//! their own posts and graph writes, and by the events for fan-out (every follower whose
//! timeline holds the new post) and for both ends of a follow, unfollow or block.

use crate::compose::StoreSkeletons;
use async_trait::async_trait;
use quiver_enrich::Skeletons;
use quiver_model::{
    Cursor, DynLoader, LoadError, Loader, OrderRef, OrderStatus, Page, PostRef, UserId,
};
use quiver_store::Store;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// The newest entries of a viewer's home feed, newest first, and whether more follow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeHead {
    pub refs: Vec<PostRef>,
    pub more: bool,
}

impl HomeHead {
    /// The page after `after` of `limit` entries, exactly as the store would cut it, or
    /// `None` when the head does not hold enough of the feed to say.
    pub fn page(&self, after: Option<Cursor>, limit: u32) -> Option<Page<PostRef>> {
        let limit = limit as usize;
        if limit == 0 {
            return None;
        }
        let start = after.map_or(0, |c| {
            self.refs
                .partition_point(|r| (r.created_at, r.id.0) >= (c.created_at, c.id))
        });
        let rest = &self.refs[start..];
        if rest.len() > limit || (rest.len() == limit && self.more) {
            let items = rest[..limit].to_vec();
            let next = items.last().map(Cursor::after);
            Some(Page { items, next })
        } else if !self.more {
            Some(Page {
                items: rest.to_vec(),
                next: None,
            })
        } else {
            None
        }
    }
}

/// Loads heads of `len` entries from the store: one first page per viewer, concurrently.
#[derive(Clone)]
pub struct HomeHeadLoader {
    pub store: Arc<dyn Store>,
    pub len: u32,
}

impl fmt::Debug for HomeHeadLoader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HomeHeadLoader")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Loader for HomeHeadLoader {
    type Key = UserId;
    type Value = HomeHead;

    async fn load_many(&self, keys: &[UserId]) -> Result<HashMap<UserId, HomeHead>, LoadError> {
        let heads = futures::future::try_join_all(keys.iter().map(|viewer| async move {
            let page = self.store.home_page(*viewer, None, self.len).await?;
            Ok::<_, quiver_store::StoreError>((
                *viewer,
                HomeHead {
                    more: page.next.is_some(),
                    refs: page.items,
                },
            ))
        }))
        .await
        .map_err(LoadError::wrap)?;
        Ok(heads.into_iter().collect())
    }
}

/// [`StoreSkeletons`] with home pages cut from cached heads where they can be.
pub struct HeadSkeletons {
    pub store: StoreSkeletons,
    pub heads: DynLoader<UserId, HomeHead>,
}

impl fmt::Debug for HeadSkeletons {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeadSkeletons").finish_non_exhaustive()
    }
}

#[async_trait]
impl Skeletons for HeadSkeletons {
    async fn home(
        &self,
        viewer: UserId,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<PostRef>, LoadError> {
        if let Some(head) = self.heads.load_one(&viewer).await?
            && let Some(page) = head.page(after, limit)
        {
            return Ok(page);
        }
        self.store.home(viewer, after, limit).await
    }

    async fn user_posts(
        &self,
        user: UserId,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<PostRef>, LoadError> {
        self.store.user_posts(user, after, limit).await
    }

    async fn recent(&self, after: Option<Cursor>, limit: u32) -> Result<Page<PostRef>, LoadError> {
        self.store.recent(after, limit).await
    }

    async fn customer_orders(
        &self,
        customer: UserId,
        status: Option<OrderStatus>,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Page<OrderRef>, LoadError> {
        self.store
            .customer_orders(customer, status, after, limit)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use quiver_model::PostId;

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
            .filter(|r| after.is_none_or(|c| (r.created_at, r.id.0) < (c.created_at, c.id)))
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
            let first = store_page(&feed, None, head_len);
            let head = HomeHead {
                more: first.next.is_some(),
                refs: first.items,
            };
            for limit in [1_u32, 3, 7, 20, 100] {
                // Walk the whole feed; every page the head answers must be the store's.
                let mut after = None;
                let mut answered = 0;
                loop {
                    let want = store_page(&feed, after, limit);
                    match head.page(after, limit) {
                        Some(got) => {
                            assert_eq!(got, want, "head {head_len}, limit {limit}");
                            answered += 1;
                        }
                        None => assert!(
                            head.more,
                            "a complete head answers everything (head {head_len})"
                        ),
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
    fn an_empty_feed_is_one_empty_page_and_a_zero_limit_goes_to_the_store() {
        let head = HomeHead {
            refs: Vec::new(),
            more: false,
        };
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
