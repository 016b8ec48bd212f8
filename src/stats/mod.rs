//! The image statistics kernel, its numpy-compatible reply text, and the
//! parser that `wsbench bench --verify` uses to check a server's replies.
//!
//! An image is a flat array of `u8` pixels, as `numpy.frombuffer(msg,
//! dtype=uint8)` sees it. The reply reproduces what the original Python
//! experiment printed: `Received: {len}, ({len},), {max}, {min}, {mean},
//! {median}`, floats formatted as numpy's `str(np.float64(x))`.
//!
//! With only 256 possible values no sort is needed (numpy sorts, or
//! partitions, a copy). The reference kernel fills one 256-bin histogram in
//! a single O(n) pass and reads the exact median (and min, max, sum) off
//! its bins; that costs a store per byte, about 2.8 GB/s. On x86_64 CPUs
//! with AVX2, [`ImageStats::compute`] instead narrows the median down with
//! four vectorised counting passes that store nothing per byte (see
//! the `avx2` module), 3-4x faster, with the same results for every input.

/// Statistics of one image; `None`-free: construct only from non-empty input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageStats {
    pub len: usize,
    pub max: u8,
    pub min: u8,
    pub sum: u64,
    /// The sorted array's values at ranks `(len - 1) / 2` and `len / 2`:
    /// equal for an odd length, and their mean is numpy's median either way.
    mid_lo: u8,
    mid_hi: u8,
}

/// Bytes counted into one set of `u32` sub-histograms before they are
/// flushed into the `u64` total, so that no `u32` bin can overflow however
/// large the input. Tiny under test so that the flush path is exercised.
const CHUNK: usize = if cfg!(test) { 4096 } else { 1 << 30 };

/// Adds the counts of `pixels` to `hist`.
fn count(pixels: &[u8], hist: &mut [u64; 256]) {
    for chunk in pixels.chunks(CHUNK) {
        // Four interleaved sub-histograms: consecutive equal bytes (flat
        // image regions) would otherwise increment the same bin back to
        // back, each add waiting for the previous store to forward.
        let mut sub = [[0u32; 256]; 4];
        let mut quads = chunk.chunks_exact(4);
        for q in &mut quads {
            sub[0][q[0] as usize] += 1;
            sub[1][q[1] as usize] += 1;
            sub[2][q[2] as usize] += 1;
            sub[3][q[3] as usize] += 1;
        }
        for &b in quads.remainder() {
            sub[0][b as usize] += 1;
        }
        for (i, total) in hist.iter_mut().enumerate() {
            *total += sub.iter().map(|s| u64::from(s[i])).sum::<u64>();
        }
    }
}

