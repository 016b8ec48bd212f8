//! One WebSocket connection: read by the thread that owns it, written by any
//! thread, over one TCP socket. Also the client-side connect.
//!
//! # Design (see #3)
//!
//! The socket is shared as an `Arc<TcpStream>` (`&TcpStream` reads and
//! writes), never `try_clone`d: a duplicated descriptor per connection would
//! not let 10,000 connections fit in this machine's 20,000 descriptors.
//! Two halves sit on that one socket:
//!
//! - the **reader**, a [`FrameReader`] of our own, owned by the connection's
//!   thread. It only reads: pings and closes come out as messages and
//!   [`Conn::run`] answers them through the writer. It reads a large
//!   payload straight into the message's buffer (see `reader.rs` for why
//!   not tungstenite's reader, which clients still use via `ReadHalf`).
//! - the **writer**, a `Mutex<WebSocket<WriteHalf>>` inside [`Peer`]. Any
//!   thread holding an `Arc<Peer>` sends a whole message under the lock: the
//!   connection's own thread writes its replies there directly (an
//!   uncontended lock, tens of ns), so a request/reply pays no thread
//!   hand-off; the shutdown path sends its 1001 there too. The socket's write
//!   timeout bounds how long a peer that does not read can hold the lock.
//!
//! A thread that must never wait on a peer at all (the chat hub fanning a
//! message out to a room, #4) does not lock the writer: it pushes into the
//! peer's bounded outbox (`server/outbox.rs`), and a small shared pool
//! writes it with [`Peer::try_write_nonblocking`]. Every connection, a chat
//! member included, costs exactly one thread (#12).
//!
//! Heartbeats need no timer thread either: the reader's socket has a read
//! timeout set to the next heartbeat event (ping due, pong overdue), so the
//! blocked `read` itself wakes up to send the ping or to give up on the peer.
//! Every byte read counts as liveness (the reader stamps the time), so a
//! peer busy sending a large message is never taken for dead.

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use crate::error::io_cause;
use crate::metrics::{ServerCounters, add};

pub mod masked;
mod reader;

pub use reader::{FrameReader, ReadError, Replay, Source};

/// Read-ahead buffer of a connection's reader (server and client): frame
/// headers and short payloads go through it, so it bounds what one `read`
/// asks the kernel for when nothing large is in flight. The server's reader
/// touches its pages only as bytes arrive; tungstenite's client reader
/// zero-fills it on every read, so keep it small.
pub const READ_CHUNK: usize = 4 * 1024;

/// The reading side of the socket: reads count as liveness, writes vanish.
///
/// A client builds it unmuted, runs tungstenite's handshake over it (so
/// bytes the server sent right after its 101 stay in the reader's buffer),
/// then mutes it ([`connect_split`]).
pub struct ReadHalf {
    stream: Arc<TcpStream>,
    last_read: Instant,
    muted: bool,
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (&*self.stream).read(buf)?;
        self.last_read = Instant::now();
        Ok(n)
    }
}

impl Write for ReadHalf {
    // Once muted, tungstenite's own pong and close replies land here;
    // `Conn::run` (or the client's writer) sends them through the writer
    // instead, so the two never interleave.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.muted {
            return Ok(buf.len());
        }
        (&*self.stream).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The writing side of the socket. tungstenite asks for `Read` too but never
/// reads on the write path.
///
/// Writes block (up to the socket's write timeout) unless `nonblocking` is
/// set: the chat writer pool sets it while it holds the writer, so one
/// member's full socket never holds a pool thread. It is a per-call flag
/// (`MSG_DONTWAIT`), not `O_NONBLOCK`, because the connection's reader
/// blocks on the same socket.
pub struct WriteHalf {
    stream: Arc<TcpStream>,
    nonblocking: bool,
    written: u64,
}

impl WriteHalf {
    pub fn new(stream: Arc<TcpStream>) -> WriteHalf {
        WriteHalf {
            stream,
            nonblocking: false,
            written: 0,
        }
    }
}

impl Read for WriteHalf {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }
}

