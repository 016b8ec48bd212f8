//! Chat members' outgoing queues and the few threads that write them (#4,
//! #12).
//!
//! The hub pushes into a member's bounded [`Outbox`] and never touches a
//! socket. A member with something queued is scheduled once on the
//! [`Writers`] pool; a pool thread writes what the socket takes *without
//! blocking* (`MSG_DONTWAIT`) and moves on. A member whose socket is full
//! goes to the stall watcher, one thread in `poll(2)` over every stalled
//! socket, which hands it back to the pool when it can be written again.
//!
//! So a chat member costs one thread (its reader), like any connection;
//! it used to cost a writer thread of its own, which doubled the memory
//! maps a member takes and, waiting on a queue nobody closed, leaked with
//! its socket and slot when the member left.
//!
//! A member is dropped with 1008 when its queue overflows
//! (`--max-queue`/`--max-queue-bytes`) or when its socket takes no byte
//! for `--ping-timeout`; its close frame gets [`CLOSE_DEADLINE`] (at most
//! `--ping-timeout`) to leave,
//! then the socket is shut down, which wakes its reader to end the
//! connection.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use super::peer::{Peer, WriteHalf};

/// How long a dropped member's close frame may wait for room in its
/// socket before the connection is cut without it (never longer than
/// --ping-timeout): long enough for a client that reads slowly to reach it.
pub const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

/// Messages one pool turn takes from a queue before letting other members
/// go first: a busy room must not starve a quiet one.
const TURN: usize = 256;

/// Writer threads. Writes never block, so two keep up with what this
/// machine's two cores can fan out; more would only contend.
const WRITERS: usize = 2;

/// A member's fate, once it is no longer simply live.
const LIVE: u8 = 0;
/// Its queue overflowed: drop it with 1008.
const OVERFLOWED: u8 = 1;
/// Its socket took nothing for --ping-timeout: drop it with 1008.
const STALLED: u8 = 2;
/// Its close frame is queued; cut it at the close deadline.
const CLOSING: u8 = 3;
/// It left the room, or its connection is cut: nothing more to write.
const GONE: u8 = 4;

/// Why the pool dropped a member, for its connection's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    Overflowed,
    Stalled,
}

/// What became of a pushed message.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The queue just overflowed: the peer is being dropped (count it once).
    Overflowed,
    /// The peer was already being dropped, or has left.
    Dropped,
}

struct Queue {
    messages: VecDeque<Message>,
    bytes: usize,
    /// Since when the socket has taken no byte while we had some to write.
    stalled_since: Option<Instant>,
    /// Set once the member is to be dropped.
    dropped: Option<Dropped>,
}

/// One member's bounded queue of outgoing messages.
pub struct Outbox {
    peer: Arc<Peer>,
    queue: Mutex<Queue>,
    max_messages: usize,
    max_bytes: usize,
    fate: AtomicU8,
    /// In the pool's ready queue, being written, or watched: a push need
    /// not schedule it again.
    scheduled: AtomicBool,
    close_by: Mutex<Option<Instant>>,
    pool: Arc<Pool>,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `message`; never blocks.
    pub fn push(self: &Arc<Self>, message: Message) -> Push {
        if self.fate.load(Ordering::Acquire) != LIVE {
            return Push::Dropped;
        }
        let len = message.len();
        {
            let mut queue = self.lock();
            if queue.dropped.is_some() {
                return Push::Dropped;
            }
            if queue.messages.len() >= self.max_messages || queue.bytes + len > self.max_bytes {
                // Whatever is still queued would only delay the close frame.
                queue.messages = VecDeque::new();
                queue.bytes = 0;
                queue.dropped = Some(Dropped::Overflowed);
                drop(queue);
                self.fate.store(OVERFLOWED, Ordering::Release);
                self.schedule();
                // It may be waiting in the watcher for room it will never get.
                self.pool.wake_watcher();
                return Push::Overflowed;
            }
            queue.messages.push_back(message);
            queue.bytes += len;
        }
        self.schedule();
        Push::Queued
    }

    /// Why the pool dropped this member, if it did.
    pub fn dropped(&self) -> Option<Dropped> {
        self.lock().dropped
    }

    /// The member has left: discard its queue and let the pool forget it.
    pub fn leave(&self) {
        self.fate.store(GONE, Ordering::Release);
        let mut queue = self.lock();
        queue.messages = VecDeque::new();
        queue.bytes = 0;
        drop(queue);
        // The watcher may hold it (and so its socket) until it looks again.
        self.pool.wake_watcher();
    }

    /// Keeps the pool away until [`Outbox::release`]: a new chat member's
    /// room may push to it before its 101 is written.
    pub fn hold(&self) {
        self.scheduled.store(true, Ordering::Release);
    }

