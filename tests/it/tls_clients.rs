//! Our clients over `wss://` and `https://` (#15): against our TLS server
//! and against Python servers nobody here wrote (`websockets` with an
//! `ssl` context, `websocket-server`), with session resumption counted,
//! and every way a certificate can be refused ending in one error line
//! and exit 1. Our servers are checked on drop for leaks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::chat_client::{chat, expect_line};
use crate::common::*;

const LIMIT: Duration = Duration::from_secs(120);
const RUN: Duration = Duration::from_secs(60);

/// Our server with a certificate for localhost and 127.0.0.1 signed by a
/// test CA; returns the CA's file too.
fn our_tls_server(dir: &Path) -> (Server, PathBuf) {
    let (ca, cert, key) = make_certificates(dir);
    let server = Server::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    (server, ca)
}

fn python_tls_peer(script: &str, dir: &Path, extra: &[&str], port: Option<u16>) -> Server {
    let mut command = Command::new(python());
    command
        .arg(peer_script(script))
        .args(["--cert", dir.join("cert.pem").to_str().unwrap()])
        .args(["--key", dir.join("key.pem").to_str().unwrap()])
        .args(extra);
    if let Some(port) = port {
        command.args(["--port", &port.to_string()]);
    }
    Server::from_command(command)
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_str(text(&out.stdout).trim()).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}", text(&out.stdout));
    })
}

fn bench_json(url: &str, ca: &Path, mode: &str, count: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "bench",
        "--url",
        url,
        "--ca-file",
        ca.to_str().unwrap(),
        "--mode",
        mode,
        "--count",
        count,
        "--concurrency",
        "10",
        "--json",
    ];
    args.extend_from_slice(extra);
    json(&wsbench(&args, RUN))
}

