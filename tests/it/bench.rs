//! `wsbench bench` from outside: every mode's CSV, the embedded server,
//! `--verify` against an honest and a lying peer, errors and exit codes (#3).

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const LIMIT: Duration = Duration::from_secs(90);
const COLUMNS: &str = "idx,start_unix_s,connect_s,send_s,recv_s,total_s,ok,error";

fn csv_rows(path: &std::path::Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(COLUMNS));
    lines
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn every_mode_writes_one_csv_row_per_message() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let dir = tempdir();
        for mode in ["serial", "serial-short", "parallel"] {
            let out = dir.join(format!("{mode}.csv"));
            let run = wsbench(
                &[
                    "bench",
                    "--url",
                    &server.url("/"),
                    "--mode",
                    mode,
                    "--count",
                    "25",
                    "--size",
                    "1000",
                    "--concurrency",
                    "5",
                    "--verify",
                    "--out",
                    out.to_str().unwrap(),
                ],
                Duration::from_secs(60),
            );
            assert!(run.status.success(), "{mode}: {}", text(&run.stderr));
            let rows = csv_rows(&out);
            assert_eq!(rows.len(), 25, "{mode}");
            let mut idx: Vec<u64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
            idx.sort();
            assert_eq!(idx, (0..25).collect::<Vec<u64>>(), "{mode}");
            for row in &rows {
                assert_eq!(row[6], "true", "{mode}: {row:?}");
                let f = |i: usize| row[i].parse::<f64>().unwrap();
                assert!(f(1) > 1.7e9, "start_unix_s is a unix time");
                assert!(f(5) >= f(3) + f(4), "total covers send and recv: {row:?}");
                let fresh_connection = mode != "serial" || row[0] == "0";
                assert_eq!(f(2) > 0.0, fresh_connection, "{mode}: connect_s in {row:?}");
            }
            let summary = text(&run.stdout);
            assert!(
                summary.contains(&format!("mode:       {mode}")),
                "{summary}"
            );
            assert!(summary.contains("25 ok, 0 failed"), "{summary}");
            for phase in ["connect", "send", "recv", "total"] {
                assert!(summary.lines().any(|l| l.starts_with(phase)), "{summary}");
            }
            // Full statistics came back and were checked.
            assert!(!summary.contains("verified lengths only"), "{summary}");
        }
        assert_eq!(server.metric("wsbench_messages_received_total"), 75);
    });
}

#[test]
fn without_url_the_embedded_server_runs_the_whole_experiment() {
    timed!(LIMIT, {
        for response in ["slow", "fast"] {
            let run = wsbench(
                &[
                    "bench",
                    "--count",
                    "40",
                    "--mode",
                    "parallel",
                    "--concurrency",
                    "40",
                    "--response",
                    response,
                    "--verify",
                    "--json",
                ],
                Duration::from_secs(60),
            );
            assert!(run.status.success(), "{}", text(&run.stderr));
            let summary: serde_json::Value =
                serde_json::from_str(text(&run.stdout).trim()).unwrap();
            assert_eq!(summary["ok"], 40);
            assert_eq!(summary["failed"], 0);
            assert_eq!(summary["size"], 480_000);
            assert_eq!(summary["mode"], "parallel");
            for key in ["wall_s", "messages_per_s", "mb_per_s"] {
                assert!(summary[key].as_f64().unwrap() > 0.0, "{key}");
            }
            for phase in ["connect", "send", "recv", "total"] {
                for p in ["min", "p50", "p90", "p99", "max"] {
                    assert!(summary[phase][p].is_f64(), "{phase}.{p}");
                }
            }
            // Not a terminal: no progress bar on stderr.
            assert!(
                !text(&run.stderr).contains("messages  "),
                "{}",
                text(&run.stderr)
            );
        }
    });
}

#[test]
fn verify_fails_the_run_against_a_peer_that_lies() {
    timed!(LIMIT, {
        let mut cmd = Command::new(python());
        cmd.arg(peer_script("image_server.py"))
            .args(["--reply", "lie"]);
        let liar = Server::from_command(cmd);
        let dir = tempdir();
        let out = dir.join("lie.csv");
        let run = wsbench(
            &[
                "bench",
                "--url",
                &liar.url("/"),
                "--count",
                "3",
                "--size",
                "1000",
                "--verify",
                "--out",
                out.to_str().unwrap(),
            ],
            Duration::from_secs(30),
        );
        assert_eq!(run.status.code(), Some(1));
        let stderr = text(&run.stderr);
        assert!(stderr.contains("error: 3 of 3 messages failed"), "{stderr}");
        assert!(stderr.contains("max"), "the mismatch is named: {stderr}");
        // Failed messages keep their rows, with the error.
        let rows = csv_rows(&out);
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|r| r[6] == "false" && r[7].contains("max")));
    });
}

#[test]
fn bench_runs_against_the_original_python_asyncio_server() {
    timed!(LIMIT, {
        for reply in ["len", "full"] {
            let mut cmd = Command::new(python());
            cmd.arg(peer_script("image_server.py"))
                .args(["--reply", reply]);
            let python_server = Server::from_command(cmd);
            for mode in ["serial", "parallel"] {
                let run = wsbench(
                    &[
                        "bench",
                        "--url",
                        &python_server.url("/"),
                        "--count",
                        "20",
                        "--mode",
                        mode,
                        "--concurrency",
                        "10",
                        "--verify",
                        "--json",
                    ],
                    Duration::from_secs(60),
                );
                assert!(
                    run.status.success(),
                    "{reply}/{mode}: {}",
                    text(&run.stderr)
                );
                let summary: serde_json::Value =
                    serde_json::from_str(text(&run.stdout).trim()).unwrap();
                assert_eq!(summary["ok"], 20, "{reply}/{mode}");
            }
        }
    });
}

