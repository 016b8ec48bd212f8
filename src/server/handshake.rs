//! The first bytes of every connection: read an HTTP/1.1 request head
//! within the handshake deadline, parse it with httparse, and decide what it
//! is: a WebSocket upgrade to a known endpoint (answered 101 here), a plain
//! HTTP request (handed to `http`), or something to refuse with a status.
//!
//! This is all our own parsing of network bytes before tungstenite takes
//! over, so it is strict about sizes and never panics on input.

use std::io;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use tungstenite::handshake::derive_accept_key;

use crate::stream::Stream;

use crate::cli::ResponseMode;

/// A request head larger than this is refused (431), as most servers do.
pub const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// Where a WebSocket connection goes, chosen by the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/` and `/image`: the text rule and image statistics; the query may
    /// force the response mode.
    Image {
        response: Option<ResponseMode>,
    },
    Echo,
    Hello,
    /// `/chat` is the room `lobby`; `/chat/{room}` any other.
    Chat {
        room: String,
    },
}

/// Maps a request target to an endpoint; `None` is a 404.
pub fn route(target: &str) -> Option<Endpoint> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/" | "/image" => {
            let response = query.split('&').find_map(|pair| match pair {
                "response=fast" => Some(ResponseMode::Fast),
                "response=slow" => Some(ResponseMode::Slow),
                _ => None,
            });
            Some(Endpoint::Image { response })
        }
        "/echo" => Some(Endpoint::Echo),
        "/hello" => Some(Endpoint::Hello),
        "/chat" => Some(Endpoint::Chat {
            room: "lobby".into(),
        }),
        _ => match path.strip_prefix("/chat/") {
            Some(room) if !room.is_empty() && !room.contains('/') => Some(Endpoint::Chat {
                room: room.to_string(),
            }),
            _ => None,
        },
    }
}

/// A parsed request head, owning its strings.
#[derive(Debug, Clone)]
pub struct Head {
    pub method: String,
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header holds `token` (any case).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    pub fn wants_upgrade(&self) -> bool {
        self.has_token("upgrade", "websocket")
    }
}

/// Why no request head could be read.
#[derive(Debug)]
pub enum HeadError {
    /// The peer closed before sending anything: not worth a log line.
    Empty,
    /// The deadline passed first.
    Timeout,
    /// Bytes that are not an HTTP request head (answer 400).
    Malformed(String),
    /// Head over [`MAX_HEAD`] (answer 431).
    TooLarge,
    /// More header fields than [`MAX_HEADERS`] (answer 431).
    TooManyHeaders,
    Io(io::Error),
}

/// Reads one request head from `stream` into `buf` (which may already hold
/// bytes of it) before `deadline`. Returns the head and its length in `buf`;
/// bytes after it (a body, a pipelined request, early WebSocket frames)
/// stay in `buf`.
pub fn read_head(
    stream: &Stream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<(Head, usize), HeadError> {
    loop {
        if !buf.is_empty() {
            match parse_head(buf)? {
                Some(parsed) => return Ok(parsed),
                None if buf.len() >= MAX_HEAD => return Err(HeadError::TooLarge),
                None => {}
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::Timeout);
        }
        stream.set_read_timeout(Some(left)).map_err(HeadError::Io)?;
        let start = buf.len();
        buf.resize(start + 2048, 0);
        let read = stream.read(&mut buf[start..]);
        buf.truncate(start + *read.as_ref().unwrap_or(&0));
        match read {
            Ok(0) if start == 0 => return Err(HeadError::Empty),
            Ok(0) => return Err(HeadError::Malformed("connection closed mid-head".into())),
            Ok(_) => {}
            // A signal interrupts a read with a timeout; the deadline
            // still holds, so just read again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(HeadError::Timeout);
            }
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}

/// Parses one request head from the start of `buf`: `None` until it is
/// complete.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    let headers = request
        .headers
        .iter()
        .map(|h| {
            let value = std::str::from_utf8(h.value)
                .map_err(|_| HeadError::Malformed(format!("header {} is not utf-8", h.name)))?;
            Ok((h.name.to_string(), value.trim().to_string()))
        })
        .collect::<Result<Vec<_>, HeadError>>()?;
    Ok(Some((
        Head {
            method: request.method.unwrap_or_default().to_string(),
            target: request.path.unwrap_or_default().to_string(),
            version: request.version.unwrap_or(1),
            headers,
        },
        len,
    )))
}

/// A head the server will not act on: the status to answer and why. The
/// connection is closed after it: once a head is in doubt, so is where the
/// next request would start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub why: String,
}

