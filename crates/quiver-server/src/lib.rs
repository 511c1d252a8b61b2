//! quiver's service layer: the one place where concrete types meet. [`compose`] builds the
//! read stack (store → coalescing batcher → tiered cache → engine); [`App`] is the request
//! pipeline (routing, auth, limits, metrics) over it; [`serve`] runs it on a listener with
//! hyper (HTTP/1.1 and h2c) until shutdown, then drains.

pub mod admin;
mod admission;
mod app;
pub mod auth;
mod client;
pub mod compose;
pub mod compression;
mod conditional;
mod config;
mod docs;
mod metrics;
mod openapi;
mod respond;
mod router;
mod serve;

pub use app::{App, Parts};
pub use config::ServerConfig;
pub use router::{ROUTES, Route};
pub use serve::serve;
