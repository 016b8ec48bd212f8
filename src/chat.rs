//! `wsbench chat`: the interactive client of the original chat experiment
//! (#5), rebuilt to survive dead connections and lose no typed line. It owns
//! the terminal side (line editor or plain stdin, `< ` lines, status lines)
//! and the delivery bookkeeping; the split connection itself is
//! [`connect::connect_split`]'s.
//!
//! # Threads and channels
//!
//! ```text
//! chat-stdin ──Input──┐                         ┌─> stdout `< text`
//! chat-reader-N ──Event──> controller (select!) ┼─> stderr status lines
//! chat-connect-N ──result──┘   │  ping tick, pong deadline, retry timer,
//! Ctrl-C / SIGTERM ────────────┘  writes lines, pings, pongs, closes
//! ```
//!
//! - **chat-stdin** reads lines (rustyline on a terminal, buffered lines
//!   from a pipe or file) and sends them to the controller; it never
//!   touches the network, so typing is never held up by it.
//! - **chat-reader-N** owns connection N's reader `WebSocket<ReadHalf>`.
//!   Its writes go nowhere, so pings and closes are passed on as events and
//!   answered by the controller through the writer.
//! - **chat-connect-N** makes one connection attempt, so Ctrl-C, end of
//!   input and typed lines are handled while a handshake is pending.
//! - The **controller** (the calling thread) owns the writer
//!   `WebSocket<WriteHalf>` and every decision: it `select!`s over the
//!   channels above, the ping ticker, the pong deadline and the backoff
//!   timer. Nothing polls or sleeps.
//!
//! # Delivery
//!
//! A line is *delivered* once it was written to a connection that then
//! answered a ping sent after it: every ping carries a sequence number, and
//! TCP keeps order, so the server has read the line before that pong. After
//! writing lines the controller pings at once, so confirmation takes one
//! round trip, not a ping interval. Until then the line is kept. If the
//! connection dies (failed write, no pong within `--pong-timeout`, reset,
//! EOF without a close frame) the unconfirmed lines are sent again, first,
//! on the next connection; lines typed meanwhile queue behind them. A line
//! is therefore never lost and never sent twice on a connection that was
//! alive. Across a dead connection delivery is at least once: a line the
//! server read just before it died, whose pong was lost with it, is sent
//! again. A killed server loses what sat unread in its socket, which is the
//! case resending is for.
//!
//! A close frame from the server ends the conversation in order: lines
//! written before it count as delivered and are not resent (resending
//! `stop` after `stop` closed the connection would loop). After a 1000
//! close (or one without a code) the next typed line reconnects; after any
//! other code (1001 going away, 1012 restarting) the client reconnects at
//! once with the usual backoff, so someone watching a room sees it come
//! back after a server restart without typing (see #13).
//!
//! End of input ends the run once every line is delivered. On a terminal
//! the client waits for that as long as it takes (Ctrl-C gives up); with
//! stdin a pipe or a file nobody is there to press Ctrl-C, so it gives up
//! `--give-up-after` after the end of input, names how many lines were not
//! delivered and exits 1 (see #13).
//!
//! # Terminal
//!
//! On a terminal, stdin goes through rustyline (editing, history) and
//! incoming lines go through its external printer, which clears the line
//! being typed, prints, and redraws it. Status lines take the same path
//! when stderr is that terminal too; when stderr is redirected they go
//! there, as always. rustyline restores the terminal only when `readline`
//! returns, which it never does when a signal ends the run, so the
//! terminal's settings are saved at start and put back on the way out.

use std::collections::VecDeque;
use std::io::{self, BufRead, IsTerminal, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, never, select};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Request;
use tungstenite::http::{HeaderName, HeaderValue};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Bytes, Message, WebSocket};

use crate::cli::ChatArgs;
use crate::client::WsUrl;
use crate::client::connect::{self, ConnectError, ReadHalf, SplitClient, WriteHalf};
use crate::error::{Error, io_cause};
use crate::signal;

