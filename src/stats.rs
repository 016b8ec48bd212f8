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

/// The AVX2 kernel: min, max, sum and the exact median by counting.
///
/// The value at rank `r` (0-based, in sorted order) is the smallest `v`
/// with `above(v) < len - r`, where `above(t)` counts the bytes `> t`.
/// `above` never increases with `t`, so a search over `v` keeps an interval
/// `[lo, hi]` known to hold the answer, and each pass over the pixels
/// counts `above(t)` at three thresholds that cut it into four: 256, 64,
/// 16, 4, 1 values, so four passes. The first pass also takes min, max and
/// sum. A pass costs 9 simple vector instructions per 32 bytes and no
/// store, which beats one store per byte for a histogram; four passes over
/// a 480,000-byte image that stays in L2 run at 8-10 GB/s on Zen 3, flat or
/// random alike; a 16 MiB input is read four times from L3 and still runs
/// at about 3.5 GB/s, twice the histogram.
///
/// The other middle value (rank `r + 1`, even lengths only) nearly always
/// equals the first; when it does not (e.g. half 0, half 255) it is the
/// smallest byte above the first, which one more cheap pass finds.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::ImageStats;
    use std::arch::x86_64::*;

    /// Bytes per vector.
    const LANES: usize = 32;
    /// Thresholds counted per pass.
    const K: usize = 3;
    /// Bytes per block: a `u8` lane counter gains at most one per vector,
    /// so after 255 vectors it is added into the `u64` totals.
    const BLOCK: usize = 255 * LANES;

    /// What the first pass finds besides counts.
    struct Extremes {
        min: u8,
        max: u8,
        sum: u64,
    }

    /// The sum of the 32 bytes of `v`.
    #[target_feature(enable = "avx2")]
    fn byte_sum(v: __m256i) -> u64 {
        u64s(_mm256_sad_epu8(v, _mm256_setzero_si256()))
            .iter()
            .sum()
    }

    #[target_feature(enable = "avx2")]
    fn u64s(v: __m256i) -> [u64; 4] {
        let mut out = [0u64; 4];
        // SAFETY: `out` is 32 writable bytes; storeu needs no alignment.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) };
        out
    }

    #[target_feature(enable = "avx2")]
    fn bytes(v: __m256i) -> [u8; 32] {
        let mut out = [0u8; 32];
        // SAFETY: `out` is 32 writable bytes; storeu needs no alignment.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) };
        out
    }

    /// `above(t)` for each threshold `t`, and with `STATS` also min, max
    /// and sum (else `None`).
    #[target_feature(enable = "avx2")]
    fn pass<const STATS: bool>(pixels: &[u8], t: [u8; K]) -> ([u64; K], Option<Extremes>) {
        // There is no unsigned byte compare: flipping the top bit of both
        // sides maps unsigned order onto signed order.
        let flip = _mm256_set1_epi8(i8::MIN);
        let tv = t.map(|t| _mm256_set1_epi8((t ^ 0x80) as i8));
        let mut above = [0u64; K];
        let (mut min, mut max) = (_mm256_set1_epi8(-1), _mm256_setzero_si256());
        let mut sums = _mm256_setzero_si256();
        let mut ext = Extremes {
            min: u8::MAX,
            max: 0,
            sum: 0,
        };
        for block in pixels.chunks(BLOCK) {
            let mut counts = [_mm256_setzero_si256(); K];
            let vectors = block.chunks_exact(LANES);
            let rest = vectors.remainder();
            for v in vectors {
                // SAFETY: `v` is LANES = 32 readable bytes; loadu needs no
                // alignment.
                let x = unsafe { _mm256_loadu_si256(v.as_ptr().cast()) };
                let xf = _mm256_xor_si256(x, flip);
                for (c, t) in counts.iter_mut().zip(tv) {
                    // A true compare is -1 in each byte: subtracting it counts.
                    *c = _mm256_sub_epi8(*c, _mm256_cmpgt_epi8(xf, t));
                }
                if STATS {
                    min = _mm256_min_epu8(min, x);
                    max = _mm256_max_epu8(max, x);
                    let sum8 = _mm256_sad_epu8(x, _mm256_setzero_si256());
                    sums = _mm256_add_epi64(sums, sum8);
                }
            }
            for (a, c) in above.iter_mut().zip(counts) {
                *a += byte_sum(c);
            }
            // Fewer than 32 bytes, at the very end.
            for &x in rest {
                for (a, &t) in above.iter_mut().zip(&t) {
                    *a += u64::from(x > t);
                }
                ext.min = ext.min.min(x);
                ext.max = ext.max.max(x);
                ext.sum += u64::from(x);
            }
        }
        if !STATS {
            return (above, None);
        }
        ext.min = bytes(min).into_iter().fold(ext.min, u8::min);
        ext.max = bytes(max).into_iter().fold(ext.max, u8::max);
        ext.sum += u64s(sums).iter().sum::<u64>();
        (above, Some(ext))
    }

    /// The smallest byte `> m`; the caller knows there is one.
    #[target_feature(enable = "avx2")]
    fn min_above(pixels: &[u8], m: u8) -> u8 {
        // Subtracting m + 1 (wrapping) maps the bytes above m to 0..=254-m
        // and the rest to 255-m..=255, keeping the order within each.
        let shift = m.wrapping_add(1);
        let low = pixels.iter().map(|&x| x.wrapping_sub(shift)).min();
        low.expect("non-empty").wrapping_add(shift)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn compute(pixels: &[u8]) -> Option<ImageStats> {
        let len = pixels.len() as u64;
        let r = len.checked_sub(1)? / 2;
        let need = len - r;
        // The answer v is in lo..=hi, and above_hi = above(hi).
        let (mut lo, mut hi, mut above_hi) = (0u32, 255u32, 0u64);
        let mut ext = None;
        while lo < hi {
            let step = (hi - lo + 1).div_ceil(K as u32 + 1);
            let mut t = [0u8; K];
            for (i, t) in (1u32..).zip(&mut t) {
                // Increasing, and below hi (repeats are harmless).
                *t = (lo + step * i - 1).min(hi - 1) as u8;
            }
            let (above, e) = if ext.is_none() {
                pass::<true>(pixels, t)
            } else {
                pass::<false>(pixels, t)
            };
            ext = ext.or(e);
            for (&a, t) in above.iter().zip(t.map(u32::from)) {
                if a >= need {
                    lo = lo.max(t + 1);
                } else if t < hi {
                    hi = t;
                    above_hi = a;
                }
            }
        }
        // lo < hi at first, so there was a first pass.
        let ext = ext.expect("the first pass takes the extremes");
        let mid_lo = lo as u8;
        // len - above_hi bytes are <= mid_lo: at least r + 2 means rank
        // r + 1 holds mid_lo too.
        let mid_hi = if len % 2 == 1 || len - above_hi >= r + 2 {
            mid_lo
        } else {
            min_above(pixels, mid_lo)
        };
        Some(ImageStats {
            len: pixels.len(),
            max: ext.max,
            min: ext.min,
            sum: ext.sum,
            mid_lo,
            mid_hi,
        })
    }
}

