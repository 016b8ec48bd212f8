//! The client commands against small misbehaving servers (#13): a peer
//! that accepts and never answers the handshake, one that shakes hands and
//! then never replies, one that resets the connection on the first
//! message, one that answers binary where text is due, and a
//! WebSocket-only server that answers plain HTTP with 426. Each command
//! must end within its bounds, say what failed in one `error:` line, and
//! exit 1; none may hang or report success.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use crossbeam_channel::{Receiver, Sender, unbounded};
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

const LIMIT: Duration = Duration::from_secs(90);
/// Every peer socket gives up after this, so no peer thread outlives its test
/// by long even if a client never closes.
const PEER_IO: Duration = Duration::from_secs(20);

/// What a peer does with one accepted connection; it may report events.
type Serve = fn(TcpStream, &Sender<String>);

/// A server on 127.0.0.1:0 that runs `serve` on a thread per connection.
/// Dropping it stops the accept loop.
struct Peer {
    addr: String,
    events: Receiver<String>,
    stop: Arc<AtomicBool>,
}

impl Peer {
    fn start(serve: Serve) -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, events) = unbounded();
        let stopping = Arc::clone(&stop);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Acquire) {
                    return;
                }
                let Ok(stream) = stream else { return };
                let _ = stream.set_read_timeout(Some(PEER_IO));
                let _ = stream.set_write_timeout(Some(PEER_IO));
                let tx = tx.clone();
                thread::spawn(move || serve(stream, &tx));
            }
        });
        Peer { addr, events, stop }
    }

    fn ws(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Reads until the client closes (or the peer's read timeout).
fn drain(mut stream: TcpStream) {
    let mut sink = [0u8; 4096];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
}

/// Accepts the TCP connection and never answers the handshake. Reports
/// `accepted` for each connection.
fn never_replies(stream: TcpStream, events: &Sender<String>) {
    let _ = events.send("accepted".into());
    drain(stream);
}

/// Reads a request head; returns it with the stream.
fn read_head(stream: &TcpStream) -> String {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            return head;
        }
        head.push_str(&line);
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Answers the upgrade whose head was read; false if it was not one.
fn answer_upgrade(mut stream: &TcpStream, head: &str) -> bool {
    let Some(key) = header(head, "sec-websocket-key") else {
        return false;
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).is_ok()
}

/// Completes the handshake, then reads and never replies.
fn silent_after_handshake(stream: TcpStream, _: &Sender<String>) {
    let head = read_head(&stream);
    if answer_upgrade(&stream, &head) {
        drain(stream);
    }
}

/// Completes the handshake; on the first bytes after it, resets.
fn resets_on_first_message(mut stream: TcpStream, _: &Sender<String>) {
    let head = read_head(&stream);
    if !answer_upgrade(&stream, &head) {
        return;
    }
    let mut first = [0u8; 1];
    if matches!(stream.read(&mut first), Ok(1)) {
        // Linger 0: close() sends RST instead of FIN.
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    }
}

/// Completes the handshake and answers every message with a binary one.
fn replies_binary(stream: TcpStream, _: &Sender<String>) {
    let head = read_head(&stream);
    if !answer_upgrade(&stream, &head) {
        return;
    }
    let mut ws = WebSocket::from_raw_socket(stream, Role::Server, None);
    while let Ok(message) = ws.read() {
        if (message.is_binary() || message.is_text())
            && ws.send(Message::binary(&b"no"[..])).is_err()
        {
            return;
        }
    }
}

/// A WebSocket-only server, as node's `ws`: `Pong!` to every text message,
/// 426 to plain HTTP. Reports `http` for each plain request.
fn websocket_only(mut stream: TcpStream, events: &Sender<String>) {
    let head = read_head(&stream);
    if answer_upgrade(&stream, &head) {
        let mut ws = WebSocket::from_raw_socket(stream, Role::Server, None);
        while let Ok(message) = ws.read() {
            if message.is_text() && ws.send(Message::text("Pong!")).is_err() {
                return;
            }
        }
        return;
    }
    let _ = events.send("http".into());
    let _ = stream.write_all(
        b"HTTP/1.1 426 Upgrade Required\r\nContent-Type: text/plain\r\nContent-Length: 16\r\nConnection: close\r\n\r\nUpgrade Required",
    );
}

/// The `error:` lines of a run's stderr.
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error:")).collect()
}

/// `wsbench chat --url URL ARGS` with stdin a pipe, and its typist.
fn chat(url: &str, args: &[&str]) -> (Proc, Typist) {
    let mut command = Command::new(BIN);
    command
        .args(["chat", "--url", url])
        .args(args)
        .stdin(Stdio::piped());
    let mut proc = Proc::spawn_with_stdin(command);
    let typist = Typist::new(&mut proc);
    (proc, typist)
}

/// Types `lines`, ends the input, and returns the exit status, the time
/// from the end of input to the exit, and stderr.
fn chat_until_exit(
    url: &str,
    args: &[&str],
    lines: &[&str],
) -> (std::process::ExitStatus, Duration, String) {
    let (mut proc, typist) = chat(url, args);
    for line in lines {
        typist.type_line(line);
    }
    let ended = Instant::now();
    drop(typist);
    let status = proc.wait(Duration::from_secs(20)).unwrap_or_else(|| {
        panic!(
            "chat still running 20 s after the end of input: {:?}",
            proc.stderr.all()
        )
    });
    let took = ended.elapsed();
    // Waits for the stderr reader to reach EOF, which follows the exit.
    proc.stderr.wait_for("\u{0}", Duration::from_secs(2));
    (status, took, proc.stderr.all().join("\n"))
}

#[test]
fn chat_from_a_pipe_gives_up_on_a_server_that_never_completes_the_handshake() {
    timed!(LIMIT, {
        let peer = Peer::start(never_replies);
        let (status, took, stderr) = chat_until_exit(
            &peer.ws("/chat"),
            &["--give-up-after", "1s", "--pong-timeout", "500ms"],
            &["one", "two", "three"],
        );
        assert_eq!(status.code(), Some(1), "{stderr}");
        let errors = error_lines(&stderr);
        assert_eq!(errors.len(), 1, "{stderr}");
        let line = errors[0];
        assert!(
            line.starts_with(&format!(
                "error: 3 line(s) not delivered to {}: gave up 1.0 s after the end of input",
                peer.ws("/chat")
            )),
            "{line}"
        );
        assert!(line.contains("handshake failed: timed out"), "{line}");
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(5),
            "gave up {took:?} after the end of input"
        );
        assert!(peer.events.try_iter().count() >= 1, "chat never tried");
    });
}

