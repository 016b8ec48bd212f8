//! `/chat` and `/chat/{room}` from outside: greetings, relays, `stop`,
//! rooms, ordering, and a client that never reads (#4).

use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(90);

fn join(server: &Server, path: &str) -> Ws {
    let mut ws = connect(&server.url(path));
    assert_eq!(next_text(&mut ws), "Hello from server");
    assert_eq!(next_text(&mut ws), "Hey all, a new client has joined us");
    ws
}

/// The id the server gave the sender of a relayed line.
fn sender_id(line: &str) -> u64 {
    line.strip_prefix("client ")
        .and_then(|rest| rest.split(':').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not a relayed line: {line}"))
}

#[test]
fn newcomers_are_greeted_and_messages_reach_the_others_only() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let mut a = join(&server, "/chat");
        let mut b = join(&server, "/chat");
        assert_eq!(next_text(&mut a), "Hey all, a new client has joined us");
        a.send(Message::text("hi from a")).unwrap();
        let got = next_text(&mut b);
        assert!(got.ends_with(": hi from a"), "{got}");
        let a_id = sender_id(&got);
        b.send(Message::text("hi from b")).unwrap();
        // a's next message is b's line, not an echo of its own.
        let got = next_text(&mut a);
        assert!(got.ends_with(": hi from b"), "{got}");
        assert_ne!(sender_id(&got), a_id, "ids are unique");
        // Binary is relayed unchanged, as binary.
        a.send(Message::binary(vec![1, 2, 3])).unwrap();
        loop {
            match b.read().unwrap() {
                Message::Binary(bytes) => break assert_eq!(&bytes[..], [1, 2, 3]),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected binary, got {other:?}"),
            }
        }
    });
}

#[test]
fn stop_closes_with_1000_and_the_room_hears_who_left() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let mut a = join(&server, "/chat/red");
        let mut b = join(&server, "/chat/red");
        assert_eq!(next_text(&mut a), "Hey all, a new client has joined us");
        b.send(Message::text("who am i")).unwrap();
        let b_id = sender_id(&next_text(&mut a));
        b.send(Message::text("stop")).unwrap();
        let code = loop {
            match b.read() {
                Ok(Message::Close(Some(frame))) => break u16::from(frame.code),
                Ok(_) => continue,
                Err(e) => panic!("no close frame: {e}"),
            }
        };
        assert_eq!(code, 1000);
        assert_eq!(next_text(&mut a), format!("client {b_id} has left"));
    });
}

#[test]
fn rooms_are_isolated_and_chat_alone_is_the_lobby() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let mut lobby = join(&server, "/chat");
        let mut named_lobby = join(&server, "/chat/lobby");
        assert_eq!(next_text(&mut lobby), "Hey all, a new client has joined us");
        let mut blue = join(&server, "/chat/blue");
        let mut blue2 = join(&server, "/chat/blue");
        assert_eq!(next_text(&mut blue), "Hey all, a new client has joined us");
        blue.send(Message::text("blue only")).unwrap();
        assert!(next_text(&mut blue2).ends_with(": blue only"));
        lobby.send(Message::text("lobby only")).unwrap();
        // The lobby's next line is its own room's, never blue's.
        assert!(next_text(&mut named_lobby).ends_with(": lobby only"));
        named_lobby.send(Message::text("back")).unwrap();
        assert!(next_text(&mut lobby).ends_with(": back"));
    });
}

#[test]
fn one_senders_messages_arrive_in_order_at_every_receiver() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let mut sender = join(&server, "/chat/order");
        let receivers: Vec<Ws> = (0..3).map(|_| join(&server, "/chat/order")).collect();
        // The sender saw three joins; the receivers saw the later ones.
        let handles: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(i, mut ws)| {
                thread::spawn(move || {
                    for _ in i..2 {
                        assert_eq!(next_text(&mut ws), "Hey all, a new client has joined us");
                    }
                    for n in 0..2000 {
                        let line = next_text(&mut ws);
                        assert!(line.ends_with(&format!(": m{n}")), "receiver {i}: {line}");
                    }
                })
            })
            .collect();
        for n in 0..2000 {
            sender.send(Message::text(format!("m{n}"))).unwrap();
        }
        for h in handles {
            h.join().expect("a receiver saw messages out of order");
        }
    });
}

