//! Throughput of the image statistics kernel on one 800x600 image: the real
//! kernel (AVX2 counting passes where the CPU has AVX2), the scalar
//! 4-way histogram it falls back to, the textbook single-histogram kernel,
//! then the real and scalar
//! kernels on a 16 MiB image, which does not fit in L2.
//!
//! A flat image (every pixel equal) is the worst case for a single
//! histogram: every increment hits the same bin, each waiting on the last.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use wsbench::stats::{ImageStats, random_image};

const LEN: usize = 800 * 600;
const BIG_LEN: usize = 16 << 20;

/// One `u64` bin per value, one increment per byte, then the same readout
/// as the real kernel: (max, min, sum, median).
fn naive(pixels: &[u8]) -> (u8, u8, u64, f64) {
    let mut hist = [0u64; 256];
    for &b in pixels {
        hist[usize::from(b)] += 1;
    }
    let max = hist.iter().rposition(|&c| c > 0).unwrap() as u8;
    let min = hist.iter().position(|&c| c > 0).unwrap() as u8;
    let sum = hist.iter().zip(0u64..).map(|(&c, v)| c * v).sum();
    let value_at = |rank: u64| {
        let mut seen = 0;
        hist.iter()
            .position(|&c| {
                seen += c;
                seen > rank
            })
            .unwrap() as f64
    };
    let n = pixels.len() as u64;
    (
        max,
        min,
        sum,
        (value_at((n - 1) / 2) + value_at(n / 2)) / 2.0,
    )
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("stats_480000");
    group.throughput(Throughput::Bytes(LEN as u64));
    for (name, image) in [("random", random_image(LEN, 1)), ("flat", vec![128; LEN])] {
        let stats = ImageStats::compute(&image).unwrap();
        let want = (stats.max, stats.min, stats.sum, stats.median());
        assert_eq!(naive(&image), want, "naive kernel disagrees on {name}");

        group.bench_function(format!("compute/{name}"), |b| {
            b.iter(|| ImageStats::compute(black_box(&image)))
        });
        group.bench_function(format!("compute_scalar/{name}"), |b| {
            b.iter(|| ImageStats::compute_scalar(black_box(&image)))
        });
        group.bench_function(format!("naive/{name}"), |b| {
            b.iter(|| naive(black_box(&image)))
        });
    }
    group.finish();

    let big = random_image(BIG_LEN, 1);
    assert_eq!(
        ImageStats::compute(&big),
        ImageStats::compute_scalar(&big),
        "scalar kernel disagrees on {BIG_LEN} bytes"
    );
    let mut group = c.benchmark_group(format!("stats_{BIG_LEN}"));
    group.throughput(Throughput::Bytes(BIG_LEN as u64));
    group.sample_size(20);
    group.bench_function("compute/random", |b| {
        b.iter(|| ImageStats::compute(black_box(&big)))
    });
    group.bench_function("compute_scalar/random", |b| {
        b.iter(|| ImageStats::compute_scalar(black_box(&big)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
