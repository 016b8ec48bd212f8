//! Plain HTTP/1.1 on the WebSocket port, for requests without
//! `Upgrade: websocket`: the HTTP side of the ping-pong comparison, a
//! health check and the Prometheus metrics. Keep-alive and pipelining:
//! requests are answered in order from one buffer until the client closes
//! or asks to.

use std::fmt::Write as _;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::Shared;
use super::handshake::{self, Head, reason_phrase, route};
use super::image::text_reply;
use crate::metrics::{ServerCounters, add, get};
use crate::stream::Stream;

/// Serves `head` (already read into `buf`) and every request after it on
/// this connection. Writes give up after `--ping-timeout` without progress
/// (the socket's write timeout, set by the caller).
pub fn serve(
    shared: &Shared,
    stream: &Stream,
    id: u64,
    mut head: Head,
    mut head_len: usize,
    mut buf: Vec<u8>,
) {
    let args = &shared.args;
    loop {
        add(&shared.counters.http_requests_total, 1);
        let keep_alive = match head.version {
            0 => head.has_token("connection", "keep-alive"),
            _ => !head.has_token("connection", "close"),
        };
        let body_len = match handshake::check_head(&head) {
            Ok(len) => len,
            Err(refusal) => {
                add(&shared.counters.handshake_failures_total, 1);
                log::info!(
                    "conn {id}: refused with {}: {}",
                    refusal.status,
                    refusal.why
                );
                handshake::refuse(stream, refusal.status, &refusal.why, "");
                return;
            }
        };
        if body_len > args.max_message_size as u64 {
            log::info!("conn {id}: refused with 413: a {body_len}-byte body");
            handshake::refuse(stream, 413, "body over --max-message-size", "");
            return;
        }
        let body_len = body_len as usize;
        let deadline = Instant::now() + args.handshake_timeout;
        if !read_body(stream, &mut buf, head_len + body_len, deadline) {
            log::debug!("conn {id}: request body did not arrive");
            return;
        }
        let body = &buf[head_len..head_len + body_len];
        let (status, content_type, text) = respond(&shared.counters, &head, body);
        let mut response = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
            reason_phrase(status),
            text.len()
        );
        if status == 426 {
            response.push_str("Upgrade: websocket\r\nConnection: Upgrade\r\n");
        } else if !keep_alive {
            response.push_str("Connection: close\r\n");
        } else if head.version == 0 {
            response.push_str("Connection: keep-alive\r\n");
        }
        response.push_str("\r\n");
        if head.method != "HEAD" {
            response.push_str(&text);
        }
        if let Err(e) = stream.write_all(response.as_bytes()) {
            log::info!(
                "conn {id}: response not taken within --ping-timeout, closed: {}",
                crate::error::io_cause(&e)
            );
            return;
        }
        if !keep_alive {
            return;
        }
        buf.drain(..head_len + body_len);
        // Waiting for the next request is idling; once its first byte is
        // in, the head must be whole within the handshake timeout.
        if buf.is_empty() && !readable_within(stream, args.idle_timeout) {
            log::debug!("conn {id}: idle past --idle-timeout, closed");
            return;
        }
        match handshake::read_head(stream, &mut buf, Instant::now() + args.handshake_timeout) {
            Ok((next, len)) => {
                if next.wants_upgrade() {
                    // An upgrade after plain requests on one connection is
                    // legal but no client does it; say so rather than guess.
                    handshake::refuse(
                        stream,
                        400,
                        "upgrade must be the first request of a connection",
                        "",
                    );
                    return;
                }
                head = next;
                head_len = len;
            }
            Err(err) => return super::refuse_head(shared, stream, id, err),
        }
    }
}

/// Whether the peer sends something (or closes) within `limit`.
fn readable_within(stream: &Stream, limit: Duration) -> bool {
    // TLS may already hold a pipelined request, decrypted: the socket
    // would not show it.
    if stream.has_buffered() {
        return true;
    }
    let mut fd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let millis = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one pollfd on the stack, valid for the call; the stream
        // keeps its descriptor open.
        match unsafe { libc::poll(&mut fd, 1, millis) } {
            1 => return true,
            0 => return false,
            // Interrupted by a signal: the deadline still holds.
            _ if !left.is_zero() => {}
            _ => return false,
        }
    }
}

