//! `wsbench fanout` (#16): N members join one chat room and publish at a
//! fixed aggregate rate R, whether or not earlier publications have
//! arrived; every member times each delivery from the publication's
//! intended send time, and counts, per sender, what was lost, duplicated
//! or reordered. A server that falls behind shows it in the latency, and
//! one that drops a member (1008) has that member's losses counted.
//!
//! ```text
//! pacer ─ publication n at t0 + n/R, through publisher n % P ─────┐
//! server ─ relays `client {id}: fan {p} {seq} {t}` to the others ─┤
//! member × N ─ latency = now − t; seq per sender: lost/dup/order ─┘
//! ```
//!
//! `--url` may be given several times (instances of one fleet): members
//! are spread over them in turn. Without it, an embedded server. This
//! module owns the run and the summary; `member` owns one member's reads.

mod member;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tungstenite::client::IntoClientRequest;

use crate::cli::{FanoutArgs, ServerArgs};
use crate::client::connect_split;
use crate::error::Error;
use crate::export;
use crate::hdrlog::Intervals;
use crate::metrics::{Latency, human};
use crate::rate::Percentiles;

use member::{Progress, Reader, Seen, Shared};

/// Member reader threads only read and count: a small stack each.
const MEMBER_STACK: usize = 256 * 1024;

/// How long every member may take to hear every join line.
const JOIN_LIMIT: Duration = Duration::from_secs(10);

/// One sender's publications, as every other member saw them.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SenderFigures {
    pub member: usize,
    pub published: u64,
    pub publish_failed: u64,
    pub deliveries: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
}

/// The run's figures, as printed and as `--json`.
#[derive(Debug, Serialize)]
pub struct FanoutSummary {
    pub urls: Vec<String>,
    pub members: usize,
    pub slow_members: usize,
    pub rate: f64,
    pub duration_s: f64,
    /// From the first publication's intended time to the last one's send.
    pub paced_s: f64,
    pub published: u64,
    pub publish_failed: u64,
    /// Deliveries owed: each publication to every member but its sender.
    pub expected_deliveries: u64,
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Members the server closed with 1008, and the deliveries they lost.
    pub dropped_members: Vec<usize>,
    pub lost_at_dropped: u64,
    /// Members whose connection ended otherwise before the run did.
    pub ended_members: Vec<usize>,
    /// Members not yet in the room (no join line heard) when publishing
    /// began, after waiting up to 10 s.
    pub members_missing_joins: usize,
    /// Of the members that read at full speed (not --slow-members).
    pub delivery: Percentiles,
    /// How late publications left against their schedule.
    pub lag: Percentiles,
    pub rate_reached: bool,
    pub per_sender: Vec<SenderFigures>,
}

/// A member as the run holds it: its writer (the pacer publishes through
/// it) and a way to shut its socket down, the one thing done with the
/// stream, whatever its type.
struct Member {
    writer: tungstenite::WebSocket<crate::client::connect::WriteHalf>,
    shutdown: Box<dyn Fn() + Send>,
}

