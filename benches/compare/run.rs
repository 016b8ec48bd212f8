//! One run: one workload against one server in one round. The server is
//! started fresh, its cost sampled from `/proc` before and after the
//! client (#17), and stopped; what the client measured and what the
//! server spent go into one [`RunResult`].

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output, Stdio};
use std::thread;
use std::time::Duration;

use serde::Serialize;
use wsbench::client::WsUrl;
use wsbench::pingpong;

use crate::servers::{ServerKind, reap, start_server, stop_server};
use crate::tls::Certificates;
use crate::{BIN, RUN_LIMIT, Settings, cost, fanout, idle, pinning};

/// Limit of each connect, send and receive inside a run.
const OP_TIMEOUT: &str = "30s";
const OP_TIMEOUT_PINGPONG: Duration = Duration::from_secs(30);

/// How often the server's threads and memory are sampled during a run.
const WATCH_EVERY: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Debug)]
pub enum Load {
    Bench {
        mode: &'static str,
        response: &'static str,
    },
    Pingpong,
    /// Many connections opened, held, one round trip each (`wsbench load`).
    Idle,
    /// Chat members, one paced sender per turn, every line to all others.
    Fanout,
}

pub struct Workload {
    /// File-name form: `serial-short-fast`.
    pub id: &'static str,
    /// Table form: `serial-short fast`.
    pub title: String,
    pub load: Load,
    pub tls: Tls,
}

/// Whether a workload runs over `wss://` (#15): every server then gets the
/// run's certificate, our client its CA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    Off,
    /// Our client resumes sessions, as a browser does (its default).
    On,
    /// Every handshake a full one (`--no-resume`): what resumption saves.
    NoResume,
}

pub fn workloads(settings: &Settings) -> Vec<Workload> {
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
                tls: Tls::Off,
            });
        }
    }
    all.push(Workload {
        id: "pingpong",
        title: "pingpong (WebSocket)".into(),
        load: Load::Pingpong,
        tls: Tls::Off,
    });
    // The rows #15 asks for: what TLS costs one message at a time (serial
    // images, pings) and one connection per message (serial-short, where
    // the handshake, and so session resumption, is most of the work).
    for (id, mode, tls, how) in [
        ("wss-serial-slow", "serial", Tls::On, ""),
        ("wss-serial-short-slow", "serial-short", Tls::On, ""),
        (
            "wss-serial-short-slow-full",
            "serial-short",
            Tls::NoResume,
            ", full handshakes",
        ),
    ] {
        all.push(Workload {
            id,
            title: format!("wss {mode} slow{how}"),
            load: Load::Bench {
                mode,
                response: "slow",
            },
            tls,
        });
    }
    all.push(Workload {
        id: "wss-pingpong",
        title: "wss pingpong (WebSocket)".into(),
        load: Load::Pingpong,
        tls: Tls::On,
    });
    all.push(Workload {
        id: "idle",
        title: format!(
            "idle {} connections (setups/s)",
            crate::summary::thousands(settings.idle_connections as f64)
        ),
        load: Load::Idle,
        tls: Tls::Off,
    });
    all.push(Workload {
        id: "fanout",
        title: format!(
            "chat fan-out {} members at {}/s (deliveries/s)",
            settings.fanout_members, settings.fanout_rate
        ),
        load: Load::Fanout,
        tls: Tls::Off,
    });
    all
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Failed,
    Timeout,
    Skipped,
}

/// What the server spent during the client's part of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cost {
    /// User + system, from the processes' CPU clocks.
    pub cpu_s: f64,
    /// The split, in 10 ms clock ticks.
    pub user_s: f64,
    pub sys_s: f64,
    /// Sum of each process's own peak (VmHWM): for one process, its peak.
    pub peak_rss_kib: u64,
    /// Resident memory once listening, before the client started.
    pub base_rss_kib: u64,
    /// The highest sum of VmRSS sampled during the run.
    pub sampled_peak_rss_kib: u64,
    pub peak_threads: u64,
    /// Whole-life figures from `wait4`, less those of the threads alive
    /// at the start; None when the server could not be reaped.
    pub voluntary_switches: Option<u64>,
    pub involuntary_switches: Option<u64>,
    pub processes: usize,
}

/// One run: one workload against one server in one round.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub workload: &'static str,
    pub server: &'static str,
    pub round: u32,
    pub status: Status,
    /// Messages/s; for idle, connections set up per second; for fan-out,
    /// deliveries per second.
    pub messages_per_s: Option<f64>,
    /// Of each message's total time (bench), each ping (pingpong), each
    /// round trip (idle), each delivery from its intended send (fan-out).
    pub p99_ms: Option<f64>,
    pub wall_s: Option<f64>,
    /// Messages the cost is divided by: replies, connections (idle),
    /// deliveries (fan-out).
    pub ok: u64,
    pub failed: u64,
    /// TcpExt ListenOverflows during the run (SYNs the listen queue dropped).
    pub listen_overflows: u64,
    pub note: String,
    pub csv: Option<PathBuf>,
    pub cost: Option<Cost>,
    /// CPU seconds of our client: a `wsbench` child's rusage, or the
    /// in-process client's threads.
    pub client_cpu_s: Option<f64>,
    /// Workload-specific figures (idle and fan-out), by name.
    pub extra: BTreeMap<&'static str, f64>,
}

