//! `make compare` (#8): our blocking server against two asynchronous ones,
//! a tokio-tungstenite server (compare/tokio) and the original experiment's
//! asyncio `websockets` server (compare/python), on the same workloads and
//! with the same client, ours.
//!
//! Workloads: `wsbench bench` in `serial`, `serial-short` and `parallel`
//! (1000 images of 800×600, `--verify` on the slow replies, which carry
//! statistics), each with slow and fast replies; and 10,000 WebSocket
//! `Ping {x}!`/`Pong!` round trips (`pingpong::ws_pings`, the code behind
//! `wsbench pingpong`'s WebSocket half, which alone cannot run WS only).
//!
//! Order: for each round, for each workload, the servers in turn (ours,
//! tokio, python, ours, …), three rounds, so that the noise of a shared
//! 2-core machine falls on all of them alike; the table shows medians.
//! Every run gets a freshly started server (`--port 0`, `--response` of the
//! workload) that is stopped with SIGTERM after it: background jobs of a
//! fast run cannot eat into the next run, no server carries threads, pool
//! state or sockets from one workload into another, and a server that
//! wedges costs one cell, not the rest of the table. A start costs ~0.1 s
//! (Python's numpy import and pool fork: ~0.5 s), outside the timed part.
//!
//! Every run is bounded (`RUN_LIMIT`); a run that fails or overruns is
//! recorded as such and the next one starts. A server whose program is
//! missing is skipped, with a line in the summary saying why.
//!
//! Writes target/compare/summary.md (the table, the targets of #8 met or
//! not, links to the plots) and summary.json (every run); each run's CSV in
//! target/compare/csv/{workload}-{server}-{round}.csv, server logs in
//! target/compare/logs/, and `wsbench report` of each workload's median
//! runs in target/compare/plots/{workload}/.
//!
//! Environment: WSBENCH_QUICK=1 runs 200 images, 2,000 pings, one round.
//! WSBENCH_TOKIO_CMD replaces the tokio server's command (split on spaces;
//! e.g. `target/release/wsbench server` as a stand-in), and
//! WSBENCH_COMPARE_PYTHON the Python interpreter (default: the venv
//! `make compare` creates, compare/python/.venv).

#[path = "common/pinning.rs"]
mod pinning;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use wsbench::client::WsUrl;
use wsbench::pingpong;

const BIN: &str = env!("CARGO_BIN_EXE_wsbench");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The longest one client run may take. The slowest expected run, Python's
/// serial-short at ~100 connections/s, takes ~10 s for 1000 images.
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// How long a server may take to print its listening line.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(15);
/// Limit of each connect, send and receive inside a run.
const OP_TIMEOUT: &str = "30s";
const OP_TIMEOUT_PINGPONG: Duration = Duration::from_secs(30);

/// Process groups of the servers running now: a Ctrl-C of `make compare`
/// stops them too (each runs in its own group, so that a server killed
/// after overrunning its stop takes its worker processes with it).
static RUNNING: Mutex<Vec<i32>> = Mutex::new(Vec::new());

#[derive(Clone, Copy, Debug)]
enum Load {
    Bench {
        mode: &'static str,
        response: &'static str,
    },
    Pingpong,
}

struct Workload {
    /// File-name form: `serial-short-fast`.
    id: &'static str,
    /// Table form: `serial-short fast`.
    title: String,
    load: Load,
}

/// A server under comparison: the program to start, or why it cannot be.
struct ServerKind {
    name: &'static str,
    argv: Result<Vec<String>, String>,
    /// What the server prints on stderr: warnings only, for all alike.
    env: (&'static str, &'static str),
    describe: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Failed,
    Timeout,
    Skipped,
}

/// One run: one workload against one server in one round.
#[derive(Debug, Clone, Serialize)]
struct RunResult {
    workload: &'static str,
    server: &'static str,
    round: u32,
    status: Status,
    messages_per_s: Option<f64>,
    /// Of each message's total time (bench) or each ping (pingpong).
    p99_ms: Option<f64>,
    wall_s: Option<f64>,
    ok: u64,
    failed: u64,
    /// TcpExt ListenOverflows during the run (SYNs the listen queue dropped).
    listen_overflows: u64,
    note: String,
    csv: Option<PathBuf>,
}

impl RunResult {
    fn new(workload: &'static str, server: &'static str, round: u32) -> RunResult {
        RunResult {
            workload,
            server,
            round,
            status: Status::Failed,
            messages_per_s: None,
            p99_ms: None,
            wall_s: None,
            ok: 0,
            failed: 0,
            listen_overflows: 0,
            note: String::new(),
            csv: None,
        }
    }
}

