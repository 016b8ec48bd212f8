//! `wsbench bench --rate R`: the open-loop generator (#16). Messages are
//! due at fixed intervals, R a second in all, over K long-lived
//! connections, whether or not earlier replies came back; each message's
//! latency runs from when it was due (coordinated omission corrected, as
//! wrk2 does). A closed-loop client measures a server that stalls for
//! 100 ms once; a user sending at a fixed rate meets that stall with every
//! message due during it, and so does this.
//!
//! This module owns the run: connecting every connection before the
//! schedule starts, the schedule itself, merging the connections'
//! figures, the summary (achieved rate, corrected and uncorrected
//! percentiles, the generator's own lag) and the one line that says when
//! the rate asked was not reached. `conn` runs one connection's share.
//! The interval log is `hdrlog`'s; the CSV rows are `export`'s.

mod conn;

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::cli::{BenchArgs, MessageKind};
use crate::error::Error;
use crate::export;
use crate::metrics::{Latency, human};

pub use conn::tighten_timer_slack;
use conn::{ConnResult, Payload, Schedule};

/// A connection thread sends one message at a time and reads a short
/// reply: a small stack lets thousands start.
const CONN_STACK: usize = 256 * 1024;

/// How long past the end of the schedule messages still due may leave: a
/// tenth of the run, within these bounds. A connection held up at the end
/// (a stall, a thread woken late) sends its backlog, which then counts
/// with the wait in its latency; what is still unsent after that was
/// beyond reach.
const GRACE_MIN: Duration = Duration::from_millis(100);
const GRACE_MAX: Duration = Duration::from_secs(1);

/// Percentiles of one measure, in seconds.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(latency: &Latency) -> Percentiles {
        if latency.count() == 0 {
            return Percentiles::default();
        }
        Percentiles {
            p50: latency.quantile(0.50),
            p90: latency.quantile(0.90),
            p99: latency.quantile(0.99),
            p999: latency.quantile(0.999),
            max: latency.quantile(1.0),
        }
    }
}

/// The run's figures, as printed and as `--json`.
#[derive(Debug, Serialize)]
pub struct RateSummary {
    pub mode: &'static str,
    pub url: String,
    pub message: &'static str,
    pub size: usize,
    pub connections: u32,
    pub rate: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Messages due in the measured time, and what became of them.
    pub scheduled: u64,
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    /// Due and never sent: the run ended (or the connection failed) first.
    pub unsent: u64,
    /// Due while their connection still waited for a reply; sent late,
    /// with the wait in their corrected latency.
    pub sent_late_connection_busy: u64,
    /// Messages due in the measured time that were sent, per second of
    /// it (late ones included: their wait is in their latency).
    pub achieved_per_s: f64,
    pub rate_reached: bool,
    pub interrupted: bool,
    /// From each message's intended send time to its reply.
    pub corrected: Percentiles,
    /// From each message's actual send to its reply.
    pub uncorrected: Percentiles,
    /// How late sends left: against their intended time, or the previous
    /// reply when the connection was busy.
    pub lag: Percentiles,
}

pub fn run(args: &BenchArgs, rate: f64) -> Result<(), Error> {
    let (url, embedded) = crate::bench::target(args)?;
    let payload = Payload {
        binary: (args.message == MessageKind::Binary)
            .then(|| crate::stats::random_image(args.size, args.seed)),
        timeout: args.timeout,
    };
    let k = args.connections as u64;

    // Every connection is up before anything is due: a connect is not
    // part of any message's latency.
    let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
    let (go_tx, go_rx) = crossbeam_channel::unbounded::<Option<std::sync::Arc<Schedule>>>();
    let (done_tx, done_rx) = crossbeam_channel::unbounded();
    let mut threads = Vec::new();
    let mut setup_error = None;
    for c in 0..k {
        let (url, ready_tx, go_rx, done_tx) = (
            url.clone(),
            ready_tx.clone(),
            go_rx.clone(),
            done_tx.clone(),
        );
        let payload = Payload {
            binary: payload.binary.clone(),
            timeout: payload.timeout,
        };
        let keep_records = args.out.is_some();
        let spawned = thread::Builder::new()
            .name(format!("rate-conn-{c}"))
            .stack_size(CONN_STACK)
            .spawn(move || {
                conn::tighten_timer_slack();
                let ws = match crate::client::connect(&url, payload.timeout) {
                    Ok(connected) => {
                        let _ = ready_tx.send(Ok(()));
                        connected.socket
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                drop(ready_tx);
                let Ok(Some(schedule)) = go_rx.recv() else {
                    crate::client::connect::close(ws);
                    return;
                };
                let result = conn::run(c, ws, &schedule, &payload, keep_records);
                let _ = done_tx.send(result);
            });
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(e) => {
                setup_error = Some(format!("cannot start connection thread {c}: {e}"));
                break;
            }
        }
    }
    drop((ready_tx, done_tx));
    for _ in 0..threads.len() {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                setup_error.get_or_insert(e);
            }
            Err(_) => break,
        }
    }
    if let Some(cause) = setup_error {
        for _ in 0..threads.len() {
            let _ = go_tx.send(None);
        }
        for t in threads {
            let _ = t.join();
        }
        return Err(Error::Connect {
            url: url.text.clone(),
            cause,
        });
    }

    // A moment's head start, so every thread is asleep on its first due
    // time when it comes, not still being woken by this send.
    let t0 = Instant::now() + Duration::from_millis(20);
    let t0_unix = SystemTime::now() + Duration::from_millis(20);
    let measure_from = t0 + args.warmup;
    let schedule = std::sync::Arc::new(Schedule {
        t0,
        t0_unix,
        rate,
        connections: k,
        measure_from,
        end: measure_from + args.duration,
        grace: (args.duration / 10).clamp(GRACE_MIN, GRACE_MAX),
    });
    for _ in 0..threads.len() {
        let _ = go_tx.send(Some(std::sync::Arc::clone(&schedule)));
    }
    let measure_unix = t0_unix + args.warmup;
    let results: Vec<ConnResult> = done_rx.iter().collect();
    for t in threads {
        let _ = t.join();
    }
    if let Some(server) = embedded {
        server.shutdown();
    }

    // Every connection's figures together.
    let mut merged = ConnResult::new(measure_from, false);
    for r in &results {
        merged.merge(r);
    }
    let scheduled = due_between(rate, args.warmup, args.warmup + args.duration);
    let secs = args.duration.as_secs_f64();
    let achieved = merged.sent as f64 / secs;
    let summary = RateSummary {
        mode: "rate",
        url: url.text.clone(),
        message: args.message.as_str(),
        size: match args.message {
            MessageKind::Binary => args.size,
            MessageKind::Text => 0,
        },
        connections: args.connections,
        rate,
        duration_s: secs,
        warmup_s: args.warmup.as_secs_f64(),
        scheduled,
        sent: merged.sent,
        ok: merged.ok,
        failed: merged.failed,
        unsent: merged.unsent,
        sent_late_connection_busy: merged.busy,
        achieved_per_s: achieved,
        rate_reached: merged.unsent == 0,
        interrupted: crate::signal::interrupted(),
        corrected: Percentiles::of(&merged.corrected),
        uncorrected: Percentiles::of(&merged.uncorrected),
        lag: Percentiles::of(&merged.lag),
    };

    if let Some(path) = &args.hdr_log {
        let what = format!(
            "bench --rate {rate} --connections {} --message {} {}: corrected latency",
            args.connections,
            args.message.as_str(),
            url.text
        );
        merged.intervals.write(path, measure_unix, &what)?;
    }
    if let Some(path) = &args.out {
        let mut records: Vec<export::Record> = results
            .into_iter()
            .flat_map(|r| r.records.unwrap_or_default())
            .collect();
        records.sort_by_key(|r| r.idx);
        export::write_csv(path, &records)?;
    }
    print_summary(&summary, args.json);

    if summary.failed > 0 {
        return Err(Error::MessagesFailed {
            failed: summary.failed,
            total: summary.sent,
            first: merged.first_error.unwrap_or_default(),
        });
    }
    Ok(())
}

