//! `wsbench server`: the accept loop, the connection limit, one OS thread
//! per connection, and an orderly shutdown.
//!
//! Stages of a connection:
//!
//! ```text
//! accept ─ over --max-connections? ─ yes ─> refuse.rs: readable 503 (no thread)
//!    │ no
//! thread conn-N (small stack; cannot start? ─> refuse.rs)
//!    ├─ TLS handshake, if --tls-* (stream.rs; counts against the timeout)
//!    └─ read head (--handshake-timeout)
//!    ├─ upgrade ─> 101 ─> conn.rs: Conn::run ─> endpoint (image.rs, ...)
//!    └─ plain HTTP ─> http.rs (keep-alive)
//! ```
//!
//! Shutdown ([`Handle::shutdown`]): stop accepting, send close 1001 to
//! every WebSocket, give them a moment to answer, cut the rest, then wait
//! for every queued statistics job and flush the stats log.

pub mod buffers;
pub mod capacity;
pub mod chat;
pub mod conn;
pub mod fleet;
pub mod handshake;
pub mod http;
pub mod image;
pub mod lograte;
pub mod outbox;
pub mod peer;
pub mod reader;
pub mod refuse;
pub mod tls;

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::cli::ServerArgs;
use crate::error::{Error, io_cause};
use crate::metrics::{ServerCounters, add, get, sub};
use crate::stream::{Stream, TlsHandshakeError};
use capacity::Capacity;
use chat::{ChatConn, Hub};
use conn::{Conn, Control, End, Heartbeat, Stop};
use fleet::Fleet;
use handshake::{Decision, Endpoint, HeadError};
use image::{ImageConn, Jobs};
use lograte::RateLog;
use outbox::{Dropped, Outbox, Writers};
use peer::Peer;
use refuse::{Refuser, Why};

/// Stack of a connection thread. Its deepest path is a handshake plus a
/// log line; 256 KiB leaves ample room. Pages are touched only as used,
/// so an idle connection's stack costs a few KiB of memory; what a thread
/// costs in memory maps is in `capacity.rs`.
const CONN_STACK: usize = 256 * 1024;

/// The listen backlog. Rust's `TcpListener::bind` asks for 128; a thousand
/// clients connecting at once would overflow it and each dropped SYN waits
/// a 1 s retransmit. The kernel caps it at net.core.somaxconn.
const BACKLOG: i32 = 4096;

/// How long connections get to answer our 1001 before they are cut.
const CLOSE_GRACE: Duration = Duration::from_millis(1500);

/// State every connection thread shares.
pub struct Shared {
    pub args: ServerArgs,
    /// Set when the server speaks TLS (`wss://`, HTTPS).
    tls: Option<Arc<rustls::ServerConfig>>,
    pub counters: Arc<ServerCounters>,
    pub jobs: Arc<Jobs>,
    pub hub: Arc<Hub>,
    /// The other instances sharing the rooms, with `--redis` (#18).
    fleet: Option<Fleet>,
    writers: Writers,
    refuser: Refuser,
    rate: Arc<RateLog>,
    stopping: AtomicBool,
    next_id: AtomicU64,
    peers: Mutex<HashMap<u64, Arc<Peer>>>,
    peers_changed: Condvar,
}

