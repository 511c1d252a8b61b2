//! Tests of quiver-enrich with in-memory loaders.

mod batcher;
mod prefetch;
