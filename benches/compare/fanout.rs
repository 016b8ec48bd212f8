//! Chat fan-out at a paced rate (#17): `members` clients join one room;
//! a pacer sends `fan {seq} {intended_us}` through each member in turn at
//! a fixed aggregate rate, whether or not earlier lines have arrived, and
//! every other member records each delivery's latency from the line's
//! *intended* send time. A server that falls behind shows it in the
//! latency, never in a slower schedule (the open-loop issue's `fanout`
//! will do the same from its own command once it lands).
//!
//! ```text
//! pacer ─ line n at start + n/rate ─ through member n % members ─┐
//! server ─ relays `client {id}: fan n t` to the 99 others ───────┤
//! reader × members ─ latency = now − t, per line ─ merged ───────┘
//! ```
//!
//! The client runs in this process, on the client CPU, so its cost is
//! this process's CPU over the run (the cost watch's reads included).

use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};
use wsbench::client::connect::{ReadHalf, WriteHalf, connect_split};
use wsbench::metrics::Latency;

use crate::run::{RunResult, Status};
use crate::{Settings, cost, pinning};

const JOIN: &str = "Hey all, a new client has joined us";
/// Limit of each connect.
const SETUP_LIMIT: Duration = Duration::from_secs(20);
/// How long the join lines may take to reach everyone: milliseconds when
/// all goes well.
const JOIN_LIMIT: Duration = Duration::from_secs(3);
/// How long deliveries may trail the last line sent; later ones are lost.
const DRAIN_LIMIT: Duration = Duration::from_secs(3);

/// What one member's reader saw.
#[derive(Default)]
struct Seen {
    latency: Latency,
    deliveries: u64,
    /// Closed by the server with 1008.
    dropped: bool,
}

/// `(seq, intended µs)` from `client {id}: fan {seq} {intended_us}`.
fn parse_line(text: &str) -> Option<(u64, u64)> {
    let (_, rest) = text.split_once(": fan ")?;
    let (seq, at) = rest.split_once(' ')?;
    Some((seq.parse().ok()?, at.parse().ok()?))
}

/// Reads one member's messages until it has every line it is owed, the
/// server closes it, or its socket is shut down.
fn read_member(
    mut ws: WebSocket<ReadHalf>,
    joins_owed: usize,
    lines_owed: u64,
    epoch: Instant,
    joined: crossbeam_channel::Sender<()>,
) -> Seen {
    let mut seen = Seen::default();
    let mut joins = 0;
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => {
                if let Some((_, at_us)) = parse_line(&text) {
                    let late = epoch.elapsed().saturating_sub(Duration::from_micros(at_us));
                    seen.latency.record(late);
                    seen.deliveries += 1;
                    if seen.deliveries == lines_owed {
                        return seen;
                    }
                } else if text.as_str() == JOIN {
                    joins += 1;
                    if joins == joins_owed {
                        let _ = joined.send(());
                    }
                }
            }
            Ok(Message::Close(frame)) => {
                seen.dropped = frame.is_some_and(|f| f.code == CloseCode::Policy);
                return seen;
            }
            Ok(_) => {}
            Err(_) => return seen,
        }
    }
}

