//! What a server process spent, read from Linux's `/proc` (#17): CPU time,
//! resident memory, threads and context switches of a process and its
//! descendants (Python's fast mode computes in a process pool, whose
//! workers count as the server's cost too).
//!
//! - CPU: the process's CPU clock (`clock_getcpuclockid`), in
//!   nanoseconds, and its split into user and system from `/proc/PID/stat`
//!   utime and stime, in clock ticks (10 ms: too coarse alone for a run
//!   that costs 50 ms). Both cover every thread the process ever ran,
//!   ended ones included, so a server that ends a thread per connection
//!   is charged for all of them.
//! - Memory: `VmRSS` now and `VmHWM` (the peak) from `/proc/PID/status`.
//! - Threads: `Threads` from the same file; the peak is sampled by
//!   [`Watch`], since threads come and go between two reads.
//! - Context switches: `/proc/PID/task/*/status` counts them per thread,
//!   and a thread's count vanishes with it; whole-life figures come from
//!   the `rusage` of [`wait4`] when the server is reaped, and a sample's
//!   sum over the live threads serves as the baseline to subtract.
//!
//! It owns reading and summing; when to sample, and what a figure is
//! divided by, is the caller's.

use std::fs;
use std::io;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// One reading of a process tree, summed over its processes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// User + system, from the process CPU clock.
    pub cpu_s: f64,
    /// The split, in clock ticks.
    pub user_s: f64,
    pub sys_s: f64,
    pub rss_kib: u64,
    /// Sum of each process's own peak (for one process, its peak).
    pub hwm_kib: u64,
    pub threads: u64,
    /// Over the threads alive now.
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub processes: usize,
}

impl Sample {
    fn add(&mut self, other: &Sample) {
        self.cpu_s += other.cpu_s;
        self.user_s += other.user_s;
        self.sys_s += other.sys_s;
        self.rss_kib += other.rss_kib;
        self.hwm_kib += other.hwm_kib;
        self.threads += other.threads;
        self.voluntary_switches += other.voluntary_switches;
        self.involuntary_switches += other.involuntary_switches;
        self.processes += other.processes;
    }
}

/// CPU seconds `pid` has used, all its threads together, to the
/// nanosecond; None when the clock cannot be read (the process is gone).
pub fn process_cpu_s(pid: i32) -> Option<f64> {
    let mut clock: libc::clockid_t = 0;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both calls only write the value passed by pointer.
    unsafe {
        if libc::clock_getcpuclockid(pid, &mut clock) != 0
            || libc::clock_gettime(clock, &mut now) != 0
        {
            return None;
        }
    }
    Some(now.tv_sec as f64 + now.tv_nsec as f64 / 1e9)
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// `(ppid, utime ticks, stime ticks)` from the text of `/proc/PID/stat`.
/// The command name (field 2) may hold spaces and parentheses, so fields
/// are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<(i32, u64, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = fields.get(1)?.parse().ok()?;
    let utime = fields.get(11)?.parse().ok()?;
    let stime = fields.get(12)?.parse().ok()?;
    Some((ppid, utime, stime))
}

/// The value of `key:` in a `/proc/…/status` text, its unit dropped.
fn status_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Context switches summed over the threads `pid` runs now.
fn thread_switches(pid: i32) -> (u64, u64) {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    let mut sums = (0, 0);
    for task in tasks.flatten() {
        let Ok(text) = fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        sums.0 += status_field(&text, "voluntary_ctxt_switches").unwrap_or(0);
        sums.1 += status_field(&text, "nonvoluntary_ctxt_switches").unwrap_or(0);
    }
    sums
}

/// One process (all its threads), with per-thread context switches when
/// `switches` is set (one file per thread: costly on 10,000 threads).
pub fn process(pid: i32, switches: bool) -> io::Result<Sample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let (_, utime, stime) = parse_stat(&stat)
        .ok_or_else(|| io::Error::other(format!("/proc/{pid}/stat: unreadable")))?;
    let ticks = clock_ticks_per_s();
    let (voluntary_switches, involuntary_switches) = if switches {
        thread_switches(pid)
    } else {
        (0, 0)
    };
    let (user_s, sys_s) = (utime as f64 / ticks, stime as f64 / ticks);
    Ok(Sample {
        cpu_s: process_cpu_s(pid).unwrap_or(user_s + sys_s),
        user_s,
        sys_s,
        rss_kib: status_field(&status, "VmRSS").unwrap_or(0),
        hwm_kib: status_field(&status, "VmHWM").unwrap_or(0),
        threads: status_field(&status, "Threads").unwrap_or(0),
        voluntary_switches,
        involuntary_switches,
        processes: 1,
    })
}

