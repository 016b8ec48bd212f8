//! `wsbench chat` from outside (#5): the real binary, stdin a pipe (or a
//! file), against our server's `/chat`, a server killed and restarted on
//! its port, a peer that never answers pings, and the original
//! experiment's Python chat server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use crossbeam_channel::{Receiver, unbounded};

const LIMIT: Duration = Duration::from_secs(90);
const WAIT: Duration = Duration::from_secs(10);
const JOINED: &str = "Hey all, a new client has joined us";

/// `wsbench chat --url URL ARGS` with stdin a pipe, and its typist.
pub(crate) fn chat(url: &str, args: &[&str]) -> (Proc, Typist) {
    let mut command = Command::new(BIN);
    command
        .args(["chat", "--url", url])
        .args(args)
        .env("RUST_LOG", "wsbench=debug")
        .stdin(Stdio::piped());
    let mut proc = Proc::spawn_with_stdin(command);
    let typist = Typist::new(&mut proc);
    (proc, typist)
}

pub(crate) fn expect_line(lines: &Lines, needle: &str, what: &str, proc: &Proc) -> String {
    lines.wait_for(needle, WAIT).unwrap_or_else(|| {
        panic!(
            "{what}: no line with {needle:?}\nstdout: {:#?}\nstderr: {:#?}",
            proc.stdout.all(),
            proc.stderr.all()
        )
    })
}

/// Joins `/chat` as a watcher that has read its own greetings.
fn watcher(server: &Server) -> Ws {
    let mut ws = connect(&server.url("/chat"));
    assert_eq!(next_text(&mut ws), "Hello from server");
    assert_eq!(next_text(&mut ws), JOINED);
    ws
}

/// The watcher's next relayed line with the `client N: ` prefix removed,
/// skipping join and leave notices.
fn next_relayed(ws: &mut Ws) -> String {
    loop {
        let line = next_text(ws);
        if line == JOINED || line.ends_with(" has left") {
            continue;
        }
        let (_, text) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("not a relayed line: {line}"));
        return text.to_string();
    }
}

#[test]
fn lines_arrive_in_order_and_incoming_lines_are_printed() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let mut watching = watcher(&server);
        let (proc, typist) = chat(&server.url("/chat"), &[]);
        expect_line(&proc.stderr, "connected to ws://", "connect", &proc);
        expect_line(&proc.stdout, "< Hello from server", "greeting", &proc);
        expect_line(&proc.stdout, &format!("< {JOINED}"), "join notice", &proc);
        for n in 0..200 {
            typist.type_line(&format!("line {n}"));
        }
        for n in 0..200 {
            assert_eq!(next_relayed(&mut watching), format!("line {n}"));
        }
        watching
            .send(tungstenite::Message::text("hi from the watcher"))
            .unwrap();
        let line = expect_line(&proc.stdout, "hi from the watcher", "relay", &proc);
        assert!(line.starts_with("< client "), "{line}");
        // Nothing but `< ` lines on stdout; status goes to stderr.
        assert!(proc.stdout.all().iter().all(|l| l.starts_with("< ")));
    });
}

#[test]
fn stop_prints_the_close_code_and_only_the_next_line_reconnects() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let mut watching = watcher(&server);
        let (proc, typist) = chat(&server.url("/chat"), &["--reconnect-max-delay", "1s"]);
        expect_line(&proc.stderr, "connected to ws://", "connect", &proc);
        typist.type_line("stop");
        let line = expect_line(&proc.stderr, "closed by server", "close", &proc);
        assert!(line.contains("code 1000"), "{line}");
        // A wrong reconnect would come within the first backoff (0.5 s).
        assert_eq!(
            proc.stderr
                .wait_for("connected to", Duration::from_millis(1500)),
            None,
            "reconnected before a line was typed"
        );
        let connects = |proc: &Proc| {
            proc.stderr
                .all()
                .iter()
                .filter(|l| l.contains("connected to"))
                .count()
        };
        assert_eq!(connects(&proc), 1);
        typist.type_line("back again");
        expect_line(&proc.stderr, "connected to ws://", "reconnect", &proc);
        assert_eq!(next_relayed(&mut watching), "back again");
        assert_eq!(connects(&proc), 2);
        // `stop` itself was delivered once and not sent again.
        assert_eq!(
            proc.stderr
                .all()
                .iter()
                .filter(|l| l.contains("closed by"))
                .count(),
            1
        );
    });
}