impl Write for WriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = if self.nonblocking {
            socket2::SockRef::from(&*self.stream).send_with_flags(buf, libc::MSG_DONTWAIT)?
        } else {
            (&*self.stream).write(buf)?
        };
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What other threads may hold of a connection: its id and its writer.
pub struct Peer {
    pub id: u64,
    pub addr: SocketAddr,
    stream: Arc<TcpStream>,
    writer: Mutex<WebSocket<WriteHalf>>,
    close_sent: AtomicBool,
    counters: Arc<ServerCounters>,
}

impl Peer {
    fn writer(&self) -> MutexGuard<'_, WebSocket<WriteHalf>> {
        // A panic while holding the lock leaves a frame half-written at
        // worst; the connection is closed right after, so poisoning adds
        // nothing.
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends one whole message. Blocks at most the socket's write timeout.
    pub fn send(&self, message: Message) -> tungstenite::Result<()> {
        let data_len = match &message {
            Message::Text(text) => Some(text.len()),
            Message::Binary(bytes) => Some(bytes.len()),
            _ => None,
        };
        finish_interrupted(&mut self.writer(), |w| w.send(message))?;
        if let Some(len) = data_len {
            add(&self.counters.messages_sent_total, 1);
            add(&self.counters.bytes_sent_total, len as u64);
        }
        Ok(())
    }

    /// Sends several messages with one flush (one lock, one syscall for
    /// small messages).
    pub fn send_all(&self, messages: impl Iterator<Item = Message>) -> tungstenite::Result<()> {
        let mut writer = self.writer();
        let (mut count, mut bytes) = (0, 0);
        for message in messages {
            if matches!(message, Message::Text(_) | Message::Binary(_)) {
                count += 1;
                bytes += message.len() as u64;
            }
            writer.write(message)?;
        }
        finish_interrupted(&mut writer, |w| w.flush())?;
        add(&self.counters.messages_sent_total, count);
        add(&self.counters.bytes_sent_total, bytes);
        Ok(())
    }

    /// Sends a close frame once; later calls do nothing.
    pub fn close(&self, code: CloseCode, reason: &str) -> tungstenite::Result<()> {
        if self.close_sent.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let frame = CloseFrame {
            code,
            reason: truncate_reason(reason).into(),
        };
        self.writer().close(Some(frame))
    }

    /// Like [`Peer::close`], but never waits: not for another thread in
    /// the middle of a write (false), nor for a socket that is full (the
    /// frame stays queued behind what the peer has not read). The shutdown
    /// path must not wait on one slow peer while the others wait for their
    /// 1001.
    pub fn try_close(&self, code: CloseCode, reason: &str) -> bool {
        if self.close_sent.load(Ordering::Acquire) {
            return true;
        }
        self.try_write_nonblocking(|ws| {
            let _ = self.queue_close(ws, code, reason);
        })
        .is_some()
    }

    /// Runs `f` on the writer with writes that never block, if no other
    /// thread holds it; returns what `f` returned and how many bytes
    /// reached the socket meanwhile (progress, for the stall watch).
    pub fn try_write_nonblocking<R>(
        &self,
        f: impl FnOnce(&mut WebSocket<WriteHalf>) -> R,
    ) -> Option<(R, u64)> {
        let mut writer = match self.writer.try_lock() {
            Ok(writer) => writer,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        let before = writer.get_ref().written;
        writer.get_mut().nonblocking = true;
        let result = f(&mut writer);
        writer.get_mut().nonblocking = false;
        Some((result, writer.get_ref().written - before))
    }

    /// Queues a close frame on a writer the caller holds (once per
    /// connection) and flushes what the socket takes.
    pub fn queue_close(
        &self,
        ws: &mut WebSocket<WriteHalf>,
        code: CloseCode,
        reason: &str,
    ) -> tungstenite::Result<()> {
        if self.close_sent.swap(true, Ordering::AcqRel) {
            return ws.flush();
        }
        let frame = CloseFrame {
            code,
            reason: truncate_reason(reason).into(),
        };
        ws.close(Some(frame))
    }

    /// Counts data messages another thread wrote through
    /// [`Peer::try_write_nonblocking`].
    pub fn count_sent(&self, messages: u64, bytes: u64) {
        add(&self.counters.messages_sent_total, messages);
        add(&self.counters.bytes_sent_total, bytes);
    }

    /// The socket, for polling it for room to write.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn close_sent(&self) -> bool {
        self.close_sent.load(Ordering::Acquire)
    }

