//! The lifecycle and capacity figures of #12, for `make bench`: idle chat
//! members held at once, a server filled past its capacity, and chat
//! sessions in a row. Each works on a separate server process (address and
//! pid given), reads what it needs from /metrics and /proc, and leaves the
//! server as it found it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::Message;

const UPGRADE: &str = "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// One value of the server's /metrics.
pub fn metric(addr: &str, name: &str) -> Option<u64> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))?
        .trim()
        .parse()
        .ok()
}

/// A field of /proc/PID/status, in its own unit (kB for VmRSS).
pub fn status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn maps(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|m| m.lines().count() as u64)
        .unwrap_or(0)
}

/// Waits up to 30 s for `connections_current` (the scrape counted) and the
/// thread count to come back; returns whether they did, and the last pair.
pub fn released(addr: &str, pid: u32, threads: u64, holding: u64) -> (bool, u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let current = metric(addr, "wsbench_connections_current").unwrap_or(u64::MAX);
        let now_threads = status(pid, "Threads:");
        if current == holding + 1 && now_threads == threads {
            return (true, current - 1, now_threads);
        }
        if Instant::now() >= deadline {
            return (false, current.saturating_sub(1), now_threads);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

pub struct Members {
    pub held: usize,
    pub rss_per_kib: f64,
    pub threads: u64,
    pub maps: u64,
    pub echo_ok: bool,
    pub released: bool,
}

/// `n` idle chat members at once, 100 to a room, from 4 client threads;
/// then an /echo round trip, then all leave.
pub fn idle_members(addr: &str, pid: u32, n: usize) -> Members {
    let threads_before = status(pid, "Threads:");
    let rss_before = status(pid, "VmRSS:");
    let members: Vec<_> = thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn_scoped(scope, move || {
                        (0..n / 4)
                            .map(|i| {
                                let url = format!("ws://{addr}/chat/room{}", (w * n / 4 + i) % 100);
                                tungstenite::connect(url).expect("join").0
                            })
                            .collect::<Vec<_>>()
                    })
                    .unwrap()
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    // Every member counted in: joins are fanned out by then.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(addr, "wsbench_connections_current").unwrap_or(0) < members.len() as u64 + 1
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(50));
    }
    let rss_after = status(pid, "VmRSS:");
    let threads = status(pid, "Threads:");
    let maps = maps(pid);
    let echo_ok = match tungstenite::connect(format!("ws://{addr}/echo")) {
        Ok((mut ws, _)) => {
            ws.send(Message::text("still here")).is_ok()
                && matches!(ws.read(), Ok(Message::Text(t)) if t.as_str() == "still here")
        }
        Err(_) => false,
    };
    let held = members.len();
    drop(members);
    let (released, _, _) = released(addr, pid, threads_before, 0);
    Members {
        held,
        rss_per_kib: rss_after.saturating_sub(rss_before) as f64 / held.max(1) as f64,
        threads,
        maps,
        echo_ok,
        released,
    }
}

#[derive(Default)]
pub struct Fill {
    pub capacity: u64,
    pub attempted: u64,
    pub accepted: u64,
    pub refused_readable: u64,
    pub resets: u64,
    pub other: u64,
    pub maps: u64,
    pub released: bool,
}

/// Opens `capacity + extra` upgrades to /echo from 4 threads, holding the
/// accepted ones; every refusal is read to its end.
pub fn fill_past_capacity(addr: &str, pid: u32, extra: u64) -> Fill {
    let threads_before = status(pid, "Threads:");
    let capacity = metric(addr, "wsbench_connections_capacity").unwrap_or(0);
    let total = capacity + extra;
    let results: Vec<(Vec<TcpStream>, Fill)> = thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn_scoped(scope, move || {
                        let mut held = Vec::new();
                        let mut fill = Fill::default();
                        for _ in 0..total / 4 {
                            open_one(addr, &mut held, &mut fill);
                        }
                        (held, fill)
                    })
                    .unwrap()
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut fill = Fill {
        capacity,
        attempted: total / 4 * 4,
        maps: maps(pid),
        ..Fill::default()
    };
    let mut held = Vec::new();
    for (h, f) in results {
        held.extend(h);
        fill.accepted += f.accepted;
        fill.refused_readable += f.refused_readable;
        fill.resets += f.resets;
        fill.other += f.other;
    }
    drop(held);
    fill.released = released(addr, pid, threads_before, 0).0;
    fill
}

fn open_one(addr: &str, held: &mut Vec<TcpStream>, fill: &mut Fill) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        fill.other += 1;
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if s.write_all(UPGRADE.as_bytes()).is_err() {
        fill.other += 1;
        return;
    }
    let mut head = [0u8; 12];
    match s.read_exact(&mut head) {
        Ok(()) if &head == b"HTTP/1.1 101" => {
            // The rest of the 101 head stays unread: nothing else comes.
            fill.accepted += 1;
            held.push(s);
        }
        Ok(()) if &head == b"HTTP/1.1 503" => {
            let mut rest = Vec::new();
            match s.read_to_end(&mut rest) {
                Ok(_) => fill.refused_readable += 1,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => fill.resets += 1,
                Err(_) => fill.other += 1,
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => fill.resets += 1,
        _ => fill.other += 1,
    }
}

/// `n` chat sessions one after another, each joining, closing and waiting
/// for the server to close; then whether everything came back.
pub fn chat_churn(addr: &str, pid: u32, n: usize) -> (f64, bool, u64, u64) {
    let threads_before = status(pid, "Threads:");
    let started = Instant::now();
    for _ in 0..n {
        let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/chat/churn")).expect("join");
        ws.close(None).expect("close");
        while ws.read().is_ok() {}
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let (ok, current, threads) = released(addr, pid, threads_before, 0);
    (rate, ok, current, threads.saturating_sub(threads_before))
}
