//! Integration tests of quiver-cache against a real Redis (`REDIS_URL`, as `cargo xtask
//! test` provides) and, for the outage test, a throwaway `redis-server` it starts itself;
//! the cluster tests start Redis Clusters of their own; the batcher's tests need neither.

mod batcher;
mod cluster;
mod consistent;
mod fences;
mod flight;
mod redis;
mod sizing;
mod support;
mod ttl;