/// First wait before reconnecting; doubles up to `--reconnect-max-delay`.
const FIRST_DELAY: Duration = Duration::from_millis(500);
/// How long the end waits for the server's close reply.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
const PROMPT: &str = "> ";

/// What the stdin thread reports.
enum Input {
    Line(String),
    /// End of input (Ctrl-D on a terminal).
    End,
    /// Ctrl-C on a terminal (rustyline reads it as a key, not a signal).
    Interrupt,
}

/// What a connection's reader thread reports.
enum Event {
    Text(String),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    Close(Option<(u16, String)>),
    Lost(String),
}

pub fn run(args: ChatArgs) -> Result<(), Error> {
    let url = WsUrl::parse(&args.url).map_err(|why| Error::Url {
        url: args.url.clone(),
        why,
    })?;
    crate::client::tls::install(&args.trust, &[])?;
    // Checked once here, so a bad header is a clear error and not a retry loop.
    build_request(&args).map_err(|why| Error::Url {
        url: args.url.clone(),
        why,
    })?;
    let stdin_is_terminal = io::stdin().is_terminal();
    let interactive = stdin_is_terminal && io::stdout().is_terminal();
    let (input_tx, input_rx) = crossbeam_channel::unbounded();
    // Saved before rustyline switches to raw mode; dropped (restoring it)
    // however run() ends.
    let _terminal = if interactive {
        TerminalModes::save()
    } else {
        None
    };
    let console = if interactive {
        start_editor(input_tx)?
    } else {
        start_plain_reader(input_tx)?;
        Console::plain()
    };
    let mut chat = Chat {
        args,
        url,
        console,
        out: Outgoing::default(),
        link: Link::Idle,
        delay: FIRST_DELAY,
        attempts: 0,
        next_ping_seq: 0,
        ever_connected: false,
        input_ended: false,
        stdin_is_terminal,
        give_up_at: None,
        last_failure: None,
    };
    chat.start_connecting();
    chat.run(&input_rx)
}

/// One connection that completed its handshake.
struct Conn {
    id: u64,
    writer: WebSocket<WriteHalf>,
    stream: Arc<crate::stream::Stream>,
    events: Receiver<Event>,
    ticker: Receiver<Instant>,
    /// Pings not answered yet: sequence number and when sent.
    pings: VecDeque<(u64, Instant)>,
    last_pong: Option<Instant>,
    connected_at: Instant,
}

impl Conn {
    fn since_last_pong(&self) -> String {
        match self.last_pong {
            Some(at) => format!("last pong {:.1} s ago", at.elapsed().as_secs_f64()),
            None => format!(
                "no pong since connecting {:.1} s ago",
                self.connected_at.elapsed().as_secs_f64()
            ),
        }
    }

    fn pong_deadline(&self, timeout: Duration) -> Option<Instant> {
        self.pings.front().map(|(_, sent)| *sent + timeout)
    }
}

enum Link {
    Up(Box<Conn>),
    /// Backing off until then.
    Waiting(Instant),
    Connecting(Receiver<Result<SplitClient, ConnectError>>),
    /// Not connected and not trying: closed by the server, or not started.
    /// The next line reconnects.
    Idle,
}

/// Typed lines not yet known to be delivered, in order. The first
/// `written` were written on the current connection; `marks` says how many
/// of them each ping in flight confirms.
#[derive(Default)]
struct Outgoing {
    lines: VecDeque<String>,
    written: usize,
    marks: VecDeque<(u64, usize)>,
}

impl Outgoing {
    fn push(&mut self, line: String) {
        self.lines.push_back(line);
    }

    fn unsent(&self) -> usize {
        self.lines.len() - self.written
    }

    /// A ping with `seq` went out after the first `written` lines.
    fn ping_sent(&mut self, seq: u64) {
        let marked = self.marks.back().map_or(0, |m| m.1);
        if self.written > marked {
            self.marks.push_back((seq, self.written));
        }
    }

