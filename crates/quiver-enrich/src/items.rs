//! Feed items and authors stored ready: one value per post holding the post, its media
//! and tags and their encoded fragment, and one per author holding the profile, its flags
//! and their encoded fragment. Cached as they are, a page is a handful of shared values
//! spliced with the per-viewer part: no per-entity lookups, no equality checks, no
//! encoding on a hit. Whatever forgets a post forgets its item (the item is the cache
//! entry), so an item can never outlive the entities it was built from.

use crate::error::{EnrichError, Part};
use async_trait::async_trait;
use quiver_codec::fragment::{AuthorFragment, PostFragment};
use quiver_codec::wire::{AuthorWire, PostFieldsWire};
use quiver_model::{DynLoader, LoadError, Loader, Media, Post, PostId, User, UserFlags, UserId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

/// A post ready to show: the post, its media and tags, and their encoded fragment. In
/// Redis it is stored as its parts; the fragment is encoded again when it is read back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ItemParts", into = "ItemParts")]
pub struct FeedItem {
    pub post: Post,
    pub media: Vec<Media>,
    pub tags: Vec<String>,
    /// Optional parts that failed to load (media, tags): the item is shown without them,
    /// the page says so, and the item is never cached.
    pub missing: Vec<Part>,
    pub fragment: PostFragment,
}

#[derive(Serialize, Deserialize)]
struct ItemParts {
    post: Post,
    media: Vec<Media>,
    tags: Vec<String>,
}

impl From<ItemParts> for FeedItem {
    fn from(p: ItemParts) -> Self {
        Self::new(p.post, p.media, p.tags, Vec::new())
    }
}

impl From<FeedItem> for ItemParts {
    fn from(i: FeedItem) -> Self {
        Self {
            post: i.post,
            media: i.media,
            tags: i.tags,
        }
    }
}

impl FeedItem {
    /// The item of `post` with `media` and `tags`, encoded.
    pub fn new(post: Post, media: Vec<Media>, tags: Vec<String>, missing: Vec<Part>) -> Self {
        let fragment = encode_post(&post, &media, &tags);
        Self {
            post,
            media,
            tags,
            missing,
            fragment,
        }
    }

    /// Whether every part loaded, so that the item may be cached.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }
}

/// An author ready to show: profile, flags and their encoded fragment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "AuthorParts", into = "AuthorParts")]
pub struct AuthorItem {
    pub user: User,
    pub flags: UserFlags,
    pub fragment: AuthorFragment,
}

#[derive(Serialize, Deserialize)]
struct AuthorParts {
    user: User,
    flags: UserFlags,
}

impl From<AuthorParts> for AuthorItem {
    fn from(p: AuthorParts) -> Self {
        Self::new(p.user, p.flags)
    }
}

impl From<AuthorItem> for AuthorParts {
    fn from(a: AuthorItem) -> Self {
        Self {
            user: a.user,
            flags: a.flags,
        }
    }
}

impl AuthorItem {
    /// The author `user` with `flags`, encoded.
    pub fn new(user: User, flags: UserFlags) -> Self {
        let fragment = encode_author(&user, &flags);
        Self {
            user,
            flags,
            fragment,
        }
    }
}

pub(crate) fn encode_post(post: &Post, media: &[Media], tags: &[String]) -> PostFragment {
    PostFragment::encode(&PostFieldsWire::new(post, media, tags))
}

pub(crate) fn encode_author(user: &User, flags: &UserFlags) -> AuthorFragment {
    AuthorFragment::encode(&AuthorWire::new(user, flags))
}

/// Builds feed items from three entity loaders, each called once per batch (concurrently
/// unless `concurrent` is off). Posts are essential; media and tags are optional: when
/// one fails the items come back without it, marked incomplete.
#[derive(Clone)]
pub struct ItemLoader {
    pub posts: DynLoader<PostId, Post>,
    /// Media by post; a post without media is absent.
    pub media: DynLoader<PostId, Vec<Media>>,
    /// Tags by post; a post without tags is absent.
    pub tags: DynLoader<PostId, Vec<String>>,
    /// Whether the three batches run concurrently (off only to measure what that buys).
    pub concurrent: bool,
}

impl fmt::Debug for ItemLoader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ItemLoader").finish_non_exhaustive()
    }
}

/// A loader failure that names the part that failed, so the engine reports it by name
/// through the composite loaders and the caches above them.
fn failed(part: Part, source: LoadError) -> LoadError {
    LoadError::wrap(EnrichError::Load { part, source })
}

#[async_trait]
impl Loader for ItemLoader {
    type Key = PostId;
    type Value = FeedItem;

    async fn load_many(&self, keys: &[PostId]) -> Result<HashMap<PostId, FeedItem>, LoadError> {
        let (posts, media, tags) = if self.concurrent {
            tokio::join!(
                self.posts.load_many(keys),
                self.media.load_many(keys),
                self.tags.load_many(keys)
            )
        } else {
            (
                self.posts.load_many(keys).await,
                self.media.load_many(keys).await,
                self.tags.load_many(keys).await,
            )
        };
        let posts = posts.map_err(|e| failed(Part::Posts, e))?;
        let mut missing = Vec::new();
        let mut media = media.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "media unavailable, serving partial items");
            missing.push(Part::Media);
            HashMap::new()
        });
        let mut tags = tags.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "tags unavailable, serving partial items");
            missing.push(Part::Tags);
            HashMap::new()
        });
        Ok(posts
            .into_iter()
            .map(|(id, post)| {
                let m = media.remove(&id).unwrap_or_default();
                let t = tags.remove(&id).unwrap_or_default();
                (id, FeedItem::new(post, m, t, missing.clone()))
            })
            .collect())
    }
}

/// Builds author items from profiles and flags, each called once per batch. An author
/// without both is absent.
#[derive(Clone)]
pub struct AuthorLoader {
    pub users: DynLoader<UserId, User>,
    pub flags: DynLoader<UserId, UserFlags>,
    /// Whether the two batches run concurrently.
    pub concurrent: bool,
}

impl fmt::Debug for AuthorLoader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorLoader").finish_non_exhaustive()
    }
}

#[async_trait]
impl Loader for AuthorLoader {
    type Key = UserId;
    type Value = AuthorItem;

    async fn load_many(&self, keys: &[UserId]) -> Result<HashMap<UserId, AuthorItem>, LoadError> {
        let (users, flags) = if self.concurrent {
            tokio::join!(self.users.load_many(keys), self.flags.load_many(keys))
        } else {
            (
                self.users.load_many(keys).await,
                self.flags.load_many(keys).await,
            )
        };
        let users = users.map_err(|e| failed(Part::Authors, e))?;
        let mut flags = flags.map_err(|e| failed(Part::Flags, e))?;
        Ok(users
            .into_iter()
            .filter_map(|(id, user)| Some((id, AuthorItem::new(user, flags.remove(&id)?))))
            .collect())
    }
}
