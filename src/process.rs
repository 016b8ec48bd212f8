//! This process's resources: every connection, ours or a client's, holds
//! a descriptor, and the soft open-file limit is often far below the hard
//! one; and every server connection holds a thread stack, whose deepest
//! use (the handshakes) should not stay resident for the connection's life.

/// Raises the soft open-file limit to the hard one; returns the soft limit
/// now in force (`u64::MAX` when unlimited or unknown).
pub fn raise_open_files() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return u64::MAX;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// Gives back to the kernel the pages of this thread's stack below the
/// caller's frame: a connection's handshakes (TLS above all: key exchange,
/// certificate, ring's big-number code) touch tens of KiB of stack once,
/// and those pages would otherwise stay resident while the connection
/// idles for hours. Nothing below the stack pointer is live (the x86-64
/// red zone is 128 bytes; a page is left as margin), and a page given
/// back reads as zeros if the thread grows into it again.
pub fn release_unused_stack() {
    const PAGE: usize = 4096;
    // SAFETY: pthread_getattr_np fills `attr` for this thread, destroyed
    // below; madvise(MADV_DONTNEED) on this thread's own stack, strictly
    // below the current frame, drops only dead pages.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return;
        }
        let mut low: *mut libc::c_void = std::ptr::null_mut();
        let mut size = 0usize;
        let got = libc::pthread_attr_getstack(&attr, &mut low, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if got != 0 || libc::getpid() == libc::gettid() {
            // The main thread's stack grows on demand; leave it be.
            return;
        }
        let here = &attr as *const libc::pthread_attr_t as usize;
        let low = low as usize;
        let high = (here.saturating_sub(2 * PAGE)) & !(PAGE - 1);
        if high > low && here < low + size {
            libc::madvise(low as *mut libc::c_void, high - low, libc::MADV_DONTNEED);
        }
    }
}
