//! `wsbench bench --rate` (#16): the open-loop schedule, from outside.
//! A peer that stalls shows in the corrected latency and not in the
//! uncorrected one; two processes' interval logs merge into one
//! distribution in `report`; a rate the generator cannot reach is said.

use std::net::TcpListener;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::Message;

use crate::common::*;

const LIMIT: Duration = Duration::from_secs(90);

/// A WebSocket peer answering every text with `Pong!`, except that it
/// stalls for the first 100 ms of every second of its clock: a message
/// arriving then is answered when the stall ends. Serves `connections`
/// connections, then stops accepting; each thread ends with its client.
fn stalling_peer(connections: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let started = Instant::now();
    thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(stream) = stream else { continue };
            thread::spawn(move || {
                stream.set_nodelay(true).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                let Ok(mut ws) = tungstenite::accept(stream) else {
                    return;
                };
                while let Ok(message) = ws.read() {
                    if !message.is_text() {
                        continue;
                    }
                    let phase =
                        Duration::from_nanos((started.elapsed().as_nanos() % 1_000_000_000) as u64);
                    let stall = Duration::from_millis(100);
                    if phase < stall {
                        thread::sleep(stall - phase);
                    }
                    if ws.send(Message::text("Pong!")).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Column `name` of every row of a `bench --out` CSV, as numbers.
fn column(path: &Path, name: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = header.iter().position(|h| *h == name).unwrap();
    lines
        .map(|l| l.split(',').nth(at).unwrap().parse().unwrap())
        .collect()
}

/// The value at quantile `q` of `values`, as HdrHistogram ranks it: the
/// smallest value with at least q of them at or below it.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

fn summary(run: &std::process::Output) -> serde_json::Value {
    assert!(
        run.status.success(),
        "stdout: {}\nstderr: {}",
        text(&run.stdout),
        text(&run.stderr)
    );
    serde_json::from_slice(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&run.stdout)))
}

#[test]
fn a_peer_stalling_100ms_a_second_shows_in_corrected_p95_not_uncorrected() {
    timed!(LIMIT, {
        let dir = tempdir();
        let csv = dir.join("stall.csv");
        let addr = stalling_peer(2);
        let run = wsbench(
            &[
                "bench",
                "--url",
                &format!("ws://{addr}/"),
                "--rate",
                "200",
                "--connections",
                "2",
                "--duration",
                "3s",
                "--message",
                "text",
                "--out",
                csv.to_str().unwrap(),
                "--json",
            ],
            Duration::from_secs(60),
        );
        let s = summary(&run);
        assert_eq!(s["ok"], 600, "{s}");
        // 10% of the time stalled: a tenth of the messages are due during
        // a stall and wait for its end, 0 to 100 ms, evenly spread; so the
        // corrected p95 (the middle of that tenth) is about 50 ms.
        let corrected = quantile(&mut column(&csv, "total_s"), 0.95);
        // Closed-loop timing sees one slow message per connection per
        // stall: 2 of 200 a second, below the p95.
        let uncorrected = quantile(&mut column(&csv, "recv_s"), 0.95);
        assert!(
            (0.025..=0.1).contains(&corrected),
            "corrected p95 {corrected} s, expected about 0.05 s; {s}"
        );
        assert!(
            uncorrected < 0.015,
            "uncorrected p95 {uncorrected} s should not see the stalls; {s}"
        );
        // The summary's corrected p99 is in the stall too.
        assert!(s["corrected"]["p99"].as_f64().unwrap() > 0.06, "{s}");
        std::fs::remove_dir_all(dir).unwrap();
    });
}

#[test]
fn two_processes_hdr_logs_merge_in_report_to_one_distribution() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let dir = tempdir();
        let url = server.url("/");
        let paths = |name: &str| {
            (
                dir.join(format!("{name}.hlog")),
                dir.join(format!("{name}.csv")),
            )
        };
        let (a_log, a_csv) = paths("a");
        let (b_log, b_csv) = paths("b");
        // Two processes at once, as two load machines would run.
        let start = |log: &Path, csv: &Path, rate: &str| {
            let mut command = std::process::Command::new(BIN);
            command.args(["bench", "--url", &url, "--rate", rate]);
            command.args([
                "--duration",
                "2s",
                "--connections",
                "4",
                "--message",
                "text",
            ]);
            command.args(["--json", "--hdr-log", log.to_str().unwrap()]);
            command.args(["--out", csv.to_str().unwrap()]);
            Proc::spawn(command)
        };
        let mut a = start(&a_log, &a_csv, "500");
        let mut b = start(&b_log, &b_csv, "300");
        for p in [&mut a, &mut b] {
            let status = p.wait(Duration::from_secs(30)).expect("bench --rate ends");
            assert!(status.success(), "{:?}", p.stderr.all());
        }
        let log = std::fs::read_to_string(&a_log).unwrap();
        assert!(log.contains("#[StartTime: "), "{log}");
        assert!(log.contains("#[BaseTime: "), "{log}");
        assert!(log.lines().any(|l| l.contains(",HISTF")), "{log}");

        let out = dir.join("report");
        let run = wsbench(
            &[
                "report",
                a_log.to_str().unwrap(),
                b_log.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            Duration::from_secs(30),
        );
        assert!(run.status.success(), "{}", text(&run.stderr));
        for file in ["latency.md", "latency-by-percentile.svg", "latency.json"] {
            assert!(out.join(file).exists(), "no {file}: {}", text(&run.stdout));
        }
        let svg = std::fs::read_to_string(out.join("latency-by-percentile.svg")).unwrap();
        assert!(svg.contains("99.9%"), "the percentile axis reads in nines");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("latency.json")).unwrap())
                .unwrap();

        let mut a_total = column(&a_csv, "total_s");
        let mut all = column(&b_csv, "total_s");
        assert_eq!(json["logs"][0]["count"], a_total.len(), "{json}");
        assert_eq!(json["logs"][1]["count"], all.len(), "{json}");
        all.append(&mut a_total);
        let merged = &json["merged"];
        assert_eq!(merged["count"], all.len(), "{json}");
        assert_eq!(all.len(), 1600);
        for (key, q) in [
            ("p50_us", 0.5),
            ("p90_us", 0.9),
            ("p99_us", 0.99),
            ("max_us", 1.0),
        ] {
            let exact_us = quantile(&mut all, q) * 1e6;
            let hdr_us = merged[key].as_f64().unwrap();
            // 3 significant digits, and the log's whole microseconds.
            assert!(
                (hdr_us - exact_us).abs() <= exact_us * 0.002 + 1.0,
                "{key}: merged {hdr_us} µs, from the raw latencies {exact_us} µs; {json}"
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    });
}