#[test]
fn chat_from_a_pipe_gives_up_on_lines_a_peer_never_confirms() {
    timed!(LIMIT, {
        // The handshake completes, so the lines are written; no pong ever
        // proves they were read, and every new connection is the same.
        let peer = Peer::start(silent_after_handshake);
        let (status, _, stderr) = chat_until_exit(
            &peer.ws("/chat"),
            &[
                "--give-up-after",
                "1500ms",
                "--pong-timeout",
                "500ms",
                "--ping-interval",
                "200ms",
            ],
            &["unheard"],
        );
        assert_eq!(status.code(), Some(1), "{stderr}");
        let errors = error_lines(&stderr);
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(
            errors[0].starts_with("error: 1 line(s) not delivered to "),
            "{stderr}"
        );
        assert!(errors[0].contains("no pong within 0.5 s"), "{stderr}");
    });
}

#[test]
fn bench_stops_after_max_failures_against_a_peer_that_never_replies() {
    timed!(LIMIT, {
        let peer = Peer::start(silent_after_handshake);
        let dir = tempdir();
        for mode in ["serial", "serial-short", "parallel"] {
            let csv = dir.join(format!("{mode}.csv"));
            let started = Instant::now();
            // Without a stop this is 1000 × 200 ms.
            let run = wsbench(
                &[
                    "bench",
                    "--url",
                    &peer.ws("/"),
                    "--mode",
                    mode,
                    "--concurrency",
                    "2",
                    "--count",
                    "1000",
                    "--size",
                    "1000",
                    "--timeout",
                    "200ms",
                    "--max-failures",
                    "3",
                    "--out",
                    csv.to_str().unwrap(),
                ],
                Duration::from_secs(30),
            );
            let stdout = text(&run.stdout);
            let stderr = text(&run.stderr);
            assert_eq!(run.status.code(), Some(1), "{mode}: {stderr}");
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{mode}: {:?}",
                started.elapsed()
            );
            assert_eq!(stderr.trim().lines().count(), 1, "{mode}: {stderr}");
            assert!(
                stderr.starts_with(
                    "error: stopped after 3 failed messages in a row (--max-failures 3): "
                ),
                "{mode}: {stderr}"
            );
            assert!(stderr.contains("reply: timed out"), "{mode}: {stderr}");
            // The summary is still printed, with the failures.
            let rows = std::fs::read_to_string(&csv).unwrap().lines().count() - 1;
            let failed = if mode == "parallel" {
                // Both workers' messages under way finish: 3 or 4.
                assert!((3..=4).contains(&rows), "{mode}: {rows} rows");
                rows
            } else {
                assert_eq!(rows, 3, "{mode}");
                3
            };
            assert!(
                stdout.contains(&format!(
                    "messages:   0 ok, {failed} failed (stopped after 3 failed in a row: --max-failures)"
                )),
                "{mode}: {stdout}"
            );
            assert!(stderr.contains(&format!("{failed} of {failed} sent failed")));
        }
    });
}