/// Medians of one workload on one server, over the runs that measured
/// something (a run with failed messages still did; a timeout did not).
#[derive(Debug, Clone, Serialize)]
struct Cell {
    runs: usize,
    runs_measured: usize,
    runs_clean: usize,
    /// Failed messages over the measured runs, and all their messages.
    messages_failed: u64,
    messages: u64,
    messages_per_s: Option<f64>,
    p99_ms: Option<f64>,
    wall_s: Option<f64>,
    /// The round whose messages/s is the median: its CSV is plotted.
    median_round: Option<u32>,
    /// Why runs failed or were skipped, one entry per distinct reason.
    notes: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Row {
    workload: &'static str,
    title: String,
    cells: BTreeMap<&'static str, Cell>,
    /// The other server with the highest median messages/s.
    best_other: Option<&'static str>,
    /// Ours / best other in messages/s, per round, median over rounds.
    ratio: Option<f64>,
}

#[derive(Debug, Serialize)]
struct TargetResult {
    target: String,
    workload: String,
    met: Option<bool>,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Machine {
    date: String,
    cpus: usize,
    cpu_model: String,
    kernel: String,
    /// /proc/loadavg's 1-minute figure when the run started and ended: the
    /// machine is shared, and a busy one moves every figure.
    load_before: f64,
    load_after: f64,
}

#[derive(Debug, Serialize)]
struct Summary<'a> {
    machine: &'a Machine,
    quick: bool,
    rounds: u32,
    count: u64,
    pings: u64,
    servers: Vec<(&'static str, String)>,
    table: &'a [Row],
    targets: &'a [TargetResult],
    runs: &'a [RunResult],
    wall_minutes: f64,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn root() -> PathBuf {
    PathBuf::from(ROOT)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

fn servers() -> Vec<ServerKind> {
    let ours = ServerKind {
        name: "ours",
        argv: Ok(vec![BIN.to_string(), "server".into()]),
        env: ("RUST_LOG", "warn"),
        describe: format!("`{BIN} server`"),
    };

    let tokio_bin = target_dir().join("release/wsbench-tokio");
    let (argv, describe) = match std::env::var("WSBENCH_TOKIO_CMD") {
        Ok(cmd) => {
            let argv: Vec<String> = cmd.split_whitespace().map(String::from).collect();
            (
                Ok(argv),
                format!("`{cmd}` (WSBENCH_TOKIO_CMD: a stand-in, not the tokio server)"),
            )
        }
        Err(_) if tokio_bin.exists() => (
            Ok(vec![tokio_bin.display().to_string()]),
            format!("`{}` (compare/tokio)", tokio_bin.display()),
        ),
        Err(_) => {
            let why = format!(
                "skipped: {} is missing (compare/tokio not built; `make compare` builds it when compare/tokio/Cargo.toml exists)",
                tokio_bin.display()
            );
            (Err(why.clone()), why)
        }
    };
    let tokio = ServerKind {
        name: "tokio",
        argv,
        env: ("RUST_LOG", "warn"),
        describe,
    };

    let python = std::env::var_os("WSBENCH_COMPARE_PYTHON").map_or_else(
        || root().join("compare/python/.venv/bin/python"),
        PathBuf::from,
    );
    let script = root().join("compare/python/server.py");
    let (argv, describe) = if python.exists() {
        let versions = Command::new(&python)
            .args([
                "-c",
                "import sys, websockets, numpy; print(f'Python {sys.version.split()[0]}, websockets {websockets.__version__}, numpy {numpy.__version__}')",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "versions unknown".into());
        (
            Ok(vec![
                python.display().to_string(),
                script.display().to_string(),
            ]),
            format!("compare/python/server.py ({versions})"),
        )
    } else {
        let why = format!(
            "skipped: {} is missing (`make compare` creates the venv)",
            python.display()
        );
        (Err(why.clone()), why)
    };
    let python = ServerKind {
        name: "python",
        argv,
        env: ("LOGLEVEL", "WARNING"),
        describe,
    };
    vec![ours, tokio, python]
}

fn workloads() -> Vec<Workload> {
    let mut all = Vec::new();
    for (mode, slow, fast) in [
        ("serial", "serial-slow", "serial-fast"),
        ("serial-short", "serial-short-slow", "serial-short-fast"),
        ("parallel", "parallel-slow", "parallel-fast"),
    ] {
        for (id, response) in [(slow, "slow"), (fast, "fast")] {
            all.push(Workload {
                id,
                title: format!("{mode} {response}"),
                load: Load::Bench { mode, response },
            });
        }
    }
    all.push(Workload {
        id: "pingpong",
        title: "pingpong (WebSocket)".into(),
        load: Load::Pingpong,
    });
    all
}

/// Waits for `child` on a helper thread (`wait` decides how) for at most
/// `limit`; past it, kills `kill_target` (a pid, or a negative process
/// group) with SIGKILL and still collects the result. Returns it and
/// whether the child had to be killed.
fn reap<T: Send + 'static>(
    child: Child,
    limit: Duration,
    kill_target: i32,
    wait: impl FnOnce(Child) -> T + Send + 'static,
) -> (T, bool) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    thread::spawn(move || {
        let _ = tx.send(wait(child));
    });
    match rx.recv_timeout(limit) {
        Ok(value) => (value, false),
        Err(_) => {
            // SAFETY: kill takes plain integers; the target is our child.
            unsafe {
                libc::kill(kill_target, libc::SIGKILL);
            }
            let value = rx
                .recv()
                .expect("the waiter reports once the killed child is reaped");
            (value, true)
        }
    }
}

/// A server started for one run.
struct Running {
    child: Child,
    addr: String,
}

fn start_server(
    kind: &ServerKind,
    response: &str,
    log: &Path,
    cpu: Option<usize>,
) -> Result<Running, String> {
    let argv = kind.argv.as_ref().map_err(Clone::clone)?;
    let log_file =
        File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let mut command = pinning::on_cpu(cpu, &argv[0]);
    command
        .args(&argv[1..])
        .args(["--host", "127.0.0.1", "--port", "0", "--response", response])
        .env(kind.env.0, kind.env.1)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .process_group(0);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", argv[0]))?;
    RUNNING.lock().unwrap().push(child.id() as i32);
    // The listening line comes first; the rest of stdout is drained so the
    // server never blocks on a full pipe.
    let (tx, rx) = crossbeam_channel::unbounded();
    let stdout = child.stdout.take().expect("spawned with a piped stdout");
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + START_LIMIT;
    let failed = |child: Child, why: String| {
        stop_server(Running {
            child,
            addr: String::new(),
        });
        let last = fs::read_to_string(log)
            .ok()
            .and_then(|t| {
                t.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(String::from)
            })
            .unwrap_or_default();
        Err(format!("{why}; last log line: {last}"))
    };
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if let Some(addr) = line.trim().strip_prefix("listening on ws://") {
                    return Ok(Running {
                        child,
                        addr: addr.to_string(),
                    });
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                return failed(
                    child,
                    format!("no listening line within {}s", START_LIMIT.as_secs()),
                );
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                return failed(child, "exited before listening".into());
            }
        }
    }
}

/// SIGTERM, then SIGKILL to the whole group past `STOP_LIMIT`. Returns a
/// note when the stop was not clean.
fn stop_server(running: Running) -> Option<String> {
    let pid = running.child.id() as i32;
    // SAFETY: kill takes plain integers; the pid is our child's.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let (status, killed) = reap(running.child, STOP_LIMIT, -pid, |mut c| c.wait());
    RUNNING.lock().unwrap().retain(|&p| p != pid);
    if killed {
        return Some(format!(
            "server did not exit within {}s of SIGTERM: killed",
            STOP_LIMIT.as_secs()
        ));
    }
    match status {
        // Ended by the signal's default action: stopped as asked.
        Ok(s) if s.success() || s.signal() == Some(libc::SIGTERM) => None,
        Ok(s) => Some(format!("server exited with {s} after SIGTERM")),
        Err(e) => Some(format!("cannot wait for the server: {e}")),
    }
}

fn listen_overflows() -> u64 {
    let text = fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    if lines.len() < 2 {
        return 0;
    }
    lines[0]
        .split_whitespace()
        .zip(lines[1].split_whitespace())
        .find(|(n, _)| *n == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn last_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let mut short: String = line.chars().take(160).collect();
    if short.len() < line.len() {
        short.push('…');
    }
    short
}

fn run_bench(
    result: &mut RunResult,
    addr: &str,
    mode: &str,
    response: &str,
    count: u64,
    csv: &Path,
    cpu: Option<usize>,
) {
    let url = format!("ws://{addr}/");
    let mut command = pinning::on_cpu(cpu, BIN);
    command
        .args(["bench", "--url", &url, "--mode", mode])
        .args(["--count", &count.to_string(), "--size", "800x600"])
        .args(["--timeout", OP_TIMEOUT, "--json", "--out"])
        .arg(csv)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if response == "slow" {
        command.arg("--verify");
    }
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            result.note = format!("cannot start {BIN}: {e}");
            return;
        }
    };
    let pid = child.id() as i32;
    let (output, killed) = reap(child, RUN_LIMIT, pid, Child::wait_with_output);
    if killed {
        result.status = Status::Timeout;
        result.note = format!("did not finish within {}s", RUN_LIMIT.as_secs());
        return;
    }
    let output: Output = match output {
        Ok(output) => output,
        Err(e) => {
            result.note = format!("cannot wait for bench: {e}");
            return;
        }
    };
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&output.stdout) {
        result.messages_per_s = json["messages_per_s"].as_f64();
        result.wall_s = json["wall_s"].as_f64();
        result.p99_ms = json["total"]["p99"].as_f64().map(|s| s * 1e3);
        result.ok = json["ok"].as_u64().unwrap_or(0);
        result.failed = json["failed"].as_u64().unwrap_or(0);
    }
    if csv.exists() {
        result.csv = Some(csv.to_path_buf());
    }
    if output.status.success() && result.messages_per_s.is_some() {
        result.status = Status::Ok;
    } else {
        result.note = describe_exit(output.status, &output.stderr);
    }
}

