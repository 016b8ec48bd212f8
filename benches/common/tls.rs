//! The TLS figures of #15, for `make bench`: each a wss:// figure beside
//! its ws:// counterpart on the same server build, interleaved and pinned
//! as the serial section is (see `pinning`): serial images, text round
//! trips, serial-short with and without session resumption, and 10,000
//! idle wss:// connections (the server's RSS for each).
//!
//! The TLS servers present a certificate made here for 127.0.0.1, and the
//! clients verify it (`--ca-file`), as a real client would: a full
//! handshake's cost includes checking the chain, which is what session
//! resumption saves.

use std::time::{Duration, Instant};

use tungstenite::Message;
use wsbench::client::WsUrl;

use crate::{bench_json_on, capacity, median, pinning, start_server_on};

type Add<'a> = &'a mut dyn FnMut(&str, f64, &'static str, Option<(String, bool)>, String);

/// A self-signed certificate for 127.0.0.1 and its key, as PEM files
/// under target/bench/tls; returns (certificate, key).
fn certificate() -> (String, String) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/tls");
    std::fs::create_dir_all(&dir).unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    )
}

pub fn section(quick: bool, add: Add<'_>) {
    let repeats = if quick { 2 } else { 5 };
    let (client_cpu, server_cpu) = pinning::placement();
    let (cert, key) = certificate();
    let plain = start_server_on(&[], server_cpu);
    let tls = start_server_on(&["--tls-cert", &cert, "--tls-key", &key], server_cpu);
    let ws = format!("ws://{}/", plain.1);
    let wss = format!("wss://{}/", tls.1);

    // Serial images: the AES-GCM of 2 × 480 KB per round trip is the
    // price; the figure says how much of the plain rate is left.
    let count = if quick { "200" } else { "1000" };
    let (mut plain_rate, mut tls_rate) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        for (url, rates) in [(&ws, &mut plain_rate), (&wss, &mut tls_rate)] {
            let s = bench_json_on(
                &[
                    "--url",
                    url,
                    "--ca-file",
                    &cert,
                    "--count",
                    count,
                    "--mode",
                    "serial",
                ],
                client_cpu,
            );
            rates.push(s["messages_per_s"].as_f64().unwrap());
        }
    }
    let (p, t) = (median(plain_rate), median(tls_rate));
    add(
        "tls: serial images over wss://",
        t,
        "messages/s",
        None,
        format!("ws:// {p:.0}/s in the same run: {:.2}×", t / p),
    );

    // Text round trips, blocks of 500 alternating on two open connections.
    wsbench::client::tls::install(
        &wsbench::cli::TlsArgs {
            ca_files: vec![cert.clone().into()],
            ..Default::default()
        },
        &[],
    )
    .unwrap();
    pinning::pin(client_cpu);
    let pings = if quick { 3000 } else { 20_000 };
    let (p, t) = text_pair(&ws, &wss, pings);
    pinning::pin(None);
    add(
        "tls: text round trips over wss://",
        t,
        "per s",
        Some((">= 0.9× ws://".into(), t >= 0.9 * p)),
        format!("ws:// {p:.0}/s in the same run: {:.2}×", t / p),
    );

    // A connection per image: resumption skips the certificate and the
    // key exchange's signature.
    let count = if quick { "200" } else { "500" };
    let (mut resumed, mut full) = (Vec::new(), Vec::new());
    let mut resumed_count = 0;
    for _ in 0..repeats {
        let s = bench_json_on(
            &[
                "--url",
                &wss,
                "--ca-file",
                &cert,
                "--count",
                count,
                "--mode",
                "serial-short",
            ],
            client_cpu,
        );
        resumed.push(s["messages_per_s"].as_f64().unwrap());
        resumed_count = s["tls_resumed"].as_u64().unwrap();
        let s = bench_json_on(
            &[
                "--url",
                &wss,
                "--ca-file",
                &cert,
                "--no-resume",
                "--count",
                count,
                "--mode",
                "serial-short",
            ],
            client_cpu,
        );
        full.push(s["messages_per_s"].as_f64().unwrap());
    }
    let (r, f) = (median(resumed), median(full));
    add(
        "tls: serial-short with session resumption",
        r,
        "messages/s",
        Some((">= 1.2× without".into(), r >= 1.2 * f)),
        format!(
            "without (--no-resume) {f:.0}/s: {:.2}×; {resumed_count} of {count} handshakes resumed",
            r / f
        ),
    );
    drop((plain, tls));

    let n = if quick { 2000 } else { 10_000 };
    let (held, per_conn, alive) = idle_wss(n, &cert, &key);
    add(
        &format!("tls: idle wss:// connections held (of {n})"),
        held as f64,
        "connections",
        Some((format!("{n}, server alive"), held == n && alive)),
        String::new(),
    );
    add(
        "tls: server RSS per idle wss:// connection",
        per_conn,
        "KiB",
        None,
        "peak RSS over the hold, less the RSS at start; ws:// is in the capacity section".into(),
    );
}

/// Text round trips per second on `/`: (ws, wss), alternating blocks.
fn text_pair(ws: &str, wss: &str, n: usize) -> (f64, f64) {
    let open = |url: &str| {
        let url = WsUrl::parse(url).unwrap();
        wsbench::client::connect(&url, Duration::from_secs(10))
            .unwrap()
            .socket
    };
    let mut conns = [open(ws), open(wss)];
    let mut times = [0.0f64; 2];
    let block = 500;
    for _ in 0..n.div_ceil(block) {
        for (conn, time) in conns.iter_mut().zip(times.iter_mut()) {
            let start = Instant::now();
            for i in 0..block {
                conn.send(Message::text(format!("Ping {i}!"))).unwrap();
                match conn.read().unwrap() {
                    Message::Text(t) if t.as_str() == "Pong!" => {}
                    other => panic!("unexpected reply {other:?}"),
                }
            }
            *time += start.elapsed().as_secs_f64();
        }
    }
    let done = (n.div_ceil(block) * block) as f64;
    (done / times[0], done / times[1])
}

/// `wsbench load` of `n` wss:// connections held 3 s against a TLS server
/// of its own; returns (held, server KiB per connection, server alive).
fn idle_wss(n: usize, cert: &str, key: &str) -> (usize, f64, bool) {
    let mut server = start_server_on(
        &[
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--max-connections",
            "12000",
        ],
        None,
    );
    let pid = server.0.id();
    let rss_before = capacity::status(pid, "VmRSS:");
    let batch = 500;
    let mut load = std::process::Command::new(crate::BIN)
        .args([
            "load",
            "--url",
            &format!("wss://{}/echo", server.1),
            "--ca-file",
            cert,
        ])
        .args(["--workers", "2", "--batch-size", &batch.to_string()])
        .args(["--rounds", &(n / batch / 2).max(1).to_string()])
        .args(["--hold", "3s", "--json"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak = rss_before;
    while load.try_wait().unwrap().is_none() {
        peak = peak.max(capacity::status(pid, "VmRSS:"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = load.wait_with_output().unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let held = summary["held"].as_u64().unwrap_or(0) as usize;
    let alive = matches!(server.0.try_wait(), Ok(None));
    let per_conn = peak.saturating_sub(rss_before) as f64 / held.max(1) as f64;
    (held, per_conn, alive)
}
