//! The servers under comparison: which program each one is, starting one
//! for a run (its listening line read, its stdout drained), and stopping
//! it with SIGTERM, reaped with its whole-life `rusage` (#17).

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::{BIN, ROOT, cost, pinning};

/// How long a server may take to print its listening line.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(15);

/// Process groups of the servers running now: a Ctrl-C of `make compare`
/// stops them too (each runs in its own group, so that a server killed
/// after overrunning its stop takes its worker processes with it).
pub static RUNNING: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// A server under comparison: the program to start, or why it cannot be.
pub struct ServerKind {
    pub name: &'static str,
    pub argv: Result<Vec<String>, String>,
    /// What the server prints on stderr: warnings only, for all alike.
    pub env: (&'static str, &'static str),
    pub describe: String,
    /// Flags for the idle workload only, and why.
    pub idle_flags: (Vec<&'static str>, &'static str),
    /// Images of a serial or serial-short run, as a share of the others'.
    pub serial_share: f64,
}

pub fn root() -> PathBuf {
    PathBuf::from(ROOT)
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

pub fn servers() -> Vec<ServerKind> {
    let ours = ServerKind {
        name: "ours",
        argv: Ok(vec![BIN.to_string(), "server".into()]),
        env: ("RUST_LOG", "warn"),
        describe: format!("`{BIN} server`"),
        idle_flags: (Vec::new(), ""),
        serial_share: 1.0,
    };

    let tokio_bin = target_dir().join("release/wsbench-tokio");
    // tungstenite zero-fills a 128 KiB read buffer per connection and keeps
    // it: ~140 KiB an idle connection. A tokio server meant to hold many
    // would read 4 KiB at a time, as ours does; the image workloads keep
    // the default, which takes a 480,000-byte image in 4 reads, not 118.
    let tuned = (
        vec!["--read-buffer-size", "4KiB"],
        "tokio reads into a 4 KiB buffer (tungstenite's default 128 KiB elsewhere), as ours reads ahead 4 KiB",
    );
    let mut idle_flags = (Vec::new(), "");
    let (argv, describe) = match std::env::var("WSBENCH_TOKIO_CMD") {
        Ok(cmd) => {
            let argv: Vec<String> = cmd.split_whitespace().map(String::from).collect();
            (
                Ok(argv),
                format!("`{cmd}` (WSBENCH_TOKIO_CMD: a stand-in, not the tokio server)"),
            )
        }
        Err(_) if tokio_bin.exists() => {
            idle_flags = tuned;
            (
                Ok(vec![tokio_bin.display().to_string()]),
                format!("`{}` (compare/tokio)", tokio_bin.display()),
            )
        }
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
        idle_flags,
        serial_share: 1.0,
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
        // The original's backlog of 100 drops SYNs when 500 connect at
        // once, and the 1 s retransmits would be what the setup rate
        // measured; ours and tokio listen with 4096.
        idle_flags: (
            vec!["--backlog", "4096"],
            "python listens with a backlog of 4096 (asyncio's 100 elsewhere), as ours and tokio do",
        ),
        // At ~100 images/s, 1,000 serial images take 10 s, and Python's
        // four serial workloads alone would take a third of the 6 minutes
        // #17 allows. One message at a time, a rate and a CPU per message
        // need no more; parallel runs keep every image, since there the
        // count is the concurrency.
        serial_share: 0.5,
    };
    vec![ours, tokio, python]
}

/// Waits for `child` on a helper thread (`wait` decides how) for at most
/// `limit`; past it, kills `kill_target` (a pid, or a negative process
/// group) with SIGKILL and still collects the result. Returns it and
/// whether the child had to be killed.
pub fn reap<T: Send + 'static>(
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
pub struct Running {
    child: Child,
    pub addr: String,
    /// It said `listening on wss://`.
    pub tls: bool,
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

pub fn start_server(
    kind: &ServerKind,
    response: &str,
    log: &Path,
    cpu: Option<usize>,
    extra: &[&str],
) -> Result<Running, String> {
    let argv = kind.argv.as_ref().map_err(Clone::clone)?;
    let log_file =
        File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let mut command = pinning::on_cpu(cpu, &argv[0]);
    command
        .args(&argv[1..])
        .args(["--host", "127.0.0.1", "--port", "0", "--response", response])
        .args(extra)
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
            tls: false,
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
                let Some(url) = line.trim().strip_prefix("listening on ") else {
                    continue;
                };
                let (tls, addr) = match url.strip_prefix("wss://") {
                    Some(addr) => (true, addr),
                    None => (false, url.strip_prefix("ws://").unwrap_or(url)),
                };
                return Ok(Running {
                    child,
                    addr: addr.to_string(),
                    tls,
                });
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

/// How a stop went: a note when it was not clean, and the server's
/// whole-life `rusage` when it was reaped.
pub struct Stopped {
    pub note: Option<String>,
    pub usage: Option<libc::rusage>,
}

/// SIGTERM, then SIGKILL to the whole group past `STOP_LIMIT`. The server
/// is reaped with `wait4`, whose `rusage` has what `/proc` loses: the
/// context switches of threads that have ended.
pub fn stop_server(running: Running) -> Stopped {
    let pid = running.child.id() as i32;
    // SAFETY: kill takes plain integers; the pid is our child's.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let (waited, killed) = reap(running.child, STOP_LIMIT, -pid, move |_child| {
        cost::wait4(pid)
    });
    RUNNING.lock().unwrap().retain(|&p| p != pid);
    let usage = waited.as_ref().ok().map(|(_, usage)| *usage);
    let note = if killed {
        Some(format!(
            "server did not exit within {}s of SIGTERM: killed",
            STOP_LIMIT.as_secs()
        ))
    } else {
        match waited {
            Ok((raw, _)) => {
                let s = ExitStatus::from_raw(raw);
                // Ended by the signal's default action: stopped as asked.
                if s.success() || s.signal() == Some(libc::SIGTERM) {
                    None
                } else {
                    Some(format!("server exited with {s} after SIGTERM"))
                }
            }
            Err(e) => Some(format!("cannot wait for the server: {e}")),
        }
    };
    Stopped { note, usage }
}