impl Control for Shared {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// A running server.
pub struct Handle {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    /// What this machine lets the server hold, as measured at start.
    pub capacity: Capacity,
    /// The certificate a TLS server presents, for in-process clients to
    /// trust (`embedded`).
    pub certificate: Option<pki_types::CertificateDer<'static>>,
    listener: Arc<TcpListener>,
    acceptor: Option<thread::JoinHandle<()>>,
}

/// Binds and starts accepting on a background thread.
pub fn start(mut args: ServerArgs) -> Result<Handle, Error> {
    let shown = format!("{}:{}", args.host, args.port);
    let bind_err = |e: io::Error| Error::Bind {
        addr: shown.clone(),
        cause: io_cause(&e),
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(args.host.as_str(), args.port))
        .map_err(bind_err)?
        .next()
        .ok_or_else(|| Error::Bind {
            addr: shown.clone(),
            cause: "no address".into(),
        })?;
    let (tls, certificate) = tls::config(&args)?.unzip();
    let listener = listen(addr).map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    let counters = Arc::new(ServerCounters::default());
    let jobs = Jobs::new(
        args.pool_threads,
        args.max_pending,
        args.stats_log.as_deref(),
        Arc::clone(&counters),
    )
    .map_err(Error::Other)?;
    let writers = Writers::start(args.ping_timeout)
        .map_err(|e| Error::Other(format!("cannot start the chat writers: {}", io_cause(&e))))?;
    // Each refusal in progress holds a descriptor; keep a few for them.
    let refusal_fds = (crate::process::raise_open_files() / 16).clamp(8, 256);
    let rate = Arc::new(RateLog::default());
    let refuser = Refuser::start(
        Arc::clone(&counters),
        Arc::clone(&rate),
        refusal_fds as usize,
        tls.is_some(),
    )
    .map_err(|e| {
        Error::Other(format!(
            "cannot start the refusing thread: {}",
            io_cause(&e)
        ))
    })?;
    let fleet = match &args.redis {
        Some(url) => {
            counters.redis_enabled.store(1, Ordering::Relaxed);
            Some(Fleet::new(url, Arc::clone(&counters), Arc::clone(&rate)).map_err(Error::Other)?)
        }
        None => None,
    };
    let hub = Arc::new(Hub::new(fleet.as_ref().map(Fleet::publisher)));
    if let Some(fleet) = &fleet {
        fleet.start(Arc::clone(&hub)).map_err(|e| {
            Error::Other(format!("cannot start the redis threads: {}", io_cause(&e)))
        })?;
    }
    // Measured once every fixed thread runs, so their maps are counted.
    let capacity = Capacity::measure(refusal_fds);
    if u64::from(args.max_connections) > capacity.connections {
        let lowered = capacity.connections.clamp(1, u64::from(u32::MAX)) as u32;
        log::warn!(
            "--max-connections {} is more than this machine can hold; lowered to {lowered} (limited by {})",
            args.max_connections,
            capacity.limit.what
        );
        args.max_connections = lowered;
    }
    counters
        .connections_capacity
        .store(capacity.connections, Ordering::Relaxed);
    let shared = Arc::new(Shared {
        args,
        tls,
        counters,
        jobs: Arc::new(jobs),
        hub,
        fleet,
        writers,
        refuser,
        rate,
        stopping: AtomicBool::new(false),
        next_id: AtomicU64::new(1),
        peers: Mutex::new(HashMap::new()),
        peers_changed: Condvar::new(),
    });
    let listener = Arc::new(listener);
    let acceptor = {
        let shared = Arc::clone(&shared);
        let listener = Arc::clone(&listener);
        thread::Builder::new()
            .name("accept".into())
            .spawn(move || accept_loop(&listener, &shared))
            .map_err(|e| Error::Other(format!("cannot start the accept thread: {e}")))?
    };
    Ok(Handle {
        addr,
        shared,
        capacity,
        certificate,
        listener,
        acceptor: Some(acceptor),
    })
}

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // A restarted server must be able to bind while old connections sit in
    // TIME_WAIT (the chat client's reconnect test restarts on one port).
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

impl Handle {
    /// The `ws://HOST:PORT` (or `wss://`) others connect to.
    pub fn url(&self) -> String {
        let scheme = if self.shared.tls.is_some() {
            "wss"
        } else {
            "ws"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops accepting, closes every connection with 1001, finishes every
    /// queued job and flushes the stats log; all within about 5 s.
    pub fn shutdown(mut self) {
        let shared = &self.shared;
        shared.stopping.store(true, Ordering::Release);
        // Wakes the blocked accept(): on Linux a listening socket shut down
        // for reading fails accept with EINVAL.
        unsafe {
            libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RD);
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let peers: Vec<Arc<Peer>> = shared.lock_peers().values().cloned().collect();
        let deadline = Instant::now() + CLOSE_GRACE;
        // A busy writer is another thread mid-write: a chat pool turn
        // (microseconds), a reply, or at worst a blocked write to a peer
        // that does not read. The peer's own thread sees `stopping` only
        // when its read wakes, for an idle member its next heartbeat, so
        // the 1001 is sent here by a thread that waits for the writer's
        // lock: one per busy peer, so no slow peer holds up another. A
        // write that outlasts the grace is ended by `abort` below.
        let closers: Vec<_> = peers
            .into_iter()
            .filter(|peer| !peer.try_close(CloseCode::Away, "server shutting down"))
            .filter_map(|peer| {
                let closing = Arc::clone(&peer);
                thread::Builder::new()
                    .name(format!("close-{}", peer.id))
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        let _ = closing.close(CloseCode::Away, "server shutting down");
                    })
                    .ok()
                    .map(|closer| (peer, closer))
            })
            .collect();
        let left = shared.wait_peers_gone(deadline);
        if left > 0 {
            log::info!("cutting {left} connections that did not answer the close");
            for peer in shared.lock_peers().values() {
                peer.abort();
            }
            shared.wait_peers_gone(Instant::now() + Duration::from_millis(500));
        }
        // A closer still writing has a peer that is gone or cut: end the
        // write rather than wait out its timeout.
        for (peer, closer) in closers {
            if !closer.is_finished() {
                peer.abort();
            }
            let _ = closer.join();
        }
        // After the members left: their leave lines reach the fleet.
        if let Some(fleet) = &shared.fleet {
            fleet.stop();
        }
        shared.writers.stop();
        shared.refuser.stop();
        shared.rate.flush_all();
        let unfinished = shared.jobs.drain(Instant::now() + Duration::from_secs(3));
        if unfinished > 0 {
            log::error!("{unfinished} statistics jobs did not finish before exit");
        }
    }
}

impl Shared {
    fn lock_peers(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Peer>>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait_peers_gone(&self, deadline: Instant) -> usize {
        let left = deadline.saturating_duration_since(Instant::now());
        self.peers_changed
            .wait_timeout_while(self.lock_peers(), left, |peers| !peers.is_empty())
            .unwrap_or_else(|p| p.into_inner())
            .0
            .len()
    }
}

/// `wsbench server`: runs until Ctrl-C or SIGTERM.
pub fn run(args: ServerArgs) -> Result<(), Error> {
    let handle = start(args)?;
    {
        use std::io::Write;
        let mut out = io::stdout().lock();
        // Scripts and tests wait for exactly this line.
        let _ = writeln!(out, "listening on {}", handle.url());
        let _ = out.flush();
    }
    log::info!(
        "serving / and /image (response {}), /echo, /hello, /chat",
        handle.shared.args.response.as_str()
    );
    log::info!("{}", handle.capacity.line());
    crate::signal::wait();
    log::info!("shutting down");
    handle.shutdown();
    Ok(())
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    loop {
        let (stream, _) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(_) if shared.stopping() => return,
            Err(e)
                if e.raw_os_error() == Some(libc::EMFILE)
                    || e.raw_os_error() == Some(libc::ENFILE) =>
            {
                shared.rate.log(log::Level::Error, "accept-fd", || {
                    format!(
                        "cannot accept: {} (raise ulimit -n or lower --max-connections)",
                        io_cause(&e)
                    )
                });
                // Back off: the condition clears only when a connection
                // closes, and retrying at once would spin a core.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(e) => {
                log::debug!("accept failed: {}", io_cause(&e));
                continue;
            }
        };
        if shared.stopping() {
            return;
        }
        let counters = &shared.counters;
        if get(&counters.connections_current) >= u64::from(shared.args.max_connections) {
            shared.refuser.refuse(stream, Why::Full);
            continue;
        }
        add(&counters.connections_current, 1);
        add(&counters.connections_total, 1);
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let conn_shared = Arc::clone(shared);
        // The thread takes the socket as a bare descriptor so that, if it
        // cannot start, the socket is still ours to refuse readably.
        let fd = stream.into_raw_fd();
        let spawned = thread::Builder::new()
            .name(format!("conn-{id}"))
            .stack_size(CONN_STACK)
            .spawn(move || {
                // SAFETY: `fd` came from `into_raw_fd` above, and this
                // closure, run once, is its only owner.
                let stream = unsafe { TcpStream::from_raw_fd(fd) };
                serve(&conn_shared, stream, id)
            });
        if let Err(e) = spawned {
            // SAFETY: a spawn that fails drops its closure without running
            // it, so nothing else took ownership of `fd`.
            let stream = unsafe { TcpStream::from_raw_fd(fd) };
            sub(&counters.connections_current, 1);
            shared.rate.log(log::Level::Error, "spawn", || {
                format!("cannot start a connection thread: {e}")
            });
            shared.refuser.refuse(stream, Why::NoThread);
        }
    }
}

/// Frees the connection's slot however its thread ends.
struct Slot<'a>(&'a ServerCounters);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        sub(&self.0.connections_current, 1);
    }
}

