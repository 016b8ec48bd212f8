//! The `/proc` cost reader of `make compare` (benches/common/cost.rs, #17)
//! checked against this test process itself: its CPU, memory, threads,
//! context switches and children. The module lives with the benchmark;
//! its tests live here so that `make test` runs them. Unlike the rest of
//! the tests (one binary, `tests/it/`), these measure their own process,
//! so they run in a process of their own where no other test adds CPU,
//! memory or threads.

#[allow(dead_code)]
#[path = "../benches/common/cost.rs"]
mod cost;

use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use cost::*;

fn own() -> i32 {
    std::process::id() as i32
}

#[test]
fn stat_fields_are_counted_from_the_last_parenthesis() {
    let text = "42 (a b) c)) S 7 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 3 0";
    assert_eq!(parse_stat(text), Some((7, 250, 30)));
    assert_eq!(parse_stat("garbage"), None);
}

#[test]
fn cpu_time_grows_by_what_this_process_burns() {
    let before = process(own(), false).unwrap();
    // 200 ms of this thread's CPU, by its own clock: the kernel's
    // accounting, not a wall-clock guess, decides when to stop.
    let thread_cpu = || rusage(libc::RUSAGE_THREAD);
    let start = cpu_s(&thread_cpu());
    let mut x = 0u64;
    while cpu_s(&thread_cpu()) - start < 0.2 {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
    }
    let after = process(own(), false).unwrap();
    let burnt = after.cpu_s - before.cpu_s;
    // The process clock has every thread: other tests' add to it.
    assert!(
        burnt >= 0.2,
        "burnt {burnt} s of CPU, the process clock says"
    );
    // Ticks are 10 ms.
    let ticks = (after.user_s + after.sys_s) - (before.user_s + before.sys_s);
    assert!(ticks >= 0.18, "burnt {ticks} s of CPU, /proc/PID/stat says");
}

#[test]
fn resident_memory_and_its_peak_follow_touched_pages() {
    let before = process(own(), false).unwrap();
    let block = vec![1u8; 64 << 20];
    std::hint::black_box(&block);
    let during = process(own(), false).unwrap();
    assert!(
        during.rss_kib >= before.rss_kib + 60 * 1024,
        "RSS {} KiB after touching 64 MiB, {} KiB before",
        during.rss_kib,
        before.rss_kib
    );
    drop(block);
    // The peak outlives the block. RSS is counted in per-CPU batches,
    // so the peak may read a little under the RSS seen before.
    let after = process(own(), false).unwrap();
    assert!(
        after.hwm_kib >= before.rss_kib + 60 * 1024,
        "{after:?} vs {before:?}"
    );
}

#[test]
fn threads_and_their_switches_are_counted() {
    let (to_helper, helper_rx) = crossbeam_channel::bounded::<u32>(0);
    let (to_test, test_rx) = crossbeam_channel::bounded::<u32>(0);
    let helper = thread::spawn(move || {
        // Each receive blocks until the test sends: a voluntary switch.
        for n in helper_rx {
            to_test.send(n).unwrap();
        }
    });
    let with_helper = process(own(), true).unwrap();
    for n in 0..200 {
        to_helper.send(n).unwrap();
        assert_eq!(test_rx.recv().unwrap(), n);
    }
    let after = process(own(), true).unwrap();
    assert!(with_helper.threads >= 2, "{with_helper:?}");
    assert!(
        after.voluntary_switches >= with_helper.voluntary_switches + 100,
        "200 hand-offs, {} -> {} voluntary switches",
        with_helper.voluntary_switches,
        after.voluntary_switches
    );
    drop(to_helper);
    helper.join().unwrap();
}

#[test]
fn the_tree_holds_children_and_wait4_reaps_with_their_usage() {
    // `cat` blocks on its stdin until the pipe closes: alive for as
    // long as the test needs, no sleep. wait4 below reaps it, which
    // clippy cannot see.
    #[allow(clippy::zombie_processes)]
    let mut child = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    assert!(tree(own()).contains(&pid));
    assert_eq!(tree(pid), vec![pid]);
    let both = sum(&[own(), pid], false);
    assert_eq!(both.processes, 2);
    drop(child.stdin.take());
    let (status, usage) = wait4(pid).unwrap();
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    assert!(cpu_s(&usage) >= 0.0);
    assert!(usage.ru_maxrss > 0, "a reaped child had some memory");
    assert_eq!(sum(&[pid], false).processes, 0, "gone once reaped");
}

#[test]
fn a_watch_reports_the_peak_it_saw() {
    let watch = Watch::start(vec![own()], Duration::from_millis(1));
    let peaks = watch.finish();
    assert!(peaks.threads >= 2, "this test and the watch: {peaks:?}");
    assert!(peaks.rss_kib > 0);
}

#[test]
fn settle_returns_once_the_process_is_idle() {
    // A `cat` waiting on its stdin burns nothing: settled at once.
    let mut cat = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = cat.id() as i32;
    let settled = settle(
        &[pid],
        Duration::from_millis(10),
        0.005,
        Duration::from_secs(30),
    );
    assert_eq!(settled.processes, 1);
    drop(cat.stdin.take());
    cat.wait().unwrap();
}
