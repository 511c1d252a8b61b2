//! The batch-load trait: the one seam between storage, cache and enrichment.
//!
//! A loader answers "give me these keys" with a map holding only the keys that exist. The
//! store implements it with one statement per call, the tiered cache by wrapping any
//! loader, and enrichment asks only for the trait, so each layer can be tested and reused
//! alone.

use crate::error::{ErrorCode, HasErrorCode};
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::error::Error as StdError;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

/// Loads many values by key in one batch.
///
/// Contract, checked for the stores by their contract suite:
/// - the result holds exactly the requested keys that exist; a missing key is absent, not
///   an error;
/// - duplicate keys are tolerated and answered once;
/// - an empty key slice does no I/O and returns an empty map.
#[async_trait]
pub trait Loader: Send + Sync {
    /// The key type, usually an id newtype.
    type Key: Clone + Eq + Hash + Send + Sync + 'static;
    /// The value type; cloned when fanned out to several waiters.
    type Value: Clone + Send + Sync + 'static;

    /// Loads `keys` in one batch.
    async fn load_many(
        &self,
        keys: &[Self::Key],
    ) -> Result<HashMap<Self::Key, Self::Value>, LoadError>;

    /// Loads one key; a convenience over [`Loader::load_many`].
    async fn load_one(&self, key: &Self::Key) -> Result<Option<Self::Value>, LoadError> {
        let mut found = self.load_many(std::slice::from_ref(key)).await?;
        Ok(found.remove(key))
    }

    /// Loads `keys` in one batch and answers by position: `out[i]` is the value of
    /// `keys[i]`, shared rather than copied. This is the read path's call: a cache
    /// overrides it so that a hit costs one reference count and no map is built; the
    /// default goes through [`Loader::load_many`] and wraps each value once.
    async fn load_shared(
        &self,
        keys: &[Self::Key],
    ) -> Result<Vec<Option<Arc<Self::Value>>>, LoadError> {
        let found = self.load_many(keys).await?;
        Ok(by_position(keys, found))
    }

    /// Whether every one of `keys` is held fresh right now, so that loading them would
    /// do no I/O. Only caches can say yes (the default says no); prefetch asks it so as
    /// not to warm what is already warm.
    fn fresh(&self, keys: &[Self::Key]) -> bool {
        let _ = keys;
        false
    }

    /// Whether every lookup through this loader inside a [`crate::fence::recording`]
    /// records its fence (a cache with a process-local tier). A value built from a loader
    /// that does not must never be reused on the strength of a recording; the default says
    /// no.
    fn fences(&self) -> bool {
        false
    }
}

/// `found` answered in the order of `keys` (duplicates share one value).
pub fn by_position<K: Eq + Hash, V>(keys: &[K], found: HashMap<K, V>) -> Vec<Option<Arc<V>>> {
    if keys.len() == 1 {
        let value = found.into_iter().find(|(k, _)| *k == keys[0]);
        return vec![value.map(|(_, v)| Arc::new(v))];
    }
    let shared: HashMap<K, Arc<V>> = found.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
    keys.iter().map(|k| shared.get(k).cloned()).collect()
}

/// A shareable, type-erased loader, as the composition root hands them out.
pub type DynLoader<K, V> = Arc<dyn Loader<Key = K, Value = V>>;

#[async_trait]
impl<L: Loader + ?Sized> Loader for Arc<L> {
    type Key = L::Key;
    type Value = L::Value;

    async fn load_many(
        &self,
        keys: &[Self::Key],
    ) -> Result<HashMap<Self::Key, Self::Value>, LoadError> {
        (**self).load_many(keys).await
    }

    async fn load_one(&self, key: &Self::Key) -> Result<Option<Self::Value>, LoadError> {
        (**self).load_one(key).await
    }

    async fn load_shared(
        &self,
        keys: &[Self::Key],
    ) -> Result<Vec<Option<Arc<Self::Value>>>, LoadError> {
        (**self).load_shared(keys).await
    }

    fn fresh(&self, keys: &[Self::Key]) -> bool {
        (**self).fresh(keys)
    }

    fn fences(&self) -> bool {
        (**self).fences()
    }
}

/// Why a batch load failed. Cheap to clone, so one failure can be fanned out to every
/// caller that waited on the same batch.
#[derive(Clone)]
pub struct LoadError {
    code: ErrorCode,
    message: Arc<str>,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

impl LoadError {
    /// An error of kind `code` with a message safe to show to API clients.
    pub fn new(code: ErrorCode, message: impl Into<Arc<str>>) -> Self {
        Self {
            code,
            message: message.into(),
            source: None,
        }
    }

    /// Wraps a library error, keeping it as the source and taking its code and message.
    pub fn wrap<E>(err: E) -> Self
    where
        E: StdError + HasErrorCode + Send + Sync + 'static,
    {
        Self {
            code: err.code(),
            message: err.to_string().into(),
            source: Some(Arc::new(err)),
        }
    }

    /// The transport-neutral kind of the failure.
    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl HasErrorCode for LoadError {
    fn code(&self) -> ErrorCode {
        self.code
    }
}

impl fmt::Debug for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadError")
            .field("code", &self.code)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for LoadError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// The distinct keys of `keys`, first occurrence first: loaders call this before building
/// their one statement so duplicates cost nothing.
pub fn dedup_keys<K: Clone + Eq + Hash>(keys: &[K]) -> Vec<K> {
    let mut seen = HashSet::with_capacity(keys.len());
    keys.iter().filter(|k| seen.insert(*k)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Squares;

    #[async_trait]
    impl Loader for Squares {
        type Key = i64;
        type Value = i64;
        async fn load_many(&self, keys: &[i64]) -> Result<HashMap<i64, i64>, LoadError> {
            Ok(keys
                .iter()
                .filter(|k| **k >= 0)
                .map(|k| (*k, k * k))
                .collect())
        }
    }

    #[tokio::test]
    async fn load_one_goes_through_load_many_and_a_dyn_loader() {
        let loader: DynLoader<i64, i64> = Arc::new(Squares);
        assert_eq!(loader.load_one(&3).await.unwrap(), Some(9));
        assert_eq!(loader.load_one(&-1).await.unwrap(), None);
    }

    #[tokio::test]
    async fn load_shared_answers_by_position_with_duplicates_and_absences() {
        let loader: DynLoader<i64, i64> = Arc::new(Squares);
        let got = loader.load_shared(&[2, -1, 3, 2]).await.unwrap();
        let got: Vec<Option<i64>> = got.iter().map(|v| v.as_deref().copied()).collect();
        assert_eq!(got, vec![Some(4), None, Some(9), Some(4)]);
        let one = loader.load_shared(&[-5]).await.unwrap();
        assert_eq!(one.len(), 1);
        assert!(one[0].is_none());
    }

    #[test]
    fn dedup_keeps_first_occurrence_order() {
        assert_eq!(dedup_keys(&[3, 1, 3, 2, 1]), vec![3, 1, 2]);
    }

    #[test]
    fn load_error_keeps_code_and_is_cloneable() {
        let e = LoadError::new(ErrorCode::Unavailable, "database unavailable");
        let c = e.clone();
        assert_eq!(c.code(), ErrorCode::Unavailable);
        assert_eq!(c.to_string(), "database unavailable");
    }
}
