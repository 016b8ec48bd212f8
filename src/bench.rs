//! `wsbench bench`: the image speed test. Sends `--count` copies of one
//! seeded pseudo-random image, serially over one connection, serially over
//! a connection each, or in parallel over a connection each on OS threads;
//! times every message (connect, send, receive, total) and summarises.
//!
//! Without `--url` it starts an embedded server in this process, so one
//! command runs the whole experiment. With `--url` it talks to any server
//! that replies to a binary message with one text message: ours, or the
//! original Python asyncio server whose reply is `Received: {len}`.
//!
//! A run stops early after `--max-failures` failed messages in a row: a
//! server that accepts and never replies would otherwise hold the run for
//! `--count` × `--timeout` (see #13). What was measured is still
//! summarised and written, and the run exits 1.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::ProgressBar;
use serde::Serialize;
use tungstenite::{Message, WebSocket};

use crate::cli::{BenchArgs, BenchMode, ServerArgs};
use crate::client::connect::Stream;
use crate::client::{self, WsUrl, masked};
use crate::error::Error;
use crate::export::{self, Record, write_csv};
use crate::metrics::{Latency, LatencySummary};
use crate::stats::{self, ImageStats};

/// Client threads in parallel mode do a connect, one send and one read:
/// a small stack lets a thousand of them start at once.
const CLIENT_STACK: usize = 256 * 1024;

/// A message about to start now, failed until proven otherwise.
fn start_record(idx: u64) -> Record {
    Record {
        idx,
        start_unix_s: unix_now(),
        connect_s: 0.0,
        send_s: 0.0,
        recv_s: 0.0,
        total_s: 0.0,
        ok: false,
        error: String::new(),
        connect_failure: None,
    }
}

/// The run's figures, as printed and as `--json`.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub mode: &'static str,
    pub url: String,
    pub size: usize,
    pub count: u64,
    pub ok: u64,
    pub failed: u64,
    pub interrupted: bool,
    /// Stopped after `--max-failures` failed messages in a row.
    pub stopped_after_failures: bool,
    pub max_failures: u64,
    /// Replies `--verify` could check by their length only (`Received:
    /// {len}`: a fast-mode or Python asyncio server sends no statistics).
    pub verified_lengths_only: u64,
    pub wall_s: f64,
    pub messages_per_s: f64,
    pub mb_per_s: f64,
    /// TLS handshakes of the run (0 over ws://) and how many of them
    /// resumed an earlier session instead of a full handshake.
    pub tls_handshakes: u64,
    pub tls_resumed: u64,
    pub connect: LatencySummary,
    pub send: LatencySummary,
    pub recv: LatencySummary,
    pub total: LatencySummary,
}

/// What every message needs: where to, what to send, how to judge the reply.
struct Job {
    url: WsUrl,
    payload: Vec<u8>,
    expected: Option<ImageStats>,
    timeout: Duration,
    /// Replies verified by their length alone.
    lengths_only: AtomicU64,
}

/// Counts failed messages in a row, shared by every client thread; a
/// success resets it. `max` 0 never stops.
struct FailureStreak {
    max: u64,
    in_a_row: AtomicU64,
    stopped: AtomicBool,
}

impl FailureStreak {
    fn new(max: u64) -> FailureStreak {
        FailureStreak {
            max,
            in_a_row: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        }
    }

    fn record(&self, ok: bool) {
        if ok {
            self.in_a_row.store(0, Ordering::Relaxed);
            return;
        }
        let in_a_row = self.in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if self.max > 0 && in_a_row >= self.max {
            self.stopped.store(true, Ordering::Relaxed);
        }
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }
}

