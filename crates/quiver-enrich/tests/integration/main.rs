//! Tests of quiver-enrich with in-memory loaders.

mod batches;
mod contamination;
mod feeds;
mod prefetch;
mod support;
