//! The statistics reply read back: what `wsbench bench --verify` parses out
//! of a server's answer and checks against statistics computed locally.

use super::ImageStats;
use super::numpy::format_float;

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
