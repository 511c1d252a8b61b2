//! Pre-encoded fragments and page splicing: entities are encoded once (and cached), and a
//! page is assembled by copying their bytes into one pre-sized buffer, with only the small
//! per-viewer part written per request. The result is the same JSON as encoding the whole
//! [`FeedPageWire`](crate::wire::FeedPageWire) at once (tested with generated inputs).
//! [`splice_post`] does the same for one post with its `partial` list.

use crate::wire::{AuthorWire, PostFieldsWire, ViewerWire};
use std::io::Write as _;
use std::sync::Arc;

/// A post's fields encoded once, without the enclosing braces:
/// `"id":…,"kind":…,…,"wish":…`. Cheap to clone (shared bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostFragment(Arc<[u8]>);

/// An author encoded once, as a complete JSON object. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorFragment(Arc<[u8]>);

impl PostFragment {
    /// Encodes `fields` (the post-owned part of a feed item).
    pub fn encode(fields: &PostFieldsWire) -> Self {
        let object = serde_json::to_vec(fields).expect("wire types always serialize");
        // `{…}` → `…`: the item around it adds the braces and the other fields.
        Self(object[1..object.len() - 1].into())
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl AuthorFragment {
    /// Encodes `author`.
    pub fn encode(author: &AuthorWire) -> Self {
        Self(
            serde_json::to_vec(author)
                .expect("wire types always serialize")
                .into(),
        )
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// One feed item to splice: two cached fragments and the per-viewer part.
#[derive(Clone, Copy, Debug)]
pub struct SplicedItem<'a> {
    pub post: &'a PostFragment,
    pub author: &'a AuthorFragment,
    pub viewer: Option<ViewerWire>,
}

fn viewer_json(v: Option<ViewerWire>) -> &'static [u8] {
    match v {
        None => b"null",
        Some(ViewerWire {
            follows_author: false,
            followed_by_author: false,
        }) => br#"{"follows_author":false,"followed_by_author":false}"#,
        Some(ViewerWire {
            follows_author: true,
            followed_by_author: false,
        }) => br#"{"follows_author":true,"followed_by_author":false}"#,
        Some(ViewerWire {
            follows_author: false,
            followed_by_author: true,
        }) => br#"{"follows_author":false,"followed_by_author":true}"#,
        Some(ViewerWire {
            follows_author: true,
            followed_by_author: true,
        }) => br#"{"follows_author":true,"followed_by_author":true}"#,
    }
}

/// Bytes a page adds around its fragments, per item and in total, for pre-sizing.
const ITEM_OVERHEAD: usize = 64;
const PAGE_OVERHEAD: usize = 64;

/// A feed page (`{"items":[…],"next_page":…,"seed":…}`) spliced from fragments into one
/// buffer allocated once at its final size.
pub fn splice_page(
    items: &[SplicedItem<'_>],
    next_page: Option<&str>,
    seed: Option<u64>,
    partial: &[&str],
) -> Vec<u8> {
    let size = items
        .iter()
        .map(|i| i.post.0.len() + i.author.0.len() + ITEM_OVERHEAD)
        .sum::<usize>()
        + next_page.map_or(0, str::len)
        + partial.iter().map(|p| p.len() + 3).sum::<usize>()
        + PAGE_OVERHEAD;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(br#"{"items":["#);
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.push(b'{');
        item_fields(&mut out, item);
        out.push(b'}');
    }
    out.extend_from_slice(br#"],"next_page":"#);
    match next_page {
        // Cursors are base64url, but nothing here may assume it: encode as a JSON string.
        Some(cursor) => serde_json::to_writer(&mut out, cursor).expect("writing to a Vec"),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(br#","seed":"#);
    match seed {
        Some(seed) => write!(out, "{seed}").expect("writing to a Vec"),
        None => out.extend_from_slice(b"null"),
    }
    partial_field(&mut out, partial);
    out.push(b'}');
    out
}

/// One post on its own (a [`PostDetailWire`](crate::wire::PostDetailWire)), spliced.
pub fn splice_post(item: &SplicedItem<'_>, partial: &[&str]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(item.post.0.len() + item.author.0.len() + ITEM_OVERHEAD + PAGE_OVERHEAD);
    out.push(b'{');
    item_fields(&mut out, item);
    partial_field(&mut out, partial);
    out.push(b'}');
    out
}

/// An item's fields, without the enclosing braces.
fn item_fields(out: &mut Vec<u8>, item: &SplicedItem<'_>) {
    out.extend_from_slice(&item.post.0);
    out.extend_from_slice(br#","author":"#);
    out.extend_from_slice(&item.author.0);
    out.extend_from_slice(br#","viewer":"#);
    out.extend_from_slice(viewer_json(item.viewer));
}

/// `,"partial":[…]`.
fn partial_field(out: &mut Vec<u8>, partial: &[&str]) {
    out.extend_from_slice(br#","partial":["#);
    for (n, part) in partial.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, part).expect("writing to a Vec");
    }
    out.push(b']');
}
