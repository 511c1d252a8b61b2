#![doc = include_str!("../README.md")]
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
mod written;

pub use app::{App, Parts};
pub use config::ServerConfig;
pub use router::{ROUTES, Route};
pub use serve::serve;
