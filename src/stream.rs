//! The byte stream of one connection, server or client. Everything the
//! server reads from or writes to a peer after accepting it goes through
//! [`Stream`] (the request head, plain HTTP, the frame reader and the
//! writer), and so does every client's connection beneath tungstenite
//! (`client::connect`, `client::http`). It is the TCP socket, or a rustls
//! session over it (`wss://`, HTTPS; see #15).
//!
//! Reads and writes take `&self`, as `&TcpStream`'s do, so one `Arc<Stream>`
//! serves the connection's reader and any thread writing to it (the
//! server's writers, the chat client's split halves).
//!
//! A rustls session is one state machine for both directions, so with TLS
//! it sits behind a mutex, and the lock is never held across a wait for
//! the peer to send:
//!
//! ```text
//! reader: plaintext in the session? ─ yes ─> take it (lock held to copy)
//!            │ no
//!         recv(2) ciphertext into `inbox` (1 KiB, a record while a large
//!         message streams), blocking, read timeout, NO lock
//!         lock ─> read_tls + process_new_packets ─> take plaintext ─> unlock
//! writer: lock ─> writer().write (encrypt) ─> write_tls until out ─> unlock
//! pool:   lock ─> encrypt what the session takes ─> write_tls with
//!         MSG_DONTWAIT until the socket is full ─> unlock
//! ```
//!
//! A blocking writer holds the lock while the socket is full (bounded by
//! the write timeout, as the peer writer's own lock already is); the reader
//! then waits for it only when it has ciphertext to decrypt. What reading
//! produces for the peer (key updates, alerts) the reader sends without
//! waiting for room; what the socket does not take leaves with the next
//! write. Orderly closes (`shutdown(Write)`) send a close_notify first when
//! no other thread is writing and the socket takes it at once.
//!
//! The handshake ([`Stream::accept_tls`], [`Stream::connect_tls`]) runs
//! before any of this, blocking on the connection's thread, bounded by
//! --handshake-timeout on the server and the client's connect timeout.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::{ClientConnection, Connection, ServerConnection};
use socket2::SockRef;

/// Ciphertext read per recv(2) while a large message streams: sixteen
/// whole TLS records. One record per recv(2) took ~30 reads and 3 sleeps
/// per 480 KB image; four records left wss serial images at 0.96× tokio-
/// rustls's, sixteen at parity (`make compare`, quiet machine). The buffer
/// shrinks back to SMALL once a read does not fill it, so only connections
/// in the middle of a large message hold it.
const INBOX: usize = 16 * (16 * 1024 + 512);
/// Ciphertext read per recv(2) otherwise: a short message in one record.
const SMALL: usize = 1024;

pub struct Stream {
    tcp: TcpStream,
    /// Boxed: a rustls session is ~1.2 KiB, which a plain connection
    /// should not carry inline.
    tls: Option<Box<Tls>>,
}

struct Tls {
    session: Mutex<Connection>,
    /// Ciphertext read but not yet taken by the session (it takes at most
    /// 16 KiB of unread plaintext at a time). Only the reading thread
    /// locks it. 1 KiB, grown to a record while reads fill it.
    inbox: Mutex<Inbox>,
}

#[derive(Default)]
struct Inbox {
    buf: Vec<u8>,
    pos: usize,
    /// The last recv(2) filled the buffer: a large message is streaming.
    keep: bool,
}

/// How a TLS handshake failed, for the one log line it gets.
#[derive(Debug)]
pub enum TlsHandshakeError {
    /// The peer closed without sending a byte (a port probe).
    Empty,
    /// No handshake within the deadline.
    Timeout,
    /// The peer sent something that is not TLS: plain HTTP or garbage.
    NotTls(String),
    /// TLS, but the handshake failed (bad version, no common cipher, ...).
    Tls(rustls::Error),
    Io(io::Error),
}

impl std::fmt::Display for TlsHandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsHandshakeError::Empty => write!(f, "closed before a TLS handshake"),
            TlsHandshakeError::Timeout => {
                write!(f, "no TLS handshake within the handshake timeout")
            }
            TlsHandshakeError::NotTls(what) => write!(f, "not TLS ({what}), closed"),
            TlsHandshakeError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            TlsHandshakeError::Io(e) => {
                write!(f, "TLS handshake: {}", crate::error::io_cause(e))
            }
        }
    }
}

impl Stream {
    pub fn new(tcp: TcpStream) -> Stream {
        Stream { tcp, tls: None }
    }

