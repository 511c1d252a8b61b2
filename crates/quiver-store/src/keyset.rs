//! The one keyset rule: where a page starts, how many rows to fetch, and where to cut
//! them into a page with its `next` cursor. Every list of the store goes through it.

use crate::StoreError;
use crate::rows::RefRow;
use chrono::{DateTime, TimeZone, Utc};
use quiver_model::{Cursor, Notification, OrderRef, Page, PostRef};

/// The largest page a skeleton query returns.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Where a page starts: strictly after `after`, or from the top. The sentinel lies beyond
/// any real row so one index-friendly row comparison serves both cases.
pub(crate) fn start_of(after: Option<Cursor>) -> (DateTime<Utc>, i64) {
    match after {
        Some(c) => (c.created_at, c.id),
        None => (
            Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0).unwrap(),
            i64::MAX,
        ),
    }
}

/// Checks a page size and returns how many rows to fetch: one more than the page, so the
/// last page is known to be last without another query.
pub(crate) fn fetch_len(limit: u32) -> Result<i64, StoreError> {
    if limit == 0 || limit > MAX_PAGE_SIZE {
        return Err(StoreError::InvalidLimit {
            got: limit,
            max: MAX_PAGE_SIZE,
        });
    }
    Ok(i64::from(limit) + 1)
}

/// Cuts `rows` (fetched with [`fetch_len`]) to a page and sets `next` when there is more.
pub(crate) fn into_page<T: Keyed>(mut rows: Vec<T>, limit: u32) -> Page<T> {
    let limit = limit as usize;
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| {
            let (created_at, id) = r.key();
            Cursor { created_at, id }
        })
    } else {
        None
    };
    Page { items: rows, next }
}

/// Rows converted to `T` and cut to a page.
pub(crate) fn page_of<T: From<RefRow> + Keyed>(rows: Vec<RefRow>, limit: u32) -> Page<T> {
    into_page(rows.into_iter().map(T::from).collect(), limit)
}

/// Anything with a keyset position `(created_at, id)`.
pub(crate) trait Keyed {
    fn key(&self) -> (DateTime<Utc>, i64);
}

impl Keyed for (DateTime<Utc>, i64) {
    fn key(&self) -> (DateTime<Utc>, i64) {
        *self
    }
}

impl Keyed for PostRef {
    fn key(&self) -> (DateTime<Utc>, i64) {
        (self.created_at, self.id.0)
    }
}

impl Keyed for Notification {
    fn key(&self) -> (DateTime<Utc>, i64) {
        (self.created_at, self.id.0)
    }
}

impl Keyed for OrderRef {
    fn key(&self) -> (DateTime<Utc>, i64) {
        (self.created_at, self.id.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_len_bounds_the_page() {
        assert!(fetch_len(0).is_err());
        assert_eq!(fetch_len(20).unwrap(), 21);
        assert!(fetch_len(MAX_PAGE_SIZE + 1).is_err());
    }

    #[test]
    fn into_page_sets_next_only_when_more_rows_exist() {
        let t = Utc.timestamp_opt(1, 0).unwrap();
        let rows = |n: i64| (0..n).map(|i| (t, i)).collect::<Vec<_>>();
        let p = into_page(rows(3), 2);
        assert_eq!(p.items.len(), 2);
        assert_eq!(
            p.next,
            Some(Cursor {
                created_at: t,
                id: 1
            })
        );
        let p = into_page(rows(2), 2);
        assert_eq!(p.next, None);
    }
}
