//! Integration tests of quiver-events against real PostgreSQL and Redis.