    /// Runs the server side of a TLS handshake on `tcp` before `deadline`
    /// (it counts against --handshake-timeout), blocking this thread. On
    /// failure the socket comes back, so the caller counts the failure
    /// before the peer can see the close.
    pub fn accept_tls(
        tcp: TcpStream,
        session: ServerConnection,
        deadline: Instant,
    ) -> Result<Stream, (TlsHandshakeError, TcpStream)> {
        Stream::shake(tcp, Connection::Server(session), deadline)
    }

    /// Runs the client side of a TLS handshake on `tcp` before `deadline`,
    /// blocking this thread; the certificate is verified here, so a wrong
    /// name or an unknown issuer fails the connect, not the first read.
    pub fn connect_tls(
        tcp: TcpStream,
        session: ClientConnection,
        deadline: Instant,
    ) -> Result<Stream, (TlsHandshakeError, TcpStream)> {
        Stream::shake(tcp, Connection::Client(session), deadline)
    }

    /// A client session whose handshake the caller drove itself (`load`
    /// drives many at once on non-blocking sockets).
    pub fn client_tls(tcp: TcpStream, session: ClientConnection) -> Stream {
        Stream {
            tcp,
            tls: Some(Box::new(Tls {
                session: Mutex::new(Connection::Client(session)),
                inbox: Mutex::new(Inbox::default()),
            })),
        }
    }

    fn shake(
        tcp: TcpStream,
        mut session: Connection,
        deadline: Instant,
    ) -> Result<Stream, (TlsHandshakeError, TcpStream)> {
        match handshake(&tcp, &mut session, deadline) {
            Ok(()) => Ok(Stream {
                tcp,
                tls: Some(Box::new(Tls {
                    session: Mutex::new(session),
                    inbox: Mutex::new(Inbox::default()),
                })),
            }),
            Err(e) => Err((e, tcp)),
        }
    }

