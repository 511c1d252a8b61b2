//! `GET /docs`: the OpenAPI document rendered for people, as one self-contained HTML page
//! (no script, nothing fetched), built once from the same document `/openapi.json` serves.

use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::Value;

/// The operations' methods, in the order a path lists them.
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The page for `doc` (the served document, as JSON).
pub(crate) fn page(doc: &Value) -> String {
    let title = doc["info"]["title"].as_str().unwrap_or("API");
    let version = doc["info"]["version"].as_str().unwrap_or("");
    let operations: Vec<(&str, &str, &Value)> = doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter_map(move |m| item.get(*m).map(|op| (*m, path.as_str(), op)))
        })
        .collect();
    let schemas = doc["components"]["schemas"].as_object();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " " (version) " — API reference" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { (title) " " small { (version) } }
                    @if let Some(d) = doc["info"]["description"].as_str() { p { (d) } }
                    p {
                        "Every operation below, generated from "
                        a href="/openapi.json" { code { "/openapi.json" } }
                        ". Errors are " code { "application/problem+json" } "."
                    }
                }
                nav {
                    h2 { "Operations" }
                    ul {
                        @for (method, path, op) in &operations {
                            li {
                                a href={ "#" (op_id(op)) } {
                                    span class={ "method " (method) } { (method.to_uppercase()) }
                                    " " code { (path) }
                                }
                            }
                        }
                    }
                }
                main {
                    @for (method, path, op) in &operations { (operation(method, path, op)) }
                    @if let Some(schemas) = schemas {
                        h2 id="schemas" { "Schemas" }
                        @for (name, schema) in schemas {
                            section class="schema" id={ "schema-" (name) } {
                                h3 { (name) }
                                pre { (serde_json::to_string_pretty(schema).unwrap_or_default()) }
                            }
                        }
                    }
                }
            }
        }
    }
    .into_string()
}

/// Prose with `code` spans, as the document's descriptions write them.
fn prose(text: &str) -> Markup {
    html! {
        @for (i, part) in text.split('`').enumerate() {
            @if i % 2 == 1 { code { (part) } } @else { (part) }
        }
    }
}

fn op_id(op: &Value) -> &str {
    op["operationId"].as_str().unwrap_or("operation")
}

/// A `$ref` to a component schema as a link to it on this page.
fn schema_link(schema: &Value) -> Markup {
    match schema["$ref"].as_str().and_then(|r| r.rsplit('/').next()) {
        Some(name) => html! { a href={ "#schema-" (name) } { code { (name) } } },
        None => html! { code { (schema["type"].as_str().unwrap_or("object")) } },
    }
}

fn operation(method: &str, path: &str, op: &Value) -> Markup {
    let auth = match op["security"].as_array() {
        None => "none",
        Some(s)
            if s.iter()
                .any(|r| r.as_object().is_some_and(|o| o.is_empty())) =>
        {
            "optional bearer token"
        }
        Some(_) => "bearer token required",
    };
    html! {
        section class="operation" id=(op_id(op)) data-method=(method) data-path=(path) {
            h3 {
                span class={ "method " (method) } { (method.to_uppercase()) }
                " " code { (path) }
            }
            @if let Some(s) = op["summary"].as_str() { p class="summary" { (prose(s)) } }
            p { "Authentication: " (auth) }
            @if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
                table {
                    thead { tr { th { "parameter" } th { "in" } th { "type" } th { "" } } }
                    tbody {
                        @for p in params {
                            tr {
                                td { code { (p["name"].as_str().unwrap_or("")) } }
                                td { (p["in"].as_str().unwrap_or("")) }
                                td { (schema_link(&p["schema"])) }
                                td {
                                    @if p["required"].as_bool() == Some(true) { strong { "required. " } }
                                    (prose(p["description"].as_str().unwrap_or("")))
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(body) = op["requestBody"]["content"].as_object() {
                p {
                    "Body: "
                    @for (kind, c) in body { code { (kind) } " " (schema_link(&c["schema"])) }
                }
            }
            @if let Some(responses) = op["responses"].as_object() {
                ul class="responses" {
                    @for (status, r) in responses {
                        li {
                            strong { (status) } " " (prose(r["description"].as_str().unwrap_or("")))
                            @if let Some(content) = r["content"].as_object() {
                                @for (kind, c) in content {
                                    " — " code { (kind) } " " (schema_link(&c["schema"]))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

const STYLE: &str = "
body { font: 15px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 60rem; padding: 1rem; color: #1d1d1f; }
code, pre { font-family: ui-monospace, monospace; }
nav ul { columns: 2; list-style: none; padding: 0; }
nav a { text-decoration: none; color: inherit; }
.method { display: inline-block; min-width: 4.2em; font-weight: 600; font-size: 0.8em; text-align: center; border-radius: 4px; padding: 0 0.3em; color: #fff; background: #555; }
.method.get { background: #2f6fb0; } .method.post { background: #2e8b57; }
.method.put { background: #b7791f; } .method.delete { background: #c53030; }
section.operation { border-top: 1px solid #ddd; padding-top: 0.5rem; margin-top: 1.5rem; }
table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: 0.2rem 0.5rem; border-bottom: 1px solid #eee; vertical-align: top; }
pre { background: #f6f6f6; padding: 0.75rem; overflow-x: auto; }
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_a_section_and_text_is_escaped() {
        let doc = crate::openapi::document_value();
        let html = page(&doc);
        for (method, path, _) in crate::router::ROUTES {
            assert!(
                html.contains(&format!(
                    "data-method=\"{}\" data-path=\"{path}\"",
                    method.to_lowercase()
                )),
                "{method} {path}"
            );
        }
        let mut evil = doc.clone();
        evil["info"]["title"] = "<script>alert(1)</script>".into();
        assert!(!page(&evil).contains("<script>alert"));
    }
}