fn describe_exit(status: ExitStatus, stderr: &[u8]) -> String {
    let line = last_line(stderr);
    if line.is_empty() {
        format!("bench exited with {status}")
    } else {
        line
    }
}

fn run_pingpong(result: &mut RunResult, addr: &str, pings: u64, cpu: Option<usize>) {
    let url = match WsUrl::parse(&format!("ws://{addr}/")) {
        Ok(url) => url,
        Err(why) => {
            result.note = format!("bad url: {why}");
            return;
        }
    };
    let (tx, rx) = crossbeam_channel::bounded(1);
    // On a timeout this thread is left behind; stopping the server ends
    // its connection and with it the thread.
    thread::spawn(move || {
        pinning::pin(cpu);
        let hidden = indicatif::ProgressBar::hidden();
        let _ = tx.send(pingpong::ws_pings(
            &url,
            pings,
            OP_TIMEOUT_PINGPONG,
            &hidden,
        ));
    });
    match rx.recv_timeout(RUN_LIMIT) {
        Ok(Ok(run)) => {
            let secs = run.duration.as_secs_f64();
            result.status = Status::Ok;
            result.messages_per_s = Some(run.done as f64 / secs);
            result.wall_s = Some(secs);
            result.p99_ms = Some(run.latency.p99 * 1e3);
            result.ok = run.done;
            result.failed = run.count - run.done;
        }
        Ok(Err(e)) => result.note = e.to_string(),
        Err(_) => {
            result.status = Status::Timeout;
            result.note = format!("did not finish within {}s", RUN_LIMIT.as_secs());
        }
    }
}

