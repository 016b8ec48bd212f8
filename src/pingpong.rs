//! `wsbench pingpong`: the WebSocket vs HTTP comparison of the original
//! study (#7). For each count N: one WebSocket connection sends `Ping {x}!`
//! N times, each reply must be `Pong!`; then HTTP does `GET /` (reply
//! `Hello, HTTP!`) and N × `POST /` with body `Ping{x}` (reply `Pong!`),
//! over one kept-alive connection, a new connection per request, or both.
//!
//! What a run's time covers: WebSocket, the connect, the handshake and the
//! N pings (the close is not timed); HTTP, the `GET /` and the N posts,
//! connections included. Latency percentiles cover the N pings or posts.
//!
//! The report is Markdown, on stdout and in `--report FILE`: table 1 gives
//! every run's ISO-8601 start and end, table 2 sets each count's HTTP time
//! beside its WebSocket time, table 3 the rates and p50/p99. A reply other
//! than the expected one fails the run and names what came back. The HTTP
//! client is `client::http`; the WebSocket client is `client::connect`.
//!
//! The two sides fail apart: many WebSocket servers (node `ws`, Python
//! `websockets`) answer no plain HTTP, and their WebSocket figures are worth
//! keeping. When an HTTP run fails, the WebSocket runs go on, the report is
//! printed with the HTTP cells empty and a line saying why, and the run
//! exits 1 (see #13). `--http-mode none` skips HTTP altogether.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime};

use indicatif::ProgressBar;
use tungstenite::{Message, WebSocket};

use crate::cli::{HttpMode, PingpongArgs, ServerArgs};
use crate::client;
use crate::client::connect::Stream;
use crate::client::http;
use crate::client::url::{HttpUrl, WsUrl, authority};
use crate::error::Error;
use crate::metrics::{Latency, LatencySummary, human};

/// Which transport a run used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    HttpKeepAlive,
    HttpNewConnection,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Transport::WebSocket => "WebSocket",
            Transport::HttpKeepAlive => "HTTP keep-alive",
            Transport::HttpNewConnection => "HTTP new-connection",
        }
    }
}

/// One timed run: N pings over one transport.
#[derive(Debug, Clone)]
pub struct Run {
    pub transport: Transport,
    /// Pings asked for.
    pub count: u64,
    /// Pings (or posts) answered correctly; below `count` only if interrupted.
    pub done: u64,
    /// Requests sent: the pings, plus `GET /` for HTTP.
    pub requests: u64,
    /// TCP connections opened.
    pub connections: u64,
    pub start: SystemTime,
    pub end: SystemTime,
    pub duration: Duration,
    pub latency: LatencySummary,
}

impl Run {
    pub fn interrupted(&self) -> bool {
        self.done < self.count
    }

    pub fn requests_per_s(&self) -> f64 {
        self.requests as f64 / self.duration.as_secs_f64()
    }
}

/// The reply a ping must get.
const PONG: &str = "Pong!";
/// The reply `GET /` must get.
const HELLO: &str = "Hello, HTTP!";

/// N `Ping {x}!` over one WebSocket connection to `url`.
pub fn ws_pings(
    url: &WsUrl,
    count: u64,
    timeout: Duration,
    progress: &ProgressBar,
) -> Result<Run, Error> {
    let start = SystemTime::now();
    let started = Instant::now();
    let connected = client::connect(url, timeout).map_err(|e| Error::Connect {
        url: url.text.clone(),
        cause: e.to_string(),
    })?;
    let mut ws = connected.socket;
    let mut latency = Latency::default();
    let mut done = 0;
    for x in 0..count {
        if crate::signal::interrupted() {
            break;
        }
        let request = format!("Ping {x}!");
        let sent = Instant::now();
        let reply = ws
            .send(Message::text(request.as_str()))
            .map_err(|e| no_reply(&url.text, &request, e))
            .and_then(|()| read_text(&mut ws).map_err(|e| no_reply(&url.text, &request, e)))?;
        match reply {
            Ok(text) if text == PONG => {}
            Ok(text) => return Err(wrong(&url.text, &request, format!("{text:?}"), PONG)),
            Err(other) => return Err(wrong(&url.text, &request, other, PONG)),
        }
        latency.record(sent.elapsed());
        done += 1;
        progress.inc(1);
    }
    let duration = started.elapsed();
    let end = SystemTime::now();
    client::connect::close(ws);
    Ok(Run {
        transport: Transport::WebSocket,
        count,
        done,
        requests: done,
        connections: 1,
        start,
        end,
        duration,
        latency: latency.summary(),
    })
}