pub fn run(args: FanoutArgs) -> Result<(), Error> {
    let embedded = if args.urls.is_empty() {
        Some(crate::embedded::start(ServerArgs::default())?)
    } else {
        None
    };
    let urls: Vec<String> = match &embedded {
        Some(server) => vec![format!("{}/chat/fanout", server.url())],
        None => args.urls.clone(),
    };
    // wss:// members check the server as every client command does.
    crate::client::tls::install(&args.trust, &[])?;
    if let Some(server) = &embedded {
        log::info!("embedded server on {}", server.url());
    }
    let n = args.clients as usize;
    let slow = args.slow_members as usize;
    if slow >= n {
        return Err(Error::Other(format!(
            "--slow-members {slow} leaves no member of --clients {n} to publish"
        )));
    }
    // The last `slow` members only listen; the others publish in turn.
    let publishers = n - slow;
    let epoch = Instant::now();
    let draining = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(Progress::default());
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<(usize, Seen)>();

    let mut members: Vec<Member> = Vec::with_capacity(n);
    let mut shared = Vec::with_capacity(n);
    let mut readers = Vec::with_capacity(n);
    let intervals_from = epoch;
    for k in 0..n {
        let url = &urls[k % urls.len()];
        let request = url.as_str().into_client_request().map_err(|e| Error::Url {
            url: url.clone(),
            why: e.to_string(),
        })?;
        let client = match connect_split(request, args.timeout) {
            Ok(client) => client,
            Err(e) => {
                for m in &members {
                    (m.shutdown)();
                }
                return Err(Error::Connect {
                    url: url.clone(),
                    cause: e.to_string(),
                });
            }
        };
        let stream = client.stream;
        let state = Shared::new();
        let reader = Reader {
            me: k,
            members: n,
            epoch,
            slow: k >= publishers,
            draining: Arc::clone(&draining),
            shared: Arc::clone(&state),
            progress: Arc::clone(&progress),
            intervals_from,
        };
        let done_tx = done_tx.clone();
        let ws = client.reader;
        let handle = thread::Builder::new()
            .name(format!("fanout-member-{k}"))
            .stack_size(MEMBER_STACK)
            .spawn(move || {
                let _ = done_tx.send((k, reader.run(ws)));
            })
            .map_err(|e| Error::Other(format!("cannot start member thread {k}: {e}")))?;
        readers.push(handle);
        shared.push(state);
        members.push(Member {
            writer: client.writer,
            shutdown: Box::new(move || {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }),
        });
    }
    drop(done_tx);

    // A member is in the room once it has heard a join line: its own is
    // the first one it can hear (the server may take the joins of members
    // that connected one after the other in either order). Publishing
    // waits for every member to be in.
    let unheard = || {
        (0..n)
            .filter(|&k| shared[k].joins.load(Ordering::Acquire) == 0)
            .count()
    };
    progress.wait_until(Instant::now() + JOIN_LIMIT, || unheard() == 0);
    let missing_joins = unheard();
    if missing_joins > 0 {
        log::warn!(
            "{missing_joins} of {n} members had heard no join line after {}s; publishing anyway",
            JOIN_LIMIT.as_secs()
        );
    }

    let total = (args.rate * args.duration.as_secs_f64()).round() as u64;
    let t0 = Instant::now() + Duration::from_millis(10);
    let t0_unix = SystemTime::now() + Duration::from_millis(10);
    let mut writers: Vec<_> = members.iter_mut().map(|m| &mut m.writer).collect();
    let paced = pace(
        &mut writers,
        publishers,
        total,
        args.rate,
        t0,
        epoch,
        args.size,
    );
    drop(writers);

    // Deliveries may trail the last publication by --drain; a member that
    // has all it is owed, or whose connection ended, is done.
    draining.store(true, Ordering::Release);
    let owed = |k: usize| -> u64 {
        (0..publishers)
            .filter(|&s| s != k)
            .map(|s| paced.published[s])
            .sum()
    };
    progress.wait_until(Instant::now() + args.drain, || {
        (0..n).all(|k| {
            shared[k].ended.load(Ordering::Acquire)
                || shared[k].delivered.load(Ordering::Acquire) >= owed(k)
        })
    });
    for m in &mut members {
        let _ = m.writer.close(None);
        let _ = m.writer.flush();
        (m.shutdown)();
    }
    let mut seen: Vec<Option<Seen>> = (0..n).map(|_| None).collect();
    for (k, s) in done_rx.iter() {
        seen[k] = Some(s);
    }
    for r in readers {
        let _ = r.join();
    }
    if let Some(server) = embedded {
        server.shutdown();
    }
    let seen: Vec<Seen> = seen
        .into_iter()
        .map(|s| s.expect("every member thread reports before it ends"))
        .collect();

    let summary = summarise(&args, urls, &seen, &paced, publishers, missing_joins);
    if let Some(path) = &args.hdr_log {
        let mut intervals = Intervals::new(intervals_from);
        for s in &seen[..publishers] {
            intervals.merge(&s.intervals);
        }
        let what = format!(
            "fanout --clients {n} --rate {}: delivery latency",
            args.rate
        );
        // The log's seconds count from the members' epoch, just before t0.
        let since = t0.saturating_duration_since(epoch);
        intervals.write(path, t0_unix - since, &what)?;
    }
    print_summary(&summary, args.json);
    Ok(())
}

