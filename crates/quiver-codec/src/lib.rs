//! quiver's public JSON, the only crate that knows it.
//!
//! - [`wire`]: the response types and explicit conversions from domain entities.
//! - [`fragment`]: entities encoded once into fragments, and feed pages spliced from them
//!   into one pre-sized buffer: the same JSON as encoding the page whole, at close to
//!   copying speed.
//! - [`encode`]: the code simd-json-derive generates, for everything not pre-encoded
//!   (the fastest serializer measured; the numbers are in that module).
//! - [`request`]: strict request parsing (unknown fields rejected) and field-by-field
//!   validation, with the parser that measured fastest on our bodies.
//! - [`problem`]: RFC 9457 `application/problem+json` errors.
//! - [`openapi`]: the OpenAPI 3.1 schema of all of the above.
//!
//! ```
//! use quiver_codec::fragment::{AuthorFragment, PostFragment, SplicedItem, splice_page};
//! use quiver_codec::wire::{AuthorWire, PostFieldsWire, ViewerWire};
//!
//! let post = PostFragment::encode(&PostFieldsWire {
//!     id: 1, kind: "post".into(), body: "hi".into(), created_at: "2026-01-01T00:00:00.000000Z".into(),
//!     media: vec![], tags: vec![], wish: None,
//! });
//! let author = AuthorFragment::encode(&AuthorWire {
//!     id: 2, handle: "ada".into(), display_name: "Ada".into(), avatar_url: None, verified: true, creator: false,
//! });
//! let viewer = Some(ViewerWire { follows_author: true, followed_by_author: false });
//! let page = splice_page(&[SplicedItem { post: &post, author: &author, viewer }], None, None, &[]);
//! let json: serde_json::Value = serde_json::from_slice(&page).unwrap();
//! assert_eq!(json["items"][0]["author"]["handle"], "ada");
//! ```

pub mod encode;
pub mod fragment;
pub mod openapi;
pub mod problem;
pub mod request;
pub mod wire;
