//! What other threads may hold of a server connection: its [`Peer`], that
//! is its id and its writer.
//!
//! The writer is a `Mutex<WebSocket<WriteHalf>>`. Any thread holding an
//! `Arc<Peer>` sends a whole message under the lock: the connection's own
//! thread writes its replies there directly (an uncontended lock, tens of
//! ns), so a request/reply pays no thread hand-off; the shutdown path sends
//! its 1001 there too. The socket's write timeout bounds how long a peer
//! that does not read can hold the lock. The chat writer pool
//! (`outbox.rs`) writes through [`Peer::try_write_nonblocking`] instead, so
//! it never waits on one member.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use crate::metrics::{ServerCounters, add};
use crate::stream::Stream;

/// The writing side of the socket. tungstenite asks for `Read` too but never
/// reads on the write path.
///
/// Writes block (up to the socket's write timeout) unless `nonblocking` is
/// set: the chat writer pool sets it while it holds the writer, so one
/// member's full socket never holds a pool thread. It is a per-call flag
/// (`MSG_DONTWAIT`), not `O_NONBLOCK`, because the connection's reader
/// blocks on the same socket.
pub struct WriteHalf {
    stream: Arc<Stream>,
    nonblocking: bool,
    written: u64,
}

impl WriteHalf {
    pub fn new(stream: Arc<Stream>) -> WriteHalf {
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
            self.stream.write_nonblocking(buf)?
        } else {
            self.stream.write(buf)?
        };
        self.written += n as u64;
        Ok(n)
    }
    /// With TLS, sends the records the session still holds (plain TCP
    /// holds none). Records leaving count as progress for the stall watch.
    fn flush(&mut self) -> io::Result<()> {
        if self.nonblocking {
            self.written += self.stream.flush_nonblocking()?;
            Ok(())
        } else {
            self.stream.flush()
        }
    }
}

/// What other threads may hold of a connection: its id and its writer.
pub struct Peer {
    pub id: u64,
    pub addr: SocketAddr,
    pub(super) stream: Arc<Stream>,
    pub(super) writer: Mutex<WebSocket<WriteHalf>>,
    pub(super) close_sent: AtomicBool,
    pub(super) counters: Arc<ServerCounters>,
}

impl Peer {
    pub(super) fn writer(&self) -> MutexGuard<'_, WebSocket<WriteHalf>> {
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
    pub fn stream(&self) -> &Stream {
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
}
