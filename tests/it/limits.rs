//! The server under bad input and limits, from outside with raw sockets
//! for what no library sends (#6). Every test ends by checking that a
//! fresh client is still served correctly.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;
use tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(60);
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Asserts the server still answers a new client on `/`.
fn still_serves(server: &Server) {
    let mut ws = connect(&server.url("/"));
    assert_eq!(round_trip(&mut ws, Message::text("ping")), "Pong!");
    assert_eq!(
        round_trip(&mut ws, Message::binary(vec![0, 255])),
        "Received: 2, (2,), 255, 0, 127.5, 127.5"
    );
}

/// One client frame. `mask: None` sends it unmasked (a protocol error).
fn frame(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let first = (u8::from(fin) << 7) | (rsv << 4) | opcode;
    let mut out = frame_header(first, mask.is_some(), payload.len());
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

const MASK: Option<[u8; 4]> = Some([1, 2, 3, 4]);

/// Reads server frames until a close; returns its code (None: the
/// connection ended without one).
fn close_code(s: &mut TcpStream) -> Option<u16> {
    loop {
        let mut head = [0u8; 2];
        s.read_exact(&mut head).ok()?;
        let mut len = (head[1] & 0x7f) as u64;
        if len == 126 {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).ok()?;
            len = u16::from_be_bytes(b) as u64;
        } else if len == 127 {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).ok()?;
            len = u64::from_be_bytes(b);
        }
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload).ok()?;
        if head[0] & 0x0f == 0x8 {
            return payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
        }
    }
}

fn expect_close(server: &Server, bytes: &[u8], want: u16, what: &str) {
    let mut s = raw_ws(&server.addr, "/echo");
    let _ = s.write_all(bytes);
    assert_eq!(close_code(&mut s), Some(want), "{what}");
}

#[test]
fn message_size_limit_is_exact_and_over_it_closes_with_1009() {
    timed!(LIMIT, {
        let server = Server::start(&["--max-message-size", "1000"]);
        let mut ws = connect(&server.url("/echo"));
        let exact = vec![5u8; 1000];
        ws.send(Message::binary(exact.clone())).unwrap();
        assert_eq!(ws.read().unwrap(), Message::binary(exact));
        expect_close(
            &server,
            &frame(true, 0, 2, MASK, &[5u8; 1001]),
            1009,
            "one byte over",
        );
        // Fragments that add up to one byte over.
        let mut parts = frame(false, 0, 2, MASK, &[1u8; 600]);
        parts.extend(frame(true, 0, 0, MASK, &[1u8; 401]));
        expect_close(&server, &parts, 1009, "fragments over the limit");
        still_serves(&server);
    });
}

#[test]
fn a_frame_announcing_2_to_the_62_bytes_is_refused_at_once() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let mut s = raw_ws(&server.addr, "/");
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 62).to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        s.write_all(&header).unwrap();
        let started = Instant::now();
        let code = close_code(&mut s);
        assert!(matches!(code, Some(1009) | Some(1002)), "{code:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "refused from the header alone"
        );
        still_serves(&server);
    });
}

#[test]
fn invalid_utf8_closes_with_1007_also_across_fragments() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        expect_close(
            &server,
            &frame(true, 0, 1, MASK, b"ok \xff\xfe"),
            1007,
            "invalid text",
        );
        // "é" is C3 A9: split it, then corrupt the continuation byte.
        let mut split = frame(false, 0, 1, MASK, b"caf\xc3");
        split.extend(frame(true, 0, 0, MASK, b"\x28"));
        expect_close(&server, &split, 1007, "invalid across fragments");
        // A valid split is fine.
        let mut s = raw_ws(&server.addr, "/echo");
        s.write_all(&frame(false, 0, 1, MASK, b"caf\xc3")).unwrap();
        s.write_all(&frame(true, 0, 0, MASK, b"\xa9")).unwrap();
        let mut reply = [0u8; 7];
        s.read_exact(&mut reply).unwrap();
        assert_eq!(&reply[2..], "café".as_bytes());
        still_serves(&server);
    });
}