/// What the pacer did.
struct Paced {
    /// Per publisher: publications written.
    published: Vec<u64>,
    failed: Vec<u64>,
    lag: Latency,
    elapsed: Duration,
}

/// Publishes `total` messages at `rate`, message `i` at `t0 + i / rate`
/// through publisher `i % publishers`, as `fan {p} {seq} {intended_us}`
/// padded to `size` bytes. A late message leaves late, never skipped; a
/// publisher whose write failed (the server dropped it) has its remaining
/// turns counted as failed.
fn pace(
    writers: &mut [&mut tungstenite::WebSocket<crate::client::connect::WriteHalf>],
    publishers: usize,
    total: u64,
    rate: f64,
    t0: Instant,
    epoch: Instant,
    size: usize,
) -> Paced {
    use std::fmt::Write as _;
    let mut paced = Paced {
        published: vec![0; publishers],
        failed: vec![0; publishers],
        lag: Latency::default(),
        elapsed: Duration::ZERO,
    };
    crate::rate::tighten_timer_slack();
    let mut dead = vec![false; publishers];
    let mut text = String::new();
    for i in 0..total {
        if crate::signal::interrupted() {
            break;
        }
        let p = (i % publishers as u64) as usize;
        let seq = i / publishers as u64;
        let intended = t0 + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if intended > now {
            thread::sleep(intended - now);
        }
        if dead[p] {
            paced.failed[p] += 1;
            continue;
        }
        text.clear();
        let at_us = intended.duration_since(epoch).as_micros();
        let _ = write!(text, "fan {p} {seq} {at_us} ");
        while text.len() < size {
            text.push('x');
        }
        let sent = Instant::now();
        paced.lag.record(sent.saturating_duration_since(intended));
        match crate::client::masked::send(writers[p].get_mut(), crate::wire::TEXT, text.as_bytes())
        {
            Ok(()) => paced.published[p] += 1,
            Err(e) => {
                log::debug!("member {p} cannot publish: {e}");
                dead[p] = true;
                paced.failed[p] += 1;
            }
        }
    }
    paced.elapsed = t0.elapsed();
    paced
}

fn summarise(
    args: &FanoutArgs,
    urls: Vec<String>,
    seen: &[Seen],
    paced: &Paced,
    publishers: usize,
    missing_joins: usize,
) -> FanoutSummary {
    let n = seen.len();
    let mut latency = Latency::default();
    let mut per_sender: Vec<SenderFigures> = (0..publishers)
        .map(|s| SenderFigures {
            member: s,
            published: paced.published[s],
            publish_failed: paced.failed[s],
            ..SenderFigures::default()
        })
        .collect();
    let mut dropped = Vec::new();
    let mut ended = Vec::new();
    let mut lost_at_dropped = 0;
    for (k, s) in seen.iter().enumerate() {
        // Slow members are a fault injected on purpose: their losses
        // count, their latency would only describe their own sleeping.
        if k < publishers {
            latency.merge(&s.latency);
        }
        let mut lost_here = 0;
        for (sender, figures) in per_sender.iter_mut().enumerate() {
            if sender == k {
                continue;
            }
            let from = &s.from[sender];
            figures.deliveries += from.distinct;
            figures.duplicated += from.duplicated;
            figures.out_of_order += from.out_of_order;
            let lost = figures.published.saturating_sub(from.distinct);
            figures.lost += lost;
            lost_here += lost;
        }
        if s.close == Some(1008) {
            dropped.push(k);
            lost_at_dropped += lost_here;
        } else if s.ended_early {
            ended.push(k);
        }
    }
    let sum = |f: fn(&SenderFigures) -> u64| per_sender.iter().map(f).sum::<u64>();
    let published = sum(|s| s.published);
    let secs = paced.elapsed.as_secs_f64().max(args.duration.as_secs_f64());
    let deliveries = sum(|s| s.deliveries);
    FanoutSummary {
        urls,
        members: n,
        slow_members: n - publishers,
        rate: args.rate,
        duration_s: args.duration.as_secs_f64(),
        paced_s: paced.elapsed.as_secs_f64(),
        published,
        publish_failed: sum(|s| s.publish_failed),
        expected_deliveries: published * (n as u64 - 1),
        deliveries,
        deliveries_per_s: deliveries as f64 / secs,
        lost: sum(|s| s.lost),
        duplicated: sum(|s| s.duplicated),
        out_of_order: sum(|s| s.out_of_order),
        dropped_members: dropped,
        lost_at_dropped,
        ended_members: ended,
        members_missing_joins: missing_joins,
        delivery: Percentiles::of(&latency),
        lag: Percentiles::of(&paced.lag),
        // The last publication left within 5% of a period-free schedule's end.
        rate_reached: paced.elapsed.as_secs_f64() <= args.duration.as_secs_f64() * 1.05 + 0.05,
        per_sender,
    }
}