fn serve(shared: &Arc<Shared>, tcp: TcpStream, id: u64) {
    let _ = tcp.set_nodelay(true);
    // Every write to this peer, plain HTTP or WebSocket, gives up after
    // --ping-timeout without progress.
    let _ = tcp.set_write_timeout(Some(shared.args.ping_timeout));
    let deadline = Instant::now() + shared.args.handshake_timeout;
    let stream = match &shared.tls {
        None => Stream::new(tcp),
        Some(config) => match accept_tls(shared, config, tcp, id, deadline) {
            Some(stream) => stream,
            // The slot was given back before the socket closed.
            None => return,
        },
    };
    let stream = Arc::new(stream);
    // Declared after the stream, so dropped before it on every path: a
    // client that has seen our FIN also sees the connection counted out.
    let slot = Slot(&shared.counters);
    let mut buf = Vec::new();
    let (head, head_len) = match handshake::read_head(&stream, &mut buf, deadline) {
        Ok(parsed) => parsed,
        Err(err) => return refuse_head(shared, &stream, id, err),
    };
    if !head.wants_upgrade() {
        http::serve(shared, &stream, id, head, head_len, buf);
        return;
    }
    let (endpoint, response) = match handshake::decide_upgrade(&head) {
        // A chat member hears its 101 once it is in its room (`join_chat`).
        Decision::Accept {
            endpoint: endpoint @ Endpoint::Chat { .. },
            response,
        } => (endpoint, Some(response)),
        Decision::Accept { endpoint, response } => {
            if !answer_upgrade(shared, &stream, id, &response) {
                return;
            }
            (endpoint, None)
        }
        Decision::Refuse { status, why, extra } => {
            // Counted before the answer: whoever reads the answer and then
            // the metrics sees it counted.
            add(&shared.counters.handshake_failures_total, 1);
            log::info!("conn {id}: handshake refused with {status}: {why}");
            handshake::refuse(&stream, status, &why, extra);
            return;
        }
    };
    buf.drain(..head_len);
    let conn = match Conn::accept(
        id,
        Arc::clone(&stream),
        buf,
        Arc::clone(&shared.counters),
        shared.args.max_message_size,
        shared.args.ping_timeout,
    ) {
        Ok(conn) => conn,
        Err(e) => {
            log::debug!(
                "conn {id}: lost right after the handshake: {}",
                io_cause(&e)
            );
            return;
        }
    };
    let peer = Arc::clone(&conn.peer);
    let member = match (&endpoint, response) {
        (Endpoint::Chat { room }, Some(response)) => {
            match join_chat(shared, &peer, room, &response) {
                Some(member) => Some(member),
                None => return,
            }
        }
        _ => None,
    };
    shared.lock_peers().insert(id, Arc::clone(&peer));
    log::debug!("conn {id}: {} on {}", peer.addr, head.target);
    let heartbeat = Heartbeat {
        interval: shared.args.ping_interval,
        timeout: shared.args.ping_timeout,
    };
    let end = match endpoint {
        Endpoint::Image { response } => {
            let mut image = ImageConn {
                jobs: Arc::clone(&shared.jobs),
                response: response.unwrap_or(shared.args.response),
                seq: 0,
            };
            conn.run(heartbeat, &**shared, |peer, msg| {
                image.on_message(peer, msg)
            })
        }
        Endpoint::Echo => conn.run(heartbeat, &**shared, |peer, msg| {
            peer.send(msg)?;
            Ok(())
        }),
        Endpoint::Hello => conn.run(heartbeat, &**shared, hello),
        Endpoint::Chat { .. } => match member {
            Some(member) => chat(shared, conn, heartbeat, member),
            None => unreachable!("a chat member joined above"),
        },
    };
    log_end(shared, id, &peer, &end);
    shared.lock_peers().remove(&id);
    shared.peers_changed.notify_all();
    drop(slot);
}

