//! Integration tests of quiver-store against a real PostgreSQL (`DATABASE_URL`, one fresh
//! database per test) and a real SQLite file: the contract suite runs against both; the
//! read-replica tests on streaming replicas of their own.

mod contract;
mod postgres;
mod replicas;
mod support;
