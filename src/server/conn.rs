//! One server connection after its handshake, read by the thread that
//! owns it (#3).
//!
//! The socket is shared as an `Arc<Stream>` between two halves, never
//! duplicated: a second descriptor per connection would not let 10,000
//! connections fit in this machine's 20,000 descriptors.
//!
//! - the **reader**, a [`FrameReader`] of our own, owned by the connection's
//!   thread. It only reads: pings and closes come out as messages and
//!   [`Conn::run`] answers them through the writer. It reads a large
//!   payload straight into the message's buffer (see `reader.rs`).
//! - the **writer**, inside [`Peer`] (`peer.rs`), for any thread to send on.
//!
//! Heartbeats need no timer thread: the reader's socket has a read timeout
//! set to the next heartbeat event (ping due, pong overdue), so the blocked
//! `read` itself wakes up to send the ping or to give up on the peer. Every
//! byte read counts as liveness (the reader stamps the time), so a peer
//! busy sending a large message is never taken for dead.

use std::borrow::Cow;
use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::peer::{Peer, WriteHalf};
use super::reader::{FrameReader, ReadError};
use crate::metrics::{ServerCounters, add};
use crate::stream::Stream;

/// Read-ahead buffer of a connection's reader: frame headers and short
/// payloads go through it (4 KiB and up are read straight into the
/// message), and its pages are touched only as bytes arrive, so it is
/// most of what an idle connection's heap costs (#12).
pub const READ_AHEAD: usize = 4 * 1024;

/// Ping schedule of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    pub interval: Duration,
    pub timeout: Duration,
}

/// Why a handler stops its connection.
#[derive(Debug)]
pub enum Stop {
    /// Close with this code and reason.
    Close(CloseCode, Cow<'static, str>),
    /// A reply could not be written.
    Send(tungstenite::Error),
}

impl From<tungstenite::Error> for Stop {
    fn from(err: tungstenite::Error) -> Self {
        Stop::Send(err)
    }
}

/// How a connection ended, for the log line and the counters.
#[derive(Debug)]
pub enum End {
    /// The peer sent a close frame (code, if any) and got ours back.
    ClosedByPeer(Option<CloseCode>),
    /// We closed: a handler's decision, bad input, or shutdown.
    ClosedByUs(CloseCode, String),
    /// No frame within the ping timeout after a ping.
    PingTimeout,
    /// The peer did not read our replies within the write timeout.
    SlowPeer,
    /// The TCP connection dropped without a closing handshake.
    Lost(String),
}

/// Answers for the reader loop that are not data messages.
pub trait Control {
    /// Whether the server is shutting down (checked whenever `read` wakes).
    fn stopping(&self) -> bool;
}

/// A server-side connection after the handshake: the reader and its `Peer`.
pub struct Conn {
    pub peer: Arc<Peer>,
    reader: FrameReader,
}

impl Conn {
    /// Wraps a socket whose handshake was answered; `leftover` holds bytes
    /// the client sent after its request head.
    pub fn accept(
        id: u64,
        stream: Arc<Stream>,
        leftover: Vec<u8>,
        counters: Arc<ServerCounters>,
        max_message_size: usize,
        write_timeout: Duration,
    ) -> io::Result<Conn> {
        let addr = stream.peer_addr()?;
        stream.set_write_timeout(Some(write_timeout))?;
        let reader = FrameReader::new(Arc::clone(&stream), leftover, max_message_size);
        // Frames buffer up to 64 KiB until a flush, so a batch of small
        // messages is one write; `send` flushes every message itself. The
        // writer never reads (`reader` does): no read buffer, which
        // tungstenite would otherwise allocate for every connection.
        let config = WebSocketConfig::default()
            .read_buffer_size(0)
            .write_buffer_size(64 * 1024)
            .max_message_size(Some(max_message_size))
            .max_frame_size(Some(max_message_size));
        let writer = WebSocket::from_raw_socket(
            WriteHalf::new(Arc::clone(&stream)),
            Role::Server,
            Some(config),
        );
        let peer = Arc::new(Peer {
            id,
            addr,
            stream,
            writer: Mutex::new(writer),
            close_sent: AtomicBool::new(false),
            counters,
        });
        Ok(Conn { peer, reader })
    }

