//! A bounded, seeded storm of hostile bytes at a running server (#6):
//! garbage, truncated and corrupted handshakes, and random or mutated
//! frames after a valid handshake. Afterwards the process must be alive
//! and a normal client served correctly. The seed is printed, so a failure
//! can be replayed with WSBENCH_FUZZ_SEED.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use crate::common::*;
use tungstenite::Message;

/// splitmix64: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const HANDSHAKE: &str = "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const PATHS: [&str; 8] = [
    "/",
    "/image?response=fast",
    "/echo",
    "/hello",
    "/chat",
    "/chat/x",
    "/metrics",
    "/%00",
];

/// Flips, inserts, deletes or truncates a few bytes.
fn mutate(rng: &mut Rng, mut input: Vec<u8>) -> Vec<u8> {
    for _ in 0..=rng.below(4) {
        if input.is_empty() {
            break;
        }
        let at = rng.below(input.len());
        match rng.below(4) {
            0 => input[at] ^= 1 << rng.below(8),
            1 => input.insert(at, rng.next() as u8),
            2 => {
                input.remove(at);
            }
            _ => input.truncate(at),
        }
    }
    input
}

/// A client frame, masked or not, with random header bits.
fn random_frame(rng: &mut Rng) -> Vec<u8> {
    let len = [0, 1, 5, 125, 126, 127, 300, 70_000][rng.below(8)];
    let payload = rng.bytes(len.min(2048));
    let first = rng.next() as u8;
    let masked = rng.below(8) != 0;
    let mut out = frame_header(first, masked, len);
    if masked {
        out.extend(rng.bytes(4));
    }
    out.extend(payload);
    mutate(rng, out)
}

/// One connection: `input` out, our side shut, whatever comes back read
/// until the server closes (bounded by the read timeout).
fn throw(addr: &str, input: &[u8]) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return;
    };
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.write_all(input);
    let _ = s.shutdown(Shutdown::Write);
    let mut sink = [0u8; 4096];
    while let Ok(n) = s.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
}

#[test]
fn ten_thousand_hostile_inputs_leave_the_server_serving() {
    timed_alone!(Duration::from_secs(240), {
        let seed: u64 = std::env::var("WSBENCH_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed_2026);
        eprintln!("fuzz seed {seed} (replay with WSBENCH_FUZZ_SEED={seed})");
        let mut server =
            Server::start(&["--handshake-timeout", "2s", "--max-message-size", "64KiB"]);
        let inputs = AtomicU64::new(0);
        thread::scope(|scope| {
            for worker in 0..4u64 {
                let (addr, inputs) = (&server.addr, &inputs);
                scope.spawn(move || {
                    let mut rng = Rng(seed ^ worker.wrapping_mul(0x9e37_79b9));
                    // 1,000 connections of heads: garbage, or a handshake
                    // (any path) corrupted and cut.
                    for _ in 0..1000 {
                        let input = match rng.below(3) {
                            0 => {
                                let n = rng.below(600);
                                rng.bytes(n)
                            }
                            _ => {
                                let path = PATHS[rng.below(PATHS.len())];
                                mutate(&mut rng, HANDSHAKE.replace("/echo", path).into_bytes())
                            }
                        };
                        throw(addr, &input);
                        inputs.fetch_add(1, Ordering::Relaxed);
                    }
                    // 150 valid handshakes, each followed by 10 random or
                    // mutated frames.
                    for _ in 0..150 {
                        let mut input = HANDSHAKE.as_bytes().to_vec();
                        for _ in 0..10 {
                            input.extend(random_frame(&mut rng));
                        }
                        throw(addr, &input);
                        inputs.fetch_add(10, Ordering::Relaxed);
                    }
                });
            }
        });
        let thrown = inputs.load(Ordering::Relaxed);
        assert!(thrown >= 10_000, "{thrown} inputs");
        assert!(
            server.proc.running(),
            "the server died; stderr tail: {:?}",
            server
                .proc
                .stderr
                .all()
                .iter()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
        );
        let mut ws = connect(&server.url("/"));
        assert_eq!(round_trip(&mut ws, Message::text("ping")), "Pong!");
        assert_eq!(
            round_trip(&mut ws, Message::binary(vec![1, 2, 3, 4])),
            "Received: 4, (4,), 4, 1, 2.5, 2.5"
        );
        let mut echo = connect(&server.url("/echo"));
        assert_eq!(round_trip(&mut echo, Message::text("alive")), "alive");
        assert!(server.metric("wsbench_handshake_failures_total") > 1000);
        let panicked = server
            .proc
            .stderr
            .all()
            .iter()
            .any(|l| l.contains("panicked"));
        assert!(!panicked, "a connection thread panicked");
        assert!(server.terminate(Duration::from_secs(5)).success());
    });
}
