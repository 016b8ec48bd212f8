//! Plain HTTP on the WebSocket port, and `/metrics`, from outside: raw
//! sockets for what no client library sends, Python `requests` for
//! keep-alive, prometheus_client for the exposition format (#4).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(60);

fn raw(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads one response (head + Content-Length body) from `s`.
fn read_response(s: &mut TcpStream) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "connection closed mid-head: {buf:?}"
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let status = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (status, head, String::from_utf8(body).unwrap())
}

fn closed(s: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(s.read(&mut byte), Ok(0) | Err(_))
}

#[test]
fn every_route_of_the_table_answers_as_specified() {
    timed!(LIMIT, {
        let server = Server::start(&["--max-message-size", "1KiB"]);
        let mut s = raw(&server.addr);
        let mut ask = |request: &str| {
            s.write_all(request.as_bytes()).unwrap();
            read_response(&mut s)
        };
        let (status, head, body) = ask("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((status, body.as_str()), (200, "Hello, HTTP!"));
        assert!(head.contains("Content-Type: text/plain"), "{head}");
        let (status, _, body) =
            ask("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\nPing 9!");
        assert_eq!((status, body.as_str()), (200, "Pong!"));
        let (status, _, body) = ask("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!(
            (status, body.as_str()),
            (200, "Data abc received successfully.")
        );
        let (status, _, body) = ask("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((status, body.as_str()), (200, "ok"));
        for path in ["/echo", "/hello", "/image", "/chat", "/chat/red"] {
            let (status, head, _) = ask(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
            assert_eq!(status, 426, "{path}");
            assert!(head.contains("Upgrade: websocket"), "{head}");
        }
        let (status, _, _) = ask("GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status, 404);
        // All of that on one kept-alive connection.
        assert_eq!(
            server.metric("wsbench_connections_total"),
            2,
            "one for the requests, one for /metrics"
        );

        let mut big = raw(&server.addr);
        big.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut big).0, 413);
        let mut chunked = raw(&server.addr);
        chunked
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut chunked).0, 411);
        let mut bad = raw(&server.addr);
        bad.write_all(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut bad).0, 400);
        assert!(closed(&mut bad), "a malformed head closes the connection");
    });
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let mut s = raw(&server.addr);
        s.write_all(
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\
              POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nping\
              POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi\
              GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let bodies: Vec<String> = (0..4).map(|_| read_response(&mut s).2).collect();
        assert_eq!(
            bodies,
            [
                "Hello, HTTP!",
                "Pong!",
                "Data hi received successfully.",
                "ok"
            ]
        );
        assert!(closed(&mut s), "Connection: close is honoured");
    });
}

#[test]
fn http_1_0_closes_unless_asked_to_keep_alive() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let mut s = raw(&server.addr);
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut s).2, "Hello, HTTP!");
        assert!(closed(&mut s));
        let mut s = raw(&server.addr);
        s.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let (_, head, _) = read_response(&mut s);
        assert!(head.contains("Connection: keep-alive"), "{head}");
        s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut s).2, "ok");
    });
}

#[test]
fn a_requests_session_uses_one_connection_for_four_requests() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let before = server.metric("wsbench_connections_total");
        let out = run_bounded(
            Command::new(python())
                .arg(peer_script("http_client.py"))
                .args(["session", &format!("http://{}", server.addr)]),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        // The metric scrape itself is a connection; the session is one more.
        assert_eq!(server.metric("wsbench_connections_total") - before, 2);
        assert!(server.metric("wsbench_http_requests_total") >= 4);
    });
}

#[test]
fn metrics_parse_as_prometheus_text_and_follow_the_traffic() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let scrape = || {
            let out = run_bounded(
                Command::new(python())
                    .arg(peer_script("http_client.py"))
                    .args(["metrics", &format!("http://{}", server.addr)]),
                Duration::from_secs(30),
            );
            assert!(out.status.success(), "{}", text(&out.stderr));
            text(&out.stdout)
        };
        let value = |text: &str, name: &str| -> f64 {
            text.lines()
                .find_map(|l| {
                    let mut parts = l.split_whitespace();
                    let _kind = parts.next()?;
                    (parts.next()? == name).then(|| parts.next().unwrap().parse().unwrap())
                })
                .unwrap_or_else(|| panic!("{name} not in {text}"))
        };
        let first = scrape();
        for name in [
            "connections_current",
            "connections_total",
            "connections_rejected_total",
            "handshake_failures_total",
            "messages_received_total",
            "messages_sent_total",
            "bytes_received_total",
            "bytes_sent_total",
            "stats_jobs_pending",
            "stats_jobs_completed_total",
            "slow_clients_dropped_total",
            "http_requests_total",
        ] {
            value(&first, &format!("wsbench_{name}"));
        }
        assert!(
            first.contains("gauge wsbench_connections_current "),
            "{first}"
        );
        assert!(
            first.contains("counter wsbench_connections_total "),
            "{first}"
        );
        let mut ws = connect(&server.url("/"));
        assert_eq!(round_trip(&mut ws, Message::text("ping")), "Pong!");
        let open = scrape();
        assert_eq!(
            value(&open, "wsbench_connections_current"),
            2.0,
            "the websocket and the scrape"
        );
        assert_eq!(value(&open, "wsbench_messages_received_total"), 1.0);
        assert_eq!(value(&open, "wsbench_bytes_received_total"), 4.0);
        assert_eq!(value(&open, "wsbench_bytes_sent_total"), 5.0);
        ws.close(None).unwrap();
        while ws.read().is_ok() {}
        let after = scrape();
        assert_eq!(
            value(&after, "wsbench_connections_current"),
            1.0,
            "only the scrape"
        );
        assert!(
            value(&after, "wsbench_connections_total") > value(&open, "wsbench_connections_total")
        );
    });
}