/// Reads up to the next data message: `Ok(Ok(text))`, or `Ok(Err(what))`
/// naming a reply that is not text.
fn read_text(ws: &mut WebSocket<Stream>) -> tungstenite::Result<Result<String, String>> {
    loop {
        return Ok(match ws.read()? {
            Message::Text(text) => Ok(text.as_str().to_string()),
            Message::Binary(bytes) => Err(format!("a binary message of {} bytes", bytes.len())),
            Message::Close(Some(frame)) => Err(format!(
                "a close frame with code {} {:?}",
                u16::from(frame.code),
                frame.reason.as_str()
            )),
            Message::Close(None) => Err("a close frame".into()),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        });
    }
}

fn no_reply(url: &str, request: &str, err: tungstenite::Error) -> Error {
    let cause = crate::error::ws_cause(&err);
    Error::Other(format!("no reply from {url} to `{request}`: {cause}"))
}

fn wrong(url: &str, request: &str, got: String, expected: &str) -> Error {
    Error::WrongReply {
        url: url.to_string(),
        request: format!("`{request}`"),
        got,
        expected: format!("{expected:?}"),
    }
}

/// `GET /` then N × `POST /` with body `Ping{x}`, over one kept-alive
/// connection or a new connection per request.
pub fn http_pings(
    url: &HttpUrl,
    count: u64,
    keep_alive: bool,
    timeout: Duration,
    progress: &ProgressBar,
) -> Result<Run, Error> {
    let transport = if keep_alive {
        Transport::HttpKeepAlive
    } else {
        Transport::HttpNewConnection
    };
    let failed = |request: &str, err: http::Error| match err {
        http::Error::Resolve(cause) | http::Error::Connect(cause) => Error::Connect {
            url: url.text.clone(),
            cause,
        },
        other => Error::Other(format!("no reply from {} to {request}: {other}", url.text)),
    };
    let check = |request: &str, response: http::Response, expected: &str| {
        if response.status == 200 && response.body == expected.as_bytes() {
            return Ok(());
        }
        let got = if response.status == 200 {
            format!("{:?}", response.body_text(200))
        } else {
            format!("HTTP {} {:?}", response.status, response.body_text(200))
        };
        let expected = if request.starts_with("GET") {
            format!("HTTP 200 {expected:?}")
        } else {
            format!("{expected:?}")
        };
        Err(Error::WrongReply {
            url: url.text.clone(),
            request: request.to_string(),
            got,
            expected,
        })
    };
    let start = SystemTime::now();
    let started = Instant::now();
    let mut client = http::Client::new(url, keep_alive, timeout).map_err(|e| failed("GET", e))?;
    let get = format!("GET {}", url.path);
    let response = client
        .request("GET", &url.path, b"")
        .map_err(|e| failed(&get, e))?;
    check(&get, response, HELLO)?;
    let mut latency = Latency::default();
    let mut done = 0;
    let mut body = String::with_capacity(32);
    for x in 0..count {
        if crate::signal::interrupted() {
            break;
        }
        body.clear();
        let _ = write!(body, "Ping{x}");
        let sent = Instant::now();
        let request = || format!("POST {} `{body}`", url.path);
        let response = client
            .request("POST", &url.path, body.as_bytes())
            .map_err(|e| failed(&request(), e))?;
        check(&request(), response, PONG)?;
        latency.record(sent.elapsed());
        done += 1;
        progress.inc(1);
    }
    let duration = started.elapsed();
    let end = SystemTime::now();
    Ok(Run {
        transport,
        count,
        done,
        requests: done + 1,
        connections: client.connections,
        start,
        end,
        duration,
        latency: latency.summary(),
    })
}