pub fn run(args: BenchArgs) -> Result<(), Error> {
    if let Some(rate) = args.rate {
        // Open loop: a fixed schedule instead of a count (#16).
        return crate::rate::run(&args, rate);
    }
    let (url, embedded) = target(&args)?;
    let payload = stats::random_image(args.size, args.seed);
    let expected = if args.verify {
        ImageStats::compute(&payload)
    } else {
        None
    };
    let job = Job {
        url,
        payload,
        expected,
        timeout: args.timeout,
        lengths_only: AtomicU64::new(0),
    };
    let streak = FailureStreak::new(args.max_failures);
    let progress = crate::progress::bar(args.count, "messages");
    let handshakes = client::tls::handshakes();
    let started = Instant::now();
    let records = match args.mode {
        BenchMode::Serial => run_serial(&job, args.count, &progress, &streak, true)?,
        BenchMode::SerialShort => run_serial(&job, args.count, &progress, &streak, false)?,
        BenchMode::Parallel => run_parallel(&job, args.count, args.concurrency, &progress, &streak),
    };
    let wall = started.elapsed();
    progress.finish_and_clear();
    if let Some(server) = embedded {
        server.shutdown();
    }

    if let Some(path) = &args.out {
        write_csv(path, &records)?;
    }
    let mut summary = summarise(&args, &job, &records, wall, streak.stopped());
    (summary.tls_handshakes, summary.tls_resumed) =
        client::tls::summary_since(handshakes).unwrap_or_default();
    print_summary(&summary, args.json);

    let failed: Vec<&Record> = records.iter().filter(|r| !r.ok).collect();
    let all_failed = failed.len() as u64 == summary.count && summary.count > 0;
    if let Some(cause) = failed
        .first()
        .and_then(|r| r.connect_failure.as_deref())
        .filter(|_| all_failed)
    {
        return Err(Error::Connect {
            url: job.url.text.clone(),
            cause: cause.to_string(),
        });
    }
    if let Some(first) = failed.first().filter(|_| summary.stopped_after_failures) {
        return Err(Error::StoppedAfterFailures {
            max: args.max_failures,
            failed: failed.len() as u64,
            sent: records.len() as u64,
            unsent: args.count - records.len() as u64,
            first: format!("message {}: {}", first.idx, first.error),
        });
    }
    if let Some(first) = failed.first() {
        return Err(Error::MessagesFailed {
            failed: failed.len() as u64,
            total: records.len() as u64,
            first: format!("message {}: {}", first.idx, first.error),
        });
    }
    Ok(())
}