    /// Whether a TLS handshake resumed an earlier session (a ticket), for
    /// the clients' count of resumed handshakes.
    pub fn tls_resumed(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| {
            lock(&tls.session).handshake_kind() == Some(rustls::HandshakeKind::Resumed)
        })
    }

    /// The socket underneath, for its options (timeouts, no-delay).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.tls {
            None => (&self.tcp).read(buf),
            Some(tls) => self.tls_read(tls, buf.len(), |session, n| {
                session.reader().read(&mut buf[..n])
            }),
        }
    }

    /// Appends at most `max` bytes to `dest`, whose spare capacity holds at
    /// least `max`, without zero-filling it first (TLS zero-fills only what
    /// it then copies in: rustls reads into initialised memory).
    pub fn recv_into(&self, dest: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        match &self.tls {
            None => {
                let spare = &mut dest.spare_capacity_mut()[..max];
                let n = SockRef::from(&self.tcp).recv(spare)?;
                // SAFETY: recv(2) initialised the first `n` bytes of the spare capacity.
                unsafe { dest.set_len(dest.len() + n) };
                Ok(n)
            }
            Some(tls) => self.tls_read(tls, max, |session, n| {
                let start = dest.len();
                dest.resize(start + n, 0);
                let read = session.reader().read(&mut dest[start..]);
                dest.truncate(start + *read.as_ref().unwrap_or(&0));
                read
            }),
        }
    }

    /// Plaintext already decrypted and waiting, so a poll(2) on the socket
    /// would not see it.
    pub fn has_buffered(&self) -> bool {
        let Some(tls) = &self.tls else {
            return false;
        };
        let inbox = lock(&tls.inbox);
        if inbox.pos < inbox.buf.len() {
            return true;
        }
        drop(inbox);
        lock(&tls.session)
            .process_new_packets()
            .map(|state| state.plaintext_bytes_to_read() > 0 || state.peer_has_closed())
            .unwrap_or(true)
    }

    /// One TLS read: plaintext the session holds, else ciphertext the inbox
    /// holds, else one recv(2) without the session lock. `take` copies at
    /// most `n` (> 0) plaintext bytes out.
    fn tls_read(
        &self,
        tls: &Tls,
        max: usize,
        mut take: impl FnMut(&mut Connection, usize) -> io::Result<usize>,
    ) -> io::Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        let mut inbox = lock(&tls.inbox);
        loop {
            {
                let mut session = lock(&tls.session);
                loop {
                    let state = match session.process_new_packets() {
                        Ok(state) => state,
                        Err(e) => {
                            // The alert, if the socket takes it at once.
                            let _ = flush_nonblocking(&mut session, &self.tcp);
                            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                        }
                    };
                    let ready = state.plaintext_bytes_to_read();
                    if ready > 0 {
                        let n = take(&mut session, ready.min(max))?;
                        drop(session);
                        inbox.release();
                        return Ok(n);
                    }
                    if state.peer_has_closed() {
                        return Ok(0);
                    }
                    if inbox.pos == inbox.buf.len() {
                        break;
                    }
                    let mut rest = &inbox.buf[inbox.pos..];
                    let before = rest.len();
                    session.read_tls(&mut rest)?;
                    let fed = before - rest.len();
                    if fed == 0 {
                        return Err(io::Error::other("TLS session takes no more input"));
                    }
                    inbox.pos += fed;
                }
                // Replies the peer's records called for (key updates).
                if session.wants_write() {
                    let _ = flush_nonblocking(&mut session, &self.tcp);
                }
            }
            inbox.release();
            // Small while messages are small: an idle connection blocks
            // here holding 1 KiB, not 16.
            if inbox.buf.capacity() < SMALL {
                inbox.buf.reserve_exact(SMALL);
            }
            let room = inbox.buf.capacity();
            let spare = &mut inbox.buf.spare_capacity_mut()[..room];
            let n = SockRef::from(&self.tcp).recv(spare)?;
            if n == 0 {
                // End of the TCP stream without close_notify: rustls calls
                // it a truncation; the frame reader, the end.
                return Ok(0);
            }
            // SAFETY: recv(2) initialised the first `n` bytes of the spare
            // capacity of an empty buffer.
            unsafe { inbox.buf.set_len(n) };
            // A full read: a large message is streaming, read whole
            // records from now on; a short one: the peer paused.
            inbox.keep = n == room;
        }
    }

    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    pub fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        let Some(tls) = &self.tls else {
            return (&self.tcp).write_all(buf);
        };
        let mut session = lock(&tls.session);
        let mut rest = buf;
        loop {
            // The session takes what fits its send buffer (64 KiB); a large
            // message goes out in turns so it is never all held encrypted.
            let n = session.writer().write(rest)?;
            rest = &rest[n..];
            while session.wants_write() {
                session.write_tls(&mut &self.tcp)?;
            }
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    /// Takes what the socket takes now; `WouldBlock` when it takes nothing.
    /// With TLS, "takes" is the session accepting plaintext, which it
    /// encrypts and then flushes as far as the socket allows: bytes
    /// accepted are progress, the rest leaves with [`Stream::flush_nonblocking`].
    pub fn write_nonblocking(&self, buf: &[u8]) -> io::Result<usize> {
        let Some(tls) = &self.tls else {
            return SockRef::from(&self.tcp).send_with_flags(buf, libc::MSG_DONTWAIT);
        };
        let mut session = lock(&tls.session);
        loop {
            let accepted = session.writer().write(buf)?;
            let flushed = flush_nonblocking(&mut session, &self.tcp)?;
            if accepted > 0 {
                return Ok(accepted);
            }
            if flushed == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
    }

    /// Sends TLS records still held by the session without waiting:
    /// `Ok(bytes sent)` when none are left, `WouldBlock` when some are
    /// (after sending what the socket took). Plain TCP holds nothing.
    pub fn flush_nonblocking(&self) -> io::Result<u64> {
        let Some(tls) = &self.tls else {
            return Ok(0);
        };
        let mut session = lock(&tls.session);
        let sent = flush_nonblocking(&mut session, &self.tcp)?;
        if session.wants_write() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(sent as u64)
    }

    /// Sends what the session still holds, waiting up to the write timeout.
    pub fn flush(&self) -> io::Result<()> {
        if let Some(tls) = &self.tls {
            let mut session = lock(&tls.session);
            while session.wants_write() {
                session.write_tls(&mut &self.tcp)?;
            }
        }
        Ok(())
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp.set_read_timeout(timeout)
    }

    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp.set_write_timeout(timeout)
    }

    /// With TLS, shutting down the sending side first queues a close_notify
    /// and sends it if the socket takes it at once and no other thread is
    /// writing. `Both` (waking a blocked reader from another thread) never
    /// waits for the session lock.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if let (Some(tls), Shutdown::Write) = (&self.tls, how)
            && let Ok(mut session) = tls.session.try_lock()
        {
            session.send_close_notify();
            let _ = flush_nonblocking(&mut session, &self.tcp);
        }
        self.tcp.shutdown(how)
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.peer_addr()
    }
}