    /// Reads until the connection ends: data messages go to `on_message`,
    /// control frames and heartbeats are handled here.
    pub fn run(
        mut self,
        heartbeat: Heartbeat,
        control: &dyn Control,
        mut on_message: impl FnMut(&Peer, Message) -> Result<(), Stop>,
    ) -> End {
        // A TLS handshake (key exchange, certificate, ring's big-number
        // code) was this thread's deepest use of its stack by far: give
        // those pages back, so an idle wss connection keeps only what its
        // loop uses (24 -> 20 KiB of stack). A plain handshake touches no
        // more than the loop will: there the call saved nothing (19.2 KiB
        // per idle connection without it, 19.4 with) and its TLB shootdown
        // (an IPI to the other core) cost 4% of the setup rate.
        if self.peer.stream.is_tls() {
            crate::process::release_unused_stack();
        }
        let peer = Arc::clone(&self.peer);
        let mut timer = ReadTimer::new(heartbeat);
        loop {
            let now = Instant::now();
            if control.stopping() && !peer.close_sent() {
                let _ = peer.close(CloseCode::Away, "server shutting down");
            }
            match timer.due(now, self.reader.last_read) {
                Due::Nothing => {}
                Due::Ping => {
                    if peer.send(Message::Ping(Default::default())).is_err() {
                        return End::SlowPeer;
                    }
                    timer.ping_sent(Instant::now());
                }
                Due::Dead => {
                    // Counted before the close leaves, so whoever sees the
                    // close also sees the count.
                    add(&peer.counters.ping_timeouts_total, 1);
                    let _ = peer.try_close(CloseCode::Error, "keepalive ping timeout");
                    peer.abort();
                    return End::PingTimeout;
                }
            }
            timer.arm(&peer.stream, now);

            let message = match self.reader.read() {
                Ok(message) => message,
                Err(err) => match err {
                    ReadError::Again => continue,
                    ReadError::Closed => return End::Lost("closed".into()),
                    ReadError::Lost(why) => return End::Lost(why),
                    ReadError::Refuse(code, reason) => {
                        let _ = peer.close(code, &reason);
                        self.linger();
                        return End::ClosedByUs(code, reason);
                    }
                },
            };
            match message {
                Message::Text(_) | Message::Binary(_) => {
                    add(&peer.counters.messages_received_total, 1);
                    add(&peer.counters.bytes_received_total, message.len() as u64);
                    let handled = on_message(&peer, message);
                    match handled {
                        Ok(()) => {}
                        Err(Stop::Close(code, reason)) => {
                            let _ = peer.close(code, &reason);
                            self.linger();
                            return End::ClosedByUs(code, reason.into_owned());
                        }
                        Err(Stop::Send(err)) => return send_failed(&peer, err),
                    }
                }
                Message::Ping(payload) => {
                    if let Err(err) = peer.send(Message::Pong(payload)) {
                        return send_failed(&peer, err);
                    }
                }
                Message::Pong(_) | Message::Frame(_) => {}
                Message::Close(frame) => {
                    let code = frame.as_ref().map(|f| f.code);
                    // Echo the peer's code, as RFC 6455 5.5.1 asks; a close
                    // with no code is answered with none.
                    let reply = frame.map(|f| CloseFrame {
                        code: f.code,
                        reason: "".into(),
                    });
                    if !peer.close_sent.swap(true, Ordering::AcqRel) {
                        let _ = peer.writer().close(reply);
                    }
                    return End::ClosedByPeer(code);
                }
            }
        }
    }

    /// After sending a close, read and discard what the peer still sends
    /// (its close reply, the rest of an oversized message) for a short
    /// while: closing a socket with unread input makes the kernel send a
    /// reset, and the peer could lose our close frame to it.
    fn linger(&mut self) {
        let stream = &self.peer.stream;
        let _ = stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut sink = [0u8; 4096];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match stream.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

fn send_failed(peer: &Peer, err: tungstenite::Error) -> End {
    peer.abort();
    match err {
        tungstenite::Error::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            End::SlowPeer
        }
        other => End::Lost(other.to_string()),
    }
}

enum Due {
    Nothing,
    Ping,
    Dead,
}

/// The heartbeat as a read timeout. Setting SO_RCVTIMEO is a syscall, so it
/// is re-armed only when the armed value could overshoot the next event by
/// more than `slack`: a connection under load re-arms a few times a second,
/// an idle one once per event.
struct ReadTimer {
    heartbeat: Heartbeat,
    next_ping: Instant,
    ping_sent: Option<Instant>,
    armed_at: Option<Instant>,
    slack: Duration,
}

impl ReadTimer {
    fn new(heartbeat: Heartbeat) -> Self {
        let shortest = heartbeat.interval.min(heartbeat.timeout);
        ReadTimer {
            heartbeat,
            next_ping: Instant::now() + heartbeat.interval,
            ping_sent: None,
            armed_at: None,
            slack: (shortest / 20).clamp(Duration::from_millis(5), Duration::from_millis(500)),
        }
    }

    fn due(&mut self, now: Instant, last_read: Instant) -> Due {
        if let Some(sent) = self.ping_sent {
            if last_read >= sent {
                self.ping_sent = None;
            } else if now >= sent + self.heartbeat.timeout {
                return Due::Dead;
            }
        }
        if self.ping_sent.is_none() && now >= self.next_ping {
            return Due::Ping;
        }
        Due::Nothing
    }

    fn ping_sent(&mut self, at: Instant) {
        self.ping_sent = Some(at);
        self.next_ping = at + self.heartbeat.interval;
        self.armed_at = None;
    }

    fn next_event(&self) -> Instant {
        match self.ping_sent {
            Some(sent) => sent + self.heartbeat.timeout,
            None => self.next_ping,
        }
    }

    fn arm(&mut self, stream: &Stream, now: Instant) {
        if self
            .armed_at
            .is_some_and(|at| now.duration_since(at) < self.slack)
        {
            return;
        }
        let wait = self
            .next_event()
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        if stream.set_read_timeout(Some(wait)).is_ok() {
            self.armed_at = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_pings_then_declares_silence_dead() {
        let hb = Heartbeat {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(50),
        };
        let mut timer = ReadTimer::new(hb);
        let start = Instant::now();
        assert!(matches!(timer.due(start, start), Due::Nothing));
        let t1 = start + Duration::from_millis(100);
        assert!(matches!(timer.due(t1, start), Due::Ping));
        timer.ping_sent(t1);
        assert!(matches!(
            timer.due(t1 + Duration::from_millis(49), start),
            Due::Nothing
        ));
        // Any byte read after the ping counts as an answer.
        let mut alive = ReadTimer::new(hb);
        alive.ping_sent(t1);
        assert!(matches!(
            alive.due(
                t1 + Duration::from_millis(60),
                t1 + Duration::from_millis(1)
            ),
            Due::Nothing
        ));
        assert!(matches!(
            timer.due(t1 + Duration::from_millis(50), start),
            Due::Dead
        ));
    }
}