/// One workload against one server: start it, run the client, stop it.
fn run_one(
    workload: &Workload,
    kind: &ServerKind,
    round: u32,
    count: u64,
    pings: u64,
    out: &Path,
) -> RunResult {
    let mut result = RunResult::new(workload.id, kind.name, round);
    if let Err(why) = &kind.argv {
        result.status = Status::Skipped;
        result.note = why.clone();
        return result;
    }
    let response = match workload.load {
        Load::Bench { response, .. } => response,
        Load::Pingpong => "slow",
    };
    let stem = format!("{}-{}-{round}", workload.id, kind.name);
    let log = out.join("logs").join(format!("{stem}.log"));
    // One connection at a time: client on CPU 0, server on CPU 1, for every
    // server alike. Parallel runs use both CPUs on both sides, unpinned.
    let (client_cpu, server_cpu) = match workload.load {
        Load::Bench {
            mode: "parallel", ..
        } => (None, None),
        _ => pinning::placement(),
    };
    let running = match start_server(kind, response, &log, server_cpu) {
        Ok(running) => running,
        Err(why) => {
            result.note = format!("server did not start: {why}");
            return result;
        }
    };
    let overflows = listen_overflows();
    match workload.load {
        Load::Bench { mode, response } => {
            let csv = out.join("csv").join(format!("{stem}.csv"));
            run_bench(
                &mut result,
                &running.addr,
                mode,
                response,
                count,
                &csv,
                client_cpu,
            );
        }
        Load::Pingpong => run_pingpong(&mut result, &running.addr, pings, client_cpu),
    }
    result.listen_overflows = listen_overflows().saturating_sub(overflows);
    if let Some(note) = stop_server(running) {
        if !result.note.is_empty() {
            result.note.push_str("; ");
        }
        result.note.push_str(&note);
    }
    result
}

