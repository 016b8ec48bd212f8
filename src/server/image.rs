//! `/` and `/image`: the text rule, and image statistics replied slow
//! (compute, then reply) or fast (reply `Received: {len}`, compute in the
//! background).
//!
//! Slow replies compute on the connection's thread: the reply waits for
//! them, and a hand-off would only add two wake-ups. Fast-mode jobs run on
//! one rayon pool (`--pool-threads`), so a burst of images queues for the
//! cores instead of fighting over them. They are bounded by `--max-pending`: a
//! connection that would exceed it waits for room before it acknowledges
//! (backpressure), and no accepted job is ever dropped: [`Jobs::drain`]
//! waits for all of them at shutdown.

use std::fs::{File, OpenOptions};
use std::io::{LineWriter, Write};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tungstenite::{Bytes, Message};

use super::conn::Stop;
use super::peer::Peer;
use crate::cli::ResponseMode;
use crate::metrics::{ServerCounters, add, sub};
use crate::stats::ImageStats;

/// The reply to a text message on `/`: `Pong!` if it contains `ping` in
/// any case, else an acknowledgement quoting it.
pub fn text_reply(text: &str) -> String {
    // ASCII case folding finds "ping" in every spelling Python's
    // `"ping" in text.lower()` does (no non-ASCII letter lowercases to one
    // of p, i, n, g alone) without allocating a lowered copy per message.
    if text
        .as_bytes()
        .windows(4)
        .any(|w| w.eq_ignore_ascii_case(b"ping"))
    {
        "Pong!".to_string()
    } else {
        format!("Data {text} received successfully.")
    }
}

/// The statistics pool, its bound on waiting jobs, and the stats log.
pub struct Jobs {
    pool: rayon::ThreadPool,
    pending: Pending,
    log: Option<Mutex<LineWriter<File>>>,
    counters: Arc<ServerCounters>,
}

/// One line of `--stats-log`, fields in SPEC.md's order.
#[derive(Serialize)]
struct LogLine {
    conn: u64,
    seq: u64,
    len: usize,
    max: u8,
    min: u8,
    mean: f64,
    median: f64,
    queued_us: u64,
    compute_us: u64,
}

impl Jobs {
    pub fn new(
        pool_threads: Option<u32>,
        max_pending: u32,
        stats_log: Option<&Path>,
        counters: Arc<ServerCounters>,
    ) -> Result<Jobs, String> {
        let threads = pool_threads
            .map(|n| n as usize)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("stats-{i}"))
            .build()
            .map_err(|e| format!("cannot start the statistics pool: {e}"))?;
        let log = match stats_log {
            Some(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        format!(
                            "cannot open stats log {}: {}",
                            path.display(),
                            crate::error::io_cause(&e)
                        )
                    })?;
                Some(Mutex::new(LineWriter::new(file)))
            }
            None => None,
        };
        Ok(Jobs {
            pool,
            pending: Pending::new(max_pending as u64),
            log,
            counters,
        })
    }

    /// Statistics of one image for a slow reply, on the connection's own
    /// thread. Measured side by side (#3): handing the 55 us kernel to the
    /// pool and waiting cost 18% of serial throughput (1,858 vs 2,187
    /// images/s) and 11% of parallel-1000 wall time, because two cores
    /// paid two wake-ups and rayon's idle spinning per image. Background
    /// jobs, which nobody waits for, are what the pool is for.
    pub fn compute_now(&self, pixels: &[u8]) -> Option<ImageStats> {
        ImageStats::compute(pixels)
    }

    /// Queues one image's statistics, waiting for room past `--max-pending`.
    pub fn submit(self: &Arc<Self>, conn: u64, seq: u64, pixels: Bytes) {
        self.pending.acquire();
        add(&self.counters.stats_jobs_pending, 1);
        let queued = Instant::now();
        let jobs = Arc::clone(self);
        self.pool.spawn(move || {
            let started = Instant::now();
            if let Some(stats) = ImageStats::compute(&pixels) {
                let compute = started.elapsed();
                jobs.log_result(conn, seq, &stats, started - queued, compute);
            }
            // For the next image a connection reads (buffers.rs: freed here,
            // on another thread than its reader's, it would be trimmed).
            super::buffers::give(pixels.into());
            sub(&jobs.counters.stats_jobs_pending, 1);
            add(&jobs.counters.stats_jobs_completed_total, 1);
            jobs.pending.release();
        });
    }

    fn log_result(
        &self,
        conn: u64,
        seq: u64,
        stats: &ImageStats,
        queued: Duration,
        compute: Duration,
    ) {
        log::info!("> {}", stats.reply());
        let Some(log) = &self.log else { return };
        let line = LogLine {
            conn,
            seq,
            len: stats.len,
            max: stats.max,
            min: stats.min,
            mean: stats.mean(),
            median: stats.median(),
            queued_us: queued.as_micros() as u64,
            compute_us: compute.as_micros() as u64,
        };
        let mut text = serde_json::to_string(&line).expect("plain numbers always serialise");
        text.push('\n');
        let mut file = log.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = file.write_all(text.as_bytes()) {
            log::error!("cannot write stats log: {}", crate::error::io_cause(&e));
        }
    }

    /// Waits until every queued job has finished (or `deadline`), then
    /// flushes the stats log. Returns the number of jobs still unfinished.
    pub fn drain(&self, deadline: Instant) -> u64 {
        let left = self.pending.wait_idle(deadline);
        if let Some(log) = &self.log {
            let _ = log.lock().unwrap_or_else(|p| p.into_inner()).flush();
        }
        left
    }
}