#[test]
fn protocol_errors_close_with_1002() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (frame(true, 0, 1, None, b"hello"), "unmasked client frame"),
            (frame(true, 4, 1, MASK, b"hello"), "reserved bit set"),
            (frame(true, 0, 3, MASK, b"hello"), "unknown data opcode"),
            (frame(true, 0, 0xb, MASK, b""), "unknown control opcode"),
            (frame(false, 0, 9, MASK, b"p"), "fragmented ping"),
            (frame(true, 0, 9, MASK, &[0u8; 126]), "ping over 125 bytes"),
            (
                frame(true, 0, 0, MASK, b"stray"),
                "continuation with nothing to continue",
            ),
            (
                [
                    frame(false, 0, 1, MASK, b"a"),
                    frame(true, 0, 1, MASK, b"b"),
                ]
                .concat(),
                "new message inside a fragmented one",
            ),
        ];
        for (bytes, what) in cases {
            expect_close(&server, &bytes, 1002, what);
        }
        still_serves(&server);
    });
}

#[test]
fn bad_handshakes_get_400_or_426() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let no_key = http_request(
            &server.addr,
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
        );
        assert!(no_key.starts_with("HTTP/1.1 400 "), "{no_key}");
        let old = http_request(
            &server.addr,
            &format!(
                "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 8\r\n\r\n"
            ),
        );
        assert!(old.starts_with("HTTP/1.1 426 "), "{old}");
        assert!(old.contains("Sec-WebSocket-Version: 13"), "{old}");
        let garbage = http_request(&server.addr, "\u{1}\u{2}NOT HTTP AT ALL\r\n\r\n");
        assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
        assert!(server.metric("wsbench_handshake_failures_total") >= 3);
        still_serves(&server);
    });
}

