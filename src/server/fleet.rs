//! Chat rooms shared by several server instances through Redis pub/sub
//! (`--redis`, #18): what one instance's members send reaches the members
//! of the same room on every other instance.
//!
//! ```text
//! member's reader ─ hub (chat.rs) ─┬─> local outboxes (as without --redis)
//!                                  └─> Publisher::publish: try_send, never blocks
//!                                        │ bounded queue (full: dropped, counted)
//!                                  redis-publish thread: PUBLISH, batched in a pipeline
//!                                        │ Redis: channel wsbench:{db}:room:{room}
//! redis-subscribe thread (every instance): PSUBSCRIBE wsbench:{db}:room:*
//!        └─ not our own origin ─> Hub::deliver ─> local outboxes (non-blocking pushes)
//! ```
//!
//! Local members are served first and directly, as Socket.IO's Redis
//! adapter does, so a room keeps working whatever Redis does. Per-sender
//! order holds across instances: a sender's thread enqueues in order, one
//! publisher thread publishes in order on one connection, Redis delivers a
//! channel in order, and one subscriber thread pushes in order. A payload
//! carries its instance's origin, so an instance skips what it published
//! itself and no member gets its own message back.
//!
//! Delivery across instances is at most once. While Redis is down (at
//! start or later) the subscriber thread retries with a backoff, the hub
//! keeps its messages local, `wsbench_redis_connected` is 0, and the log
//! says so once when it goes and once when it is back. This module owns
//! the Redis connections and threads; rooms and their texts stay in
//! `chat.rs`.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use redis::{Client, Connection, ConnectionLike, RedisError};
use tungstenite::Message;

use super::chat::Hub;
use super::lograte::RateLog;
use crate::metrics::{ServerCounters, add};

/// A Redis that does not answer a connect within this is down for now.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest a Redis command may make no progress (a member's INCR, a
/// publish): a Redis that hangs costs a joining member at most this.
const IO_TIMEOUT: Duration = Duration::from_millis(500);

/// How often the subscriber looks up from its socket (shutdown, silence).
const TICK: Duration = Duration::from_millis(250);

/// A subscription silent this long is asked for a PING: a half-open
/// connection would otherwise look like a quiet fleet forever.
const PING_AFTER: Duration = Duration::from_secs(2);

/// Retries start this soon after a loss and double up to [`RETRY_MAX`]:
/// a restarted Redis is back in the fleet within a second of accepting
/// connections (#18 asks for 2 s), and a Redis that stays down costs one
/// failed connect a second.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// A subscription that lasted this long was not a flap.
const STEADY: Duration = Duration::from_secs(5);

/// Messages waiting for the publisher; past this they are dropped (and
/// counted) rather than block a member's reader.
const QUEUE: usize = 16 * 1024;

/// PUBLISHes sent in one pipeline: a burst costs one round trip per batch.
const BATCH: usize = 256;

/// Ids taken from Redis in one block at every (re)connection, for members
/// who join while Redis is down (see [`Ids`]).
const RESERVE: u64 = 1024;

/// What the subscriber tells the publisher.
enum Link {
    /// Subscribed: the publisher's new connection, made by the subscriber
    /// before it reports the link up, so an instance that prints its
    /// listening line holds every Redis connection it will hold (the tests'
    /// leak check counts descriptors from there).
    Up(Option<Connection>),
    /// Redis is gone: let go of the connection (and its descriptor).
    Down,
}

/// One message for the rest of the fleet.
struct Outgoing {
    room: String,
    payload: Vec<u8>,
}

/// The state every fleet thread and the hub's handle share.
struct Shared {
    client: Client,
    /// The URL as given, for log lines.
    url: String,
    /// `wsbench:{db}:room:`. Pub/sub channels are not scoped by database,
    /// so two fleets on one Redis with different `/DB` stay apart.
    prefix: String,
    /// The INCR key of member ids (keys are scoped by database).
    ids_key: String,
    /// This instance's mark on what it publishes.
    origin: u64,
    up: AtomicBool,
    stopping: AtomicBool,
    counters: Arc<ServerCounters>,
    rate: Arc<RateLog>,
    ids: Mutex<Ids>,
    /// Messages kept local because Redis was down, since it went.
    local_only: AtomicU64,
}

