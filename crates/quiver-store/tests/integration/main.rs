//! Integration tests of quiver-store against real PostgreSQL and SQLite.
