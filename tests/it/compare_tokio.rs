//! `compare/tokio`, the async peer that `make compare` measures ours
//! against (#8): it builds, and answers as `wsbench server` does, so that a
//! comparison compares servers doing the same work.
//!
//! It is built into this crate's target directory, where most of what it
//! shares with wsbench is already compiled: after `cargo test` has built
//! ours, it compiles 26 crates instead of 107 (about 1 min instead of 2 on
//! 2 cores), and 0.3 s once built. Not 0: tokio turns on socket2's `all`
//! feature, so socket2 and wsbench compile again, and our dev-dependencies
//! add features to serde, regex, rayon and a few more while testing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::*;
use tungstenite::Message;
use tungstenite::http::StatusCode;
use wsbench::stats::{ImageStats, random_image};

/// Each test's body, once the server is built.
const LIMIT: Duration = Duration::from_secs(60);

/// A cold build on a busy 2-core machine, with room to spare.
const BUILD_LIMIT: Duration = Duration::from_secs(20 * 60);

/// `target/release/wsbench-tokio`, built once for all the tests here, with
/// the machine to itself (a cold build keeps every core busy for a minute;
/// see `common::MACHINE`). Call it before `timed!`, which holds the machine
/// shared: the build would wait for its own test.
fn server_bin() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        // BIN is TARGET/release/wsbench, wherever TARGET is.
        let target = Path::new(BIN)
            .parent()
            .and_then(Path::parent)
            .expect("the wsbench binary lives in TARGET/release");
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("compare/tokio/Cargo.toml");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let mut command = Command::new(cargo);
        command
            .args(["build", "--release", "--locked", "--manifest-path"])
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", target);
        let started = Instant::now();
        let output = alone(|| run_bounded(&mut command, BUILD_LIMIT));
        assert!(
            output.status.success(),
            "cargo build --release --locked --manifest-path {} failed ({}):\n{}",
            manifest.display(),
            output.status,
            text(&output.stderr)
        );
        eprintln!("built wsbench-tokio in {:.1?}", started.elapsed());
        target.join("release/wsbench-tokio")
    })
}

/// `wsbench-tokio --port 0 ARGS`, listening.
fn start(args: &[&str]) -> Server {
    let mut command = Command::new(server_bin());
    command.args(["--port", "0"]).args(args);
    Server::from_command(command)
}

fn image(len: usize) -> Vec<u8> {
    random_image(len, 7)
}

/// `(name, version)` of every package in a Cargo.lock.
fn locked_packages(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let value = |line: &str, key: &str| {
        line.strip_prefix(key)
            .map(|v| v.trim_matches('"').to_string())
    };
    let mut packages = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(name) = value(line, "name = ") {
            let version = lines.next().and_then(|l| value(l, "version = "));
            packages.push((name, version.expect("version follows name in Cargo.lock")));
        }
    }
    packages
}

#[test]
fn lockfile_pins_the_main_crates_versions() {
    timed!(LIMIT, {
        // A crate at another version than the main crate's is compiled again
        // for the comparison server: minutes on 2 cores instead of seconds.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let main = locked_packages(&root.join("Cargo.lock"));
        let ours = locked_packages(&root.join("compare/tokio/Cargo.lock"));
        let drifted: Vec<String> = ours
            .iter()
            .filter(|(name, version)| {
                main.iter().any(|(n, _)| n == name)
                    && !main.iter().any(|(n, v)| n == name && v == version)
            })
            .map(|(name, version)| format!("{name} {version}"))
            .collect();
        assert!(
            drifted.is_empty(),
            "compare/tokio/Cargo.lock has other versions than Cargo.lock: {drifted:?}; \
             to re-pin: cp Cargo.lock compare/tokio/Cargo.lock && \
             cargo metadata --format-version 1 --manifest-path compare/tokio/Cargo.toml >/dev/null"
        );
    });
}

#[test]
fn slow_image_gets_the_kernels_statistics_and_ping_gets_pong() {
    server_bin();
    timed!(LIMIT, {
        let server = start(&[]);
        for path in ["/", "/image"] {
            let mut ws = connect(&server.url(path));
            let pixels = image(480_000);
            let want = ImageStats::compute(&pixels).unwrap().reply();
            assert_eq!(round_trip(&mut ws, Message::binary(pixels)), want);
            assert_eq!(round_trip(&mut ws, Message::text("PiNg 1!")), "Pong!");
            assert_eq!(
                round_trip(&mut ws, Message::text("hello")),
                "Data hello received successfully."
            );
            assert_eq!(
                round_trip(&mut ws, Message::binary(Vec::new())),
                "Error: empty image"
            );
        }
    });
}

