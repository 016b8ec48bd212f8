//! Holding connections: holder threads answer the server's pings over one
//! `poll(2)` until told to finish, then do one round trip each and close.

use super::*;

/// What a worker sends its holder, and what main sends at the end.
pub(super) enum ToHolder {
    Open(Vec<WebSocket<Stream>>),
    Finish,
}

/// The sending side of a holder: a channel plus a byte on its wake-up
/// socket, so the holder's poll() returns.
#[derive(Clone)]
pub(super) struct HolderLink {
    pub(super) tx: Sender<ToHolder>,
    pub(super) wake: Arc<UnixStream>,
}

impl HolderLink {
    pub(super) fn send(&self, message: ToHolder) {
        let _ = self.tx.send(message);
        // Non-blocking: if the socket is full, a wake-up is already pending.
        let _ = (&*self.wake).write(&[1]);
    }
}

/// What a holder saw, from the hold to the close.
#[derive(Default)]
pub(super) struct Held {
    pub(super) held: u64,
    pub(super) lost: u64,
    pub(super) first_lost: Option<String>,
    pub(super) pings: u64,
    pub(super) round_trip: Latency,
    pub(super) round_trips_failed: u64,
    pub(super) first_round_trip_error: Option<String>,
    pub(super) closed_cleanly: u64,
    pub(super) reasons: Reasons,
}

/// Reads everything a held socket has; tungstenite queues a pong for each
/// ping and sends it on the next read. Err: the connection is gone.
pub(super) fn service(ws: &mut WebSocket<Stream>, pings: &mut u64) -> Result<(), String> {
    loop {
        match ws.read() {
            Ok(Message::Ping(_)) => *pings += 1,
            Ok(Message::Close(frame)) => {
                return Err(match frame {
                    Some(f) => format!(
                        "closed by the server with {} {}",
                        u16::from(f.code),
                        f.reason
                    ),
                    None => "closed by the server".into(),
                });
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok(());
            }
            Err(e) => return Err(ws_cause(&e)),
        }
    }
}

pub(super) fn holder(rx: Receiver<ToHolder>, wake: UnixStream, timeout: Duration) -> Held {
    let mut held = Held::default();
    let mut conns: Vec<WebSocket<Stream>> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    'hold: loop {
        loop {
            match rx.try_recv() {
                Ok(ToHolder::Open(batch)) => conns.extend(batch),
                Ok(ToHolder::Finish) | Err(TryRecvError::Disconnected) => break 'hold,
                Err(TryRecvError::Empty) => break,
            }
        }
        fds.clear();
        fds.push(libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        fds.extend(conns.iter().map(|ws| libc::pollfd {
            fd: ws.get_ref().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }));
        // SAFETY: fds is a valid array of fds.len() pollfd structs.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            log::error!("holder: poll failed: {}", io_cause(&err));
            break;
        }
        if fds[0].revents != 0 {
            let mut sink = [0u8; 64];
            while matches!((&wake).read(&mut sink), Ok(n) if n > 0) {}
        }
        for i in (0..conns.len()).rev() {
            if fds[i + 1].revents == 0 {
                continue;
            }
            if let Err(why) = service(&mut conns[i], &mut held.pings) {
                held.lost += 1;
                log::debug!("held connection lost: {why}");
                held.reasons.add(format!("lost while held: {why}"), 1);
                held.first_lost.get_or_insert(why);
                conns.swap_remove(i);
            }
        }
    }
    held.held = conns.len() as u64;
    finish(&mut conns, timeout, &mut held);
    held
}

/// One text round trip on every connection, then close frames to all and
/// every close reply awaited (pipelined, so 5,000 closes cost about one
/// round trip each of CPU, not of waiting).
pub(super) fn finish(conns: &mut [WebSocket<Stream>], timeout: Duration, held: &mut Held) {
    let mut alive = vec![true; conns.len()];
    for (ws, alive) in conns.iter_mut().zip(alive.iter_mut()) {
        let stream = ws.get_ref().tcp();
        let blocking = stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_read_timeout(Some(timeout)))
            .and_then(|()| stream.set_write_timeout(Some(timeout)));
        let sent = Instant::now();
        let result = blocking
            .map_err(|e| io_cause(&e))
            .and_then(|()| ws.send(Message::text("ping")).map_err(|e| ws_cause(&e)))
            .and_then(|()| {
                loop {
                    match ws.read() {
                        Ok(Message::Text(_) | Message::Binary(_)) => break Ok(()),
                        Ok(Message::Close(_)) => break Err("closed by the server".to_string()),
                        Ok(_) => {}
                        Err(e) => break Err(ws_cause(&e)),
                    }
                }
            });
        match result {
            Ok(()) => held.round_trip.record(sent.elapsed()),
            Err(why) => {
                held.round_trips_failed += 1;
                held.reasons.add(format!("round trip: {why}"), 1);
                held.first_round_trip_error.get_or_insert(why);
                *alive = false;
            }
        }
    }
    for (ws, alive) in conns.iter_mut().zip(alive.iter_mut()) {
        if !*alive {
            continue;
        }
        if let Err(e) = ws.close(None) {
            held.reasons.add(format!("close: {}", ws_cause(&e)), 1);
            *alive = false;
        }
    }
    for (ws, alive) in conns.iter_mut().zip(alive) {
        if !alive {
            continue;
        }
        // Our close, the server's reply, then its TCP close: clean.
        loop {
            match ws.read() {
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed) => {
                    held.closed_cleanly += 1;
                    break;
                }
                Err(e) => {
                    held.reasons.add(format!("close: {}", ws_cause(&e)), 1);
                    break;
                }
            }
        }
    }
}
