//! Skeleton and hydration: a page's ids (cut from a cached head when it holds them, else
//! read by keyset), its ready items in one batch and its distinct authors in one, by
//! position; blocked content dropped and short pages refilled.

use crate::engine::{Engine, Timings};
use crate::error::{EnrichError, Part};
use crate::items::{AuthorItem, FeedItem};
use futures::future::BoxFuture;
use quiver_model::{
    Cursor, DynLoader, FeedHead, FollowEdge, Page, PostId, PostList, PostRef, UserId, ViewerGraph,
};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument as _;

/// A viewer's home head merged with the heads of the celebrities it follows, with the
/// very heads it was merged from, as the caches shared them: while the caches hand out
/// the same ones (an L1 entry is one `Arc` until it is invalidated or refreshed), this is
/// still their merge, and a warm page reuses it instead of sorting them together again.
pub(crate) struct Merged {
    home: Arc<FeedHead>,
    celebrities: Vec<Option<Arc<FeedHead>>>,
    head: Arc<FeedHead>,
}

/// Merged heads kept, by viewer, weighed by their refs.
pub(crate) type Merges = quick_cache::sync::Cache<UserId, Arc<Merged>, ByRefs>;

/// How many refs the kept merged heads may hold together: about 8 MB of them. (The heads
/// they were merged from are mostly the caches' own, shared.)
pub(crate) const MERGED_REFS: u64 = 350_000;

/// Weighs a merged head by its refs.
#[derive(Clone, Copy, Default)]
pub(crate) struct ByRefs;

impl quick_cache::Weighter<UserId, Arc<Merged>> for ByRefs {
    fn weight(&self, _: &UserId, m: &Arc<Merged>) -> u64 {
        m.head.refs.len() as u64 + 1
    }
}

/// The merge of `home` with `celebrities` (an author gone has nothing to merge), from
/// `merges` when it was made from these very heads.
fn merge(
    merges: &Merges,
    viewer: UserId,
    home: &Arc<FeedHead>,
    celebrities: Vec<Option<Arc<FeedHead>>>,
) -> Arc<FeedHead> {
    let same = |a: &Option<Arc<FeedHead>>, b: &Option<Arc<FeedHead>>| match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (a, b) => a.is_none() && b.is_none(),
    };
    if let Some(m) = merges.get(&viewer)
        && Arc::ptr_eq(&m.home, home)
        && m.celebrities.len() == celebrities.len()
        && m.celebrities
            .iter()
            .zip(&celebrities)
            .all(|(a, b)| same(a, b))
    {
        return m.head.clone();
    }
    let head = Arc::new(home.merged(celebrities.iter().flatten().map(|h| &**h)));
    let kept = Merged {
        home: home.clone(),
        celebrities,
        head: head.clone(),
    };
    merges.insert(viewer, Arc::new(kept));
    head
}

/// A slice of a skeleton: refs in order, and whether more follow.
pub(crate) struct Chunk {
    pub(crate) refs: Vec<PostRef>,
    pub(crate) more: bool,
}

impl From<Page<PostRef>> for Chunk {
    fn from(p: Page<PostRef>) -> Self {
        Self {
            more: p.next.is_some(),
            refs: p.items,
        }
    }
}

/// A filled page: the items to show and where the next page starts (after this ref).
pub(crate) struct Filled {
    pub(crate) items: Vec<Arc<FeedItem>>,
    pub(crate) next: Option<PostRef>,
}

/// The distinct authors of a page, each with whether they follow the viewer, and for
/// each shown item the index of its author.
pub(crate) struct Authors {
    pub(crate) items: Vec<Option<Arc<AuthorItem>>>,
    pub(crate) followed_by: Vec<bool>,
    pub(crate) of_item: Vec<usize>,
}

/// What a feed page needs before it is presented.
pub(crate) struct Assembled {
    pub(crate) graph: Arc<ViewerGraph>,
    pub(crate) filled: Filled,
    pub(crate) authors: Authors,
}

pub(crate) type MoreFn<'a> =
    Box<dyn FnMut(PostRef) -> BoxFuture<'a, Result<Chunk, EnrichError>> + Send + 'a>;

