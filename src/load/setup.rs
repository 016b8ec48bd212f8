//! Setting connections up: a batch of non-blocking connects, TLS
//! handshakes (`wss://`) and WebSocket handshakes driven by one `poll(2)`
//! until each is open, failed (by phase and cause) or timed out.

use super::*;
use crate::stream::{self, TlsHandshakeError};

/// In which step a connection's setup failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Connect,
    Handshake,
    Poll,
    /// Nothing to prefix: the cause says it all.
    Other,
}

/// Why one connection could not be set up: the step and its cause, kept
/// apart so that nothing has to be parsed back out of a message.
#[derive(Debug, Clone)]
pub(super) struct SetupError {
    pub(super) phase: Phase,
    pub(super) cause: String,
}

impl SetupError {
    pub(super) fn new(phase: Phase, cause: impl Into<String>) -> SetupError {
        SetupError {
            phase,
            cause: cause.into(),
        }
    }

    /// The failure's label in the by-reason line: a connect failure is
    /// its cause alone (`connection refused`).
    pub(super) fn label(&self) -> String {
        match (self.phase, self.cause.as_str()) {
            (Phase::Connect, "timed out") => "connect timed out".into(),
            (Phase::Handshake, "timed out") => "handshake timed out".into(),
            (Phase::Connect, cause) => cause.to_string(),
            _ => self.to_string(),
        }
    }
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.phase {
            Phase::Connect => write!(f, "connect: {}", self.cause),
            Phase::Handshake => write!(f, "handshake: {}", self.cause),
            Phase::Poll => write!(f, "poll: {}", self.cause),
            Phase::Other => f.write_str(&self.cause),
        }
    }
}

/// Where connections go, and how.
pub(super) struct Target {
    pub(super) url: WsUrl,
    pub(super) addr: SocketAddr,
    pub(super) config: WebSocketConfig,
    pub(super) timeout: Duration,
}

/// What one worker's batches set up.
#[derive(Default)]
pub(super) struct Setup {
    pub(super) attempted: u64,
    pub(super) established: u64,
    pub(super) failures: Failures,
    pub(super) reasons: Reasons,
    pub(super) first_error: Option<SetupError>,
    pub(super) tcp: Latency,
    pub(super) handshake: Latency,
}

impl Setup {
    pub(super) fn fail(&mut self, reason: Reason, why: SetupError) {
        self.failures.count(reason);
        self.reasons.add(why.label(), 1);
        log::debug!("connection failed: {why}");
        self.first_error.get_or_insert(why);
    }
}

pub(super) enum Step {
    Connecting(Socket),
    /// `wss://`: the TLS handshake, before the WebSocket one.
    Securing(TcpStream, Box<ClientConnection>),
    Handshaking(Box<MidHandshake<ClientHandshake<Stream>>>),
}

/// A connection of the current batch that is neither open nor failed yet.
pub(super) struct Pending {
    pub(super) step: Option<Step>,
    pub(super) fd: RawFd,
    pub(super) phase_started: Instant,
}

/// Whether a pending connection is still pending after a step.
pub(super) enum Progress {
    Waiting,
    /// Open (pushed to the batch's open list) or failed (counted).
    Done,
}

