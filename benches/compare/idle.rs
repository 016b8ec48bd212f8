//! The idle-connections workload (#17): `wsbench load` opens
//! `--rounds × --batch-size × --workers` connections to `/`, holds them
//! all for the hold time, then does one `ping` → `Pong!` round trip on
//! each and closes them. What it shows is what an open, quiet connection
//! costs a server: resident memory and threads (read by `run_one` from
//! `/proc`), and how fast the server takes new ones.

use std::process::{Child, Command, Stdio};

use crate::run::{RunResult, Status, last_line};
use crate::servers::reap;
use crate::{BIN, RUN_LIMIT, Settings, cost};

/// Connections one batch sets up concurrently, and workers opening
/// batches: `wsbench load`'s defaults.
const BATCH: u64 = 500;
const WORKERS: u64 = 2;

pub fn run(result: &mut RunResult, addr: &str, settings: &Settings) {
    let rounds = settings.idle_connections.div_ceil(BATCH * WORKERS).max(1);
    let mut command = Command::new(BIN);
    command
        .args(["load", "--url", &format!("ws://{addr}/")])
        .args(["--rounds", &rounds.to_string()])
        .args(["--batch-size", &BATCH.to_string()])
        .args(["--workers", &WORKERS.to_string()])
        .args(["--hold", &format!("{}ms", settings.idle_hold.as_millis())])
        .args(["--timeout", "30s", "--json"])
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let children_before = cost::rusage(libc::RUSAGE_CHILDREN);
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            result.note = format!("cannot start {BIN} load: {e}");
            return;
        }
    };
    let pid = child.id() as i32;
    let (output, killed) = reap(child, RUN_LIMIT, pid, Child::wait_with_output);
    result.client_cpu_s =
        Some(cost::cpu_s(&cost::rusage(libc::RUSAGE_CHILDREN)) - cost::cpu_s(&children_before));
    if killed {
        result.status = Status::Timeout;
        result.note = format!("did not finish within {}s", RUN_LIMIT.as_secs());
        return;
    }
    let output = match output {
        Ok(output) => output,
        Err(e) => {
            result.note = format!("cannot wait for load: {e}");
            return;
        }
    };
    // `load` prints its summary, then exits 1 if any connection failed:
    // the figures of a run with failures are kept, with the reason.
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&output.stdout) else {
        result.note = format!("load printed no summary: {}", last_line(&output.stderr));
        return;
    };
    let number = |key: &str| json[key].as_f64();
    let count = |key: &str| json[key].as_u64().unwrap_or(0);
    result.messages_per_s = number("connections_per_s");
    result.wall_s = number("setup_s");
    result.p99_ms = json["round_trip"]["p99"].as_f64().map(|s| s * 1e3);
    result.ok = count("round_trips_ok");
    result.failed = count("failed") + count("lost_while_held") + count("round_trips_failed");
    result.extra.insert("held", count("held") as f64);
    result.extra.insert("attempted", count("attempted") as f64);
    if let Some(rate) = result.messages_per_s {
        result.extra.insert("setup_per_s", rate);
    }
    if output.status.success() {
        result.status = Status::Ok;
    } else {
        result.note = last_line(&output.stderr);
        if result.note.is_empty() {
            result.note = format!("load exited with {}", output.status);
        }
    }
}
