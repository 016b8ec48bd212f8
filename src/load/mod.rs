//! `wsbench load`: the connection load test (#7). Opens many WebSocket
//! connections in controlled batches, holds them, does one text round trip
//! on each, closes them cleanly, and reports what happened.
//!
//! ```text
//! per bind address × --workers:
//!   worker thread ─ batch 1: --batch-size non-blocking connects + handshakes,
//!   (256 KiB)     │          driven by one poll() until every one is open,
//!                 │          failed (by reason) or timed out
//!                 ├─ hand the open sockets to its holder ─────────┐
//!                 └─ batch 2 … --rounds                            │
//! holder thread ─ poll() over all its sockets + a wake-up socket <─┘
//!   (256 KiB)     answers the server's pings until told to finish,
//!                 then: one text round trip each, close frames to all,
//!                 wait for every close reply
//! main ─ join workers (setup time) ─ read /metrics ─ wait --hold ─ finish
//! ```
//!
//! A held connection costs a socket and a tungstenite buffer, not a thread:
//! 10,000 connections take 2 × workers threads. Holders answer pings
//! because a client that never reads gets every connection closed by the
//! server's heartbeat, which is how older load tools under-report.
//! `poll` with no timeout is a real wait: holders sleep until a socket or
//! their wake-up socket has something.
//!
//! A run in which any connection failed (set up, held, round trip or
//! close) exits 1 after its summary, with one line of the failures by
//! reason: a load test that reports success while every round trip timed
//! out misleads whoever reads only its status (see #13).
//!
//! Descriptors: each client connection is one; an embedded server in this
//! process needs one more per connection, so a run that cannot fit under
//! `ulimit -n` is refused before it starts.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};

use rustls::ClientConnection;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use serde::Serialize;
use socket2::{Domain, Socket, Type};
use tungstenite::handshake::client::{ClientHandshake, Response};
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use crate::cli::{LoadArgs, ServerArgs};
use crate::client::connect::Stream;
use crate::client::http;
use crate::client::url::HttpUrl;
use crate::client::{self, WsUrl};
use crate::error::{Error, io_cause, ws_cause};
use crate::metrics::{Latency, LatencySummary};

/// Stack of worker and holder threads: they keep their state on the heap;
/// the deepest path is a handshake (httparse's header array, a few KiB).
const THREAD_STACK: usize = 256 * 1024;

/// Descriptors kept free for everything else: std streams, the log, the
/// wake-up sockets, the /metrics read, the server's listener.
const FD_MARGIN: u64 = 64;

mod failures;
mod hold;
mod setup;

use failures::*;
use hold::*;
use setup::*;

/// The run's figures, as printed and as `--json`.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub url: String,
    pub embedded_server: bool,
    pub bind: Vec<String>,
    pub workers: u32,
    pub rounds: u32,
    pub batch_size: u32,
    pub attempted: u64,
    pub established: u64,
    pub failed: u64,
    pub failures: Failures,
    pub setup_s: f64,
    pub connections_per_s: f64,
    pub hold_s: f64,
    pub held: u64,
    pub lost_while_held: u64,
    pub server_pings_answered: u64,
    pub round_trips_ok: u64,
    pub round_trips_failed: u64,
    pub closed_cleanly: u64,
    /// TLS handshakes (0 over ws://) and how many resumed a session.
    pub tls_handshakes: u64,
    pub tls_resumed: u64,
    /// `wsbench_connections_current` while every connection was open.
    pub server_connections_current: Option<u64>,
    /// Why the server's count is missing, when it is.
    pub server_connections_unavailable: Option<String>,
    pub interrupted: bool,
    pub tcp_connect: LatencySummary,
    pub handshake: LatencySummary,
    pub round_trip: LatencySummary,
}

/// Refuses, before anything starts, a run whose descriptors cannot fit.
fn check_fd_limit(total: u64, embedded: bool, limit: u64) -> Result<(), Error> {
    let needed = if embedded { 2 * total } else { total } + FD_MARGIN;
    if needed <= limit {
        return Ok(());
    }
    Err(Error::Other(if embedded {
        format!(
            "load would open {total} connections to an embedded server in this process, which needs {needed} file descriptors (one per side) but the limit (ulimit -n) is {limit}: start the server separately (wsbench server --port 7788) and pass --url ws://127.0.0.1:7788/"
        )
    } else {
        format!(
            "load would open {total} connections, which needs {needed} file descriptors but the limit (ulimit -n) is {limit}: lower --rounds, --batch-size or --workers"
        )
    }))
}

