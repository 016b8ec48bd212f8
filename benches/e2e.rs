//! `make bench`: the end-to-end figures of #3, each against a baseline
//! measured in the same run, variants interleaved (A B A B) so the noise of
//! a 2-core machine hits both alike. Medians of the repeats are reported.
//!
//! - kernel: ImageStats::compute on 480,000 bytes, µs and GB/s.
//! - serial images: `wsbench bench --mode serial` (slow replies) against the
//!   ideal 1 / (raw-TCP 480 KB round trip + kernel time).
//! - text ping: WebSocket `ping`/`Pong!` round trips on `/` against a
//!   raw-TCP 16-byte request/reply.
//! - parallel 1000 and serial-short: wall time, p50/p99, listen overflows.
//! - chat fan-out (#4): 100 clients in a room, one sender, 10,000 messages:
//!   deliveries/s and p50/p99 delivery latency.
//! - HTTP keep-alive `POST /` against WebSocket text round trips on one
//!   connection each (#4).
//! - scale (#6): 10,000 idle connections to a separate server process:
//!   open rate, server RSS per connection, threads per connection, and
//!   round-trip p99 with all of them open.
//! - pingpong (#7): `pingpong`'s own WebSocket and HTTP keep-alive runs
//!   against a raw-TCP 16-byte request/reply, interleaved.
//! - load (#7): `wsbench load` of 2,000 connections (WSBENCH_LOAD=10000
//!   for the 10,000-connection run) against a separate server process:
//!   established, connections/s, handshake p99, connections lost while held.
//!
//! - capacity (#12): 10,000 idle `/chat` members at once (RSS each,
//!   threads, memory maps, `/echo` still answering); a server filled past
//!   its measured capacity (aborts, resets, readable 503s); 10,000 chat
//!   sessions in a row (leaked connections and threads).
//!
//! - tls (#15): wss:// beside ws:// on serial images and text round
//!   trips, serial-short with and without session resumption, 10,000
//!   idle wss:// connections (`common/tls.rs`).
//! - open loop (#16, `common/rate.rs`): `wsbench fanout` paced with 100
//!   members and a sweep for the highest rate with delivery p99 ≤ 10 ms;
//!   serial images at 50% and 90% of the closed-loop maximum, corrected
//!   p99; the generator's lag at 20,000 text messages/s.
//!
//! Writes target/bench/results.md and target/bench/results.json.
//! WSBENCH_QUICK=1 runs a smaller pass; words after `--` pick sections
//! (serial, parallel, http, chat, redis, scale, pingpong, load, capacity,
//! tls, rate-fanout, rate-images, rate-lag).

#[path = "common/capacity.rs"]
mod capacity;
#[path = "common/redis.rs"]
mod fleet;
#[path = "common/pinning.rs"]
mod pinning;
#[path = "common/rate.rs"]
mod rate;
#[path = "common/tls.rs"]
mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Instant;

use serde::Serialize;
use tungstenite::Message;
use wsbench::client::HttpUrl;
use wsbench::client::WsUrl;
use wsbench::pingpong;
use wsbench::stats::{ImageStats, random_image};

const BIN: &str = env!("CARGO_BIN_EXE_wsbench");
const IMAGE: usize = 480_000;

#[derive(Serialize)]
struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
    target: Option<String>,
    met: Option<bool>,
    note: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A raw-TCP peer: reads `request` bytes, answers 16, forever, per connection.
