//! Fences over cached inputs: while a value is built inside [`recording`], every cache it
//! reads records a [`Stamp`] of the keys it was asked for (taken before it read them) and
//! how long the entries it answered with stay fresh; the value may be reused only while
//! every stamp holds and none of those entries is due a refresh ([`Fences::hold`]). Past
//! the earliest entry's refresh-ahead mark, and again past the latest
//! ([`Fences::marks_passed`]), a reader reads the inputs again in the background, so that
//! their caches reload them before they go stale.
//! A lookup a cache cannot fence (a miss, a stale entry, a read that bypasses it) makes
//! the whole record unusable, and so does any read outside a cache ([`unfenced`]).

use std::cell::RefCell;
use std::fmt;
use tokio::time::Instant;

/// A cache's record of some keys as they were before it read them: `valid` says whether
/// none of them has been invalidated (in this process, or through the cache's
/// invalidation channel) since, and whether the calling task may still use them.
pub trait Stamp: Send + Sync {
    fn valid(&self) -> bool;
}

/// What [`recording`] collected: the stamps, the earliest moments an input is to be
/// refreshed ahead and is due a refresh, and whether every input could be fenced.
pub struct Fences {
    stamps: Vec<Box<dyn Stamp>>,
    /// The earliest and the latest refresh-ahead mark of the inputs.
    ahead: Option<(Instant, Instant)>,
    until: Option<Instant>,
    complete: bool,
}

impl fmt::Debug for Fences {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fences")
            .field("stamps", &self.stamps.len())
            .field("ahead", &self.ahead)
            .field("until", &self.until)
            .field("complete", &self.complete)
            .finish()
    }
}

impl Fences {
    fn new() -> Self {
        Self {
            stamps: Vec::new(),
            ahead: None,
            until: None,
            complete: true,
        }
    }

    /// Whether a value built inside the recording may be reused: every input fenced, none
    /// due a refresh at `now`, none invalidated since.
    pub fn hold(&self, now: Instant) -> bool {
        self.usable()
            && self.until.is_some_and(|u| now < u)
            && self.stamps.iter().all(|s| s.valid())
    }

    /// Whether every input was fenced (a value built from others must not be kept).
    pub fn usable(&self) -> bool {
        self.complete && !self.stamps.is_empty()
    }

    /// The earliest moment an input is due a refresh.
    pub fn until(&self) -> Option<Instant> {
        self.until
    }

    /// How many of the two refresh-ahead marks (the inputs' earliest and latest) `now`
    /// has passed: reading the inputs once past each refreshes every one of them in its
    /// window, before its soft TTL, when the windows overlap.
    pub fn marks_passed(&self, now: Instant) -> u8 {
        self.ahead
            .map_or(0, |(a, z)| u8::from(now >= a) + u8::from(now >= z))
    }
}

tokio::task_local! {
    static RECORDING: RefCell<Fences>;
}

/// Runs `f`, collecting the fences of every cached lookup it makes in its task.
pub async fn recording<F: Future>(f: F) -> (F::Output, Fences) {
    RECORDING
        .scope(RefCell::new(Fences::new()), async move {
            let out = f.await;
            let fences = RECORDING.with(|r| std::mem::replace(&mut *r.borrow_mut(), Fences::new()));
            (out, fences)
        })
        .await
}

/// Whether the running task is inside [`recording`] (a cache takes stamps only then).
pub fn is_recording() -> bool {
    RECORDING.try_with(|_| ()).is_ok()
}

/// Records a cache's stamp, the moment from which a read of the entries it answered with
/// refreshes them ahead, and the moment they are due a refresh; a no-op outside
/// [`recording`].
pub fn record(stamp: Box<dyn Stamp>, refresh_from: Instant, fresh_until: Instant) {
    let _ = RECORDING.try_with(|r| {
        let mut r = r.borrow_mut();
        r.stamps.push(stamp);
        r.ahead = Some(r.ahead.map_or((refresh_from, refresh_from), |(a, z)| {
            (a.min(refresh_from), z.max(refresh_from))
        }));
        r.until = Some(r.until.map_or(fresh_until, |u| u.min(fresh_until)));
    });
}

/// Marks the recording unusable: the task read something no fence covers.
pub fn unfenced() {
    let _ = RECORDING.try_with(|r| r.borrow_mut().complete = false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    struct Flag(Arc<AtomicBool>);

    impl Stamp for Flag {
        fn valid(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn a_record_holds_until_a_stamp_breaks_an_input_is_due_or_one_was_unfenced() {
        let now = Instant::now();
        let ok = Arc::new(AtomicBool::new(true));
        let ((), fences) = recording(async {
            assert!(is_recording());
            record(
                Box::new(Flag(ok.clone())),
                now + Duration::from_secs(4),
                now + Duration::from_secs(5),
            );
            record(
                Box::new(Flag(ok.clone())),
                now + Duration::from_secs(1),
                now + Duration::from_secs(2),
            );
        })
        .await;
        assert!(fences.hold(now));
        assert_eq!(fences.until(), Some(now + Duration::from_secs(2)));
        assert_eq!(fences.marks_passed(now), 0);
        assert!(
            fences.marks_passed(now + Duration::from_secs(1)) > 0
                && fences.hold(now + Duration::from_secs(1)),
            "an input is to be refreshed ahead, and still fresh"
        );
        assert_eq!(fences.marks_passed(now + Duration::from_secs(1)), 1);
        assert_eq!(fences.marks_passed(now + Duration::from_secs(4)), 2);
        assert!(
            !fences.hold(now + Duration::from_secs(2)),
            "an input is due"
        );
        ok.store(false, Ordering::SeqCst);
        assert!(!fences.hold(now), "an input was invalidated");

        let ((), fences) = recording(async {
            record(
                Box::new(Flag(Arc::new(AtomicBool::new(true)))),
                now + Duration::from_secs(4),
                now + Duration::from_secs(5),
            );
            unfenced();
        })
        .await;
        assert!(!fences.usable() && !fences.hold(now));
        // Nothing read: nothing proves the value current.
        let ((), fences) = recording(async {}).await;
        assert!(!fences.usable());
        assert!(!is_recording());
        // Outside a recording the calls do nothing.
        record(Box::new(Flag(ok)), now, now);
        unfenced();
    }
}