    /// The pong of ping `seq` came back: what was written before it is
    /// delivered. Returns how many lines that confirmed.
    fn pong(&mut self, seq: u64) -> usize {
        let mut confirmed = 0;
        while self.marks.front().is_some_and(|m| m.0 <= seq) {
            confirmed = self.marks.pop_front().expect("checked just above").1;
        }
        self.lines.drain(..confirmed);
        self.written -= confirmed;
        for mark in &mut self.marks {
            mark.1 -= confirmed;
        }
        confirmed
    }

    /// The connection died: written lines go out again on the next one.
    /// Returns how many.
    fn connection_lost(&mut self) -> usize {
        self.marks.clear();
        std::mem::take(&mut self.written)
    }

    /// The server closed in order: written lines count as delivered.
    fn closed_by_server(&mut self) {
        self.marks.clear();
        let written = std::mem::take(&mut self.written);
        self.lines.drain(..written);
    }
}

/// How the controller loop ends.
#[derive(Clone, Copy)]
enum Finish {
    /// End of input and nothing left to send: close in order.
    Done,
    /// Ctrl-C or SIGTERM: close now, whatever is queued.
    Interrupted,
    /// Input ended (not on a terminal) and `--give-up-after` passed with
    /// lines still undelivered.
    GaveUp,
}

struct Chat {
    args: ChatArgs,
    url: WsUrl,
    console: Console,
    out: Outgoing,
    link: Link,
    delay: Duration,
    attempts: u64,
    next_ping_seq: u64,
    ever_connected: bool,
    input_ended: bool,
    stdin_is_terminal: bool,
    /// When lines still undelivered are given up (stdin not a terminal,
    /// input ended).
    give_up_at: Option<Instant>,
    /// Why the last connection attempt or connection failed, for the
    /// give-up line.
    last_failure: Option<String>,
}

impl Chat {
    fn run(&mut self, input: &Receiver<Input>) -> Result<(), Error> {
        let interrupts = signal::channel();
        let finish = loop {
            if let Err(why) = self.flush() {
                self.lost(&why);
            }
            if matches!(self.link, Link::Idle) && self.out.unsent() > 0 {
                self.start_connecting();
            }
            // Done once every line is delivered. Lines written but not yet
            // confirmed wait for their pong: if the connection died under
            // them, that pong never comes and they go out again.
            if self.input_ended && self.out.lines.is_empty() {
                match &self.link {
                    // An attempt under way ends first: its error (a 404,
                    // say) is worth reporting even with nothing to send.
                    Link::Connecting(_) => {}
                    _ => break Finish::Done,
                }
            }
            let input = if self.input_ended { &never() } else { input };
            let (events, ticker, deadline) = match &self.link {
                Link::Up(conn) => (
                    conn.events.clone(),
                    conn.ticker.clone(),
                    conn.pong_deadline(self.args.pong_timeout),
                ),
                _ => (never(), never(), None),
            };
            let deadline = deadline.map_or_else(never, crossbeam_channel::at);
            let retry = match &self.link {
                Link::Waiting(at) => crossbeam_channel::at(*at),
                _ => never(),
            };
            let connecting = match &self.link {
                Link::Connecting(rx) => rx.clone(),
                _ => never(),
            };
            let give_up = self.give_up_at.map_or_else(never, crossbeam_channel::at);
            select! {
                recv(interrupts) -> _ => break Finish::Interrupted,
                recv(give_up) -> _ => break Finish::GaveUp,
                recv(input) -> got => match got {
                    Ok(Input::Line(line)) => self.out.push(line),
                    Ok(Input::End) | Err(_) => self.end_of_input(),
                    Ok(Input::Interrupt) => break Finish::Interrupted,
                },
                recv(events) -> event => match event {
                    Ok(event) => self.on_event(event),
                    Err(_) => self.lost("reader stopped"),
                },
                recv(ticker) -> _ => {
                    if let Err(why) = self.ping() {
                        self.lost(&why);
                    }
                }
                recv(deadline) -> _ => self.pong_overdue(),
                recv(retry) -> _ => self.start_connecting(),
                recv(connecting) -> result => match result {
                    Ok(Ok(client)) => self.connected(client),
                    Ok(Err(err)) => self.connect_failed(&err)?,
                    Err(_) => self.connect_failed(&ConnectError::Tcp("connect thread died".into()))?,
                },
            }
        };
        let undelivered = self.out.lines.len();
        let last = match (&self.link, &self.last_failure) {
            (Link::Connecting(_), None) => {
                " (a connection attempt was still under way)".to_string()
            }
            (_, Some(why)) => format!(" (last: {why})"),
            (_, None) => String::new(),
        };
        self.finish(finish);
        if matches!(finish, Finish::GaveUp) {
            return Err(Error::Other(format!(
                "{undelivered} line(s) not delivered to {}: gave up {} after the end of input (--give-up-after){last}",
                self.url.text,
                seconds(self.args.give_up_after),
            )));
        }
        Ok(())
    }