#[test]
fn lines_typed_while_the_server_is_down_arrive_once_in_order_after_restart() {
    timed!(LIMIT, {
        let port = free_port();
        let mut server = Server::start_on(port, &[]);
        let mut watching = watcher(&server);
        let (proc, typist) = chat(&server.url("/chat"), &["--reconnect-max-delay", "4s"]);
        expect_line(&proc.stderr, "connected to ws://", "connect", &proc);
        typist.type_line("before");
        assert_eq!(next_relayed(&mut watching), "before");
        // Delivered means confirmed by a pong; only then is it safe to
        // expect it never again.
        expect_line(&proc.stderr, "confirmed by pong", "confirmation", &proc);

        server.proc.signal(libc::SIGKILL);
        server.proc.wait(WAIT).expect("the server dies on SIGKILL");
        for n in 0..20 {
            typist.type_line(&format!("down {n}"));
        }
        expect_line(&proc.stderr, "connection lost", "loss", &proc);
        // The backoff has reached 2 s: time to restart and join first.
        expect_line(&proc.stderr, "retrying in 2.0 s", "backoff", &proc);
        let server = Server::start_on(port, &[]);
        let mut watching = watcher(&server);
        for n in 0..20 {
            assert_eq!(next_relayed(&mut watching), format!("down {n}"));
        }
        typist.type_line("after");
        // The next line is `after`: nothing was sent twice.
        assert_eq!(next_relayed(&mut watching), "after");
        drop((typist, proc));
    });
}

/// A peer that completes the handshake, then reads and never answers.
/// Reports each accepted connection.
fn silent_peer() -> (String, Receiver<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = unbounded();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let tx = tx.clone();
            thread::spawn(move || {
                let mut stream = answer_handshake(stream, &[]);
                let _ = tx.send(Instant::now());
                let mut sink = [0u8; 4096];
                while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    (addr, rx)
}

/// Reads a request head and answers 101 with `extra` header lines; returns
/// the stream and (through the head) what the client asked.
fn answer_handshake(stream: TcpStream, extra: &[&str]) -> TcpStream {
    answer_handshake_with_head(stream, extra).0
}

fn answer_handshake_with_head(mut stream: TcpStream, extra: &[&str]) -> (TcpStream, String) {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let key = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_string())
        })
        .expect("a Sec-WebSocket-Key");
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    for line in extra {
        response.push_str(line);
        response.push_str("\r\n");
    }
    response.push_str("\r\n");
    stream.write_all(response.as_bytes()).unwrap();
    stream.set_read_timeout(None).unwrap();
    (stream, head)
}

#[test]
fn a_peer_that_never_answers_pings_is_declared_dead_and_replaced() {
    timed!(LIMIT, {
        let (addr, accepted) = silent_peer();
        let pong_timeout = Duration::from_secs(1);
        let ping_interval = Duration::from_millis(200);
        let (proc, _typist) = chat(
            &format!("ws://{addr}/chat"),
            &["--ping-interval", "200ms", "--pong-timeout", "1s"],
        );
        let first = accepted.recv_timeout(WAIT).expect("the client connects");
        let line = expect_line(&proc.stderr, "connection is dead", "detection", &proc);
        let detected = first.elapsed();
        assert!(line.contains("no pong within 1.0 s"), "{line}");
        // The first ping leaves one interval after connecting; the margin
        // covers scheduling on a loaded 2-core machine.
        let bound = ping_interval + pong_timeout + Duration::from_millis(750);
        assert!(
            detected >= pong_timeout && detected < bound,
            "declared dead after {detected:?}, expected within {bound:?}"
        );
        eprintln!("silent peer declared dead {detected:?} after connecting");
        accepted
            .recv_timeout(WAIT)
            .expect("the client reconnects after declaring the peer dead");
    });
}

#[test]
fn end_of_input_closes_and_exits_0_within_2_s() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let (mut proc, typist) = chat(&server.url("/chat"), &[]);
        expect_line(&proc.stderr, "connected to ws://", "connect", &proc);
        typist.type_line("last words");
        expect_line(&proc.stderr, "confirmed by pong", "confirmation", &proc);
        let ended = Instant::now();
        drop(typist);
        let status = proc
            .wait(Duration::from_secs(2))
            .unwrap_or_else(|| panic!("still running 2 s after EOF: {:?}", proc.stderr.all()));
        assert!(status.success(), "{status:?}: {:?}", proc.stderr.all());
        eprintln!("exited {:?} after EOF", ended.elapsed());
    });
}

#[test]
fn stdin_from_a_file_is_sent_whole_and_then_the_client_exits_0() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let mut watching = watcher(&server);
        let path = tempdir().join("lines.txt");
        // CRLF and a last line without a newline, as files come.
        std::fs::write(&path, "from a file\r\nsecond\nno newline at the end").unwrap();
        let mut command = Command::new(BIN);
        command
            .args(["chat", "--url", &server.url("/chat")])
            .stdin(std::fs::File::open(&path).unwrap());
        let mut proc = Proc::spawn_with_stdin(command);
        for expected in ["from a file", "second", "no newline at the end"] {
            assert_eq!(next_relayed(&mut watching), expected);
        }
        let status = proc.wait(WAIT).expect("exits after the file ends");
        assert!(status.success(), "{status:?}: {:?}", proc.stderr.all());
    });
}