/// The TLS handshake, on this thread; a failure gets one log line (debug
/// for a connection that sent nothing), is counted, and gives back the
/// connection's slot.
fn accept_tls(
    shared: &Shared,
    config: &Arc<rustls::ServerConfig>,
    tcp: TcpStream,
    id: u64,
    deadline: Instant,
) -> Option<Stream> {
    let session = match rustls::ServerConnection::new(Arc::clone(config)) {
        Ok(session) => session,
        Err(e) => {
            log::error!("conn {id}: cannot start a TLS session: {e}");
            sub(&shared.counters.connections_current, 1);
            return None;
        }
    };
    let addr = tcp.peer_addr().ok();
    let (err, tcp) = match Stream::accept_tls(tcp, session, deadline) {
        Ok(stream) => return Some(stream),
        Err(failed) => failed,
    };
    // Counted and logged before the socket closes: whoever sees the close
    // and then reads the metrics sees it counted.
    match &err {
        TlsHandshakeError::Empty => log::debug!("conn {id}: {err}"),
        TlsHandshakeError::Io(_) => {
            add(&shared.counters.handshake_failures_total, 1);
            log::debug!("conn {id}: {err}");
        }
        _ => {
            add(&shared.counters.handshake_failures_total, 1);
            match addr {
                Some(addr) => log::info!("conn {id} ({addr}): {err}"),
                None => log::info!("conn {id}: {err}"),
            }
        }
    }
    // As `Slot` does: the slot is free before the peer sees the close.
    sub(&shared.counters.connections_current, 1);
    drop(tcp);
    None
}

