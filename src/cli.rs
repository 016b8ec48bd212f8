//! The command line: every subcommand, every flag and its help, and the
//! parsers for the value forms SPEC.md fixes (durations `500ms`, `1s`,
//! `2.5s`, `1m`; sizes `800x600`, `480000`, `64KiB`, `16MiB`).
//!
//! Flag names and defaults are spelled exactly as in SPEC.md: other programs
//! and scripts call them. clap reports bad usage with exit status 2.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "wsbench",
    version,
    about = "Blocking, thread-per-connection WebSocket toolkit: server, image speed test and more",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the WebSocket server (image statistics on `/` and `/image`).
    Server(ServerArgs),
    /// The image speed test: send images, time every message, summarise.
    Bench(BenchArgs),
    /// Interactive chat client: stdin lines out, `< ` lines in; heartbeats,
    /// reconnects, no typed line lost.
    Chat(ChatArgs),
    /// WebSocket vs HTTP: N request/reply round trips over each, as a table.
    Pingpong(PingpongArgs),
    /// Connection load test: open many connections in batches, hold, round-trip, close.
    Load(LoadArgs),
    /// Summarise `bench` CSV files: a Markdown table and two SVG plots.
    Report(ReportArgs),
    /// Chat fan-out at a fixed rate: N members of one room publish, every
    /// member times each delivery from its intended send time (#16).
    Fanout(FanoutArgs),
}

/// When the server computes an image's statistics relative to its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResponseMode {
    /// Compute, then reply with the statistics.
    Slow,
    /// Reply `Received: {len}` at once; compute on the pool in the background.
    Fast,
}

impl ResponseMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseMode::Slow => "slow",
            ResponseMode::Fast => "fast",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 picks a free one (see the `listening on` line).
    #[arg(long, default_value_t = 7788)]
    pub port: u16,
    /// Reply after computing the statistics (slow) or at once (fast).
    #[arg(long, value_enum, default_value_t = ResponseMode::Slow)]
    pub response: ResponseMode,
    /// Threads computing fast-mode (background) statistics [default: number of cores].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub pool_threads: Option<u32>,
    /// Open connections beyond this are refused with HTTP 503.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Largest message or frame accepted; bigger ones close with 1009.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub max_message_size: usize,
    /// Background statistics jobs that may wait at once; past that the
    /// sender's connection waits (backpressure), no job is dropped.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pending: u32,
    /// Drop a connection whose handshake is not complete by then.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// Close a keep-alive HTTP connection that sends no new request for this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Ping every connection this often.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub ping_interval: Duration,
    /// Close a connection that sends nothing for this long after a ping;
    /// also how long any write to a peer may make no progress.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub ping_timeout: Duration,
    /// Chat: messages that may wait for one client; past that (or past
    /// --max-queue-bytes) the client is dropped with 1008.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_queue: u32,
    /// Chat: payload bytes that may wait for one client.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub max_queue_bytes: usize,
    /// Append one JSON line per background statistics job to FILE.
    #[arg(long, value_name = "FILE")]
    pub stats_log: Option<PathBuf>,
    /// Serve wss:// and HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve wss:// with a certificate for localhost and 127.0.0.1 made at
    /// start; its SHA-256 fingerprint is logged.
    #[arg(long)]
    pub tls_self_signed: bool,
    /// Share chat rooms with every other server started with the same
    /// Redis (redis://HOST:PORT[/DB]); while it is down, rooms stay local.
    #[arg(long, value_name = "URL", value_parser = parse_redis_url)]
    pub redis: Option<String>,
}

impl Default for ServerArgs {
    fn default() -> Self {
        Cli::parse_from(["wsbench", "server"]).command.into_server()
    }
}

impl Command {
    fn into_server(self) -> ServerArgs {
        match self {
            Command::Server(args) => args,
            _ => unreachable!("parsed from the `server` subcommand"),
        }
    }
}

/// How `bench` spreads messages over connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchMode {
    /// One long-lived connection, one message at a time.
    Serial,
    /// A new connection per message, one at a time.
    SerialShort,
    /// A new connection per message, many at once on OS threads.
    Parallel,
}

