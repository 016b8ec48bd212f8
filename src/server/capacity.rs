//! How many connections this machine lets the server hold, worked out at
//! start from every limit one connection counts against, so the server
//! refuses with a readable 503 before a limit is hit instead of aborting
//! when it is (#12).
//!
//! A connection costs one descriptor, one thread and that thread's memory
//! maps. Running out of maps is the dangerous one: Rust allocates a
//! thread's signal stack inside the new thread and aborts the whole
//! process if that fails, so a thread start cannot be tried and refused;
//! it must never be attempted past the limit.

use std::fs;

/// Memory maps of one connection: its stack and guard page, Rust's signal
/// stack and its guard page, and one for a buffer of 128 KiB or more
/// (glibc serves those with mmap), such as an image being received.
pub const MAPS_PER_CONNECTION: u64 = 5;

/// Maps kept for everything else: libraries, malloc arenas, the fixed
/// threads, large transient buffers of the accept path.
const MAP_HEADROOM: u64 = 512;

/// Descriptors kept for the stats log, wake-up pipes and whatever a
/// library opens later.
const FD_HEADROOM: u64 = 16;

/// Threads kept for the rest of the machine.
const THREAD_HEADROOM: u64 = 256;

/// Address space a connection may take: its 256 KiB stack, signal stack
/// and guard pages, and read-ahead buffers.
const ADDRESS_SPACE_PER_CONNECTION: u64 = 384 * 1024;

/// Memory a busy connection may hold (its idle cost is about 25 KiB).
const MEMORY_PER_CONNECTION: u64 = 256 * 1024;

/// One limit and what it allows.
#[derive(Debug, Clone)]
pub struct Factor {
    /// Connections this limit allows.
    pub connections: u64,
    /// What it is, e.g. `memory maps (vm.max_map_count 65530, 5 per connection)`.
    pub what: String,
    /// How to raise it, e.g. `sysctl -w vm.max_map_count=131072`.
    pub raise: String,
}

/// The server's capacity: the tightest of the machine's limits.
#[derive(Debug, Clone)]
pub struct Capacity {
    pub connections: u64,
    pub limit: Factor,
}

impl Capacity {
    /// Measures this process now. `refusal_fds` descriptors are kept for
    /// connections being refused (they too need one each).
    pub fn measure(refusal_fds: u64) -> Capacity {
        let factors = [
            descriptors(refusal_fds),
            memory_maps(),
            threads(),
            address_space(),
            memory(),
        ];
        let limit = factors
            .into_iter()
            .flatten()
            .min_by_key(|f| f.connections)
            .unwrap_or(Factor {
                connections: u64::MAX,
                what: "nothing measurable".into(),
                raise: "nothing to raise".into(),
            });
        Capacity {
            connections: limit.connections,
            limit,
        }
    }

    /// The one line the server logs at start.
    pub fn line(&self) -> String {
        format!(
            "capacity: {} connections, limited by {}; to raise it: {}",
            self.connections, self.limit.what, self.limit.raise
        )
    }
}

/// The soft open-file limit (the server raises it to the hard one first).
fn descriptors(refusal_fds: u64) -> Option<Factor> {
    let (soft, hard) = rlimit(libc::RLIMIT_NOFILE)?;
    let open = fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let connections = soft.saturating_sub(open + FD_HEADROOM + refusal_fds);
    Some(Factor {
        connections,
        what: format!("open files (ulimit -n {soft}, hard limit {hard})"),
        raise: if soft < hard {
            format!("ulimit -n {hard}")
        } else {
            "raise the hard open-file limit (ulimit -Hn, LimitNOFILE= for a service)".into()
        },
    })
}

fn memory_maps() -> Option<Factor> {
    let max = read_u64("/proc/sys/vm/max_map_count")?;
    let used = fs::read_to_string("/proc/self/maps").ok()?.lines().count() as u64;
    let connections = max.saturating_sub(used + MAP_HEADROOM) / MAPS_PER_CONNECTION;
    let doubled = used + MAP_HEADROOM + 2 * connections.max(1) * MAPS_PER_CONNECTION;
    Some(Factor {
        connections,
        what: format!("memory maps (vm.max_map_count {max}, {MAPS_PER_CONNECTION} per connection)"),
        raise: format!("sysctl -w vm.max_map_count={doubled}"),
    })
}

/// Threads the kernel, the pid space and this cgroup allow, less those
/// that already run on the machine.
fn threads() -> Option<Factor> {
    let mut limits: Vec<(u64, String, String)> = Vec::new();
    if let Some(max) = read_u64("/proc/sys/kernel/threads-max") {
        limits.push((
            max,
            format!("kernel.threads-max {max}"),
            format!("sysctl -w kernel.threads-max={}", max * 2),
        ));
    }
    if let Some(max) = read_u64("/proc/sys/kernel/pid_max") {
        limits.push((
            max,
            format!("kernel.pid_max {max}"),
            format!("sysctl -w kernel.pid_max={}", (max * 2).min(4_194_304)),
        ));
    }
    if let Some(max) = read_u64("/sys/fs/cgroup/pids.max") {
        limits.push((
            max,
            format!("cgroup pids.max {max}"),
            "raise pids.max of this cgroup (TasksMax= for a service)".into(),
        ));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0
        && let Some((soft, _)) = rlimit(libc::RLIMIT_NPROC)
    {
        limits.push((
            soft,
            format!("ulimit -u {soft}"),
            "ulimit -u (processes and threads per user)".into(),
        ));
    }
    let (max, what, raise) = limits.into_iter().min_by_key(|l| l.0)?;
    // The fourth field of /proc/loadavg is `running/total` threads.
    let running = fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok())
        .unwrap_or(0u64);
    Some(Factor {
        connections: max.saturating_sub(running + THREAD_HEADROOM),
        what: format!("threads ({what}, {running} running, one per connection)"),
        raise,
    })
}

fn address_space() -> Option<Factor> {
    let (soft, _) = rlimit(libc::RLIMIT_AS)?;
    let used = status_kib("VmSize:")? * 1024;
    Some(Factor {
        connections: soft.saturating_sub(used) / ADDRESS_SPACE_PER_CONNECTION,
        what: format!("address space (ulimit -v {} KiB)", soft / 1024),
        raise: "ulimit -v unlimited".into(),
    })
}

fn memory() -> Option<Factor> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(Factor {
        connections: kib * 1024 / MEMORY_PER_CONNECTION,
        what: format!(
            "memory ({} MiB available, {} KiB per busy connection)",
            kib / 1024,
            MEMORY_PER_CONNECTION / 1024
        ),
        raise: "add memory".into(),
    })
}

/// A finite limit as (soft, hard); `None` when unlimited or unknown.
fn rlimit(resource: libc::__rlimit_resource_t) -> Option<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed.
    if unsafe { libc::getrlimit(resource, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some((limit.rlim_cur, limit.rlim_max))
}

fn read_u64(path: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn status_kib(field: &str) -> Option<u64> {
    fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_has_a_finite_capacity_and_says_why() {
        let capacity = Capacity::measure(64);
        assert!(capacity.connections > 0 && capacity.connections < u64::MAX);
        let line = capacity.line();
        assert!(line.starts_with("capacity: "), "{line}");
        assert!(line.contains("to raise it: "), "{line}");
    }
}
