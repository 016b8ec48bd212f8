//! `make bench`'s open-loop sections (#16), each a `wsbench` command run
//! as a user would run it, with `--json`:
//!
//! - rate-fanout: `wsbench fanout`, 100 members of one room on a server
//!   process of its own, at a paced rate (repeated, medians), then a
//!   short sweep up the rates for the highest one whose delivery p99 stays
//!   ≤ 10 ms with nothing lost (target ≥ 5,000 publications/s).
//! - rate-serial: serial images, closed loop (`--mode serial`) for the
//!   maximum rate and its p50, then `--rate` at 50% and 90% of that
//!   maximum over one connection: corrected p99, and its ratio to the
//!   closed-loop p50 (target at 50%: ≤ 2×). Rounds interleave the three.
//! - rate-lag: the generator itself, 20,000 text messages/s over 100
//!   connections against a null peer (a thread per connection that
//!   answers every frame with a 1-byte text at once): lag p99 (target
//!   ≤ 1 ms).
//!
//! Clients sit on the client CPU and servers on the other, as the serial
//! section places them (see `pinning`), except in rate-fanout and
//! rate-lag (see there).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;

use crate::{BIN, median, pinning, start_server_on};

type Add<'a> = dyn FnMut(&str, f64, &'static str, Option<(String, bool)>, String) + 'a;

/// `wsbench ARGS --json` on `cpu`; the summary, or the failure's stderr.
fn run_json(args: &[&str], cpu: Option<usize>) -> Result<serde_json::Value, String> {
    let out = pinning::on_cpu(cpu, BIN)
        .args(args)
        .arg("--json")
        .env("RUST_LOG", "warn")
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

fn f(v: &serde_json::Value, path: &[&str]) -> f64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_f64()
        .unwrap_or(f64::NAN)
}

pub fn fanout_section(quick: bool, add: &mut Add<'_>) {
    // Not pinned: 100 member threads woken by every publication, on one
    // vCPU, measured that vCPU's run queue (delivery p99 24 ms at
    // 1,000/s pinned against 6 ms free, same minutes).
    let (client_cpu, server_cpu) = (None, None);
    let server = start_server_on(&[], server_cpu);
    let url = format!("ws://{}/chat/paced", server.1);
    let duration = if quick { "2s" } else { "3s" };
    let fan = |rate: u64| {
        run_json(
            &[
                "fanout",
                "--url",
                &url,
                "--clients",
                "100",
                "--rate",
                &rate.to_string(),
                "--duration",
                duration,
            ],
            client_cpu,
        )
    };

    let paced = 2000;
    let (mut per_s, mut p50, mut p99, mut lost) = (vec![], vec![], vec![], vec![]);
    for _ in 0..if quick { 1 } else { 3 } {
        match fan(paced) {
            Ok(s) => {
                per_s.push(f(&s, &["deliveries_per_s"]));
                p50.push(f(&s, &["delivery", "p50"]) * 1e3);
                p99.push(f(&s, &["delivery", "p99"]) * 1e3);
                lost.push(f(&s, &["lost"]));
            }
            Err(e) => println!("fanout at {paced}/s failed: {e}"),
        }
    }
    if !per_s.is_empty() {
        let runs = per_s.len();
        add(
            &format!("fanout paced, 100 members, {paced}/s: deliveries/s"),
            median(per_s),
            "per s",
            None,
            format!(
                "wsbench fanout --clients 100 --rate {paced} --duration {duration}; median of {runs}"
            ),
        );
        add(
            &format!("fanout paced, 100 members, {paced}/s: delivery p50"),
            median(p50),
            "ms",
            None,
            "from each publication's intended send time".into(),
        );
        add(
            &format!("fanout paced, 100 members, {paced}/s: delivery p99"),
            median(p99),
            "ms",
            None,
            String::new(),
        );
        let l = median(lost);
        add(
            &format!("fanout paced, 100 members, {paced}/s: lost"),
            l,
            "count",
            Some(("0".into(), l == 0.0)),
            String::new(),
        );
    }

    // The sweep: up the rates until two in a row miss; the best is the
    // highest that passed.
    let rates: &[u64] = &[
        1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 10_000, 12_000,
    ];
    let (mut best, mut misses, mut tried) = (0u64, 0, Vec::new());
    for &rate in rates {
        let verdict = match fan(rate) {
            Ok(s) => {
                let p99 = f(&s, &["delivery", "p99"]);
                let lost = f(&s, &["lost"]);
                let reached = s["rate_reached"].as_bool().unwrap_or(false);
                let pass = p99 <= 0.010 && lost == 0.0 && reached;
                tried.push(format!(
                    "{rate}/s: p99 {:.2} ms, lost {lost}{}",
                    p99 * 1e3,
                    if reached { "" } else { ", rate not reached" }
                ));
                pass
            }
            Err(e) => {
                tried.push(format!("{rate}/s: failed ({})", e.trim()));
                false
            }
        };
        if verdict {
            best = rate;
            misses = 0;
        } else {
            misses += 1;
            if misses == 2 {
                break;
            }
        }
    }
    add(
        "fanout sweep, 100 members: highest rate, delivery p99 ≤ 10 ms, 0 lost",
        best as f64,
        "per s",
        Some(("≥ 5,000/s".into(), best >= 5000)),
        format!("{} deliveries/s; {}", best * 99, tried.join("; ")),
    );
    drop(server);
}