/// Where member ids come from, unique across the fleet.
///
/// Normally `INCR` on one Redis key, so ids are small and shared by every
/// instance. While Redis is down, ids come from `reserve`, a block this
/// instance took with `INCRBY` when it last connected: Redis handed that
/// block out once, so those ids cannot collide with anyone's. An instance
/// that never reached Redis, or used up its block, draws from
/// `2^52 + nonce·2^24 + n`, above any id Redis will reach and still exact
/// in a JavaScript number: there `nonce` is 28 random bits of this
/// instance, so two instances collide only if both lost Redis for that
/// long and drew the same nonce (one chance in 2^28).
struct Ids {
    con: Option<Connection>,
    reserve: Range<u64>,
    nonce: u64,
    next_local: u64,
    /// No reconnect of `con` from a member's thread before this.
    next_try: Instant,
}

impl Ids {
    fn fallback(&mut self) -> u64 {
        if let Some(id) = self.reserve.next() {
            return id;
        }
        self.next_local += 1;
        (1 << 52) + (self.nonce << 24) + (self.next_local & 0xff_ffff)
    }
}

impl Shared {
    fn lock_ids(&self) -> MutexGuard<'_, Ids> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn connect(&self) -> Result<Connection, RedisError> {
        let con = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        con.set_read_timeout(Some(IO_TIMEOUT))?;
        con.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(con)
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Release);
        self.counters
            .redis_connected
            .store(u64::from(up), Ordering::Relaxed);
    }
}

/// What the hub holds of the fleet: publish and draw ids, never blocking
/// for long.
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
    queue: Sender<Outgoing>,
}

impl Publisher {
    /// Hands `message` to the publisher thread for the other instances'
    /// members of `room`; never blocks. While Redis is down it stays local.
    pub fn publish(&self, room: &str, message: &Message) {
        let shared = &self.shared;
        if !shared.up.load(Ordering::Acquire) {
            shared.local_only.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let payload = match encode(shared.origin, message) {
            Some(payload) => payload,
            None => return,
        };
        let outgoing = Outgoing {
            room: room.to_string(),
            payload,
        };
        if let Err(TrySendError::Full(_)) = self.queue.try_send(outgoing) {
            add(&shared.counters.redis_dropped_total, 1);
            shared.rate.log(log::Level::Warn, "redis-queue", || {
                format!(
                    "redis: publish queue full ({QUEUE} messages): a message reached this instance's members only"
                )
            });
        }
    }

    /// A member id unique across the fleet (see [`Ids`]).
    pub fn next_id(&self) -> u64 {
        let shared = &self.shared;
        let mut ids = shared.lock_ids();
        let up = shared.up.load(Ordering::Acquire);
        // An INCR that failed while the link stayed up (a timeout) lost
        // its connection: connect again, at most once a retry interval,
        // rather than spend the reserve while Redis is there.
        if up && ids.con.is_none() && Instant::now() >= ids.next_try {
            ids.next_try = Instant::now() + RETRY_MAX;
            ids.con = shared
                .connect()
                .map_err(|e| log::debug!("redis: no id connection: {e}"))
                .ok();
        }
        if up && let Some(con) = ids.con.as_mut() {
            match redis::cmd("INCR").arg(&shared.ids_key).query::<u64>(con) {
                Ok(id) => return id,
                Err(e) => {
                    log::debug!("redis: INCR {} failed: {e}", shared.ids_key);
                    ids.con = None;
                }
            }
        }
        ids.fallback()
    }
}

/// The publisher's queue and the subscriber-to-publisher link channel.
type Pending = (Receiver<Outgoing>, Sender<Link>, Receiver<Link>);

/// The fleet of one server: its Redis link, a subscriber and a publisher
/// thread.
pub struct Fleet {
    shared: Arc<Shared>,
    queue: Sender<Outgoing>,
    /// What the threads take when they start.
    pending: Mutex<Option<Pending>>,
    /// Dropped to wake the threads for shutdown.
    stop: Mutex<Option<Sender<()>>>,
    stopped: Receiver<()>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Fleet {
    /// The link to `url`; nothing connects until [`Fleet::start`].
    pub fn new(
        url: &str,
        counters: Arc<ServerCounters>,
        rate: Arc<RateLog>,
    ) -> Result<Fleet, String> {
        let client = Client::open(url).map_err(|e| format!("bad --redis url `{url}`: {e}"))?;
        let db = client.get_connection_info().redis_settings().db();
        let mut random = [0u8; 12];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
            .map_err(|_| "no randomness for this instance's origin".to_string())?;
        let origin = u64::from_be_bytes(random[..8].try_into().expect("8 of 12 bytes"));
        let nonce = u64::from(u32::from_be_bytes(
            random[8..].try_into().expect("4 of 12 bytes"),
        )) & 0xfff_ffff;
        let (queue, outgoing) = crossbeam_channel::bounded(QUEUE);
        let (link, links) = crossbeam_channel::unbounded();
        let (stop, stopped) = crossbeam_channel::bounded(0);
        Ok(Fleet {
            shared: Arc::new(Shared {
                client,
                url: url.to_string(),
                prefix: format!("wsbench:{db}:room:"),
                ids_key: "wsbench:member-ids".to_string(),
                origin,
                up: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
                counters,
                rate,
                ids: Mutex::new(Ids {
                    con: None,
                    reserve: 0..0,
                    nonce,
                    next_local: 0,
                    next_try: Instant::now(),
                }),
                local_only: AtomicU64::new(0),
            }),
            queue,
            pending: Mutex::new(Some((outgoing, link, links))),
            stop: Mutex::new(Some(stop)),
            stopped,
            threads: Mutex::new(Vec::new()),
        })
    }

    pub fn publisher(&self) -> Publisher {
        Publisher {
            shared: Arc::clone(&self.shared),
            queue: self.queue.clone(),
        }
    }

    /// Starts the threads and waits for the first attempt to reach Redis,
    /// so that an instance that prints its listening line with Redis up is
    /// already subscribed. A Redis that is down only delays the start by a
    /// failed connect.
    pub fn start(&self, hub: Arc<Hub>) -> std::io::Result<()> {
        let Some((outgoing, link, links)) = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return Ok(());
        };
        let (first, tried) = crossbeam_channel::bounded(1);
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        let (shared, stopped) = (Arc::clone(&self.shared), self.stopped.clone());
        threads.push(
            thread::Builder::new()
                .name("redis-publish".into())
                .stack_size(256 * 1024)
                .spawn(move || publish_loop(&shared, &outgoing, &links, &stopped))?,
        );
        let (shared, stopped) = (Arc::clone(&self.shared), self.stopped.clone());
        threads.push(
            thread::Builder::new()
                .name("redis-subscribe".into())
                .stack_size(256 * 1024)
                .spawn(move || subscribe_loop(&shared, &hub, &link, &stopped, first))?,
        );
        // A connect, a PSUBSCRIBE and an INCRBY; the bound is for a Redis
        // that accepts and then says nothing.
        let _ = tried.recv_timeout(CONNECT_TIMEOUT + 3 * IO_TIMEOUT);
        Ok(())
    }

