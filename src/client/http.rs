//! A minimal blocking HTTP/1.1 client over `httparse`: the HTTP half of
//! `pingpong` and the `/metrics` read of `load`. It owns one socket (kept
//! alive, or a new one per request) and nothing else: no pool, no redirects,
//! no chunked bodies. `https://` goes through the same TLS stream as
//! `wss://` (`client::connect::wrap`).
//!
//! Why not a general client (ureq, see #7): `pingpong` measures the cost of
//! a request/reply on the wire, so the client must be exactly as thin as the
//! WebSocket one it is compared with, and `new-connection` must really open
//! one TCP connection per request, which a pooling agent decides for
//! itself. httparse is already the server's parser, so this costs no crate.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::url::HttpUrl;
use crate::error::io_cause;
use crate::stream::Stream;

/// A response: status and whole body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as one line of text for messages, cut to `limit` characters.
    pub fn body_text(&self, limit: usize) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        match text.char_indices().nth(limit) {
            Some((at, _)) => format!("{}…", &text[..at]),
            None => text.to_string(),
        }
    }
}

/// Why a request failed; the text is the cause only.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("cannot resolve host: {0}")]
    Resolve(String),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("{0}")]
    Io(String),
    #[error("malformed response: {0}")]
    Malformed(String),
}

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// One server, requests one at a time.
pub struct Client {
    addrs: Vec<SocketAddr>,
    authority: String,
    /// `https://`: the host name the certificate must carry.
    tls: Option<String>,
    keep_alive: bool,
    timeout: Duration,
    stream: Option<Stream>,
    /// Bytes read past the previous response (a pipelining server's next
    /// response would start here; ours never sends one unasked).
    buf: Vec<u8>,
    request: Vec<u8>,
    /// TCP connections opened so far.
    pub connections: u64,
}

impl Client {
    /// `keep_alive`: one connection for every request (reopened only if the
    /// server closes it); otherwise a new one per request, with
    /// `Connection: close`.
    pub fn new(url: &HttpUrl, keep_alive: bool, timeout: Duration) -> Result<Client, Error> {
        let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|e| Error::Resolve(io_cause(&e)))?
            .collect();
        if addrs.is_empty() {
            return Err(Error::Resolve("no address".into()));
        }
        Ok(Client {
            addrs,
            authority: url.authority(),
            tls: url.tls.then(|| url.host.clone()),
            keep_alive,
            timeout,
            stream: None,
            buf: Vec::with_capacity(4096),
            request: Vec::with_capacity(256),
            connections: 0,
        })
    }

    fn connect(&mut self) -> Result<Stream, Error> {
        let tcp = super::connect::connect_any(&self.addrs, self.timeout)
            .map_err(|e| Error::Connect(io_cause(&e)))?;
        let stream = match &self.tls {
            None => Stream::new(tcp),
            Some(host) => super::connect::wrap(tcp, true, host, self.timeout)
                .map_err(|e| Error::Connect(e.to_string()))?,
        };
        self.connections += 1;
        Ok(stream)
    }

    /// Sends one request and reads the whole response.
    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Result<Response, Error> {
        let stream = match self.stream.take() {
            Some(stream) => stream,
            None => {
                self.buf.clear();
                self.connect()?
            }
        };
        self.request.clear();
        // One write for head and body: a second small write would wait for
        // the first one's ACK (Nagle is off, but the server reads the head
        // and body in one go either way).
        let _ = write!(
            self.request,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
            self.authority
        );
        if !body.is_empty() || method == "POST" || method == "PUT" {
            let _ = write!(self.request, "Content-Length: {}\r\n", body.len());
        }
        if !self.keep_alive {
            self.request.extend_from_slice(b"Connection: close\r\n");
        }
        self.request.extend_from_slice(b"\r\n");
        self.request.extend_from_slice(body);
        stream
            .write_all(&self.request)
            .map_err(|e| Error::Io(format!("send: {}", io_cause(&e))))?;
        let (response, reusable) = self.read_response(&stream, method == "HEAD")?;
        if self.keep_alive && reusable {
            self.stream = Some(stream);
        }
        Ok(response)
    }

    /// Reads one response; also says whether the connection may carry the
    /// next request.
    fn read_response(
        &mut self,
        stream: &Stream,
        head_only: bool,
    ) -> Result<(Response, bool), Error> {
        let (status, head_len, body_len, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut headers);
            match parsed.parse(&self.buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let status = parsed.code.unwrap_or(0);
                    let mut body_len = None;
                    let mut close = parsed.version == Some(0);
                    for h in parsed.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let v = std::str::from_utf8(h.value).ok();
                            body_len = Some(
                                v.and_then(|v| v.trim().parse::<usize>().ok())
                                    .ok_or_else(|| Error::Malformed("bad Content-Length".into()))?,
                            );
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            return Err(Error::Malformed(
                                "chunked bodies are not supported".into(),
                            ));
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                            if v.contains("close") {
                                close = true;
                            } else if v.contains("keep-alive") {
                                close = false;
                            }
                        }
                    }
                    if head_only || status == 204 || status == 304 {
                        body_len = Some(0);
                    }
                    break (status, head_len, body_len, close);
                }
                Ok(httparse::Status::Partial) if self.buf.len() < MAX_HEAD => {
                    if !fill(stream, &mut self.buf)? {
                        return Err(Error::Io(if self.buf.is_empty() {
                            "server closed the connection without a response".into()
                        } else {
                            "server closed the connection inside the response head".into()
                        }));
                    }
                }
                Ok(httparse::Status::Partial) => {
                    return Err(Error::Malformed(format!("head over {MAX_HEAD} bytes")));
                }
                Err(e) => return Err(Error::Malformed(e.to_string())),
            }
        };
        let body = match body_len {
            Some(len) => {
                while self.buf.len() < head_len + len {
                    if !fill(stream, &mut self.buf)? {
                        return Err(Error::Io(
                            "server closed the connection inside the body".into(),
                        ));
                    }
                }
                let body = self.buf[head_len..head_len + len].to_vec();
                self.buf.drain(..head_len + len);
                body
            }
            // No length: the body runs to the end of the connection.
            None => {
                while fill(stream, &mut self.buf)? {}
                let body = self.buf[head_len..].to_vec();
                self.buf.clear();
                return Ok((Response { status, body }, false));
            }
        };
        Ok((Response { status, body }, !close))
    }
}