/// numpy's `str(np.float64(x))` for finite x.
///
/// numpy prints the fewest significant digits that read back as `x` and,
/// of those, the closest to `x`, an exact tie going to the even digit
/// (`651847949857580.25` prints as `...580.2`, and so does the mean of a
/// 32768-byte image, `100.00003051757812`). Rust's `{}` finds the same digit
/// count but breaks ties upwards, so only the count is taken from it and the
/// digits come from Rust's exact formatting, which rounds ties to even.
///
/// numpy goes scientific when `x` is nonzero and `|x| < 1e-4` or
/// `|x| >= 1e16`, writing the exponent signed and at least two digits long
/// (`1e-05`, `1e+16`, `1e-300`) with no `.0` on a one-digit mantissa;
/// positional output always has a `.` (`127.0`).
pub fn format_float(x: f64) -> String {
    if !x.is_finite() {
        // Rust's `NaN` is numpy's `nan`; `inf` and `-inf` agree.
        return x.to_string().to_lowercase();
    }
    let shortest = format!("{x:e}");
    let (mantissa, exp) = shortest.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    let digits = mantissa.bytes().filter(u8::is_ascii_digit).count() as i32;
    let abs = x.abs();
    if abs == 0.0 || (1e-4..1e16).contains(&abs) {
        let decimals = (digits - 1 - exp).max(0) as usize;
        let s = format!("{x:.decimals$}");
        if decimals == 0 { s + ".0" } else { s }
    } else {
        // At a power of two the gap below `x` is half the gap above, so the
        // nearest decimal may not read back while Rust's shortest does.
        // (Every power of two in the positional range prints exactly.)
        let nearest = format!("{x:.prec$e}", prec = (digits - 1) as usize);
        let s = if nearest.parse() == Ok(x) {
            nearest
        } else {
            shortest
        };
        let (mantissa, exp) = s.split_once('e').expect("{:e} has an exponent");
        let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
        format!("{mantissa}e{exp:+03}")
    }
}