/// One count's runs: WebSocket, then HTTP in each mode asked for.
#[derive(Debug)]
pub struct Row {
    pub count: u64,
    pub ws: Run,
    pub http: Vec<Run>,
}

pub fn run(args: PingpongArgs) -> Result<(), Error> {
    let embedded = if args.ws_url.is_none() && args.http_url.is_none() {
        Some(crate::embedded::start(ServerArgs {
            tls_self_signed: args.tls,
            ..ServerArgs::default()
        })?)
    } else {
        None
    };
    let ours: Vec<_> = embedded
        .iter()
        .flat_map(|s| s.certificate.clone())
        .collect();
    crate::client::tls::install(&args.trust, &ours)?;
    // The other side of a given URL: same host and port, same security.
    let (ws_text, http_text) = match (&args.ws_url, &args.http_url, &embedded) {
        (_, _, Some(server)) => {
            let http = if server.certificate.is_some() {
                "https"
            } else {
                "http"
            };
            (
                format!("{}/", server.url()),
                format!("{http}://{}/", server.addr),
            )
        }
        (Some(ws), Some(http), None) => (ws.clone(), http.clone()),
        (Some(ws), None, None) => {
            let url = parse_ws(ws)?;
            let http = if url.tls { "https" } else { "http" };
            (
                ws.clone(),
                format!("{http}://{}/", authority(&url.host, url.port)),
            )
        }
        (None, Some(http), None) => {
            let url = parse_http(http)?;
            let ws = if url.tls { "wss" } else { "ws" };
            (
                format!("{ws}://{}/", authority(&url.host, url.port)),
                http.clone(),
            )
        }
        (None, None, None) => unreachable!("an embedded server starts when no URL is given"),
    };
    let ws_url = parse_ws(&ws_text)?;
    let http_url = parse_http(&http_text)?;
    let modes: &[bool] = match args.http_mode {
        HttpMode::Keepalive => &[true],
        HttpMode::NewConnection => &[false],
        HttpMode::Both => &[true, false],
        HttpMode::None => &[],
    };
    if embedded.is_some() {
        log::info!("embedded server on {}", ws_url.text);
    }

    let total: u64 = args.counts.iter().sum::<u64>() * (1 + modes.len() as u64);
    let progress = crate::progress::bar(total, "pings");
    let mut rows = Vec::new();
    // The first HTTP failure; no HTTP run is tried after it (the next
    // would fail the same way), the WebSocket runs go on.
    let mut http_failure: Option<Error> = None;
    for &count in &args.counts {
        if crate::signal::interrupted() {
            break;
        }
        let ws = ws_pings(&ws_url, count, args.timeout, &progress)?;
        let mut http = Vec::new();
        for &keep_alive in modes {
            if crate::signal::interrupted() || http_failure.is_some() {
                break;
            }
            match http_pings(&http_url, count, keep_alive, args.timeout, &progress) {
                Ok(run) => http.push(run),
                Err(e) => http_failure = Some(e),
            }
        }
        rows.push(Row { count, ws, http });
    }
    progress.finish_and_clear();
    if let Some(server) = embedded {
        server.shutdown();
    }

    let origin = if args.ws_url.is_none() && args.http_url.is_none() {
        " (embedded server)"
    } else {
        ""
    };
    let http_note = http_failure
        .as_ref()
        .map(|e| format!("HTTP cells are empty: the HTTP side failed: {e}"));
    let report = render(
        &rows,
        &ws_url.text,
        &http_url.text,
        origin,
        args.http_mode,
        http_note.as_deref(),
    );
    {
        let mut out = std::io::stdout().lock();
        // A closed stdout (`| head`) is no reason to fail a finished run.
        let _ = out.write_all(report.as_bytes());
        let _ = out.flush();
    }
    if let Some(path) = &args.report {
        std::fs::write(path, &report).map_err(|e| Error::Output {
            path: path.display().to_string(),
            cause: crate::error::io_cause(&e),
        })?;
    }
    match http_failure {
        Some(e) => Err(Error::Other(format!(
            "the HTTP side failed, so the report has its WebSocket figures only: {e}"
        ))),
        None => Ok(()),
    }
}