fn cell(runs: &[&RunResult]) -> Cell {
    let measured: Vec<&RunResult> = runs
        .iter()
        .copied()
        .filter(|r| r.messages_per_s.is_some())
        .collect();
    let mut notes: Vec<String> = Vec::new();
    for r in runs.iter().filter(|r| r.status != Status::Ok) {
        let note = match r.status {
            Status::Timeout => format!("timeout: {}", r.note),
            Status::Skipped => r.note.clone(),
            _ => format!("failed: {}", r.note),
        };
        if !notes.contains(&note) {
            notes.push(note);
        }
    }
    let mut by_rate = measured.clone();
    by_rate.sort_by(|a, b| {
        a.messages_per_s
            .unwrap()
            .total_cmp(&b.messages_per_s.unwrap())
    });
    let figure =
        |f: fn(&RunResult) -> Option<f64>| median(measured.iter().filter_map(|r| f(r)).collect());
    Cell {
        runs: runs.len(),
        runs_measured: measured.len(),
        runs_clean: runs.iter().filter(|r| r.status == Status::Ok).count(),
        messages_failed: measured.iter().map(|r| r.failed).sum(),
        messages: measured.iter().map(|r| r.ok + r.failed).sum(),
        messages_per_s: figure(|r| r.messages_per_s),
        p99_ms: figure(|r| r.p99_ms),
        wall_s: figure(|r| r.wall_s),
        median_round: by_rate
            .get(by_rate.len().saturating_sub(1) / 2)
            .map(|r| r.round),
        notes,
    }
}

/// `f(ours) / f(other)` in each round where both measured, median over
/// rounds: the servers of one round share that round's machine noise.
fn paired_ratio(
    runs: &[RunResult],
    workload: &str,
    other: &str,
    f: fn(&RunResult) -> Option<f64>,
) -> Option<f64> {
    let of = |server: &str, round: u32| {
        runs.iter()
            .find(|r| r.workload == workload && r.server == server && r.round == round)
            .and_then(f)
    };
    let ratios = runs
        .iter()
        .filter(|r| r.workload == workload && r.server == "ours")
        .filter_map(|o| Some(of("ours", o.round)? / of(other, o.round)?))
        .collect();
    median(ratios)
}

fn table(workloads: &[Workload], kinds: &[ServerKind], runs: &[RunResult]) -> Vec<Row> {
    workloads
        .iter()
        .map(|w| {
            let cells: BTreeMap<&'static str, Cell> = kinds
                .iter()
                .map(|k| {
                    let mine: Vec<&RunResult> = runs
                        .iter()
                        .filter(|r| r.workload == w.id && r.server == k.name)
                        .collect();
                    (k.name, cell(&mine))
                })
                .collect();
            let best_other = cells
                .iter()
                .filter(|(name, c)| **name != "ours" && c.messages_per_s.is_some())
                .max_by(|a, b| {
                    a.1.messages_per_s
                        .unwrap()
                        .total_cmp(&b.1.messages_per_s.unwrap())
                })
                .map(|(name, _)| *name);
            let ratio =
                best_other.and_then(|other| paired_ratio(runs, w.id, other, |r| r.messages_per_s));
            Row {
                workload: w.id,
                title: w.title.clone(),
                cells,
                best_other,
                ratio,
            }
        })
        .collect()
}

/// `2,412/s`, `98.7/s`.
fn rate(v: f64) -> String {
    if v >= 100.0 {
        let digits = format!("{:.0}", v);
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{out}/s")
    } else {
        format!("{v:.1}/s")
    }
}

/// `1.04×`; a third decimal when two would round a ratio to 1.00 that is
/// not 1, so that a NOT met beside it never reads `1.00×`.
fn times(r: f64) -> String {
    if format!("{r:.2}") == "1.00" && r != 1.0 {
        format!("{r:.3}×")
    } else {
        format!("{r:.2}×")
    }
}

fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else if v < 100.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

fn cell_text(c: &Cell) -> String {
    match (c.messages_per_s, c.p99_ms) {
        (Some(r), Some(p)) => {
            let mut text = format!("{} (p99 {})", rate(r), ms(p));
            if c.runs_measured < c.runs {
                let _ = write!(
                    text,
                    "; {} of {} runs failed",
                    c.runs - c.runs_measured,
                    c.runs
                );
            }
            if c.messages_failed > 0 {
                let _ = write!(
                    text,
                    "; {} of {} messages failed",
                    c.messages_failed, c.messages
                );
            }
            text
        }
        _ if c.notes.iter().all(|n| n.starts_with("skipped")) => "skipped".into(),
        _ if c.notes.iter().any(|n| n.starts_with("timeout")) => "timeout".into(),
        _ => "failed".into(),
    }
}