/// Where a bench run sends, closed or open loop: `--url`, or a server
/// started here with the run's `--response` and `--tls`.
pub(crate) fn target(args: &BenchArgs) -> Result<(WsUrl, Option<crate::server::Handle>), Error> {
    let (url, embedded) =
        crate::embedded::url_or_embedded(args.url.as_deref(), &args.trust, || ServerArgs {
            response: args.response,
            tls_self_signed: args.tls,
            ..ServerArgs::default()
        })?;
    if embedded.is_some() {
        log::info!(
            "embedded server on {} (response {})",
            url.text,
            args.response.as_str()
        );
    }
    Ok((url, embedded))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Serial modes. `reuse`: one long-lived connection (reopened only after
/// a failure broke it); otherwise a new connection per message.
fn run_serial(
    job: &Job,
    count: u64,
    progress: &ProgressBar,
    streak: &FailureStreak,
    reuse: bool,
) -> Result<Vec<Record>, Error> {
    let mut records = Vec::with_capacity(count as usize);
    let mut socket: Option<WebSocket<Stream>> = None;
    let mut next_frame = Vec::new();
    for idx in 0..count {
        if crate::signal::interrupted() || streak.stopped() {
            break;
        }
        let mut record = start_record(idx);
        let started = Instant::now();
        if socket.is_none() {
            match client::connect(&job.url, job.timeout) {
                Ok(connected) => {
                    record.connect_s = (connected.tcp + connected.handshake).as_secs_f64();
                    socket = Some(connected.socket);
                }
                Err(e) if idx == 0 => {
                    return Err(Error::Connect {
                        url: job.url.text.clone(),
                        cause: e.to_string(),
                    });
                }
                Err(e) => {
                    record.error = format!("connect: {e}");
                    record.connect_failure = Some(e.to_string());
                    record.total_s = started.elapsed().as_secs_f64();
                    streak.record(false);
                    records.push(record);
                    progress.inc(1);
                    continue;
                }
            }
        }
        let ws = socket.as_mut().expect("connected just above");
        let result = exchange(ws, job, &mut record, Some(&mut next_frame));
        record.total_s = started.elapsed().as_secs_f64();
        match result {
            Ok(()) => record.ok = true,
            Err(e) => {
                record.error = e;
                socket = None;
                // Part of it may have gone out on the dead connection: the
                // next one gets a frame with a fresh mask.
                next_frame.clear();
            }
        }
        if let Some(ws) = socket.take_if(|_| !reuse) {
            client::connect::close(ws);
        }
        streak.record(record.ok);
        records.push(record);
        progress.inc(1);
    }
    if let Some(ws) = socket {
        client::connect::close(ws);
    }
    Ok(records)
}

/// A connection per message on OS threads, at most `concurrency` at once.
/// With `streak`, workers take no new message once it says stop; messages
/// already under way finish.
fn run_parallel(
    job: &Job,
    count: u64,
    concurrency: u32,
    progress: &ProgressBar,
    streak: &FailureStreak,
) -> Vec<Record> {
    let next = AtomicU64::new(0);
    let records = Mutex::new(Vec::with_capacity(count as usize));
    let workers = (concurrency as u64).min(count);
    thread::scope(|scope| {
        for w in 0..workers {
            let spawned = thread::Builder::new()
                .name(format!("client-{w}"))
                .stack_size(CLIENT_STACK)
                .spawn_scoped(scope, || {
                    let mut mine = Vec::new();
                    loop {
                        let idx = next.fetch_add(1, Ordering::Relaxed);
                        if idx >= count || crate::signal::interrupted() || streak.stopped() {
                            break;
                        }
                        let record = one_short_message(job, idx);
                        streak.record(record.ok);
                        mine.push(record);
                        progress.inc(1);
                    }
                    records
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(mine);
                });
            if let Err(e) = spawned {
                // Fewer workers than asked still finish every message.
                log::warn!("started {w} of {workers} client threads: {e}");
                break;
            }
        }
    });
    let mut records = records.into_inner().unwrap_or_else(|p| p.into_inner());
    records.sort_by_key(|r| r.idx);
    records
}

fn one_short_message(job: &Job, idx: u64) -> Record {
    let mut record = start_record(idx);
    let started = Instant::now();
    match client::connect(&job.url, job.timeout) {
        Ok(connected) => {
            record.connect_s = (connected.tcp + connected.handshake).as_secs_f64();
            let mut ws = connected.socket;
            let result = exchange(&mut ws, job, &mut record, None);
            record.total_s = started.elapsed().as_secs_f64();
            match result {
                Ok(()) => {
                    record.ok = true;
                    client::connect::close(ws);
                }
                Err(e) => record.error = e,
            }
        }
        Err(e) => {
            record.total_s = started.elapsed().as_secs_f64();
            record.error = format!("connect: {e}");
            record.connect_failure = Some(e.to_string());
        }
    }
    record
}

/// Sends the image and reads the reply into `record`'s send/recv times.
///
/// Frames are our own (`client::masked`): one masking pass instead of
/// tungstenite's copy then mask. tungstenite's own output (a pong it owes)
/// is flushed first, so our frame never lands inside one of its frames.
/// With `next`, the serial modes write a frame built ahead, then build the
/// following message's frame (a fresh mask) while the server works, as a
/// raw-TCP client writes a ready buffer. So `send_s` is the write alone
/// (the first message's also includes building its frame), and `recv_s`
/// includes the masking only if the reply comes back sooner than that.
fn exchange(
    ws: &mut WebSocket<Stream>,
    job: &Job,
    record: &mut Record,
    mut next: Option<&mut Vec<u8>>,
) -> Result<(), String> {
    let sent = Instant::now();
    ws.flush()
        .map_err(|e| format!("send: {}", crate::error::ws_cause(&e)))?;
    let written = match next.as_deref_mut() {
        Some(frame) if !frame.is_empty() => {
            let stream = ws.get_mut();
            stream.write_all(frame).and_then(|()| stream.flush())
        }
        _ => masked::send(ws.get_mut(), masked::BINARY, &job.payload),
    };
    written.map_err(|e| format!("send: {}", crate::error::io_cause(&e)))?;
    let received = Instant::now();
    record.send_s = received.duration_since(sent).as_secs_f64();
    if let Some(frame) = next {
        masked::encode(masked::BINARY, &job.payload, frame);
    }
    let reply = read_reply(ws);
    // A failed message's row still says how long its reply (a close, a
    // binary message) or the wait for it took (see #13).
    record.recv_s = received.elapsed().as_secs_f64();
    check_reply(&reply?, job)
}

/// Reads up to the next text message; Err names what came instead.
fn read_reply(ws: &mut WebSocket<Stream>) -> Result<tungstenite::Utf8Bytes, String> {
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => return Ok(text),
            Ok(Message::Binary(_)) => return Err("reply: binary message, expected text".into()),
            Ok(Message::Close(frame)) => {
                return Err(match frame {
                    Some(f) => format!(
                        "reply: server closed with {} {}",
                        u16::from(f.code),
                        f.reason
                    ),
                    None => "reply: server closed the connection".into(),
                });
            }
            Ok(_) => continue,
            // Ctrl-C interrupts a read with a timeout; the message in
            // flight is still finished and counted.
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                continue;
            }
            Err(e) => return Err(format!("reply: {}", crate::error::ws_cause(&e))),
        }
    }
}

