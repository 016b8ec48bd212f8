//! Numbers: the server's counters (atomics, so the hot path never takes a
//! lock to count) and the client's latency recorder (an HDR histogram, so
//! percentiles are exact to 3 significant digits at any count).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Every counter the server exposes as `wsbench_*` (SPEC.md "Metrics").
#[derive(Debug, Default)]
pub struct ServerCounters {
    pub connections_current: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_rejected_total: AtomicU64,
    pub handshake_failures_total: AtomicU64,
    pub messages_received_total: AtomicU64,
    pub messages_sent_total: AtomicU64,
    pub bytes_received_total: AtomicU64,
    pub bytes_sent_total: AtomicU64,
    pub stats_jobs_pending: AtomicU64,
    pub stats_jobs_completed_total: AtomicU64,
    pub slow_clients_dropped_total: AtomicU64,
    pub http_requests_total: AtomicU64,
    /// Beyond SPEC.md's twelve: connections closed for not answering a
    /// ping within --ping-timeout (#6).
    pub ping_timeouts_total: AtomicU64,
    /// Connections this machine lets the server hold, measured at start
    /// (#12).
    pub connections_capacity: AtomicU64,
    /// `--redis` (#18): 1 when the server was started with it; the
    /// `redis_*` lines of /metrics appear only then.
    pub redis_enabled: AtomicU64,
    /// 1 while subscribed to the fleet's channels, 0 while Redis is down.
    pub redis_connected: AtomicU64,
    /// Messages published for the other instances.
    pub redis_published_total: AtomicU64,
    /// Messages from other instances received.
    pub redis_received_total: AtomicU64,
    /// Messages meant for the other instances and not published: the
    /// publish queue was full, or the publish failed.
    pub redis_dropped_total: AtomicU64,
}

/// The `wsbench_redis_*` lines of /metrics, after the others, for a server
/// started with `--redis` (#18).
pub fn prometheus_redis(c: &ServerCounters, out: &mut String) {
    use std::fmt::Write;
    if get(&c.redis_enabled) == 0 {
        return;
    }
    let metrics = [
        (
            "redis_connected",
            "gauge",
            "1 while subscribed to the fleet's Redis, 0 while it is down.",
            get(&c.redis_connected),
        ),
        (
            "redis_published_total",
            "counter",
            "Chat messages published to Redis for the other instances.",
            get(&c.redis_published_total),
        ),
        (
            "redis_received_total",
            "counter",
            "Chat messages received from the other instances through Redis.",
            get(&c.redis_received_total),
        ),
        (
            "redis_dropped_total",
            "counter",
            "Chat messages not published: publish queue full or Redis failed.",
            get(&c.redis_dropped_total),
        ),
    ];
    for (name, kind, help, value) in metrics {
        let _ = write!(
            out,
            "# HELP wsbench_{name} {help}\n# TYPE wsbench_{name} {kind}\nwsbench_{name} {value}\n"
        );
    }
}

/// Counting is all these do; nothing synchronises through them.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

pub fn sub(counter: &AtomicU64, n: u64) {
    counter.fetch_sub(n, Ordering::Relaxed);
}

pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Records durations in nanoseconds, 1 ns to 1 hour, 3 significant digits.
pub struct Latency {
    histogram: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            histogram: Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
                .expect("bounds are constant and valid"),
        }
    }
}

impl Latency {
    pub fn record(&mut self, value: Duration) {
        let ns = (value.as_nanos() as u64).clamp(1, self.histogram.high());
        self.histogram
            .record(ns)
            .expect("value is clamped into range");
    }

    /// Adds every value `other` recorded (per-thread recorders, one summary).
    pub fn merge(&mut self, other: &Latency) {
        self.histogram
            .add(&other.histogram)
            .expect("every recorder has the same bounds");
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The value at quantile `q` (0.999 for p99.9), in seconds; 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1e9
    }

    pub fn summary(&self) -> LatencySummary {
        let s = |ns: u64| ns as f64 / 1e9;
        if self.histogram.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            min: s(self.histogram.min()),
            p50: s(self.histogram.value_at_quantile(0.50)),
            p90: s(self.histogram.value_at_quantile(0.90)),
            p99: s(self.histogram.value_at_quantile(0.99)),
            max: s(self.histogram.max()),
        }
    }
}

/// Percentiles of one phase, in seconds.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct LatencySummary {
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Writes a percentile table: a header row, then one row per phase, the
/// labels padded to `label_width`.
pub fn write_table(
    out: &mut impl std::io::Write,
    label_width: usize,
    rows: &[(&str, &LatencySummary)],
) -> std::io::Result<()> {
    let w = label_width;
    writeln!(
        out,
        "{:<w$} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "min", "p50", "p90", "p99", "max"
    )?;
    for (name, l) in rows {
        writeln!(
            out,
            "{:<w$} {:>9} {:>9} {:>9} {:>9} {:>9}",
            name,
            human(l.min),
            human(l.p50),
            human(l.p90),
            human(l.p99),
            human(l.max)
        )?;
    }
    Ok(())
}

/// A duration in seconds for people: `412µs`, `3.21ms`, `1.52s`.
pub fn human(seconds: f64) -> String {
    if seconds < 1e-3 {
        format!("{:.0}µs", seconds * 1e6)
    } else if seconds < 1.0 {
        format!("{:.2}ms", seconds * 1e3)
    } else {
        format!("{seconds:.2}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_the_recorded_values() {
        let mut latency = Latency::default();
        for ms in 1..=100 {
            latency.record(Duration::from_millis(ms));
        }
        let s = latency.summary();
        assert!((s.min - 0.001).abs() < 1e-5);
        assert!((s.p50 - 0.050).abs() < 1e-3);
        assert!((s.p99 - 0.099).abs() < 1e-3);
        assert!((s.max - 0.100).abs() < 1e-3);
    }

    #[test]
    fn human_durations_pick_a_unit() {
        assert_eq!(human(0.000412), "412µs");
        assert_eq!(human(0.00321), "3.21ms");
        assert_eq!(human(1.524), "1.52s");
    }
}