#[test]
fn a_client_that_never_reads_is_dropped_with_1008_and_others_keep_up() {
    timed!(LIMIT, {
        let server = Server::start(&["--max-queue", "64", "--ping-timeout", "10s"]);
        let mut stuck = join(&server, "/chat/flood");
        let mut reader = join(&server, "/chat/flood");
        let mut sender = join(&server, "/chat/flood");
        // Joins the stuck one will never read past; the others drain theirs.
        assert_eq!(
            next_text(&mut reader),
            "Hey all, a new client has joined us"
        );
        // 400 messages of 100 KB: 40 MB, far past what one client's queue
        // (16 MiB) and socket buffers hold. The sender stays at most 40
        // messages ahead of the reading client, so only the stuck client
        // falls behind, by everything.
        let payload = vec![7u8; 100_000];
        let (progress, seen) = crossbeam_channel::unbounded();
        let reading = thread::spawn(move || {
            let mut worst = Duration::ZERO;
            let mut n = 0;
            while n < 400 {
                let waited = Instant::now();
                match reader.read().unwrap() {
                    Message::Binary(bytes) => {
                        assert_eq!(bytes.len(), 100_000);
                        n += 1;
                        worst = worst.max(waited.elapsed());
                        let _ = progress.send(n);
                    }
                    Message::Text(_) | Message::Ping(_) | Message::Pong(_) => {}
                    other => panic!("reader got {other:?}"),
                }
            }
            worst
        });
        let mut received = 0;
        for sent in 0..400 {
            while sent - received > 40 {
                received = seen
                    .recv_timeout(Duration::from_secs(10))
                    .expect("the reader progresses");
            }
            sender.send(Message::binary(payload.clone())).unwrap();
        }
        let worst = reading.join().expect("the reading client got everything");
        assert!(
            worst < Duration::from_secs(5),
            "a reader waited {worst:?} for one message"
        );
        assert_eq!(server.metric("wsbench_slow_clients_dropped_total"), 1);
        // The stuck client finally reads: its backlog was dropped, then 1008.
        let code = loop {
            match stuck.read() {
                Ok(Message::Close(Some(frame))) => break u16::from(frame.code),
                Ok(_) => continue,
                Err(e) => panic!("no close frame for the stuck client: {e}"),
            }
        };
        assert_eq!(code, 1008);
        // Everyone else is still served.
        sender.send(Message::text("still here")).unwrap();
        let mut late = join(&server, "/chat/flood");
        late.send(Message::text("hello")).unwrap();
        let mut saw = false;
        for _ in 0..10 {
            if next_text(&mut sender).ends_with(": hello") {
                saw = true;
                break;
            }
        }
        assert!(saw, "the room still relays");
    });
}

#[test]
fn a_member_whose_handshake_completed_hears_every_later_join() {
    timed!(LIMIT, {
        // Members connect one after the other with no pause: each one's
        // 101 has arrived before the next connects, so member k hears the
        // joins of k and of everyone after it, no fewer and no more. The
        // server used to answer before the member was in its room, so two
        // members could join in the other order and the first never heard
        // the second (1-7 of 100 members short in the Redis bench).
        let server = Server::start(&[]);
        let url = server.url("/chat/joins");
        let members: Vec<Ws> = (0..60).map(|_| connect(&url)).collect();
        let n = members.len();
        let mut members = members;
        members[n - 1].send(Message::text("all in")).unwrap();
        for (k, ws) in members.iter_mut().enumerate().take(n - 1) {
            let mut joins = 0;
            loop {
                match next_text(ws).as_str() {
                    "Hey all, a new client has joined us" => joins += 1,
                    "Hello from server" => {}
                    line if line.ends_with(": all in") => break,
                    other => panic!("member {k}: unexpected {other:?}"),
                }
            }
            assert_eq!(joins, n - k, "member {k} of {n}");
        }
        for ws in &mut members {
            ws.close(None).unwrap();
            while ws.read().is_ok() {}
        }
    });
}