impl RunResult {
    pub fn new(workload: &'static str, server: &'static str, round: u32) -> RunResult {
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
            cost: None,
            client_cpu_s: None,
            extra: BTreeMap::new(),
        }
    }

    /// Every figure of the run by name: what the table takes medians and
    /// ratios of.
    pub fn figure(&self, name: &str) -> Option<f64> {
        let per_1k = |cpu_s: f64| (self.ok > 0).then(|| cpu_s * 1e3 / (self.ok as f64 / 1e3));
        let cost = self.cost.as_ref();
        match name {
            "messages_per_s" => self.messages_per_s,
            "p99_ms" => self.p99_ms,
            "wall_s" => self.wall_s,
            "server_cpu_s" => cost.map(|c| c.cpu_s),
            "server_user_s" => cost.map(|c| c.user_s),
            "server_sys_s" => cost.map(|c| c.sys_s),
            "cpu_ms_per_1k" => cost.and_then(|c| per_1k(c.cpu_s)),
            "client_cpu_ms_per_1k" => self.client_cpu_s.and_then(per_1k),
            "peak_rss_mib" => cost.map(|c| c.peak_rss_kib as f64 / 1024.0),
            "peak_threads" => cost.map(|c| c.peak_threads as f64),
            "voluntary_switches" => cost.and_then(|c| c.voluntary_switches).map(|v| v as f64),
            "involuntary_switches" => cost.and_then(|c| c.involuntary_switches).map(|v| v as f64),
            other => self.extra.get(other).copied(),
        }
    }
}

pub fn listen_overflows() -> u64 {
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

pub fn last_line(bytes: &[u8]) -> String {
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

#[allow(clippy::too_many_arguments)]
pub fn run_bench(
    result: &mut RunResult,
    addr: &str,
    mode: &str,
    response: &str,
    count: u64,
    csv: &Path,
    cpu: Option<usize>,
    tls: Option<(&Path, Tls)>,
) {
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let url = format!("{scheme}://{addr}/");
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
    if let Some((ca, resume)) = tls {
        command.arg("--ca-file").arg(ca);
        if resume == Tls::NoResume {
            command.arg("--no-resume");
        }
    }
    let children_before = cost::rusage(libc::RUSAGE_CHILDREN);
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            result.note = format!("cannot start {BIN}: {e}");
            return;
        }
    };
    let pid = child.id() as i32;
    let (output, killed) = reap(child, RUN_LIMIT, pid, Child::wait_with_output);
    // The client is the only child reaped meanwhile: the server is reaped
    // after, and nothing else is started during a run.
    result.client_cpu_s =
        Some(cost::cpu_s(&cost::rusage(libc::RUSAGE_CHILDREN)) - cost::cpu_s(&children_before));
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
        for figure in ["tls_handshakes", "tls_resumed"] {
            if let Some(n) = json[figure].as_u64().filter(|_| tls.is_some()) {
                result.extra.insert(figure, n as f64);
            }
        }
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
    // Our one error line, when there is one: clap ends a usage error with
    // a hint to --help, which says nothing of what went wrong.
    let line = String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .find(|l| l.starts_with("error: "))
        .map_or_else(|| last_line(stderr), |l| last_line(l.as_bytes()));
    if line.is_empty() {
        format!("bench exited with {status}")
    } else {
        line
    }
}

fn run_pingpong(result: &mut RunResult, addr: &str, pings: u64, cpu: Option<usize>, tls: bool) {
    // The CA is trusted process-wide (`main`): the in-process client's
    // TLS config is one per process.
    let scheme = if tls { "wss" } else { "ws" };
    let url = match WsUrl::parse(&format!("{scheme}://{addr}/")) {
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
        // The client is this one thread: its own CPU clock is its cost.
        let before = cost::cpu_s(&cost::rusage(libc::RUSAGE_THREAD));
        let run = pingpong::ws_pings(&url, pings, OP_TIMEOUT_PINGPONG, &hidden);
        let cpu = cost::cpu_s(&cost::rusage(libc::RUSAGE_THREAD)) - before;
        let _ = tx.send((run, cpu));
    });
    match rx.recv_timeout(RUN_LIMIT) {
        Ok((Ok(run), cpu)) => {
            result.client_cpu_s = Some(cpu);
            let secs = run.duration.as_secs_f64();
            result.status = Status::Ok;
            result.messages_per_s = Some(run.done as f64 / secs);
            result.wall_s = Some(secs);
            result.p99_ms = Some(run.latency.p99 * 1e3);
            result.ok = run.done;
            result.failed = run.count - run.done;
        }
        Ok((Err(e), _)) => result.note = e.to_string(),
        Err(_) => {
            result.status = Status::Timeout;
            result.note = format!("did not finish within {}s", RUN_LIMIT.as_secs());
        }
    }
}