/// The handshake loop of [`Stream::accept_tls`].
fn handshake(
    tcp: &TcpStream,
    session: &mut Connection,
    deadline: Instant,
) -> Result<(), TlsHandshakeError> {
    let mut got_any = false;
    let mut first = [0u8; 8];
    let mut first_len = 0;
    while session.is_handshaking() {
        if session.wants_write() {
            session
                .write_tls(&mut &*tcp)
                .map_err(TlsHandshakeError::Io)?;
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TlsHandshakeError::Timeout);
        }
        tcp.set_read_timeout(Some(left))
            .map_err(TlsHandshakeError::Io)?;
        // Straight into the session's buffer: a 4 KiB chunk on this
        // thread's stack would stay resident for the connection's life.
        let mut recording = Recording {
            tcp,
            first: &mut first,
            len: &mut first_len,
        };
        match session.read_tls(&mut recording) {
            Ok(0) if !got_any => return Err(TlsHandshakeError::Empty),
            Ok(0) => {
                return Err(TlsHandshakeError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(TlsHandshakeError::Timeout);
            }
            Err(e) => return Err(TlsHandshakeError::Io(e)),
        }
        got_any = true;
        if let Err(e) = session.process_new_packets() {
            // Tell a TLS peer why (an alert), if the socket takes it.
            let _ = session.write_tls(&mut &*tcp);
            // A handshake record starts with 0x16; anything else was
            // never TLS.
            if first[0] != 0x16 {
                return Err(TlsHandshakeError::NotTls(describe(&first[..first_len])));
            }
            return Err(TlsHandshakeError::Tls(e));
        }
    }
    // TLS 1.3 session tickets follow the handshake; send them now.
    while session.wants_write() {
        session
            .write_tls(&mut &*tcp)
            .map_err(TlsHandshakeError::Io)?;
    }
    Ok(())
}

impl Inbox {
    /// Once the session took all of it: grows the buffer to a record if
    /// the last read filled it, shrinks it back to 1 KiB if not (an idle
    /// connection should not keep 16 KiB it is not using).
    fn release(&mut self) {
        if self.pos < self.buf.len() {
            return;
        }
        self.pos = 0;
        self.buf.clear();
        if self.keep && self.buf.capacity() < INBOX {
            self.buf.reserve_exact(INBOX);
        } else if !self.keep && self.buf.capacity() > SMALL {
            self.buf = Vec::with_capacity(SMALL);
        }
    }
}

/// Reads the socket, keeping a copy of the first bytes the peer sent (to
/// name a peer that does not speak TLS).
struct Recording<'a> {
    tcp: &'a TcpStream,
    first: &'a mut [u8; 8],
    len: &'a mut usize,
}

impl Read for Recording<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.tcp.read(buf)?;
        let take = n.min(self.first.len() - *self.len);
        self.first[*self.len..*self.len + take].copy_from_slice(&buf[..take]);
        *self.len += take;
        Ok(n)
    }
}

/// Writes the session's TLS records with MSG_DONTWAIT until none are left
/// or the socket is full; returns the bytes sent.
fn flush_nonblocking(session: &mut Connection, tcp: &TcpStream) -> io::Result<usize> {
    let mut sent = 0;
    while session.wants_write() {
        match session.write_tls(&mut DontWait(tcp)) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// A socket writer that never waits (per call, not `O_NONBLOCK`: the
/// reader blocks on the same socket).
struct DontWait<'a>(&'a TcpStream);

impl Write for DontWait<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        SockRef::from(self.0).send_with_flags(buf, libc::MSG_DONTWAIT)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The rustls crypto of both sides: ring, with AES-128-GCM preferred.
/// rustls lists AES-256-GCM/SHA-384 first; browsers offer AES-128 first,
/// and on this CPU it moves a 480 KB image about a third faster (10 AES
/// rounds, not 14) and its SHA-256 key schedule costs less per handshake.
pub fn crypto() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite, default_provider};
    let mut provider = default_provider();
    provider.cipher_suites.sort_by_key(|suite| {
        [
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ]
        .iter()
        .position(|preferred| preferred.suite() == suite.suite())
        .unwrap_or(usize::MAX)
    });
    std::sync::Arc::new(provider)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic under the lock leaves the session mid-record at worst; the
    // connection ends right after, so poisoning adds nothing.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Names what a non-TLS peer sent, for the log line.
fn describe(first: &[u8]) -> String {
    let printable = first.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if printable >= 3 {
        format!(
            "plain HTTP? starts with {:?}",
            String::from_utf8_lossy(&first[..printable])
        )
    } else {
        format!("first byte 0x{:02x}", first.first().copied().unwrap_or(0))
    }
}

/// For `poll(2)`: readiness of the bytes underneath. With TLS, check
/// [`Stream::has_buffered`] first.
impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }
}
