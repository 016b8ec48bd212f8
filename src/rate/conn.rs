//! One connection of the open-loop schedule: its own thread, its share of
//! the messages (n = k, k + K, k + 2K, … of K connections), one message in
//! flight, as wrk2 keeps one request in flight per connection.
//!
//! ```text
//! intended(n) = t0 + n / R          fixed before the run, never moved
//! send        = max(intended, previous reply)   (+ the generator's lag)
//! corrected   = reply − intended    what a user sending at that time saw
//! uncorrected = reply − send        what a closed-loop client reports
//! ```
//!
//! A message whose connection is still waiting at its intended time goes
//! out as soon as the reply is in, and its wait counts in its corrected
//! latency; one still unsent when the run ends is counted, and its wait so
//! far counts too (a lower bound): nothing is dropped silently.

use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime};

use tungstenite::{Message, WebSocket};

use crate::client::connect::Stream;
use crate::client::masked;
use crate::export::Record;
use crate::hdrlog::Intervals;
use crate::metrics::Latency;

/// The whole run's schedule, shared by every connection.
pub struct Schedule {
    /// When message 0 is due.
    pub t0: Instant,
    /// `t0` on the wall clock, for the CSV's start times.
    pub t0_unix: SystemTime,
    pub rate: f64,
    pub connections: u64,
    /// Messages due before this are sent but not measured (--warmup).
    pub measure_from: Instant,
    /// No message is due at or after this.
    pub end: Instant,
    /// How long past `end` a late message may still leave: a message due
    /// a moment before the end must not be counted unsent for the time a
    /// thread takes to wake.
    pub grace: Duration,
}

impl Schedule {
    pub fn intended(&self, n: u64) -> Instant {
        self.t0 + Duration::from_secs_f64(n as f64 / self.rate)
    }
}

/// What to send and how long to wait for a reply.
pub struct Payload {
    /// `None`: text `Ping {n}!`.
    pub binary: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// One connection's figures, merged by the caller.
pub struct ConnResult {
    pub corrected: Latency,
    pub uncorrected: Latency,
    /// How late each send left against when it could have left: its
    /// intended time, or the previous reply if the connection was busy.
    pub lag: Latency,
    /// Corrected latencies by the second they were measured in.
    pub intervals: Intervals,
    /// Measured messages: sent, answered, failed, never sent.
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub unsent: u64,
    /// Measured messages whose connection was still waiting for a reply at
    /// their intended time.
    pub busy: u64,
    pub first_error: Option<String>,
    /// One per measured message, with `--out`.
    pub records: Option<Vec<Record>>,
}

impl ConnResult {
    /// Nothing measured yet; intervals counted from `measure_from`.
    pub fn new(measure_from: Instant, keep_records: bool) -> ConnResult {
        ConnResult {
            corrected: Latency::default(),
            uncorrected: Latency::default(),
            lag: Latency::default(),
            intervals: Intervals::new(measure_from),
            sent: 0,
            ok: 0,
            failed: 0,
            unsent: 0,
            busy: 0,
            first_error: None,
            records: keep_records.then(Vec::new),
        }
    }

