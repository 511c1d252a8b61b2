//! Integration tests of quiver-store against a real PostgreSQL (`DATABASE_URL`, one fresh
//! database per test) and a real SQLite file: the contract suite runs against both.

mod contract;
mod postgres;
mod support;
