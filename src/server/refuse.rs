//! Connections the server will not serve (it is full, or no thread could
//! be started for them) get a refusal the client can read, from one thread
//! for all of them (#12).
//!
//! Closing a socket whose request is still unread makes the kernel send a
//! reset, and a reset can destroy the 503 before the client reads it. So,
//! as RFC 9112 §9.6 asks: read the request head (bounded in bytes and
//! time), answer, shut down our sending side, and read and discard what
//! still comes until the client closes or a short deadline passes; only
//! then close.
//!
//! A full server must still be observable, so a refused connection whose
//! request is a plain `GET /metrics` or `GET /healthz` gets its answer
//! instead of a 503.
//!
//! On a TLS server (#15) refusals happen on the raw socket, before any
//! handshake, and a TLS client cannot read a plaintext 503. A refusal there
//! is honest but mute: no answer, our sending side shut at once (the
//! client's handshake fails with "connection closed"), then the same drain
//! so no reset arrives first. Finishing a TLS handshake here would cost
//! this one thread a handshake per refusal when the server is overloaded,
//! which is when refusals happen; a client retries either way.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::handshake::{self, reason_phrase};
use super::http::prometheus;
use super::lograte::RateLog;
use crate::metrics::{ServerCounters, add};

/// Most bytes of a refused request we look at for its head.
const HEAD_BYTES: usize = 4096;
/// How long a refused client gets to send its head.
const HEAD_WAIT: Duration = Duration::from_secs(1);
/// How long we keep reading after our answer, waiting for the client to
/// close first.
const DRAIN_WAIT: Duration = Duration::from_secs(2);
/// Most bytes we read and discard after our answer.
const DRAIN_BYTES: usize = 1 << 20;

/// Why a connection is refused.
#[derive(Debug, Clone, Copy)]
pub enum Why {
    /// At --max-connections (or the machine's capacity).
    Full,
    /// The connection's thread could not be started.
    NoThread,
}

impl Why {
    fn text(self) -> &'static str {
        match self {
            Why::Full => "server at its connection limit, try again later",
            Why::NoThread => "server cannot start a thread, try again later",
        }
    }
}

enum Phase {
    /// Reading the request head.
    Head,
    /// Writing our answer.
    Answer,
    /// Our side is shut; reading until the client closes.
    Drain,
}

struct Refusal {
    stream: TcpStream,
    why: Why,
    phase: Phase,
    buf: Vec<u8>,
    out: Vec<u8>,
    drained: usize,
    until: Instant,
}

struct Inner {
    counters: Arc<ServerCounters>,
    rate: Arc<RateLog>,
    held: AtomicUsize,
    max_held: usize,
    wake: UnixStream,
    stopping: AtomicBool,
    /// The server speaks TLS: refusals send nothing (see the module doc).
    tls: bool,
}