impl BenchMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BenchMode::Serial => "serial",
            BenchMode::SerialShort => "serial-short",
            BenchMode::Parallel => "parallel",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Server to test, e.g. ws://127.0.0.1:7788/ [default: an embedded server].
    #[arg(long)]
    pub url: Option<String>,
    /// Messages to send.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// Image size: WIDTHxHEIGHT or bytes (`800x600`, `480000`, `64KiB`).
    #[arg(long, default_value = "800x600", value_parser = parse_size)]
    pub size: usize,
    /// serial: one connection; serial-short: a connection per message, one
    /// at a time; parallel: a connection per message, many at once.
    #[arg(long, value_enum, default_value_t = BenchMode::Serial)]
    pub mode: BenchMode,
    /// Parallel mode: connections at once.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    pub concurrency: u32,
    /// Response mode of the embedded server (ignored with --url).
    #[arg(long, value_enum, default_value_t = ResponseMode::Slow)]
    pub response: ResponseMode,
    /// Seed of the pseudo-random pixels (the same image for every message).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Check every reply against statistics computed here; a mismatch fails the run.
    #[arg(long)]
    pub verify: bool,
    /// Limit for each connect, send and receive.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Stop the run after this many failed messages in a row (a server
    /// that accepts and never replies would otherwise cost --count ×
    /// --timeout); 0 never stops.
    #[arg(long, default_value_t = 10)]
    pub max_failures: u64,
    /// Write one CSV row per message to FILE.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Run the embedded server over TLS (wss://, a self-signed certificate
    /// this run trusts).
    #[arg(long, conflicts_with = "url")]
    pub tls: bool,
    #[command(flatten)]
    pub trust: TlsArgs,
    /// Open loop (#16): send this many messages per second in all, on a
    /// fixed schedule over --connections, whether or not replies came
    /// back; latency counts from each message's intended send time
    /// (coordinated omission corrected, as wrk2).
    #[arg(long, value_name = "PER_S", value_parser = parse_rate, conflicts_with_all = ["mode", "count", "concurrency"])]
    pub rate: Option<f64>,
    /// With --rate: how long to measure, after --warmup.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, requires = "rate")]
    pub duration: Duration,
    /// With --rate: long-lived connections the schedule is spread over,
    /// each with one message in flight.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=20_000), requires = "rate")]
    pub connections: u32,
    /// With --rate: run the schedule this long first, unmeasured.
    #[arg(long, default_value = "0s", value_parser = parse_duration, requires = "rate")]
    pub warmup: Duration,
    /// With --rate: binary (an image of --size) or text (`Ping {n}!`,
    /// answered by any server that answers text).
    #[arg(long, value_enum, default_value_t = MessageKind::Binary, requires = "rate")]
    pub message: MessageKind,
    /// With --rate: write the corrected latencies as an HdrHistogram
    /// interval log (µs, one interval a second), for `wsbench report`.
    #[arg(long, value_name = "FILE", requires = "rate")]
    pub hdr_log: Option<PathBuf>,
}

/// What `bench --rate` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MessageKind {
    /// The seeded image of --size bytes.
    Binary,
    /// `Ping {n}!`: small-message latency against any server that answers text.
    Text,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Binary => "binary",
            MessageKind::Text => "text",
        }
    }
}

/// A rate in messages per second: a positive, finite number.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a rate (messages per second, e.g. 500 or 2.5)"
        )),
    }
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// A chat room to join, e.g. ws://127.0.0.1:7788/chat/fanout;
    /// repeatable: members are spread over the URLs in turn (several
    /// server instances of one fleet) [default: an embedded server].
    #[arg(long = "url", value_name = "URL")]
    pub urls: Vec<String>,
    /// Members of the room; every one listens, and all but --slow-members publish.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(2..=20_000))]
    pub clients: u32,
    /// Messages published per second, all members together.
    #[arg(long, value_name = "PER_S", value_parser = parse_rate)]
    pub rate: f64,
    /// How long to publish.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    pub duration: Duration,
    /// Pad each message to at least this many bytes (`512`, `4KiB`).
    #[arg(long, default_value = "0", value_parser = parse_size)]
    pub size: usize,
    /// Members (of --clients) that only listen, and read one message every
    /// 100 ms: a slow consumer, to see the server drop it (1008) while the
    /// others lose nothing.
    #[arg(long, default_value_t = 0)]
    pub slow_members: u32,
    /// How long deliveries may trail the last message published; later
    /// ones count as lost.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Limit of each connect.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Write the delivery latencies as an HdrHistogram interval log (µs,
    /// one interval a second), for `wsbench report`.
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub trust: TlsArgs,
}