/// What a server replied to an image, parsed for `wsbench bench --verify`.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Full {
        len: usize,
        max: u8,
        min: u8,
        mean: f64,
        median: f64,
    },
    LenOnly {
        len: usize,
    },
}

/// Parses `Received: {len}, ({len},), {max}, {min}, {mean}, {median}` or the
/// fast/ack form `Received: {len}`. Err is a short lower-case text saying
/// what is wrong (e.g. `not a statistics reply: "Error: empty image"`).
pub fn parse_reply(text: &str) -> Result<Reply, String> {
    let not_stats = || {
        // Quote at most 60 characters: a wrong endpoint may echo a whole image.
        let mut shown: String = text.chars().take(60).collect();
        if shown.len() < text.len() {
            shown.push_str("...");
        }
        format!("not a statistics reply: {shown:?}")
    };
    let rest = text
        .trim_end()
        .strip_prefix("Received: ")
        .ok_or_else(not_stats)?;
    let fields: Vec<&str> = rest.split(", ").collect();
    let len = parse_field("len", fields[0])?;
    match fields[..] {
        [_] => Ok(Reply::LenOnly { len }),
        [_, shape, max, min, mean, median] => {
            if shape != format!("({len},)") {
                return Err(format!("shape {shape:?} does not match len {len}"));
            }
            Ok(Reply::Full {
                len,
                max: parse_field("max", max)?,
                min: parse_field("min", min)?,
                mean: parse_field("mean", mean)?,
                median: parse_field("median", median)?,
            })
        }
        _ => Err(not_stats()),
    }
}

fn parse_field<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, String> {
    text.parse().map_err(|_| format!("bad {name}: {text:?}"))
}

impl Reply {
    /// Checks the reply against local stats. Full: len/max/min exact, mean
    /// and median within 1e-9 relative. LenOnly: len. Err names the first
    /// mismatching field with both values, e.g. `max: server said 254,
    /// expected 255`.
    pub fn check(&self, expected: &ImageStats) -> Result<(), String> {
        fn exact<T: PartialEq + std::fmt::Display>(
            name: &str,
            got: T,
            want: T,
        ) -> Result<(), String> {
            if got == want {
                Ok(())
            } else {
                Err(format!("{name}: server said {got}, expected {want}"))
            }
        }
        // Relative, so that a server that prints fewer digits or sums in
        // another order still passes, while one pixel off by one still moves
        // the mean of an 800x600 image by about 1e-8 relative.
        fn close(name: &str, got: f64, want: f64) -> Result<(), String> {
            if (got - want).abs() <= 1e-9 * got.abs().max(want.abs()) {
                Ok(())
            } else {
                Err(format!(
                    "{name}: server said {}, expected {}",
                    format_float(got),
                    format_float(want)
                ))
            }
        }
        match *self {
            Reply::LenOnly { len } => exact("len", len, expected.len),
            Reply::Full {
                len,
                max,
                min,
                mean,
                median,
            } => {
                exact("len", len, expected.len)?;
                exact("max", max, expected.max)?;
                exact("min", min, expected.min)?;
                close("mean", mean, expected.mean())?;
                close("median", median, expected.median())
            }
        }
    }
}

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
