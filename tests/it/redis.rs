//! `--redis` (#18): chat rooms shared by two server instances through a
//! real `redis-server` (no mock), started on a free port with its own
//! directory and stopped by its pid. Every wsbench server here is checked
//! for leaks when dropped, like any other ([`Server`]).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(90);
const JOINED: &str = "Hey all, a new client has joined us";

/// A `redis-server` of one test: its own port and directory, no
/// persistence; killed (SIGKILL) on drop.
struct Redis {
    proc: Proc,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start() -> Redis {
        Self::start_on(free_port(), tempdir())
    }

    fn start_on(port: u16, dir: PathBuf) -> Redis {
        let mut command = Command::new("redis-server");
        command.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]);
        command.args(["--save", "", "--appendonly", "no"]);
        command.arg("--dir").arg(&dir);
        let proc = Proc::spawn(command);
        let redis = Redis { proc, port, dir };
        poll_until(Duration::from_secs(10), || {
            redis.ping().then_some(()).ok_or_else(|| {
                format!(
                    "redis-server on port {port} does not answer PING; its output: {:?}",
                    redis.proc.stdout.all()
                )
            })
        });
        redis
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut reply = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok()
            && s.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, and wait until it is gone.
    fn kill(mut self) -> (u16, PathBuf) {
        self.proc.signal(libc::SIGKILL);
        self.proc
            .wait(Duration::from_secs(10))
            .expect("redis-server dies on SIGKILL");
        (self.port, self.dir.clone())
    }
}

/// An instance of the fleet.
fn instance(redis_url: &str) -> Server {
    Server::start(&["--redis", redis_url])
}

/// Waits until each instance has received all the other published. A
/// join line crosses to the other instance a moment after the join: a
/// member joining there meanwhile would hear it, though it joined later
/// (instances have no common clock), so tests that count join lines let
/// the fleet settle between joins.
fn settle(a: &Server, b: &Server) {
    poll_until(Duration::from_secs(10), || {
        let (a_out, b_in) = (
            a.metric("wsbench_redis_published_total"),
            b.metric("wsbench_redis_received_total"),
        );
        let (b_out, a_in) = (
            b.metric("wsbench_redis_published_total"),
            a.metric("wsbench_redis_received_total"),
        );
        (a_out == b_in && b_out == a_in)
            .then_some(())
            .ok_or_else(|| {
                format!(
                    "a published {a_out}, b received {b_in}; b published {b_out}, a received {a_in}"
                )
            })
    });
}

fn join(server: &Server, path: &str) -> Ws {
    let mut ws = connect(&server.url(path));
    assert_eq!(next_text(&mut ws), "Hello from server");
    assert_eq!(next_text(&mut ws), JOINED);
    ws
}

/// The sender's id and the text of a relayed line.
fn relayed(line: &str) -> (u64, &str) {
    line.strip_prefix("client ")
        .and_then(|rest| rest.split_once(": "))
        .and_then(|(id, text)| Some((id.parse().ok()?, text)))
        .unwrap_or_else(|| panic!("not a relayed line: {line}"))
}

/// The next line within `limit`, or None (the socket's read timeout is
/// set for the wait, then restored).
fn try_next_text(ws: &mut Ws, limit: Duration) -> Option<String> {
    let stream = match ws.get_ref() {
        tungstenite::stream::MaybeTlsStream::Plain(s) => s,
        _ => unreachable!("these tests speak ws://"),
    };
    stream.set_read_timeout(Some(limit)).unwrap();
    let got = loop {
        match ws.read() {
            Ok(Message::Text(t)) => break Some(t.to_string()),
            Ok(Message::Close(f)) => panic!("closed: {f:?}"),
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break None;
            }
            Err(e) => panic!("read failed: {e}"),
        }
    };
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    got
}

