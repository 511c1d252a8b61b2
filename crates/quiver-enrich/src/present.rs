//! Presentation: a feed page spliced from its items' stored fragments and each item's
//! viewer part (or, for the ablations, encoded again or whole through serde_json: the
//! same bytes).

use crate::engine::{Engine, Rendered, Timings};
use crate::error::Part;
use crate::hydrate::{Assembled, Authors};
use crate::items::{AuthorItem, FeedItem, encode_author, encode_post};
use quiver_codec::fragment::{AuthorFragment, PostFragment, SplicedItem, splice_page};
use quiver_codec::wire::ViewerWire;
use quiver_model::{UserId, ViewerGraph};
use std::time::Instant;

impl Engine {
    /// The fragments of an item and its author: the stored ones, or freshly encoded when
    /// reuse is off (the ablation).
    pub(crate) fn fragments(
        &self,
        item: &FeedItem,
        author: &AuthorItem,
    ) -> (PostFragment, AuthorFragment) {
        if self.inner.config.reuse_fragments {
            (item.fragment.clone(), author.fragment.clone())
        } else {
            (
                encode_post(&item.post, &item.media, &item.tags),
                encode_author(&author.user, &author.flags),
            )
        }
    }

    /// A feed page: fragments spliced with each item's viewer part (or, for the
    /// serializer ablation, the whole page through serde_json: the same bytes).
    pub(crate) fn present_feed(
        &self,
        a: &Assembled,
        next: Option<String>,
        seed: Option<u64>,
        t: &mut Timings,
    ) -> Rendered {
        let _span = tracing::debug_span!("present").entered();
        let start = Instant::now();
        // An author that vanished between the post and its profile is not shown.
        let shown: Vec<(&FeedItem, &AuthorItem, usize)> = a
            .filled
            .items
            .iter()
            .zip(&a.authors.of_item)
            .filter_map(|(item, &at)| Some((&**item, a.authors.items[at].as_deref()?, at)))
            .collect();
        let mut partial: Vec<Part> = Vec::new();
        for (item, _, _) in &shown {
            for p in &item.missing {
                if !partial.contains(p) {
                    partial.push(*p);
                }
            }
        }
        partial.sort_unstable();
        let names: Vec<&str> = partial.iter().map(|p| p.as_str()).collect();
        let viewer =
            |item: &FeedItem, at: usize| viewer_part(&a.graph, &a.authors, at, item.post.author_id);
        let body = if self.inner.config.serde_json_pages {
            serde_json_page(&shown, &viewer, next.clone(), seed, &names)
        } else if self.inner.config.reuse_fragments {
            let items: Vec<SplicedItem<'_>> = shown
                .iter()
                .map(|(item, author, at)| SplicedItem {
                    post: &item.fragment,
                    author: &author.fragment,
                    viewer: viewer(item, *at),
                })
                .collect();
            splice_page(&items, next.as_deref(), seed, &names)
        } else {
            let fragments: Vec<(PostFragment, AuthorFragment)> = shown
                .iter()
                .map(|(item, author, _)| self.fragments(item, author))
                .collect();
            let items: Vec<SplicedItem<'_>> = shown
                .iter()
                .zip(&fragments)
                .map(|((item, _, at), (post, author))| SplicedItem {
                    post,
                    author,
                    viewer: viewer(item, *at),
                })
                .collect();
            splice_page(&items, next.as_deref(), seed, &names)
        };
        t.present += start.elapsed();
        Rendered {
            body: body.into(),
            timings: *t,
            partial,
            ids: shown.iter().map(|(item, _, _)| item.post.id.0).collect(),
            next,
            seed,
            digest: None,
        }
    }
}

/// A feed page built as wire values and encoded by serde_json: the "before" of the
/// serializer ablation.
pub(crate) fn serde_json_page(
    shown: &[(&FeedItem, &AuthorItem, usize)],
    viewer: &dyn Fn(&FeedItem, usize) -> Option<ViewerWire>,
    next_page: Option<String>,
    seed: Option<u64>,
    partial: &[&str],
) -> Vec<u8> {
    use quiver_codec::wire::{AuthorWire, FeedItemWire, FeedPageWire, PostFieldsWire};
    let items = shown
        .iter()
        .map(|(item, author, at)| {
            let f = PostFieldsWire::new(&item.post, &item.media, &item.tags);
            FeedItemWire {
                id: f.id,
                kind: f.kind,
                body: f.body,
                created_at: f.created_at,
                media: f.media,
                tags: f.tags,
                wish: f.wish,
                author: AuthorWire::new(&author.user, &author.flags),
                viewer: viewer(item, *at),
            }
        })
        .collect();
    let page = FeedPageWire {
        items,
        next_page,
        seed,
        partial: partial.iter().map(|p| (*p).to_owned()).collect(),
    };
    serde_json::to_vec(&page).expect("wire values serialize")
}

/// The per-viewer part of an item by `author` (the page's author number `at`): `None`
/// for anonymous viewers.
pub(crate) fn viewer_part(
    graph: &ViewerGraph,
    authors: &Authors,
    at: usize,
    author: UserId,
) -> Option<ViewerWire> {
    graph.viewer.map(|_| ViewerWire {
        follows_author: graph.follows(author),
        followed_by_author: authors.followed_by[at],
    })
}