/// Why a target cannot be judged: the first side without a result.
fn missing(row: &Row, other: &str) -> String {
    for side in ["ours", other] {
        let c = &row.cells[side];
        if c.messages_per_s.is_none() {
            return match c.notes.first() {
                Some(note) if note.starts_with("skipped") => format!("{side} was skipped"),
                Some(note) => format!("{side} has no result ({note})"),
                None => format!("{side} has no result"),
            };
        }
    }
    String::new()
}

/// The targets of #8, each judged on the median of per-round ratios (see
/// `paired_ratio`); the medians of the table are given beside.
fn judge(rows: &[Row], runs: &[RunResult], count: u64) -> Vec<TargetResult> {
    let row = |id: &str| {
        rows.iter()
            .find(|r| r.workload == id)
            .expect("every workload has a row")
    };
    let mut out = Vec::new();

    // Higher messages/s is better: ours ≥ factor × other.
    let mut by_rate = |target: &str, id: &str, other: &'static str, factor: f64| {
        let r = row(id);
        let (ours, theirs) = (
            r.cells["ours"].messages_per_s,
            r.cells[other].messages_per_s,
        );
        let ratio = paired_ratio(runs, id, other, |r| r.messages_per_s);
        let (met, detail) = match (ours, theirs, ratio) {
            (Some(a), Some(b), Some(ratio)) => (
                Some(ratio >= factor),
                format!(
                    "ours / {other} {} (ours {}, {other} {})",
                    times(ratio),
                    rate(a),
                    rate(b)
                ),
            ),
            _ => (None, missing(r, other)),
        };
        out.push(TargetResult {
            target: target.to_string(),
            workload: r.title.clone(),
            met,
            detail,
        });
    };
    for id in ["serial-slow", "serial-fast"] {
        by_rate(
            "ours ≥ tokio on serial image round trips/s",
            id,
            "tokio",
            1.0,
        );
    }
    by_rate(
        "ours ≥ tokio on WebSocket ping-pong",
        "pingpong",
        "tokio",
        1.0,
    );
    for id in [
        "serial-slow",
        "serial-fast",
        "serial-short-slow",
        "serial-short-fast",
    ] {
        by_rate(
            "ours ≥ 10× Python on the serial image workloads",
            id,
            "python",
            10.0,
        );
    }
    // Lower is better: wall time and p99 of the parallel runs.
    for id in ["parallel-slow", "parallel-fast"] {
        let r = row(id);
        let (o, t) = (&r.cells["ours"], &r.cells["tokio"]);
        let wall = paired_ratio(runs, id, "tokio", |r| r.wall_s);
        let p99 = paired_ratio(runs, id, "tokio", |r| r.p99_ms);
        let (met, detail) = match (o.wall_s, t.wall_s, o.p99_ms, t.p99_ms, wall, p99) {
            (Some(ow), Some(tw), Some(op), Some(tp), Some(wall), Some(p99)) => (
                Some(wall <= 1.0 && p99 <= 1.0),
                format!(
                    "wall time ours / tokio {} (ours {ow:.3} s, tokio {tw:.3} s){}; \
                     p99 ours / tokio {} (ours {}, tokio {}){}",
                    times(wall),
                    if wall <= 1.0 { "" } else { ", NOT met" },
                    times(p99),
                    ms(op),
                    ms(tp),
                    if p99 <= 1.0 { "" } else { ", NOT met" },
                ),
            ),
            _ => (None, missing(r, "tokio")),
        };
        out.push(TargetResult {
            target: format!("ours ≥ tokio on parallel {count} (wall time and p99)"),
            workload: r.title.clone(),
            met,
            detail,
        });
    }
    out
}

fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn machine() -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    Machine {
        date: jiff::Timestamp::now()
            .strftime("%Y-%m-%d %H:%M UTC")
            .to_string(),
        cpus: thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        load_before: load_average(),
        load_after: 0.0,
    }
}

/// A workload's id and title, and the servers plotted or why none were.
type Plotted = (&'static str, String, Result<Vec<&'static str>, String>);

