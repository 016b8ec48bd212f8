//! wsbench's integration tests: one test binary, a module per command or
//! concern, as ripgrep's `tests/tests.rs` does. One binary is linked once
//! instead of once per file, and libtest runs every test of every module
//! from one pool of threads.
//!
//! `cargo test --release --test it chat_client::` runs one module;
//! `common` holds the furniture they share (server guard, clients, and
//! `timed!`, which every test body runs under: a time limit that names the
//! test and kills only that test's processes, and `timed_alone!` for the
//! few heavy tests that must not run beside others). Paths to
//! `tests/peers/` and `tests/requirements.txt` go through
//! `CARGO_MANIFEST_DIR`, so they do not depend on this layout.

mod common;

mod bench;
mod chat_client;
mod chat_server;
mod compare_python;
mod compare_tokio;
mod endpoints;
mod fanout;
mod fuzz_server;
mod http;
mod http_hostile;
mod interop;
mod lifecycle;
mod limits;
mod load;
mod misbehaving_peers;
mod pingpong;
mod rate;
mod redis;
mod report;
mod server_image;
mod tls;
mod tls_clients;
mod utf8_strict;
