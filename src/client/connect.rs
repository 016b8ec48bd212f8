//! Client connections: TCP connect with a timeout, TLS for `wss://`
//! (`client::tls` says whom to trust), the WebSocket handshake, and a
//! connection split into a reader and a writer for two threads (chat).
//! One stream type, [`Stream`], carries every client's bytes: the
//! crate's byte stream (`crate::stream`), plain or TLS.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pki_types::ServerName;
use rustls::ClientConnection;
use tungstenite::WebSocket;
use tungstenite::protocol::{Role, WebSocketConfig};

use super::url::WsUrl;
use crate::error::io_cause;
use crate::stream::{self, TlsHandshakeError};

/// tungstenite's read buffer for our clients. Replies are short and
/// tungstenite zero-fills the buffer on every read, so keep it small: a
/// thousand parallel clients stay light.
pub const READ_BUFFER: usize = 4 * 1024;

/// The byte stream of a client connection: what `bench` and `pingpong`
/// read and write through tungstenite and `masked`, plain or TLS.
pub struct Stream(stream::Stream);

impl Stream {
    pub fn new(inner: stream::Stream) -> Stream {
        Stream(inner)
    }

    /// The socket underneath, for its options (timeouts, nodelay).
    pub fn tcp(&self) -> &TcpStream {
        self.0.tcp()
    }
}

/// For `poll(2)`. With TLS, a read that ended in `WouldBlock` leaves no
/// plaintext behind, so a caller that reads until then may poll safely.
impl std::os::fd::AsRawFd for Stream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Closes politely and waits for the server's close, so TIME_WAIT stays
/// on its side.
pub fn close(mut ws: WebSocket<Stream>) {
    if ws.close(None).is_err() {
        return;
    }
    while ws.read().is_ok() {}
}

/// The reading side of a split connection: reads count as liveness,
/// writes vanish.
///
/// A client builds it unmuted, runs tungstenite's handshake over it (so
/// bytes the server sent right after its 101 stay in the reader's buffer),
/// then mutes it ([`connect_split`]). Over TLS its reads wait for the
/// socket without holding the session, so the writer is never held up by
/// a reader with nothing to read (`crate::stream`).
pub struct ReadHalf {
    stream: Arc<stream::Stream>,
    last_read: Instant,
    muted: bool,
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf)?;
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
        self.stream.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.muted {
            return Ok(());
        }
        self.stream.flush()
    }
}

/// The writing side of a split client connection. tungstenite asks for
/// `Read` too but never reads on the write path.
pub struct WriteHalf(Arc<stream::Stream>);

impl Read for WriteHalf {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }
}

impl Write for WriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// A client connection and how long its two set-up phases took.
pub struct Connected {
    pub socket: WebSocket<Stream>,
    pub tcp: Duration,
    /// The TLS handshake (for `wss://`) and the WebSocket handshake.
    pub handshake: Duration,
}

/// Why a client connection could not be set up; the text is the cause
/// only, callers prefix `cannot connect to URL: `.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve host: {0}")]
    Resolve(String),
    #[error("{0}")]
    Tcp(String),
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The TLS handshake failed: protocol, timeout, or not TLS at all.
    #[error("{0}")]
    Tls(String),
    /// The server's certificate is not one we trust for this name: waiting
    /// will not fix it.
    #[error("{0}")]
    Untrusted(String),
    /// The server answered the upgrade with this HTTP status.
    #[error("server answered HTTP {0}")]
    Status(u16),
}

/// Client config: replies are short, so a small read buffer keeps a
/// thousand parallel clients light.
pub fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
}

/// TCP connect (trying every resolved address), then the WebSocket
/// handshake, each bounded by `timeout`. The socket keeps `timeout` as its
/// read and write timeout.
pub fn connect(url: &WsUrl, timeout: Duration) -> Result<Connected, ConnectError> {
    let started = Instant::now();
    let socket = tcp_connect(&url.host, url.port, timeout)?;
    let tcp = started.elapsed();
    let shaken = Instant::now();
    let stream = Stream(wrap(socket, url.tls, &url.host, timeout)?);
    let (socket, _response) =
        tungstenite::client::client_with_config(url.text.as_str(), stream, Some(client_config()))
            .map_err(handshake_error)?;
    Ok(Connected {
        socket,
        tcp,
        handshake: shaken.elapsed(),
    })
}

/// The crate stream over `tcp`: TLS with `host`'s certificate checked
/// when `tls`, within `timeout`.
pub fn wrap(
    tcp: TcpStream,
    tls: bool,
    host: &str,
    timeout: Duration,
) -> Result<stream::Stream, ConnectError> {
    if !tls {
        return Ok(stream::Stream::new(tcp));
    }
    let session = client_session(host)?;
    let deadline = Instant::now() + timeout;
    let stream =
        stream::Stream::connect_tls(tcp, session, deadline).map_err(|(e, _)| tls_error(e))?;
    // The handshake spent part of the read timeout; give it back.
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| ConnectError::Tcp(io_cause(&e)))?;
    super::tls::count(stream.tls_resumed());
    Ok(stream)
}

/// A TLS client session for `host`, with this process's config (roots,
/// session cache).
pub fn client_session(host: &str) -> Result<ClientConnection, ConnectError> {
    let config = super::tls::config().map_err(|e| ConnectError::Tls(e.to_string()))?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| ConnectError::Tls(format!("`{host}` is not a TLS server name")))?;
    ClientConnection::new(config, name).map_err(|e| ConnectError::Tls(format!("TLS: {e}")))
}

/// A failed TLS handshake as a connect error: an untrusted certificate
/// apart from everything else.
pub fn tls_error(err: TlsHandshakeError) -> ConnectError {
    match err {
        TlsHandshakeError::Tls(e @ rustls::Error::InvalidCertificate(_)) => {
            let hint = match &e {
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
                    " (--ca-file FILE trusts its CA, --insecure skips the check)"
                }
                _ => "",
            };
            ConnectError::Untrusted(format!("TLS certificate not trusted: {e}{hint}"))
        }
        e => ConnectError::Tls(tls_cause(e)),
    }
}

fn tls_cause(err: TlsHandshakeError) -> String {
    match err {
        TlsHandshakeError::Empty => {
            "the server closed the connection during the TLS handshake".into()
        }
        TlsHandshakeError::Timeout => "TLS handshake timed out".into(),
        TlsHandshakeError::NotTls(what) => format!("the server does not speak TLS ({what})"),
        TlsHandshakeError::Tls(e) => format!("TLS handshake failed: {e}"),
        TlsHandshakeError::Io(e) => format!("TLS handshake failed: {}", io_cause(&e)),
    }
}

fn tcp_connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| ConnectError::Resolve(io_cause(&e)))?
        .collect();
    if addrs.is_empty() {
        return Err(ConnectError::Resolve("no address".into()));
    }
    connect_any(&addrs, timeout).map_err(|e| ConnectError::Tcp(io_cause(&e)))
}

/// Connects to the first of `addrs` that answers within `timeout` each,
/// with no delay on small writes and `timeout` on every read and write;
/// the error is the last address's.
pub fn connect_any(addrs: &[SocketAddr], timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(timeout))?;
                stream.set_write_timeout(Some(timeout))?;
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
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
    pub stream: Arc<stream::Stream>,
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
    let tls = uri.scheme_str() == Some("wss");
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = tcp_connect(&host, port, timeout)?;
    let stream = Arc::new(wrap(tcp, tls, &host, timeout)?);
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
        WriteHalf(Arc::clone(&stream)),
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
