//! `wsbench load` from outside: batches over one and two source addresses,
//! the server's view of them, 503s counted by reason, held connections that
//! keep answering pings, the Python asyncio peer, and the refusals (#7).

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

const LIMIT: Duration = Duration::from_secs(90);

/// `load --rounds 2 --batch-size 20 --workers 2` (80 connections) held for `hold`.
fn load_json(url: &str, hold: &str, extra: &[&str]) -> serde_json::Value {
    let (run, summary) = load_run(url, hold, extra);
    assert!(run.status.success(), "{extra:?}: {}", text(&run.stderr));
    summary
}

/// Like [`load_json`], whatever the exit status.
fn load_run(url: &str, hold: &str, extra: &[&str]) -> (std::process::Output, serde_json::Value) {
    let mut args = vec![
        "load",
        "--url",
        url,
        "--rounds",
        "2",
        "--batch-size",
        "20",
        "--workers",
        "2",
        "--hold",
        hold,
        "--json",
    ];
    args.extend_from_slice(extra);
    let run = wsbench(&args, Duration::from_secs(60));
    let summary = serde_json::from_str(text(&run.stdout).trim())
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&run.stderr)));
    (run, summary)
}

#[test]
fn one_and_two_bind_addresses_establish_every_connection_and_close_them() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let url = server.url("/");
        for (bind, want) in [("127.0.0.1", 80u64), ("127.0.0.1,127.0.0.2", 160)] {
            let before = server.metric("wsbench_connections_total");
            let s = load_json(&url, "200ms", &["--bind", bind]);
            assert_eq!(s["attempted"], want, "{bind}: {s}");
            assert_eq!(s["established"], want, "{bind}: {s}");
            assert_eq!(s["failed"], 0, "{bind}: {s}");
            assert_eq!(s["round_trips_ok"], want, "{bind}: {s}");
            assert_eq!(s["closed_cleanly"], want, "{bind}: {s}");
            // Read while all were open; the /metrics request counts itself.
            assert_eq!(s["server_connections_current"], want + 1, "{bind}: {s}");
            for phase in ["tcp_connect", "handshake", "round_trip"] {
                let p = &s[phase];
                assert!(p["min"].as_f64().unwrap() > 0.0, "{phase}: {s}");
                assert!(p["p50"].as_f64() <= p["p99"].as_f64(), "{phase}: {s}");
            }
            assert!(s["connections_per_s"].as_f64().unwrap() > 0.0);
            // The server saw them all, and all are closed now (only the
            // metrics read itself is open): load waited for every TCP
            // close, and the server counts a connection out before that.
            let seen = server.metric("wsbench_connections_total") - before;
            assert!(seen > want, "{bind}: server saw {seen}");
            assert_eq!(
                server.metric("wsbench_connections_current"),
                1,
                "{bind}: connections left open"
            );
        }
        let summary = wsbench(
            &[
                "load",
                "--url",
                &url,
                "--rounds",
                "1",
                "--batch-size",
                "5",
                "--workers",
                "1",
                "--hold",
                "0s",
            ],
            Duration::from_secs(30),
        );
        let out = text(&summary.stdout);
        for line in [
            "connections:  5 attempted, 5 established, 0 failed",
            "failed by reason: refused 0, timeout 0, 503 0, handshake error 0, reset 0, other 0",
            "connections/s",
            "server:       wsbench_connections_current 6",
        ] {
            assert!(out.contains(line), "no `{line}` in:\n{out}");
        }
        for phase in ["tcp connect", "handshake", "round trip"] {
            assert!(out.lines().any(|l| l.starts_with(phase)), "{out}");
        }
    });
}

#[test]
fn connections_over_the_server_limit_are_counted_as_503() {
    timed!(LIMIT, {
        let server = Server::start(&["--max-connections", "50"]);
        let (run, s) = load_run(&server.url("/"), "200ms", &[]);
        // #13: refusals fail the run, with one line of them by reason.
        assert_eq!(run.status.code(), Some(1));
        assert_eq!(
            text(&run.stderr).trim(),
            "error: 30 of 80 connections failed: 30 server answered HTTP 503"
        );
        assert_eq!(s["attempted"], 80, "{s}");
        assert_eq!(s["established"], 50, "{s}");
        assert_eq!(s["failures"]["503"], 30, "{s}");
        assert_eq!(s["failed"], 30, "{s}");
        assert_eq!(s["closed_cleanly"], 50, "{s}");
        // At its limit the server still answers the metrics read (#12):
        // the refusing thread serves it, so it holds no slot itself.
        assert_eq!(s["server_connections_current"], 50, "{s}");
        assert!(s["server_connections_unavailable"].is_null(), "{s}");
        assert!(server.metric("wsbench_connections_rejected_total") >= 30);
    });
}