/// `pid` and every process descended from it, parents first.
pub fn tree(pid: i32) -> Vec<i32> {
    let mut parents: Vec<(i32, i32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Some((ppid, _, _)) = fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|t| parse_stat(&t))
            {
                parents.push((child, ppid));
            }
        }
    }
    let mut found = vec![pid];
    let mut next = 0;
    while next < found.len() {
        let parent = found[next];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        next += 1;
    }
    found
}

/// The processes in `pids` that still exist, summed.
pub fn sum(pids: &[i32], switches: bool) -> Sample {
    let mut total = Sample::default();
    for &pid in pids {
        if let Ok(one) = process(pid, switches) {
            total.add(&one);
        }
    }
    total
}

/// Peaks seen by a [`Watch`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Peaks {
    pub threads: u64,
    pub rss_kib: u64,
}

/// Samples threads and resident memory of a fixed set of processes on a
/// thread of its own until finished: the peak of a figure that comes and
/// goes (threads of short connections, buffers of a burst) is only seen by
/// looking often. A read costs two small files per process.
pub struct Watch {
    stop: crossbeam_channel::Sender<()>,
    handle: JoinHandle<Peaks>,
}

impl Watch {
    pub fn start(pids: Vec<i32>, every: Duration) -> Watch {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let handle = thread::Builder::new()
            .name("cost-watch".into())
            .spawn(move || {
                let mut peaks = Peaks::default();
                loop {
                    let now = sum(&pids, false);
                    peaks.threads = peaks.threads.max(now.threads);
                    peaks.rss_kib = peaks.rss_kib.max(now.rss_kib);
                    // The stop signal doubles as the pacing wait.
                    if stopped.recv_timeout(every).is_ok() {
                        return peaks;
                    }
                }
            })
            .expect("a thread with a small stack starts");
        Watch { stop, handle }
    }

    pub fn finish(self) -> Peaks {
        let _ = self.stop.send(());
        self.handle.join().unwrap_or_default()
    }
}

/// Waits until `pids` stop using CPU (no more than `quiet_below` seconds
/// of CPU over one `step`), for at most `limit`, and returns the last
/// sample: a fast-mode server still computes the statistics of images it
/// has acknowledged, and that work belongs to the run.
pub fn settle(pids: &[i32], step: Duration, quiet_below: f64, limit: Duration) -> Sample {
    let deadline = Instant::now() + limit;
    let mut last = sum(pids, false);
    loop {
        if Instant::now() >= deadline {
            return last;
        }
        thread::sleep(step);
        let now = sum(pids, false);
        if now.cpu_s - last.cpu_s <= quiet_below {
            return now;
        }
        last = now;
    }
}

/// CPU seconds of `rusage`.
pub fn cpu_s(usage: &libc::rusage) -> f64 {
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(usage.ru_utime) + s(usage.ru_stime)
}

/// `getrusage(who)`: `RUSAGE_SELF`, `RUSAGE_CHILDREN` (every reaped child
/// so far, summed) or `RUSAGE_THREAD`.
pub fn rusage(who: libc::c_int) -> libc::rusage {
    // SAFETY: a zeroed rusage is valid; getrusage only writes into it.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    }
}

/// Reaps child `pid` (blocking) with its whole-life `rusage`: all its
/// threads, ended ones included, and the children it reaped. The raw wait
/// status goes with it.
pub fn wait4(pid: i32) -> io::Result<(i32, libc::rusage)> {
    loop {
        let mut status = 0;
        // SAFETY: a zeroed rusage is valid; wait4 writes the status and
        // the rusage only.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if got == pid {
            return Ok((status, usage));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
