//! Log lines that a burst could repeat thousands of times (a refused
//! connection, a thread that cannot start, an accept error): the first of
//! a cause is logged, the rest within the next second are counted and
//! folded into the next line of that cause, or into the line [`flush`]
//! writes once the second is over.
//!
//! [`flush`]: RateLog::flush

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one line per cause per this long.
const PERIOD: Duration = Duration::from_secs(1);

struct Cause {
    level: log::Level,
    last: Instant,
    folded: u64,
    line: String,
}

#[derive(Default)]
pub struct RateLog {
    causes: Mutex<HashMap<&'static str, Cause>>,
}

impl RateLog {
    /// Logs `line()` for `cause` unless a line of that cause went out in
    /// the last second; then it is only counted.
    pub fn log(&self, level: log::Level, cause: &'static str, line: impl FnOnce() -> String) {
        let now = Instant::now();
        let mut causes = self.causes.lock().unwrap_or_else(|p| p.into_inner());
        match causes.get_mut(cause) {
            Some(c) if now.duration_since(c.last) < PERIOD => {
                c.folded += 1;
                // The newest text is the one worth showing when it is told.
                if c.folded == 1 {
                    c.line = line();
                }
            }
            Some(c) => {
                let folded = std::mem::take(&mut c.folded);
                c.last = now;
                c.line = line();
                emit(level, &c.line, folded);
            }
            None => {
                let line = line();
                emit(level, &line, 0);
                causes.insert(
                    cause,
                    Cause {
                        level,
                        last: now,
                        folded: 0,
                        line,
                    },
                );
            }
        }
    }

    /// Writes the counts folded into causes whose second is over; returns
    /// how long until the next one is due, if any is waiting.
    pub fn flush(&self) -> Option<Duration> {
        self.flush_before(Instant::now())
    }

    /// Writes every folded count, due or not (at exit).
    pub fn flush_all(&self) {
        self.flush_before(Instant::now() + PERIOD);
    }

    fn flush_before(&self, now: Instant) -> Option<Duration> {
        let mut causes = self.causes.lock().unwrap_or_else(|p| p.into_inner());
        let mut next: Option<Duration> = None;
        for c in causes.values_mut().filter(|c| c.folded > 0) {
            let due = c.last + PERIOD;
            if now >= due {
                let folded = std::mem::take(&mut c.folded);
                c.last = now;
                emit(c.level, &c.line, folded);
            } else {
                let wait = due - now;
                next = Some(next.map_or(wait, |n| n.min(wait)));
            }
        }
        next
    }
}

fn emit(level: log::Level, line: &str, folded: u64) {
    if folded == 0 {
        log::log!(target: "wsbench::server", level, "{line}");
    } else {
        log::log!(
            target: "wsbench::server",
            level,
            "{line} ({folded} more like this in the last second)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_one_line_then_one_count() {
        let rate = RateLog::default();
        for _ in 0..1000 {
            rate.log(log::Level::Error, "spawn", || "cannot start".into());
        }
        let causes = rate.causes.lock().unwrap();
        assert_eq!(causes["spawn"].folded, 999);
        drop(causes);
        // Not yet due: the count waits for its second to be over.
        assert!(rate.flush().is_some());
        assert_eq!(rate.causes.lock().unwrap()["spawn"].folded, 999);
    }
}
