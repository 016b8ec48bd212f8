//! `/chat` and `/chat/{room}`: the original chat experiment's server.
//! A newcomer gets `Hello from server`; everyone in the room, newcomer
//! included, gets `Hey all, a new client has joined us`; every other
//! message goes to the rest of the room as `client {id}: {text}` (binary
//! unchanged); `stop` closes the sender with 1000 and the room hears
//! `client {id} has left`.
//!
//! Fan-out never touches a socket: the hub pushes into each member's
//! bounded [`Outbox`] and the writer pool (`outbox.rs`) does the writing,
//! so a client that does not read fills only its own queue and is dropped
//! with 1008 (#4). The room lock is held while pushing, which is what keeps one
//! sender's messages in order at every receiver; a push is a non-blocking
//! channel send, so the lock is held for microseconds.
//!
//! With `--redis` (#18) the hub also hands every join, leave and relay to
//! the fleet's [`Publisher`] (under the same lock, so the other instances
//! see one instance's lines in the order its members do), and
//! [`Hub::deliver`] pushes what other instances' members said to the
//! members here. Member ids then come from the fleet, so they are unique
//! across instances; `fleet.rs` owns Redis.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

use super::conn::Stop;
use super::fleet::Publisher;
use super::outbox::{Outbox, Push};
use super::peer::Peer;
use crate::metrics::{ServerCounters, add};

type Room = HashMap<u64, Arc<Outbox>>;

/// Every room of the server and who is in it.
#[derive(Default)]
pub struct Hub {
    rooms: Mutex<HashMap<String, Room>>,
    /// The other instances' side of every room, with `--redis`.
    fleet: Option<Publisher>,
}

impl Hub {
    pub fn new(fleet: Option<Publisher>) -> Hub {
        Hub {
            rooms: Mutex::default(),
            fleet,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Room>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The chat id of the member on connection `conn_id`: that id itself
    /// on a lone server, one unique across the fleet with `--redis`.
    pub fn member_id(&self, conn_id: u64) -> u64 {
        match &self.fleet {
            Some(fleet) => fleet.next_id(),
            None => conn_id,
        }
    }

    fn publish(&self, room: &str, message: &Message) {
        if let Some(fleet) = &self.fleet {
            fleet.publish(room, message);
        }
    }

    /// What a member on another instance said or did in `room`: to every
    /// member here (the sender is not among them).
    pub fn deliver(&self, room: &str, message: Message, counters: &ServerCounters) {
        let rooms = self.lock();
        let Some(members) = rooms.get(room) else {
            return;
        };
        for member in members.values() {
            push(member, message.clone(), counters);
        }
    }

    pub fn join(&self, room: &str, id: u64, outbox: Arc<Outbox>, counters: &ServerCounters) {
        let mut rooms = self.lock();
        let members = rooms.entry(room.to_string()).or_default();
        push(&outbox, Message::text("Hello from server"), counters);
        members.insert(id, outbox);
        let joined = Message::text("Hey all, a new client has joined us");
        for member in members.values() {
            push(member, joined.clone(), counters);
        }
        self.publish(room, &joined);
    }

    /// Sends `message` to everyone in `room` but `from`.
    pub fn relay(&self, room: &str, from: u64, message: Message, counters: &ServerCounters) {
        let rooms = self.lock();
        let Some(members) = rooms.get(room) else {
            return;
        };
        for (_, member) in members.iter().filter(|(id, _)| **id != from) {
            push(member, message.clone(), counters);
        }
        self.publish(room, &message);
    }

    pub fn leave(&self, room: &str, id: u64, counters: &ServerCounters) {
        let mut rooms = self.lock();
        let Some(members) = rooms.get_mut(room) else {
            return;
        };
        members.remove(&id);
        let left = Message::text(format!("client {id} has left"));
        for member in members.values() {
            push(member, left.clone(), counters);
        }
        if members.is_empty() {
            rooms.remove(room);
        }
        // The room may live on at other instances.
        self.publish(room, &left);
    }
}

fn push(outbox: &Arc<Outbox>, message: Message, counters: &ServerCounters) {
    if outbox.push(message) == Push::Overflowed {
        add(&counters.slow_clients_dropped_total, 1);
    }
}

/// One member's side of a room: what its reader thread does with its
/// messages.
pub struct ChatConn {
    /// The member's chat id (see [`Hub::member_id`]).
    pub id: u64,
    pub hub: Arc<Hub>,
    pub room: String,
    pub counters: Arc<ServerCounters>,
}

impl ChatConn {
    pub fn on_message(&mut self, _peer: &Peer, message: Message) -> Result<(), Stop> {
        let relayed = match message {
            Message::Text(text) if text.as_str() == "stop" => {
                return Err(Stop::Close(CloseCode::Normal, "stop".into()));
            }
            Message::Text(text) => Message::text(format!("client {}: {text}", self.id)),
            binary @ Message::Binary(_) => binary,
            _ => return Ok(()),
        };
        self.hub.relay(&self.room, self.id, relayed, &self.counters);
        Ok(())
    }
}
