//! Tests of quiver-server against a real PostgreSQL and Redis (`cargo xtask test` provides
//! both).

mod real_stack;