/// Writes the 101 of an accepted upgrade; false (counted, logged) if the
/// peer is gone.
fn answer_upgrade(shared: &Shared, stream: &Stream, id: u64, response: &str) -> bool {
    match stream.write_all(response.as_bytes()) {
        Ok(()) => true,
        Err(e) => {
            add(&shared.counters.handshake_failures_total, 1);
            log::debug!("conn {id}: handshake reply failed: {}", io_cause(&e));
            false
        }
    }
}

/// A chat member in its room, before its reader starts.
struct Member {
    id: u64,
    room: String,
    outbox: Arc<Outbox>,
}

/// Puts a new member in its room, then answers its upgrade: a client that
/// has its 101 is in the room, so it hears the join of everyone whose 101
/// comes after its own. (Answering first let two members connected one
/// after the other join in the other order, and the first never heard the
/// second join.) What the room sends meanwhile waits in the held outbox
/// until the 101 is out.
fn join_chat(shared: &Arc<Shared>, peer: &Arc<Peer>, room: &str, response: &str) -> Option<Member> {
    let args = &shared.args;
    let outbox = shared.writers.outbox(
        Arc::clone(peer),
        args.max_queue as usize,
        args.max_queue_bytes,
    );
    outbox.hold();
    let counters = &shared.counters;
    let id = shared.hub.member_id(peer.id);
    if id != peer.id {
        log::debug!("conn {}: chat member {id} in {room}", peer.id);
    }
    shared.hub.join(room, id, Arc::clone(&outbox), counters);
    if !answer_upgrade(shared, peer.stream(), peer.id, response) {
        shared.hub.leave(room, id, counters);
        outbox.leave();
        return None;
    }
    outbox.release();
    Some(Member {
        id,
        room: room.to_string(),
        outbox,
    })
}