    /// Lets the pool write what was pushed while held.
    pub fn release(self: &Arc<Self>) {
        self.scheduled.store(false, Ordering::Release);
        let more = !self.lock().messages.is_empty() || self.fate.load(Ordering::Acquire) != LIVE;
        if more {
            self.schedule();
        }
    }

    fn schedule(self: &Arc<Self>) {
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            let _ = self.pool.ready.send(Arc::clone(self));
        }
    }
}

/// What a turn at a member's socket came to.
enum Turn {
    /// Everything queued is out.
    Done,
    /// The socket is full; wait until it takes more.
    Blocked,
    /// Another thread holds the writer; try again shortly.
    Busy,
    /// Its turn is over but more is queued: go to the back of the line.
    Yield,
    /// The socket failed: the connection is over.
    Failed,
}

/// A member waiting in the stall watcher.
struct Watched {
    outbox: Arc<Outbox>,
    /// When to hand it back to the pool even if its socket stays full.
    until: Instant,
    /// Poll its socket for room (false: only wait until `until`).
    poll: bool,
}

struct Pool {
    ready: Sender<Arc<Outbox>>,
    watch: Sender<Watched>,
    wake: UnixStream,
    stopping: AtomicBool,
    stall_limit: Duration,
    close_deadline: Duration,
}

impl Pool {
    fn wake_watcher(&self) {
        // A full pipe already holds a wake-up.
        let _ = (&self.wake).write(&[1]);
    }

    fn watch(&self, outbox: Arc<Outbox>, until: Instant, poll: bool) {
        let _ = self.watch.send(Watched {
            outbox,
            until,
            poll,
        });
        self.wake_watcher();
    }
}

