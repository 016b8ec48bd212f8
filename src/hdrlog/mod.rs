//! HdrHistogram interval logs (#16): what `bench --rate` and `fanout`
//! write with `--hdr-log FILE`, and what `report` reads back and merges.
//!
//! The format is HdrHistogram's own (`HistogramLogWriter` in Java, the
//! `interval_log` module of the `hdrhistogram` crate): comment lines,
//! `#[StartTime: …]` and `#[BaseTime: …]` headers, then one line per
//! interval, `start,duration,max,HISTFAAA…`, the histogram compressed (V2
//! deflate) and base64-encoded. Values are microseconds, as wrk2 writes
//! them, so HdrHistogram's log processors and plotters read our logs as
//! they read wrk2's. One interval a second.
//!
//! Recording is [`Intervals`]: a histogram per second of the run, by the
//! time a latency was measured, kept in memory and written once at the
//! end, so nothing on the measuring path waits for a file. Merging logs
//! from several processes or machines adds every interval of every log
//! into one histogram (the distribution of all their values), and keeps
//! each log's own total for the per-file rows. [`report`] draws them.

pub mod report;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};

use crate::error::{Error, io_cause};

/// Highest value a log records: an hour, in µs. Longer is clamped.
const HIGHEST_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds, 3 significant digits, the bounds
/// every log of ours shares.
pub fn histogram_us() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("bounds are constant and valid")
}

/// Records `latency` into `h` in µs; below 1 µs counts as 1.
pub fn record_us(h: &mut Histogram<u64>, latency: Duration) {
    let us = (latency.as_micros() as u64).clamp(1, HIGHEST_US);
    h.record(us).expect("value is clamped into range");
}

/// One histogram per second since `start`, by when each value was
/// measured. A recorder per thread; [`Intervals::merge`] them at the end.
pub struct Intervals {
    start: Instant,
    seconds: Vec<Histogram<u64>>,
}

impl Intervals {
    pub fn new(start: Instant) -> Intervals {
        Intervals {
            start,
            seconds: Vec::new(),
        }
    }

    /// Records `latency`, measured at `at`, in the interval of `at`.
    pub fn record(&mut self, at: Instant, latency: Duration) {
        let second = at.saturating_duration_since(self.start).as_secs() as usize;
        if self.seconds.len() <= second {
            self.seconds.resize_with(second + 1, histogram_us);
        }
        record_us(&mut self.seconds[second], latency);
    }

    pub fn merge(&mut self, other: &Intervals) {
        if self.seconds.len() < other.seconds.len() {
            self.seconds.resize_with(other.seconds.len(), histogram_us);
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(&other.seconds) {
            mine.add(theirs)
                .expect("every interval has the same bounds");
        }
    }

    /// Every value recorded, in one histogram.
    pub fn total(&self) -> Histogram<u64> {
        let mut total = histogram_us();
        for second in &self.seconds {
            total
                .add(second)
                .expect("every interval has the same bounds");
        }
        total
    }

    /// Writes the log to `path`: StartTime and BaseTime are the run's
    /// start (`started`, wall clock), intervals are seconds since then.
    /// Empty seconds are written too, so a stall that measured nothing
    /// shows as a gap with a count of 0, not as a missing line.
    pub fn write(&self, path: &Path, started: SystemTime, what: &str) -> Result<(), Error> {
        let fail = |cause: String| Error::Output {
            path: path.display().to_string(),
            cause,
        };
        let mut out = Vec::new();
        let mut serializer = V2DeflateSerializer::new();
        {
            let mut log = IntervalLogWriterBuilder::new()
                .add_comment(&format!("wsbench {} {what}", env!("CARGO_PKG_VERSION")))
                .add_comment("values in microseconds")
                .with_start_time(started)
                .with_base_time(started)
                .begin_log_with(&mut out, &mut serializer)
                .map_err(|e| fail(io_cause(&e)))?;
            for (i, h) in self.seconds.iter().enumerate() {
                log.write_histogram(
                    h,
                    Duration::from_secs(i as u64),
                    Duration::from_secs(1),
                    None,
                )
                .map_err(|e| fail(format!("cannot encode interval {i}: {e}")))?;
            }
        }
        std::fs::write(path, out).map_err(|e| fail(io_cause(&e)))
    }
}

/// Whether `bytes` look like an interval log rather than a `bench` CSV:
/// a log starts with a comment or header line (`#…`), or its first line
/// parses as an interval; a CSV starts with its column names.
pub fn looks_like_log(bytes: &[u8]) -> bool {
    let text = bytes.trim_ascii_start();
    if text.starts_with(b"#") {
        return true;
    }
    matches!(
        IntervalLogIterator::new(text).next(),
        Some(Ok(LogEntry::Interval(_)))
    )
}

/// One interval log read back.
pub struct Log {
    /// The log's StartTime (or its first interval's start), unix seconds.
    pub start_unix_s: f64,
    /// (start, seconds since the log's start; histogram) per interval.
    pub intervals: Vec<(f64, Histogram<u64>)>,
    /// Every interval added up.
    pub total: Histogram<u64>,
}

/// Reads an interval log: every interval decoded, and their sum.
pub fn read(path: &Path) -> Result<Log, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::Input {
        path: path.display().to_string(),
        cause: io_cause(&e),
    })?;
    parse(&bytes).map_err(|why| Error::Input {
        path: path.display().to_string(),
        cause: why,
    })
}