#[test]
fn a_rate_the_generator_cannot_reach_is_said_in_one_line() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let url = server.url("/");
        let args = |rate: &'static str| {
            [
                "bench",
                "--url",
                url.as_str(),
                "--rate",
                rate,
                "--duration",
                "1s",
                "--connections",
                "1",
                "--message",
                "text",
            ]
            .map(String::from)
        };
        let run = |rate| {
            let args = args(rate);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            wsbench(&args, Duration::from_secs(30))
        };
        let unreachable = run("1000000");
        assert!(
            unreachable.status.success(),
            "{}",
            text(&unreachable.stderr)
        );
        let out = text(&unreachable.stdout);
        let said: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("rate not reached"))
            .collect();
        assert_eq!(said.len(), 1, "{out}");
        assert!(said[0].contains("of 1000000/s asked"), "{out}");
        let reachable = run("100");
        let out = text(&reachable.stdout);
        assert!(reachable.status.success(), "{}", text(&reachable.stderr));
        assert!(!out.contains("rate not reached"), "{out}");
        assert!(out.contains("100 due, 100 sent, 100 ok"), "{out}");
    });
}

#[test]
fn rate_flags_without_rate_are_bad_usage() {
    timed!(LIMIT, {
        for args in [
            &["bench", "--duration", "1s"][..],
            &["bench", "--rate", "0"],
            &["bench", "--rate", "10", "--mode", "parallel"],
        ] {
            let run = wsbench(args, Duration::from_secs(10));
            assert_eq!(
                run.status.code(),
                Some(2),
                "{args:?}: {}",
                text(&run.stderr)
            );
        }
    });
}
