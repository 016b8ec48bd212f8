//! CPU placement for the benchmarks that compare two round trips (`e2e`'s
//! ratio sections, `compare`'s one-connection workloads).
//!
//! A loopback round trip costs about twice as much when its two ends run
//! on different vCPUs as on the same one, and the scheduler changes its
//! mind every few seconds: unpinned, WebSocket/raw-TCP ratios swung from
//! 0.38 to 4.7, and one server against itself from 0.55x to 1.8x. Pinned,
//! a figure and its baseline (or every server) meet the same placement.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// Runs the calling thread on `cpu` only, or where the process started
/// for `None`.
pub fn pin(cpu: Option<usize>) {
    let mut set = *original_cpus();
    if let Some(c) = cpu {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET only
        // writes into it.
        unsafe {
            set = std::mem::zeroed();
            libc::CPU_SET(c, &mut set);
        }
    }
    // SAFETY: sched_setaffinity only reads `set`.
    let done = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if done != 0 {
        eprintln!("cannot pin to {cpu:?}: {}", std::io::Error::last_os_error());
    }
}

/// The CPUs this process may run on, as it started; read it before the
/// first `pin`.
pub fn original_cpus() -> &'static libc::cpu_set_t {
    static ORIGINAL: std::sync::OnceLock<libc::cpu_set_t> = std::sync::OnceLock::new();
    ORIGINAL.get_or_init(|| {
        // SAFETY: a zeroed cpu_set_t is a valid empty set, which
        // sched_getaffinity fills in.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
            set
        }
    })
}

/// Where the client and the server go: the first two CPUs this process
/// may use, if it may use two and `taskset` is there to place a server.
pub fn placement() -> (Option<usize>, Option<usize>) {
    if !Path::new(TASKSET).exists() {
        return (None, None);
    }
    let set = original_cpus();
    // SAFETY: CPU_ISSET only reads the set.
    let mut allowed =
        (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, set) });
    match (allowed.next(), allowed.next()) {
        (Some(a), Some(b)) => (Some(a), Some(b)),
        _ => (None, None),
    }
}

const TASKSET: &str = "/usr/bin/taskset";

/// `program` under `taskset -c cpu` (every thread it starts inherits it),
/// or plain.
pub fn on_cpu(cpu: Option<usize>, program: impl AsRef<OsStr>) -> Command {
    match cpu {
        Some(c) => {
            let mut command = Command::new(TASKSET);
            command.arg("-c").arg(c.to_string()).arg(program);
            command
        }
        None => Command::new(program),
    }
}