impl ImageStats {
    /// On the calling thread. None for an empty slice.
    ///
    /// Uses the AVX2 kernel when the CPU has AVX2 (checked at run time, so
    /// the binary still runs on any x86_64), else [`Self::compute_scalar`];
    /// both give the same result for every input.
    pub fn compute(pixels: &[u8]) -> Option<ImageStats> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: `avx2::compute` only needs the CPU to support AVX2,
            // which was just checked.
            return unsafe { avx2::compute(pixels) };
        }
        Self::compute_scalar(pixels)
    }

    /// The reference kernel: one 256-bin histogram pass. Public only for
    /// the benchmark that compares it with [`Self::compute`].
    #[doc(hidden)]
    pub fn compute_scalar(pixels: &[u8]) -> Option<ImageStats> {
        let mut hist = [0u64; 256];
        count(pixels, &mut hist);
        Self::from_histogram(&hist)
    }

    fn from_histogram(hist: &[u64; 256]) -> Option<ImageStats> {
        let min = hist.iter().position(|&c| c > 0)? as u8;
        let max = hist.iter().rposition(|&c| c > 0)? as u8;
        let len: u64 = hist.iter().sum();
        let sum = hist.iter().zip(0u64..).map(|(&c, v)| c * v).sum();
        // The value at rank r is the first bin whose cumulative count exceeds r.
        let value_at = |rank: u64| {
            let mut seen = 0;
            hist.iter()
                .position(|&c| {
                    seen += c;
                    seen > rank
                })
                .expect("rank < len") as u8
        };
        Some(ImageStats {
            len: len as usize,
            max,
            min,
            sum,
            mid_lo: value_at((len - 1) / 2),
            mid_hi: value_at(len / 2),
        })
    }

    /// numpy's `arr.mean()`: its float64 pairwise sum of `u8` values is an
    /// exact integer for any image under 2^45 bytes, so one correctly
    /// rounded division gives the same bits.
    pub fn mean(&self) -> f64 {
        self.sum as f64 / self.len as f64
    }

    /// numpy's `np.median(arr)`: the mean of the two middle values.
    pub fn median(&self) -> f64 {
        (f64::from(self.mid_lo) + f64::from(self.mid_hi)) / 2.0
    }

    /// `Received: {len}, ({len},), {max}, {min}, {mean}, {median}`
    pub fn reply(&self) -> String {
        format!(
            "Received: {len}, ({len},), {}, {}, {}, {}",
            self.max,
            self.min,
            format_float(self.mean()),
            format_float(self.median()),
            len = self.len,
        )
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;
mod numpy;
mod reply;

pub use numpy::format_float;
pub use reply::{Reply, parse_reply};

/// `len` pseudo-random pixels from `seed`; the same seed gives the same bytes everywhere.
///
/// splitmix64, eight bytes per step in little-endian order: fast, well mixed
/// even for seeds 0, 1, 2..., and defined by integer arithmetic alone.
pub fn random_image(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut image = vec![0u8; len];
    for chunk in image.chunks_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What numpy does: sort, take the middle(s), add up.
    fn reference(pixels: &[u8]) -> (usize, u8, u8, u64, f64) {
        let mut sorted = pixels.to_vec();
        sorted.sort_unstable();
        let n = sorted.len();
        let median = (f64::from(sorted[(n - 1) / 2]) + f64::from(sorted[n / 2])) / 2.0;
        let sum = sorted.iter().map(|&b| u64::from(b)).sum();
        (n, sorted[n - 1], sorted[0], sum, median)
    }

    fn assert_matches_reference(pixels: &[u8]) {
        let stats = ImageStats::compute(pixels).expect("non-empty");
        let (len, max, min, sum, median) = reference(pixels);
        let got = (stats.len, stats.max, stats.min, stats.sum, stats.median());
        assert_eq!(got, (len, max, min, sum, median), "len {}", pixels.len());
        assert_eq!(stats.mean(), sum as f64 / len as f64);
    }

    /// Seeded inputs of many lengths, uniform and with few distinct values
    /// (where ties around the median matter), plus sizes that span many
    /// `CHUNK`s and `PAR_CHUNK`s with a ragged end.
    fn inputs() -> Vec<Vec<u8>> {
        let mut lengths: Vec<usize> = random_image(2 * 150, 99)
            .chunks(2)
            .map(|p| usize::from(u16::from_le_bytes([p[0], p[1]])) % 5000 + 1)
            .collect();
        lengths.extend(1..=40);
        lengths.extend([4095, 4096, 4097, 480_000, 480_001, (1 << 20) + 3]);
        let mut out = Vec::new();
        for (seed, len) in lengths.into_iter().enumerate() {
            let image = random_image(len, seed as u64);
            out.push(image.iter().map(|b| b >> 5).collect());
            out.push(image.iter().map(|b| b % 3 + 100).collect());
            out.push(image);
        }
        out
    }

    #[test]
    fn compute_matches_sort_reference() {
        for pixels in inputs() {
            assert_matches_reference(&pixels);
        }
    }

    #[test]
    fn edge_cases() {
        assert_eq!(ImageStats::compute(&[]), None);
        let cases: &[(&[u8], u8, u8, f64, f64)] = &[
            (&[42], 42, 42, 42.0, 42.0),
            (&[0, 255], 255, 0, 127.5, 127.5),
            (&[255, 0], 255, 0, 127.5, 127.5),
            (&[0; 7], 0, 0, 0.0, 0.0),
            (&[255; 8], 255, 255, 255.0, 255.0),
            (&[3, 1, 2], 3, 1, 2.0, 2.0),
            (&[10, 11, 10, 11], 11, 10, 10.5, 10.5),
            (&[1, 1, 1, 2, 2, 2, 255], 255, 1, 37.714285714285715, 2.0),
        ];
        for &(pixels, max, min, mean, median) in cases {
            let stats = ImageStats::compute(pixels).unwrap();
            let got = (
                stats.len,
                stats.max,
                stats.min,
                stats.mean(),
                stats.median(),
            );
            assert_eq!(got, (pixels.len(), max, min, mean, median), "{pixels:?}");
            assert_matches_reference(pixels);
        }
        for (byte, len) in [(0, 4096 * 3 + 1), (255, 4096 * 2)] {
            assert_matches_reference(&vec![byte; len]);
        }
    }

    /// `compute` (the AVX2 kernel where the CPU has it) against the
    /// histogram reference, also on misaligned and odd-length views.
    fn assert_same_as_scalar(pixels: &[u8]) {
        let scalar = ImageStats::compute_scalar(pixels);
        assert_eq!(ImageStats::compute(pixels), scalar, "len {}", pixels.len());
    }

    #[test]
    fn compute_equals_scalar_on_random_inputs() {
        for len in 0..=5000 {
            let image = random_image(len, len as u64 + 1000);
            assert_same_as_scalar(&image);
            // Few distinct values, so that ties around the median matter.
            let few: Vec<u8> = image.iter().map(|b| b % 3 + 127).collect();
            assert_same_as_scalar(&few);
        }
        for (len, seed) in [(480_000, 1), (480_001, 2)] {
            let image = random_image(len, seed);
            assert_same_as_scalar(&image);
            assert_same_as_scalar(&image[1..]);
            assert_same_as_scalar(&image[5..len - 17]);
            let narrow: Vec<u8> = image.iter().map(|b| b >> 6).collect();
            assert_same_as_scalar(&narrow);
        }
        // Many blocks, and u64 totals far beyond any u8/u16 lane counter.
        assert_same_as_scalar(&random_image((16 << 20) + 7, 3));
        let image = random_image(20_000, 4);
        for start in 0..32 {
            assert_same_as_scalar(&image[start..]);
            assert_same_as_scalar(&image[start..start + 8160 + 3]);
        }
    }

    #[test]
    fn compute_equals_scalar_on_adversarial_inputs() {
        let lengths = [
            1, 2, 3, 4, 31, 32, 33, 63, 64, 65, 8159, 8160, 8161, 16_321, 480_000,
        ];
        let boundaries = [0, 1, 15, 16, 63, 64, 127, 128, 191, 192, 240, 254, 255];
        for len in lengths {
            let noise = random_image(len, len as u64);
            for v in boundaries {
                assert_same_as_scalar(&vec![v; len]);
            }
            let pairs = [
                (0, 255),
                (0, 1),
                (15, 16),
                (63, 64),
                (127, 128),
                (191, 192),
                (254, 255),
                (100, 200),
            ];
            for (a, b) in pairs {
                // As many a's as put the middle ranks on a, on b, or across.
                for n_a in [
                    (len / 2).saturating_sub(1),
                    len / 2,
                    len / 2 + 1,
                    len.div_ceil(2),
                ] {
                    let n_a = n_a.min(len);
                    let mut image = vec![a; n_a];
                    image.resize(len, b);
                    assert_same_as_scalar(&image);
                    image.reverse();
                    assert_same_as_scalar(&image);
                }
                let mixed: Vec<u8> = noise.iter().map(|&x| if x < 128 { a } else { b }).collect();
                assert_same_as_scalar(&mixed);
            }
            // Clustered around a boundary of the search's intervals.
            for c in [8u8, 16, 64, 128, 192, 248] {
                let cluster: Vec<u8> = noise.iter().map(|&x| c - 8 + x % 16).collect();
                assert_same_as_scalar(&cluster);
                let tight: Vec<u8> = noise.iter().map(|&x| c - 1 + x % 2).collect();
                assert_same_as_scalar(&tight);
            }
        }
    }

    #[test]
    fn format_float_matches_numpy() {
        // Right-hand sides printed by numpy 2.4.6: str(np.float64(x)).
        let table = [
            (127.0, "127.0"),
            (127.5, "127.5"),
            (0.1, "0.1"),
            (1.0 / 3.0, "0.3333333333333333"),
            (2.0833333333333334e-06, "2.0833333333333334e-06"),
            (1e-05, "1e-05"),
            (1.5e-05, "1.5e-05"),
            (9.999999999999999e-05, "9.999999999999999e-05"),
            (0.0001, "0.0001"),
            (0.00012345, "0.00012345"),
            (255.0, "255.0"),
            (100.25, "100.25"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (127.49876041666667, "127.49876041666667"),
            (12345678.9, "12345678.9"),
            (123456789012345.6, "123456789012345.6"),
            (1e15, "1000000000000000.0"),
            (9999999999999998.0, "9999999999999998.0"),
            (1e16, "1e+16"),
            (1.2345e16, "1.2345e+16"),
            (1e22, "1e+22"),
            (1e100, "1e+100"),
            (1e-300, "1e-300"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (-1.989032661366619e244, "-1.989032661366619e+244"),
            // Exact ties between two shortest candidates: numpy takes the even digit.
            (651847949857580.0 + 0.25, "651847949857580.2"),
            (-92665837461519.0 - 0.125, "-92665837461519.12"),
            (100.0 + 1.0 / 32768.0, "100.00003051757812"),
        ];
        for (x, want) in table {
            assert_eq!(format_float(x), want, "{x:?}");
        }
    }

    #[test]
    fn reply_texts_match_numpy() {
        // Right-hand sides printed by the original experiment's f-string
        // under numpy 2.4.6 for the same bytes.
        let mut one_bright = vec![0; 480_000];
        one_bright[479_999] = 1;
        let table: &[(&[u8], &str)] = &[
            (
                &[200, 0, 1, 200],
                "Received: 4, (4,), 200, 0, 100.25, 100.5",
            ),
            (&[7], "Received: 1, (1,), 7, 7, 7.0, 7.0"),
            (
                &[254, 255, 255],
                "Received: 3, (3,), 255, 254, 254.66666666666666, 255.0",
            ),
            (&[0, 0, 255, 255], "Received: 4, (4,), 255, 0, 127.5, 127.5"),
            (
                &one_bright,
                "Received: 480000, (480000,), 1, 0, 2.0833333333333334e-06, 0.0",
            ),
            (
                &one_bright[380_000..],
                "Received: 100000, (100000,), 1, 0, 1e-05, 0.0",
            ),
            (
                &random_image(480_000, 42),
                "Received: 480000, (480000,), 255, 0, 127.54719166666666, 128.0",
            ),
            (
                &random_image(480_001, 7),
                "Received: 480001, (480001,), 255, 0, 127.50905935612634, 128.0",
            ),
            (
                &random_image(1000, 1),
                "Received: 1000, (1000,), 255, 0, 125.897, 123.0",
            ),
            (
                &random_image(48, 3),
                "Received: 48, (48,), 251, 1, 131.375, 142.0",
            ),
        ];
        for &(pixels, want) in table {
            assert_eq!(ImageStats::compute(pixels).unwrap().reply(), want);
        }
    }

    #[test]
    fn parse_reply_round_trips_and_rejects() {
        for pixels in [
            &[200, 0, 1, 200][..],
            &random_image(480_001, 7),
            &[0; 100_000],
        ] {
            let stats = ImageStats::compute(pixels).unwrap();
            let reply = parse_reply(&stats.reply()).unwrap();
            let want = Reply::Full {
                len: stats.len,
                max: stats.max,
                min: stats.min,
                mean: stats.mean(),
                median: stats.median(),
            };
            assert_eq!(reply, want);
            assert_eq!(reply.check(&stats), Ok(()));
        }
        assert_eq!(
            parse_reply("Received: 480000"),
            Ok(Reply::LenOnly { len: 480_000 })
        );
        assert_eq!(
            parse_reply("Received: 4, (4,), 200, 0, 1e-05, 0.0\n"),
            Ok(Reply::Full {
                len: 4,
                max: 200,
                min: 0,
                mean: 1e-05,
                median: 0.0
            })
        );
        let errors = [
            (
                "Error: empty image",
                "not a statistics reply: \"Error: empty image\"",
            ),
            ("", "not a statistics reply: \"\""),
            ("Received: ", "not a statistics reply: \"Received: \""),
            ("Received: 4x", "bad len: \"4x\""),
            (
                "Received: 4, (4,), 200",
                "not a statistics reply: \"Received: 4, (4,), 200\"",
            ),
            (
                "Received: 4, (5,), 200, 0, 1.0, 1.0",
                "shape \"(5,)\" does not match len 4",
            ),
            ("Received: 4, (4,), 256, 0, 1.0, 1.0", "bad max: \"256\""),
            ("Received: 4, (4,), 200, 0, 1.0, one", "bad median: \"one\""),
        ];
        for (text, want) in errors {
            assert_eq!(parse_reply(text), Err(want.to_string()), "{text:?}");
        }
        let long = format!("Error: {}", "x".repeat(1000));
        assert!(parse_reply(&long).unwrap_err().len() < 100);
    }

    #[test]
    fn check_names_the_first_wrong_field() {
        let stats = ImageStats::compute(&[200, 0, 1, 255]).unwrap();
        let full = |max, mean| Reply::Full {
            len: 4,
            max,
            min: 0,
            mean,
            median: 100.5,
        };
        assert_eq!(full(255, 114.0).check(&stats), Ok(()));
        assert_eq!(full(255, 114.0 * (1.0 + 1e-12)).check(&stats), Ok(()));
        assert_eq!(
            full(254, 114.0).check(&stats),
            Err("max: server said 254, expected 255".to_string())
        );
        assert_eq!(
            full(255, 113.75).check(&stats),
            Err("mean: server said 113.75, expected 114.0".to_string())
        );
        assert_eq!(Reply::LenOnly { len: 4 }.check(&stats), Ok(()));
        assert_eq!(
            Reply::LenOnly { len: 5 }.check(&stats),
            Err("len: server said 5, expected 4".to_string())
        );
    }

    #[test]
    fn random_image_is_pinned_and_seeded() {
        // splitmix64 computed independently (Python) for seeds 0 and 42.
        assert_eq!(
            random_image(16, 0),
            [
                175, 205, 29, 123, 57, 168, 32, 226, 244, 101, 185, 161, 106, 158, 120, 110
            ]
        );
        assert_eq!(
            random_image(11, 42),
            [149, 110, 235, 47, 38, 50, 215, 189, 3, 241, 102]
        );
        assert!(random_image(0, 1).is_empty());
        assert_eq!(random_image(1000, 5)[..997], random_image(997, 5));
        assert_ne!(random_image(64, 1), random_image(64, 2));
    }
}
