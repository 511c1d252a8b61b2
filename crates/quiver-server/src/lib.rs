//! quiver's service layer: the one place where concrete types meet. [`compose`] builds the
//! read stack (store → coalescing batcher → tiered cache → engine) that the HTTP service
//! serves.

pub mod compose;