fn print_summary(s: &FanoutSummary, json: bool) {
    let behind = (!s.rate_reached).then(|| {
        format!(
            "rate not reached: {} publications took {:.2} s instead of {:.2} s ({:.1}/s of {}/s asked), \
             publishing lag p99 {}",
            s.published + s.publish_failed,
            s.paced_s,
            s.duration_s,
            (s.published + s.publish_failed) as f64 / s.paced_s.max(1e-9),
            s.rate,
            human(s.lag.p99)
        )
    });
    if json {
        if let Some(line) = &behind {
            eprintln!("{line}");
        }
        return export::print_json(s);
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "fanout:      {} members ({} publishing, {} slow readers) of {}, {}/s for {:.1} s",
        s.members,
        s.members - s.slow_members,
        s.slow_members,
        s.urls.join(" "),
        s.rate,
        s.duration_s
    );
    let _ = writeln!(
        out,
        "published:   {} ({} failed); deliveries {} of {} owed, {:.0}/s",
        s.published, s.publish_failed, s.deliveries, s.expected_deliveries, s.deliveries_per_s
    );
    let _ = writeln!(
        out,
        "lost:        {} ({} at {} member(s) dropped by the server with 1008), duplicated {}, out of order {}",
        s.lost,
        s.lost_at_dropped,
        s.dropped_members.len(),
        s.duplicated,
        s.out_of_order
    );
    if !s.ended_members.is_empty() {
        let _ = writeln!(
            out,
            "ended:       {} member(s) lost their connection early: {:?}",
            s.ended_members.len(),
            s.ended_members
        );
    }
    if s.members_missing_joins > 0 {
        let _ = writeln!(
            out,
            "joins:       {} member(s) had heard no join line when publishing began",
            s.members_missing_joins
        );
    }
    let w = 11;
    let _ = writeln!(
        out,
        "{:<w$} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "p50", "p90", "p99", "p99.9", "max"
    );
    for (name, p) in [("delivery", &s.delivery), ("lag", &s.lag)] {
        let _ = writeln!(
            out,
            "{:<w$} {:>9} {:>9} {:>9} {:>9} {:>9}",
            name,
            human(p.p50),
            human(p.p90),
            human(p.p99),
            human(p.p999),
            human(p.max)
        );
    }
    let odd: Vec<&SenderFigures> = s
        .per_sender
        .iter()
        .filter(|f| f.lost + f.duplicated + f.out_of_order + f.publish_failed > 0)
        .collect();
    if !odd.is_empty() {
        let _ = writeln!(
            out,
            "per sender with losses, duplicates or reordering ({} of {}):",
            odd.len(),
            s.per_sender.len()
        );
        let _ = writeln!(
            out,
            "  member  published  failed  deliveries  lost  duplicated  out-of-order"
        );
        for f in odd.iter().take(20) {
            let _ = writeln!(
                out,
                "  {:>6}  {:>9}  {:>6}  {:>10}  {:>4}  {:>10}  {:>12}",
                f.member,
                f.published,
                f.publish_failed,
                f.deliveries,
                f.lost,
                f.duplicated,
                f.out_of_order
            );
        }
    }
    if let Some(line) = behind {
        let _ = writeln!(out, "{line}");
    }
}
