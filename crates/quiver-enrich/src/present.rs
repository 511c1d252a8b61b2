//! Presentation: hydrated entities become JSON through the codec. A post's fields and an
//! author are encoded once into fragments and reused while the entity is unchanged; a page
//! is spliced from them plus the per-viewer part, which is never cached.

use quiver_codec::fragment::{AuthorFragment, PostFragment};
use quiver_codec::wire::{AuthorWire, PostFieldsWire};
use quiver_model::{Media, Post, PostId, User, UserFlags, UserId};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

struct PostEntry {
    post: Post,
    media: Vec<Media>,
    tags: Vec<String>,
    fragment: PostFragment,
}

struct AuthorEntry {
    user: User,
    flags: UserFlags,
    fragment: AuthorFragment,
}

/// Counters of the fragment cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragmentStats {
    /// Fragments reused.
    pub hits: u64,
    /// Fragments encoded (absent, or encoded from different values).
    pub misses: u64,
}

/// Encoded fragments by id. An entry is reused only when the values it was encoded from
/// equal the ones just hydrated, so an entity changed below (and invalidated in the cache
/// tiers) can never be served from a stale fragment; comparing costs far less than
/// encoding.
pub(crate) struct Fragments {
    posts: quick_cache::sync::Cache<PostId, Arc<PostEntry>>,
    authors: quick_cache::sync::Cache<UserId, Arc<AuthorEntry>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Fragments {
    /// A cache of up to `entries` posts and as many authors.
    pub(crate) fn new(entries: usize) -> Self {
        Self {
            posts: quick_cache::sync::Cache::new(entries),
            authors: quick_cache::sync::Cache::new(entries),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub(crate) fn stats(&self) -> FragmentStats {
        FragmentStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// The fragment of `post` with `media` and `tags`. `complete` is false when media or
    /// tags failed to load: such a fragment is encoded but not kept.
    pub(crate) fn post(
        &self,
        post: &Post,
        media: &[Media],
        tags: &[String],
        complete: bool,
    ) -> PostFragment {
        if let Some(e) = self.posts.get(&post.id)
            && e.post == *post
            && e.media == media
            && e.tags == tags
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return e.fragment.clone();
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let fragment = encode_post(post, media, tags);
        if complete {
            self.posts.insert(
                post.id,
                Arc::new(PostEntry {
                    post: post.clone(),
                    media: media.to_vec(),
                    tags: tags.to_vec(),
                    fragment: fragment.clone(),
                }),
            );
        }
        fragment
    }

    /// The fragment of `user` with `flags`.
    pub(crate) fn author(&self, user: &User, flags: &UserFlags) -> AuthorFragment {
        if let Some(e) = self.authors.get(&user.id)
            && e.user == *user
            && e.flags == *flags
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return e.fragment.clone();
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let fragment = encode_author(user, flags);
        self.authors.insert(
            user.id,
            Arc::new(AuthorEntry {
                user: user.clone(),
                flags: *flags,
                fragment: fragment.clone(),
            }),
        );
        fragment
    }
}

pub(crate) fn encode_post(post: &Post, media: &[Media], tags: &[String]) -> PostFragment {
    PostFragment::encode(&PostFieldsWire::new(post, media, tags))
}

pub(crate) fn encode_author(user: &User, flags: &UserFlags) -> AuthorFragment {
    AuthorFragment::encode(&AuthorWire::new(user, flags))
}
