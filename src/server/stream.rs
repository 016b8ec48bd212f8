//! The byte stream of one server connection. Everything the server reads
//! from or writes to a peer after accepting it goes through [`Stream`]: the
//! request head, plain HTTP, the frame reader and the writer. This is the
//! one seam a TLS session (rustls) slots into; today it is the TCP socket.
//!
//! Reads and writes take `&self`, as `&TcpStream`'s do, so one `Arc<Stream>`
//! serves the connection's reader and any thread writing to it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use socket2::SockRef;

pub struct Stream {
    tcp: TcpStream,
}

impl Stream {
    pub fn new(tcp: TcpStream) -> Stream {
        Stream { tcp }
    }

    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.tcp).read(buf)
    }

    /// Appends at most `max` bytes to `dest`, whose spare capacity holds at
    /// least `max`, without zero-filling it first.
    pub fn recv_into(&self, dest: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let spare = &mut dest.spare_capacity_mut()[..max];
        let n = SockRef::from(&self.tcp).recv(spare)?;
        // SAFETY: recv(2) initialised the first `n` bytes of the spare capacity.
        unsafe { dest.set_len(dest.len() + n) };
        Ok(n)
    }

    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        (&self.tcp).write(buf)
    }

    pub fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        (&self.tcp).write_all(buf)
    }

    /// Writes what the socket takes now; `WouldBlock` when it takes nothing.
    pub fn write_nonblocking(&self, buf: &[u8]) -> io::Result<usize> {
        SockRef::from(&self.tcp).send_with_flags(buf, libc::MSG_DONTWAIT)
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp.set_read_timeout(timeout)
    }

    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp.set_write_timeout(timeout)
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.tcp.shutdown(how)
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.peer_addr()
    }
}

/// For `poll(2)`: readiness of the bytes underneath.
impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }
}