fn raw_server(request: usize, cpu: Option<usize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            thread::spawn(move || {
                pinning::pin(cpu);
                stream.set_nodelay(true).unwrap();
                let mut buf = vec![0u8; request];
                while stream.read_exact(&mut buf).is_ok() {
                    if stream.write_all(&[b'k'; 16]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Round trips per second of `request` bytes out, 16 back, over one connection.
fn raw_round_trips(addr: &str, request: &[u8], n: usize) -> f64 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut reply = [0u8; 16];
    let start = Instant::now();
    for _ in 0..n {
        s.write_all(request).unwrap();
        s.read_exact(&mut reply).unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// WebSocket text round trips per second on `/`, with our own client
/// stack (`client::connect`: TCP_NODELAY, 16 KiB reads), as `pingpong` uses:
/// tungstenite's default client zero-fills a 128 KiB read buffer per read.
fn ws_text_round_trips(url: &str, n: usize) -> f64 {
    let mut ws = TextPinger::open(url);
    let start = Instant::now();
    ws.ping(n);
    n as f64 / start.elapsed().as_secs_f64()
}

/// One WebSocket connection on `/` that sends `Ping {i}!` and expects `Pong!`.
struct TextPinger(tungstenite::WebSocket<wsbench::client::connect::Stream>);

impl TextPinger {
    fn open(url: &str) -> TextPinger {
        let url = WsUrl::parse(url).unwrap();
        let timeout = std::time::Duration::from_secs(10);
        TextPinger(wsbench::client::connect(&url, timeout).unwrap().socket)
    }

    fn ping(&mut self, n: usize) {
        for i in 0..n {
            self.0.send(Message::text(format!("Ping {i}!"))).unwrap();
            match self.0.read().unwrap() {
                Message::Text(t) if t.as_str() == "Pong!" => {}
                other => panic!("unexpected reply {other:?}"),
            }
        }
    }
}

/// WebSocket text pings against raw-TCP 16-byte round trips, both on
/// connections kept open, alternating blocks of 500 so that drift in the
/// machine's speed hits both alike: (raw per s, WebSocket per s).
fn text_vs_raw(raw_addr: &str, url: &str, n: usize) -> (f64, f64) {
    let mut raw = TcpStream::connect(raw_addr).unwrap();
    raw.set_nodelay(true).unwrap();
    let mut ws = TextPinger::open(url);
    let (mut raw_time, mut ws_time) = (0.0, 0.0);
    let block = 500;
    let mut reply = [0u8; 16];
    for _ in 0..n.div_ceil(block) {
        let start = Instant::now();
        for _ in 0..block {
            raw.write_all(&[b'p'; 16]).unwrap();
            raw.read_exact(&mut reply).unwrap();
        }
        raw_time += start.elapsed().as_secs_f64();
        let start = Instant::now();
        ws.ping(block);
        ws_time += start.elapsed().as_secs_f64();
    }
    let done = (n.div_ceil(block) * block) as f64;
    (done / raw_time, done / ws_time)
}

/// The median time of a criterion benchmark's last run, in ns, if that
/// run was part of this `make bench` (the last hour), not a stale one.
fn criterion_median_ns(id: &str) -> Option<f64> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/criterion")
        .join(id)
        .join("new/estimates.json");
    let age = std::fs::metadata(&path)
        .ok()?
        .modified()
        .ok()?
        .elapsed()
        .ok()?;
    if age > std::time::Duration::from_secs(3600) {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn kernel_us() -> f64 {
    let image = random_image(IMAGE, 42);
    let mut samples = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        for _ in 0..200 {
            std::hint::black_box(ImageStats::compute(std::hint::black_box(&image)));
        }
        samples.push(start.elapsed().as_secs_f64() / 200.0 * 1e6);
    }
    median(samples)
}

/// HTTP keep-alive `POST /` round trips per second over one connection.
fn http_round_trips(addr: &str, n: usize) -> f64 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let start = Instant::now();
    let mut line = String::new();
    for i in 0..n {
        let body = format!("Ping{i}");
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut len = 0;
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).unwrap();
        assert_eq!(body, b"Pong!");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// 100 receivers in one room, one sender of `messages` lines stamped with
/// their send time; returns (deliveries/s, p50 ms, p99 ms).
fn chat_fan_out(server: &str, receivers: usize, messages: usize) -> (f64, f64, f64) {
    let url = format!("ws://{server}/chat/bench");
    let base = Instant::now();
    let open = |url: &str| {
        let (mut ws, _) = tungstenite::connect(url).unwrap();
        // Skip the greeting and our own join announcement.
        for _ in 0..2 {
            ws.read().unwrap();
        }
        ws
    };
    let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
    let handles: Vec<_> = (0..receivers)
        .map(|_| {
            let ws = open(&url);
            let ready = ready_tx.clone();
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut ws = ws;
                    let mut latency = hdrhistogram::Histogram::<u64>::new(3).unwrap();
                    ready.send(()).unwrap();
                    let mut got = 0;
                    while got < messages {
                        let Message::Text(t) = ws.read().unwrap() else {
                            continue;
                        };
                        // Join announcements carry no stamp.
                        let Some(stamp) = t
                            .as_str()
                            .rsplit(": ")
                            .next()
                            .and_then(|v| v.parse::<u64>().ok())
                        else {
                            continue;
                        };
                        let now = base.elapsed().as_nanos() as u64;
                        latency.record(now.saturating_sub(stamp).max(1)).unwrap();
                        got += 1;
                    }
                    (latency, Instant::now())
                })
                .unwrap()
        })
        .collect();
    for _ in 0..receivers {
        ready_rx.recv().unwrap();
    }
    let mut sender = open(&url);
    let start = Instant::now();
    for _ in 0..messages {
        let stamp = base.elapsed().as_nanos() as u64;
        sender.send(Message::text(stamp.to_string())).unwrap();
    }
    let mut all = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    let mut last = start;
    for h in handles {
        let (latency, done) = h.join().unwrap();
        all.add(latency).unwrap();
        last = last.max(done);
    }
    let rate = (receivers * messages) as f64 / last.duration_since(start).as_secs_f64();
    (
        rate,
        all.value_at_quantile(0.5) as f64 / 1e6,
        all.value_at_quantile(0.99) as f64 / 1e6,
    )
}

/// Opens `n` idle connections on `/` from 4 threads; returns
/// (connections/s, server RSS MiB before, after, threads after, rtt p99 µs).
fn scale(n: usize) -> (f64, f64, f64, u64, f64) {
    let server = start_server(&["--max-connections", "12000"]);
    let pid = server.0.id();
    let url = format!("ws://{}/", server.1);
    let rss_before = capacity::status(pid, "VmRSS:") as f64 / 1024.0;
    let start = Instant::now();
    let held: Vec<_> = thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let url = &url;
                thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn_scoped(scope, move || {
                        (0..n / 4)
                            .map(|_| tungstenite::connect(url.as_str()).expect("connect").0)
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
    let rate = held.len() as f64 / start.elapsed().as_secs_f64();
    let rss_after = capacity::status(pid, "VmRSS:") as f64 / 1024.0;
    let threads = capacity::status(pid, "Threads:");
    // Round trips on a spread of the open connections, all others idle.
    let mut rtt = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    let mut held = held;
    let stride = (held.len() / 1000).max(1);
    for ws in held.iter_mut().step_by(stride) {
        let t = Instant::now();
        ws.send(Message::text("ping")).unwrap();
        loop {
            match ws.read().unwrap() {
                Message::Text(_) => break,
                _ => continue,
            }
        }
        rtt.record(t.elapsed().as_micros() as u64).unwrap();
    }
    drop(held);
    (
        rate,
        rss_before,
        rss_after,
        threads,
        rtt.value_at_quantile(0.99) as f64,
    )
}

struct ServerProc(Child, String);

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(args: &[&str]) -> ServerProc {
    start_server_on(args, None)
}

fn start_server_on(args: &[&str], cpu: Option<usize>) -> ServerProc {
    let mut child = pinning::on_cpu(cpu, BIN)
        .args(["server", "--port", "0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let line = line.trim();
    let addr = line
        .strip_prefix("listening on ws://")
        .or_else(|| line.strip_prefix("listening on wss://"))
        .unwrap_or_else(|| panic!("wsbench server did not start: {line:?}"))
        .to_string();
    ServerProc(child, addr)
}

fn bench_json(args: &[&str]) -> serde_json::Value {
    bench_json_on(args, None)
}

fn bench_json_on(args: &[&str], cpu: Option<usize>) -> serde_json::Value {
    let out = pinning::on_cpu(cpu, BIN)
        .arg("bench")
        .args(args)
        .arg("--json")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wsbench bench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    if lines.len() < 2 {
        return 0;
    }
    let names = lines[0].split_whitespace();
    let values = lines[1].split_whitespace();
    names
        .zip(values)
        .find(|(n, _)| *n == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    // `cargo bench --bench e2e -- serial chat` runs only the sections whose
    // names contain one of the words; cargo itself passes `--bench`.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants =
        |section: &str| only.is_empty() || only.iter().any(|w| section.contains(w.as_str()));
    let quick = std::env::var_os("WSBENCH_QUICK").is_some();
    pinning::original_cpus();
    let repeats = if quick { 2 } else { 5 };
    let count = if quick { 300 } else { 1000 };
    let pings = if quick { 3000 } else { 10_000 };
    let mut figures = Vec::new();
    let mut add = |name: &str,
                   value: f64,
                   unit: &'static str,
                   target: Option<(String, bool)>,
                   note: String| {
        println!(
            "{name:<48} {value:>12.2} {unit:<14} {}",
            target.as_ref().map_or(String::new(), |(t, met)| format!(
                "target {t}: {}",
                if *met { "met" } else { "NOT met" }
            ))
        );
        figures.push(Figure {
            name: name.to_string(),
            value,
            unit,
            met: target.as_ref().map(|t| t.1),
            target: target.map(|t| t.0),
            note,
        });
    };

    let kernel = kernel_us();
    let kernel_gbps = IMAGE as f64 / (kernel * 1e-6) / 1e9;
    add(
        "kernel: µs per 480,000-byte image",
        kernel,
        "µs",
        None,
        "ImageStats::compute, one core, median of 7×200".into(),
    );
    add(
        "kernel: throughput",
        kernel_gbps,
        "GB/s",
        Some(("≥ 4 GB/s".into(), kernel_gbps >= 4.0)),
        String::new(),
    );

    // The criterion microbenchmarks `make bench` ran just before, if any.
    for (id, name, bytes) in [
        (
            "stats_480000/compute_random",
            "criterion: kernel, random image",
            IMAGE,
        ),
        (
            "stats_480000/compute_flat",
            "criterion: kernel, flat image",
            IMAGE,
        ),
        (
            "stats_16777216/compute_random",
            "criterion: kernel, 16 MiB image",
            16 << 20,
        ),
        (
            "stats_480000/naive_random",
            "criterion: naive histogram, random image",
            IMAGE,
        ),
        (
            "client_frame_480000/masked_send",
            "criterion: client frame, masked::send",
            IMAGE,
        ),
        (
            "client_frame_480000/tungstenite_send",
            "criterion: client frame, tungstenite",
            IMAGE,
        ),
    ] {
        let Some(ns) = criterion_median_ns(id) else {
            println!("{name}: no fresh criterion result (`make bench` runs it)");
            continue;
        };
        let gbps = bytes as f64 / ns;
        // #3's target is for one 800x600 image, which fits in L2.
        let target = (name.contains("kernel") && bytes == IMAGE)
            .then(|| ("≥ 4 GB/s".to_string(), gbps >= 4.0));
        add(
            name,
            gbps,
            "GB/s",
            target,
            format!("{:.1} µs, median of criterion's samples", ns / 1e3),
        );
    }

    let server = start_server(&[]);
    let url = format!("ws://{}/", server.1);
    let image = random_image(IMAGE, 42);
    let count_s = count.to_string();

    if wants("serial") {
        // Serial images and text pings, interleaved with their raw
        // baselines, every one with the client on CPU 0 and the server on
        // CPU 1 (see `pinning`).
        let (client_cpu, server_cpu) = pinning::placement();
        let pinned = start_server_on(&[], server_cpu);
        let url = format!("ws://{}/", pinned.1);
        let raw_image = raw_server(IMAGE, server_cpu);
        let raw_text = raw_server(16, server_cpu);
        pinning::pin(client_cpu);
        let (mut raw_img, mut ws_img, mut ratio_img) = (vec![], vec![], vec![]);
        let (mut raw_txt, mut ws_txt, mut ratio_txt) = (vec![], vec![], vec![]);
        for _ in 0..repeats {
            let raw = raw_round_trips(&raw_image, &image, count);
            let run = bench_json_on(
                &["--url", &url, "--mode", "serial", "--count", &count_s],
                client_cpu,
            );
            let ws = run["messages_per_s"].as_f64().unwrap();
            let ideal = 1.0 / (1.0 / raw + kernel * 1e-6);
            raw_img.push(raw);
            ws_img.push(ws);
            ratio_img.push(ws / ideal);

            let (raw, ws) = text_vs_raw(&raw_text, &url, pings);
            raw_txt.push(raw);
            ws_txt.push(ws);
            ratio_txt.push(ws / raw);
        }
        add(
            "raw TCP 480 KB round trips",
            median(raw_img),
            "per s",
            None,
            format!("{repeats} runs of {count}"),
        );
        add(
            "serial image round trips (slow replies)",
            median(ws_img.clone()),
            "per s",
            None,
            format!("wsbench bench --mode serial --count {count}"),
        );
        let r = median(ratio_img);
        add(
            "serial images / ideal (raw RTT + kernel)",
            r,
            "ratio",
            Some(("≥ 0.75".into(), r >= 0.75)),
            "per-run ratio, median; client on CPU 0, servers on CPU 1".into(),
        );
        add(
            "raw TCP 16-byte round trips",
            median(raw_txt),
            "per s",
            None,
            format!("{repeats} runs of {pings}, alternating blocks of 500 with the pings below"),
        );
        add(
            "WebSocket text ping round trips on /",
            median(ws_txt),
            "per s",
            None,
            String::new(),
        );
        let r = median(ratio_txt);
        add(
            "WebSocket text / raw TCP",
            r,
            "ratio",
            Some(("≥ 0.9".into(), r >= 0.9)),
            "per-run ratio, median".into(),
        );
        pinning::pin(None);
        drop(pinned);
    }
    if wants("parallel") {
        // Parallel and serial-short: a connection per message.
        let overflows_before = listen_overflows();
        for (mode, extra) in [
            ("parallel", &["--concurrency", "1000"][..]),
            ("serial-short", &[][..]),
        ] {
            let (mut wall, mut p50, mut p99, mut rate) = (vec![], vec![], vec![], vec![]);
            for _ in 0..repeats.min(3) {
                let mut args = vec!["--url", &url, "--mode", mode, "--count", &count_s];
                args.extend_from_slice(extra);
                let run = bench_json(&args);
                assert_eq!(run["failed"], 0, "{mode} had failures");
                wall.push(run["wall_s"].as_f64().unwrap());
                rate.push(run["messages_per_s"].as_f64().unwrap());
                p50.push(run["total"]["p50"].as_f64().unwrap() * 1e3);
                p99.push(run["total"]["p99"].as_f64().unwrap() * 1e3);
            }
            add(
                &format!("{mode} {count}: wall time"),
                median(wall),
                "s",
                None,
                String::new(),
            );
            add(
                &format!("{mode} {count}: messages/s"),
                median(rate),
                "per s",
                None,
                String::new(),
            );
            add(
                &format!("{mode} {count}: total p50"),
                median(p50),
                "ms",
                None,
                String::new(),
            );
            add(
                &format!("{mode} {count}: total p99"),
                median(p99),
                "ms",
                None,
                String::new(),
            );
        }
        let overflows = listen_overflows() - overflows_before;
        add(
            "listen overflows during parallel runs",
            overflows as f64,
            "count",
            Some(("0".into(), overflows == 0)),
            "TcpExt ListenOverflows delta".into(),
        );
    }
    if wants("http") {
        // HTTP keep-alive against WebSocket, one connection each,
        // interleaved, pinned like the serial section (see `pinning`).
        let (client_cpu, server_cpu) = pinning::placement();
        let pinned = start_server_on(&[], server_cpu);
        let (addr, url) = (&pinned.1, format!("ws://{}/", pinned.1));
        pinning::pin(client_cpu);
        let (mut http, mut ws, mut ratio) = (vec![], vec![], vec![]);
        for _ in 0..repeats {
            let h = http_round_trips(addr, pings);
            let w = ws_text_round_trips(&url, pings);
            http.push(h);
            ws.push(w);
            ratio.push(w / h);
        }
        add(
            "HTTP keep-alive POST / round trips",
            median(http),
            "per s",
            None,
            format!("{repeats} runs of {pings}"),
        );
        add(
            "WebSocket text round trips (same run)",
            median(ws),
            "per s",
            None,
            String::new(),
        );
        let r = median(ratio);
        add(
            "WebSocket / HTTP keep-alive",
            r,
            "ratio",
            Some(("> 1".into(), r > 1.0)),
            "per-run ratio, median".into(),
        );
        pinning::pin(None);
        drop(pinned);
    }
    drop(server);

    if wants("chat") {
        // Chat fan-out on a server whose queues hold the whole burst: the
        // sender does not pace itself, so latency includes queueing.
        let chat_messages = if quick { 2000 } else { 10_000 };
        let chat_server = start_server(&["--max-queue", "20000", "--max-queue-bytes", "64MiB"]);
        let (mut rate, mut p50, mut p99) = (vec![], vec![], vec![]);
        for _ in 0..repeats.min(3) {
            let (r, a, b) = chat_fan_out(&chat_server.1, 100, chat_messages);
            rate.push(r);
            p50.push(a);
            p99.push(b);
        }
        add(
            "chat fan-out: deliveries/s (100 clients)",
            median(rate),
            "per s",
            None,
            format!("one sender, {chat_messages} messages, unpaced"),
        );
        add(
            "chat fan-out: delivery p50",
            median(p50),
            "ms",
            None,
            String::new(),
        );
        add(
            "chat fan-out: delivery p99",
            median(p99),
            "ms",
            None,
            String::new(),
        );
        drop(chat_server);
    }

    // #18: fan-out over two --redis instances, and Redis restarts.
    if wants("redis") {
        fleet::section(quick, &mut add);
    }

    if wants("scale") {
        let conns = if quick { 2000 } else { 10_000 };
        let (rate, before, after, threads, p99) = scale(conns);
        let per_conn_kib = (after - before) * 1024.0 / conns as f64;
        add(
            &format!("scale: {conns} connections opened"),
            rate,
            "per s",
            None,
            "4 client threads, tungstenite::connect".into(),
        );
        add(
            "scale: server RSS with all open",
            after,
            "MiB",
            None,
            format!("{before:.1} MiB before"),
        );
        add(
            "scale: server RSS per idle connection",
            per_conn_kib,
            "KiB",
            None,
            String::new(),
        );
        add(
            "scale: server threads per connection",
            threads as f64 / conns as f64,
            "threads",
            Some(("1 (+ fixed pool)".into(), threads as usize <= conns + 16)),
            format!("{threads} threads in all"),
        );
        add(
            &format!("scale: ping round trip p99 with {conns} open"),
            p99,
            "µs",
            None,
            "1,000 connections spread over the open ones".into(),
        );
    }
    if wants("capacity") {
        capacity_section(quick, &mut add);
    }
    if wants("tls") {
        tls::section(quick, &mut add);
    }
    if wants("pingpong") {
        // pingpong (#7): the subcommand's own runs, each beside a raw-TCP
        // 16-byte request/reply measured just before it; pinned like the
        // serial section (see `pinning`).
        let (client_cpu, server_cpu) = pinning::placement();
        let pp_server = start_server_on(&[], server_cpu);
        let raw_text = raw_server(16, server_cpu);
        pinning::pin(client_cpu);
        let ws_url = WsUrl::parse(&format!("ws://{}/", pp_server.1)).unwrap();
        let http_url = HttpUrl::parse(&format!("http://{}/", pp_server.1)).unwrap();
        let hidden = indicatif::ProgressBar::hidden();
        let timeout = std::time::Duration::from_secs(10);
        let (mut ws_rate, mut ws_raw, mut http_ws) = (vec![], vec![], vec![]);
        for _ in 0..repeats {
            let raw = raw_round_trips(&raw_text, &[b'p'; 16], pings);
            let ws = pingpong::ws_pings(&ws_url, pings as u64, timeout, &hidden).unwrap();
            let http =
                pingpong::http_pings(&http_url, pings as u64, true, timeout, &hidden).unwrap();
            let rate = ws.done as f64 / ws.duration.as_secs_f64();
            ws_rate.push(rate);
            ws_raw.push(rate / raw);
            http_ws.push(http.duration.as_secs_f64() / ws.duration.as_secs_f64());
        }
        add(
            "pingpong: WebSocket round trips",
            median(ws_rate),
            "per s",
            None,
            format!("{repeats} runs of {pings}, connect and handshake included"),
        );
        let r = median(ws_raw);
        add(
            "pingpong: WebSocket / raw TCP 16-byte",
            r,
            "ratio",
            Some(("≥ 0.9".into(), r >= 0.9)),
            "per-run ratio, median".into(),
        );
        let r = median(http_ws);
        add(
            "pingpong: HTTP keep-alive time / WebSocket time",
            r,
            "ratio",
            Some(("≤ 2".into(), r <= 2.0)),
            "GET / + N POST / vs N pings, per-run ratio, median".into(),
        );
        pinning::pin(None);
        drop(pp_server);
    }

    if wants("load") {
        // load (#7): a separate server, so the client's descriptors are its own.
        let load_rounds = match std::env::var("WSBENCH_LOAD").ok().as_deref() {
            Some("10000") => 10,
            _ if quick => 1,
            _ => 2,
        };
        let load_total = load_rounds * 500 * 2;
        let load_server = start_server(&["--max-connections", "10100"]);
        let (mut established, mut rate, mut hs_p99, mut lost) = (vec![], vec![], vec![], vec![]);
        for _ in 0..repeats.min(3) {
            let out = Command::new(BIN)
                .args(["load", "--url", &format!("ws://{}/", load_server.1)])
                .args(["--rounds", &load_rounds.to_string(), "--batch-size", "500"])
                .args(["--workers", "2", "--hold", "1s", "--json"])
                .env("RUST_LOG", "warn")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "wsbench load: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            established.push(run["established"].as_f64().unwrap());
            rate.push(run["connections_per_s"].as_f64().unwrap());
            hs_p99.push(run["handshake"]["p99"].as_f64().unwrap() * 1e3);
            lost.push(run["lost_while_held"].as_f64().unwrap());
        }
        let e = median(established);
        add(
            &format!("load {load_total}: established"),
            e,
            "count",
            Some((format!("= {load_total}"), e == load_total as f64)),
            "rounds × 500 × 2 workers, hold 1s".into(),
        );
        add(
            &format!("load {load_total}: connections/s"),
            median(rate),
            "per s",
            None,
            "established / setup wall time".into(),
        );
        add(
            &format!("load {load_total}: handshake p99"),
            median(hs_p99),
            "ms",
            None,
            String::new(),
        );
        let l = median(lost);
        add(
            &format!("load {load_total}: lost while held"),
            l,
            "count",
            Some(("0".into(), l == 0.0)),
            String::new(),
        );
        drop(load_server);
    }

    if wants("rate-fanout") {
        rate::fanout_section(quick, &mut add);
    }
    if wants("rate-images") {
        rate::serial_section(quick, &mut add);
    }
    if wants("rate-lag") {
        rate::lag_section(quick, &mut add);
    }

    write_results(&figures, quick, &only);
}

/// #12's targets: every figure measured on a server process of its own.
fn capacity_section(
    quick: bool,
    add: &mut impl FnMut(&str, f64, &'static str, Option<(String, bool)>, String),
) {
    let members = if quick { 2000 } else { 10_000 };
    let server = start_server(&["--max-connections", "10100"]);
    let m = capacity::idle_members(&server.1, server.0.id(), members);
    let mut server = server;
    let alive = matches!(server.0.try_wait(), Ok(None));
    add(
        &format!("capacity: idle /chat members held at once (of {members})"),
        m.held as f64,
        "members",
        Some((
            format!("{members}, server alive, /echo answering"),
            m.held == members && alive && m.echo_ok,
        )),
        format!(
            "{} threads, {} memory maps; /echo {}",
            m.threads,
            m.maps,
            if m.echo_ok { "answered" } else { "FAILED" }
        ),
    );
    add(
        "capacity: server RSS per idle /chat member",
        m.rss_per_kib,
        "KiB",
        Some(("<= 25 KiB".into(), m.rss_per_kib <= 25.0)),
        format!(
            "all left: {}",
            if m.released {
                "everything given back"
            } else {
                "LEAKED"
            }
        ),
    );
    drop(server);

    let mut server = start_server(&["--max-connections", "20000"]);
    let extra = if quick { 200 } else { 1000 };
    let fill = capacity::fill_past_capacity(&server.1, server.0.id(), extra);
    let alive = matches!(server.0.try_wait(), Ok(None));
    add(
        "capacity: filled past capacity, refusals read as 503",
        fill.refused_readable as f64,
        "refusals",
        Some((
            "0 aborts, 0 resets, every refusal a readable 503".into(),
            alive
                && fill.resets == 0
                && fill.other == 0
                && fill.accepted + fill.refused_readable == fill.attempted,
        )),
        format!(
            "capacity {} (measured by the server), {} attempted, {} accepted, {} resets, {} other errors, {} maps at the peak; server {}",
            fill.capacity,
            fill.attempted,
            fill.accepted,
            fill.resets,
            fill.other,
            fill.maps,
            if alive { "alive" } else { "DEAD" }
        ),
    );
    drop(server);

    let sessions = if quick { 2000 } else { 10_000 };
    let server = start_server(&[]);
    let (rate, released, leaked, threads) =
        capacity::chat_churn(&server.1, server.0.id(), sessions);
    add(
        &format!("capacity: {sessions} chat sessions in a row"),
        rate,
        "per s",
        Some((
            "0 leaked connections, threads back to baseline".into(),
            released,
        )),
        format!("{leaked} connections left open, {threads} threads above baseline"),
    );
}

fn write_results(figures: &[Figure], quick: bool, only: &[String]) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let mut md = format!(
        "# wsbench benchmark results{}{}\n\n| figure | value | unit | target | met | note |\n|---|---:|---|---|---|---|\n",
        if quick { " (quick pass)" } else { "" },
        if only.is_empty() {
            String::new()
        } else {
            format!(" (sections: {})", only.join(", "))
        }
    );
    for f in figures {
        md.push_str(&format!(
            "| {} | {:.2} | {} | {} | {} | {} |\n",
            f.name,
            f.value,
            f.unit,
            f.target.as_deref().unwrap_or(""),
            f.met.map_or("", |m| if m { "yes" } else { "no" }),
            f.note
        ));
    }
    std::fs::write(dir.join("results.md"), md).unwrap();
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(figures).unwrap(),
    )
    .unwrap();
    println!("wrote {}", dir.join("results.md").display());
}