/// How a client checks a `wss://` (or `https://`) server: every client
/// command flattens these in.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// Also trust the CA certificates in FILE (PEM), beside the Mozilla
    /// roots; repeatable.
    #[arg(long = "ca-file", value_name = "FILE")]
    pub ca_files: Vec<PathBuf>,
    /// Do not verify the server's TLS certificate (a warning says so).
    #[arg(long)]
    pub insecure: bool,
    /// A full TLS handshake on every connection: no session resumption.
    #[arg(long)]
    pub no_resume: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    /// Chat server to join.
    #[arg(long, default_value = "ws://127.0.0.1:7788/chat")]
    pub url: String,
    /// Send a WebSocket ping this often.
    #[arg(long, default_value = "1s", value_parser = parse_positive_duration)]
    pub ping_interval: Duration,
    /// No pong this long after a ping: the connection is dead, reconnect.
    #[arg(long, default_value = "3s", value_parser = parse_positive_duration)]
    pub pong_timeout: Duration,
    /// Longest wait between reconnect attempts (they start at 0.5s and double).
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    pub reconnect_max_delay: Duration,
    /// Extra handshake header, e.g. -H "Authorization: Bearer x"; repeatable.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Ask for this subprotocol (Sec-WebSocket-Protocol); repeatable, in
    /// order of preference.
    #[arg(long = "subprotocol", value_name = "NAME")]
    pub subprotocols: Vec<String>,
    /// With stdin not a terminal: once input has ended, give up on lines
    /// not yet delivered after this long, and exit 1.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub give_up_after: Duration,
    #[command(flatten)]
    pub trust: TlsArgs,
}

/// Parses `Name: value` into a valid HTTP header name and value.
pub fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}` is not a header (try \"Name: value\")"))?;
    let (name, value) = (name.trim(), value.trim());
    tungstenite::http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{name}` is not a valid header name"))?;
    tungstenite::http::HeaderValue::from_str(value)
        .map_err(|_| format!("the value of header `{name}` is not valid"))?;
    Ok((name.to_string(), value.to_string()))
}

/// A duration that must not be zero (a ping interval of 0 would spin).
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err(format!("`{text}` must be more than zero"));
    }
    Ok(duration)
}

/// How `pingpong` carries its HTTP requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HttpMode {
    /// One kept-alive connection for every request of a run.
    Keepalive,
    /// A new connection per request (what the original Python `requests` calls did).
    NewConnection,
    /// Both, one after the other, each beside the same WebSocket run.
    Both,
    /// No HTTP runs: WebSocket figures only (for a WebSocket-only server).
    None,
}

#[derive(Debug, Clone, Args)]
pub struct PingpongArgs {
    /// Round trips per run; each count is one WebSocket run and one HTTP run per mode.
    #[arg(
        value_name = "COUNTS",
        default_values_t = [1000u64, 5000, 10000],
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub counts: Vec<u64>,
    /// WebSocket server, e.g. ws://127.0.0.1:7788/ [default: the embedded
    /// server, or the host and port of --http-url].
    #[arg(long, value_name = "URL")]
    pub ws_url: Option<String>,
    /// HTTP server, e.g. http://127.0.0.1:7788/ [default: the embedded
    /// server, or the host and port of --ws-url].
    #[arg(long, value_name = "URL")]
    pub http_url: Option<String>,
    /// keepalive: one connection for all requests; new-connection: one per
    /// request; both: one run of each; none: WebSocket only.
    #[arg(long, value_enum, default_value_t = HttpMode::Keepalive)]
    pub http_mode: HttpMode,
    /// Also write the Markdown report to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Limit for each connect, send and receive.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Run the embedded server over TLS (wss:// and https://, a
    /// self-signed certificate this run trusts).
    #[arg(long, conflicts_with_all = ["ws_url", "http_url"])]
    pub tls: bool,
    #[command(flatten)]
    pub trust: TlsArgs,
}