fn parse_ws(text: &str) -> Result<WsUrl, Error> {
    WsUrl::parse(text).map_err(|why| Error::Url {
        url: text.to_string(),
        why,
    })
}

fn parse_http(text: &str) -> Result<HttpUrl, Error> {
    HttpUrl::parse(text).map_err(|why| Error::Url {
        url: text.to_string(),
        why,
    })
}

/// An ISO-8601 / RFC 3339 UTC time with milliseconds:
/// `2026-05-01T12:00:00.123Z`. jiff is already built for env_logger's
/// timestamps, so this costs no crate.
pub fn iso8601(time: SystemTime) -> String {
    match jiff::Timestamp::try_from(time) {
        Ok(ts) => jiff::fmt::temporal::DateTimePrinter::new()
            .precision(Some(3))
            .timestamp_to_string(&ts),
        Err(_) => "?".into(),
    }
}

/// Seconds to the microsecond: short runs take milliseconds, and the
/// ratios must be recomputable from the printed figures.
fn secs(d: Duration) -> String {
    format!("{:.6}", d.as_secs_f64())
}

/// The whole Markdown report. `http_note` says why HTTP cells are empty.
pub fn render(
    rows: &[Row],
    ws_url: &str,
    http_url: &str,
    origin: &str,
    mode: HttpMode,
    http_note: Option<&str>,
) -> String {
    let mut md = String::with_capacity(4096);
    let _ = writeln!(md, "# wsbench pingpong\n");
    let _ = writeln!(md, "- WebSocket: {ws_url}{origin}");
    let _ = match mode {
        HttpMode::None => writeln!(md, "- HTTP: not measured (--http-mode none)"),
        _ => writeln!(
            md,
            "- HTTP: {http_url}{origin}, mode {}",
            match mode {
                HttpMode::Keepalive => "keepalive",
                HttpMode::NewConnection => "new-connection",
                _ => "keepalive and new-connection",
            }
        ),
    };
    if let Some(note) = http_note {
        let _ = writeln!(md, "- {note}");
    }
    let _ = writeln!(
        md,
        "- WS time: connect, handshake and N × `Ping {{x}}!`; HTTP time: `GET /` and N × `POST /`.\n"
    );

    let _ = writeln!(md, "## Runs\n");
    let _ = writeln!(md, "| Server | Qt pings | Start | End | Duration |");
    let _ = writeln!(md, "|---|---:|---|---|---:|");
    for row in rows {
        for run in std::iter::once(&row.ws).chain(&row.http) {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} s |",
                run.transport.label(),
                run.done,
                iso8601(run.start),
                iso8601(run.end),
                secs(run.duration)
            );
        }
    }

    let _ = writeln!(md, "\n## WebSocket vs HTTP\n");
    // From the mode, not from the runs: a failed or interrupted row may
    // have none.
    let http_labels: Vec<&str> = match mode {
        HttpMode::Both => vec![
            Transport::HttpKeepAlive.label(),
            Transport::HttpNewConnection.label(),
        ],
        HttpMode::None => vec![],
        HttpMode::Keepalive | HttpMode::NewConnection => vec!["HTTP"],
    };
    let mut header = String::from("| Qt pings | WS (s) |");
    let mut rule = String::from("|---:|---:|");
    for label in &http_labels {
        let _ = write!(header, " {label} (s) | {label} - WS (s) | {label} / WS |");
        rule.push_str("---:|---:|---:|");
    }
    let _ = writeln!(md, "{header}\n{rule}");
    for row in rows {
        let _ = write!(md, "| {} | {} |", row.ws.done, secs(row.ws.duration));
        let ws = row.ws.duration.as_secs_f64();
        for http in &row.http {
            let h = http.duration.as_secs_f64();
            let _ = write!(md, " {:.6} | {:.6} | {:.2} |", h, h - ws, h / ws);
        }
        // An interrupted row, or one after an HTTP failure, may lack some
        // HTTP runs: keep the table square.
        for _ in row.http.len()..http_labels.len() {
            md.push_str(" | | |");
        }
        md.push('\n');
    }

    let _ = writeln!(md, "\n## Rates and latency\n");
    let _ = writeln!(
        md,
        "| Server | Qt pings | Requests | Connections | Requests/s | p50 | p99 |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        for run in std::iter::once(&row.ws).chain(&row.http) {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.0} | {} | {} |",
                run.transport.label(),
                run.done,
                run.requests,
                run.connections,
                run.requests_per_s(),
                human(run.latency.p50),
                human(run.latency.p99)
            );
        }
    }
    let interrupted = rows
        .iter()
        .any(|row| row.ws.interrupted() || row.http.iter().any(Run::interrupted));
    if interrupted {
        let _ = writeln!(
            md,
            "\nInterrupted: the last row holds the pings done so far."
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(transport: Transport, count: u64, secs: f64) -> Run {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000);
        let duration = Duration::from_secs_f64(secs);
        Run {
            transport,
            count,
            done: count,
            requests: count,
            connections: 1,
            start,
            end: start + duration,
            duration,
            latency: LatencySummary::default(),
        }
    }

    #[test]
    fn times_are_iso_8601_utc_with_milliseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_780_000_000_123);
        assert_eq!(iso8601(t), "2026-05-28T20:26:40.123Z");
    }

    #[test]
    fn both_modes_get_one_column_set_each() {
        let rows = [Row {
            count: 100,
            ws: run(Transport::WebSocket, 100, 0.5),
            http: vec![
                run(Transport::HttpKeepAlive, 100, 1.0),
                run(Transport::HttpNewConnection, 100, 2.0),
            ],
        }];
        let md = render(&rows, "ws://x/", "http://x/", "", HttpMode::Both, None);
        assert!(md.contains(
            "| Qt pings | WS (s) | HTTP keep-alive (s) | HTTP keep-alive - WS (s) | HTTP keep-alive / WS | HTTP new-connection (s) | HTTP new-connection - WS (s) | HTTP new-connection / WS |"
        ), "{md}");
        assert!(
            md.contains(
                "| 100 | 0.500000 | 1.000000 | 0.500000 | 2.00 | 2.000000 | 1.500000 | 4.00 |"
            ),
            "{md}"
        );
        assert!(md.contains("| HTTP new-connection | 100 | 2026-05-28T20:26:40.000Z | 2026-05-28T20:26:42.000Z | 2.000000 s |"), "{md}");
    }

    #[test]
    fn a_failed_http_side_leaves_its_cells_empty_and_says_why() {
        let rows = [Row {
            count: 100,
            ws: run(Transport::WebSocket, 100, 0.5),
            http: vec![],
        }];
        let why = "HTTP cells are empty: the HTTP side failed: refused";
        let md = render(&rows, "ws://x/", "http://x/", "", HttpMode::Both, Some(why));
        assert!(md.contains(&format!("- {why}\n")), "{md}");
        assert!(md.contains("| 100 | 0.500000 | | | | | | |\n"), "{md}");
        let md = render(&rows, "ws://x/", "http://x/", "", HttpMode::None, None);
        assert!(
            md.contains("| Qt pings | WS (s) |\n|---:|---:|\n| 100 | 0.500000 |\n"),
            "{md}"
        );
        assert!(
            md.contains("- HTTP: not measured (--http-mode none)"),
            "{md}"
        );
    }
}