    /// Publishes what is still queued (the leave lines of a shutdown), then
    /// ends the threads and lets go of every connection.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        self.stop.lock().unwrap_or_else(|p| p.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
        self.shared.lock_ids().con = None;
        self.shared.set_up(false);
    }
}

/// `origin` (8 bytes, big-endian), `t` or `b`, then the message's bytes.
fn encode(origin: u64, message: &Message) -> Option<Vec<u8>> {
    let (kind, bytes): (u8, &[u8]) = match message {
        Message::Text(text) => (b't', text.as_bytes()),
        Message::Binary(bytes) => (b'b', bytes),
        _ => return None,
    };
    let mut payload = Vec::with_capacity(9 + bytes.len());
    payload.extend_from_slice(&origin.to_be_bytes());
    payload.push(kind);
    payload.extend_from_slice(bytes);
    Some(payload)
}

/// The origin and message of a payload; `None` for one that is not ours
/// (another program on the channel, or a text that is not UTF-8).
fn decode(payload: &[u8]) -> Option<(u64, Message)> {
    let origin = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    let bytes = payload.get(9..)?;
    let message = match payload[8] {
        b't' => Message::text(std::str::from_utf8(bytes).ok()?.to_string()),
        b'b' => Message::binary(bytes.to_vec()),
        _ => return None,
    };
    Some((origin, message))
}

/// Sleeps up to `wait` unless the fleet stops; false when it does.
fn pause(stopped: &Receiver<()>, wait: Duration) -> bool {
    !matches!(
        stopped.recv_timeout(wait),
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) | Ok(())
    )
}

