//! The asyncio server of `make compare` (compare/python/server.py, #8)
//! against our client: its replies must pass `wsbench bench --verify` and
//! equal our numpy-exact statistics text, its fast reply must be the bare
//! acknowledgement, its text rule and 404 must
//! match ours, and SIGTERM must end it with status 0. Runs from the test
//! venv (`make test`), which holds the same websockets and numpy.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use tungstenite::Message;
use wsbench::stats::{ImageStats, random_image};

const LIMIT: Duration = Duration::from_secs(90);

fn python_server(args: &[&str]) -> Server {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("compare/python/server.py");
    let mut command = Command::new(python());
    command.arg(script).args(["--port", "0"]).args(args);
    Server::from_command(command)
}

fn bench(url: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["bench", "--url", url, "--mode", "serial", "--count", "5"];
    args.extend_from_slice(&["--timeout", "10s"]);
    args.extend_from_slice(extra);
    wsbench(&args, Duration::from_secs(60))
}

#[test]
fn python_compare_server_passes_verify_and_acknowledges_fast() {
    timed!(LIMIT, {
        let mut server = python_server(&[]);
        let out = bench(&server.url("/"), &["--verify"]);
        assert!(
            out.status.success() && text(&out.stdout).contains("5 ok, 0 failed"),
            "bench --verify against {}: {}{}",
            server.url("/"),
            text(&out.stdout),
            text(&out.stderr)
        );

        // --verify also accepts a bare `Received: {len}`, so the slow
        // reply is compared in full too, with our numpy-exact formatting.
        let image = random_image(480_000, 7);
        let expected = ImageStats::compute(&image).expect("not empty").reply();
        let mut ws = connect(&server.url("/"));
        assert_eq!(
            round_trip(&mut ws, Message::binary(image.clone())),
            expected
        );
        let mut fast = connect(&server.url("/image?response=fast"));
        assert_eq!(
            round_trip(&mut fast, Message::binary(image)),
            "Received: 480000"
        );
        drop(fast);
        let out = bench(&server.url("/image?response=fast"), &["--verify"]);
        assert!(out.status.success(), "{}", text(&out.stderr));

        assert_eq!(round_trip(&mut ws, Message::text("a PiNg")), "Pong!");
        assert_eq!(
            round_trip(&mut ws, Message::text("hello")),
            "Data hello received successfully."
        );
        assert_eq!(
            round_trip(&mut ws, Message::binary(vec![]),),
            "Error: empty image"
        );
        assert!(
            tungstenite::connect(server.url("/nowhere")).is_err(),
            "an unknown path must be refused"
        );
        // Open clients would hold the close handshake up.
        drop(ws);
        assert!(server.terminate(Duration::from_secs(10)).success());
    });
}

#[test]
fn python_compare_server_response_fast_flag_sets_the_default() {
    timed!(LIMIT, {
        let mut server = python_server(&["--response", "fast"]);
        let out = bench(&server.url("/"), &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));

        let image: Vec<u8> = (0..=255u8).cycle().take(480_000).collect();
        let mut ws = connect(&server.url("/"));
        assert_eq!(
            round_trip(&mut ws, Message::binary(image.clone())),
            "Received: 480000"
        );
        let mut slow = connect(&server.url("/?response=slow"));
        assert_eq!(
            round_trip(&mut slow, Message::binary(image)),
            "Received: 480000, (480000,), 255, 0, 127.5, 127.5"
        );
        // The background job is logged once it is done.
        assert!(
            server
                .proc
                .stderr
                .wait_for("> Received: 480000, (480000,), 255, 0", LIMIT / 2)
                .is_some(),
            "no statistics logged; stderr: {:?}",
            server.proc.stderr.all()
        );
        drop((ws, slow));
        assert!(server.terminate(Duration::from_secs(10)).success());
    });
}

/// Joins a room and reads the two lines every newcomer gets first.
fn join(server: &Server, path: &str) -> Ws {
    let mut ws = connect(&server.url(path));
    assert_eq!(next_text(&mut ws), "Hello from server");
    assert_eq!(next_text(&mut ws), "Hey all, a new client has joined us");
    ws
}

#[test]
fn python_compare_server_chat_has_the_specs_texts() {
    timed!(LIMIT, {
        let mut server = python_server(&[]);
        let mut a = join(&server, "/chat");
        let mut b = join(&server, "/chat/lobby");
        assert_eq!(next_text(&mut a), "Hey all, a new client has joined us");
        b.send(Message::text("hi from b")).unwrap();
        let line = next_text(&mut a);
        let b_id = line
            .strip_prefix("client ")
            .and_then(|rest| rest.strip_suffix(": hi from b"))
            .unwrap_or_else(|| panic!("not `client {{id}}: hi from b`: {line}"))
            .to_string();
        a.send(Message::binary(vec![1, 2, 3])).unwrap();
        match b.read().unwrap() {
            Message::Binary(bytes) => assert_eq!(&bytes[..], [1, 2, 3]),
            other => panic!("expected the bytes relayed, got {other:?}"),
        }
        b.send(Message::text("stop")).unwrap();
        let code = loop {
            match b.read() {
                Ok(Message::Close(Some(frame))) => break u16::from(frame.code),
                Ok(_) => continue,
                Err(e) => panic!("no close frame: {e}"),
            }
        };
        // The close reply goes out now, not at b's next read.
        let _ = b.flush();
        assert_eq!(code, 1000);
        assert_eq!(next_text(&mut a), format!("client {b_id} has left"));
        drop((a, b));
        assert!(server.terminate(Duration::from_secs(10)).success());
    });
}

#[test]
fn python_compare_server_serves_wss_and_resumes_sessions() {
    timed!(LIMIT, {
        let dir = tempdir();
        let (ca, cert, key) = make_certificates(&dir);
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let mut server = python_server(&["--tls-cert", cert, "--tls-key", key]);
        crate::compare_tokio::check_wss_with_python(&server, &ca);
        assert!(server.terminate(Duration::from_secs(10)).success());
    });
}
