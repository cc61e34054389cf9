//! End-to-end tests of the real `veza` binary; they live in `tests/` and share the harness in
//! `tests/support/mod.rs`.
//!
//! The tests run the binary as a child process, so build it first (with the same
//! `CARGO_TARGET_DIR`), or point `VEZA_BIN` at one:
//!
//! ```text
//! cargo build -p veza && cargo test -p veza-e2e
//! ```
//!
//! `tests/cluster.rs` also needs PostgreSQL (`psql -h 127.0.0.1 -U postgres`, trust auth) and
//! Redis (`redis-cli -h 127.0.0.1 -p 6379`) on loopback.