/// How many of the messages due at n / rate fall in [from, to).
fn due_between(rate: f64, from: Duration, to: Duration) -> u64 {
    let first = |t: Duration| (t.as_secs_f64() * rate - 1e-9).ceil().max(0.0) as u64;
    first(to) - first(from)
}

/// The line that says the rate asked was not reached, if it was not
/// (k6's "dropped iterations"): a lower rate is never measured quietly.
pub fn behind_line(s: &RateSummary) -> Option<String> {
    if s.rate_reached {
        return None;
    }
    Some(format!(
        "rate not reached: {:.1}/s achieved of {}/s asked; {} of {} due messages never sent \
         (their wait so far counts in the corrected latency), {} sent late because their \
         connection was still waiting for a reply, generator lag p99 {}: add --connections \
         or lower --rate",
        s.achieved_per_s,
        s.rate,
        s.unsent,
        s.scheduled,
        s.sent_late_connection_busy,
        human(s.lag.p99),
    ))
}

fn print_summary(s: &RateSummary, json: bool) {
    if json {
        // The JSON says `rate_reached`; a person watching stderr hears it too.
        if let Some(line) = behind_line(s) {
            eprintln!("{line}");
        }
        return export::print_json(s);
    }
    // A closed stdout (`| head`) is no reason to fail a finished run.
    let mut out = std::io::stdout().lock();
    let what = match s.message {
        "text" => "text messages (`Ping {n}!`)".to_string(),
        _ => format!("{}-byte binary messages", s.size),
    };
    let _ = writeln!(
        out,
        "rate:        {}/s asked over {} connections for {:.1} s (warmup {:.1} s), {what}, {}",
        s.rate, s.connections, s.duration_s, s.warmup_s, s.url
    );
    let _ = writeln!(
        out,
        "messages:    {} due, {} sent, {} ok, {} failed, {} never sent{}",
        s.scheduled,
        s.sent,
        s.ok,
        s.failed,
        s.unsent,
        if s.interrupted { " (interrupted)" } else { "" }
    );
    let _ = writeln!(
        out,
        "achieved:    {:.1} messages/s; {} sent late because their connection was still waiting",
        s.achieved_per_s, s.sent_late_connection_busy
    );
    let w = 11;
    let _ = writeln!(
        out,
        "{:<w$} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "p50", "p90", "p99", "p99.9", "max"
    );
    for (name, p) in [
        ("corrected", &s.corrected),
        ("uncorrected", &s.uncorrected),
        ("lag", &s.lag),
    ] {
        let _ = writeln!(
            out,
            "{:<w$} {:>9} {:>9} {:>9} {:>9} {:>9}",
            name,
            human(p.p50),
            human(p.p90),
            human(p.p99),
            human(p.p999),
            human(p.max)
        );
    }
    if let Some(line) = behind_line(s) {
        let _ = writeln!(out, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_due_count_each_tick_once() {
        let s = Duration::from_secs_f64;
        assert_eq!(due_between(100.0, s(0.0), s(1.0)), 100);
        assert_eq!(due_between(100.0, s(1.0), s(3.0)), 200);
        assert_eq!(due_between(3.0, s(0.0), s(1.0)), 3);
        assert_eq!(due_between(0.5, s(0.0), s(3.0)), 2);
    }
}
