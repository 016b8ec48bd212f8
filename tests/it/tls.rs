//! `wss://` and HTTPS on the server (#15): third-party Python clients that
//! verify our certificate, non-TLS peers on the TLS port, a handshake that
//! stalls, and refusals on a full TLS server. Every server here is checked
//! on drop for leaks (connections, threads, descriptors), over HTTPS.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

const LIMIT: Duration = Duration::from_secs(90);

fn tls_server(extra: &[&str]) -> (Server, std::path::PathBuf) {
    let dir = tempdir();
    let (ca, cert, key) = make_certificates(&dir);
    let mut args = vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    (Server::start(&args), ca)
}

/// Connects raw TCP with timeouts, sends `bytes`, and reads until the
/// server closes; returns what came back and how long it took.
fn send_and_read_to_close(addr: &str, bytes: &[u8]) -> (Vec<u8>, Duration) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let start = Instant::now();
    tcp.write_all(bytes).unwrap();
    let mut back = Vec::new();
    // A reset after our unread bytes is a close too.
    let _ = tcp.read_to_end(&mut back);
    (back, start.elapsed())
}

#[test]
fn python_clients_speak_wss_and_https_to_every_endpoint() {
    timed!(LIMIT, {
        let (server, ca) = tls_server(&[]);
        let mut command = Command::new(python());
        command
            .arg(peer_script("tls_client.py"))
            .arg(&server.addr)
            .arg(&ca);
        let out = run_bounded(&mut command, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "stdout: {}\nstderr: {}\nserver stderr: {:?}",
            text(&out.stdout),
            text(&out.stderr),
            server.proc.stderr.all()
        );
        assert_eq!(text(&out.stdout).trim(), "ok");
        assert_eq!(server.metric("wsbench_handshake_failures_total"), 0);
    });
}

#[test]
fn self_signed_server_announces_wss_and_its_fingerprint() {
    timed!(LIMIT, {
        let server = Server::start(&["--tls-self-signed"]);
        assert!(server.tls.is_some(), "listening line says wss://");
        let line = server
            .proc
            .stderr
            .wait_for("SHA-256 fingerprint", Duration::from_secs(5))
            .expect("a fingerprint line");
        let hex = line.rsplit(' ').next().unwrap().trim();
        assert_eq!(hex.len(), 32 * 3 - 1, "{line}");
        assert!(server.http_get("/healthz").ends_with("ok"));
    });
}