    /// Wakes the reader blocked on this socket and ends the connection.
    pub fn abort(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Runs a tungstenite write and, if a signal interrupted it, flushes
/// until the buffered frame is out: tungstenite keeps what it could not
/// write, so nothing is lost or sent twice.
pub fn finish_interrupted<S: Read + Write>(
    ws: &mut WebSocket<S>,
    op: impl FnOnce(&mut WebSocket<S>) -> tungstenite::Result<()>,
) -> tungstenite::Result<()> {
    let mut result = op(ws);
    while matches!(&result, Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted)
    {
        result = ws.flush();
    }
    result
}

/// A close reason must fit a control frame (125 bytes with the code).
fn truncate_reason(reason: &str) -> &str {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

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
        stream: TcpStream,
        leftover: Vec<u8>,
        counters: Arc<ServerCounters>,
        max_message_size: usize,
        write_timeout: Duration,
    ) -> io::Result<Conn> {
        let addr = stream.peer_addr()?;
        stream.set_write_timeout(Some(write_timeout))?;
        let stream = Arc::new(stream);
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_CHUNK)
            .write_buffer_size(0)
            .max_message_size(Some(max_message_size))
            .max_frame_size(Some(max_message_size));
        let reader = FrameReader::new(Arc::clone(&stream), leftover, max_message_size);
        // Frames buffer up to 64 KiB until a flush, so a batch of small
        // messages is one write; `send` flushes every message itself.
        let writer = WebSocket::from_raw_socket(
            WriteHalf::new(Arc::clone(&stream)),
            Role::Server,
            Some(config.write_buffer_size(64 * 1024)),
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
            match (&**stream).read(&mut sink) {
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

    fn arm(&mut self, stream: &TcpStream, now: Instant) {
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

/// A `ws://host:port/path?query` URL, split for connecting.
#[derive(Debug, Clone)]
pub struct WsUrl {
    pub text: String,
    pub host: String,
    pub port: u16,
}

impl WsUrl {
    pub fn parse(text: &str) -> Result<WsUrl, String> {
        let uri: tungstenite::http::Uri = text.parse().map_err(|e| format!("{e}"))?;
        match uri.scheme_str() {
            Some("ws") => {}
            Some("wss") => return Err("wss:// (TLS) is not supported".into()),
            _ => return Err("the scheme must be ws://".into()),
        }
        let host = uri.host().ok_or("no host")?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(80);
        Ok(WsUrl {
            text: text.to_string(),
            host,
            port,
        })
    }
}

/// A client connection and how long its two set-up phases took.
pub struct Connected {
    pub socket: WebSocket<TcpStream>,
    pub tcp: Duration,
    pub handshake: Duration,
}

/// Why a client connection could not be set up; the text is the cause only,
/// callers prefix `cannot connect to URL: `.
#[derive(Debug, Clone)]
pub enum ConnectError {
    Resolve(String),
    Tcp(String),
    Handshake(String),
    /// The server answered the upgrade with this HTTP status.
    Status(u16),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Resolve(why) => write!(f, "cannot resolve host: {why}"),
            ConnectError::Tcp(why) => f.write_str(why),
            ConnectError::Handshake(why) => write!(f, "handshake failed: {why}"),
            ConnectError::Status(code) => write!(f, "server answered HTTP {code}"),
        }
    }
}

/// Client config: replies are short, so a small read buffer keeps a
/// thousand parallel clients light.
pub fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_CHUNK)
        .write_buffer_size(0)
}

/// TCP connect (trying every resolved address), then the WebSocket
/// handshake, each bounded by `timeout`. The socket keeps `timeout` as its
/// read and write timeout.
pub fn connect(url: &WsUrl, timeout: Duration) -> Result<Connected, ConnectError> {
    let started = Instant::now();
    let stream = tcp_connect(&url.host, url.port, timeout)?;
    let tcp = started.elapsed();
    let shaken = Instant::now();
    let (socket, _response) =
        tungstenite::client::client_with_config(url.text.as_str(), stream, Some(client_config()))
            .map_err(handshake_error)?;
    Ok(Connected {
        socket,
        tcp,
        handshake: shaken.elapsed(),
    })
}

fn tcp_connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| ConnectError::Resolve(io_cause(&e)))?
        .collect();
    let mut last = ConnectError::Resolve("no address".into());
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = ConnectError::Tcp(io_cause(&e)),
        }
    }
    let stream = stream.ok_or(last)?;
    let setup = || -> io::Result<()> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))
    };
    setup().map_err(|e| ConnectError::Tcp(io_cause(&e)))?;
    Ok(stream)
}