/// A counting bound on waiting jobs. A mutex and condvar rather than a
/// channel of tokens: shutdown must also wait for the count to reach zero.
struct Pending {
    count: Mutex<u64>,
    changed: Condvar,
    max: u64,
}

impl Pending {
    fn new(max: u64) -> Pending {
        Pending {
            count: Mutex::new(0),
            changed: Condvar::new(),
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.count.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn acquire(&self) {
        let mut count = self.lock();
        while *count >= self.max {
            count = self.changed.wait(count).unwrap_or_else(|p| p.into_inner());
        }
        *count += 1;
    }

    fn release(&self) {
        *self.lock() -= 1;
        self.changed.notify_all();
    }

    fn wait_idle(&self, deadline: Instant) -> u64 {
        let left = deadline.saturating_duration_since(Instant::now());
        let count = self
            .changed
            .wait_timeout_while(self.lock(), left, |count| *count > 0)
            .unwrap_or_else(|p| p.into_inner())
            .0;
        *count
    }
}

/// One connection on `/`: its response mode and its image sequence number.
pub struct ImageConn {
    pub jobs: Arc<Jobs>,
    pub response: ResponseMode,
    pub seq: u64,
}

impl ImageConn {
    pub fn on_message(&mut self, peer: &Peer, message: Message) -> Result<(), Stop> {
        let reply = match message {
            Message::Text(text) => text_reply(&text),
            Message::Binary(pixels) if pixels.is_empty() => "Error: empty image".to_string(),
            Message::Binary(pixels) => {
                self.seq += 1;
                match self.response {
                    ResponseMode::Slow => self
                        .jobs
                        .compute_now(&pixels)
                        .expect("the image is not empty")
                        .reply(),
                    ResponseMode::Fast => {
                        let len = pixels.len();
                        self.jobs.submit(peer.id, self.seq, pixels);
                        format!("Received: {len}")
                    }
                }
            }
            _ => return Ok(()),
        };
        peer.send(Message::text(reply))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rule_matches_ping_in_any_case() {
        assert_eq!(text_reply("ping"), "Pong!");
        assert_eq!(text_reply("Ping 7!"), "Pong!");
        assert_eq!(text_reply("xxPInGxx"), "Pong!");
        assert_eq!(text_reply("hello"), "Data hello received successfully.");
        assert_eq!(text_reply(""), "Data  received successfully.");
        assert_eq!(text_reply("pin g"), "Data pin g received successfully.");
    }

    #[test]
    fn pending_bound_blocks_until_release() {
        let pending = Arc::new(Pending::new(1));
        pending.acquire();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let p = Arc::clone(&pending);
        let waiter = std::thread::spawn(move || {
            p.acquire();
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        pending.release();
        rx.recv_timeout(Duration::from_secs(5))
            .expect("released room wakes the waiter");
        waiter.join().unwrap();
        pending.release();
        assert_eq!(pending.wait_idle(Instant::now()), 0);
    }
}