#[test]
fn held_connections_keep_answering_the_server_pings() {
    timed!(LIMIT, {
        // A client that never read would lose every connection after
        // 200 ms + 300 ms; these are held for 1.5 s.
        let server = Server::start(&["--ping-interval", "200ms", "--ping-timeout", "300ms"]);
        let s = load_json(&server.url("/"), "1500ms", &[]);
        assert_eq!(s["established"], 80, "{s}");
        assert_eq!(s["lost_while_held"], 0, "{s}");
        assert!(s["server_pings_answered"].as_u64().unwrap() >= 80, "{s}");
        assert_eq!(s["round_trips_ok"], 80, "{s}");
        assert_eq!(s["closed_cleanly"], 80, "{s}");
    });
}

#[test]
fn the_python_asyncio_peer_takes_the_load_and_its_count_is_skipped() {
    timed!(LIMIT, {
        let mut cmd = Command::new(python());
        cmd.arg(peer_script("image_server.py"));
        let peer = Server::from_command(cmd);
        let run = wsbench(
            &[
                "load",
                "--url",
                &peer.url("/"),
                "--rounds",
                "2",
                "--batch-size",
                "20",
                "--workers",
                "2",
                "--hold",
                "100ms",
            ],
            Duration::from_secs(60),
        );
        assert!(run.status.success(), "{}", text(&run.stderr));
        let out = text(&run.stdout);
        assert!(
            out.contains("80 attempted, 80 established, 0 failed"),
            "{out}"
        );
        assert!(out.contains("closed:       80 cleanly"), "{out}");
        assert!(
            out.contains("server:       connection count unavailable (")
                && out.contains("not a wsbench server"),
            "{out}"
        );
    });
}

#[test]
fn the_embedded_server_runs_small_loads_and_refuses_what_cannot_fit() {
    timed!(LIMIT, {
        let run = wsbench(
            &[
                "load",
                "--rounds",
                "2",
                "--batch-size",
                "10",
                "--workers",
                "1",
                "--hold",
                "0s",
                "--json",
            ],
            Duration::from_secs(30),
        );
        assert!(run.status.success(), "{}", text(&run.stderr));
        let s: serde_json::Value = serde_json::from_str(text(&run.stdout).trim()).unwrap();
        assert_eq!(s["embedded_server"], true);
        assert_eq!(s["established"], 20, "{s}");
        assert_eq!(s["server_connections_current"], 21, "{s}");

        // Far more descriptors than any limit: refused up front, one line.
        let started = Instant::now();
        let run = wsbench(
            &[
                "load",
                "--rounds",
                "1000",
                "--batch-size",
                "20000",
                "--workers",
                "64",
            ],
            Duration::from_secs(10),
        );
        assert_eq!(run.status.code(), Some(1));
        let stderr = text(&run.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: load would open 1280000000 connections"),
            "{stderr}"
        );
        assert!(stderr.contains("start the server separately"), "{stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "refused up front"
        );
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
        let run = wsbench(
            &["load", "--url", &url, "--rounds", "2", "--batch-size", "5"],
            Duration::from_secs(20),
        );
        assert_eq!(run.status.code(), Some(1));
        assert_eq!(
            text(&run.stderr).trim(),
            format!("error: cannot connect to {url}: connection refused")
        );
        assert_eq!(text(&run.stdout), "");
    });
}

#[test]
fn bad_usage_exits_2() {
    timed!(LIMIT, {
        for args in [
            &["load", "--rounds", "0"][..],
            &["load", "--batch-size", "many"],
            &["load", "--bind", "localhost-ish"],
            &["load", "--hold", "soon"],
        ] {
            let run = wsbench(args, Duration::from_secs(10));
            assert_eq!(
                run.status.code(),
                Some(2),
                "{args:?}: {}",
                text(&run.stderr)
            );
        }
        let help = wsbench(&["load", "--help"], Duration::from_secs(10));
        for flag in [
            "--url",
            "--rounds",
            "--batch-size",
            "--workers",
            "--bind",
            "--hold",
            "--timeout",
            "--json",
        ] {
            assert!(
                text(&help.stdout).contains(flag),
                "load --help lacks {flag}"
            );
        }
    });
}