#[test]
fn nothing_listening_exits_1_with_one_line() {
    timed!(LIMIT, {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("ws://127.0.0.1:{port}/");
        for mode in ["serial", "serial-short", "parallel"] {
            let run = wsbench(
                &["bench", "--url", &url, "--count", "3", "--mode", mode],
                Duration::from_secs(20),
            );
            assert_eq!(run.status.code(), Some(1), "{mode}");
            assert_eq!(
                text(&run.stderr).trim(),
                format!("error: cannot connect to {url}: connection refused"),
                "{mode}"
            );
        }
    });
}

#[test]
fn bad_usage_exits_2() {
    timed!(LIMIT, {
        for args in [
            &["bench", "--count", "x"][..],
            &["bench", "--mode", "sideways"],
            &["bench", "--size", "big"],
            &["bench", "--timeout", "soon"],
            &["server", "--no-such-flag"],
            &["server", "--ping-interval", "1y"],
        ] {
            let run = wsbench(args, Duration::from_secs(10));
            assert_eq!(
                run.status.code(),
                Some(2),
                "{args:?}: {}",
                text(&run.stderr)
            );
            assert!(text(&run.stderr).contains("error:"), "{args:?}");
        }
        let help = wsbench(&["bench", "--help"], Duration::from_secs(10));
        assert_eq!(help.status.code(), Some(0));
        for flag in [
            "--url",
            "--count",
            "--size",
            "--mode",
            "--concurrency",
            "--response",
            "--seed",
            "--verify",
            "--timeout",
            "--out",
            "--json",
        ] {
            assert!(
                text(&help.stdout).contains(flag),
                "bench --help lacks {flag}"
            );
        }
    });
}

#[test]
fn a_bad_url_is_one_line_and_exit_1() {
    timed!(LIMIT, {
        let run = wsbench(
            &["bench", "--url", "http://x/", "--count", "1"],
            Duration::from_secs(10),
        );
        assert_eq!(run.status.code(), Some(1));
        assert_eq!(
            text(&run.stderr).trim(),
            "error: bad url `http://x/`: the scheme must be ws:// or wss://"
        );
    });
}

#[test]
fn sigterm_mid_run_summarises_and_writes_what_was_measured() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let dir = tempdir();
        let out = dir.join("partial.csv");
        for mode in ["serial", "parallel"] {
            let mut bench = Proc::spawn({
                let mut c = Command::new(BIN);
                c.args([
                    "bench",
                    "--url",
                    &server.url("/"),
                    "--mode",
                    mode,
                    "--count",
                    "10000000",
                    "--size",
                    "1000",
                    "--concurrency",
                    "4",
                    "--out",
                    out.to_str().unwrap(),
                ]);
                c
            });
            // Wait until the server has seen traffic: an event, not a clock.
            let before = server.metric("wsbench_messages_received_total");
            while server.metric("wsbench_messages_received_total") < before + 100 {}
            bench.signal(libc::SIGTERM);
            let status = bench
                .wait(Duration::from_secs(5))
                .expect("bench exits within 5 s");
            assert!(status.success(), "{mode}: {status}");
            bench.stdout.wait_for("wall time", Duration::from_secs(2));
            let stdout = bench.stdout.all().join("\n");
            assert!(stdout.contains("(interrupted)"), "{mode}: {stdout}");
            let rows = csv_rows(&out);
            assert!(
                rows.len() >= 100 && rows.len() < 10_000_000,
                "{mode}: {} rows",
                rows.len()
            );
            let ok = stdout
                .lines()
                .find_map(|l| l.strip_prefix("messages:   "))
                .and_then(|l| l.split(' ').next())
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap();
            assert_eq!(ok, rows.iter().filter(|r| r[6] == "true").count(), "{mode}");
        }
    });
}

#[test]
fn verify_against_length_only_replies_says_so_once() {
    timed!(LIMIT, {
        // #13: `Received: {len}` passes --verify on its length alone; the
        // summary must not let that pass for a statistics check.
        let server = Server::start(&["--response", "fast"]);
        let url = server.url("/");
        let args = [
            "bench", "--url", &url, "--count", "5", "--size", "1000", "--verify",
        ];
        let run = wsbench(&args, Duration::from_secs(30));
        assert!(run.status.success(), "{}", text(&run.stderr));
        let summary = text(&run.stdout);
        let said: Vec<&str> = summary
            .lines()
            .filter(|l| l.contains("verified lengths only"))
            .collect();
        assert_eq!(
            said,
            ["verified lengths only: the server sends no statistics"],
            "{summary}"
        );
        let run = wsbench(&[&args[..], &["--json"]].concat(), Duration::from_secs(30));
        let summary: serde_json::Value = serde_json::from_str(text(&run.stdout).trim()).unwrap();
        assert_eq!(summary["verified_lengths_only"], 5, "{summary}");
    });
}
