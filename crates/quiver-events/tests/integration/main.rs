//! Integration tests of quiver-events against a real PostgreSQL (a fresh database per
//! test), a real SQLite file and a real Redis (a fresh stream namespace per test); the
//! cluster test starts a Redis Cluster of its own.

mod cluster;
mod delivery;
mod resilience;
mod support;
