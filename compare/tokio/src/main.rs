//! `wsbench-tokio`: the async peer that `make compare` measures
//! `wsbench server` against (#8, #17).
//!
//! It serves `/` (also `/image`), `/echo`, `/hello` and `/chat`,
//! `/chat/{room}` with the replies SPEC.md gives `wsbench server`, written
//! the way a competent tokio-tungstenite server usually is: a
//! multi-threaded runtime (one worker per core, or `TOKIO_WORKER_THREADS`),
//! one task per connection that reads a message and awaits its reply in one
//! loop. Slow replies compute on the worker, fast-mode statistics on
//! tokio's blocking pool. Routing, the text rule, the size parser and the
//! statistics kernel come from the main crate, so that a comparison
//! measures the I/O model, not a second copy of the rules (#14).
//!
//! A connection goes: accept (TCP_NODELAY) → handshake, where the path
//! picks the endpoint or gets 404 → loop { read → reply → write } until the
//! peer closes; chat members are in `chat.rs`. What the comparison does not
//! exercise is left out: plain HTTP, metrics, connection limits and server
//! pings.
//!
//! With `--tls-cert` and `--tls-key` it serves `wss://` (#15): the TLS
//! handshake (tokio-rustls, set up as ours in `tls.rs`) comes first in the
//! connection's task, and the same code then runs over the TLS stream.

mod chat;
mod tls;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use log::{debug, info, warn};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream, lookup_host};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::spawn_blocking;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{WebSocketStream, accept_hdr_async_with_config};
use wsbench::cli::{ResponseMode, parse_size};
use wsbench::server::handshake::{Endpoint, route};
use wsbench::server::image::text_reply;
use wsbench::stats::ImageStats;

/// A tokio + tokio-tungstenite WebSocket server with wsbench's `/`,
/// `/image`, `/echo`, `/hello` and `/chat` endpoints, for comparison runs.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on; 0 picks a free one (the listening line shows it).
    #[arg(long, default_value_t = 7788)]
    port: u16,
    /// slow: compute an image's statistics, then reply with them; fast:
    /// reply `Received: {len}` at once and compute afterwards. A
    /// connection's `?response=fast|slow` overrides it.
    #[arg(long, value_enum, default_value_t = ResponseMode::Slow)]
    response: ResponseMode,
    /// Largest message or frame accepted: 480000, 64KiB, 16MiB.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    max_message_size: usize,
    /// Bytes tungstenite reads (and zero-fills) at once into a connection's
    /// read buffer, which it keeps for the connection's life: the floor of
    /// an idle connection's memory. tungstenite's default is 128KiB.
    #[arg(long, default_value = "128KiB", value_parser = parse_size)]
    read_buffer_size: usize,
    /// Chat: messages that may wait for one member; past that the member
    /// is dropped with 1008 (`wsbench server`'s default).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    max_queue: u32,
    /// Serve wss:// with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("cannot start the tokio runtime: {0}")]
    Runtime(String),
    #[error("cannot bind {addr}: {cause}")]
    Bind { addr: String, cause: String },
    #[error("cannot handle signals: {0}")]
    Signal(String),
    /// Already a whole line: it names the flag and the file.
    #[error("{0}")]
    Tls(String),
}

fn main() -> ExitCode {
    // clap prints usage errors itself and exits 2 (0 for --help).
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(cause(&e)))?;
    // Dropping the runtime on return lets running fast-mode jobs finish.
    runtime.block_on(serve(args))
}

/// Binds, prints the listening line, and accepts until Ctrl-C or SIGTERM.
async fn serve(args: Args) -> Result<(), Error> {
    // Before binding: a bad certificate is a usage error, not a server
    // that listens and then fails every handshake.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key).map_err(Error::Tls)?),
        _ => None,
    };
    let shown = format!("{}:{}", args.host, args.port);
    let bind_err = |e: io::Error| Error::Bind {
        addr: shown.clone(),
        cause: cause(&e),
    };
    let listener = listen(&args.host, args.port).await.map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    // Registered before the listening line, so that a script that signals
    // as soon as it reads the line gets a clean exit, not a killed process.
    let signal_err = |e: io::Error| Error::Signal(cause(&e));
    let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_err)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(signal_err)?;
    {
        let mut out = io::stdout().lock();
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        let _ = writeln!(out, "listening on {scheme}://{addr}");
        let _ = out.flush();
    }
    let config = Arc::new(Config {
        response: args.response,
        websocket: WebSocketConfig::default()
            .max_message_size(Some(args.max_message_size))
            .max_frame_size(Some(args.max_message_size))
            .read_buffer_size(args.read_buffer_size),
        max_queue: args.max_queue as usize,
        hub: chat::Hub::default(),
        tls,
    });
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    next_id += 1;
                    tokio::spawn(connection(stream, next_id, Arc::clone(&config)));
                }
                Err(e) => {
                    // Out of file descriptors, typically: give closing
                    // connections a moment instead of spinning on accept.
                    warn!("cannot accept: {}", cause(&e));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }
    info!("shutting down");
    Ok(())
}

/// The listen backlog, as `wsbench server`'s. `TcpListener::bind` asks
/// for 1024, and `wsbench bench --mode parallel` connects 1000 clients at
/// once: an overflow drops a SYN, and that client waits a 1 s retransmit,
/// which then dominates the run's wall time.
const BACKLOG: u32 = 4096;

/// `TcpListener::bind` with our backlog: the first address of `host` that
/// binds.
async fn listen(host: &str, port: u16) -> io::Result<TcpListener> {
    let listen_on = |addr: SocketAddr| {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)
    };
    let mut last = None;
    for addr in lookup_host((host, port)).await? {
        match listen_on(addr) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address")))
}

