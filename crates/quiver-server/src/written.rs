//! Read your writes across replicas: a write's answer carries a short-lived cookie naming
//! its writer, and the writer's reads that bring it back within its window read past this
//! process's L1 (`quiver_cache::consistent`), which may not have heard of the write yet.
//! The write itself cleared the L2 (and waited for PostgreSQL replicas) before answering.

use hyper::header::{self, HeaderMap, HeaderValue};
use quiver_model::UserId;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The cookie's name.
const NAME: &str = "quiver-written";

/// How long after a write its writer's reads skip the L1: far longer than an
/// invalidation takes to reach every replica (a millisecond or so), short enough that a
/// client writing now and then keeps its warm reads.
pub(crate) const WINDOW: Duration = Duration::from_secs(2);

/// The `Set-Cookie` of a write by `viewer`: the viewer and when the window ends.
pub(crate) fn cookie(viewer: UserId) -> HeaderValue {
    let until = now_ms() + WINDOW.as_millis();
    let value = format!(
        "{NAME}={}.{until}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
        viewer.0,
        WINDOW.as_secs()
    );
    HeaderValue::from_str(&value).expect("digits and ascii")
}

/// Whether the request brings back a cookie of a write by `viewer` whose window is open
/// (one ending further ahead than a window is ignored: a client cannot buy itself
/// uncached reads for longer than it could by writing).
pub(crate) fn recently(headers: &HeaderMap, viewer: UserId) -> bool {
    let mut cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(NAME)?.strip_prefix('='))
        .peekable();
    if cookies.peek().is_none() {
        return false;
    }
    let now = now_ms();
    cookies.any(|value| {
        let Some((who, until)) = value.split_once('.') else {
            return false;
        };
        who.parse() == Ok(viewer.0)
            && until
                .parse::<u128>()
                .is_ok_and(|u| u > now && u <= now + WINDOW.as_millis())
    })
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_with(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(cookie).unwrap());
        h
    }

    #[test]
    fn a_writes_cookie_marks_its_writers_reads_and_no_one_elses() {
        let set = cookie(UserId(7));
        let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
        let h = request_with(&format!("theme=dark; {pair}"));
        assert!(recently(&h, UserId(7)));
        assert!(!recently(&h, UserId(8)), "another viewer's cookie");
        assert!(!recently(&HeaderMap::new(), UserId(7)));
    }

    #[test]
    fn expired_far_future_and_garbage_cookies_are_ignored() {
        let now = now_ms();
        for value in [
            format!("{}", now - 1),
            format!("{}", now + WINDOW.as_millis() * 10),
            "soon".to_owned(),
            String::new(),
        ] {
            let h = request_with(&format!("{NAME}=7.{value}"));
            assert!(!recently(&h, UserId(7)), "{value:?}");
        }
        assert!(!recently(&request_with(&format!("{NAME}=7")), UserId(7)));
        assert!(!recently(
            &request_with(&format!("{NAME}x=7.{now}")),
            UserId(7)
        ));
    }
}