#[test]
fn bench_pingpong_and_load_speak_wss_to_our_server_and_resume_sessions() {
    timed!(LIMIT, {
        let dir = tempdir();
        let (server, ca) = our_tls_server(&dir);
        let url = server.url("/");

        let serial = bench_json(&url, &ca, "serial", "20", &["--verify"]);
        assert_eq!(serial["ok"], 20);
        assert_eq!(serial["tls_handshakes"], 1);

        // A connection per message: every one after the first resumes the
        // session of an earlier one (a ticket), as a browser's would.
        let short = bench_json(&url, &ca, "serial-short", "20", &["--verify"]);
        assert_eq!(short["ok"], 20);
        assert_eq!(short["tls_handshakes"], 20);
        assert_eq!(short["tls_resumed"], 19, "{short}");
        let full = bench_json(&url, &ca, "serial-short", "10", &["--no-resume"]);
        assert_eq!(
            (
                full["tls_handshakes"].as_u64(),
                full["tls_resumed"].as_u64()
            ),
            (Some(10), Some(0))
        );

        let parallel = bench_json(&url, &ca, "parallel", "60", &[]);
        assert_eq!(parallel["ok"], 60);
        assert_eq!(parallel["tls_handshakes"], 60);

        // pingpong's HTTP side follows the WebSocket URL to https://.
        let out = wsbench(
            &[
                "pingpong",
                "200",
                "--ws-url",
                &url,
                "--ca-file",
                ca.to_str().unwrap(),
            ],
            RUN,
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let report = text(&out.stdout);
        assert!(
            report.contains("| HTTP keep-alive | 200 | 201 | 1 |"),
            "{report}"
        );
        assert!(report.contains("| WebSocket | 200 | 200 | 1 |"), "{report}");

        let load = json(&wsbench(
            &[
                "load",
                "--url",
                &url,
                "--ca-file",
                ca.to_str().unwrap(),
                "--rounds",
                "2",
                "--batch-size",
                "40",
                "--workers",
                "2",
                "--hold",
                "0s",
                "--json",
            ],
            RUN,
        ));
        assert_eq!(load["established"], 160, "{load}");
        assert_eq!(load["round_trips_ok"], 160, "{load}");
        assert_eq!(load["closed_cleanly"], 160, "{load}");
        // Its /metrics read goes over HTTPS too.
        assert_eq!(load["server_connections_current"], 161, "{load}");
        assert!(load["tls_handshakes"].as_u64().unwrap() >= 160, "{load}");
    });
}

#[test]
fn our_clients_speak_wss_to_the_python_asyncio_server() {
    timed!(LIMIT, {
        let dir = tempdir();
        let (ca, _, _) = make_certificates(&dir);
        let python = python_tls_peer("image_server.py", &dir, &["--reply", "full"], None);
        let url = python.url("/");
        let serial = bench_json(&url, &ca, "serial", "10", &["--verify", "--size", "10000"]);
        assert_eq!(serial["ok"], 10, "{serial}");
        // OpenSSL's tickets resume rustls sessions too.
        let short = bench_json(
            &url,
            &ca,
            "serial-short",
            "10",
            &["--verify", "--size", "10000"],
        );
        assert_eq!(short["ok"], 10, "{short}");
        assert_eq!(short["tls_resumed"], 9, "{short}");
        let out = wsbench(
            &[
                "pingpong",
                "100",
                "--ws-url",
                &url,
                "--http-mode",
                "none",
                "--ca-file",
                ca.to_str().unwrap(),
            ],
            RUN,
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("| WebSocket | 100 | 100 | 1 |"));
    });
}

#[test]
fn chat_over_wss_reconnects_after_the_python_server_is_killed_and_loses_no_line() {
    timed!(LIMIT, {
        let dir = tempdir();
        let (ca, _, _) = make_certificates(&dir);
        let port = free_port();
        let first = python_tls_peer("chat_server.py", &dir, &[], Some(port));
        let (proc, typist) = chat(
            &first.url("/"),
            &[
                "--ca-file",
                ca.to_str().unwrap(),
                "--reconnect-max-delay",
                "1s",
            ],
        );
        expect_line(&proc.stderr, "connected to wss://", "connect", &proc);
        typist.type_line("before the kill");
        expect_line(&proc.stdout, ": before the kill", "relay", &proc);
        drop(first);
        expect_line(&proc.stderr, "reconnecting", "noticed the kill", &proc);
        typist.type_line("typed while down");
        let _second = python_tls_peer("chat_server.py", &dir, &[], Some(port));
        expect_line(&proc.stdout, ": typed while down", "the kept line", &proc);
        drop((typist, proc));
    });
}

#[test]
fn two_chat_clients_talk_over_wss_through_our_server() {
    timed!(LIMIT, {
        let dir = tempdir();
        let (server, ca) = our_tls_server(&dir);
        let ca = ca.to_str().unwrap();
        let (alice, alice_types) = chat(&server.url("/chat/tls"), &["--ca-file", ca]);
        expect_line(&alice.stdout, "< Hello from server", "greeting", &alice);
        let (mut bob, bob_types) = chat(&server.url("/chat/tls"), &["--ca-file", ca]);
        expect_line(&bob.stdout, "< Hello from server", "greeting", &bob);
        alice_types.type_line("over tls");
        let line = expect_line(&bob.stdout, "over tls", "relay", &bob);
        assert!(line.starts_with("< client "), "{line}");
        // A line out and a ping's pong back cross the one TLS session
        // that bob's reader thread is waiting on.
        bob_types.type_line("back over tls");
        expect_line(&alice.stdout, "back over tls", "relay back", &alice);
        expect_line(&bob.stderr, "confirmed by pong", "pong", &bob);
        drop(bob_types);
        let status = bob.wait(Duration::from_secs(5)).expect("exits after EOF");
        assert!(status.success(), "{:?}", bob.stderr.all());
        drop((alice_types, alice));
    });
}

#[test]
fn the_embedded_server_runs_over_tls_for_bench_and_pingpong() {
    timed!(LIMIT, {
        let out = wsbench(
            &[
                "bench",
                "--tls",
                "--mode",
                "serial-short",
                "--count",
                "20",
                "--size",
                "10000",
                "--verify",
                "--json",
            ],
            RUN,
        );
        let summary = json(&out);
        assert!(
            summary["url"].as_str().unwrap().starts_with("wss://"),
            "{summary}"
        );
        assert_eq!(summary["ok"], 20);
        assert_eq!(summary["tls_resumed"], 19, "{summary}");
        let out = wsbench(&["pingpong", "100", "--tls", "--http-mode", "both"], RUN);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let report = text(&out.stdout);
        assert!(
            report.contains("| HTTP new-connection | 100 | 101 | 101 |"),
            "{report}"
        );
    });
}

/// Runs `args` + `--url URL` and expects exit 1 with one `error:` line
/// containing `needle`.
fn refused(args: &[&str], needle: &str) {
    let out = wsbench(args, RUN);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
    assert!(errors[0].contains(needle), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn certificates_we_do_not_trust_end_the_run_with_one_line() {
    timed!(LIMIT, {
        let dir = tempdir();
        let (server, ca) = our_tls_server(&dir);
        let url = server.url("/");
        let ca = ca.to_str().unwrap();
        // Unknown CA: every client command, no retry loop in chat.
        for command in [
            vec!["bench", "--count", "2", "--url", &url],
            vec!["chat", "--url", &url],
            vec!["pingpong", "10", "--ws-url", &url],
            vec![
                "load",
                "--rounds",
                "1",
                "--batch-size",
                "2",
                "--hold",
                "0s",
                "--url",
                &url,
            ],
        ] {
            refused(
                &command,
                "TLS certificate not trusted: invalid peer certificate: UnknownIssuer",
            );
        }
        // --ca-file trusts it; --insecure skips the check and says so.
        let out = wsbench(
            &["bench", "--count", "2", "--url", &url, "--ca-file", ca],
            RUN,
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = wsbench(&["bench", "--count", "2", "--url", &url, "--insecure"], RUN);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("warning: --insecure"),
            "{}",
            text(&out.stderr)
        );
        // A plain server on a wss:// URL.
        let plain = Server::start(&[]);
        let wrong = plain.url("/").replace("ws://", "wss://");
        refused(
            &["bench", "--count", "1", "--url", &wrong],
            "the server does not speak TLS",
        );

        // A name the certificate does not carry, and an expired one.
        for (names, expired, needle) in [
            (&["other.example"][..], false, "not valid for name"),
            (&["localhost", "127.0.0.1"][..], true, "expired"),
        ] {
            let dir = tempdir();
            let (ca, cert, key) = make_certificates_for(&dir, names, expired);
            let server = Server::start(&[
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
            ]);
            let url = server.url("/");
            let ca = ca.to_str().unwrap();
            refused(
                &["bench", "--count", "1", "--url", &url, "--ca-file", ca],
                needle,
            );
            refused(&["chat", "--url", &url, "--ca-file", ca], needle);
        }
    });
}
