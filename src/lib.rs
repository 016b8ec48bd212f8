//! wsbench: a blocking, thread-per-connection WebSocket toolkit.
//!
//! The binary (`src/main.rs`) only parses the command line and dispatches;
//! everything it runs lives here so that benches and tests reach the same
//! code. One module per subcommand or concern:
//!
//! - [`cli`]: every flag, and the parsers for durations and sizes.
//! - [`net`]: one WebSocket connection split into a reader and a shared
//!   writer, and the client-side connect.
//! - [`server`]: `wsbench server`: accept loop, handshake, endpoints.
//! - [`stats`]: the image statistics kernel and its reply text.
//! - [`bench`]: `wsbench bench`, the image speed test client.
//! - [`chat`]: `wsbench chat`, the interactive client that reconnects and
//!   loses no typed line.
//! - [`pingpong`]: `wsbench pingpong`, WebSocket vs HTTP round trips as a table.
//! - [`load`]: `wsbench load`, many connections in batches, held, then closed.
//! - [`report`]: `wsbench report`, bench CSVs into a Markdown summary and
//!   SVG plots.
//! - [`http`]: a minimal blocking HTTP/1.1 client (pingpong, `/metrics`).
//! - [`metrics`]: latency recording and summaries, server counters.
//! - [`error`]: the top-level error and its exit status.
//! - [`progress`]: the progress bar, on a terminal only.
//! - [`signal`]: Ctrl-C and SIGTERM, for every subcommand.

pub mod bench;
pub mod chat;
pub mod cli;
pub mod error;
pub mod http;
pub mod load;
pub mod metrics;
pub mod net;
pub mod pingpong;
pub mod progress;
pub mod report;
pub mod server;
pub mod signal;
pub mod stats;