/// A chat member: this thread reads, the writer pool writes; if the pool
/// dropped the member (queue overflow, socket stalled), that is the ending
/// to log and count.
fn chat(shared: &Arc<Shared>, conn: Conn, heartbeat: Heartbeat, member: Member) -> End {
    let Member { id, room, outbox } = member;
    let counters = &shared.counters;
    let mut member = ChatConn {
        id,
        hub: Arc::clone(&shared.hub),
        room: room.clone(),
        counters: Arc::clone(counters),
    };
    let end = conn.run(heartbeat, &**shared, |peer, msg| {
        member.on_message(peer, msg)
    });
    shared.hub.leave(&room, id, counters);
    outbox.leave();
    match outbox.dropped() {
        // An overflow was counted where it happened, in the hub.
        Some(Dropped::Overflowed) => {
            End::ClosedByUs(CloseCode::Policy, "outgoing queue full".into())
        }
        Some(Dropped::Stalled) => End::SlowPeer,
        None => end,
    }
}

fn hello(peer: &Peer, message: Message) -> Result<(), Stop> {
    let reply = match message {
        Message::Text(text) => format!("Hello {text}!"),
        _ => "Error: /hello expects text".to_string(),
    };
    peer.send(Message::text(reply))?;
    Ok(())
}

/// Answers a head that could not be read whole, and logs it once.
fn refuse_head(shared: &Shared, stream: &Stream, id: u64, err: HeadError) {
    let counters = &shared.counters;
    match err {
        HeadError::Empty => {}
        HeadError::Timeout => {
            add(&counters.handshake_failures_total, 1);
            log::info!("conn {id}: no complete request head within the handshake timeout");
        }
        HeadError::Malformed(why) => {
            add(&counters.handshake_failures_total, 1);
            log::info!("conn {id}: malformed request head: {why}");
            handshake::refuse(stream, 400, "malformed request", "");
        }
        HeadError::TooLarge => {
            add(&counters.handshake_failures_total, 1);
            log::info!("conn {id}: request head over {} bytes", handshake::MAX_HEAD);
            handshake::refuse(stream, 431, "request head too large", "");
        }
        HeadError::TooManyHeaders => {
            add(&counters.handshake_failures_total, 1);
            log::info!("conn {id}: request head with too many header fields");
            handshake::refuse(stream, 431, "too many header fields", "");
        }
        HeadError::Io(e) => log::debug!("conn {id}: {}", io_cause(&e)),
    }
}

fn log_end(shared: &Shared, id: u64, peer: &Peer, end: &End) {
    match end {
        End::ClosedByPeer(code) => log::debug!("conn {id}: closed by peer ({code:?})"),
        End::ClosedByUs(code, why) => {
            if *code == CloseCode::Away || *code == CloseCode::Normal {
                log::debug!("conn {id}: closed with {}", u16::from(*code));
            } else {
                log::info!(
                    "conn {id} ({}): closed with {}: {why}",
                    peer.addr,
                    u16::from(*code)
                );
            }
        }
        End::PingTimeout => log::info!("conn {id} ({}): no answer to ping, closed", peer.addr),
        End::SlowPeer => {
            add(&shared.counters.slow_clients_dropped_total, 1);
            log::info!(
                "conn {id} ({}): not reading its replies, dropped",
                peer.addr
            );
        }
        End::Lost(why) => log::debug!("conn {id}: lost: {why}"),
    }
}