/// What every connection reads.
struct Config {
    response: ResponseMode,
    websocket: WebSocketConfig,
    max_queue: usize,
    hub: chat::Hub,
    /// Set for wss://.
    tls: Option<TlsAcceptor>,
}

/// A connection's byte stream: TCP, or TLS over it. Generic rather than
/// an enum, so that plain ws:// runs exactly the code it ran before TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

pub(crate) type Ws<S> = WebSocketStream<S>;

/// One connection, from accept to close: the TLS handshake if any, then
/// the WebSocket.
async fn connection(stream: TcpStream, id: u64, config: Arc<Config>) {
    // Request/reply traffic: without it a small reply can wait for the
    // client's delayed ACK.
    if let Err(e) = stream.set_nodelay(true) {
        debug!("conn {id}: cannot set TCP_NODELAY: {}", cause(&e));
    }
    match &config.tls {
        None => websocket(stream, id, &config).await,
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(stream) => websocket(stream, id, &config).await,
            Err(e) => info!("conn {id}: TLS handshake failed: {}", cause(&e)),
        },
    }
}

/// The WebSocket handshake, where the path picks the endpoint, and the
/// endpoint's loop.
async fn websocket<S: Io>(stream: S, id: u64, config: &Config) {
    let mut endpoint = None;
    // The signature is tungstenite's `Callback`, large `Err` and all.
    #[allow(clippy::result_large_err)]
    let route = |request: &Request, response: Response| {
        let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
        endpoint = route(target);
        match endpoint {
            Some(_) => Ok(response),
            None => Err(not_found()),
        }
    };
    let ws = match accept_hdr_async_with_config(stream, route, Some(config.websocket)).await {
        Ok(ws) => ws,
        Err(tungstenite::Error::Http(response)) => {
            info!("conn {id}: refused with {}", response.status());
            return;
        }
        Err(e) => {
            info!("conn {id}: handshake failed: {e}");
            return;
        }
    };
    let endpoint = endpoint.expect("a handshake succeeds only after `route` found one");
    debug!("conn {id}: {endpoint:?}");
    let served = match endpoint {
        Endpoint::Chat { room } => chat::member(ws, id, room, &config.hub, config.max_queue).await,
        Endpoint::Image { response } => {
            serve_messages(ws, id, Serve::Image(response.unwrap_or(config.response))).await
        }
        Endpoint::Echo => serve_messages(ws, id, Serve::Echo).await,
        Endpoint::Hello => serve_messages(ws, id, Serve::Hello).await,
    };
    match served {
        Ok(()) => debug!("conn {id}: closed"),
        Err(e) if is_disconnect(&e) => debug!("conn {id}: {e}"),
        Err(e) => info!("conn {id}: {e}"),
    }
}

/// The request/reply endpoints, with the image mode resolved.
#[derive(Clone, Copy)]
enum Serve {
    Image(ResponseMode),
    Echo,
    Hello,
}

/// Reads messages and writes each one's reply, until the peer closes.
async fn serve_messages<S: Io>(
    mut ws: Ws<S>,
    id: u64,
    serve: Serve,
) -> Result<(), tungstenite::Error> {
    let mut seq = 0u64;
    while let Some(message) = ws.next().await {
        let message = message?;
        let reply = match (serve, message) {
            (Serve::Echo, message @ (Message::Text(_) | Message::Binary(_))) => message,
            (Serve::Hello, Message::Text(text)) => Message::text(format!("Hello {text}!")),
            (Serve::Hello, Message::Binary(_)) => Message::text("Error: /hello expects text"),
            (Serve::Image(_), Message::Text(text)) => Message::text(text_reply(&text)),
            (Serve::Image(_), Message::Binary(pixels)) if pixels.is_empty() => {
                Message::text("Error: empty image")
            }
            (Serve::Image(ResponseMode::Slow), Message::Binary(pixels)) => {
                // On the worker: a 480,000-byte image takes about 50 µs,
                // short enough not to starve the runtime, and the reply
                // waits for it anyway. `spawn_blocking` and awaiting it
                // was 1.24x slower serially (two thread hand-offs per
                // message) and no faster in parallel.
                let stats = ImageStats::compute(&pixels).expect("the image is not empty");
                Message::text(stats.reply())
            }
            (Serve::Image(ResponseMode::Fast), Message::Binary(pixels)) => {
                seq += 1;
                let len = pixels.len();
                // Detached: the acknowledgement does not wait for it.
                spawn_blocking(move || {
                    if let Some(stats) = ImageStats::compute(&pixels) {
                        debug!("conn {id} image {seq}: > {}", stats.reply());
                    }
                });
                Message::text(format!("Received: {len}"))
            }
            // Pings are answered by tungstenite; a close is answered by it
            // and then ends the stream.
            _ => continue,
        };
        ws.send(reply).await?;
    }
    Ok(())
}

fn not_found() -> ErrorResponse {
    let mut response = ErrorResponse::new(Some("not found\n".to_string()));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// A peer that went away, which is how benchmark clients often end.
pub(crate) fn is_disconnect(e: &tungstenite::Error) -> bool {
    use tungstenite::error::ProtocolError::ResetWithoutClosingHandshake;
    match e {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => true,
        tungstenite::Error::Protocol(ResetWithoutClosingHandshake) => true,
        // UnexpectedEof: a TLS peer that closed its socket without a
        // close_notify, which rustls reports as an error.
        tungstenite::Error::Io(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// An I/O error as a short lower-case cause, without `(os error N)`.
fn cause(e: &io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or_default();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