/// `wsbench report` of each server's median run of one workload. The CSVs
/// are copied to `{server}.csv` first: the report names series by file.
fn plot(row: &Row, runs: &[RunResult], out: &Path) -> Result<Vec<&'static str>, String> {
    let dir = out.join("plots").join(row.workload);
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    let mut servers = Vec::new();
    for (server, c) in &row.cells {
        let Some(round) = c.median_round else {
            continue;
        };
        let Some(csv) = runs
            .iter()
            .find(|r| r.workload == row.workload && r.server == *server && r.round == round)
            .and_then(|r| r.csv.as_ref())
        else {
            continue;
        };
        let copy = dir.join(format!("{server}.csv"));
        fs::copy(csv, &copy).map_err(|e| format!("cannot copy {}: {e}", csv.display()))?;
        files.push(copy);
        servers.push(*server);
    }
    if files.is_empty() {
        return Err("no run to plot".into());
    }
    // Series in the table's order: ours, tokio, python.
    let order = |s: &str| ["ours", "tokio", "python"].iter().position(|n| *n == s);
    let mut pairs: Vec<_> = servers.into_iter().zip(files).collect();
    pairs.sort_by_key(|(s, _)| order(s));
    let child = Command::new(BIN)
        .arg("report")
        .args(pairs.iter().map(|(_, f)| f))
        .arg("--out")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {BIN} report: {e}"))?;
    let pid = child.id() as i32;
    let (output, killed) = reap(child, RUN_LIMIT, pid, Child::wait_with_output);
    match output {
        _ if killed => Err("wsbench report did not finish".into()),
        Ok(o) if o.status.success() => Ok(pairs.into_iter().map(|(s, _)| s).collect()),
        Ok(o) => Err(last_line(&o.stderr)),
        Err(e) => Err(e.to_string()),
    }
}