#[test]
fn bench_failed_rows_record_how_long_the_reply_took() {
    timed!(LIMIT, {
        let peer = Peer::start(replies_binary);
        let csv = tempdir().join("binary.csv");
        let run = wsbench(
            &[
                "bench",
                "--url",
                &peer.ws("/"),
                "--count",
                "3",
                "--size",
                "1000",
                "--out",
                csv.to_str().unwrap(),
            ],
            Duration::from_secs(30),
        );
        assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
        let rows: Vec<csv::StringRecord> = csv::Reader::from_path(&csv)
            .unwrap()
            .records()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), 3);
        for row in rows {
            assert_eq!(&row[6], "false", "{row:?}");
            assert_eq!(&row[7], "reply: binary message, expected text", "{row:?}");
            let recv_s: f64 = row[4].parse().unwrap();
            assert!(recv_s > 0.0, "a reply arrived, recv_s is {recv_s}: {row:?}");
        }
    });
}

/// `load` of 4 connections in one batch against `url`, held 0 s.
fn small_load(url: &str) -> std::process::Output {
    wsbench(
        &[
            "load",
            "--url",
            url,
            "--rounds",
            "1",
            "--batch-size",
            "4",
            "--workers",
            "1",
            "--hold",
            "0s",
            "--timeout",
            "300ms",
        ],
        Duration::from_secs(30),
    )
}

#[test]
fn load_fails_when_every_round_trip_times_out() {
    timed!(LIMIT, {
        let peer = Peer::start(silent_after_handshake);
        let run = small_load(&peer.ws("/"));
        let stderr = text(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert_eq!(
            stderr.trim(),
            "error: 4 of 4 connections failed: 4 round trip: timed out"
        );
        let stdout = text(&run.stdout);
        assert!(stdout.contains("round trips:  0 ok, 4 failed"), "{stdout}");
    });
}

#[test]
fn load_fails_when_every_connection_is_reset() {
    timed!(LIMIT, {
        let peer = Peer::start(resets_on_first_message);
        let run = small_load(&peer.ws("/"));
        let stderr = text(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: 4 of 4 connections failed: 4 round trip: connection reset"),
            "{stderr}"
        );
    });
}

const RUNS: &str = "| Server | Qt pings | Start | End | Duration |";

/// The first cells of every row of the table under `header`.
fn table(report: &str, header: &str) -> Vec<Vec<String>> {
    report
        .lines()
        .skip_while(|l| *l != header)
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn pingpong_keeps_the_websocket_figures_when_the_http_side_fails() {
    timed!(LIMIT, {
        let peer = Peer::start(websocket_only);
        let report = tempdir().join("report.md");
        let run = wsbench(
            &[
                "pingpong",
                "20",
                "30",
                "--ws-url",
                &peer.ws("/"),
                "--report",
                report.to_str().unwrap(),
            ],
            Duration::from_secs(30),
        );
        let stderr = text(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(
                "error: the HTTP side failed, so the report has its WebSocket figures only: "
            ) && stderr.contains("got HTTP 426"),
            "{stderr}"
        );
        let stdout = text(&run.stdout);
        let file = std::fs::read_to_string(&report).unwrap();
        assert_eq!(
            stdout.trim_end(),
            file.trim_end(),
            "stdout and --report differ"
        );
        let runs: Vec<(String, String)> = table(&stdout, RUNS)
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone()))
            .collect();
        let ws = |n: &str| ("WebSocket".to_string(), n.to_string());
        assert_eq!(runs, [ws("20"), ws("30")], "{stdout}");
        let versus = table(
            &stdout,
            "| Qt pings | WS (s) | HTTP (s) | HTTP - WS (s) | HTTP / WS |",
        );
        assert_eq!(versus.len(), 2, "{stdout}");
        for row in versus {
            assert!(row[1].parse::<f64>().unwrap() > 0.0, "{row:?}");
            assert_eq!(row[2..], ["", "", ""], "{row:?}");
        }
        let why = stdout
            .lines()
            .find(|l| l.starts_with("- HTTP cells are empty: "))
            .unwrap_or_else(|| panic!("no line saying why: {stdout}"));
        assert!(why.contains("HTTP 426"), "{why}");
        // One plain request, then no more HTTP tries.
        assert_eq!(peer.events.try_iter().count(), 1);
    });
}

#[test]
fn pingpong_http_mode_none_measures_only_the_websocket_side() {
    timed!(LIMIT, {
        let peer = Peer::start(websocket_only);
        let run = wsbench(
            &[
                "pingpong",
                "20",
                "--ws-url",
                &peer.ws("/"),
                "--http-mode",
                "none",
            ],
            Duration::from_secs(30),
        );
        assert!(run.status.success(), "{}", text(&run.stderr));
        let stdout = text(&run.stdout);
        let runs = table(&stdout, RUNS);
        assert_eq!(runs.len(), 1, "{stdout}");
        assert_eq!(runs[0][..2], ["WebSocket", "20"], "{stdout}");
        let versus = table(&stdout, "| Qt pings | WS (s) |");
        assert_eq!(versus.len(), 1, "{stdout}");
        assert_eq!(versus[0].len(), 2, "{stdout}");
        assert!(
            stdout.contains("- HTTP: not measured (--http-mode none)"),
            "{stdout}"
        );
        assert_eq!(
            peer.events.try_iter().count(),
            0,
            "no HTTP request was sent"
        );
    });
}