/// `wsbench_connections_current` from the server's `/metrics`, or why not.
fn server_connections(url: &WsUrl, timeout: Duration) -> Result<u64, String> {
    let authority = if url.host.contains(':') {
        format!("[{}]:{}", url.host, url.port)
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let scheme = if url.tls { "https" } else { "http" };
    let text = format!("{scheme}://{authority}/metrics");
    let metrics = HttpUrl::parse(&text).map_err(|why| format!("{text}: {why}"))?;
    let response = http::get(&metrics, timeout).map_err(|e| format!("{text}: {e}"))?;
    match response.status {
        200 => {}
        503 => {
            return Err(format!(
                "{text} answered HTTP 503: the server is at its connection limit"
            ));
        }
        status => {
            return Err(format!(
                "{text} answered HTTP {status}: not a wsbench server"
            ));
        }
    }
    String::from_utf8_lossy(&response.body)
        .lines()
        .find_map(|l| l.strip_prefix("wsbench_connections_current "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("{text} has no wsbench_connections_current: not a wsbench server"))
}

pub fn run(args: LoadArgs) -> Result<(), Error> {
    let binds: Vec<Option<IpAddr>> = if args.bind.is_empty() {
        vec![None]
    } else {
        args.bind.iter().copied().map(Some).collect()
    };
    let per_bind = args.workers as u64 * args.rounds as u64 * args.batch_size as u64;
    let total = binds.len() as u64 * per_bind;
    let embedded = args.url.is_none();
    check_fd_limit(total, embedded, crate::process::raise_open_files())?;
    for ip in args.bind.iter() {
        let probe = Socket::new(
            Domain::for_address(SocketAddr::new(*ip, 0)),
            Type::STREAM,
            None,
        )
        .and_then(|s| s.bind(&SocketAddr::new(*ip, 0).into()));
        if let Err(e) = probe {
            return Err(Error::Other(format!(
                "cannot bind to --bind address {ip}: {}",
                io_cause(&e)
            )));
        }
    }

    let (url, server) = crate::embedded::url_or_embedded(args.url.as_deref(), &args.trust, || {
        let defaults = ServerArgs::default();
        ServerArgs {
            // Our own load must not meet the limit meant for strangers.
            max_connections: defaults
                .max_connections
                .max(u32::try_from(total + FD_MARGIN).unwrap_or(u32::MAX)),
            ..defaults
        }
    })?;
    let connect_err = |cause: String| Error::Connect {
        url: url.text.clone(),
        cause,
    };
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| connect_err(format!("cannot resolve host: {}", io_cause(&e))))?
        .collect();
    let want_v4 = args.bind.first().is_none_or(|ip| ip.is_ipv4());
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4() == want_v4)
        .or(addrs.first())
        .copied()
        .ok_or_else(|| connect_err("cannot resolve host: no address".into()))?;
    let target = Arc::new(Target {
        url: url.clone(),
        addr,
        // Replies are a few bytes: a 4 KiB read buffer keeps 10,000 held
        // connections near 40 MiB of buffers.
        config: client::connect::client_config().read_buffer_size(4096),
        timeout: args.timeout,
    });
    if server.is_some() {
        log::info!("embedded server on {}", url.text);
    }

    let progress = crate::progress::bar(total, "connections");
    let handshakes = client::tls::handshakes();
    let started = Instant::now();
    let mut holders = Vec::new();
    let mut workers = Vec::new();
    let spawn_err = |what: &str, e: io::Error| {
        Error::Other(format!("cannot start a {what} thread: {}", io_cause(&e)))
    };
    for bind in &binds {
        for w in 0..args.workers {
            let k = holders.len();
            let (tx, rx) = crossbeam_channel::unbounded();
            let (wake_tx, wake_rx) = UnixStream::pair().map_err(|e| {
                Error::Other(format!("cannot make a wake-up socket: {}", io_cause(&e)))
            })?;
            wake_tx
                .set_nonblocking(true)
                .and_then(|()| wake_rx.set_nonblocking(true))
                .map_err(|e| Error::Other(format!("wake-up socket: {}", io_cause(&e))))?;
            let link = HolderLink {
                tx,
                wake: Arc::new(wake_tx),
            };
            let timeout = args.timeout;
            holders.push((
                link.clone(),
                thread::Builder::new()
                    .name(format!("load-holder-{k}"))
                    .stack_size(THREAD_STACK)
                    .spawn(move || holder(rx, wake_rx, timeout))
                    .map_err(|e| spawn_err("holder", e))?,
            ));
            let target = Arc::clone(&target);
            let bind = *bind;
            let rounds = args.rounds;
            let batch = args.batch_size;
            let progress = progress.clone();
            workers.push(
                thread::Builder::new()
                    .name(format!("load-worker-{k}-{w}"))
                    .stack_size(THREAD_STACK)
                    .spawn(move || {
                        let mut setup = Setup::default();
                        for _ in 0..rounds {
                            if crate::signal::interrupted() {
                                break;
                            }
                            let open = open_batch(&target, bind, batch, &mut setup);
                            link.send(ToHolder::Open(open));
                            progress.inc(batch as u64);
                        }
                        setup
                    })
                    .map_err(|e| spawn_err("worker", e))?,
            );
        }
    }
    let mut setup = Setup::default();
    for worker in workers {
        let part = worker.join().unwrap_or_default();
        setup.attempted += part.attempted;
        setup.established += part.established;
        setup.failures.add(&part.failures);
        setup.reasons.merge(part.reasons);
        if setup.first_error.is_none() {
            setup.first_error = part.first_error;
        }
        setup.tcp.merge(&part.tcp);
        setup.handshake.merge(&part.handshake);
    }
    let setup_time = started.elapsed();
    progress.finish_and_clear();

    let server_count = if setup.established > 0 {
        server_connections(&url, args.timeout)
    } else {
        Err("nothing was established".into())
    };
    let hold_started = Instant::now();
    if setup.established > 0 && !crate::signal::interrupted() {
        let _ = crate::signal::channel().recv_timeout(args.hold);
    }
    let hold_time = hold_started.elapsed();
    for (link, _) in &holders {
        link.send(ToHolder::Finish);
    }
    let mut held = Held::default();
    for (_, handle) in holders {
        let part = handle.join().unwrap_or_default();
        held.held += part.held;
        held.lost += part.lost;
        if held.first_lost.is_none() {
            held.first_lost = part.first_lost;
        }
        held.pings += part.pings;
        held.round_trip.merge(&part.round_trip);
        held.round_trips_failed += part.round_trips_failed;
        if held.first_round_trip_error.is_none() {
            held.first_round_trip_error = part.first_round_trip_error;
        }
        held.closed_cleanly += part.closed_cleanly;
        held.reasons.merge(part.reasons);
    }
    if let Some(server) = server {
        server.shutdown();
    }

    if setup.established == 0 {
        let cause = match setup.first_error {
            Some(e) if e.phase == Phase::Connect => e.cause,
            Some(e) => e.to_string(),
            None => "no connection was attempted".into(),
        };
        return Err(connect_err(cause));
    }
    let (server_connections_current, server_connections_unavailable) = match server_count {
        Ok(count) => (Some(count), None),
        Err(why) => (None, Some(why)),
    };
    let tls = client::tls::summary_since(handshakes).unwrap_or_default();
    let summary = Summary {
        url: url.text.clone(),
        embedded_server: embedded,
        bind: args.bind.iter().map(|ip| ip.to_string()).collect(),
        workers: args.workers,
        rounds: args.rounds,
        batch_size: args.batch_size,
        attempted: setup.attempted,
        established: setup.established,
        failed: setup.failures.total(),
        failures: setup.failures,
        setup_s: setup_time.as_secs_f64(),
        connections_per_s: setup.established as f64 / setup_time.as_secs_f64(),
        hold_s: hold_time.as_secs_f64(),
        held: held.held,
        lost_while_held: held.lost,
        server_pings_answered: held.pings,
        round_trips_ok: held.round_trip.count(),
        round_trips_failed: held.round_trips_failed,
        closed_cleanly: held.closed_cleanly,
        tls_handshakes: tls.0,
        tls_resumed: tls.1,
        server_connections_current,
        server_connections_unavailable,
        interrupted: crate::signal::interrupted(),
        tcp_connect: setup.tcp.summary(),
        handshake: setup.handshake.summary(),
        round_trip: held.round_trip.summary(),
    };
    print_summary(&summary, args.json, &setup.first_error, &held);
    let mut reasons = setup.reasons;
    reasons.merge(held.reasons);
    match reasons.failed() {
        0 => Ok(()),
        failed => Err(Error::Other(format!(
            "{failed} of {} connections failed: {}",
            summary.attempted,
            reasons.describe()
        ))),
    }
}