    fn end_of_input(&mut self) {
        self.input_ended = true;
        if !self.stdin_is_terminal {
            self.give_up_at = Some(Instant::now() + self.args.give_up_after);
        }
        let waiting = self.out.lines.len();
        if waiting > 0 && !matches!(self.link, Link::Up(_)) {
            let how = if self.stdin_is_terminal {
                "Ctrl-C gives up".to_string()
            } else {
                format!("giving up in {}", seconds(self.args.give_up_after))
            };
            self.console.status(&format!(
                "end of input: {waiting} line(s) wait for a connection ({how})"
            ));
        }
    }

    /// Writes the lines not yet written on this connection, then pings so
    /// that they are confirmed one round trip later.
    fn flush(&mut self) -> Result<(), String> {
        let Link::Up(conn) = &mut self.link else {
            return Ok(());
        };
        if self.out.unsent() == 0 {
            return Ok(());
        }
        for line in self.out.lines.range(self.out.written..) {
            conn.writer
                .write(Message::text(line.as_str()))
                .map_err(|e| describe(&e))?;
        }
        conn.writer.flush().map_err(|e| describe(&e))?;
        self.out.written = self.out.lines.len();
        self.ping()
    }

    fn ping(&mut self) -> Result<(), String> {
        let Link::Up(conn) = &mut self.link else {
            return Ok(());
        };
        // The payload is the sequence number in decimal: some servers
        // (Python's websocket-server) decode ping payloads as UTF-8.
        let seq = self.next_ping_seq;
        self.next_ping_seq += 1;
        conn.writer
            .send(Message::Ping(Bytes::from(seq.to_string())))
            .map_err(|e| describe(&e))?;
        conn.pings.push_back((seq, Instant::now()));
        self.out.ping_sent(seq);
        Ok(())
    }