#[test]
fn members_on_two_instances_hear_joins_relays_and_leaves_with_fleet_ids() {
    timed!(LIMIT, {
        let redis = Redis::start();
        let a = instance(&redis.url());
        let b = instance(&redis.url());
        let mut on_a = join(&a, "/chat/red");
        settle(&a, &b);
        let mut on_b = join(&b, "/chat/red");
        // A join on the other instance reaches this one.
        assert_eq!(next_text(&mut on_a), JOINED);
        let mut other_room = join(&b, "/chat/blue");
        on_a.send(Message::text("hi from a")).unwrap();
        let line = next_text(&mut on_b);
        let (a_id, text) = relayed(&line);
        assert_eq!(text, "hi from a");
        on_b.send(Message::text("hi from b")).unwrap();
        // a's next line is b's, never an echo of its own.
        let line = next_text(&mut on_a);
        let (b_id, text) = relayed(&line);
        assert_eq!(text, "hi from b");
        assert_ne!(a_id, b_id, "ids are unique across the fleet");
        // Binary crosses unchanged, as binary.
        on_a.send(Message::binary(vec![0u8, 1, 255])).unwrap();
        loop {
            match on_b.read().unwrap() {
                Message::Binary(bytes) => break assert_eq!(&bytes[..], [0, 1, 255]),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected binary, got {other:?}"),
            }
        }
        // Rooms stay apart: blue hears its own member, not red.
        let mut blue_on_a = join(&a, "/chat/blue");
        assert_eq!(next_text(&mut other_room), JOINED);
        blue_on_a.send(Message::text("blue")).unwrap();
        let line = next_text(&mut other_room);
        assert_eq!(relayed(&line).1, "blue", "{line}");
        // `stop` on b: 1000 for b, and a hears who left, with b's id.
        on_b.send(Message::text("stop")).unwrap();
        let code = loop {
            match on_b.read() {
                Ok(Message::Close(Some(frame))) => break u16::from(frame.code),
                Ok(_) => continue,
                Err(e) => panic!("no close frame: {e}"),
            }
        };
        assert_eq!(code, 1000);
        assert_eq!(next_text(&mut on_a), format!("client {b_id} has left"));
        assert_eq!(a.metric("wsbench_redis_connected"), 1);
        assert!(a.metric("wsbench_redis_received_total") >= 2);
        assert!(b.metric("wsbench_redis_published_total") >= 2);
        drop((on_a, on_b, other_room, blue_on_a));
        drop((a, b));
    });
}

/// Reads `owed` relayed lines and checks that each sender's numbers come
/// exactly once and in order; returns how many came from each sender.
fn read_in_order(ws: &mut Ws, owed: usize, me: &str) -> HashMap<u64, u64> {
    let mut next: HashMap<u64, u64> = HashMap::new();
    for _ in 0..owed {
        let line = next_text(ws);
        let (from, text) = relayed(&line);
        let n: u64 = text
            .strip_prefix("m")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{me}: unexpected line {line}"));
        let expected = next.entry(from).or_default();
        assert_eq!(n, *expected, "{me}: from {from}, out of order or twice");
        *expected += 1;
    }
    next
}

#[test]
fn a_thousand_messages_from_each_side_arrive_once_and_in_order() {
    timed!(LIMIT, {
        let redis = Redis::start();
        let a = instance(&redis.url());
        let b = instance(&redis.url());
        const N: u64 = 1000;
        let mut sender_a = join(&a, "/chat/bulk");
        settle(&a, &b);
        let mut sender_b = join(&b, "/chat/bulk");
        settle(&a, &b);
        let mut reader_a = join(&a, "/chat/bulk");
        settle(&a, &b);
        let reader_b = join(&b, "/chat/bulk");
        // Each has heard the joins after its own.
        for _ in 0..3 {
            assert_eq!(next_text(&mut sender_a), JOINED);
        }
        for _ in 0..2 {
            assert_eq!(next_text(&mut sender_b), JOINED);
        }
        assert_eq!(next_text(&mut reader_a), JOINED);
        let readers: Vec<_> = [("reader on a", reader_a), ("reader on b", reader_b)]
            .into_iter()
            .map(|(me, mut ws)| {
                thread::spawn(move || (read_in_order(&mut ws, 2 * N as usize, me), ws))
            })
            .collect();
        // Both senders at once; each also hears the other side's lines.
        let sending = thread::spawn(move || {
            for n in 0..N {
                sender_b.send(Message::text(format!("m{n}"))).unwrap();
            }
            let heard = read_in_order(&mut sender_b, N as usize, "sender on b");
            (heard, sender_b)
        });
        for n in 0..N {
            sender_a.send(Message::text(format!("m{n}"))).unwrap();
        }
        let heard_a = read_in_order(&mut sender_a, N as usize, "sender on a");
        let (heard_b, sender_b) = sending.join().expect("sender on b");
        assert_eq!(heard_a.len(), 1, "sender on a heard only b: {heard_a:?}");
        assert_eq!(heard_b.len(), 1, "sender on b heard only a: {heard_b:?}");
        let mut kept = vec![sender_a, sender_b];
        for reader in readers {
            let (heard, ws) = reader.join().expect("a reader saw a gap or a duplicate");
            assert_eq!(heard.values().copied().collect::<Vec<_>>(), [N, N]);
            kept.push(ws);
        }
        // Nothing more: a duplicate would come now.
        for ws in &mut kept {
            assert_eq!(try_next_text(ws, Duration::from_millis(300)), None);
        }
        assert_eq!(a.metric("wsbench_redis_dropped_total"), 0);
        drop(kept);
    });
}