#[test]
fn a_refused_connection_on_start_is_retried_and_queued_lines_follow() {
    timed!(LIMIT, {
        let port = free_port();
        let (proc, typist) = chat(&format!("ws://127.0.0.1:{port}/chat"), &[]);
        let line = expect_line(&proc.stderr, "cannot connect to", "refusal", &proc);
        assert!(line.contains("connection refused"), "{line}");
        assert!(line.contains("retrying in"), "{line}");
        typist.type_line("typed early");
        expect_line(&proc.stderr, "retrying in 2.0 s", "backoff", &proc);
        let server = Server::start_on(port, &[]);
        let mut watching = watcher(&server);
        assert_eq!(next_relayed(&mut watching), "typed early");
        // The client goes before the server checks it was given back all.
        drop((typist, proc));
    });
}

#[test]
fn headers_and_subprotocols_go_into_the_handshake() {
    timed!(LIMIT, {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, heads) = unbounded();
        thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let (mut stream, head) =
                answer_handshake_with_head(stream, &["Sec-WebSocket-Protocol: chat.v2"]);
            let _ = tx.send(head);
            let mut sink = [0u8; 4096];
            while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
        });
        let (proc, _typist) = chat(
            &format!("ws://{addr}/chat"),
            &[
                "-H",
                "X-Token: abc:123",
                "--header",
                "Origin: http://example.test",
                "--subprotocol",
                "chat.v1",
                "--subprotocol",
                "chat.v2",
            ],
        );
        let head = heads.recv_timeout(WAIT).expect("a handshake");
        let has = |line: &str| head.lines().any(|l| l.eq_ignore_ascii_case(line));
        assert!(has("x-token: abc:123"), "{head}");
        assert!(has("origin: http://example.test"), "{head}");
        assert!(has("sec-websocket-protocol: chat.v1, chat.v2"), "{head}");
        let line = expect_line(&proc.stderr, "connected to", "connect", &proc);
        assert!(line.contains("subprotocol chat.v2"), "{line}");
    });
}

#[test]
fn bad_headers_are_usage_errors() {
    timed!(LIMIT, {
        let out = wsbench(&["chat", "-H", "no colon here"], Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        let out = wsbench(&["chat", "--ping-interval", "0s"], Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    });
}

#[test]
fn the_original_python_chat_server_greets_and_broadcasts() {
    timed!(LIMIT, {
        let mut command = Command::new(python());
        command.arg(peer_script("chat_server.py"));
        let server = Server::from_command(command);
        let (mut proc, typist) = chat(&server.url("/"), &[]);
        expect_line(&proc.stderr, "connected to ws://", "connect", &proc);
        expect_line(&proc.stdout, "< Hello from server", "greeting", &proc);
        expect_line(&proc.stdout, &format!("< {JOINED}"), "join notice", &proc);
        typist.type_line("hello python");
        let line = expect_line(&proc.stdout, "hello python", "broadcast", &proc);
        assert!(line.starts_with("< client "), "{line}");
        // Its pongs (to our decimal ping payloads) keep the link alive.
        expect_line(&proc.stderr, "confirmed by pong", "pong", &proc);
        drop(typist);
        let status = proc.wait(Duration::from_secs(3)).expect("exits after EOF");
        assert!(status.success(), "{status:?}: {:?}", proc.stderr.all());
    });
}

#[test]
fn a_path_the_server_refuses_on_start_is_an_error_not_a_retry() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let out = wsbench(&["chat", "--url", &server.url("/nope")], WAIT);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("server answered HTTP 404"),
            "{}",
            text(&out.stderr)
        );
    });
}

#[test]
fn a_server_restart_close_1001_reconnects_without_a_typed_line() {
    timed!(LIMIT, {
        // #13: someone watching a room must see it come back by itself.
        let port = free_port();
        let mut server = Server::start_on(port, &[]);
        let (proc, _typist) = chat(&server.url("/chat"), &["--reconnect-max-delay", "1s"]);
        expect_line(&proc.stderr, "connected to ws://", "connect", &proc);
        expect_line(&proc.stdout, "< Hello from server", "greeting", &proc);
        // SIGTERM: the server closes every client with 1001, then exits.
        assert!(server.terminate(WAIT).success());
        let line = expect_line(&proc.stderr, "closed by server", "close", &proc);
        assert!(line.contains("code 1001"), "{line}");
        assert!(line.contains("reconnecting in 0.5 s"), "{line}");
        let _server = Server::start_on(port, &[]);
        expect_line(&proc.stderr, "connected to ws://", "reconnect", &proc);
        expect_line(
            &proc.stdout,
            "< Hello from server",
            "second greeting",
            &proc,
        );
        // The client goes before the server checks it was given back all.
        drop((_typist, proc));
    });
}