fn subscribe_loop(
    shared: &Shared,
    hub: &Hub,
    link: &Sender<Link>,
    stopped: &Receiver<()>,
    first: Sender<()>,
) {
    let mut first = Some(first);
    let mut retry = RETRY_MIN;
    // Since when Redis has been out of reach, if it is.
    let mut down_since: Option<Instant> = None;
    let mut ever_up = false;
    // When the current subscription began.
    let mut up_at: Option<Instant> = None;
    loop {
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        let ended = subscribe(shared, hub, &mut |shared| {
            // Subscribed: from now on what members send is shared.
            refill_ids(shared);
            let publisher = shared
                .connect()
                .map_err(|e| log::debug!("redis: publisher: {e}"))
                .ok();
            let _ = link.send(Link::Up(publisher));
            shared.set_up(true);
            up_at = Some(Instant::now());
            match down_since.take() {
                None => log::info!(
                    "redis: joined the fleet at {} (channels {}*)",
                    shared.url,
                    shared.prefix
                ),
                Some(since) => log::info!(
                    "redis: back at {} after {:.1}s; {} messages reached this instance's members only meanwhile",
                    shared.url,
                    since.elapsed().as_secs_f64(),
                    shared.local_only.swap(0, Ordering::Relaxed)
                ),
            }
            ever_up = true;
            if let Some(first) = first.take() {
                let _ = first.send(());
            }
        });
        // Only a subscription that lasted starts the backoff over: a Redis
        // that accepts and drops us at once (maxclients, a proxy in front
        // of a dead one) is retried ever more slowly, so its two log lines
        // (lost, back) come at most once a retry interval.
        if up_at.take().is_some_and(|at| at.elapsed() >= STEADY) {
            retry = RETRY_MIN;
        }
        let was_up = shared.up.swap(false, Ordering::AcqRel);
        shared.set_up(false);
        if was_up {
            let _ = link.send(Link::Down);
            shared.lock_ids().con = None;
        }
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        let cause = match ended {
            Ok(()) => "connection closed".to_string(),
            Err(e) => e.to_string(),
        };
        // One line when Redis goes (or is not there at start), one when it
        // is back; the attempts between are debug.
        if down_since.is_none() {
            down_since = Some(Instant::now());
            shared.local_only.store(0, Ordering::Relaxed);
            if ever_up {
                log::warn!(
                    "redis: lost {}: {cause}; serving local rooms only, reconnecting",
                    shared.url
                );
            } else {
                log::warn!(
                    "redis: cannot reach {}: {cause}; serving local rooms only, retrying",
                    shared.url
                );
            }
        } else {
            log::debug!("redis: still no {}: {cause}", shared.url);
        }
        if let Some(first) = first.take() {
            let _ = first.send(());
        }
        if !pause(stopped, retry) {
            return;
        }
        retry = (retry * 2).min(RETRY_MAX);
    }
}