fn handshake_error<R: tungstenite::handshake::HandshakeRole>(
    err: tungstenite::HandshakeError<R>,
) -> ConnectError {
    match err {
        tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response)) => {
            ConnectError::Status(response.status().as_u16())
        }
        tungstenite::HandshakeError::Failure(tungstenite::Error::Io(e)) => {
            ConnectError::Handshake(io_cause(&e))
        }
        tungstenite::HandshakeError::Failure(other) => ConnectError::Handshake(other.to_string()),
        tungstenite::HandshakeError::Interrupted(_) => ConnectError::Handshake("timed out".into()),
    }
}

/// A client connection split like the server's: a reader for one thread,
/// a writer for another, one socket (see #5).
pub struct SplitClient {
    pub reader: WebSocket<ReadHalf>,
    pub writer: WebSocket<WriteHalf>,
    /// Shut it down to wake the reader.
    pub stream: Arc<TcpStream>,
    pub response: tungstenite::handshake::client::Response,
}

/// Connects and shakes hands like [`connect`], with a request of the
/// caller's (extra headers, subprotocols), then splits the connection.
///
/// The handshake runs over an unmuted [`ReadHalf`], so whatever the server
/// sent right behind its 101 (a greeting, often in the same segment) is
/// already in the reader's buffer and is not lost, as it would be with
/// `into_inner()`. After the handshake the reader is muted and its socket
/// has no read timeout (the caller shuts the socket down to stop it); the
/// write timeout stays `timeout`.
pub fn connect_split(
    request: tungstenite::handshake::client::Request,
    timeout: Duration,
) -> Result<SplitClient, ConnectError> {
    let uri = request.uri();
    let host = uri
        .host()
        .ok_or_else(|| ConnectError::Resolve("no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = Arc::new(tcp_connect(&host, port, timeout)?);
    let half = ReadHalf {
        stream: Arc::clone(&stream),
        last_read: Instant::now(),
        muted: false,
    };
    let (mut reader, response) =
        tungstenite::client::client_with_config(request, half, Some(client_config()))
            .map_err(handshake_error)?;
    reader.get_mut().muted = true;
    stream
        .set_read_timeout(None)
        .map_err(|e| ConnectError::Tcp(io_cause(&e)))?;
    let writer = WebSocket::from_raw_socket(
        WriteHalf::new(Arc::clone(&stream)),
        Role::Client,
        Some(client_config()),
    );
    Ok(SplitClient {
        reader,
        writer,
        stream,
        response,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_control_frame() {
        let long = "é".repeat(100);
        let cut = truncate_reason(&long);
        assert!(cut.len() <= 123);
        assert!(long.starts_with(cut));
    }

    #[test]
    fn urls_split_into_host_and_port() {
        let url = WsUrl::parse("ws://127.0.0.1:7788/image?response=fast").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("127.0.0.1", 7788));
        let url = WsUrl::parse("ws://[::1]:9/").unwrap();
        assert_eq!(url.host, "::1");
        assert!(WsUrl::parse("http://x/").is_err());
        assert!(WsUrl::parse("wss://x/").is_err());
    }

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