/// The refusing thread.
pub struct Refuser {
    inner: Arc<Inner>,
    tx: Sender<Refusal>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Refuser {
    /// Starts the thread; at most `max_held` refusals are in progress at
    /// once (each holds a descriptor).
    pub fn start(
        counters: Arc<ServerCounters>,
        rate: Arc<RateLog>,
        max_held: usize,
        tls: bool,
    ) -> io::Result<Refuser> {
        let (wake, woken) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        woken.set_nonblocking(true)?;
        let inner = Arc::new(Inner {
            counters,
            rate,
            held: AtomicUsize::new(0),
            max_held,
            wake,
            stopping: AtomicBool::new(false),
            tls,
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let thread = {
            let inner = Arc::clone(&inner);
            thread::Builder::new()
                .name("refuse".into())
                .stack_size(128 * 1024)
                .spawn(move || refuse_loop(&inner, &rx, woken))?
        };
        Ok(Refuser {
            inner,
            tx,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Refuses `stream`, readably when there is room for one more refusal
    /// in progress, else at once (a reset may then lose the answer).
    pub fn refuse(&self, stream: TcpStream, why: Why) {
        let inner = &self.inner;
        if stream.set_nonblocking(true).is_err()
            || inner.held.load(Ordering::Acquire) >= inner.max_held
        {
            count_refusal(inner, why);
            if !inner.tls {
                let _ = (&stream).write(&status_503(why));
            }
            let _ = stream.shutdown(Shutdown::Write);
            return;
        }
        inner.held.fetch_add(1, Ordering::AcqRel);
        let (phase, until) = if inner.tls {
            // Mute: straight to shutting our side and draining.
            count_refusal(inner, why);
            (Phase::Answer, Instant::now() + DRAIN_WAIT)
        } else {
            (Phase::Head, Instant::now() + HEAD_WAIT)
        };
        let refusal = Refusal {
            stream,
            why,
            phase,
            buf: Vec::new(),
            out: Vec::new(),
            drained: 0,
            until,
        };
        if self.tx.send(refusal).is_ok() {
            let _ = (&inner.wake).write(&[1]);
        }
    }

    /// Ends the thread; refusals in progress are closed.
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::Release);
        let _ = (&self.inner.wake).write(&[1]);
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

fn count_refusal(inner: &Inner, why: Why) {
    add(&inner.counters.connections_rejected_total, 1);
    inner.rate.log(log::Level::Warn, "refused", || {
        if inner.tls {
            format!(
                "refused a connection (TLS: closed unanswered): {}",
                why.text()
            )
        } else {
            format!("refused a connection with 503: {}", why.text())
        }
    });
}

fn status_503(why: Why) -> Vec<u8> {
    let body = why.text();
    format!(
        "HTTP/1.1 503 {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n{body}\n",
        reason_phrase(503),
        body.len() + 1
    )
    .into_bytes()
}

/// What to answer a refused connection, from what it sent.
fn answer(inner: &Inner, refusal: &Refusal) -> Vec<u8> {
    let head = match handshake::parse_head(&refusal.buf) {
        Ok(Some((head, _))) if !head.wants_upgrade() => Some(head),
        _ => None,
    };
    let path = head
        .as_ref()
        .map(|h| h.target.split('?').next().unwrap_or(""));
    let method_ok = head
        .as_ref()
        .is_some_and(|h| h.method == "GET" || h.method == "HEAD");
    let body = match path {
        Some("/metrics") if method_ok => Some((
            "text/plain; version=0.0.4; charset=utf-8",
            prometheus(&inner.counters),
        )),
        Some("/healthz") if method_ok => Some(("text/plain; charset=utf-8", "ok".to_string())),
        _ => None,
    };
    let Some((content_type, body)) = body else {
        count_refusal(inner, refusal.why);
        return status_503(refusal.why);
    };
    add(&inner.counters.http_requests_total, 1);
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if head.is_some_and(|h| h.method == "GET") {
        out.push_str(&body);
    }
    out.into_bytes()
}

/// Moves one refusal along as far as its socket allows; false when it is
/// finished and can be closed.
fn step(inner: &Inner, r: &mut Refusal, now: Instant) -> bool {
    loop {
        match r.phase {
            Phase::Head => {
                let complete = matches!(handshake::parse_head(&r.buf), Ok(Some(_)) | Err(_));
                if !complete && r.buf.len() < HEAD_BYTES && now < r.until {
                    let mut chunk = [0u8; 1024];
                    let room = (HEAD_BYTES - r.buf.len()).min(chunk.len());
                    match (&r.stream).read(&mut chunk[..room]) {
                        Ok(0) if r.buf.is_empty() => return false,
                        // Half-closed after part of a head: answer that.
                        Ok(0) => r.until = now,
                        Ok(n) => {
                            r.buf.extend_from_slice(&chunk[..n]);
                            continue;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return false,
                    }
                }
                r.out = answer(inner, r);
                r.buf = Vec::new();
                r.phase = Phase::Answer;
                r.until = now + DRAIN_WAIT;
            }
            Phase::Answer => {
                if r.out.is_empty() {
                    let _ = r.stream.shutdown(Shutdown::Write);
                    r.phase = Phase::Drain;
                    continue;
                }
                if now >= r.until {
                    return false;
                }
                match (&r.stream).write(&r.out) {
                    Ok(n) => {
                        r.out.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            Phase::Drain => {
                if now >= r.until || r.drained >= DRAIN_BYTES {
                    return false;
                }
                let mut sink = [0u8; 4096];
                match (&r.stream).read(&mut sink) {
                    Ok(0) => return false,
                    Ok(n) => r.drained += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
        }
    }
}

fn refuse_loop(inner: &Inner, incoming: &Receiver<Refusal>, mut woken: UnixStream) {
    let mut refusals: Vec<Refusal> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut sink = [0u8; 64];
    loop {
        if inner.stopping.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        refusals.extend(incoming.try_iter());
        let before = refusals.len();
        refusals.retain_mut(|r| step(inner, r, now));
        inner
            .held
            .fetch_sub(before - refusals.len(), Ordering::AcqRel);
        let mut timeout = inner.rate.flush().unwrap_or(Duration::from_secs(1));
        fds.clear();
        fds.push(libc::pollfd {
            fd: woken.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for r in &refusals {
            timeout = timeout.min(r.until.saturating_duration_since(now));
            let events = match r.phase {
                Phase::Answer => libc::POLLOUT,
                Phase::Head | Phase::Drain => libc::POLLIN,
            };
            fds.push(libc::pollfd {
                fd: r.stream.as_raw_fd(),
                events,
                revents: 0,
            });
        }
        // Round up: a deadline 0.4 ms away must not become a busy loop.
        let millis = (timeout.as_micros().div_ceil(1000)).min(1000) as i32;
        // SAFETY: `fds` is a live, initialised slice of pollfd for the
        // call's duration, and every descriptor in it belongs to a stream
        // `refusals` owns.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
        if ready > 0 && fds[0].revents != 0 {
            while matches!(woken.read(&mut sink), Ok(n) if n > 0) {}
        }
    }
}