#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Server to load, e.g. ws://127.0.0.1:7788/ [default: an embedded server].
    #[arg(long)]
    pub url: Option<String>,
    /// Batches each worker opens, one after the other.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Connections of one batch, set up concurrently.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    pub batch_size: u32,
    /// Worker threads per bind address, each opening its own batches.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// Local source addresses, comma-separated (e.g. 127.0.0.1,127.0.0.2),
    /// so one client can go past one address's ephemeral ports
    /// [default: the system picks].
    #[arg(long, value_delimiter = ',', value_name = "ADDR,...")]
    pub bind: Vec<IpAddr>,
    /// How long every connection stays open after the last batch is set up.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub hold: Duration,
    /// Limit for each TCP connect, handshake and round trip.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub trust: TlsArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// CSV files written by `wsbench bench --out`, one table row and one
    /// plot series each; HdrHistogram interval logs (`--hdr-log`) too,
    /// merged into one latency-by-percentile plot and table; and `make
    /// compare`'s summary.json, drawn as compare.svg and compare.md.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Directory for summary.md, response-time.svg and process-time.svg
    /// (latency.md and its plot for logs, compare.svg and compare.md for a
    /// comparison; created if missing).
    #[arg(long, value_name = "DIR", default_value = "report")]
    pub out: PathBuf,
}

/// Parses `500ms`, `1s`, `2.5s`, `1m`, `1h`, `250us`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 500ms, 1s, 2.5s, 1m)"))?;
    let seconds_per_unit = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown duration unit `{other}` in `{text}`")),
    };
    Duration::try_from_secs_f64(value * seconds_per_unit)
        .map_err(|_| format!("`{text}` is out of range"))
}

/// Parses `800x600` (pixels, one byte each), `480000`, `64KiB`, `16MiB`,
/// `1GiB`, and the decimal `KB`/`MB`/`GB`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let bad = || format!("`{text}` is not a size (try 800x600, 480000, 64KiB, 16MiB)");
    if let Some((w, h)) = text.split_once(['x', 'X']) {
        let w: usize = w.trim().parse().map_err(|_| bad())?;
        let h: usize = h.trim().parse().map_err(|_| bad())?;
        return w.checked_mul(h).ok_or_else(bad);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: usize = number.parse().map_err(|_| bad())?;
    let multiplier: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    value.checked_mul(multiplier).ok_or_else(bad)
}

/// `redis://HOST:PORT[/DB]`, checked here so a typo is bad usage (exit 2).
fn parse_redis_url(s: &str) -> Result<String, String> {
    if !s.starts_with("redis://") {
        return Err("expected redis://HOST:PORT[/DB]".into());
    }
    redis::Client::open(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_spec_form() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn sizes_in_every_spec_form() {
        assert_eq!(parse_size("800x600"), Ok(480_000));
        assert_eq!(parse_size("480000"), Ok(480_000));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert!(parse_size("big").is_err());
        assert!(parse_size("10x").is_err());
        assert!(parse_size("12QiB").is_err());
    }

    #[test]
    fn headers_split_at_the_first_colon() {
        assert_eq!(
            parse_header("Authorization: Bearer a:b"),
            Ok(("Authorization".into(), "Bearer a:b".into()))
        );
        assert_eq!(parse_header("X-Empty:"), Ok(("X-Empty".into(), "".into())));
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
        assert!(parse_positive_duration("0s").is_err());
    }

    #[test]
    fn chat_defaults_match_the_spec() {
        let Command::Chat(args) = Cli::parse_from(["wsbench", "chat"]).command else {
            unreachable!("parsed from the `chat` subcommand")
        };
        assert_eq!(args.url, "ws://127.0.0.1:7788/chat");
        assert_eq!(args.ping_interval, Duration::from_secs(1));
        assert_eq!(args.pong_timeout, Duration::from_secs(3));
        assert_eq!(args.reconnect_max_delay, Duration::from_secs(10));
        assert_eq!(args.give_up_after, Duration::from_secs(30));
    }

    #[test]
    fn bench_stops_after_ten_failures_in_a_row_by_default() {
        let Command::Bench(args) = Cli::parse_from(["wsbench", "bench"]).command else {
            unreachable!("parsed from the `bench` subcommand")
        };
        assert_eq!(args.max_failures, 10);
    }

    #[test]
    fn server_defaults_match_the_spec() {
        let args = ServerArgs::default();
        assert_eq!(args.port, 7788);
        assert_eq!(args.max_connections, 10_000);
        assert_eq!(args.max_message_size, 16 << 20);
        assert_eq!(args.max_pending, 1024);
        assert_eq!(args.ping_interval, Duration::from_secs(20));
    }
}
