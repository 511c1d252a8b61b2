//! Tests of quiver-codec: snapshots of every response shape, splice ≡ whole encoding on
//! generated inputs, and refused bodies.

mod fixtures;
mod requests;
mod snapshots;
mod splice;