/// The writer threads and the stall watcher of one server.
pub struct Writers {
    pool: Arc<Pool>,
    /// Dropped to stop the writers: outboxes keep the ready queue open.
    stop: Mutex<Option<Sender<()>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Writers {
    /// Starts the pool; a member whose socket takes nothing for
    /// `stall_limit` is dropped.
    pub fn start(stall_limit: Duration) -> io::Result<Writers> {
        let (ready, ready_rx) = crossbeam_channel::unbounded();
        let (watch, watch_rx) = crossbeam_channel::unbounded();
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let (wake, woken) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        woken.set_nonblocking(true)?;
        let pool = Arc::new(Pool {
            ready,
            watch,
            wake,
            stopping: AtomicBool::new(false),
            stall_limit,
            close_deadline: CLOSE_DEADLINE.min(stall_limit),
        });
        let mut threads = Vec::with_capacity(WRITERS + 1);
        for i in 0..WRITERS {
            let (pool, rx, stopped) = (Arc::clone(&pool), ready_rx.clone(), stopped.clone());
            threads.push(
                thread::Builder::new()
                    .name(format!("chat-writer-{i}"))
                    .stack_size(128 * 1024)
                    .spawn(move || write_loop(&pool, &rx, &stopped))?,
            );
        }
        let watcher = Arc::clone(&pool);
        threads.push(
            thread::Builder::new()
                .name("chat-stalls".into())
                .stack_size(128 * 1024)
                .spawn(move || watch_loop(&watcher, &watch_rx, woken))?,
        );
        Ok(Writers {
            pool,
            stop: Mutex::new(Some(stop)),
            threads: Mutex::new(threads),
        })
    }

    /// A new member's outbox, at most `max_messages` messages and
    /// `max_bytes` payload bytes.
    pub fn outbox(&self, peer: Arc<Peer>, max_messages: usize, max_bytes: usize) -> Arc<Outbox> {
        Arc::new(Outbox {
            peer,
            queue: Mutex::new(Queue {
                messages: VecDeque::new(),
                bytes: 0,
                stalled_since: None,
                dropped: None,
            }),
            max_messages,
            max_bytes,
            fate: AtomicU8::new(LIVE),
            scheduled: AtomicBool::new(false),
            close_by: Mutex::new(None),
            pool: Arc::clone(&self.pool),
        })
    }

    /// Ends the threads (members still queued are not written).
    pub fn stop(&self) {
        self.halt();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }

    fn halt(&self) {
        self.pool.stopping.store(true, Ordering::Release);
        self.stop.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.pool.wake_watcher();
    }
}

fn write_loop(pool: &Pool, ready: &Receiver<Arc<Outbox>>, stopped: &Receiver<()>) {
    loop {
        crossbeam_channel::select! {
            recv(ready) -> outbox => match outbox {
                Ok(outbox) => serve(pool, outbox),
                Err(_) => return,
            },
            recv(stopped) -> _ => return,
        }
    }
}

/// One turn at a member: write, close, or hand it to the watcher.
fn serve(pool: &Pool, outbox: Arc<Outbox>) {
    let now = Instant::now();
    match outbox.fate.load(Ordering::Acquire) {
        GONE => return,
        OVERFLOWED | STALLED => return start_close(pool, outbox, now),
        CLOSING => return finish_close(pool, outbox, now),
        _ => {}
    }
    match write_some(&outbox) {
        Turn::Done => {
            outbox.scheduled.store(false, Ordering::Release);
            // A push that came between our last look and the store above
            // saw `scheduled` still set and did not schedule: look again.
            let more =
                !outbox.lock().messages.is_empty() || outbox.fate.load(Ordering::Acquire) != LIVE;
            if more && !outbox.scheduled.swap(true, Ordering::AcqRel) {
                let _ = pool.ready.send(outbox);
            }
        }
        Turn::Yield => {
            let _ = pool.ready.send(outbox);
        }
        Turn::Blocked => {
            let since = outbox.lock().stalled_since.unwrap_or(now);
            pool.watch(outbox, since + pool.stall_limit, true);
        }
        Turn::Busy => pool.watch(outbox, now + Duration::from_millis(2), false),
        Turn::Failed => {
            outbox.fate.store(GONE, Ordering::Release);
            outbox.peer.abort();
        }
    }
}

/// Writes what the socket takes of the queue.
fn write_some(outbox: &Outbox) -> Turn {
    let peer = &outbox.peer;
    let attempt = peer.try_write_nonblocking(|ws| {
        // What an earlier turn left in tungstenite's buffer goes first.
        if let Err(err) = ws.flush() {
            return outcome(err);
        }
        let mut sent = 0;
        while sent < TURN {
            let batch: Vec<Message> = {
                let mut queue = outbox.lock();
                let take = queue.messages.len().min(TURN - sent);
                let batch: Vec<Message> = queue.messages.drain(..take).collect();
                queue.bytes -= batch.iter().map(Message::len).sum::<usize>();
                // A burst (a room's joins) grows the queue; an idle member
                // should not keep that capacity for good.
                if queue.messages.is_empty() && queue.messages.capacity() > 16 {
                    queue.messages = VecDeque::new();
                }
                batch
            };
            if batch.is_empty() {
                return Turn::Done;
            }
            sent += batch.len();
            let turn = write_batch(outbox, ws, batch);
            if !matches!(turn, Turn::Done) {
                return turn;
            }
        }
        Turn::Yield
    });
    let Some((turn, progress)) = attempt else {
        return Turn::Busy;
    };
    let mut queue = outbox.lock();
    match turn {
        Turn::Blocked if progress == 0 => {
            queue.stalled_since.get_or_insert_with(Instant::now);
        }
        _ => queue.stalled_since = None,
    }
    turn
}

/// Buffers `batch` in the writer and flushes it in one write where the
/// socket has room: one syscall for a burst is what lets a reading client
/// keep up with a fast room. What the socket did not take goes back to the
/// front of the queue, in order.
fn write_batch(outbox: &Outbox, ws: &mut WebSocket<WriteHalf>, batch: Vec<Message>) -> Turn {
    let (mut count, mut bytes) = (0, 0);
    let mut result = Ok(());
    let mut batch = batch.into_iter();
    for message in batch.by_ref() {
        let len = message.len() as u64;
        result = ws.write(message);
        // A write that would block has still queued the message in the
        // writer's buffer: it is sent, just not yet on the wire.
        if result.is_ok() || would_block(&result) {
            count += 1;
            bytes += len;
        }
        if result.is_err() {
            break;
        }
    }
    let rest: Vec<Message> = batch.collect();
    if !rest.is_empty() {
        let mut queue = outbox.lock();
        if queue.dropped.is_none() {
            queue.bytes += rest.iter().map(Message::len).sum::<usize>();
            for message in rest.into_iter().rev() {
                queue.messages.push_front(message);
            }
        }
    }
    if result.is_ok() {
        result = ws.flush();
    }
    outbox.peer.count_sent(count, bytes);
    match result {
        Ok(()) => Turn::Done,
        Err(err) => outcome(err),
    }
}

fn would_block(result: &tungstenite::Result<()>) -> bool {
    matches!(result, Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock)
}

fn outcome(err: tungstenite::Error) -> Turn {
    match err {
        tungstenite::Error::Io(e) if e.kind() == io::ErrorKind::WouldBlock => Turn::Blocked,
        tungstenite::Error::Io(e) if e.kind() == io::ErrorKind::Interrupted => Turn::Yield,
        _ => Turn::Failed,
    }
}

/// Queues the 1008 behind whatever the peer has not read yet and gives it
/// [`CLOSE_DEADLINE`] to leave.
fn start_close(pool: &Pool, outbox: Arc<Outbox>, now: Instant) {
    let reason = match outbox.fate.load(Ordering::Acquire) {
        OVERFLOWED => "outgoing queue full: client is not reading",
        _ => "client is not reading",
    };
    let close_by = now + pool.close_deadline;
    *outbox.close_by.lock().unwrap_or_else(|p| p.into_inner()) = Some(close_by);
    outbox.fate.store(CLOSING, Ordering::Release);
    let peer = Arc::clone(&outbox.peer);
    match peer.try_write_nonblocking(|ws| peer.queue_close(ws, CloseCode::Policy, reason)) {
        Some((Ok(()), _)) => cut(&outbox),
        Some((result, _)) if would_block(&result) => {
            pool.watch(outbox, close_by, true);
        }
        Some(_) => cut(&outbox),
        None => pool.watch(outbox, now + Duration::from_millis(2), false),
    }
}

/// Flushes a queued close frame until it is out or its deadline passes.
fn finish_close(pool: &Pool, outbox: Arc<Outbox>, now: Instant) {
    let close_by = outbox
        .close_by
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or(now);
    if now >= close_by {
        return cut(&outbox);
    }
    let peer = Arc::clone(&outbox.peer);
    let queued = peer.close_sent();
    match peer.try_write_nonblocking(|ws| {
        if queued {
            ws.flush()
        } else {
            peer.queue_close(ws, CloseCode::Policy, "client is not reading")
        }
    }) {
        Some((Ok(()), _)) => cut(&outbox),
        Some((result, _)) if would_block(&result) => {
            pool.watch(outbox, close_by, true);
        }
        Some(_) => cut(&outbox),
        None => pool.watch(
            outbox,
            (now + Duration::from_millis(2)).min(close_by),
            false,
        ),
    }
}

/// Ends the connection: its reader wakes to a closed socket and leaves.
/// The close frame, if it left, is ahead of the FIN.
fn cut(outbox: &Outbox) {
    outbox.fate.store(GONE, Ordering::Release);
    outbox.peer.abort();
}

fn watch_loop(pool: &Pool, incoming: &Receiver<Watched>, mut woken: UnixStream) {
    let mut watched: Vec<Watched> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut sink = [0u8; 64];
    loop {
        if pool.stopping.load(Ordering::Acquire) {
            return;
        }
        watched.extend(incoming.try_iter());
        watched.retain(|w| w.outbox.fate.load(Ordering::Acquire) != GONE);
        let now = Instant::now();
        // A member that overflowed while it waited for room is dropped now,
        // not when its wait is up.
        for w in watched.iter_mut() {
            if w.outbox.fate.load(Ordering::Acquire) == OVERFLOWED {
                w.until = now;
            }
        }
        // Hand back every member whose socket has room or whose time is up.
        let mut i = 0;
        let mut next = now + Duration::from_secs(1);
        fds.clear();
        fds.push(pollfd(woken.as_raw_fd()));
        while i < watched.len() {
            if now >= watched[i].until {
                let w = watched.swap_remove(i);
                let fate = w.outbox.fate.load(Ordering::Acquire);
                if w.poll && fate == LIVE {
                    // No byte left for --ping-timeout.
                    let mut queue = w.outbox.lock();
                    queue.dropped.get_or_insert(Dropped::Stalled);
                    drop(queue);
                    w.outbox.fate.store(STALLED, Ordering::Release);
                }
                let _ = pool.ready.send(w.outbox);
                continue;
            }
            next = next.min(watched[i].until);
            i += 1;
        }
        for w in &watched {
            let mut fd = pollfd(w.outbox.peer.stream().as_raw_fd());
            if !w.poll {
                fd.fd = -1; // poll ignores negative descriptors
            }
            fd.events = libc::POLLOUT;
            fds.push(fd);
        }
        let timeout = next.saturating_duration_since(now).as_millis().min(1000) as i32;
        // SAFETY: `fds` is a live, initialised slice of pollfd for the
        // call's duration; every descriptor in it is kept open by the Arc
        // it came from, which `watched` holds.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if ready <= 0 {
            continue;
        }
        if fds[0].revents != 0 {
            while matches!(woken.read(&mut sink), Ok(n) if n > 0) {}
        }
        // Walk backwards so swap_remove keeps the pairing of the rest.
        for k in (0..watched.len()).rev() {
            if fds[k + 1].revents != 0 {
                let w = watched.swap_remove(k);
                let _ = pool.ready.send(w.outbox);
            }
        }
    }
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        self.halt();
    }
}