pub fn serial_section(quick: bool, add: &mut Add<'_>) {
    let (client_cpu, server_cpu) = pinning::placement();
    let server = start_server_on(&[], server_cpu);
    let url = format!("ws://{}/", server.1);
    let count = if quick { "300" } else { "1000" };
    let duration = if quick { "2s" } else { "5s" };
    let rounds = if quick { 1 } else { 3 };
    let (mut max, mut closed_p50, mut closed_p99) = (vec![], vec![], vec![]);
    let (mut p99_50, mut p99_90, mut ratio_50, mut ratio_90) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let closed = match run_json(
            &["bench", "--url", &url, "--mode", "serial", "--count", count],
            client_cpu,
        ) {
            Ok(s) => s,
            Err(e) => {
                println!("closed-loop serial failed: {e}");
                continue;
            }
        };
        let rate = f(&closed, &["messages_per_s"]);
        let p50 = f(&closed, &["total", "p50"]);
        max.push(rate);
        closed_p50.push(p50 * 1e3);
        closed_p99.push(f(&closed, &["total", "p99"]) * 1e3);
        for (share, p99s, ratios) in [
            (0.5, &mut p99_50, &mut ratio_50),
            (0.9, &mut p99_90, &mut ratio_90),
        ] {
            let asked = format!("{:.0}", rate * share);
            match run_json(
                &[
                    "bench",
                    "--url",
                    &url,
                    "--rate",
                    &asked,
                    "--connections",
                    "1",
                    "--duration",
                    duration,
                    "--warmup",
                    "500ms",
                ],
                client_cpu,
            ) {
                Ok(s) => {
                    let p99 = f(&s, &["corrected", "p99"]);
                    p99s.push(p99 * 1e3);
                    ratios.push(p99 / p50);
                }
                Err(e) => println!("serial --rate {asked} failed: {e}"),
            }
        }
    }
    if max.is_empty() {
        return;
    }
    add(
        "serial images, closed loop: maximum rate",
        median(max),
        "per s",
        None,
        format!("wsbench bench --mode serial --count {count}; median of {rounds}"),
    );
    add(
        "serial images, closed loop: total p50",
        median(closed_p50),
        "ms",
        None,
        String::new(),
    );
    add(
        "serial images, closed loop: total p99",
        median(closed_p99),
        "ms",
        None,
        "for scale: what the machine's noise does to a run of this length".into(),
    );
    for (share, p99s, ratios) in [(50, p99_50, ratio_50), (90, p99_90, ratio_90)] {
        if p99s.is_empty() {
            continue;
        }
        add(
            &format!("serial images --rate {share}% of max: corrected p99"),
            median(p99s),
            "ms",
            None,
            format!("--connections 1 --duration {duration} --warmup 500ms"),
        );
        let r = median(ratios);
        add(
            &format!("serial images --rate {share}% of max: corrected p99 / closed-loop p50"),
            r,
            "ratio",
            (share == 50).then(|| ("≤ 2".to_string(), r <= 2.0)),
            "per-round ratio, median".into(),
        );
    }
    drop(server);
}

/// A peer that costs as little as a WebSocket peer can: the handshake
/// (tungstenite's), then for every client frame read, a 1-byte text
/// frame back at once. A thread per connection, on `cpu`.
fn null_peer(cpu: Option<usize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            thread::spawn(move || {
                pinning::pin(cpu);
                stream.set_nodelay(true).unwrap();
                // The client sends nothing past its request before the 101.
                let Ok(ws) = tungstenite::accept(stream) else {
                    return;
                };
                let mut s = ws.get_ref().try_clone().unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                let mut held = 0;
                loop {
                    let Ok(n) = s.read(&mut buf[held..]) else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    held += n;
                    let mut at = 0;
                    let mut frames = 0;
                    while let Ok(Some(h)) = wsbench::wire::parse_client_header(&buf[at..held]) {
                        let end = at + h.size + h.len as usize;
                        if end > held {
                            break;
                        }
                        if h.opcode == wsbench::wire::CLOSE {
                            return;
                        }
                        frames += 1;
                        at = end;
                    }
                    buf.copy_within(at..held, 0);
                    held -= at;
                    let replies = b"\x81\x01k".repeat(frames);
                    if s.write_all(&replies).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

pub fn lag_section(quick: bool, add: &mut Add<'_>) {
    // Not pinned: 100 generator threads waking 20,000 times a second on
    // one vCPU measured that vCPU's run queue (lag p99 2.3 ms pinned
    // against 0.3 to 1.9 ms free, same machine, same minutes).
    let (client_cpu, server_cpu) = (None, None);
    let peer = null_peer(server_cpu);
    let url = format!("ws://{peer}/");
    let duration = if quick { "2s" } else { "5s" };
    let (mut lag_p99, mut lag_p50, mut achieved) = (vec![], vec![], vec![]);
    for _ in 0..if quick { 1 } else { 3 } {
        match run_json(
            &[
                "bench",
                "--url",
                &url,
                "--rate",
                "20000",
                "--connections",
                "100",
                "--message",
                "text",
                "--duration",
                duration,
                "--warmup",
                "500ms",
            ],
            client_cpu,
        ) {
            Ok(s) => {
                lag_p99.push(f(&s, &["lag", "p99"]) * 1e3);
                lag_p50.push(f(&s, &["lag", "p50"]) * 1e3);
                achieved.push(f(&s, &["achieved_per_s"]));
            }
            Err(e) => println!("generator lag run failed: {e}"),
        }
    }
    if lag_p99.is_empty() {
        return;
    }
    let runs = lag_p99.len();
    add(
        "generator: 20,000 text msgs/s over 100 connections, achieved",
        median(achieved),
        "per s",
        None,
        format!("against a null peer; median of {runs}"),
    );
    add(
        "generator: lag p50",
        median(lag_p50),
        "ms",
        None,
        String::new(),
    );
    let p99 = median(lag_p99);
    add(
        "generator: lag p99",
        p99,
        "ms",
        Some(("≤ 1 ms".into(), p99 <= 1.0)),
        "how late sends left against the schedule".into(),
    );
}