fn print_summary(s: &Summary, json: bool, first_error: &Option<SetupError>, held: &Held) {
    if json {
        return crate::export::print_json(s);
    }
    // A closed stdout (`| head`) is no reason to fail a finished run.
    let mut out = std::io::stdout().lock();
    let bind = if s.bind.is_empty() {
        "any".to_string()
    } else {
        s.bind.join(",")
    };
    let _ = writeln!(
        out,
        "url:          {}{}",
        s.url,
        if s.embedded_server {
            " (embedded server)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "plan:         {} bind address(es) ({bind}) × {} workers × {} rounds × {} connections",
        s.bind.len().max(1),
        s.workers,
        s.rounds,
        s.batch_size
    );
    let _ = writeln!(
        out,
        "connections:  {} attempted, {} established, {} failed{}",
        s.attempted,
        s.established,
        s.failed,
        if s.interrupted { " (interrupted)" } else { "" }
    );
    let f = &s.failures;
    let _ = writeln!(
        out,
        "failed by reason: refused {}, timeout {}, 503 {}, handshake error {}, reset {}, other {}",
        f.refused, f.timeout, f.http_503, f.handshake, f.reset, f.other
    );
    if let Some(first) = first_error {
        let _ = writeln!(out, "first failure: {first}");
    }
    let _ = writeln!(
        out,
        "setup:        {:.3} s, {:.1} connections/s",
        s.setup_s, s.connections_per_s
    );
    let _ = writeln!(
        out,
        "held:         {} for {:.2} s, {} lost, {} server pings answered",
        s.held, s.hold_s, s.lost_while_held, s.server_pings_answered
    );
    if let Some(why) = &held.first_lost {
        let _ = writeln!(out, "first lost:   {why}");
    }
    let _ = writeln!(
        out,
        "round trips:  {} ok, {} failed",
        s.round_trips_ok, s.round_trips_failed
    );
    if let Some(why) = &held.first_round_trip_error {
        let _ = writeln!(out, "first round-trip failure: {why}");
    }
    let _ = writeln!(out, "closed:       {} cleanly", s.closed_cleanly);
    if s.tls_handshakes > 0 {
        let _ = writeln!(
            out,
            "tls:          {} handshakes, {} resumed",
            s.tls_handshakes, s.tls_resumed
        );
    }
    match (
        &s.server_connections_current,
        &s.server_connections_unavailable,
    ) {
        (Some(count), _) => {
            let _ = writeln!(
                out,
                "server:       wsbench_connections_current {count} (from /metrics while all were open; that request included)"
            );
        }
        (None, Some(why)) => {
            let _ = writeln!(out, "server:       connection count unavailable ({why})");
        }
        (None, None) => {}
    }
    let _ = crate::metrics::write_table(
        &mut out,
        12,
        &[
            ("tcp connect", &s.tcp_connect),
            ("handshake", &s.handshake),
            ("round trip", &s.round_trip),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_embedded_server_needs_a_descriptor_per_side() {
        assert!(check_fd_limit(9_000, false, 20_000).is_ok());
        assert!(check_fd_limit(9_000, true, 20_000).is_ok());
        let err = check_fd_limit(10_000, true, 20_000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("start the server separately"), "{err}");
        assert!(err.contains("20064"), "{err}");
        assert!(check_fd_limit(10_000, false, 20_000).is_ok());
        let err = check_fd_limit(30_000, false, 20_000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("lower --rounds"), "{err}");
    }

    #[test]
    fn failures_add_up_by_reason() {
        let mut f = Failures::default();
        for r in [
            Reason::Http503,
            Reason::Http503,
            Reason::Refused,
            Reason::Reset,
        ] {
            f.count(r);
        }
        assert_eq!((f.http_503, f.refused, f.reset, f.total()), (2, 1, 1, 4));
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["503"], 2);
    }

    #[test]
    fn the_error_line_counts_reasons_most_frequent_first() {
        let mut reasons = Reasons::default();
        for why in [
            SetupError::new(Phase::Handshake, "timed out"),
            SetupError::new(Phase::Connect, "connection refused"),
            SetupError::new(Phase::Connect, "connection refused"),
            SetupError::new(Phase::Connect, "timed out"),
            SetupError::new(Phase::Other, INTERRUPTED),
        ] {
            reasons.add(why.label(), 1);
        }
        reasons.add("round trip: timed out".into(), 3);
        assert_eq!(reasons.failed(), 7);
        assert_eq!(
            reasons.describe(),
            "3 round trip: timed out, 2 connection refused, 1 handshake timed out, 1 connect timed out"
        );
    }
}
