//! `/echo` and `/hello` from outside, fragmented messages included, and
//! the original chat client (websocket-client's WebSocketApp) on `/chat` (#4).

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use tungstenite::Message;
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data, OpCode};

const LIMIT: Duration = Duration::from_secs(60);

fn fragments(ws: &mut Ws, opcode: Data, parts: &[&[u8]]) {
    for (i, part) in parts.iter().enumerate() {
        let op = if i == 0 {
            OpCode::Data(opcode)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = Frame::message(part.to_vec(), op, i + 1 == parts.len());
        ws.send(Message::Frame(frame)).unwrap();
    }
}

#[test]
fn echo_returns_text_and_binary_even_when_fragmented() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let mut ws = connect(&server.url("/echo"));
        assert_eq!(round_trip(&mut ws, Message::text("héllo")), "héllo");
        ws.send(Message::binary(vec![0, 1, 2, 255])).unwrap();
        assert_eq!(ws.read().unwrap(), Message::binary(vec![0, 1, 2, 255]));
        fragments(&mut ws, Data::Text, &[b"frag", b"men", b"ted"]);
        assert_eq!(next_text(&mut ws), "fragmented");
        let big = vec![9u8; 1 << 20];
        fragments(&mut ws, Data::Binary, &[&big[..300_000], &big[300_000..]]);
        assert_eq!(ws.read().unwrap(), Message::binary(big));
    });
}

#[test]
fn hello_greets_text_and_refuses_binary_but_stays_open() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let mut ws = connect(&server.url("/hello"));
        assert_eq!(round_trip(&mut ws, Message::text("world")), "Hello world!");
        assert_eq!(
            round_trip(&mut ws, Message::binary(vec![1])),
            "Error: /hello expects text"
        );
        assert_eq!(round_trip(&mut ws, Message::text("again")), "Hello again!");
    });
}

#[test]
fn the_original_websocketapp_client_stays_connected_on_chat() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let out = run_bounded(
            Command::new(python())
                .arg(peer_script("chat_app.py"))
                .args([&server.url("/chat"), "5"]),
            Duration::from_secs(30),
        );
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
        assert!(stdout.contains("< Hello from server"), "{stdout}");
        assert!(
            stdout.contains("< Hey all, a new client has joined us"),
            "{stdout}"
        );
    });
}
