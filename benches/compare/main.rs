//! `make compare` (#8, #17): our blocking server against two asynchronous
//! ones, a tokio-tungstenite server (compare/tokio) and the original
//! experiment's asyncio `websockets` server (compare/python), on the same
//! workloads and with the same client, ours; and what each server spent.
//!
//! Workloads (`run.rs`): `wsbench bench` in `serial`, `serial-short` and
//! `parallel` (1000 images of 800×600, `--verify` on the slow replies,
//! which carry statistics), each with slow and fast replies; 10,000
//! WebSocket `Ping {x}!`/`Pong!` round trips (`pingpong::ws_pings`);
//! 10,000 idle connections held 5 s (`idle.rs`, `wsbench load`); chat
//! fan-out, 100 members at a paced rate (`fanout.rs`); and the `wss` rows
//! of #15, serial and serial-short slow and pingpong over TLS, every
//! server with one certificate made for the run (`tls.rs`).
//!
//! Cost (`../common/cost.rs`): each run reads the server's process tree in
//! `/proc` once it listens and again once it is idle after the client,
//! samples its threads and RSS in between, and reaps it with `wait4`:
//! CPU user and system, CPU per 1,000 messages, peak RSS, peak threads,
//! context switches. The client's own CPU is read beside it.
//!
//! Order: for each round, for each workload, the servers in turn (ours,
//! tokio, python, ours, …), three rounds, so that the noise of a shared
//! 2-core machine falls on all of them alike; the tables show medians
//! (`table.rs`). Every run gets a freshly started server (`servers.rs`,
//! `--port 0`, `--response` of the workload) that is stopped with SIGTERM
//! after it: background jobs of a fast run cannot eat into the next run,
//! no server carries threads, pool state, memory peaks or sockets from
//! one workload into another, and a server that wedges costs one cell,
//! not the rest of the table. A start costs ~0.1 s (Python's numpy import
//! and pool fork: ~0.5 s), outside the measured part.
//!
//! Every run is bounded (`RUN_LIMIT`); a run that fails or overruns is
//! recorded as such and the next one starts. A server whose program is
//! missing is skipped, with a line in the summary saying why.
//!
//! Writes target/compare/summary.md (the tables, the targets met or not,
//! links to the plots; `summary.rs`), summary.json (every run) and, from
//! it, compare.svg and compare.md (`wsbench report summary.json`); each run's CSV in
//! target/compare/csv/{workload}-{server}-{round}.csv, server logs in
//! target/compare/logs/, and `wsbench report` of each image workload's
//! median runs in target/compare/plots/{workload}/.
//!
//! Environment: WSBENCH_QUICK=1 runs one short round (200 images, 2,000
//! pings, 2,000 idle connections held 1 s).
//! WSBENCH_FANOUT_RATE sets the fan-out's lines per second (default 200).
//! WSBENCH_COMPARE_ONLY=idle,fanout runs only the workloads named.
//! WSBENCH_TOKIO_CMD replaces the tokio server's command (split on spaces;
//! e.g. `target/release/wsbench server` as a stand-in), and
//! WSBENCH_COMPARE_PYTHON the Python interpreter (default: the venv
//! `make compare` creates, compare/python/.venv).

#[path = "../common/cost.rs"]
mod cost;
mod fanout;
mod idle;
#[path = "../common/pinning.rs"]
mod pinning;
mod run;
mod servers;
mod summary;
mod table;
mod tls;

use std::fs;
use std::time::{Duration, Instant};

use serde::Serialize;

use run::{Status, run_one, workloads};
use servers::{RUNNING, servers, target_dir};

const BIN: &str = env!("CARGO_BIN_EXE_wsbench");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The longest one client run may take. The slowest expected run, Python's
/// serial-short at ~100 connections/s, takes ~10 s for 1000 images.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// What one pass runs: the full run or the quick one.
#[derive(Debug, Serialize)]
pub struct Settings {
    pub quick: bool,
    pub rounds: u32,
    /// Images of each `wsbench bench` run.
    pub count: u64,
    /// Images of each wss run: half as many, since at about half the ws
    /// rate and with three rows on three servers they would otherwise add
    /// more than two minutes to the run (#15, #17).
    pub wss_count: u64,
    pub pings: u64,
    pub idle_connections: u64,
    pub idle_hold: Duration,
    pub fanout_members: usize,
    /// Lines per second into the room, all senders together; each is
    /// delivered to every other member.
    pub fanout_rate: u32,
    pub fanout_duration: Duration,
}

