//! Building and writing one masked 480,000-byte client frame into a sink:
//! tungstenite's `send` (copy the payload after the header, then mask it in
//! place) against `client::masked::send` (mask while copying, one write).
//! The socket's own copy is the same for both and left out.
//!
//! Then the other side: the server's `FrameReader` taking one client
//! message in from memory, in 64 KiB reads as loopback hands them over,
//! text against binary (the cost of checking UTF-8, #13) and a short text.

use std::io::{self, Read, Write};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Bytes, Message, WebSocket};
use wsbench::client::masked;
use wsbench::server::reader::{FrameReader, Replay};
use wsbench::stats::random_image;

const LEN: usize = 800 * 600;
const TEXT: u8 = 0x1;

/// Swallows writes; never has anything to read.
struct Sink;

impl Read for Sink {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(black_box(buf).len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn bench(c: &mut Criterion) {
    let image = random_image(LEN, 1);
    let mut group = c.benchmark_group("client_frame_480000");
    group.throughput(Throughput::Bytes(LEN as u64));
    let payload = Bytes::from(image.clone());
    let config = WebSocketConfig::default().write_buffer_size(0);
    let mut ws = WebSocket::from_raw_socket(Sink, Role::Client, Some(config));
    group.bench_function("tungstenite_send", |b| {
        b.iter(|| ws.send(Message::Binary(payload.clone())).unwrap())
    });
    group.bench_function("masked_send", |b| {
        b.iter(|| masked::send(&mut Sink, masked::BINARY, black_box(&image)).unwrap())
    });
    group.finish();
}

/// One masked client frame, as `masked::send` writes it.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    masked::send(&mut wire, opcode, payload).unwrap();
    wire
}

fn read(c: &mut Criterion) {
    // Mostly ASCII with two- to four-byte characters in between, as text
    // in the wild; a pure-ASCII text would hit the validator's fast path.
    let mut text = "héllo wörld, € and 𝄞 ".repeat(LEN / 20 + 1);
    text.truncate(text.floor_char_boundary(LEN));
    let image = random_image(LEN, 1);
    let mut group = c.benchmark_group("server_read_480000");
    group.throughput(Throughput::Bytes(LEN as u64));
    for (name, opcode, payload) in [
        ("text", TEXT, text.as_bytes()),
        ("binary", masked::BINARY, &image[..]),
    ] {
        let wire = client_frame(opcode, payload);
        group.bench_function(name, |b| {
            b.iter_batched(
                || FrameReader::new(Replay::new(wire.clone(), vec![64 * 1024]), Vec::new(), LEN),
                |mut reader| reader.read().unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
    let short = client_frame(TEXT, &text.as_bytes()[..text.floor_char_boundary(100)]);
    c.bench_function("server_read_text_100", |b| {
        b.iter_batched(
            || FrameReader::new(Replay::new(short.clone(), vec![64 * 1024]), Vec::new(), LEN),
            |mut reader| reader.read().unwrap(),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench, read);
criterion_main!(benches);