/// Sends probes from `from` until one reaches `to`; returns how long that
/// took. Probes sent while the fleet is apart are lost (at most once).
fn probe_until_delivered(from: &mut Ws, to: &mut Ws, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < limit {
        from.send(Message::text(format!("probe {n}"))).unwrap();
        n += 1;
        if let Some(line) = try_next_text(to, Duration::from_millis(20)) {
            assert!(line.contains(": probe "), "{line}");
            let elapsed = start.elapsed();
            // The rest of any probes in flight.
            while try_next_text(to, Duration::from_millis(100)).is_some() {}
            return elapsed;
        }
    }
    panic!("no probe crossed within {limit:?}");
}

#[test]
fn redis_down_mid_run_keeps_rooms_local_and_a_restart_rejoins_the_fleet() {
    timed!(LIMIT, {
        let redis = Redis::start();
        let url = redis.url();
        let a = instance(&url);
        let b = instance(&url);
        let mut a1 = join(&a, "/chat/r");
        let mut a2 = join(&a, "/chat/r");
        assert_eq!(next_text(&mut a1), JOINED);
        settle(&a, &b);
        let mut b1 = join(&b, "/chat/r");
        assert_eq!(next_text(&mut a1), JOINED);
        assert_eq!(next_text(&mut a2), JOINED);
        a1.send(Message::text("before")).unwrap();
        assert_eq!(relayed(&next_text(&mut b1)).1, "before");
        assert_eq!(relayed(&next_text(&mut a2)).1, "before");

        let (port, dir) = redis.kill();
        a.proc
            .stderr
            .wait_for("redis: lost", Duration::from_secs(10))
            .expect("a logs that Redis is gone");
        a.wait_metric("wsbench_redis_connected", Duration::from_secs(10), |v| {
            v == 0
        });
        // Local rooms go on, over several retry intervals (100 ms
        // doubling to 1 s), and the log stays at one line.
        let apart = Instant::now();
        let mut n = 0;
        while apart.elapsed() < Duration::from_millis(2500) {
            a1.send(Message::text(format!("local {n}"))).unwrap();
            assert_eq!(relayed(&next_text(&mut a2)).1, format!("local {n}"));
            n += 1;
        }
        // b was told nothing while apart.
        assert_eq!(try_next_text(&mut b1, Duration::from_millis(200)), None);
        let lost_lines = a
            .proc
            .stderr
            .all()
            .iter()
            .filter(|l| l.contains("redis:") && !l.contains("joined the fleet"))
            .count();
        assert_eq!(lost_lines, 1, "one line for the loss, not one per retry");

        let redis = Redis::start_on(port, dir);
        let accepting = Instant::now();
        let recovery = probe_until_delivered(&mut a1, &mut b1, Duration::from_secs(10));
        let recovery_back = probe_until_delivered(&mut b1, &mut a1, Duration::from_secs(10));
        let since_accepting = accepting.elapsed();
        eprintln!(
            "redis restart: a→b delivery back {:.0} ms after Redis answered PING, b→a {:.0} ms later ({:.0} ms in all)",
            recovery.as_secs_f64() * 1e3,
            recovery_back.as_secs_f64() * 1e3,
            since_accepting.as_secs_f64() * 1e3
        );
        assert!(
            recovery < Duration::from_secs(2),
            "cross-instance delivery took {recovery:?} to come back (#18: 2 s)"
        );
        a.proc
            .stderr
            .wait_for("redis: back at", Duration::from_secs(5))
            .expect("a logs that Redis is back");
        assert_eq!(a.metric("wsbench_redis_connected"), 1);
        drop((a1, a2, b1));
        drop((a, b));
        drop(redis);
    });
}