/// Reads until `buf` holds `want` bytes; false if the peer or the clock
/// ran out first. The buffer grows with what arrives, never ahead of it
/// by more than a read's worth: an announced length is only a claim.
fn read_body(stream: &Stream, buf: &mut Vec<u8>, want: usize, deadline: Instant) -> bool {
    const STEP: usize = 64 * 1024;
    while buf.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        let start = buf.len();
        buf.resize(start + (want - start).min(STEP), 0);
        match stream.read(&mut buf[start..]) {
            Ok(0) => return false,
            Ok(n) => buf.truncate(start + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => buf.truncate(start),
            Err(_) => return false,
        }
    }
    true
}

/// The response to one plain request: status, content type, body.
pub fn respond(counters: &ServerCounters, head: &Head, body: &[u8]) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let path = head.target.split('?').next().unwrap_or("");
    match (head.method.as_str(), path) {
        ("GET" | "HEAD", "/") => (200, TEXT, "Hello, HTTP!".into()),
        ("POST", "/") => match std::str::from_utf8(body) {
            Ok(text) => (200, TEXT, text_reply(text)),
            Err(_) => (400, TEXT, "body is not utf-8\n".into()),
        },
        ("GET" | "HEAD", "/healthz") => (200, TEXT, "ok".into()),
        ("GET" | "HEAD", "/metrics") => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            prometheus(counters),
        ),
        (_, "/" | "/healthz" | "/metrics") => (405, TEXT, "method not allowed\n".into()),
        _ if route(&head.target).is_some() => (
            426,
            TEXT,
            format!("{path} is a websocket endpoint: send Upgrade: websocket\n"),
        ),
        _ => (404, TEXT, format!("nothing at {path}\n")),
    }
}

/// The counters in Prometheus text format 0.0.4.
pub fn prometheus(c: &ServerCounters) -> String {
    let metrics: [(&str, &str, &str, u64); 14] = [
        (
            "connections_current",
            "gauge",
            "Open connections, WebSocket and HTTP.",
            get(&c.connections_current),
        ),
        (
            "connections_total",
            "counter",
            "Connections accepted.",
            get(&c.connections_total),
        ),
        (
            "connections_rejected_total",
            "counter",
            "Connections refused over --max-connections.",
            get(&c.connections_rejected_total),
        ),
        (
            "handshake_failures_total",
            "counter",
            "Connections whose request head or handshake failed.",
            get(&c.handshake_failures_total),
        ),
        (
            "messages_received_total",
            "counter",
            "WebSocket data messages received.",
            get(&c.messages_received_total),
        ),
        (
            "messages_sent_total",
            "counter",
            "WebSocket data messages sent.",
            get(&c.messages_sent_total),
        ),
        (
            "bytes_received_total",
            "counter",
            "Payload bytes of WebSocket data messages received.",
            get(&c.bytes_received_total),
        ),
        (
            "bytes_sent_total",
            "counter",
            "Payload bytes of WebSocket data messages sent.",
            get(&c.bytes_sent_total),
        ),
        (
            "stats_jobs_pending",
            "gauge",
            "Background statistics jobs queued or running.",
            get(&c.stats_jobs_pending),
        ),
        (
            "stats_jobs_completed_total",
            "counter",
            "Background statistics jobs finished.",
            get(&c.stats_jobs_completed_total),
        ),
        (
            "slow_clients_dropped_total",
            "counter",
            "Connections dropped for not reading.",
            get(&c.slow_clients_dropped_total),
        ),
        (
            "http_requests_total",
            "counter",
            "Plain HTTP requests served.",
            get(&c.http_requests_total),
        ),
        (
            "ping_timeouts_total",
            "counter",
            "Connections closed for not answering a ping.",
            get(&c.ping_timeouts_total),
        ),
        (
            "connections_capacity",
            "gauge",
            "Connections this machine lets the server hold (descriptors, memory maps, threads), measured at start.",
            get(&c.connections_capacity),
        ),
    ];
    let mut out = String::with_capacity(2048);
    for (name, kind, help, value) in metrics {
        let _ = write!(
            out,
            "# HELP wsbench_{name} {help}\n# TYPE wsbench_{name} {kind}\nwsbench_{name} {value}\n"
        );
    }
    crate::metrics::prometheus_redis(c, &mut out);
    out
}
