//! wsbench: a blocking, thread-per-connection WebSocket toolkit.
//!
//! The binary (`src/main.rs`) only parses the command line and dispatches;
//! everything it runs lives here so that benches and tests reach the same
//! code. One module per subcommand or concern:
//!
//! - [`cli`]: every flag, and the parsers for durations and sizes.
//! - [`wire`]: RFC 6455 framing as bytes in, bytes out; no I/O.
//! - [`server`]: `wsbench server`: accept loop, capacity, handshake, one
//!   connection's reader and writer over its byte stream, the endpoints.
//! - [`client`]: URLs, connecting, masked sends, the thin HTTP client.
//! - [`embedded`]: the one place a client command starts a server.
//! - [`stats`]: the image statistics kernel and its reply text.
//! - [`stream`]: every connection's byte stream, server or client: TCP or
//!   a rustls session shared by a reader and writers.
//! - [`bench`]: `wsbench bench`, the image speed test client.
//! - [`chat`]: `wsbench chat`, the interactive client that reconnects and
//!   loses no typed line.
//! - [`pingpong`]: `wsbench pingpong`, WebSocket vs HTTP round trips as a table.
//! - [`load`]: `wsbench load`, many connections in batches, held, then closed.
//! - [`report`]: `wsbench report`, bench CSVs into a Markdown summary and
//!   SVG plots.
//! - [`metrics`]: latency recording and summaries, server counters.
//! - [`error`]: the top-level error and its exit status.
//! - [`export`]: the one CSV schema of a timed message, and `--json` lines.
//! - [`process`]: this process's limits (the open-file limit).
//! - [`progress`]: the progress bar, on a terminal only.
//! - [`signal`]: Ctrl-C and SIGTERM, for every subcommand.

pub mod bench;
pub mod chat;
pub mod cli;
pub mod client;
pub mod embedded;
pub mod error;
pub mod export;
pub mod load;
pub mod metrics;
pub mod pingpong;
pub mod process;
pub mod progress;
pub mod report;
pub mod server;
pub mod signal;
pub mod stats;
pub mod stream;
pub mod wire;