fn refusal(status: u16, why: impl Into<String>) -> Refusal {
    Refusal {
        status,
        why: why.into(),
    }
}

/// The checks every request head passes before it is served, plain or
/// upgrade; returns the body length it announces.
///
/// - HTTP/1.1 needs exactly one `Host` (RFC 9112 §3.2).
/// - `Content-Length` is digits only, and several must agree (RFC 9112
///   §6.3: anything else makes the message's end unknowable).
/// - A body in chunks is refused with 411: we read by length only.
pub fn check_head(head: &Head) -> Result<u64, Refusal> {
    let hosts = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
        .count();
    if head.version == 1 && hosts == 0 {
        return Err(refusal(400, "HTTP/1.1 request without Host"));
    }
    if hosts > 1 {
        return Err(refusal(400, "more than one Host header"));
    }
    if head.header("transfer-encoding").is_some() {
        return Err(refusal(
            411,
            "chunked bodies are not accepted; send Content-Length",
        ));
    }
    let mut length: Option<u64> = None;
    for value in head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .flat_map(|(_, v)| v.split(','))
    {
        let value = value.trim();
        let parsed = (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
            .then(|| value.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| refusal(400, format!("bad Content-Length `{value}`")))?;
        match length {
            Some(seen) if seen != parsed => {
                return Err(refusal(400, "conflicting Content-Length values"));
            }
            _ => length = Some(parsed),
        }
    }
    Ok(length.unwrap_or(0))
}

/// Whether `key` is what RFC 6455 §4.2.1 asks of `Sec-WebSocket-Key`: the
/// base64 of 16 bytes, which is 22 characters of the alphabet and `==`.
pub fn is_websocket_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    bytes.len() == 24
        && bytes.ends_with(b"==")
        && bytes[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

/// What to answer an upgrade request: a pure function of the head, so
/// the fuzz target reaches every branch without a socket.
#[derive(Debug)]
pub enum Decision {
    /// Answer with this 101 response and go on as this endpoint.
    Accept {
        endpoint: Endpoint,
        response: String,
    },
    /// Refuse with this status, reason and extra header lines.
    Refuse {
        status: u16,
        why: String,
        extra: &'static str,
    },
}

/// Validates an upgrade request as RFC 6455 4.2.1 asks, and routes it.
pub fn decide_upgrade(head: &Head) -> Decision {
    let refuse =
        |status: u16, why: String, extra: &'static str| Decision::Refuse { status, why, extra };
    if head.method != "GET" || head.version != 1 {
        return refuse(
            400,
            "a websocket handshake must be GET over HTTP/1.1".into(),
            "",
        );
    }
    if !head.has_token("connection", "upgrade") {
        return refuse(400, "missing Connection: Upgrade".into(), "");
    }
    if head.header("sec-websocket-version") != Some("13") {
        return refuse(
            426,
            "unsupported Sec-WebSocket-Version (this server speaks 13)".into(),
            "Sec-WebSocket-Version: 13\r\n",
        );
    }
    if let Err(Refusal { status, why }) = check_head(head) {
        return refuse(status, why, "");
    }
    let Some(key) = head.header("sec-websocket-key").filter(|k| !k.is_empty()) else {
        return refuse(400, "missing Sec-WebSocket-Key".into(), "");
    };
    if !is_websocket_key(key) {
        return refuse(
            400,
            "Sec-WebSocket-Key is not the base64 of 16 bytes".into(),
            "",
        );
    }
    let Some(endpoint) = route(&head.target) else {
        return refuse(404, format!("no websocket endpoint at {}", head.target), "");
    };
    let accept = derive_accept_key(key.as_bytes());
    Decision::Accept {
        endpoint,
        response: format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        ),
    }
}

/// Answers with a closing error status the client can read: our sending
/// side is shut down first and what the client still sends is read and
/// discarded for a moment, since closing with input unread makes the kernel
/// send a reset that can destroy the answer (RFC 9112 §9.6).
pub fn refuse(stream: &Stream, status: u16, why: &str, extra: &str) {
    if write_status(stream, status, why, extra).is_err() {
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < 1 << 20 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(n) => drained += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Writes a short plain-text error response that closes the connection.
pub fn write_status(stream: &Stream, status: u16, body: &str, extra: &str) -> io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}\n",
        reason_phrase(status),
        body.len() + 1,
    );
    stream.write_all(response.as_bytes())
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_spec_table() {
        assert_eq!(route("/"), Some(Endpoint::Image { response: None }));
        assert_eq!(
            route("/image?response=fast"),
            Some(Endpoint::Image {
                response: Some(ResponseMode::Fast)
            })
        );
        assert_eq!(
            route("/?x=1&response=slow"),
            Some(Endpoint::Image {
                response: Some(ResponseMode::Slow)
            })
        );
        assert_eq!(route("/echo"), Some(Endpoint::Echo));
        assert_eq!(route("/hello"), Some(Endpoint::Hello));
        assert_eq!(
            route("/chat"),
            Some(Endpoint::Chat {
                room: "lobby".into()
            })
        );
        assert_eq!(
            route("/chat/blue?x=1"),
            Some(Endpoint::Chat {
                room: "blue".into()
            })
        );
        assert_eq!(route("/chat/"), None);
        assert_eq!(route("/chat/a/b"), None);
        assert_eq!(route("/nope"), None);
        assert_eq!(route("/image/extra"), None);
    }

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn heads_are_checked_as_rfc_9112_asks() {
        let status = |text: &str| check_head(&head(text)).map_err(|r| r.status);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(0));
        assert_eq!(status("GET / HTTP/1.0\r\n\r\n"), Ok(0));
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), Err(400));
        assert_eq!(
            status("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
            Err(400)
        );
        let cl = |values: &str| {
            status(&format!(
                "POST / HTTP/1.1\r\nHost: a\r\n{}\r\n",
                values
                    .split('|')
                    .map(|v| format!("Content-Length: {v}\r\n"))
                    .collect::<String>()
            ))
        };
        assert_eq!(cl("4"), Ok(4));
        assert_eq!(cl("4|4"), Ok(4));
        assert_eq!(cl("4, 4"), Ok(4));
        assert_eq!(cl("4|5"), Err(400));
        for bad in ["+4", "-4", "4 4", "0x4", "", "99999999999999999999999"] {
            assert_eq!(cl(bad), Err(400), "{bad:?}");
        }
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(411)
        );
    }

    #[test]
    fn websocket_keys_are_the_base64_of_16_bytes() {
        assert!(is_websocket_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(is_websocket_key("AAAAAAAAAAAAAAAAAAAA+/=="));
        for bad in [
            "",
            "abc",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZQ=",
            "dGhlIHNhbXBsZSBub25j!Q==",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        ] {
            assert!(!is_websocket_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn too_many_header_fields_is_its_own_error() {
        let text = format!(
            "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(matches!(
            parse_head(text.as_bytes()),
            Err(HeadError::TooManyHeaders)
        ));
    }

    #[test]
    fn heads_parse_partially_then_completely() {
        let full = b"GET /x HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\r\nrest";
        assert!(parse_head(&full[..20]).unwrap().is_none());
        let (head, len) = parse_head(full).unwrap().unwrap();
        assert_eq!(&full[len..], b"rest");
        assert_eq!(head.target, "/x");
        assert!(head.wants_upgrade());
        assert!(head.has_token("connection", "upgrade"));
        assert!(matches!(
            parse_head(b"\x16\x03\x01garbage\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
    }
}
