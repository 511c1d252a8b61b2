//! A circuit breaker in front of Redis: after repeated failures, skip it for a while and
//! let one probe through, so an outage costs one timeout per cooldown instead of one per
//! lookup. Written here rather than taken from a crate because it must run on
//! `tokio::time` (paused-time tests) and needs only these few lines.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is out; everyone else skips Redis until it reports, or until `until`
    /// (a probe dropped before reporting, by a hang-up or a deadline, must not leave
    /// Redis skipped for good): then another caller probes.
    Probing {
        until: Instant,
    },
}

/// Whether to call Redis now, and what happened when we did.
#[derive(Debug)]
pub(crate) struct Breaker {
    state: Mutex<State>,
    threshold: u32,
    cooldown: Duration,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold: threshold.max(1),
            cooldown,
        }
    }

    /// Whether this caller may use Redis. Past the cooldown exactly one caller gets `true`
    /// (the probe) until it reports success or failure.
    pub(crate) fn allow(&self) -> bool {
        let mut state = self.state.lock().expect("breaker lock");
        match *state {
            State::Closed { .. } => true,
            State::Open { until } | State::Probing { until } if Instant::now() >= until => {
                *state = State::Probing {
                    until: Instant::now() + self.cooldown,
                };
                true
            }
            State::Open { .. } | State::Probing { .. } => false,
        }
    }

    pub(crate) fn success(&self) {
        *self.state.lock().expect("breaker lock") = State::Closed { failures: 0 };
    }

    pub(crate) fn failure(&self) {
        let mut state = self.state.lock().expect("breaker lock");
        let failures = match *state {
            State::Closed { failures } => failures + 1,
            State::Open { .. } | State::Probing { .. } => self.threshold,
        };
        *state = if failures >= self.threshold {
            State::Open {
                until: Instant::now() + self.cooldown,
            }
        } else {
            State::Closed { failures }
        };
    }

    pub(crate) fn is_open(&self) -> bool {
        !matches!(
            *self.state.lock().expect("breaker lock"),
            State::Closed { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_then_lets_one_probe_through() {
        let b = Breaker::new(3, Duration::from_secs(1));
        b.failure();
        b.failure();
        assert!(b.allow(), "still closed below the threshold");
        b.failure();
        assert!(!b.allow(), "open after three failures");
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(b.allow(), "the probe");
        assert!(!b.allow(), "only one probe at a time");
        b.failure();
        assert!(!b.allow(), "a failed probe reopens");
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(b.allow());
        b.success();
        assert!(
            b.allow() && b.allow() && !b.is_open(),
            "a good probe closes it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_never_reports_does_not_keep_redis_skipped() {
        let b = Breaker::new(1, Duration::from_secs(1));
        b.failure();
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(
            b.allow(),
            "the probe, which is then dropped without reporting"
        );
        assert!(!b.allow(), "its cooldown: still one probe at a time");
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(b.allow(), "another probe after the cooldown");
        b.success();
        assert!(!b.is_open());
    }
}
