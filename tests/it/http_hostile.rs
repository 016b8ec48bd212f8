//! The plain-HTTP side against hostile and broken clients (#13): memory
//! follows bytes that arrived, writes and idle connections time out, and
//! heads the RFCs call invalid are refused with their status, readably.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;
use tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(60);

fn rss_kib(server: &Server) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", server.proc.child.id()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Sends `request` and reads the response to its end; a reset is an error.
fn exchange(addr: &str, request: &[u8]) -> Result<String, std::io::Error> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request)?;
    let mut all = Vec::new();
    s.read_to_end(&mut all)?;
    Ok(String::from_utf8_lossy(&all).into_owned())
}

fn still_serves(server: &Server) {
    let mut ws = connect(&server.url("/echo"));
    assert_eq!(round_trip(&mut ws, Message::text("fine")), "fine");
}

#[test]
fn announced_bodies_cost_nothing_until_their_bytes_arrive() {
    timed!(LIMIT, {
        let server = Server::start(&["--handshake-timeout", "10s"]);
        let before = rss_kib(&server);
        let clients: Vec<TcpStream> = (0..64)
            .map(|_| {
                let mut s = TcpStream::connect(&server.addr).unwrap();
                s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 16777216\r\n\r\nP")
                    .unwrap();
                s
            })
            .collect();
        // Every head is read (the server counts the requests) before RSS
        // is looked at: that is when a body sized by its claim would be
        // allocated.
        server.wait_metric(
            "wsbench_http_requests_total",
            Duration::from_secs(10),
            // The 64 heads, and the scrape asking.
            |n| n > 64,
        );
        let grown_mib = rss_kib(&server).saturating_sub(before) / 1024;
        // 64 announced 16 MiB bodies would be 1 GiB.
        assert!(
            grown_mib < 48,
            "RSS grew {grown_mib} MiB for 64 bytes of bodies"
        );
        drop(clients);
        still_serves(&server);
    });
}

#[test]
fn a_pipelining_client_that_never_reads_is_freed_after_the_write_timeout() {
    timed!(LIMIT, {
        let server = Server::start(&["--max-connections", "20", "--ping-timeout", "1s"]);
        let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(20_000);
        let started = Instant::now();
        let greedy: Vec<TcpStream> = (0..5)
            .map(|_| {
                let mut s = TcpStream::connect(&server.addr).unwrap();
                // The server stops reading once its replies back up, so
                // our write stops too: what got through is enough.
                s.set_write_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let _ = s.write_all(&request);
                s
            })
            .collect();
        // They never read; the server gives up on each within the write
        // timeout of its last progress, and says so before freeing its slot.
        for n in 0..5 {
            let line = server.proc.stderr.wait_for(
                "response not taken within --ping-timeout",
                Duration::from_secs(15),
            );
            assert!(
                line.is_some(),
                "{n} of 5 non-reading clients freed {:?} in",
                started.elapsed()
            );
        }
        server.wait_metric("wsbench_connections_current", Duration::from_secs(5), |n| {
            n == 1
        });
        assert!(started.elapsed() < Duration::from_secs(8));
        still_serves(&server);
        drop(greedy);
    });
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    timed!(LIMIT, {
        let server = Server::start(&["--idle-timeout", "1s"]);
        let mut s = TcpStream::connect(&server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap();
        assert!(
            buf[..n].ends_with(b"ok"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        let idle = Instant::now();
        assert_eq!(s.read(&mut buf).unwrap_or(0), 0, "closed, not answered");
        let after = idle.elapsed();
        assert!(
            after >= Duration::from_millis(900),
            "closed early: {after:?}"
        );
        assert!(after < Duration::from_secs(3), "closed late: {after:?}");
    });
}

#[test]
fn a_trickled_second_request_gets_the_handshake_timeout_from_its_first_byte() {
    timed!(LIMIT, {
        let server = Server::start(&["--handshake-timeout", "1s", "--idle-timeout", "30s"]);
        let mut s = TcpStream::connect(&server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        let mut first = Vec::new();
        while !first.ends_with(b"ok") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "closed before answering");
            first.extend_from_slice(&buf[..n]);
        }
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        // One byte every 200 ms; the read timeout paces it.
        let started = Instant::now();
        let closed_after = 'trickle: {
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n" {
                if s.write_all(&[*byte]).is_err() {
                    break 'trickle started.elapsed();
                }
                match s.read(&mut buf) {
                    Ok(0) => break 'trickle started.elapsed(),
                    Ok(_) => panic!("a partial head was answered"),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => break 'trickle started.elapsed(),
                }
            }
            panic!("the trickled head was never cut off");
        };
        assert!(
            closed_after >= Duration::from_millis(900),
            "{closed_after:?}"
        );
        assert!(closed_after < Duration::from_secs(3), "{closed_after:?}");
    });
}

#[test]
fn invalid_heads_are_refused_with_their_status_and_read_whole() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let upgrade = |key: &str, host: bool| {
            format!(
                "GET /echo HTTP/1.1\r\n{}Upgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
                if host { "Host: x\r\n" } else { "" }
            )
        };
        let many_headers = format!(
            "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
            (0..100)
                .map(|i| format!("X-H{i}: v\r\n"))
                .collect::<String>()
        );
        let cases: Vec<(String, u16, &str)> = vec![
            (upgrade("abc", true), 400, "a 3-byte key"),
            (upgrade("!!!!!!!!!!!!!!!!!!!!!!==", true), 400, "a key not base64"),
            (
                upgrade("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", true),
                400,
                "a key of 32 bytes",
            ),
            (upgrade("dGhlIHNhbXBsZSBub25jZQ==", false), 400, "an upgrade without Host"),
            ("GET / HTTP/1.1\r\n\r\n".into(), 400, "HTTP/1.1 without Host"),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(),
                400,
                "two Host headers",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\npingGET / HTTP/1.1\r\nHost: x\r\n\r\n".into(),
                400,
                "two different Content-Length values",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nping".into(),
                400,
                "Content-Length: +4",
            ),
            (many_headers, 431, "100 header fields"),
        ];
        for (request, status, what) in cases {
            let response = exchange(&server.addr, request.as_bytes())
                .unwrap_or_else(|e| panic!("{what}: the answer was lost: {e}"));
            assert!(
                response.starts_with(&format!("HTTP/1.1 {status} ")),
                "{what}: {response}"
            );
            // One answer, then the connection is closed: nothing read past
            // a head in doubt is taken as a request.
            assert_eq!(
                response.matches("\r\nContent-Type: ").count(),
                1,
                "{what}: {response}"
            );
        }
        // HTTP/1.0 needs no Host; the same Content-Length twice is one value.
        let ok = exchange(&server.addr, b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 "), "{ok}");
        let ok = exchange(
            &server.addr,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\nConnection: close\r\n\r\nping",
        )
        .unwrap();
        assert!(
            ok.starts_with("HTTP/1.1 200 ") && ok.ends_with("Pong!"),
            "{ok}"
        );
        still_serves(&server);
    });
}
