//! One member's listening side: reads every message the room sends it,
//! times each publication's delivery from its intended send time, and
//! keeps, per sender, which sequence numbers arrived, so loss, duplicates
//! and reordering are counted exactly, not inferred from totals.
//!
//! A publication is the text `fan {sender} {seq} {intended_us}` (padded),
//! relayed by the server as `client {id}: fan …`; anything else (joins,
//! leaves, greetings) is counted as a join line or ignored.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tungstenite::{Message, WebSocket};

use crate::client::connect::ReadHalf;
use crate::hdrlog::Intervals;
use crate::metrics::Latency;

pub const JOIN: &str = "Hey all, a new client has joined us";

/// How long a slow member waits after each publication it reads while
/// the publishing runs.
pub const SLOW_READ: Duration = Duration::from_millis(100);

/// What one sender's publications looked like at one member.
#[derive(Default, Clone)]
pub struct FromSender {
    /// Bit `seq` set once `seq` arrived.
    seen: Vec<u64>,
    pub distinct: u64,
    pub duplicated: u64,
    /// Arrived after a higher sequence number from the same sender.
    pub out_of_order: u64,
    highest: Option<u64>,
}

impl FromSender {
    fn add(&mut self, seq: u64) {
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicated += 1;
            return;
        }
        self.seen[word] |= bit;
        self.distinct += 1;
        match self.highest {
            Some(h) if seq < h => self.out_of_order += 1,
            _ => self.highest = Some(seq),
        }
    }
}

/// Everything one member saw.
pub struct Seen {
    pub from: Vec<FromSender>,
    pub latency: Latency,
    pub intervals: Intervals,
    /// The close the server sent, if it sent one.
    pub close: Option<u16>,
    /// The connection ended (close, reset) before the run did.
    pub ended_early: bool,
}

/// What the run shares with a member's reader.
pub struct Shared {
    /// This member's distinct publications so far (the drain waits on it).
    pub delivered: AtomicU64,
    /// Its connection is over.
    pub ended: AtomicBool,
    /// Joins heard: the run starts publishing once every member heard all
    /// it is owed.
    pub joins: AtomicU64,
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            delivered: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            joins: AtomicU64::new(0),
        })
    }
}

/// Wakes the run when a member moves (its first join line, a delivery
/// while draining, its end), so the run waits for those events rather than
/// looking at the clock.
#[derive(Default)]
pub struct Progress {
    lock: Mutex<()>,
    moved: Condvar,
}

impl Progress {
    pub fn notify(&self) {
        // Taken and dropped: a waiter between its check and its wait holds
        // the lock, so the wake-up cannot fall between the two.
        drop(self.lock.lock().unwrap_or_else(|p| p.into_inner()));
        self.moved.notify_all();
    }

    /// Waits until `done()` or `deadline`; returns `done()`.
    pub fn wait_until(&self, deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
        let mut guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if done() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = self
                .moved
                .wait_timeout(guard, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// `(sender, seq, intended µs)` from `… fan {sender} {seq} {intended_us} …`.
pub fn parse(text: &str) -> Option<(usize, u64, u64)> {
    let (_, rest) = text.split_once("fan ")?;
    let mut words = rest.split(' ');
    let sender = words.next()?.parse().ok()?;
    let seq = words.next()?.parse().ok()?;
    let at = words.next()?.parse().ok()?;
    Some((sender, seq, at))
}

pub struct Reader {
    pub me: usize,
    pub members: usize,
    pub epoch: Instant,
    pub slow: bool,
    /// Set when publishing is over: a slow member then reads at full
    /// speed, so it reaches a close the server queued behind its backlog.
    pub draining: Arc<AtomicBool>,
    pub shared: Arc<Shared>,
    pub progress: Arc<Progress>,
    /// Where the interval log's seconds start.
    pub intervals_from: Instant,
}

impl Reader {
    /// Reads until the socket is shut down or the server ends it.
    pub fn run(self, mut ws: WebSocket<ReadHalf>) -> Seen {
        let mut seen = Seen {
            from: vec![FromSender::default(); self.members],
            latency: Latency::default(),
            intervals: Intervals::new(self.intervals_from),
            close: None,
            ended_early: false,
        };
        loop {
            match ws.read() {
                Ok(Message::Text(text)) => {
                    let now = Instant::now();
                    let Some((sender, seq, at_us)) = parse(&text) else {
                        if text.as_str() == JOIN
                            && self.shared.joins.fetch_add(1, Ordering::Release) == 0
                        {
                            self.progress.notify();
                        }
                        continue;
                    };
                    if sender >= self.members || sender == self.me {
                        continue;
                    }
                    let late =
                        now.saturating_duration_since(self.epoch + Duration::from_micros(at_us));
                    let from = &mut seen.from[sender];
                    let before = from.distinct;
                    from.add(seq);
                    if from.distinct > before {
                        seen.latency.record(late);
                        seen.intervals.record(now, late);
                        self.shared.delivered.fetch_add(1, Ordering::Release);
                        if self.draining.load(Ordering::Acquire) {
                            self.progress.notify();
                        }
                    }
                    if self.slow && !self.draining.load(Ordering::Acquire) {
                        std::thread::sleep(SLOW_READ);
                    }
                }
                Ok(Message::Close(frame)) => {
                    // 1005: a close frame with no code in it.
                    seen.close = Some(frame.map_or(1005, |f| u16::from(f.code)));
                    seen.ended_early = !self.draining.load(Ordering::Acquire);
                    break;
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // Our own shutdown at the end, or the server cut us.
                    seen.ended_early = !self.draining.load(Ordering::Acquire);
                    break;
                }
            }
        }
        self.shared.ended.store(true, Ordering::Release);
        self.progress.notify();
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_publications_parse_with_or_without_padding() {
        assert_eq!(parse("client 7: fan 3 12 4567"), Some((3, 12, 4567)));
        assert_eq!(
            parse("client 7: fan 3 12 4567 xxxxxxxx"),
            Some((3, 12, 4567))
        );
        assert_eq!(parse(JOIN), None);
        assert_eq!(parse("client 7 has left"), None);
    }

    #[test]
    fn loss_duplicates_and_order_are_counted_per_sender() {
        let mut from = FromSender::default();
        for seq in [0, 1, 3, 2, 3, 200] {
            from.add(seq);
        }
        assert_eq!(from.distinct, 5);
        assert_eq!(from.duplicated, 1);
        assert_eq!(from.out_of_order, 1);
    }
}
