//! Tests of quiver-server against a real PostgreSQL and Redis (`cargo xtask test` provides
//! both), over real TCP on loopback.

mod caching;
mod celebrities;
mod coherence;
mod faults;
mod finished_pages;
mod hardening;
mod http;
mod limits;
mod read_your_writes;
mod real_stack;
mod support;
mod writes;
