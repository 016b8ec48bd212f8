//! Every connection gives back what it took, however it ends, and the
//! server never falls over for lack of a resource (#12). Each test's
//! server checks on drop that `connections_current` is back to 0 and its
//! threads back to their baseline (`Server::assert_released`).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use tungstenite::Message;
use tungstenite::stream::MaybeTlsStream;

const LIMIT: Duration = Duration::from_secs(120);
const UPGRADE: &str = "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn join(server: &Server, path: &str) -> Ws {
    let mut ws = connect(&server.url(path));
    assert_eq!(next_text(&mut ws), "Hello from server");
    assert_eq!(next_text(&mut ws), "Hey all, a new client has joined us");
    ws
}

/// After a closing handshake, how long until the server closes its end.
fn wait_for_fin(ws: &mut Ws) -> Duration {
    let started = Instant::now();
    let MaybeTlsStream::Plain(stream) = ws.get_mut() else {
        unreachable!("plain ws://")
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sink = [0u8; 256];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return started.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return started.elapsed(),
            Err(e) => panic!("the server kept the connection open after the close: {e}"),
        }
    }
}

#[test]
fn two_thousand_chat_sessions_leave_nothing_behind_and_close_promptly() {
    timed_alone!(LIMIT, {
        let server = Server::start(&[]);
        let mut slowest = Duration::ZERO;
        for i in 0..2000 {
            let mut ws = join(&server, "/chat/churn");
            match i % 3 {
                // A close frame: answered, then the server closes TCP.
                0 => {
                    ws.close(None).unwrap();
                    loop {
                        match ws.read() {
                            Ok(_) => {}
                            Err(tungstenite::Error::ConnectionClosed) => break,
                            Err(e) => panic!("session {i}: {e}"),
                        }
                    }
                    slowest = slowest.max(wait_for_fin(&mut ws));
                }
                // `stop`: closed by the server with 1000.
                1 => {
                    ws.send(Message::text("stop")).unwrap();
                    let code = loop {
                        match ws.read() {
                            Ok(Message::Close(Some(frame))) => break u16::from(frame.code),
                            Ok(_) => {}
                            Err(e) => panic!("session {i}: no close frame: {e}"),
                        }
                    };
                    assert_eq!(code, 1000, "session {i}");
                    let _ = ws.flush();
                    slowest = slowest.max(wait_for_fin(&mut ws));
                }
                // Gone without a word: the socket just closes.
                _ => drop(ws),
            }
        }
        assert!(
            slowest < Duration::from_secs(1),
            "a session took {slowest:?} to be closed by the server"
        );
        server.assert_released();
    });
}

#[test]
fn sigterm_with_chat_members_exits_at_once_when_they_answer() {
    timed!(LIMIT, {
        let mut server = Server::start(&[]);
        // Members that read (so answer the 1001) on threads of their own.
        let members: Vec<_> = (0..5)
            .map(|_| {
                let mut ws = join(&server, "/chat");
                thread::spawn(move || {
                    loop {
                        match ws.read() {
                            Ok(Message::Close(frame)) => {
                                break frame.map(|f| u16::from(f.code));
                            }
                            Ok(_) => {}
                            Err(_) => break None,
                        }
                    }
                })
            })
            .collect();
        let started = Instant::now();
        let status = server.terminate(Duration::from_secs(5));
        let took = started.elapsed();
        assert!(status.success(), "{status:?}");
        assert!(took < Duration::from_secs(1), "shutdown took {took:?}");
        for member in members {
            assert_eq!(member.join().unwrap(), Some(1001));
        }
        let log = server.proc.stderr.all().join("\n");
        assert!(!log.contains("did not answer the close"), "{log}");
    });
}

#[test]
fn a_flooded_member_that_never_reads_is_dropped_long_before_the_ping_timeout() {
    timed!(LIMIT, {
        // 20 s of --ping-timeout: a blocking write to the stuck member
        // would hold everything up for that long, twice.
        let server = Server::start(&["--max-queue", "64", "--ping-timeout", "20s"]);
        let stuck = join(&server, "/chat/flood");
        let mut sender = join(&server, "/chat/flood");
        let started = Instant::now();
        let payload = vec![7u8; 64 * 1024];
        // Far past the stuck member's socket buffers and its queue of 64.
        for _ in 0..400 {
            sender.send(Message::binary(payload.clone())).unwrap();
        }
        // The drop is logged before the member's slot is freed.
        let line = server
            .proc
            .stderr
            .wait_for("closed with 1008", Duration::from_secs(15));
        let took = started.elapsed();
        assert!(line.is_some(), "{:?}", server.proc.stderr.all());
        assert!(took < Duration::from_secs(10), "dropped after {took:?}");
        assert_eq!(server.metric("wsbench_slow_clients_dropped_total"), 1);
        // The sender and the scrape are left.
        server.wait_metric("wsbench_connections_current", Duration::from_secs(5), |n| {
            n == 1 + 1
        });
        drop(stuck);
        drop(sender);
    });
}