    /// Adds another connection's figures (not its records) to these.
    pub fn merge(&mut self, r: &ConnResult) {
        self.corrected.merge(&r.corrected);
        self.uncorrected.merge(&r.uncorrected);
        self.lag.merge(&r.lag);
        self.intervals.merge(&r.intervals);
        self.sent += r.sent;
        self.ok += r.ok;
        self.failed += r.failed;
        self.unsent += r.unsent;
        self.busy += r.busy;
        if self.first_error.is_none() {
            self.first_error.clone_from(&r.first_error);
        }
    }
}

/// Runs connection `k`'s share of `schedule` on `ws`.
pub fn run(
    k: u64,
    mut ws: WebSocket<Stream>,
    schedule: &Schedule,
    payload: &Payload,
    keep_records: bool,
) -> ConnResult {
    let mut result = ConnResult::new(schedule.measure_from, keep_records);
    let mut text = String::new();
    // The next image's frame, masked while the connection is idle (as the
    // serial mode does while the server works), so masking 480 KB is not
    // part of any message's latency.
    let mut frame = Vec::new();
    let mut free_at = schedule.t0;
    let mut n = k;
    let mut broken = false;
    loop {
        let intended = schedule.intended(n);
        if intended >= schedule.end {
            break;
        }
        let measured = intended >= schedule.measure_from;
        let now = Instant::now();
        let interrupted = crate::signal::interrupted();
        if interrupted && intended > now {
            // Ctrl-C: what was due so far is counted, nothing later.
            break;
        }
        if broken || interrupted || now >= schedule.end + schedule.grace {
            // Due, never sent: its wait so far counts against latency.
            if measured {
                let stop = now.max(schedule.end);
                let waited = stop.saturating_duration_since(intended);
                result.unsent += 1;
                result.corrected.record(waited);
                result.intervals.record(stop, waited);
                if let Some(records) = &mut result.records {
                    let why = if broken {
                        "connection failed"
                    } else {
                        "not sent by the end of the run"
                    };
                    records.push(record(schedule, n, intended, None, waited, why));
                }
            }
            n += schedule.connections;
            continue;
        }
        wait_until(intended, now);
        let busy = free_at > intended;
        let ready = free_at.max(intended);
        let sent = Instant::now();
        let outcome = exchange(&mut ws, payload, n, &mut text, &mut frame);
        let replied = Instant::now();
        free_at = replied;
        if measured {
            result.sent += 1;
            result.busy += u64::from(busy);
            result.lag.record(sent.saturating_duration_since(ready));
        }
        match outcome {
            Ok(()) if measured => {
                let corrected = replied.saturating_duration_since(intended);
                result.ok += 1;
                result.corrected.record(corrected);
                result.uncorrected.record(replied - sent);
                result.intervals.record(replied, corrected);
                if let Some(records) = &mut result.records {
                    records.push(record(schedule, n, intended, Some(sent), corrected, ""));
                }
            }
            Ok(()) => {}
            Err(e) => {
                if measured {
                    result.failed += 1;
                    if let Some(records) = &mut result.records {
                        let waited = replied.saturating_duration_since(intended);
                        records.push(record(schedule, n, intended, Some(sent), waited, &e));
                    }
                }
                log::debug!("connection {k}, message {n}: {e}");
                result
                    .first_error
                    .get_or_insert(format!("message {n}: {e}"));
                broken = true;
            }
        }
        n += schedule.connections;
    }
    if !broken {
        crate::client::connect::close(ws);
    }
    result
}

/// A measured message as a CSV row: `start_unix_s` is its intended send
/// time, `send_s` how late it left, `recv_s` its uncorrected latency and
/// `total_s` its corrected one.
fn record(
    schedule: &Schedule,
    n: u64,
    intended: Instant,
    sent: Option<Instant>,
    total: Duration,
    error: &str,
) -> Record {
    let since_t0 = intended.duration_since(schedule.t0);
    let start = schedule.t0_unix + since_t0;
    let send_s = sent.map_or(0.0, |s| s.saturating_duration_since(intended).as_secs_f64());
    Record {
        idx: n,
        start_unix_s: start
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        connect_s: 0.0,
        send_s,
        recv_s: (total.as_secs_f64() - send_s).max(0.0),
        total_s: total.as_secs_f64(),
        ok: error.is_empty(),
        error: error.to_string(),
        connect_failure: None,
    }
}

/// Sends message `n` and reads its reply (any data message). A binary
/// message goes out from `frame` when it is built, and the next one is
/// built after the reply.
fn exchange(
    ws: &mut WebSocket<Stream>,
    payload: &Payload,
    n: u64,
    text: &mut String,
    frame: &mut Vec<u8>,
) -> Result<(), String> {
    let replied = send_and_read(ws, payload, n, text, frame);
    if let Some(image) = &payload.binary {
        // A fresh mask for every frame (RFC 6455 5.3); after a failure
        // part of the old one may have gone out.
        masked::encode(masked::BINARY, image, frame);
    }
    replied
}

fn send_and_read(
    ws: &mut WebSocket<Stream>,
    payload: &Payload,
    n: u64,
    text: &mut String,
    frame: &[u8],
) -> Result<(), String> {
    // A pong tungstenite owes goes out first, so our frame never lands
    // inside one of its frames.
    ws.flush()
        .map_err(|e| format!("send: {}", crate::error::ws_cause(&e)))?;
    let written = match &payload.binary {
        Some(_) if !frame.is_empty() => {
            let stream = ws.get_mut();
            stream.write_all(frame).and_then(|()| stream.flush())
        }
        Some(image) => masked::send(ws.get_mut(), masked::BINARY, image),
        None => {
            use std::fmt::Write as _;
            text.clear();
            let _ = write!(text, "Ping {n}!");
            masked::send(ws.get_mut(), crate::wire::TEXT, text.as_bytes())
        }
    };
    written.map_err(|e| format!("send: {}", crate::error::io_cause(&e)))?;
    loop {
        match ws.read() {
            Ok(Message::Text(_) | Message::Binary(_)) => return Ok(()),
            Ok(Message::Close(frame)) => {
                return Err(match frame {
                    Some(f) => format!("server closed with {} {}", u16::from(f.code), f.reason),
                    None => "server closed the connection".into(),
                });
            }
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                continue;
            }
            Err(e) => return Err(format!("reply: {}", crate::error::ws_cause(&e))),
        }
    }
}

/// Sleeps until `intended`. The thread's timer slack is set to 1 ns once
/// (see [`tighten_timer_slack`]).
fn wait_until(intended: Instant, now: Instant) {
    if intended > now {
        std::thread::sleep(intended - now);
    }
}

/// Linux lets a sleeping thread's timer fire up to its "timer slack" late
/// (50 µs by default), to batch wake-ups; a generator whose lag is the
/// measure wants it fired on time. Best effort: without it, sends leave
/// up to 50 µs later, which the lag figures show.
pub fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}
