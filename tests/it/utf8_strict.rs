//! Strict UTF-8 from outside (#13, Autobahn 6.4.3 and 6.4.4): a text whose
//! bad bytes arrive closes with 1007 at once, even though the rest of its
//! frame never comes; a character cut between frames, or between the
//! server's reads, is still read whole. Raw sockets, for what no library
//! sends.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;
use tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(60);
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const TEXT: u8 = 0x1;
const CONTINUATION: u8 = 0x0;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;
const CLOSE: u8 = 0x8;

/// A masked client frame's header, announcing `len` payload bytes.
fn header(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
    let mut out = frame_header(u8::from(fin) << 7 | opcode, true, len);
    out.extend_from_slice(&MASK);
    out
}

/// Payload bytes masked as they sit at `offset` in their frame.
fn masked(payload: &[u8], offset: usize) -> Vec<u8> {
    payload
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ MASK[(offset + i) % 4])
        .collect()
}

fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    [header(fin, opcode, payload.len()), masked(payload, 0)].concat()
}

/// The next frame from the server (unmasked): opcode and payload; `None`
/// when the connection ends.
fn read_frame(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).ok()?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).ok()?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).ok()?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; usize::try_from(len).ok()?];
    s.read_exact(&mut payload).ok()?;
    Some((head[0] & 0x0f, payload))
}

/// The server's close code, skipping anything before it.
fn close_code(s: &mut TcpStream) -> Option<u16> {
    loop {
        let (opcode, payload) = read_frame(s)?;
        if opcode == CLOSE {
            return payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
        }
    }
}

/// Sends a ping and waits for its pong: everything sent before it has
/// been read by the server, so what follows arrives in a later read.
fn sync(s: &mut TcpStream, tag: &[u8]) {
    s.write_all(&frame(true, PING, tag)).unwrap();
    assert_eq!(read_frame(s), Some((PONG, tag.to_vec())));
}

fn still_echoes(server: &Server) {
    let mut ws = connect(&server.url("/echo"));
    assert_eq!(round_trip(&mut ws, Message::text("κόσμε")), "κόσμε");
}

#[test]
fn bad_utf8_closes_with_1007_before_the_rest_of_its_frame_arrives() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        // A frame announcing 64 KiB (read straight into the message) and
        // one of 200 bytes (read through the read-ahead buffer): only
        // about 100 bytes come, good text then bad bytes, and the rest never
        // does. Before #13 the server waited for the rest (until its
        // 20 s ping timeout), as a peer waiting for our close would too.
        for (announced, bad) in [(64 * 1024, &b"\xff"[..]), (200, b"\xf4\x90\x80\x80")] {
            let mut s = raw_ws(&server.addr, "/echo");
            let mut good = "κόσμε ".repeat(8);
            good.truncate(good.floor_char_boundary(100 - bad.len()));
            let sent = [good.as_bytes(), bad].concat();
            s.write_all(&header(true, TEXT, announced)).unwrap();
            s.write_all(&masked(&sent, 0)).unwrap();
            let started = Instant::now();
            assert_eq!(
                close_code(&mut s),
                Some(1007),
                "{announced} bytes announced"
            );
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "closed after {:?}, not as the bad bytes arrived",
                started.elapsed()
            );
        }
        still_echoes(&server);
    });
}

#[test]
fn a_character_cut_between_frames_or_reads_is_echoed_whole() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let text = "a\u{e9}\u{20ac}\u{1d11e}z";
        let bytes = text.as_bytes();
        let mut s = raw_ws(&server.addr, "/echo");
        for cut in 1..bytes.len() {
            // Two fragments, the second sent only once the server has
            // read the first (its pong says so).
            s.write_all(&frame(false, TEXT, &bytes[..cut])).unwrap();
            sync(&mut s, b"between fragments");
            s.write_all(&frame(true, CONTINUATION, &bytes[cut..]))
                .unwrap();
            assert_eq!(
                read_frame(&mut s),
                Some((TEXT, bytes.to_vec())),
                "cut at {cut}"
            );

            // One frame in two writes, likely two reads (nothing to wait
            // on inside a frame; the unit tests cut reads exactly).
            s.write_all(&header(true, TEXT, bytes.len())).unwrap();
            s.write_all(&masked(&bytes[..cut], 0)).unwrap();
            s.write_all(&masked(&bytes[cut..], cut)).unwrap();
            assert_eq!(
                read_frame(&mut s),
                Some((TEXT, bytes.to_vec())),
                "cut at {cut}"
            );
        }
        // A 64 KiB text (read straight into its buffer) cut inside a
        // character between frames, and again between the writes.
        let long = "𝄞κόσμε".repeat(6000);
        let long = long.as_bytes();
        let cut = 1 + long.len() / 2;
        assert!(
            std::str::from_utf8(&long[..cut]).is_err(),
            "cut inside a character"
        );
        s.write_all(&frame(false, TEXT, &long[..cut])).unwrap();
        sync(&mut s, b"long");
        s.write_all(&header(true, CONTINUATION, long.len() - cut))
            .unwrap();
        s.write_all(&masked(&long[cut..cut + 3], 0)).unwrap();
        s.write_all(&masked(&long[cut + 3..], 3)).unwrap();
        assert_eq!(read_frame(&mut s), Some((TEXT, long.to_vec())));
        still_echoes(&server);
    });
}