/// Reads a refused connection to its end: the status line, or the error
/// that cut it (a reset is the failure this guards against).
fn read_to_end(mut stream: TcpStream) -> Result<String, std::io::Error> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut all = Vec::new();
    stream.read_to_end(&mut all)?;
    Ok(String::from_utf8_lossy(&all).into_owned())
}

#[test]
fn past_capacity_every_refusal_is_a_readable_503_and_metrics_still_answer() {
    timed!(LIMIT, {
        // 100 descriptors: the server works out a capacity well below that.
        let mut command = Command::new(BIN);
        command
            .args(["server", "--port", "0"])
            .env("RUST_LOG", "info");
        // SAFETY: setrlimit is async-signal-safe and touches only the child.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 100,
                    rlim_max: 100,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let server = Server::start_command(command);
        let warning = server
            .proc
            .stderr
            .wait_for("lowered to", Duration::from_secs(5))
            .expect("a warning that --max-connections was lowered");
        assert!(warning.contains("limited by open files"), "{warning}");
        let capacity = server.metric("wsbench_connections_capacity");
        assert!((10..100).contains(&capacity), "capacity {capacity}");

        let mut held = Vec::new();
        let mut refused = 0;
        for _ in 0..capacity + 40 {
            let mut s = TcpStream::connect(&server.addr).unwrap();
            s.write_all(UPGRADE.as_bytes()).unwrap();
            let mut head = [0u8; 12];
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.read_exact(&mut head).unwrap();
            match &head {
                b"HTTP/1.1 101" => held.push(s),
                b"HTTP/1.1 503" => {
                    let rest = read_to_end(s).expect("a refusal read to its end, no reset");
                    assert!(rest.contains("Retry-After: 1"), "{rest}");
                    refused += 1;
                }
                other => panic!("unexpected {}", String::from_utf8_lossy(other)),
            }
        }
        // The scrape itself would take a slot if the server had one.
        assert!(held.len() as u64 >= capacity - 1, "held {}", held.len());
        assert!(refused >= 40, "refused {refused}");
        // Full, yet observable.
        let metrics = server.http_get("/metrics");
        assert!(metrics.starts_with("HTTP/1.1 200 "), "{metrics}");
        let health = server.http_get("/healthz");
        assert!(
            health.starts_with("HTTP/1.1 200 ") && health.ends_with("ok"),
            "{health}"
        );
        assert!(server.metric("wsbench_connections_rejected_total") >= 40);
        // Once they go, it serves as before.
        drop(held);
        server.assert_released();
        let mut ws = connect(&server.url("/echo"));
        assert_eq!(round_trip(&mut ws, Message::text("back")), "back");
    });
}

/// The server's resident memory, in KiB.
fn rss_kib(server: &Server) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", server.proc.child.id()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// #17: what an idle WebSocket connection costs the server, as `make
/// compare` measures it (connections opened, one round trip each, then
/// held): 23.4 KiB of RSS while the writer half carried a 4 KiB read
/// buffer that tungstenite allocates and nothing ever read into; 19.4 KiB
/// without it (in this test 23.7 and 19.7–19.9: the bound sits halfway).
/// Most of the rest is the thread's stack.
#[test]
fn an_idle_websocket_costs_the_server_under_22_kib() {
    timed_alone!(LIMIT, {
        wsbench::process::raise_open_files();
        let server = Server::start(&[]);
        let before = rss_kib(&server);
        let count = 1000;
        let mut held = Vec::with_capacity(count);
        for _ in 0..count {
            held.push(connect(&server.url("/echo")));
        }
        for (i, ws) in held.iter_mut().enumerate() {
            let text = format!("Ping {i}!");
            assert_eq!(round_trip(ws, Message::text(text.clone())), text);
        }
        let current = server.metric("wsbench_connections_current");
        assert_eq!(
            current,
            count as u64 + 1,
            "every connection held, and the scrape"
        );
        let per_connection = rss_kib(&server).saturating_sub(before) as f64 / count as f64;
        assert!(
            per_connection < 22.0,
            "{per_connection:.1} KiB of RSS per idle connection"
        );
        drop(held);
        server.assert_released();
    });
}