#[test]
fn response_query_overrides_the_servers_mode() {
    server_bin();
    timed!(LIMIT, {
        let pixels = image(480_000);
        let slow = ImageStats::compute(&pixels).unwrap().reply();

        let server = start(&[]);
        let mut ws = connect(&server.url("/?response=fast"));
        let reply = round_trip(&mut ws, Message::binary(pixels.clone()));
        assert_eq!(reply, "Received: 480000");

        let server = start(&["--response", "fast"]);
        let mut ws = connect(&server.url("/"));
        let reply = round_trip(&mut ws, Message::binary(pixels.clone()));
        assert_eq!(reply, "Received: 480000");
        let mut ws = connect(&server.url("/image?response=slow"));
        assert_eq!(round_trip(&mut ws, Message::binary(pixels)), slow);
    });
}

#[test]
fn echo_returns_text_and_bytes() {
    server_bin();
    timed!(LIMIT, {
        let server = start(&[]);
        let mut ws = connect(&server.url("/echo"));
        assert_eq!(round_trip(&mut ws, Message::text("ping")), "ping");
        let pixels = image(1000);
        ws.send(Message::binary(pixels.clone())).unwrap();
        match ws.read().unwrap() {
            Message::Binary(got) => assert_eq!(got, pixels),
            other => panic!("expected the bytes back, got {other:?}"),
        }
    });
}

#[test]
fn unknown_path_is_refused_with_404() {
    server_bin();
    timed!(LIMIT, {
        let server = start(&[]);
        let url = server.url("/nope");
        match tungstenite::connect(&url) {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), StatusCode::NOT_FOUND)
            }
            Err(e) => panic!("{url}: expected 404, got {e}"),
            Ok(_) => panic!("{url}: expected 404, the handshake succeeded"),
        }
    });
}

#[test]
fn sigterm_exits_0_and_a_taken_port_exits_1_with_one_line() {
    server_bin();
    timed!(LIMIT, {
        let mut server = start(&[]);
        let port = server.addr.rsplit(':').next().unwrap().to_string();
        let taken = run_bounded(
            Command::new(server_bin()).args(["--port", &port]),
            Duration::from_secs(10),
        );
        assert_eq!(taken.status.code(), Some(1), "{}", text(&taken.stderr));
        let stderr = text(&taken.stderr);
        assert!(
            stderr.starts_with(&format!("error: cannot bind 127.0.0.1:{port}: "))
                && stderr.trim_end().lines().count() == 1,
            "{stderr}"
        );
        assert!(server.terminate(Duration::from_secs(5)).success());
    });
}

/// Joins a room and reads the two lines every newcomer gets first.
fn join(server: &Server, path: &str) -> Ws {
    let mut ws = connect(&server.url(path));
    assert_eq!(next_text(&mut ws), "Hello from server");
    assert_eq!(next_text(&mut ws), "Hey all, a new client has joined us");
    ws
}

/// The id in `client {id}: {text}`.
fn sender_id(line: &str, text: &str) -> u64 {
    line.strip_prefix("client ")
        .and_then(|rest| rest.strip_suffix(&format!(": {text}")))
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not `client {{id}}: {text}`: {line}"))
}

/// The next close frame's code, skipping any message before it; the close
/// reply goes out at once (tungstenite queues it until the next write), so
/// the server need not wait for it.
fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => {
                let _ = ws.flush();
                return u16::from(frame.code);
            }
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}

#[test]
fn chat_has_the_specs_texts_and_stop_closes_with_1000() {
    server_bin();
    with_timeout("chat_has_the_specs_texts", LIMIT, || {
        let server = start(&[]);
        let mut a = join(&server, "/chat");
        let mut b = join(&server, "/chat/lobby");
        // `/chat` is the lobby: a hears b join.
        assert_eq!(next_text(&mut a), "Hey all, a new client has joined us");
        b.send(Message::text("hi from b")).unwrap();
        let b_id = sender_id(&next_text(&mut a), "hi from b");
        // Not echoed to its sender: b's next message is a's line.
        a.send(Message::text("hi from a")).unwrap();
        assert_ne!(sender_id(&next_text(&mut b), "hi from a"), b_id);
        // Binary goes out unchanged, as binary.
        a.send(Message::binary(vec![1, 2, 3])).unwrap();
        match b.read().unwrap() {
            Message::Binary(bytes) => assert_eq!(&bytes[..], [1, 2, 3]),
            other => panic!("expected the bytes relayed, got {other:?}"),
        }
        // Another room hears nothing of the lobby.
        let mut other = join(&server, "/chat/red");
        b.send(Message::text("stop")).unwrap();
        assert_eq!(close_code(&mut b), 1000);
        assert_eq!(next_text(&mut a), format!("client {b_id} has left"));
        other.send(Message::text("red only")).unwrap();
        a.send(Message::text("lobby only")).unwrap();
        let mut red2 = join(&server, "/chat/red");
        assert_eq!(next_text(&mut other), "Hey all, a new client has joined us");
        red2.send(Message::text("second")).unwrap();
        assert!(next_text(&mut other).ends_with(": second"));
    });
}