    fn on_event(&mut self, event: Event) {
        let Link::Up(conn) = &mut self.link else {
            return;
        };
        match event {
            Event::Text(text) => self.console.incoming(&text),
            Event::Binary(bytes) => match std::str::from_utf8(&bytes) {
                Ok(text) => self.console.incoming(text),
                Err(_) => self
                    .console
                    .incoming(&format!("[binary, {} bytes]", bytes.len())),
            },
            Event::Ping(payload) => {
                if let Err(e) = conn.writer.send(Message::Pong(payload)) {
                    self.lost(&describe(&e));
                }
            }
            Event::Pong(payload) => {
                conn.last_pong = Some(Instant::now());
                // An unsolicited pong, or one we cannot read, answers nothing.
                let Some(seq) = std::str::from_utf8(&payload)
                    .ok()
                    .and_then(|text| text.parse::<u64>().ok())
                else {
                    return;
                };
                while conn.pings.front().is_some_and(|(s, _)| *s <= seq) {
                    conn.pings.pop_front();
                }
                let confirmed = self.out.pong(seq);
                if confirmed > 0 {
                    log::debug!("{confirmed} line(s) confirmed by pong {seq}");
                }
            }
            Event::Close(frame) => {
                let said = match &frame {
                    Some((code, reason)) if reason.is_empty() => format!("code {code}"),
                    Some((code, reason)) => format!("code {code}, reason \"{reason}\""),
                    None => "no code".to_string(),
                };
                // Echo the code, as RFC 6455 5.5.1 asks.
                let reply = frame.map(|(code, _)| CloseFrame {
                    code: CloseCode::from(code),
                    reason: "".into(),
                });
                let code = reply.as_ref().map(|f| u16::from(f.code));
                let _ = conn.writer.close(reply);
                let _ = conn.writer.flush();
                let _ = conn.stream.shutdown(Shutdown::Both);
                self.out.closed_by_server();
                match code {
                    // Closed on purpose (`stop`): come back when asked to.
                    None | Some(1000) => {
                        self.link = Link::Idle;
                        self.console.status(&format!(
                            "closed by server: {said}; the next line reconnects"
                        ));
                    }
                    // Going away, restarting, or a fault: nobody asked to
                    // leave, so come back as after a dead connection.
                    Some(_) => {
                        self.last_failure = Some(format!("closed by server: {said}"));
                        self.console.status(&format!(
                            "closed by server: {said}; reconnecting in {}",
                            seconds(self.delay)
                        ));
                        self.wait_before_retry();
                    }
                }
            }
            Event::Lost(why) => self.lost(&why),
        }
    }

    fn pong_overdue(&mut self) {
        let Link::Up(conn) = &self.link else {
            return;
        };
        let Some(deadline) = conn.pong_deadline(self.args.pong_timeout) else {
            return;
        };
        if Instant::now() < deadline {
            return;
        }
        let why = format!(
            "no pong within {:.1} s ({}): connection is dead",
            self.args.pong_timeout.as_secs_f64(),
            conn.since_last_pong()
        );
        self.drop_link(&why);
    }

    /// The connection died under us: say so, keep its unconfirmed lines,
    /// and back off before the next attempt.
    fn lost(&mut self, why: &str) {
        let Link::Up(conn) = &self.link else {
            return;
        };
        let why = format!("connection lost: {why} ({})", conn.since_last_pong());
        self.drop_link(&why);
    }

