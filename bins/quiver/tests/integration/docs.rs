//! `GET /docs` in a real headless browser (Debian's Chromium): the page of the demo server
//! loads, and every operation of the OpenAPI document it serves is listed on it.

use crate::serve::{curl_line, demo};
use std::path::PathBuf;
use std::process::Command;

fn chromium() -> PathBuf {
    crate::tool("QUIVER_CHROMIUM", "chromium", "chromium")
}

#[tokio::test]
async fn the_docs_page_lists_every_operation_in_a_real_browser() {
    let (_child, lines, _dir) = demo(&[]);
    let (_, url) = curl_line(&lines);
    let base = url.split("/api/").next().unwrap().to_owned();
    let http = reqwest::Client::new();
    let resp = http.get(format!("{base}/docs")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    let doc: serde_json::Value = serde_json::from_slice(
        &http
            .get(format!("{base}/openapi.json"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();

    // The browser renders the page and hands back the DOM it built.
    let profile = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let url = format!("{base}/docs");
        let profile = profile.path().to_owned();
        move || {
            Command::new(chromium())
                .args(["--headless", "--no-sandbox", "--disable-gpu"])
                .arg(format!("--user-data-dir={}", profile.display()))
                .args(["--dump-dom", &url])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && dom.contains("</html>"),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap();
            let section = format!(
                "<section class=\"operation\" id=\"{id}\" data-method=\"{method}\" data-path=\"{path}\">"
            );
            assert!(dom.contains(&section), "{method} {path} is not on the page");
            assert!(
                dom.contains(&format!("<a href=\"#{id}\">")),
                "{method} {path} is not in the page's index"
            );
            operations += 1;
        }
    }
    assert!(operations >= 18, "{operations} operations");
    assert!(
        dom.contains("id=\"schema-FeedPageWire\""),
        "schemas are listed"
    );
}