impl Engine {
    /// The viewer's graph, shared; anonymous viewers have an empty one.
    pub(crate) async fn graph(
        &self,
        viewer: Option<UserId>,
    ) -> Result<Arc<ViewerGraph>, EnrichError> {
        let Some(v) = viewer else {
            return Ok(Arc::new(ViewerGraph::default()));
        };
        let graph = self
            .inner
            .sources
            .graphs
            .load_shared(&[v])
            .await
            .map_err(EnrichError::load(Part::Graph))?
            .pop()
            .flatten();
        Ok(match graph {
            Some(g) if g.viewer == Some(v) => g,
            Some(g) => Arc::new(ViewerGraph {
                viewer: Some(v),
                ..ViewerGraph::clone(&g)
            }),
            None => Arc::new(ViewerGraph {
                viewer: Some(v),
                ..ViewerGraph::default()
            }),
        })
    }

    /// A page's skeleton: cut from the cached head of `list` when it holds the page,
    /// else read from the skeleton source. Returns the head too, when there is one.
    pub(crate) async fn chunk(
        &self,
        list: PostList,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<(Chunk, Option<Arc<FeedHead>>), EnrichError> {
        let s = &self.inner.sources;
        let heads: Option<(&DynLoader<UserId, FeedHead>, UserId)> = match list {
            PostList::Home(key) => s.heads.as_ref().map(|h| (h, key)),
            PostList::Author(key) => s.author_heads.as_ref().map(|h| (h, key)),
            PostList::Recent => None,
        };
        let head = match heads {
            Some((heads, key)) => heads
                .load_shared(&[key])
                .await
                .map_err(EnrichError::load(Part::Skeleton))?
                .pop()
                .flatten(),
            None => None,
        };
        let head = match (head, list) {
            (Some(head), PostList::Home(viewer)) if !head.merge.is_empty() => {
                self.merge_celebrities(viewer, &head).await?
            }
            (head, _) => head,
        };
        if let Some(head) = &head
            && let Some(page) = head.page(after, limit as u32)
        {
            return Ok((page.into(), Some(head.clone())));
        }
        // Past the head, or without one: the store answers, and nothing fences it.
        quiver_model::fence::unfenced();
        let page = s
            .skeletons
            .posts(list, after, limit as u32)
            .await
            .map_err(EnrichError::load(Part::Skeleton))?;
        Ok((page.into(), head))
    }

    /// A home head with the heads of the celebrities it merges (none without author
    /// heads: then the store merges every page).
    async fn merge_celebrities(
        &self,
        viewer: UserId,
        head: &Arc<FeedHead>,
    ) -> Result<Option<Arc<FeedHead>>, EnrichError> {
        let Some(author_heads) = &self.inner.sources.author_heads else {
            return Ok(None);
        };
        let celebrities = author_heads
            .load_shared(&head.merge)
            .await
            .map_err(EnrichError::load(Part::Skeleton))?;
        Ok(Some(merge(&self.inner.merges, viewer, head, celebrities)))
    }

    pub(crate) async fn assemble_home(
        &self,
        viewer: UserId,
        after: Option<Cursor>,
        limit: usize,
        t: &mut Timings,
    ) -> Result<(Assembled, Option<Arc<FeedHead>>), EnrichError> {
        let start = Instant::now();
        let (graph, first) = async {
            lookups!(
                self.concurrent(),
                self.graph(Some(viewer)),
                self.chunk(PostList::Home(viewer), after, limit)
            )
        }
        .instrument(tracing::debug_span!("skeleton"))
        .await;
        let (graph, (first, head)) = (graph?, first?);
        t.skeleton += start.elapsed();
        let more = self.keyset_more(PostList::Home(viewer), limit);
        Ok((self.assemble(graph, first, limit, more, t).await?, head))
    }

    /// The next chunks of `feed` after a ref, for refills.
    pub(crate) fn keyset_more(&self, list: PostList, limit: usize) -> MoreFn<'_> {
        Box::new(move |last| {
            Box::pin(async move {
                self.chunk(list, Some(Cursor::after(&last)), limit)
                    .await
                    .map(|(chunk, _)| chunk)
            })
        })
    }

