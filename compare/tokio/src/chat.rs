//! `/chat` and `/chat/{room}` with `wsbench server`'s texts (SPEC.md,
//! Chat), so that `make compare` can measure fan-out on both (#17).
//!
//! A newcomer gets `Hello from server`; everyone in the room, newcomer
//! included, gets `Hey all, a new client has joined us`; every other
//! message goes to the rest of the room as `client {id}: {text}` (binary
//! unchanged); `stop` closes the sender with 1000 and the room hears
//! `client {id} has left`, as it does whenever a member goes.
//!
//! The usual tokio shape: the hub holds each member's bounded mpsc sender
//! and pushes with `try_send` under a std mutex (never held across an
//! await), which is what keeps one sender's messages in order at every
//! receiver. Each member's task selects over its socket and its queue, and
//! writes whatever is queued with one flush. A member whose queue is full
//! is dropped with 1008, and one whose socket takes nothing for
//! [`WRITE_STALL`] is cut: a member that does not read holds up only
//! itself.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use log::debug;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::{Io, Ws};

/// How long a member's socket may take no byte of what is queued for it
/// before it is cut (`wsbench server`'s default --ping-timeout).
const WRITE_STALL: Duration = Duration::from_secs(20);

/// How long a member we closed has to send its close reply.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// What the hub holds of a member.
struct Member {
    queue: mpsc::Sender<Message>,
    /// The close the member's task is to send; capacity 1, first one wins.
    close: mpsc::Sender<CloseFrame>,
}

type Room = HashMap<u64, Member>;

/// Every room and who is in it.
#[derive(Default)]
pub struct Hub {
    rooms: Mutex<HashMap<String, Room>>,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Room>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn join(&self, room: &str, id: u64, member: Member) {
        let mut rooms = self.lock();
        let members = rooms.entry(room.to_string()).or_default();
        push(&member, Message::text("Hello from server"));
        members.insert(id, member);
        let joined = Message::text("Hey all, a new client has joined us");
        for member in members.values() {
            push(member, joined.clone());
        }
    }

    fn relay(&self, room: &str, from: u64, message: Message) {
        let rooms = self.lock();
        let Some(members) = rooms.get(room) else {
            return;
        };
        for (_, member) in members.iter().filter(|(id, _)| **id != from) {
            push(member, message.clone());
        }
    }

    fn leave(&self, room: &str, id: u64) {
        let mut rooms = self.lock();
        let Some(members) = rooms.get_mut(room) else {
            return;
        };
        members.remove(&id);
        if members.is_empty() {
            rooms.remove(room);
            return;
        }
        let left = Message::text(format!("client {id} has left"));
        for member in members.values() {
            push(member, left.clone());
        }
    }
}

/// Queues without waiting; a full queue asks the member's task to close
/// with 1008 (the messages still queued would only delay that close).
fn push(member: &Member, message: Message) {
    if let Err(TrySendError::Full(_)) = member.queue.try_send(message) {
        let _ = member.close.try_send(CloseFrame {
            code: CloseCode::Policy,
            reason: "too slow: outgoing queue full".into(),
        });
    }
}

/// One member, from its join to its leave.
pub async fn member<S: Io>(
    ws: Ws<S>,
    id: u64,
    room: String,
    hub: &Hub,
    max_queue: usize,
) -> Result<(), tungstenite::Error> {
    let (queue, rx) = mpsc::channel(max_queue);
    let (close, close_rx) = mpsc::channel(1);
    hub.join(
        &room,
        id,
        Member {
            queue,
            close: close.clone(),
        },
    );
    let result = run(ws, id, &room, hub, rx, close, close_rx).await;
    hub.leave(&room, id);
    result
}

async fn run<S: Io>(
    mut ws: Ws<S>,
    id: u64,
    room: &str,
    hub: &Hub,
    mut queue: mpsc::Receiver<Message>,
    close: mpsc::Sender<CloseFrame>,
    mut close_rx: mpsc::Receiver<CloseFrame>,
) -> Result<(), tungstenite::Error> {
    loop {
        tokio::select! {
            // A pending close goes before anything still queued.
            biased;
            Some(frame) = close_rx.recv() => {
                debug!("conn {id}: closing with {}", frame.code);
                return close_and_drain(ws, frame).await;
            }
            incoming = ws.next() => match incoming {
                None => return Ok(()),
                Some(Err(e)) => return Err(e),
                Some(Ok(Message::Text(text))) if text.as_str() == "stop" => {
                    let _ = close.try_send(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "stop".into(),
                    });
                }
                Some(Ok(Message::Text(text))) => {
                    hub.relay(room, id, Message::text(format!("client {id}: {text}")));
                }
                Some(Ok(binary @ Message::Binary(_))) => hub.relay(room, id, binary),
                // Pings are answered by tungstenite; a close is answered
                // by it and then ends the stream.
                Some(Ok(_)) => {}
            },
            Some(first) = queue.recv() => {
                // Everything already queued goes out with one flush: under
                // fan-out a member's queue holds several messages at once.
                let write = async {
                    ws.feed(first).await?;
                    while let Ok(next) = queue.try_recv() {
                        ws.feed(next).await?;
                    }
                    ws.flush().await
                };
                match timeout(WRITE_STALL, write).await {
                    Ok(written) => written?,
                    Err(_) => {
                        debug!("conn {id}: socket took nothing for {WRITE_STALL:?}: cut");
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Sends `frame`, then reads until the peer's close reply ends the stream
/// (or [`CLOSE_WAIT`] passes).
async fn close_and_drain<S: Io>(
    mut ws: Ws<S>,
    frame: CloseFrame,
) -> Result<(), tungstenite::Error> {
    let drained = timeout(CLOSE_WAIT, async {
        ws.close(Some(frame)).await?;
        while let Some(message) = ws.next().await {
            message?;
        }
        Ok(())
    })
    .await;
    drained.unwrap_or(Ok(()))
}
