//! Building and writing one masked 480,000-byte client frame into a sink:
//! tungstenite's `send` (copy the payload after the header, then mask it in
//! place) against `net::masked::send` (mask while copying, one write).
//! The socket's own copy is the same for both and left out.

use std::io::{self, Read, Write};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Bytes, Message, WebSocket};
use wsbench::net::masked;
use wsbench::stats::random_image;

const LEN: usize = 800 * 600;

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

criterion_group!(benches, bench);
criterion_main!(benches);