    fn drop_link(&mut self, why: &str) {
        self.last_failure = Some(why.to_string());
        if let Link::Up(conn) = &self.link {
            // Wakes the reader, which then ends.
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
        let resend = self.out.connection_lost();
        let resend = if resend > 0 {
            format!("; {resend} unconfirmed line(s) will be sent again")
        } else {
            String::new()
        };
        self.console.status(&format!(
            "{why}; reconnecting in {}{resend}",
            seconds(self.delay)
        ));
        self.wait_before_retry();
    }

    fn wait_before_retry(&mut self) {
        self.link = Link::Waiting(Instant::now() + self.delay);
        self.delay = (self.delay * 2).min(self.args.reconnect_max_delay.max(FIRST_DELAY));
    }

    fn start_connecting(&mut self) {
        self.attempts += 1;
        let (tx, rx) = crossbeam_channel::bounded(1);
        let request = build_request(&self.args).expect("checked in run()");
        let timeout = self.args.pong_timeout;
        let spawned = thread::Builder::new()
            .name(format!("chat-connect-{}", self.attempts))
            .spawn(move || {
                let _ = tx.send(connect::connect_split(request, timeout));
            });
        match spawned {
            Ok(_) => self.link = Link::Connecting(rx),
            Err(e) => {
                self.console
                    .status(&format!("cannot start a connect thread: {}", io_cause(&e)));
                self.wait_before_retry();
            }
        }
    }

    fn connect_failed(&mut self, err: &ConnectError) -> Result<(), Error> {
        // A server that answers but refuses the path, or whose certificate
        // we do not trust, will not change its mind: on the first attempt
        // that is a usage problem, not a wait.
        let refused = match err {
            ConnectError::Status(code) => (400..500).contains(code) && !matches!(code, 408 | 429),
            ConnectError::Untrusted(_) => true,
            _ => false,
        };
        if refused && !self.ever_connected {
            return Err(Error::Connect {
                url: self.url.text.clone(),
                cause: err.to_string(),
            });
        }
        self.last_failure = Some(err.to_string());
        self.console.status(&format!(
            "cannot connect to {}: {err}; retrying in {}",
            self.url.text,
            seconds(self.delay)
        ));
        self.wait_before_retry();
        Ok(())
    }

    fn connected(&mut self, client: SplitClient) {
        let SplitClient {
            reader,
            writer,
            stream,
            response,
        } = client;
        let id = self.attempts;
        // A write that blocks this long means the peer is not reading: dead.
        let _ = stream.set_write_timeout(Some(self.args.pong_timeout));
        let (tx, events) = crossbeam_channel::unbounded();
        let spawned = thread::Builder::new()
            .name(format!("chat-reader-{id}"))
            .spawn(move || read_events(reader, &tx));
        if let Err(e) = spawned {
            let _ = stream.shutdown(Shutdown::Both);
            self.console
                .status(&format!("cannot start a reader thread: {}", io_cause(&e)));
            self.wait_before_retry();
            return;
        }
        let protocol = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .map(|p| format!(" (subprotocol {p})"))
            .unwrap_or_default();
        let queued = match self.out.unsent() {
            0 => String::new(),
            n => format!("; sending {n} queued line(s)"),
        };
        self.console
            .status(&format!("connected to {}{protocol}{queued}", self.url.text));
        self.ever_connected = true;
        self.delay = FIRST_DELAY;
        self.link = Link::Up(Box::new(Conn {
            id,
            writer,
            stream,
            events,
            ticker: crossbeam_channel::tick(self.args.ping_interval),
            pings: VecDeque::new(),
            last_pong: None,
            connected_at: Instant::now(),
        }));
    }

    /// Sends a close frame if connected and waits up to [`CLOSE_WAIT`] for
    /// the reply, printing what still arrives meanwhile.
    fn finish(&mut self, finish: Finish) {
        let unsent = self.out.unsent();
        if matches!(finish, Finish::Interrupted) && unsent > 0 {
            self.console
                .status(&format!("interrupted: {unsent} line(s) were not sent"));
        }
        let Link::Up(mut conn) = std::mem::replace(&mut self.link, Link::Idle) else {
            return;
        };
        let bye = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        if conn.writer.close(Some(bye)).is_ok() && conn.writer.flush().is_ok() {
            let deadline = crossbeam_channel::after(CLOSE_WAIT);
            loop {
                select! {
                    recv(conn.events) -> event => match event {
                        Ok(Event::Text(text)) => self.console.incoming(&text),
                        Ok(Event::Close(_)) | Ok(Event::Lost(_)) | Err(_) => break,
                        Ok(_) => {}
                    },
                    recv(deadline) -> _ => {
                        self.console.status(&format!(
                            "no close reply within {} (connection {})",
                            seconds(CLOSE_WAIT),
                            conn.id
                        ));
                        break;
                    }
                }
            }
        }
        let _ = conn.stream.shutdown(Shutdown::Both);
    }
}

/// The handshake request: the URL, then `-H` headers (replacing a
/// generated one of the same name, e.g. `Host`), then subprotocols.
fn build_request(args: &ChatArgs) -> Result<Request, String> {
    let mut request = args
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let headers = request.headers_mut();
    for (name, value) in &args.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
        headers.insert(name, value);
    }
    if !args.subprotocols.is_empty() {
        let value = HeaderValue::from_str(&args.subprotocols.join(", "))
            .map_err(|_| "a subprotocol name is not a valid header value".to_string())?;
        headers.insert("Sec-WebSocket-Protocol", value);
    }
    Ok(request)
}

