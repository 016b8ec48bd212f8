//! Client frames as the server's reader sees them (#13): arbitrary bytes,
//! cut into reads of arbitrary sizes with timeouts in between. Nothing may
//! panic, every text message must be valid UTF-8 (the reader builds it
//! unchecked), no message may hold more than arrived, and how the stream is
//! cut into reads must not change what is read or how reading ends.
//!
//! Input: one byte picks the size limit, one the bytes that came with the
//! handshake, one how many read sizes follow (one byte each: 0 is a
//! timeout, 255 is "all there is"); the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tungstenite::Message;
use wsbench::server::reader::{FrameReader, ReadError, Replay};

/// How reading ended: the peer's close frame or end of stream (`None`),
/// or a refusal with its close code.
type Outcome = (Vec<Message>, Option<u16>);

fn read_all(wire: &[u8], leftover: usize, reads: Vec<usize>, max: usize) -> Outcome {
    let (head, rest) = wire.split_at(leftover.min(wire.len()));
    let mut reader = FrameReader::new(Replay::new(rest.to_vec(), reads), head.to_vec(), max);
    let mut messages = Vec::new();
    loop {
        match reader.read() {
            Ok(m @ Message::Close(_)) => {
                messages.push(m);
                return (messages, None);
            }
            Ok(m) => messages.push(m),
            // Replay ends every run of timeouts with a read that moves.
            Err(ReadError::Again) => continue,
            Err(ReadError::Closed) => return (messages, None),
            Err(ReadError::Refuse(code, _)) => return (messages, Some(code.into())),
            Err(ReadError::Lost(why)) => panic!("memory cannot fail: {why}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [limit, leftover, count, rest @ ..] = data else {
        return;
    };
    let max = [125, 1000, 70_000, 1 << 20][usize::from(limit & 3)];
    let count = usize::from(count % 8).min(rest.len());
    let (sizes, wire) = rest.split_at(count);
    let reads = sizes
        .iter()
        .map(|&b| if b == 255 { usize::MAX } else { usize::from(b) })
        .collect();

    let (messages, end) = read_all(wire, usize::from(*leftover), reads, max);
    let mut total = 0;
    for m in &messages {
        if let Message::Text(text) = m {
            assert!(std::str::from_utf8(text.as_bytes()).is_ok());
        }
        if matches!(m, Message::Text(_) | Message::Binary(_)) {
            assert!(m.len() <= max, "{} bytes over the limit of {max}", m.len());
        }
        total += m.len();
    }
    assert!(total <= wire.len());
    assert_eq!(
        (messages, end),
        read_all(wire, 0, vec![usize::MAX], max),
        "cut into other reads, the same stream read differently"
    );
});