/// Starts a non-blocking connect from `bind` (port chosen at connect).
pub(super) fn start_connect(target: &Target, bind: Option<IpAddr>) -> io::Result<Pending> {
    let socket = Socket::new(Domain::for_address(target.addr), Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = bind {
        if ip.is_ipv4() {
            // Without this, bind() picks the port alone and reserves it for
            // every destination, so one address would stop near 28,000
            // connections in all; with it connect() picks a port unique
            // for this 4-tuple only.
            let one: libc::c_int = 1;
            // SAFETY: setsockopt reads an int of the size passed.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    let started = Instant::now();
    match socket.connect(&target.addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(Pending {
        fd: socket.as_raw_fd(),
        step: Some(Step::Connecting(socket)),
        phase_started: started,
    })
}

pub(super) fn io_reason(err: &io::Error) -> Reason {
    use io::ErrorKind::*;
    match err.kind() {
        ConnectionRefused => Reason::Refused,
        TimedOut | WouldBlock => Reason::Timeout,
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => Reason::Reset,
        _ => Reason::Other,
    }
}

pub(super) fn handshake_reason(err: tungstenite::Error) -> (Reason, SetupError) {
    use tungstenite::Error as E;
    match err {
        E::Http(response) => {
            let status = response.status().as_u16();
            let reason = if status == 503 {
                Reason::Http503
            } else {
                Reason::Handshake
            };
            (
                reason,
                SetupError::new(Phase::Other, format!("server answered HTTP {status}")),
            )
        }
        E::Io(e) => {
            let reason = match io_reason(&e) {
                Reason::Other => Reason::Handshake,
                reason => reason,
            };
            (reason, SetupError::new(Phase::Handshake, io_cause(&e)))
        }
        E::Protocol(tungstenite::error::ProtocolError::HandshakeIncomplete)
        | E::ConnectionClosed
        | E::AlreadyClosed => (
            Reason::Reset,
            SetupError::new(Phase::Other, "connection closed during the handshake"),
        ),
        other => (
            Reason::Handshake,
            SetupError::new(Phase::Other, format!("handshake failed: {other}")),
        ),
    }
}

pub(super) type HandshakeResult =
    Result<(WebSocket<Stream>, Response), HandshakeError<ClientHandshake<Stream>>>;

/// Moves one pending connection on after poll said its socket is ready.
pub(super) fn advance(
    pending: &mut Pending,
    target: &Target,
    setup: &mut Setup,
    open: &mut Vec<WebSocket<Stream>>,
) -> Progress {
    let result: HandshakeResult = match pending.step.take().expect("a pending step is set") {
        Step::Connecting(socket) => {
            match socket.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    setup.fail(io_reason(&e), SetupError::new(Phase::Connect, io_cause(&e)));
                    return Progress::Done;
                }
            }
            setup.tcp.record(pending.phase_started.elapsed());
            pending.phase_started = Instant::now();
            let tcp: TcpStream = socket.into();
            if !target.url.tls {
                return shake_hands(
                    pending,
                    target,
                    setup,
                    open,
                    Stream::new(stream::Stream::new(tcp)),
                );
            }
            match client::connect::client_session(&target.url.host) {
                Ok(session) => return secure(pending, target, setup, open, tcp, Box::new(session)),
                Err(e) => {
                    setup.fail(
                        Reason::Handshake,
                        SetupError::new(Phase::Other, e.to_string()),
                    );
                    return Progress::Done;
                }
            }
        }
        Step::Securing(tcp, session) => return secure(pending, target, setup, open, tcp, session),
        Step::Handshaking(mid) => (*mid).handshake(),
    };
    finish_handshake(pending, setup, open, result)
}

/// Starts the WebSocket handshake over a connected (and secured) stream.
fn shake_hands(
    pending: &mut Pending,
    target: &Target,
    setup: &mut Setup,
    open: &mut Vec<WebSocket<Stream>>,
    stream: Stream,
) -> Progress {
    let result = tungstenite::client::client_with_config(
        target.url.text.as_str(),
        stream,
        Some(target.config),
    );
    finish_handshake(pending, setup, open, result)
}

/// Moves a TLS handshake on as far as the socket allows; once it is done,
/// the WebSocket handshake starts over the session.
fn secure(
    pending: &mut Pending,
    target: &Target,
    setup: &mut Setup,
    open: &mut Vec<WebSocket<Stream>>,
    tcp: TcpStream,
    mut session: Box<ClientConnection>,
) -> Progress {
    match drive_tls(&tcp, &mut session) {
        Ok(true) => {
            let stream = stream::Stream::client_tls(tcp, *session);
            client::tls::count(stream.tls_resumed());
            shake_hands(pending, target, setup, open, Stream::new(stream))
        }
        Ok(false) => {
            pending.step = Some(Step::Securing(tcp, session));
            Progress::Waiting
        }
        Err(e) => {
            let reason = match &e {
                TlsHandshakeError::Io(e) => match io_reason(e) {
                    Reason::Other => Reason::Handshake,
                    reason => reason,
                },
                TlsHandshakeError::Empty => Reason::Reset,
                _ => Reason::Handshake,
            };
            let why = client::connect::tls_error(e).to_string();
            setup.fail(reason, SetupError::new(Phase::Other, why));
            Progress::Done
        }
    }
}

/// One turn of a non-blocking TLS handshake: `Ok(true)` once done,
/// `Ok(false)` when it waits for the socket.
fn drive_tls(tcp: &TcpStream, session: &mut ClientConnection) -> Result<bool, TlsHandshakeError> {
    loop {
        while session.wants_write() {
            match session.write_tls(&mut &*tcp) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(TlsHandshakeError::Io(e)),
            }
        }
        if !session.is_handshaking() {
            return Ok(true);
        }
        match session.read_tls(&mut &*tcp) {
            Ok(0) => return Err(TlsHandshakeError::Empty),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(TlsHandshakeError::Io(e)),
        }
        if let Err(e) = session.process_new_packets() {
            // The alert, if the socket takes it.
            let _ = session.write_tls(&mut &*tcp);
            return Err(TlsHandshakeError::Tls(e));
        }
    }
}

fn finish_handshake(
    pending: &mut Pending,
    setup: &mut Setup,
    open: &mut Vec<WebSocket<Stream>>,
    result: HandshakeResult,
) -> Progress {
    match result {
        Ok((ws, _response)) => {
            setup.handshake.record(pending.phase_started.elapsed());
            setup.established += 1;
            open.push(ws);
            Progress::Done
        }
        Err(HandshakeError::Interrupted(mid)) => {
            pending.step = Some(Step::Handshaking(Box::new(mid)));
            Progress::Waiting
        }
        Err(HandshakeError::Failure(err)) => {
            let (reason, why) = handshake_reason(err);
            setup.fail(reason, why);
            Progress::Done
        }
    }
}

/// Sets up one batch concurrently: every connect is started, then one
/// poll() drives them all through the handshake. Returns the open ones.
pub(super) fn open_batch(
    target: &Target,
    bind: Option<IpAddr>,
    size: u32,
    setup: &mut Setup,
) -> Vec<WebSocket<Stream>> {
    let mut pending = Vec::with_capacity(size as usize);
    let mut open = Vec::with_capacity(size as usize);
    for _ in 0..size {
        setup.attempted += 1;
        match start_connect(target, bind) {
            Ok(p) => pending.push(p),
            Err(e) => setup.fail(io_reason(&e), SetupError::new(Phase::Connect, io_cause(&e))),
        }
    }
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        if crate::signal::interrupted() {
            for _ in pending.drain(..) {
                setup.fail(Reason::Other, SetupError::new(Phase::Other, INTERRUPTED));
            }
            break;
        }
        fds.clear();
        fds.extend(pending.iter().map(|p| libc::pollfd {
            fd: p.fd,
            // The request is ~250 bytes into an empty send buffer, so a
            // handshake only ever waits to read.
            events: match &p.step {
                Some(Step::Connecting(_)) => libc::POLLOUT,
                Some(Step::Securing(_, session)) if session.wants_write() => {
                    libc::POLLIN | libc::POLLOUT
                }
                _ => libc::POLLIN,
            },
            revents: 0,
        }));
        let now = Instant::now();
        let next_deadline = pending
            .iter()
            .map(|p| p.phase_started + target.timeout)
            .min()
            .expect("pending is not empty");
        let wait_ms = next_deadline
            .saturating_duration_since(now)
            .as_millis()
            .saturating_add(1)
            .min(i32::MAX as u128) as i32;
        // SAFETY: fds is a valid array of fds.len() pollfd structs.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            for _ in pending.drain(..) {
                setup.fail(Reason::Other, SetupError::new(Phase::Poll, io_cause(&err)));
            }
            break;
        }
        let now = Instant::now();
        // Backwards, so swap_remove only moves entries already visited and
        // fds[i] still belongs to pending[i].
        for i in (0..pending.len()).rev() {
            if fds[i].revents != 0 {
                if let Progress::Done = advance(&mut pending[i], target, setup, &mut open) {
                    pending.swap_remove(i);
                }
            } else if now >= pending[i].phase_started + target.timeout {
                let phase = match pending[i].step {
                    Some(Step::Connecting(_)) => Phase::Connect,
                    _ => Phase::Handshake,
                };
                setup.fail(Reason::Timeout, SetupError::new(phase, "timed out"));
                pending.swap_remove(i);
            }
        }
    }
    open
}