pub fn run(result: &mut RunResult, addr: &str, settings: &Settings, cpu: Option<usize>) {
    let members = settings.fanout_members;
    let rate = settings.fanout_rate as f64;
    let lines = (rate * settings.fanout_duration.as_secs_f64()).round() as u64;
    // Member k sends lines k, k + members, …: it is owed all the others.
    let sent_by = |k: usize| (lines + (members - 1 - k) as u64) / members as u64;
    let url = format!("ws://{addr}/chat/fanout");
    let self_before = cost::cpu_s(&cost::rusage(libc::RUSAGE_SELF));
    let epoch = Instant::now();
    let (joined_tx, joined) = crossbeam_channel::unbounded();
    let (done_tx, done) = crossbeam_channel::unbounded();
    let mut writers: Vec<WebSocket<WriteHalf>> = Vec::new();
    let mut streams = Vec::new();
    for k in 0..members {
        let request = url
            .as_str()
            .into_client_request()
            .expect("a ws:// URL of an address we printed");
        let client = match connect_split(request, SETUP_LIMIT) {
            Ok(client) => client,
            Err(e) => {
                result.note = format!("member {k} could not join: {e}");
                shut_down(&streams);
                return;
            }
        };
        let (reader, joined_tx, done_tx) = (client.reader, joined_tx.clone(), done_tx.clone());
        // Member k hears its own join and those of everyone after it.
        let (joins_owed, lines_owed) = (members - k, lines - sent_by(k));
        thread::Builder::new()
            .name(format!("fanout-member-{k}"))
            .spawn(move || {
                pinning::pin(cpu);
                let seen = read_member(reader, joins_owed, lines_owed, epoch, joined_tx);
                let _ = done_tx.send(seen);
            })
            .expect("a reader thread starts");
        writers.push(client.writer);
        streams.push(client.stream);
    }
    drop((joined_tx, done_tx));
    // Everyone has heard every join before the first line: a member still
    // reading the joins would charge that to the first deliveries. A
    // server that never delivers some join lines is noted, and the run
    // goes on: what it does with the lines that follow is the measure.
    let deadline = Instant::now() + JOIN_LIMIT;
    let mut heard = 0;
    while heard < members
        && joined
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    {
        heard += 1;
    }
    result
        .extra
        .insert("members_missing_joins", (members - heard) as f64);
    if heard < members {
        result.note = format!(
            "{} of {members} members had not heard every join line {}s after the last joined",
            members - heard,
            JOIN_LIMIT.as_secs()
        );
    }

    let (sent_tx, sent_rx) = crossbeam_channel::bounded(1);
    let pacer = thread::Builder::new()
        .name("fanout-pacer".into())
        .spawn(move || {
            pinning::pin(cpu);
            let start = Instant::now();
            let period = Duration::from_secs_f64(1.0 / rate);
            let mut failure = None;
            for n in 0..lines {
                let intended = start + period * n as u32;
                let now = Instant::now();
                if intended > now {
                    thread::sleep(intended - now);
                }
                let at_us = intended.duration_since(epoch).as_micros();
                let count = writers.len();
                let writer = &mut writers[n as usize % count];
                if let Err(e) = writer.send(Message::text(format!("fan {n} {at_us}"))) {
                    failure = Some(format!("line {n} could not be sent: {e}"));
                    break;
                }
            }
            let _ = sent_tx.send((failure, start.elapsed()));
            writers
        })
        .expect("the pacer thread starts");
    let (failure, paced) = sent_rx.recv().expect("the pacer reports before it ends");
    let mut writers = pacer.join().expect("the pacer does not panic");

    let mut all = Seen::default();
    let mut finished = 0;
    let deadline = Instant::now() + DRAIN_LIMIT;
    while finished < members {
        match done.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(seen) => {
                all.latency.merge(&seen.latency);
                all.deliveries += seen.deliveries;
                finished += 1;
                if seen.dropped {
                    *result.extra.entry("dropped_members").or_default() += 1.0;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                // Lines still owed are lost: wake the readers to end.
                shut_down(&streams);
                break;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    // Readers woken by the shutdown report what they had.
    while let Ok(seen) = done.recv_timeout(Duration::from_secs(5)) {
        all.latency.merge(&seen.latency);
        all.deliveries += seen.deliveries;
    }
    for writer in &mut writers {
        let _ = writer.close(None);
        let _ = writer.flush();
    }
    shut_down(&streams);
    result.client_cpu_s = Some(cost::cpu_s(&cost::rusage(libc::RUSAGE_SELF)) - self_before);

    let owed = (0..members).map(|k| lines - sent_by(k)).sum::<u64>();
    let summary = all.latency.summary();
    let secs = paced.as_secs_f64();
    result.ok = all.deliveries;
    result.failed = owed.saturating_sub(all.deliveries);
    result.wall_s = Some(secs);
    result.messages_per_s = Some(all.deliveries as f64 / secs);
    result.p99_ms = Some(summary.p99 * 1e3);
    for (key, value) in [
        ("lines_sent", lines as f64),
        ("deliveries", all.deliveries as f64),
        ("lost", result.failed as f64),
        ("target_deliveries_per_s", rate * (members - 1) as f64),
        ("delivery_p50_ms", summary.p50 * 1e3),
        ("delivery_p99_ms", summary.p99 * 1e3),
        ("delivery_max_ms", summary.max * 1e3),
    ] {
        result.extra.insert(key, value);
    }
    result.extra.entry("dropped_members").or_insert(0.0);
    match failure {
        Some(why) => result.note = why,
        None => result.status = Status::Ok,
    }
    if result.failed > 0 && result.note.is_empty() {
        result.note = format!("{} deliveries lost", result.failed);
    }
}

fn shut_down(streams: &[std::sync::Arc<wsbench::stream::Stream>]) {
    for stream in streams {
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
}