fn read_events(mut reader: WebSocket<ReadHalf>, tx: &Sender<Event>) {
    loop {
        let event = match reader.read() {
            Ok(Message::Text(text)) => Event::Text(text.to_string()),
            Ok(Message::Binary(bytes)) => Event::Binary(bytes),
            Ok(Message::Ping(payload)) => Event::Ping(payload),
            Ok(Message::Pong(payload)) => Event::Pong(payload),
            Ok(Message::Close(frame)) => {
                Event::Close(frame.map(|f| (u16::from(f.code), f.reason.to_string())))
            }
            Ok(Message::Frame(_)) => continue,
            Err(err) => {
                let _ = tx.send(Event::Lost(describe(&err)));
                return;
            }
        };
        if tx.send(event).is_err() {
            return;
        }
    }
}

fn describe(err: &tungstenite::Error) -> String {
    match err {
        tungstenite::Error::Io(e) => io_cause(e),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => "closed".into(),
        tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => "closed without a close frame".into(),
        other => other.to_string(),
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Where `< ` lines and status lines go.
struct Console {
    /// rustyline's printer: prints above the line being typed.
    printer: Option<Box<dyn rustyline::ExternalPrinter + Send>>,
    /// Whether status lines take the printer too (stderr is the terminal).
    status_via_printer: bool,
}

impl Console {
    fn plain() -> Console {
        Console {
            printer: None,
            status_via_printer: false,
        }
    }

    fn incoming(&mut self, text: &str) {
        let line = format!("< {text}\n");
        if let Some(printer) = &mut self.printer
            && printer.print(line.clone()).is_ok()
        {
            return;
        }
        let mut stdout = io::stdout().lock();
        let _ = stdout.write_all(line.as_bytes());
        let _ = stdout.flush();
    }

    fn status(&mut self, text: &str) {
        let line = format!("{text}\n");
        if self.status_via_printer
            && let Some(printer) = &mut self.printer
            && printer.print(line.clone()).is_ok()
        {
            return;
        }
        let _ = io::stderr().lock().write_all(line.as_bytes());
    }
}

/// The terminal's settings as they were before rustyline's raw mode, put
/// back on drop. rustyline restores them itself only when `readline`
/// returns; a run ended by SIGTERM or SIGINT leaves its thread blocked in
/// `readline`, and the shell would be left without echo or line editing
/// (see #13).
struct TerminalModes {
    fd: libc::c_int,
    saved: libc::termios,
}

impl TerminalModes {
    fn save() -> Option<TerminalModes> {
        let fd = libc::STDIN_FILENO;
        // SAFETY: termios is plain old data; tcgetattr fills it in or fails.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd is stdin, `saved` is a valid termios to write into.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return None;
        }
        Some(TerminalModes { fd, saved })
    }
}

impl Drop for TerminalModes {
    fn drop(&mut self) {
        // SAFETY: `saved` came from tcgetattr on the same descriptor.
        unsafe {
            libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved);
        }
    }
}

/// Lines from a pipe or a file. Bytes that are not UTF-8 are replaced, not
/// fatal; `\r\n` endings and a last line without a newline are fine.
fn start_plain_reader(tx: Sender<Input>) -> Result<(), Error> {
    thread::Builder::new()
        .name("chat-stdin".into())
        .spawn(move || {
            let mut stdin = io::stdin().lock();
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match stdin.read_until(b'\n', &mut buf) {
                    Ok(0) => break,
                    Ok(_) => {
                        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
                        let line = line.strip_suffix(b"\r").unwrap_or(line);
                        let line = String::from_utf8_lossy(line).into_owned();
                        if tx.send(Input::Line(line)).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        log::warn!("cannot read stdin: {}", io_cause(&e));
                        break;
                    }
                }
            }
            let _ = tx.send(Input::End);
        })
        .map_err(|e| Error::Other(format!("cannot start the stdin thread: {}", io_cause(&e))))?;
    Ok(())
}