/// Reads what is there into `buf`; false at end of stream.
fn fill(stream: &Stream, buf: &mut Vec<u8>) -> Result<bool, Error> {
    let start = buf.len();
    buf.resize(start + 4096, 0);
    let read = stream.read(&mut buf[start..]);
    match read {
        Ok(n) => {
            buf.truncate(start + n);
            Ok(n > 0)
        }
        Err(e) => {
            buf.truncate(start);
            Err(Error::Io(format!("receive: {}", io_cause(&e))))
        }
    }
}

/// `GET url` on a new connection, for one-off reads such as `/metrics`.
pub fn get(url: &HttpUrl, timeout: Duration) -> Result<Response, Error> {
    Client::new(url, false, timeout)?.request("GET", &url.path, b"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    /// A peer that answers `responses` in order, one per request read, and
    /// closes after reading a request it has no answer for.
    fn peer(responses: Vec<&'static str>) -> HttpUrl {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let mut responses = responses.into_iter();
            while stream.read(&mut buf).unwrap_or(0) > 0 {
                let Some(response) = responses.next() else {
                    return;
                };
                stream.write_all(response.as_bytes()).unwrap();
                // An HTTP/1.0 peer ends each response by closing.
                if response.starts_with("HTTP/1.0") {
                    return;
                }
            }
        });
        HttpUrl::parse(&format!("http://127.0.0.1:{port}/")).unwrap()
    }

    #[test]
    fn keep_alive_reuses_one_connection_and_splits_bodies() {
        let url = peer(vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nPong!",
            "HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\nHello, HTTP!",
        ]);
        let mut client = Client::new(&url, true, Duration::from_secs(5)).unwrap();
        let first = client.request("POST", "/", b"Ping1").unwrap();
        assert_eq!((first.status, first.body.as_slice()), (200, &b"Pong!"[..]));
        let second = client.request("GET", "/", b"").unwrap();
        assert_eq!(second.body, b"Hello, HTTP!");
        assert_eq!(client.connections, 1);
    }

    #[test]
    fn a_body_without_length_runs_to_the_close() {
        let url = peer(vec!["HTTP/1.0 426 Upgrade Required\r\n\r\nuse websocket\n"]);
        let response = get(&url, Duration::from_secs(5)).unwrap();
        assert_eq!(response.status, 426);
        assert_eq!(response.body_text(100), "use websocket");
        assert_eq!(response.body_text(3), "use…");
    }

    #[test]
    fn a_silent_close_is_an_error_not_a_hang() {
        let url = peer(vec![]);
        let err = get(&url, Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("without a response"), "{err}");
    }
}