/// One subscription: connect, PSUBSCRIBE, call `subscribed`, then deliver
/// until the connection fails or the fleet stops.
fn subscribe(
    shared: &Shared,
    hub: &Hub,
    subscribed: &mut dyn FnMut(&Shared),
) -> Result<(), RedisError> {
    let mut con = shared.connect()?;
    let mut pubsub = con.as_pubsub();
    pubsub.psubscribe(format!("{}*", shared.prefix))?;
    pubsub.set_read_timeout(Some(TICK))?;
    subscribed(shared);
    let mut heard = Instant::now();
    loop {
        if shared.stopping.load(Ordering::Acquire) {
            return Ok(());
        }
        let msg = match pubsub.get_message() {
            Ok(msg) => msg,
            Err(e) if e.is_timeout() => {
                if heard.elapsed() >= PING_AFTER {
                    pubsub.ping::<redis::Value>()?;
                    heard = Instant::now();
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        heard = Instant::now();
        let Some(room) = msg.get_channel_name().strip_prefix(&shared.prefix) else {
            continue;
        };
        let Some((origin, message)) = decode(msg.get_payload_bytes()) else {
            log::debug!(
                "redis: a message on {} that is not ours",
                msg.get_channel_name()
            );
            continue;
        };
        if origin == shared.origin {
            continue;
        }
        hub.deliver(room, message, &shared.counters);
        // Counted once in the outboxes: whoever reads the count and then
        // joins the room knows the message is not still on its way.
        add(&shared.counters.redis_received_total, 1);
    }
}

/// Connects the id connection and takes a block of ids for the next time
/// Redis is down (see [`Ids`]).
fn refill_ids(shared: &Shared) {
    let mut con = match shared.connect() {
        Ok(con) => con,
        Err(e) => {
            log::debug!("redis: no id connection: {e}");
            return;
        }
    };
    let block = redis::cmd("INCRBY")
        .arg(&shared.ids_key)
        .arg(RESERVE)
        .query::<u64>(&mut con);
    let mut ids = shared.lock_ids();
    if let Ok(last) = block {
        ids.reserve = last + 1 - RESERVE..last + 1;
    }
    ids.con = Some(con);
}

fn publish_loop(
    shared: &Shared,
    outgoing: &Receiver<Outgoing>,
    links: &Receiver<Link>,
    stopped: &Receiver<()>,
) {
    let mut con: Option<Connection> = None;
    // A publisher that cannot connect while the subscriber can (rare) must
    // not try again for every message.
    let mut next_try = Instant::now();
    loop {
        crossbeam_channel::select! {
            recv(links) -> link => match link {
                Ok(Link::Up(new)) => con = new,
                Ok(Link::Down) => con = None,
                Err(_) => return,
            },
            recv(outgoing) -> first => {
                let Ok(first) = first else { return };
                let batch: Vec<Outgoing> =
                    std::iter::once(first).chain(outgoing.try_iter().take(BATCH - 1)).collect();
                publish(shared, &mut con, &mut next_try, batch);
            },
            recv(stopped) -> _ => {
                // Whatever members said before the shutdown goes out first.
                while !outgoing.is_empty() && con.is_some() {
                    let batch: Vec<Outgoing> = outgoing.try_iter().take(BATCH).collect();
                    publish(shared, &mut con, &mut next_try, batch);
                }
                return;
            },
        }
    }
}

fn publish(
    shared: &Shared,
    con: &mut Option<Connection>,
    next_try: &mut Instant,
    batch: Vec<Outgoing>,
) {
    let n = batch.len() as u64;
    if con.is_none() && shared.up.load(Ordering::Acquire) && Instant::now() >= *next_try {
        *next_try = Instant::now() + RETRY_MIN;
        *con = shared
            .connect()
            .map_err(|e| log::debug!("redis: publisher: {e}"))
            .ok();
    }
    let Some(c) = con.as_mut() else {
        add(&shared.counters.redis_dropped_total, n);
        return;
    };
    let mut pipe = redis::pipe();
    for out in &batch {
        pipe.cmd("PUBLISH")
            .arg(format!("{}{}", shared.prefix, out.room))
            .arg(&out.payload[..])
            .ignore();
    }
    match pipe.exec(c) {
        Ok(()) => add(&shared.counters.redis_published_total, n),
        Err(e) => {
            log::debug!("redis: publish failed: {e}");
            add(&shared.counters.redis_dropped_total, n);
            if !c.is_open() || e.is_io_error() || e.is_timeout() {
                *con = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_keep_origin_kind_and_bytes() {
        let text = encode(7, &Message::text("client 3: héllo")).unwrap();
        match decode(&text) {
            Some((7, Message::Text(t))) => assert_eq!(t.as_str(), "client 3: héllo"),
            other => panic!("{other:?}"),
        }
        let binary = encode(u64::MAX, &Message::binary(vec![0, 255, 9])).unwrap();
        match decode(&binary) {
            Some((u64::MAX, Message::Binary(b))) => assert_eq!(&b[..], [0, 255, 9]),
            other => panic!("{other:?}"),
        }
        assert!(encode(1, &Message::Ping(Default::default())).is_none());
    }

    #[test]
    fn foreign_or_broken_payloads_are_skipped() {
        assert!(decode(b"short").is_none());
        assert!(decode(b"12345678x rest").is_none());
        let mut bad = 1u64.to_be_bytes().to_vec();
        bad.push(b't');
        bad.extend_from_slice(&[0xff, 0xfe]);
        assert!(decode(&bad).is_none());
    }

    #[test]
    fn ids_without_redis_come_from_the_reserve_then_a_space_above_redis() {
        let mut ids = Ids {
            con: None,
            reserve: 5..7,
            nonce: 0xfff_ffff,
            next_local: 0,
            next_try: Instant::now(),
        };
        assert_eq!(ids.fallback(), 5);
        assert_eq!(ids.fallback(), 6);
        let local = ids.fallback();
        assert!(local > 1 << 52, "{local}");
        // Exact as a JavaScript number (2^53), whatever the nonce.
        assert!(local < 1 << 53, "{local}");
        assert_eq!(ids.fallback(), local + 1);
    }
}