#[test]
fn redis_down_at_start_serves_local_rooms_then_joins_when_it_comes() {
    timed!(LIMIT, {
        let port = free_port();
        let url = format!("redis://127.0.0.1:{port}");
        let a = instance(&url);
        let b = instance(&url);
        a.proc
            .stderr
            .wait_for("redis: cannot reach", Duration::from_secs(10))
            .expect("a says Redis is not there");
        assert_eq!(a.metric("wsbench_redis_connected"), 0);
        let mut a1 = join(&a, "/chat");
        let mut a2 = join(&a, "/chat");
        assert_eq!(next_text(&mut a1), JOINED);
        let mut b1 = join(&b, "/chat");
        a1.send(Message::text("alone")).unwrap();
        let line = next_text(&mut a2);
        let (a1_id, text) = relayed(&line);
        assert_eq!(text, "alone");
        // Ids drawn without Redis stay clear of the ones Redis gives.
        assert!(a1_id > 1 << 52, "{a1_id}");

        let redis = Redis::start_on(port, tempdir());
        a.wait_metric("wsbench_redis_connected", Duration::from_secs(5), |v| {
            v == 1
        });
        b.wait_metric("wsbench_redis_connected", Duration::from_secs(5), |v| {
            v == 1
        });
        probe_until_delivered(&mut a1, &mut b1, Duration::from_secs(5));
        let mut b2 = join(&b, "/chat");
        // A join after Redis came takes a fleet id and reaches a.
        b2.send(Message::text("fleet id")).unwrap();
        loop {
            let line = next_text(&mut a1);
            if line == JOINED {
                continue;
            }
            let (id, text) = relayed(&line);
            assert_eq!(text, "fleet id");
            assert!(id < 1 << 52, "{id}");
            break;
        }
        // Redis goes before the servers do, as it came after them: the
        // leak check compares with what they held at start.
        drop((a1, a2, b1, b2));
        drop(redis);
        a.wait_metric("wsbench_redis_connected", Duration::from_secs(5), |v| {
            v == 0
        });
        b.wait_metric("wsbench_redis_connected", Duration::from_secs(5), |v| {
            v == 0
        });
    });
}

#[test]
fn an_instance_killed_leaves_the_other_serving_and_a_member_moving_over_loses_nothing() {
    timed!(LIMIT, {
        let redis = Redis::start();
        let mut a = instance(&redis.url());
        let b = instance(&redis.url());
        let mut mover = join(&a, "/chat/move");
        settle(&a, &b);
        let mut watcher = join(&b, "/chat/move");
        assert_eq!(next_text(&mut mover), JOINED);
        for n in 0..50 {
            mover.send(Message::text(format!("m{n}"))).unwrap();
        }
        // Everything a accepted and published before it dies...
        a.wait_metric(
            "wsbench_redis_published_total",
            Duration::from_secs(10),
            |v| v >= 51,
        );
        a.proc.signal(libc::SIGKILL);
        a.proc.wait(Duration::from_secs(10)).expect("a dies");
        // ...the member's connection is gone; it comes back on b and goes on.
        assert!(
            (0..100).any(|_| mover.read().is_err()),
            "the member's connection outlived its server"
        );
        let mut mover = join(&b, "/chat/move");
        for n in 50..100 {
            mover.send(Message::text(format!("m{n}"))).unwrap();
        }
        let mut next = 0;
        while next < 100 {
            let line = next_text(&mut watcher);
            if line == JOINED {
                continue;
            }
            assert_eq!(relayed(&line).1, format!("m{next}"), "{line}");
            next += 1;
        }
        // b still serves newcomers.
        let mut late = join(&b, "/chat/move");
        assert_eq!(next_text(&mut mover), JOINED);
        late.send(Message::text("late")).unwrap();
        assert_eq!(relayed(&next_text(&mut mover)).1, "late");
        drop((mover, watcher, late));
        drop(b);
        drop(a);
    });
}

#[test]
fn a_bad_redis_url_is_bad_usage() {
    timed!(LIMIT, {
        let out = wsbench(
            &["server", "--port", "0", "--redis", "http://localhost"],
            Duration::from_secs(10),
        );
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("--redis"),
            "{}",
            text(&out.stderr)
        );
    });
}

#[test]
fn an_instance_shutting_down_tells_the_fleet_its_members_left() {
    timed!(LIMIT, {
        let redis = Redis::start();
        let mut a = instance(&redis.url());
        let b = instance(&redis.url());
        let mut leaving = join(&a, "/chat/bye");
        settle(&a, &b);
        let mut staying = join(&b, "/chat/bye");
        assert_eq!(next_text(&mut leaving), JOINED);
        leaving.send(Message::text("who am i")).unwrap();
        let line = next_text(&mut staying);
        let (id, _) = relayed(&line);
        let status = a.terminate(Duration::from_secs(5));
        assert!(status.success(), "{status:?}");
        // Its 1001 went out before the leave lines were published.
        assert_eq!(next_text(&mut staying), format!("client {id} has left"));
        drop((leaving, staying));
        drop(b);
    });
}