impl Settings {
    fn new(quick: bool) -> Settings {
        Settings {
            quick,
            rounds: if quick { 1 } else { 3 },
            count: if quick { 200 } else { 1000 },
            wss_count: if quick { 100 } else { 500 },
            pings: if quick { 2000 } else { 10_000 },
            idle_connections: if quick { 2000 } else { 10_000 },
            idle_hold: Duration::from_secs(if quick { 1 } else { 5 }),
            fanout_members: 100,
            fanout_rate: std::env::var("WSBENCH_FANOUT_RATE")
                .ok()
                .and_then(|r| r.parse().ok())
                .filter(|&r| r > 0)
                .unwrap_or(200),
            fanout_duration: Duration::from_secs(2),
        }
    }
}

/// Raises the soft descriptor limit to the hard one: every server and
/// client started from here inherits it, and the idle workload needs
/// 10,000 descriptors on each side.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let started = Instant::now();
    let settings = Settings::new(std::env::var_os("WSBENCH_QUICK").is_some());
    ctrlc::set_handler(|| {
        for pgid in RUNNING.lock().unwrap().iter() {
            // SAFETY: kill takes plain integers; these are our servers' groups.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        std::process::exit(130);
    })
    .expect("no other handler is set in this process");
    raise_fd_limit();

    let out = target_dir().join("compare");
    // Every file here is this run's: stale CSVs or plots would mislead.
    let _ = fs::remove_dir_all(&out);
    for dir in ["csv", "logs", "plots"] {
        fs::create_dir_all(out.join(dir)).expect("target/ is writable");
    }
    let certificates = tls::make(&out.join("tls"));
    if let Ok(c) = &certificates {
        // For the in-process pingpong client; `wsbench bench` gets
        // --ca-file.
        let trust = wsbench::cli::TlsArgs {
            ca_files: vec![c.ca.clone()],
            ..Default::default()
        };
        wsbench::client::tls::install(&trust, &[]).expect("the CA was just written");
    }
    let mut machine = summary::machine();
    let kinds = servers();
    let mut workloads = workloads(&settings);
    if let Ok(only) = std::env::var("WSBENCH_COMPARE_ONLY") {
        workloads.retain(|w| only.split(',').any(|id| id == w.id));
    }
    for k in &kinds {
        println!("{}: {}", k.name, k.describe);
    }

    let mut runs = Vec::new();
    let rounds = settings.rounds;
    for round in 1..=rounds {
        for w in &workloads {
            for k in &kinds {
                let r = run_one(w, k, round, &settings, &out, &certificates);
                if r.status != Status::Skipped {
                    let cpu = r.figure("cpu_ms_per_1k").map_or(String::new(), |v| {
                        format!(", {} CPU-ms/1k", summary::num(v))
                    });
                    let rss = r
                        .figure("peak_rss_mib")
                        .map_or(String::new(), |v| format!(", {}", summary::mib(v)));
                    println!(
                        "round {round}/{rounds} {:<18} {:<7} {}",
                        w.id,
                        k.name,
                        match (r.status, r.messages_per_s, r.p99_ms) {
                            (Status::Ok, Some(m), Some(p)) =>
                                format!("{} p99 {}{cpu}{rss}", summary::rate(m), summary::ms(p)),
                            (status, _, _) => format!("{status:?}: {}{cpu}{rss}", r.note),
                        }
                    );
                }
                runs.push(r);
            }
        }
    }

    machine.load_after = summary::load_average();
    let rows = table::table(&workloads, &kinds, &runs);
    // Only `wsbench bench` writes a CSV to plot.
    let plots: Vec<_> = rows
        .iter()
        .filter(|r| {
            workloads
                .iter()
                .any(|w| w.id == r.workload && matches!(w.load, run::Load::Bench { .. }))
        })
        .map(|r| (r.workload, r.title.clone(), summary::plot(r, &runs, &out)))
        .collect();
    let wall = started.elapsed();
    let targets = table::judge(&rows, &runs, &settings, wall.as_secs_f64() / 60.0);
    summary::Summary {
        machine: &machine,
        settings: &settings,
        servers: kinds.iter().map(|k| (k.name, k.describe.clone())).collect(),
        table: &rows,
        targets: &targets,
        runs: &runs,
        wall_minutes: wall.as_secs_f64() / 60.0,
    }
    .write(&out);
    let comparison = summary::draw_comparison(&out);
    summary::write_summary(
        &out,
        &machine,
        &kinds,
        &rows,
        &targets,
        &runs,
        &plots,
        &comparison,
        &settings,
        wall,
    );
    println!("wrote {}", out.join("summary.md").display());
}