    /// Hydrates a page from its first chunk (refilling through `more`) and its authors.
    pub(crate) async fn assemble(
        &self,
        graph: Arc<ViewerGraph>,
        first: Chunk,
        limit: usize,
        more: MoreFn<'_>,
        t: &mut Timings,
    ) -> Result<Assembled, EnrichError> {
        let span = tracing::debug_span!("hydrate");
        let filled = self
            .fill(&graph, first, limit, more, t)
            .instrument(span.clone())
            .await?;
        let authors = self.authors_of(&graph, &filled, t).instrument(span).await?;
        Ok(Assembled {
            graph,
            filled,
            authors,
        })
    }

    pub(crate) async fn assemble_user_posts(
        &self,
        viewer: Option<UserId>,
        user: UserId,
        after: Option<Cursor>,
        limit: usize,
        t: &mut Timings,
    ) -> Result<(Assembled, Option<Arc<FeedHead>>), EnrichError> {
        let s = &self.inner.sources;
        let start = Instant::now();
        let (graph, exists, first) = async {
            lookups!(
                self.concurrent(),
                self.graph(viewer),
                async {
                    s.authors
                        .load_shared(&[user])
                        .await
                        .map_err(EnrichError::load(Part::Authors))
                },
                self.chunk(PostList::Author(user), after, limit),
            )
        }
        .instrument(tracing::debug_span!("skeleton"))
        .await;
        let (graph, exists, (first, head)) = (graph?, exists?, first?);
        t.skeleton += start.elapsed();
        if exists.iter().all(Option::is_none) || graph.hides(user) {
            return Err(EnrichError::NotFound("user"));
        }
        let more = self.keyset_more(PostList::Author(user), limit);
        Ok((self.assemble(graph, first, limit, more, t).await?, head))
    }

    /// Hydrates `first` and keeps the items the viewer may see; while the page is short
    /// and the skeleton has more, reads up to `refills` more chunks. The next page starts
    /// after the last item shown when the page overflowed, else after the last ref read.
    pub(crate) async fn fill(
        &self,
        graph: &ViewerGraph,
        first: Chunk,
        limit: usize,
        mut more: MoreFn<'_>,
        t: &mut Timings,
    ) -> Result<Filled, EnrichError> {
        let mut items: Vec<Arc<FeedItem>> = Vec::with_capacity(limit);
        let mut shown: Vec<PostRef> = Vec::with_capacity(limit);
        let mut chunk = first;
        let mut refills = 0;
        loop {
            let start = Instant::now();
            let ids: Vec<PostId> = chunk.refs.iter().map(|r| r.id).collect();
            let found = self
                .inner
                .sources
                .items
                .load_shared(&ids)
                .await
                .map_err(EnrichError::load(Part::Posts))?;
            t.hydrate += start.elapsed();
            for (r, item) in chunk.refs.iter().zip(found) {
                if let Some(item) = item
                    && !graph.hides(item.post.author_id)
                {
                    items.push(item);
                    shown.push(*r);
                }
            }
            let last = chunk.refs.last().copied();
            if shown.len() > limit {
                items.truncate(limit);
                shown.truncate(limit);
                let next = shown.last().copied();
                return Ok(Filled { items, next });
            }
            let next = last.filter(|_| chunk.more);
            if shown.len() == limit || refills == self.inner.config.refills {
                return Ok(Filled { items, next });
            }
            let Some(last) = next else {
                return Ok(Filled { items, next });
            };
            refills += 1;
            let start = Instant::now();
            chunk = more(last).await?;
            t.skeleton += start.elapsed();
        }
    }

    /// The authors of the shown items, in one batch, and whether each follows the viewer:
    /// from the viewer graph for the viewer's followees (every author of a home page), by
    /// one batch of follow edges for the others.
    pub(crate) async fn authors_of(
        &self,
        graph: &ViewerGraph,
        filled: &Filled,
        t: &mut Timings,
    ) -> Result<Authors, EnrichError> {
        let start = Instant::now();
        let mut distinct: Vec<UserId> = Vec::with_capacity(filled.items.len());
        let of_item: Vec<usize> = filled
            .items
            .iter()
            .map(|i| {
                let a = i.post.author_id;
                distinct.iter().position(|d| *d == a).unwrap_or_else(|| {
                    distinct.push(a);
                    distinct.len() - 1
                })
            })
            .collect();
        let s = &self.inner.sources;
        let (items, followed_by) = lookups!(
            self.concurrent(),
            async {
                s.authors
                    .load_shared(&distinct)
                    .await
                    .map_err(EnrichError::load(Part::Authors))
            },
            async {
                match graph.viewer {
                    Some(v) => self.followed_by(graph, v, &distinct).await,
                    None => Ok(vec![false; distinct.len()]),
                }
            },
        );
        t.hydrate += start.elapsed();
        Ok(Authors {
            items: items?,
            followed_by: followed_by?,
            of_item,
        })
    }