#[test]
fn a_restarting_close_1012_reconnects_at_once_with_backoff() {
    timed!(LIMIT, {
        // The first connection is closed with 1012; every later one is held.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, accepted) = unbounded();
        thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { return };
                let tx = tx.clone();
                thread::spawn(move || {
                    let mut stream = answer_handshake(stream, &[]);
                    let _ = tx.send(Instant::now());
                    if n == 0 {
                        let reason = b"restarting";
                        let mut close = vec![0x88, 2 + reason.len() as u8];
                        close.extend_from_slice(&1012u16.to_be_bytes());
                        close.extend_from_slice(reason);
                        stream.write_all(&close).unwrap();
                    }
                    let mut sink = [0u8; 4096];
                    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
                });
            }
        });
        let (proc, _typist) = chat(&format!("ws://{addr}/chat"), &[]);
        accepted.recv_timeout(WAIT).expect("the client connects");
        let line = expect_line(&proc.stderr, "closed by server", "close", &proc);
        assert!(
            line.contains("code 1012, reason \"restarting\"; reconnecting in 0.5 s"),
            "{line}"
        );
        let closed = Instant::now();
        accepted
            .recv_timeout(WAIT)
            .expect("the client reconnects with no line typed");
        let after = closed.elapsed();
        assert!(
            after < Duration::from_secs(3),
            "reconnected {after:?} after the close"
        );
    });
}

/// A tmux server on a socket of its own; killed on drop.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "tmux {args:?}: {}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

/// The direct child of `parent`, read from /proc.
fn child_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid ...`; comm may hold spaces, so split after ')'.
        let ppid: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (ppid == parent).then_some(pid)
    })
}

fn stty(tty: &str) -> String {
    let out = Command::new("stty")
        .args(["-a", "-F", tty])
        .output()
        .unwrap();
    text(&out.stdout)
}

/// Whether `stty -a` output has `flag` set (`icanon`, not `-icanon`).
fn has_flag(stty: &str, flag: &str) -> bool {
    stty.split([' ', ';', '\n']).any(|word| word == flag)
}

#[test]
fn sigterm_gives_the_terminal_back_as_it_was() {
    timed!(LIMIT, {
        // #13: rustyline's raw mode outlived a SIGTERM.
        if Command::new("tmux").arg("-V").output().is_err() {
            eprintln!("skipped: tmux is not installed (it gives chat a real terminal)");
            return;
        }
        let server = Server::start(&[]);
        let mut watching = watcher(&server);
        let dir = tempdir();
        let tmux = Tmux {
            socket: dir.join("tmux.sock"),
        };
        let modes = dir.join("stty.txt");
        // After chat exits, the same terminal reports its modes, then
        // tells the test through a tmux channel. The pane outlives its
        // script (remain-on-exit): else the session, the server and the
        // channel's signal could be gone before the test's `wait-for`
        // connects, and it would wait for ever (1 run in 12 beside the
        // chat_server floods).
        let script = format!(
            "{BIN} chat --url {}; stty -a > {}; tmux -S {} wait-for -S chat-done",
            server.url("/chat"),
            modes.display(),
            tmux.socket.display()
        );
        tmux.run(&[
            "new-session",
            "-d",
            "-x",
            "100",
            "-y",
            "30",
            &script,
            ";",
            "set-option",
            "-wg",
            "remain-on-exit",
            "on",
        ]);
        let tty = tmux.run(&["display-message", "-p", "#{pane_tty}"]);
        let shell: u32 = tmux
            .run(&["display-message", "-p", "#{pane_pid}"])
            .parse()
            .unwrap();
        assert_eq!(next_text(&mut watching), JOINED, "chat joins the room");
        let chat = child_of(shell).expect("chat runs under the pane's shell");
        // rustyline enters raw mode on its own thread: wait for it to show.
        let deadline = Instant::now() + WAIT;
        while has_flag(&stty(&tty), "icanon") {
            assert!(
                Instant::now() < deadline,
                "chat never put the terminal in raw mode"
            );
        }
        unsafe {
            libc::kill(chat as i32, libc::SIGTERM);
        }
        let mut done = Command::new("tmux");
        done.arg("-S")
            .arg(&tmux.socket)
            .args(["wait-for", "chat-done"]);
        let mut done = Proc::spawn(done);
        done.wait(WAIT)
            .expect("chat exits on SIGTERM and the pane runs stty");
        let after = std::fs::read_to_string(&modes).unwrap();
        for flag in ["icanon", "echo", "isig", "icrnl", "opost"] {
            assert!(has_flag(&after, flag), "-{flag} after SIGTERM:\n{after}");
        }
    });
}