#[test]
fn plain_http_and_garbage_to_the_tls_port_are_closed_and_others_served() {
    timed!(LIMIT, {
        let (server, _) = tls_server(&[]);
        let (back, _) = send_and_read_to_close(&server.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(!text(&back).contains("Hello, HTTP!"), "{back:?}");
        let garbage: Vec<u8> = (0..600u32).map(|i| (i * 131 % 251) as u8).collect();
        let (back, _) = send_and_read_to_close(&server.addr, &garbage);
        assert!(back.len() < 64, "at most an alert: {back:?}");
        // An empty connection is not a failure (a port probe).
        drop(TcpStream::connect(&server.addr).unwrap());
        server
            .proc
            .stderr
            .wait_for("not TLS (plain HTTP?", Duration::from_secs(5))
            .expect("one line for the HTTP request");
        assert!(server.http_get("/healthz").ends_with("ok"), "still serving");
        assert_eq!(server.metric("wsbench_handshake_failures_total"), 2);
    });
}

#[test]
fn a_client_stalling_mid_tls_handshake_is_freed_at_the_handshake_timeout() {
    timed!(LIMIT, {
        let (server, _) = tls_server(&["--handshake-timeout", "1s"]);
        // The first bytes of a ClientHello record, then nothing.
        let (back, took) =
            send_and_read_to_close(&server.addr, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
        assert!(back.is_empty(), "{back:?}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "closed after {took:?}"
        );
        server
            .proc
            .stderr
            .wait_for(
                "no TLS handshake within the handshake timeout",
                Duration::from_secs(5),
            )
            .expect("a log line");
        assert_eq!(server.metric("wsbench_handshake_failures_total"), 1);
    });
}

#[test]
fn a_full_tls_server_closes_refused_connections_unanswered() {
    timed!(LIMIT, {
        let (server, _) = tls_server(&["--max-connections", "1"]);
        // Holds the one slot: a TCP connection in its TLS handshake.
        let holder = TcpStream::connect(&server.addr).unwrap();
        holder
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // Until the server counts it, a second connection might be served.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (back, _) = send_and_read_to_close(&server.addr, &[0x16, 0x03, 0x01]);
            assert!(back.is_empty(), "refused without an answer: {back:?}");
            if server
                .proc
                .stderr
                .wait_for("closed unanswered", Duration::from_millis(200))
                .is_some()
            {
                break;
            }
            assert!(Instant::now() < deadline, "no refusal logged");
        }
        drop(holder);
        // Slot back, served again (the drop check needs it too).
        let deadline = Instant::now() + Duration::from_secs(5);
        while !server.http_get("/healthz").ends_with("ok") {
            assert!(Instant::now() < deadline, "not served after the slot freed");
        }
        assert!(server.metric("wsbench_connections_rejected_total") >= 1);
    });
}

type Wss = tungstenite::WebSocket<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>;

/// A wss:// client (trusting any certificate) with a 10 s read timeout.
fn wss(server: &Server, path: &str) -> Wss {
    let tcp = TcpStream::connect(&server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let session = rustls::ClientConnection::new(tls_client_config(), name).unwrap();
    let stream = rustls::StreamOwned::new(session, tcp);
    tungstenite::client(server.url(path), stream).unwrap().0
}

fn wss_text(ws: &mut Wss) -> String {
    loop {
        match ws.read().unwrap() {
            tungstenite::Message::Text(t) => return t.to_string(),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => {}
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// The chat writer pool writes to TLS peers without waiting: bytes the
/// session accepts are progress, records it still holds are flushed when
/// the socket has room, and a member that never reads is dropped with
/// 1008 while the others keep up (the `chat_server` test, over wss://).
#[test]
fn a_wss_chat_member_that_never_reads_is_dropped_and_others_keep_up() {
    use tungstenite::Message;
    timed!(LIMIT, {
        let server = Server::start(&[
            "--tls-self-signed",
            "--max-queue",
            "64",
            "--ping-timeout",
            "10s",
        ]);
        let join = |server: &Server| {
            let mut ws = wss(server, "/chat/flood");
            assert_eq!(wss_text(&mut ws), "Hello from server");
            assert_eq!(wss_text(&mut ws), "Hey all, a new client has joined us");
            ws
        };
        let mut stuck = join(&server);
        let mut reader = join(&server);
        let mut sender = join(&server);
        assert_eq!(wss_text(&mut reader), "Hey all, a new client has joined us");
        let payload = vec![7u8; 100_000];
        let (progress, seen) = crossbeam_channel::unbounded();
        let reading = std::thread::spawn(move || {
            let mut n = 0;
            while n < 400 {
                match reader.read().unwrap() {
                    Message::Binary(bytes) => {
                        assert_eq!(bytes.len(), 100_000);
                        n += 1;
                        let _ = progress.send(n);
                    }
                    Message::Text(_) | Message::Ping(_) | Message::Pong(_) => {}
                    other => panic!("reader got {other:?}"),
                }
            }
        });
        let mut received = 0;
        for sent in 0..400 {
            while sent - received > 40 {
                received = seen
                    .recv_timeout(Duration::from_secs(10))
                    .expect("the reader progresses");
            }
            sender.send(Message::binary(payload.clone())).unwrap();
        }
        reading.join().expect("the reading client got everything");
        assert_eq!(server.metric("wsbench_slow_clients_dropped_total"), 1);
        let code = loop {
            match stuck.read() {
                Ok(Message::Close(Some(frame))) => break u16::from(frame.code),
                Ok(_) => continue,
                Err(e) => panic!("the stuck client saw {e} before a close frame"),
            }
        };
        assert_eq!(code, 1008);
        drop((stuck, sender));
    });
}
