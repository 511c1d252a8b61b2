#![doc = include_str!("../README.md")]
pub mod encode;
pub mod fragment;
pub mod openapi;
pub mod problem;
pub mod request;
pub mod wire;