#[test]
fn chat_member_that_never_reads_is_dropped_with_1008() {
    server_bin();
    with_timeout("chat_member_that_never_reads", LIMIT, || {
        let server = start(&["--max-queue", "8"]);
        let mut stuck = join(&server, "/chat/flood");
        let mut sender = join(&server, "/chat/flood");
        // 64 messages of 1 MB: far past what 8 queued messages and the
        // socket buffers hold, so the queue overflows whatever the timing.
        let payload = vec![7u8; 1 << 20];
        for _ in 0..64 {
            sender.send(Message::binary(payload.clone())).unwrap();
        }
        assert_eq!(close_code(&mut stuck), 1008);
        // The room hears it went, and the sender is still served.
        assert!(next_text(&mut sender).ends_with(" has left"));
        let mut late = join(&server, "/chat/flood");
        assert_eq!(
            next_text(&mut sender),
            "Hey all, a new client has joined us"
        );
        late.send(Message::text("hello")).unwrap();
        assert!(next_text(&mut sender).ends_with(": hello"));
    });
}

#[test]
fn hello_greets_text_and_refuses_binary() {
    server_bin();
    with_timeout("hello_greets_text", LIMIT, || {
        let server = start(&[]);
        let mut ws = connect(&server.url("/hello"));
        assert_eq!(round_trip(&mut ws, Message::text("Ada")), "Hello Ada!");
        assert_eq!(
            round_trip(&mut ws, Message::binary(vec![1])),
            "Error: /hello expects text"
        );
    });
}

/// A verifying Python client (`tests/peers/compare_tls_client.py`) against
/// a comparison server listening on wss://: every endpoint, and TLS
/// session resumption from the second connection on (#15).
pub fn check_wss_with_python(server: &Server, ca: &Path) {
    assert!(server.tls.is_some(), "the listening line says wss://");
    let mut command = Command::new(python());
    command
        .arg(peer_script("compare_tls_client.py"))
        .arg(&server.addr)
        .arg(ca);
    let out = run_bounded(&mut command, Duration::from_secs(60));
    assert!(
        out.status.success() && text(&out.stdout).trim() == "ok",
        "compare_tls_client.py {}: {}\n{}\nserver stderr: {:?}",
        server.addr,
        text(&out.stdout),
        text(&out.stderr),
        server.proc.stderr.all()
    );
    // What `make compare`'s wss rows run: our client, trusting the CA,
    // one connection per image, every handshake after the first resumed.
    let url = server.url("/");
    let ca = ca.to_str().unwrap();
    let out = wsbench(
        &[
            "bench",
            "--url",
            &url,
            "--mode",
            "serial-short",
            "--count",
            "5",
            "--verify",
            "--ca-file",
            ca,
            "--timeout",
            "10s",
            "--json",
        ],
        Duration::from_secs(60),
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench {url}: {e}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    assert_eq!(
        (summary["ok"].as_u64(), summary["failed"].as_u64()),
        (Some(5), Some(0)),
        "{summary}"
    );
    assert_eq!(
        (
            summary["tls_handshakes"].as_u64(),
            summary["tls_resumed"].as_u64()
        ),
        (Some(5), Some(4)),
        "{summary}"
    );
}

#[test]
fn tls_flags_serve_wss_and_resume_sessions() {
    server_bin();
    timed!(LIMIT, {
        let dir = tempdir();
        let (ca, cert, key) = make_certificates(&dir);
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let mut server = start(&["--tls-cert", cert, "--tls-key", key]);
        check_wss_with_python(&server, &ca);
        assert!(server.terminate(Duration::from_secs(5)).success());

        // One flag without the other is a usage error; a key that is not a
        // key is one line and exit 1, before any listening line.
        let half = run_bounded(
            Command::new(server_bin()).args(["--port", "0", "--tls-cert", cert]),
            Duration::from_secs(10),
        );
        assert_eq!(half.status.code(), Some(2), "{}", text(&half.stderr));
        let wrong = run_bounded(
            Command::new(server_bin()).args(["--port", "0", "--tls-cert", cert, "--tls-key", cert]),
            Duration::from_secs(10),
        );
        let stderr = text(&wrong.stderr);
        assert_eq!(wrong.status.code(), Some(1), "{stderr}");
        assert!(text(&wrong.stdout).is_empty(), "{}", text(&wrong.stdout));
        assert!(
            stderr.starts_with(&format!("error: cannot read --tls-key {cert}: "))
                && stderr.trim_end().lines().count() == 1,
            "{stderr}"
        );
    });
}