/// rustyline on a terminal: editing, history, and a printer for the lines
/// that arrive while one is being typed.
fn start_editor(tx: Sender<Input>) -> Result<Console, Error> {
    use rustyline::error::ReadlineError;
    let failed = |e: ReadlineError| Error::Other(format!("cannot set up the terminal: {e}"));
    let mut editor = rustyline::DefaultEditor::new().map_err(failed)?;
    let printer = editor.create_external_printer().map_err(failed)?;
    thread::Builder::new()
        .name("chat-stdin".into())
        .spawn(move || {
            loop {
                match editor.readline(PROMPT) {
                    Ok(line) => {
                        let _ = editor.add_history_entry(line.as_str());
                        if tx.send(Input::Line(line)).is_err() {
                            return;
                        }
                    }
                    Err(ReadlineError::Interrupted) => {
                        let _ = tx.send(Input::Interrupt);
                        return;
                    }
                    Err(ReadlineError::Eof) => break,
                    Err(e) => {
                        log::warn!("cannot read the terminal: {e}");
                        break;
                    }
                }
            }
            let _ = tx.send(Input::End);
        })
        .map_err(|e| Error::Other(format!("cannot start the stdin thread: {}", io_cause(&e))))?;
    Ok(Console {
        printer: Some(Box::new(printer)),
        status_via_printer: io::stderr().is_terminal(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(out: &Outgoing) -> Vec<&str> {
        out.lines.iter().map(String::as_str).collect()
    }

    #[test]
    fn a_pong_confirms_only_lines_written_before_its_ping() {
        let mut out = Outgoing::default();
        out.push("a".into());
        out.push("b".into());
        out.written = 2;
        out.ping_sent(7);
        out.push("c".into());
        out.written = 3;
        out.ping_sent(8);
        assert_eq!(out.pong(7), 2);
        assert_eq!(lines(&out), ["c"]);
        assert_eq!(out.written, 1);
        assert_eq!(out.pong(8), 1);
        assert!(out.lines.is_empty());
    }

    #[test]
    fn a_later_pong_also_confirms_what_earlier_pings_covered() {
        let mut out = Outgoing::default();
        for (seq, line) in ["a", "b", "c"].into_iter().enumerate() {
            out.push(line.into());
            out.written += 1;
            out.ping_sent(seq as u64);
        }
        // Pongs 0 and 1 lost or late: pong 2 proves everything before it.
        assert_eq!(out.pong(2), 3);
        assert!(out.marks.is_empty());
    }

    #[test]
    fn a_dead_connection_sends_unconfirmed_lines_again_in_order() {
        let mut out = Outgoing::default();
        out.push("a".into());
        out.written = 1;
        out.ping_sent(1);
        out.push("b".into());
        out.written = 2;
        out.push("c".into());
        assert_eq!(out.connection_lost(), 2);
        assert_eq!(out.unsent(), 3);
        assert_eq!(lines(&out), ["a", "b", "c"]);
        // A pong from the dead connection's ping confirms nothing now.
        assert_eq!(out.pong(1), 0);
    }

    #[test]
    fn an_orderly_close_keeps_only_unwritten_lines() {
        let mut out = Outgoing::default();
        out.push("stop".into());
        out.written = 1;
        out.push("typed after".into());
        out.closed_by_server();
        assert_eq!(lines(&out), ["typed after"]);
        assert_eq!(out.unsent(), 1);
    }

    #[test]
    fn pings_without_new_lines_add_no_marks() {
        let mut out = Outgoing::default();
        out.ping_sent(1);
        out.push("a".into());
        out.written = 1;
        out.ping_sent(2);
        out.ping_sent(3);
        assert_eq!(out.marks, [(2, 1)]);
    }
}