/// Parses the text of an interval log, from any HdrHistogram writer.
pub fn parse(bytes: &[u8]) -> Result<Log, String> {
    let mut deserializer = Deserializer::new();
    let (mut start, mut base) = (None, None);
    let mut raw = Vec::new();
    for (n, entry) in IntervalLogIterator::new(bytes).enumerate() {
        match entry {
            Ok(LogEntry::StartTime(t)) => start = Some(t.as_secs_f64()),
            Ok(LogEntry::BaseTime(t)) => base = Some(t.as_secs_f64()),
            Ok(LogEntry::Interval(interval)) => {
                let encoded = base64::engine::general_purpose::STANDARD
                    .decode(interval.encoded_histogram())
                    .map_err(|e| format!("interval {n}: bad base64: {e}"))?;
                let h: Histogram<u64> = deserializer
                    .deserialize(&mut encoded.as_slice())
                    .map_err(|e| format!("interval {n}: bad histogram: {e:?}"))?;
                raw.push((interval.start_timestamp().as_secs_f64(), h));
            }
            Err(hdrhistogram::serialization::interval_log::LogIteratorError::ParseError {
                offset,
            }) => {
                return Err(format!(
                    "not an HdrHistogram interval log: cannot parse it at byte {offset}"
                ));
            }
        }
    }
    if raw.is_empty() {
        return Err("an interval log with no intervals".into());
    }
    // Interval timestamps are seconds since BaseTime when there is one;
    // otherwise (Java's heuristic) absolute unless far below StartTime.
    let year = 365.0 * 86_400.0;
    let base = match (base, start) {
        (Some(b), _) => b,
        (None, Some(s)) if raw[0].0 < s - year => s,
        _ => 0.0,
    };
    let start_unix_s = start.unwrap_or(base + raw[0].0);
    let mut total = Histogram::<u64>::new(3).expect("3 significant digits are valid");
    let intervals = raw
        .into_iter()
        .map(|(t, h)| {
            total
                .add(&h)
                .expect("an auto-resizing total takes any histogram");
            (base + t - start_unix_s, h)
        })
        .collect();
    Ok(Log {
        start_unix_s,
        intervals,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_log_reads_back_with_every_value() {
        let start = Instant::now();
        let mut intervals = Intervals::new(start);
        for i in 0..3000u64 {
            let at = start + Duration::from_millis(i);
            intervals.record(at, Duration::from_micros(100 + i));
        }
        let dir = std::env::temp_dir().join(format!("wsbench-hdrlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.hlog");
        intervals.write(&path, SystemTime::now(), "test").unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("#[StartTime: "), "{text}");
        assert!(text.contains("#[BaseTime: "), "{text}");
        assert!(looks_like_log(&bytes));
        assert!(!looks_like_log(b"idx,start_unix_s,connect_s\n0,1,2\n"));
        let log = read(&path).unwrap();
        assert_eq!(log.intervals.len(), 3);
        assert_eq!(log.total.len(), 3000);
        assert_eq!(log.intervals[1].1.len(), 1000);
        assert!((log.intervals[2].0 - 2.0).abs() < 1e-3);
        assert_eq!(
            log.total.value_at_quantile(0.5),
            intervals.total().value_at_quantile(0.5)
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn garbage_is_not_a_log() {
        assert!(parse(b"hello,world\n").is_err());
        assert!(parse(b"#only a comment\n").is_err());
    }
}