#[allow(clippy::too_many_arguments)]
fn write_summary(
    out: &Path,
    machine: &Machine,
    kinds: &[ServerKind],
    rows: &[Row],
    targets: &[TargetResult],
    runs: &[RunResult],
    plots: &[Plotted],
    settings: (bool, u32, u64, u64),
    wall: Duration,
) {
    let (quick, rounds, count, pings) = settings;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# wsbench against async servers{}\n",
        if quick { " (quick pass)" } else { "" }
    );
    let _ = writeln!(
        md,
        "Measured with `make compare` on {}, {} CPUs ({}), Linux {}; the whole run took \
         {:.1} min; load average {:.1} when it started, {:.1} when it ended.\n",
        machine.date,
        machine.cpus,
        machine.cpu_model,
        machine.kernel,
        wall.as_secs_f64() / 60.0,
        machine.load_before,
        machine.load_after,
    );
    let _ = writeln!(
        md,
        "Client: ours (`wsbench bench`, {count} images of 800×600 = 480,000 bytes, seed 42, \
         `--verify` on slow replies; pingpong: {pings} `Ping {{x}}!` round trips on one \
         WebSocket, connect included). {rounds} round{}; in each, every workload runs on \
         each server in turn (ours, tokio, python), each run on a freshly started server. \
         {placement} \
         Cells: median messages/s over the rounds (median p99 of the time per message). \
         Last column: ours / the other server with the most messages/s, taken within each \
         round and then the median over rounds, as are the ratios of the targets.\n",
        if rounds == 1 { "" } else { "s" },
        placement = match pinning::placement() {
            (Some(c), Some(s)) => format!(
                "Serial, serial-short and pingpong runs put the client on CPU {c} and the \
                 server on CPU {s} (taskset), the same for every server; parallel runs are \
                 not pinned."
            ),
            _ => "No run is pinned to a CPU (taskset or a second CPU is missing).".to_string(),
        },
    );

    let names: Vec<&str> = kinds.iter().map(|k| k.name).collect();
    let _ = writeln!(
        md,
        "| workload | {} | ours / best other |",
        names.join(" | ")
    );
    let _ = writeln!(md, "|---|{}---:|", "---:|".repeat(names.len()));
    for row in rows {
        let cells: Vec<String> = names.iter().map(|n| cell_text(&row.cells[n])).collect();
        let ratio = match (row.ratio, row.best_other) {
            (Some(r), Some(other)) => format!("{} {other}", times(r)),
            _ => "–".into(),
        };
        let _ = writeln!(md, "| {} | {} | {ratio} |", row.title, cells.join(" | "));
    }

    let _ = writeln!(md, "\n## Targets (#8)\n");
    for t in targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "**NOT met**",
            None => "not judged",
        };
        let _ = writeln!(
            md,
            "- {}, {}: {verdict} — {}",
            t.target, t.workload, t.detail
        );
    }

    let _ = writeln!(md, "\n## Servers\n");
    for k in kinds {
        let _ = writeln!(md, "- {}: {}", k.name, k.describe);
    }

    let _ = writeln!(md, "\n## Plots\n");
    let _ = writeln!(
        md,
        "`wsbench report` of each server's median run (by messages/s); the CSVs of every run are in csv/.\n"
    );
    for (id, title, result) in plots {
        match result {
            Ok(servers) => {
                let _ = writeln!(
                    md,
                    "- {title} ({}): [response time](plots/{id}/response-time.svg), \
                     [process time](plots/{id}/process-time.svg), [table](plots/{id}/summary.md)",
                    servers.join(", ")
                );
            }
            Err(why) => {
                let _ = writeln!(md, "- {title}: no plots ({why})");
            }
        }
    }
    let _ = writeln!(
        md,
        "- pingpong (WebSocket): no CSV (one connection's round trips; see summary.json)"
    );

    let trouble: Vec<&RunResult> = runs
        .iter()
        .filter(|r| r.status != Status::Ok && r.status != Status::Skipped || r.failed > 0)
        .collect();
    let overflowed: Vec<&RunResult> = runs.iter().filter(|r| r.listen_overflows > 0).collect();
    if !trouble.is_empty() || !overflowed.is_empty() {
        let _ = writeln!(md, "\n## Runs that did not go cleanly\n");
        for r in trouble {
            let _ = writeln!(
                md,
                "- {} on {}, round {}: {:?}, {} ok, {} failed: {}",
                r.workload, r.server, r.round, r.status, r.ok, r.failed, r.note
            );
        }
        if !overflowed.is_empty() {
            let _ = writeln!(
                md,
                "- SYNs dropped by a full listen queue during a run (TcpExt ListenOverflows; \
                 the counter is machine-wide, so other programs' queues count too): {}",
                overflowed
                    .iter()
                    .map(|r| format!(
                        "{} on {} round {}: {}",
                        r.workload, r.server, r.round, r.listen_overflows
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
    }

    fs::write(out.join("summary.md"), &md).expect("target/compare is writable");
    let summary = Summary {
        machine,
        quick,
        rounds,
        count,
        pings,
        servers: kinds.iter().map(|k| (k.name, k.describe.clone())).collect(),
        table: rows,
        targets,
        runs,
        wall_minutes: wall.as_secs_f64() / 60.0,
    };
    fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&summary).expect("plain data serialises"),
    )
    .expect("target/compare is writable");
    print!("\n{md}");
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let started = Instant::now();
    let quick = std::env::var_os("WSBENCH_QUICK").is_some();
    let (rounds, count, pings) = if quick {
        (1, 200, 2000)
    } else {
        (3, 1000, 10_000)
    };
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

    let out = target_dir().join("compare");
    // Every file here is this run's: stale CSVs or plots would mislead.
    let _ = fs::remove_dir_all(&out);
    for dir in ["csv", "logs", "plots"] {
        fs::create_dir_all(out.join(dir)).expect("target/ is writable");
    }
    let mut machine = machine();
    let kinds = servers();
    let workloads = workloads();
    for k in &kinds {
        println!("{}: {}", k.name, k.describe);
    }

    let mut runs = Vec::new();
    for round in 1..=rounds {
        for w in &workloads {
            for k in &kinds {
                let r = run_one(w, k, round, count, pings, &out);
                if r.status != Status::Skipped {
                    println!(
                        "round {round}/{rounds} {:<18} {:<7} {}",
                        w.id,
                        k.name,
                        match (r.status, r.messages_per_s, r.p99_ms) {
                            (Status::Ok, Some(m), Some(p)) => format!("{} p99 {}", rate(m), ms(p)),
                            (status, _, _) => format!("{status:?}: {}", r.note),
                        }
                    );
                }
                runs.push(r);
            }
        }
    }

    machine.load_after = load_average();
    let rows = table(&workloads, &kinds, &runs);
    let targets = judge(&rows, &runs, count);
    let plots: Vec<_> = rows
        .iter()
        .filter(|r| r.workload != "pingpong")
        .map(|r| (r.workload, r.title.clone(), plot(r, &runs, &out)))
        .collect();
    write_summary(
        &out,
        &machine,
        &kinds,
        &rows,
        &targets,
        &runs,
        &plots,
        (quick, rounds, count, pings),
        started.elapsed(),
    );
    println!("wrote {}", out.join("summary.md").display());
}