/// One workload against one server: start it, run the client, stop it.
pub fn run_one(
    workload: &Workload,
    kind: &ServerKind,
    round: u32,
    settings: &Settings,
    out: &Path,
    certificates: &Result<Certificates, String>,
) -> RunResult {
    let mut result = RunResult::new(workload.id, kind.name, round);
    if let Err(why) = &kind.argv {
        result.status = Status::Skipped;
        result.note = why.clone();
        return result;
    }
    let tls = match (workload.tls, certificates) {
        (Tls::Off, _) => None,
        (_, Ok(certificates)) => Some(certificates),
        (_, Err(why)) => {
            result.note = why.clone();
            return result;
        }
    };
    let response = match workload.load {
        Load::Bench { response, .. } => response,
        _ => "slow",
    };
    let stem = format!("{}-{}-{round}", workload.id, kind.name);
    let log = out.join("logs").join(format!("{stem}.log"));
    // One connection at a time, and fan-out's one room: client on CPU 0,
    // server on CPU 1, for every server alike. Parallel and idle runs set
    // up connections on both CPUs on both sides, unpinned.
    let (client_cpu, server_cpu) = match workload.load {
        Load::Bench {
            mode: "parallel", ..
        }
        | Load::Idle => (None, None),
        _ => pinning::placement(),
    };
    let mut extra: Vec<String> = match workload.load {
        Load::Idle => kind.idle_flags.0.iter().map(|f| f.to_string()).collect(),
        _ => Vec::new(),
    };
    extra.extend(tls.iter().flat_map(|c| c.server_flags()));
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let running = match start_server(kind, response, &log, server_cpu, &extra) {
        Ok(running) if running.tls != tls.is_some() => {
            let said = if running.tls { "wss" } else { "ws" };
            result.note = format!("server listens on {said}:// against its TLS flags");
            stop_server(running);
            return result;
        }
        Ok(running) => running,
        Err(why) => {
            result.note = format!("server did not start: {why}");
            return result;
        }
    };
    let client_tls = tls.map(|c| (c.ca.as_path(), workload.tls));
    // The tree once listening: Python's pool workers are forked by then.
    let pids = cost::tree(running.pid());
    let base = cost::sum(&pids, true);
    let watch = cost::Watch::start(pids.clone(), WATCH_EVERY);
    let overflows = listen_overflows();
    match workload.load {
        Load::Bench { mode, response } => {
            let csv = out.join("csv").join(format!("{stem}.csv"));
            let all = match workload.tls {
                Tls::Off => settings.count,
                Tls::On | Tls::NoResume => settings.wss_count,
            };
            let count = match mode {
                "parallel" => all,
                _ => (all as f64 * kind.serial_share).round() as u64,
            };
            run_bench(
                &mut result,
                &running.addr,
                mode,
                response,
                count,
                &csv,
                client_cpu,
                client_tls,
            );
        }
        Load::Pingpong => run_pingpong(
            &mut result,
            &running.addr,
            settings.pings,
            client_cpu,
            tls.is_some(),
        ),
        Load::Idle => idle::run(&mut result, &running.addr, settings),
        Load::Fanout => fanout::run(&mut result, &running.addr, settings, client_cpu),
    }
    result.listen_overflows = listen_overflows().saturating_sub(overflows);
    // Background statistics of a fast run belong to it: wait until the
    // server is idle (0.5 ms of CPU in 50 ms at most) before the reading.
    let settled = cost::settle(
        &pids,
        Duration::from_millis(50),
        5e-4,
        Duration::from_secs(15),
    );
    let peaks = watch.finish();
    let stopped = stop_server(running);
    result.cost = Some(Cost {
        cpu_s: (settled.cpu_s - base.cpu_s).max(0.0),
        user_s: (settled.user_s - base.user_s).max(0.0),
        sys_s: (settled.sys_s - base.sys_s).max(0.0),
        peak_rss_kib: settled.hwm_kib,
        base_rss_kib: base.rss_kib,
        sampled_peak_rss_kib: peaks.rss_kib,
        peak_threads: peaks.threads.max(settled.threads).max(base.threads),
        voluntary_switches: stopped
            .usage
            .map(|u| (u.ru_nvcsw as u64).saturating_sub(base.voluntary_switches)),
        involuntary_switches: stopped
            .usage
            .map(|u| (u.ru_nivcsw as u64).saturating_sub(base.involuntary_switches)),
        processes: settled.processes,
    });
    if let (Load::Idle, Some(&held)) = (workload.load, result.extra.get("held")) {
        // The sampled peak, not VmHWM: the plateau while every connection
        // is held, not a burst of handshake buffers.
        let grown = peaks.rss_kib.saturating_sub(base.rss_kib) as f64;
        if held > 0.0 {
            result.extra.insert("rss_per_conn_kib", grown / held);
        }
    }
    if let Some(note) = stopped.note {
        if !result.note.is_empty() {
            result.note.push_str("; ");
        }
        result.note.push_str(&note);
    }
    result
}