    /// Whether each of `authors` follows `viewer`: from the graph's mutuals for the
    /// viewer's followees, from one batch of follow edges for the rest (never for the
    /// viewer themself).
    pub(crate) async fn followed_by(
        &self,
        graph: &ViewerGraph,
        viewer: UserId,
        authors: &[UserId],
    ) -> Result<Vec<bool>, EnrichError> {
        let mut answers: Vec<bool> = Vec::with_capacity(authors.len());
        let mut ask: Vec<FollowEdge> = Vec::new();
        let mut asked: Vec<usize> = Vec::new();
        for (i, &a) in authors.iter().enumerate() {
            match graph.followed_by(a) {
                Some(known) => answers.push(known),
                None => {
                    answers.push(false);
                    if a != viewer {
                        ask.push(FollowEdge {
                            follower: a,
                            followee: viewer,
                        });
                        asked.push(i);
                    }
                }
            }
        }
        if !ask.is_empty() {
            let found = self
                .inner
                .sources
                .follows
                .load_shared(&ask)
                .await
                .map_err(EnrichError::load(Part::Relationships))?;
            for (i, edge) in asked.into_iter().zip(found) {
                answers[i] = edge.is_some();
            }
        }
        Ok(answers)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A head of posts `ids`, post `i` made at minute `i`, merging the heads of `merge`.
    pub(crate) fn head(ids: &[i64], merge: &[i64]) -> Arc<FeedHead> {
        let at = |m: i64| chrono::DateTime::from_timestamp(m * 60, 0).unwrap();
        Arc::new(FeedHead {
            refs: ids
                .iter()
                .map(|&i| PostRef {
                    id: PostId(i),
                    created_at: at(i),
                })
                .collect(),
            more: false,
            merge: merge.iter().map(|&u| UserId(u)).collect(),
        })
    }

    fn ids(h: &FeedHead) -> Vec<i64> {
        h.refs.iter().map(|r| r.id.0).collect()
    }

    #[test]
    fn a_merge_is_reused_only_while_its_heads_are_the_ones_it_was_made_from() {
        let merges = Merges::with_weighter(8, MERGED_REFS, ByRefs);
        let viewer = UserId(1);
        let home = head(&[9, 5, 1], &[7, 8]);
        let (c7, c8) = (head(&[8, 4], &[]), head(&[6], &[]));
        let first = merge(
            &merges,
            viewer,
            &home,
            vec![Some(c7.clone()), Some(c8.clone())],
        );
        assert_eq!(ids(&first), [9, 8, 6, 5, 4, 1]);
        let again = merge(
            &merges,
            viewer,
            &home,
            vec![Some(c7.clone()), Some(c8.clone())],
        );
        assert!(
            Arc::ptr_eq(&first, &again),
            "the same heads: the same merge"
        );

        // A celebrity posted: their head is a new one, and the merge shows the post.
        let c8_new = head(&[10, 6], &[]);
        let changed = merge(&merges, viewer, &home, vec![Some(c7.clone()), Some(c8_new)]);
        assert_eq!(ids(&changed), [10, 9, 8, 6, 5, 4, 1]);
        // A celebrity gone, or the viewer's own head changed: merged again.
        let gone = merge(&merges, viewer, &home, vec![Some(c7.clone()), None]);
        assert_eq!(ids(&gone), [9, 8, 5, 4, 1]);
        let home_new = head(&[11, 9, 5, 1], &[7, 8]);
        let own = merge(&merges, viewer, &home_new, vec![Some(c7), None]);
        assert_eq!(ids(&own), [11, 9, 8, 5, 4, 1]);
        // Another viewer with the same heads has a merge of their own.
        let other = merge(&merges, UserId(2), &home, vec![None, Some(c8)]);
        assert_eq!(ids(&other), [9, 6, 5, 1]);
    }
}