fn check_reply(reply: &str, job: &Job) -> Result<(), String> {
    match &job.expected {
        Some(expected) => {
            let parsed = stats::parse_reply(reply).map_err(|e| format!("verify: {e}"))?;
            parsed.check(expected).map_err(|e| format!("verify: {e}"))?;
            if let stats::Reply::LenOnly { .. } = parsed {
                job.lengths_only.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
        None if reply.starts_with("Error") => Err(format!("server said: {reply}")),
        None => Ok(()),
    }
}

fn summarise(
    args: &BenchArgs,
    job: &Job,
    records: &[Record],
    wall: Duration,
    stopped: bool,
) -> Summary {
    let mut connect = Latency::default();
    let mut send = Latency::default();
    let mut recv = Latency::default();
    let mut total = Latency::default();
    let secs = Duration::from_secs_f64;
    for r in records.iter().filter(|r| r.ok) {
        if r.connect_s > 0.0 {
            connect.record(secs(r.connect_s));
        }
        send.record(secs(r.send_s));
        recv.record(secs(r.recv_s));
        total.record(secs(r.total_s));
    }
    let ok = records.iter().filter(|r| r.ok).count() as u64;
    let wall_s = wall.as_secs_f64();
    Summary {
        mode: args.mode.as_str(),
        url: job.url.text.clone(),
        size: args.size,
        count: records.len() as u64,
        ok,
        failed: records.len() as u64 - ok,
        interrupted: !stopped && (records.len() as u64) < args.count,
        stopped_after_failures: stopped,
        max_failures: args.max_failures,
        verified_lengths_only: job.lengths_only.load(Ordering::Relaxed),
        wall_s,
        messages_per_s: ok as f64 / wall_s,
        mb_per_s: (ok as f64 * args.size as f64) / 1e6 / wall_s,
        tls_handshakes: 0,
        tls_resumed: 0,
        connect: connect.summary(),
        send: send.summary(),
        recv: recv.summary(),
        total: total.summary(),
    }
}

fn print_summary(s: &Summary, json: bool) {
    if json {
        return export::print_json(s);
    }
    // A closed stdout (`| head`) is no reason to fail a finished run.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "mode:       {} ({} bytes per message, {})",
        s.mode, s.size, s.url
    );
    let ended = if s.interrupted {
        " (interrupted)".to_string()
    } else if s.stopped_after_failures {
        format!(
            " (stopped after {} failed in a row: --max-failures)",
            s.max_failures
        )
    } else {
        String::new()
    };
    let _ = writeln!(out, "messages:   {} ok, {} failed{ended}", s.ok, s.failed);
    if s.verified_lengths_only > 0 {
        let _ = if s.verified_lengths_only == s.ok {
            writeln!(out, "verified lengths only: the server sends no statistics")
        } else {
            writeln!(
                out,
                "verified lengths only for {} of {} replies: the server sent no statistics in them",
                s.verified_lengths_only, s.ok
            )
        };
    }
    let _ = writeln!(out, "wall time:  {:.3} s", s.wall_s);
    let _ = writeln!(
        out,
        "throughput: {:.1} messages/s, {:.1} MB/s",
        s.messages_per_s, s.mb_per_s
    );
    if s.tls_handshakes > 0 {
        let _ = writeln!(
            out,
            "tls:        {} handshakes, {} resumed",
            s.tls_handshakes, s.tls_resumed
        );
    }
    let _ = crate::metrics::write_table(
        &mut out,
        10,
        &[
            ("connect", &s.connect),
            ("send", &s.send),
            ("recv", &s.recv),
            ("total", &s.total),
        ],
    );
}