#[test]
fn past_max_connections_new_ones_get_503_and_slots_come_back() {
    timed!(LIMIT, {
        let server = Server::start(&["--max-connections", "5"]);
        let mut held: Vec<Ws> = (0..5).map(|_| connect(&server.url("/"))).collect();
        let refused = http_request(
            &server.addr,
            &format!(
                "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ),
        );
        assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
        let err = tungstenite::connect(server.url("/")).unwrap_err();
        assert!(err.to_string().contains("503"), "{err}");
        // Existing connections are unaffected.
        assert_eq!(round_trip(&mut held[0], Message::text("ping")), "Pong!");
        let mut gone = held.pop().unwrap();
        gone.close(None).unwrap();
        while gone.read().is_ok() {}
        // The freed slot is usable (the metrics scrape itself takes one).
        let mut again = connect(&server.url("/"));
        assert_eq!(round_trip(&mut again, Message::text("ping")), "Pong!");
        drop(again);
        drop(held);
        // Slots free as their threads see the closes. A scrape that gets
        // an answer proves nothing: at the limit the refuser answers
        // /metrics itself, with every slot still taken.
        server.assert_released();
        let rejected = server.metric("wsbench_connections_rejected_total");
        assert!(rejected >= 2, "rejections counted: {rejected}");
        still_serves(&server);
    });
}

#[test]
fn silent_and_slowloris_handshakes_are_dropped_at_the_timeout_not_before() {
    timed!(LIMIT, {
        let server = Server::start(&["--handshake-timeout", "1s"]);
        let started = Instant::now();
        let mut silent = TcpStream::connect(&server.addr).unwrap();
        silent
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut slow = TcpStream::connect(&server.addr).unwrap();
        slow.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        // One byte every 200 ms: each byte would reset a naive idle timer.
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n";
        let mut dropped_after = None;
        for byte in request.iter() {
            if slow.write_all(&[*byte]).is_err() {
                dropped_after = Some(started.elapsed());
                break;
            }
            let mut buf = [0u8; 64];
            match slow.read(&mut buf) {
                Ok(0) => {
                    dropped_after = Some(started.elapsed());
                    break;
                }
                Ok(_) => panic!("the server answered a partial head"),
                Err(_) => {} // the 200 ms pacing: nothing to read yet
            }
        }
        let dropped_after = dropped_after.expect("the slowloris client was dropped");
        assert!(
            dropped_after >= Duration::from_millis(900),
            "dropped early: {dropped_after:?}"
        );
        assert!(
            dropped_after < Duration::from_secs(3),
            "dropped late: {dropped_after:?}"
        );
        let mut buf = [0u8; 16];
        assert_eq!(
            silent.read(&mut buf).unwrap_or(0),
            0,
            "the silent client is dropped too"
        );
        assert!(started.elapsed() >= Duration::from_millis(900));
        // Their threads are gone: only the scrape is open.
        assert_eq!(server.metric("wsbench_connections_current"), 1);
        still_serves(&server);
    });
}

#[test]
fn a_peer_that_never_answers_pings_is_closed_and_counted() {
    timed!(LIMIT, {
        let server = Server::start(&["--ping-interval", "300ms", "--ping-timeout", "500ms"]);
        let mut mute = raw_ws(&server.addr, "/");
        let started = Instant::now();
        // Read what the server sends (pings, then a close) but never answer.
        let mut pings = 0;
        let ended = loop {
            let mut head = [0u8; 2];
            if mute.read_exact(&mut head).is_err() {
                break started.elapsed();
            }
            let mut payload = vec![0u8; (head[1] & 0x7f) as usize];
            mute.read_exact(&mut payload).unwrap();
            match head[0] & 0x0f {
                0x9 => pings += 1,
                0x8 => break started.elapsed(),
                _ => {}
            }
        };
        assert_eq!(pings, 1, "one ping, then the timeout");
        assert!(
            ended >= Duration::from_millis(750),
            "closed early: {ended:?}"
        );
        assert!(ended < Duration::from_secs(3), "closed late: {ended:?}");
        assert_eq!(server.metric("wsbench_ping_timeouts_total"), 1);
        still_serves(&server);
    });
}

#[test]
fn clients_that_answer_or_keep_sending_stay_connected() {
    timed!(LIMIT, {
        let server = Server::start(&["--ping-interval", "200ms", "--ping-timeout", "300ms"]);
        // tungstenite answers pings whenever it reads: this client reads
        // continuously on its own thread for 2 s and never sends data.
        let mut polite = connect(&server.url("/"));
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = polite.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        }
        let reading = std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(2);
            let mut pings = 0;
            while Instant::now() < until {
                match polite.read() {
                    Ok(Message::Ping(_)) => pings += 1,
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(tungstenite::Error::Io(e))
                        if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("the answering client was dropped: {e}"),
                }
            }
            (polite, pings)
        });
        // This one never reads (so never pongs) but trickles one large
        // message: bytes arriving count as liveness.
        let mut busy = raw_ws(&server.addr, "/echo");
        let payload = vec![3u8; 60_000];
        let bytes = frame(true, 0, 2, MASK, &payload);
        let started = Instant::now();
        for chunk in bytes.chunks(bytes.len() / 20 + 1) {
            busy.write_all(chunk).unwrap();
            // Paced writing is the point of the test: 1.5 s of trickle.
            std::thread::sleep(Duration::from_millis(75));
        }
        assert!(started.elapsed() > Duration::from_millis(1400));
        // The echo arrives whole after the pings the server sent meanwhile.
        let mut echoed = 0;
        while echoed == 0 {
            let mut head = [0u8; 4];
            busy.read_exact(&mut head[..2]).unwrap();
            let len = match head[1] & 0x7f {
                126 => {
                    busy.read_exact(&mut head[2..4]).unwrap();
                    u16::from_be_bytes([head[2], head[3]]) as usize
                }
                n => n as usize,
            };
            let mut body = vec![0u8; len];
            busy.read_exact(&mut body).unwrap();
            assert_ne!(head[0] & 0x0f, 0x8, "the busy client was closed");
            if head[0] & 0x0f == 0x2 {
                echoed = len;
            }
        }
        assert_eq!(echoed, 60_000);
        // Done: close properly rather than go silent and be timed out.
        busy.write_all(&frame(true, 0, 8, MASK, &1000u16.to_be_bytes()))
            .unwrap();
        assert_eq!(close_code(&mut busy), Some(1000));
        let (mut polite, pings) = reading.join().expect("the answering client stayed");
        assert!(pings >= 4, "it was pinged {pings} times");
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = polite.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        }
        assert_eq!(
            round_trip(&mut polite, Message::text("still")),
            "Data still received successfully."
        );
        assert_eq!(server.metric("wsbench_ping_timeouts_total"), 0);
    });
}
