//! HTTP caching over real TCP: strong `ETag`s per representation, `If-None-Match`
//! answered with 304 and no body, `Cache-Control` public for anonymous reads and private
//! for a viewer's, and `Vary` naming what the answer depends on.

use crate::http::{busy_viewer, scalar};
use crate::support::{Server, start, start_with_events};
use quiver_server::ServerConfig;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use sqlx::PgPool;
use std::time::Duration;

/// Every `Vary` value, lowercased, however many fields carry them.
fn vary(h: &HeaderMap) -> Vec<String> {
    let mut v: Vec<String> = h
        .get_all("vary")
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    v.sort();
    v
}

/// GETs `path` as `user` with `If-None-Match: tag` (and `Accept-Encoding: accept`).
async fn conditional(
    s: &Server,
    path: &str,
    user: Option<i64>,
    tag: &str,
    accept: Option<&str>,
) -> reqwest::Response {
    let mut req = s.get(path, user).header("if-none-match", tag);
    if let Some(a) = accept {
        req = req.header("accept-encoding", a);
    }
    req.send().await.unwrap()
}

/// A 200's strong tag, checked to be one.
fn strong_tag(h: &HeaderMap) -> String {
    let tag = h["etag"].to_str().unwrap().to_owned();
    assert!(
        tag.starts_with('"') && tag.ends_with('"') && tag.len() > 2,
        "a strong tag: {tag}"
    );
    tag
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn unchanged_reads_answer_304_without_a_body_per_representation(pool: PgPool) {
    let config = ServerConfig {
        public_max_age: Duration::from_secs(7),
        compression_min_bytes: 256,
        ..ServerConfig::default()
    };
    let mut s = start(pool, config, None).await;
    let viewer = busy_viewer(&s).await;
    let (order, customer): (i64, i64) =
        sqlx::query_as("SELECT id, customer_id FROM orders ORDER BY id LIMIT 1")
            .fetch_one(&s.pool)
            .await
            .unwrap();
    let post = scalar(&s.pool, "SELECT min(id) FROM posts").await;
    let reads = [
        ("/api/v1/feed?limit=20".to_owned(), Some(viewer)),
        (
            "/api/v1/feed/discover?limit=5&seed=3".to_owned(),
            Some(viewer),
        ),
        (format!("/api/v1/posts/{post}"), Some(viewer)),
        (format!("/api/v1/posts/{post}"), None),
        ("/api/v1/users/2".to_owned(), None),
        ("/api/v1/users/2".to_owned(), Some(viewer)),
        ("/api/v1/users/2/posts?limit=5".to_owned(), None),
        (format!("/api/v1/orders/{order}"), Some(customer)),
        (
            format!("/api/v1/customers/{customer}/orders"),
            Some(customer),
        ),
    ];
    for (path, user) in &reads {
        let resp = s.get(path, *user).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let h = resp.headers().clone();
        let body = resp.bytes().await.unwrap();
        let tag = strong_tag(&h);
        let expected = if user.is_some() {
            "private, no-cache"
        } else {
            "public, max-age=7"
        };
        assert_eq!(h["cache-control"], expected, "{path} as {user:?}");
        assert!(
            vary(&h).contains(&"authorization".to_owned()),
            "{path}: a public answer differs from a viewer's, so it varies by authorization"
        );
        let compressible = body.len() >= 256;
        assert_eq!(
            vary(&h).contains(&"accept-encoding".to_owned()),
            compressible,
            "{path}: only a body that could be compressed varies by accept-encoding"
        );

        // The same tag again: 304, no body, the 200's caching headers.
        let resp = conditional(&s, path, *user, &tag, None).await;
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED, "{path}");
        let h304 = resp.headers().clone();
        assert_eq!(h304["etag"], tag.as_str());
        assert_eq!(h304["cache-control"], expected);
        assert_eq!(vary(&h304), vary(&h), "{path}");
        assert!(h304.get("content-type").is_none());
        assert!(resp.bytes().await.unwrap().is_empty(), "304 has no body");
        // In a list, weak, or `*`: 304 too; another tag: the whole answer.
        for inm in [
            format!("\"nope\", {tag}"),
            format!("W/{tag}"),
            "*".to_owned(),
        ] {
            let resp = conditional(&s, path, *user, &inm, None).await;
            assert_eq!(resp.status(), StatusCode::NOT_MODIFIED, "{path} {inm}");
        }
        let resp = conditional(&s, path, *user, "\"nope\"", None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.bytes().await.unwrap(), body, "{path}");

        if !compressible {
            continue;
        }
        // Compressed, the content is another representation with a tag of its own.
        let resp = s
            .get(path, *user)
            .header("accept-encoding", "zstd")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["content-encoding"], "zstd");
        let zstd_tag = strong_tag(resp.headers());
        assert_ne!(zstd_tag, tag, "{path}: each coding has its own tag");
        let unpacked = zstd::decode_all(&resp.bytes().await.unwrap()[..]).unwrap();
        assert_eq!(unpacked, body, "{path}");
        let resp = conditional(&s, path, *user, &zstd_tag, Some("zstd")).await;
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(resp.headers()["etag"], zstd_tag.as_str());
        assert!(resp.bytes().await.unwrap().is_empty());
        // The identity tag does not stand for the compressed bytes, nor the other way.
        let resp = conditional(&s, path, *user, &tag, Some("zstd")).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let resp = conditional(&s, path, *user, &zstd_tag, None).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }

    // Errors and writes carry no tag, and a tag never turns them into 304.
    let resp = conditional(&s, "/api/v1/posts/999999999", None, "*", None).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(resp.headers().get("etag").is_none());
    s.shutdown().await.unwrap();
}

#[sqlx::test(migrator = "quiver_store::PG_MIGRATOR")]
async fn a_change_changes_the_tag_and_the_old_one_gets_the_new_page(pool: PgPool) {
    let mut s = start_with_events(pool).await;
    let viewer = busy_viewer(&s).await;
    let target = scalar(
        &s.pool,
        &format!(
            "SELECT min(id) FROM users WHERE id <> {viewer} AND id NOT IN
               (SELECT followee_id FROM follows WHERE follower_id = {viewer})"
        ),
    )
    .await;
    let path = format!("/api/v1/users/{target}");
    let resp = s.get(&path, Some(viewer)).send().await.unwrap();
    let old = strong_tag(resp.headers());
    let before: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    let resp = s
        .http
        .put(s.url(&format!("/api/v1/users/{target}/follow")))
        .bearer_auth(s.token(viewer))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    s.settle().await;
    let resp = conditional(&s, &path, Some(viewer), &old, None).await;
    assert_eq!(resp.status(), StatusCode::OK, "the profile changed: no 304");
    let new = strong_tag(resp.headers());
    assert_ne!(new, old);
    let after: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_ne!(after, before, "the viewer now follows them");
    let resp = conditional(&s, &path, Some(viewer), &new, None).await;
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    s.shutdown().await.unwrap();
}
