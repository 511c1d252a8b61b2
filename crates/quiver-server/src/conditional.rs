//! HTTP caching (RFC 9110, 9111): a strong `ETag` from the bytes a response already has,
//! one tag per content coding, and `If-None-Match` answered with 304 and no body.

use crate::compression::Encoding;
use crate::respond::{self, Body, Coding};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

/// The strong entity tag of an identity-coded body: its 128-bit XXH3, in hex, from
/// `digest` when the body's hash is known already (a finished page keeps it: hashing a
/// 14 KB page costs about a microsecond); the body is never encoded a second time.
pub(crate) fn etag(body: &[u8], digest: Option<u128>) -> HeaderValue {
    let hash = digest
        .unwrap_or_else(|| xxhash_rust::xxh3::xxh3_128(body))
        .to_be_bytes();
    let mut tag = [b'"'; 34];
    hex::encode_to_slice(hash, &mut tag[1..33]).expect("32 hex digits fit");
    HeaderValue::from_bytes(&tag).expect("hex is visible ascii")
}

/// The tag of the same content in `encoding`: another representation, so another strong
/// tag (`"…-zstd"`), as a cache that stores both must tell them apart.
pub(crate) fn encoded(tag: &HeaderValue, encoding: Encoding) -> HeaderValue {
    let identity = tag.as_bytes();
    let Some(open) = identity.strip_suffix(b"\"") else {
        return tag.clone();
    };
    let mut v = Vec::with_capacity(identity.len() + 6);
    v.extend_from_slice(open);
    v.push(b'-');
    v.extend_from_slice(encoding.as_str().as_bytes());
    v.push(b'"');
    HeaderValue::from_bytes(&v).expect("a tag and a token are visible ascii")
}

/// Whether `If-None-Match` names `tag`: `*`, or a listed tag equal to it by the weak
/// comparison the field uses (a `W/` prefix is ignored).
pub(crate) fn matches(if_none_match: &HeaderValue, tag: &HeaderValue) -> bool {
    let Ok(list) = if_none_match.to_str() else {
        return false;
    };
    let tag = tag.as_bytes();
    list.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t).as_bytes() == tag)
}

/// `resp` as a client holding `if_none_match` gets it in `coding`: 304 when that names
/// the representation it would be sent now (a 200's, in that coding), else the response
/// in that coding.
pub(crate) fn answer(
    mut resp: Response<Body>,
    if_none_match: Option<&HeaderValue>,
    coding: Coding,
) -> Response<Body> {
    if coding.varies {
        resp.headers_mut()
            .append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    if let Some(inm) = if_none_match
        && resp.status() == StatusCode::OK
        && let Some(tag) = resp.headers().get(header::ETAG)
    {
        let current = coding
            .encoding
            .map_or_else(|| tag.clone(), |e| encoded(tag, e));
        if matches(inm, &current) {
            return not_modified(resp, current);
        }
    }
    respond::compress(&mut resp, coding);
    resp
}

/// 304 for a 200 the client already has as `tag`: no body, and of the 200's headers
/// those a cache updates its stored response from (RFC 9110 §15.4.5).
pub(crate) fn not_modified(full: Response<Body>, tag: HeaderValue) -> Response<Body> {
    let (parts, _) = full.into_parts();
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    let h = resp.headers_mut();
    h.insert(header::ETAG, tag);
    for name in [header::CACHE_CONTROL, header::VARY, header::LINK] {
        for v in parts.headers.get_all(&name) {
            h.append(name.clone(), v.clone());
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_strong_quoted_hashes_that_follow_the_bytes() {
        let a = etag(b"{\"a\":1}", None);
        assert_eq!(a.len(), 34);
        assert!(a.to_str().unwrap().starts_with('"') && a.to_str().unwrap().ends_with('"'));
        assert_eq!(a, etag(b"{\"a\":1}", None));
        assert_ne!(a, etag(b"{\"a\":2}", None));
        // A digest already taken is the same tag as hashing the body again.
        let digest = xxhash_rust::xxh3::xxh3_128(b"{\"a\":1}");
        assert_eq!(a, etag(b"", Some(digest)));
        let z = encoded(&a, Encoding::Zstd);
        assert_eq!(
            z.to_str().unwrap(),
            format!("{}-zstd\"", &a.to_str().unwrap()[..33])
        );
        assert_ne!(z, encoded(&a, Encoding::Gzip));
    }

    #[test]
    fn if_none_match_lists_star_and_weak_forms_match() {
        let tag = HeaderValue::from_static("\"abc\"");
        for yes in [
            "\"abc\"",
            "W/\"abc\"",
            "\"x\", \"abc\"",
            "*",
            " \"abc\" ,\"y\"",
        ] {
            assert!(matches(&HeaderValue::from_static(yes), &tag), "{yes}");
        }
        for no in ["\"abcd\"", "abc", "\"ABC\"", "", "\"x\",\"y\""] {
            assert!(!matches(&HeaderValue::from_static(no), &tag), "{no}");
        }
    }
}
