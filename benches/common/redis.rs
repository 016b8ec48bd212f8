//! `make bench`'s `redis` section (#18): chat fan-out across two `--redis`
//! instances against one instance at the same paced rate, and how soon
//! cross-instance delivery is back after Redis restarts.
//!
//! Fan-out: `members` clients join one room, spread round-robin over the
//! servers' URLs; a pacer sends `fan {seq} {intended_us}` through member
//! `seq % members` at a fixed aggregate rate, whether or not earlier lines
//! arrived, and every other member records each delivery's latency from
//! the line's *intended* send time, and counts lines lost, duplicated or
//! out of per-sender order. (The open-loop `wsbench fanout` with several
//! `--url` will measure the same from the command line once it lands.)
//!
//! Needs `redis-server` on the PATH (`make test` installs it).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};
use wsbench::client::connect::{ReadHalf, connect_split};
use wsbench::metrics::Latency;

use crate::start_server;

const JOIN: &str = "Hey all, a new client has joined us";

/// A process killed and reaped on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `redis-server` on `port`, no persistence, once it answers PING.
pub fn start_redis(port: u16, dir: &PathBuf) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server on the PATH (apt-get install -y redis-server)");
    let proc = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ping(port) {
        assert!(
            Instant::now() < deadline,
            "redis-server did not answer PING"
        );
        thread::sleep(Duration::from_millis(5));
    }
    proc
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut reply = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What a paced fan-out run came to.
#[derive(Debug, Default)]
pub struct FanOut {
    /// Members that had not heard every join owed them before the lines.
    pub missing_joins: usize,
    pub owed: u64,
    pub deliveries: u64,
    pub duplicated_or_reordered: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl FanOut {
    pub fn lost(&self) -> u64 {
        self.owed.saturating_sub(self.deliveries)
    }
}

struct Seen {
    latency: Latency,
    deliveries: u64,
    bad: u64,
}

/// `(seq, intended µs)` from `client {id}: fan {seq} {intended_us}`.
fn parse_line(text: &str) -> Option<(u64, u64)> {
    let (_, rest) = text.split_once(": fan ")?;
    let (seq, at) = rest.split_once(' ')?;
    Some((seq.parse().ok()?, at.parse().ok()?))
}

fn read_member(
    mut ws: WebSocket<ReadHalf>,
    members: u64,
    joins_owed: usize,
    lines_owed: u64,
    epoch: Instant,
    joined: crossbeam_channel::Sender<()>,
) -> Seen {
    let mut seen = Seen {
        latency: Latency::default(),
        deliveries: 0,
        bad: 0,
    };
    // The next seq owed by each sender (seq % members).
    let mut next: HashMap<u64, u64> = HashMap::new();
    let mut joins = 0;
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => {
                if let Some((seq, at_us)) = parse_line(&text) {
                    let late = epoch.elapsed().saturating_sub(Duration::from_micros(at_us));
                    seen.latency.record(late);
                    seen.deliveries += 1;
                    let expected = next.entry(seq % members).or_insert(seq % members);
                    if seq != *expected {
                        seen.bad += 1;
                    }
                    *expected = seq + members;
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
            Ok(Message::Close(_)) | Err(_) => return seen,
            Ok(_) => {}
        }
    }
}

/// `members` members over `urls` (round-robin) in one room; `rate` lines
/// a second for `duration`.
pub fn fan_out(urls: &[String], members: usize, rate: f64, duration: Duration) -> FanOut {
    let lines = (rate * duration.as_secs_f64()).round() as u64;
    let sent_by = |k: usize| (lines + (members - 1 - k) as u64) / members as u64;
    let epoch = Instant::now();
    let (joined_tx, joined) = crossbeam_channel::unbounded();
    let (done_tx, done) = crossbeam_channel::unbounded();
    let mut writers = Vec::new();
    let mut streams = Vec::new();
    for k in 0..members {
        let url = format!("{}/chat/fanout", urls[k % urls.len()]);
        let request = url.as_str().into_client_request().unwrap();
        let client = connect_split(request, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("member {k} could not join {url}: {e}"));
        let (reader, joined_tx, done_tx) = (client.reader, joined_tx.clone(), done_tx.clone());
        let (joins_owed, lines_owed) = (members - k, lines - sent_by(k));
        thread::spawn(move || {
            let seen = read_member(
                reader,
                members as u64,
                joins_owed,
                lines_owed,
                epoch,
                joined_tx,
            );
            let _ = done_tx.send(seen);
        });
        writers.push(client.writer);
        streams.push(client.stream);
        // Across instances a join line lands a moment after the join; let
        // it land before the next member joins, so each hears what it is
        // owed and no more.
        if urls.len() > 1 {
            thread::sleep(Duration::from_millis(5));
        }
    }
    drop((joined_tx, done_tx));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut heard = 0;
    while heard < members
        && joined
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    {
        heard += 1;
    }
    // A member short of join lines would be a lost join line (one was
    // found and fixed: the 101 went out before the join); noted, and the
    // run goes on.
    let missing_joins = members - heard;
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate);
    for n in 0..lines {
        let intended = start + period * n as u32;
        let now = Instant::now();
        if intended > now {
            thread::sleep(intended - now);
        }
        let at_us = intended.duration_since(epoch).as_micros();
        let count = writers.len();
        writers[n as usize % count]
            .send(Message::text(format!("fan {n} {at_us}")))
            .unwrap();
    }
    let mut all = Latency::default();
    let mut result = FanOut {
        missing_joins,
        owed: (0..members).map(|k| lines - sent_by(k)).sum(),
        ..FanOut::default()
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut finished = 0;
    while finished < members {
        match done.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(seen) => {
                all.merge(&seen.latency);
                result.deliveries += seen.deliveries;
                result.duplicated_or_reordered += seen.bad;
                finished += 1;
            }
            Err(_) => break,
        }
    }
    for stream in &streams {
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    while let Ok(seen) = done.recv_timeout(Duration::from_secs(2)) {
        all.merge(&seen.latency);
        result.deliveries += seen.deliveries;
        result.duplicated_or_reordered += seen.bad;
    }
    let summary = all.summary();
    result.p50_ms = summary.p50 * 1e3;
    result.p99_ms = summary.p99 * 1e3;
    result.max_ms = summary.max * 1e3;
    result
}

/// Two instances, one member each: kills Redis, restarts it on the same
/// port, and returns the ms from its first answered PING to the first
/// line that crosses from one instance to the other.
pub fn restart_recovery_ms() -> f64 {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("wsbench-bench-redis-{}", std::process::id()));
    let redis = start_redis(port, &dir);
    let url = format!("redis://127.0.0.1:{port}");
    let a = start_server(&["--redis", &url]);
    let b = start_server(&["--redis", &url]);
    let (mut from, _) = tungstenite::connect(format!("ws://{}/chat/r", a.1)).unwrap();
    let (mut to, _) = tungstenite::connect(format!("ws://{}/chat/r", b.1)).unwrap();
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = to.get_ref() {
        s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    }
    drop(redis);
    // Both instances have seen it go: a probe does not cross.
    thread::sleep(Duration::from_millis(300));
    let redis = start_redis(port, &dir);
    let back = Instant::now();
    let mut n = 0;
    let elapsed = loop {
        assert!(back.elapsed() < Duration::from_secs(10), "never recovered");
        from.send(Message::text(format!("probe {n}"))).unwrap();
        n += 1;
        match to.read() {
            Ok(Message::Text(t)) if t.contains(": probe ") => break back.elapsed(),
            _ => continue,
        }
    };
    drop((from, to, a, b, redis));
    elapsed.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The section: single instance and two instances alternated (A B A B),
/// medians and the median per-pair ratio; then the restart recovery,
/// median of the runs.
pub fn section(
    quick: bool,
    add: &mut impl FnMut(&str, f64, &'static str, Option<(String, bool)>, String),
) {
    let (members, rate) = (100, 200.0);
    let duration = Duration::from_secs(if quick { 2 } else { 5 });
    let repeats = if quick { 1 } else { 5 };
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("wsbench-bench-fleet-{}", std::process::id()));
    let redis = start_redis(port, &dir);
    let url = format!("redis://127.0.0.1:{port}");
    let (mut single, mut fleet) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        let one = start_server(&[]);
        single.push(fan_out(
            &[format!("ws://{}", one.1)],
            members,
            rate,
            duration,
        ));
        drop(one);
        let a = start_server(&["--redis", &url]);
        let b = start_server(&["--redis", &url]);
        let urls = [format!("ws://{}", a.1), format!("ws://{}", b.1)];
        fleet.push(fan_out(&urls, members, rate, duration));
        drop((a, b));
    }
    drop(redis);
    let p99 = |runs: &[FanOut]| median(runs.iter().map(|r| r.p99_ms).collect());
    let (one_p99, two_p99) = (p99(&single), p99(&fleet));
    let lost: u64 = fleet
        .iter()
        .map(|r| r.lost() + r.duplicated_or_reordered)
        .sum();
    let note = |runs: &[FanOut]| {
        runs.iter()
            .map(|r| {
                format!(
                    "p50 {:.2} p99 {:.2} max {:.2} ms, lost {}, members short of joins {}",
                    r.p50_ms,
                    r.p99_ms,
                    r.max_ms,
                    r.lost(),
                    r.missing_joins
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    add(
        "redis: fan-out p99, 1 instance (100 members, 200 lines/s)",
        one_p99,
        "ms",
        None,
        note(&single),
    );
    add(
        "redis: fan-out p99, 2 instances 50/50 (same rate)",
        two_p99,
        "ms",
        None,
        note(&fleet),
    );
    // Each pair ran back to back, so its ratio shares that moment's noise.
    let ratio = median(
        single
            .iter()
            .zip(&fleet)
            .map(|(one, two)| two.p99_ms / one.p99_ms)
            .collect(),
    );
    add(
        "redis: fan-out p99, 2 instances / 1 instance",
        ratio,
        "ratio",
        Some(("<= 2".into(), ratio <= 2.0)),
        format!("median of {repeats} back-to-back pairs"),
    );
    add(
        "redis: fan-out lost, duplicated or reordered, 2 instances",
        lost as f64,
        "deliveries",
        Some(("0".into(), lost == 0)),
        format!("{repeats} runs of {} deliveries owed", fleet[0].owed),
    );
    let recovery: Vec<f64> = (0..repeats).map(|_| restart_recovery_ms()).collect();
    let r = median(recovery.clone());
    add(
        "redis: cross-instance delivery back after a Redis restart",
        r,
        "ms",
        Some(("<= 2000 ms".into(), r <= 2000.0)),
        format!("runs: {recovery:?}"),
    );
}
