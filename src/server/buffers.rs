//! Large message buffers kept for the next message, so that a server busy
//! with images reads each one into memory that is already mapped.
//!
//! Why: a fast-mode image is read on its connection's thread and freed on
//! the statistics pool's once computed. glibc then finds more than its trim
//! threshold (twice the largest block it has seen) free at the top of the
//! connection's arena and hands it back to the kernel, and the next image
//! faults those pages in again and has them zeroed: 17 faults per
//! 480,000-byte image with the server on one CPU, as `make compare` runs
//! it (2–3 unpinned), and ours used 15% more server CPU than tokio's on
//! serial fast (#17). Recycled here: under half a fault per image.
//!
//! Bounded: at most [`KEPT`] buffers of [`MIN`] to [`MAX`] bytes each, so
//! what a burst of large messages leaves behind stays resident but small
//! (≤ 16 MiB, given back only by the process's exit). A message gets a kept
//! buffer at most twice its size, so a small one never pins a large one.
//! Smaller messages come from malloc's bins as before, larger ones are
//! mapped and unmapped by it.

use std::sync::{Mutex, MutexGuard};

/// Below this, malloc serves a message from its free lists without a trip
/// to the kernel anyway.
pub const MIN: usize = 64 * 1024;
/// Above this, a buffer is not worth keeping resident for a message that
/// may never come.
pub const MAX: usize = 4 * 1024 * 1024;
/// Enough for the pool's jobs to hand back while the next images arrive.
pub const KEPT: usize = 4;

/// The server's buffers: one list for every connection.
static BUFFERS: Buffers = Buffers::new();

/// An empty buffer with room for `len` bytes (see [`Buffers::take`]).
pub fn take(len: usize) -> Vec<u8> {
    BUFFERS.take(len)
}

/// Keeps `buf` for a later [`take`] (see [`Buffers::give`]).
pub fn give(buf: Vec<u8>) {
    BUFFERS.give(buf)
}

pub struct Buffers {
    free: Mutex<Vec<Vec<u8>>>,
}

impl Default for Buffers {
    fn default() -> Buffers {
        Buffers::new()
    }
}

impl Buffers {
    pub const fn new() -> Buffers {
        Buffers {
            free: Mutex::new(Vec::new()),
        }
    }

    fn free(&self) -> MutexGuard<'_, Vec<Vec<u8>>> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An empty buffer with room for `len` bytes: the smallest kept one
    /// that fits and is at most twice `len`, else a fresh allocation.
    pub fn take(&self, len: usize) -> Vec<u8> {
        if (MIN..=MAX).contains(&len) {
            let mut free = self.free();
            let fits = free
                .iter()
                .enumerate()
                .filter(|(_, b)| (len..=2 * len).contains(&b.capacity()))
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            if let Some(i) = fits {
                return free.swap_remove(i);
            }
        }
        Vec::with_capacity(len)
    }

    /// Keeps `buf` for a later [`Buffers::take`] if it is large enough to
    /// matter and there is room; otherwise it is freed.
    pub fn give(&self, mut buf: Vec<u8>) {
        if !(MIN..=MAX).contains(&buf.capacity()) {
            return;
        }
        buf.clear();
        let mut free = self.free();
        if free.len() < KEPT {
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_bounded_number_of_large_buffers_and_hands_back_the_smallest_fit() {
        // A list of its own: the reader's tests take from the server's.
        let buffers = Buffers::new();
        let big = Vec::<u8>::with_capacity(MAX);
        let mid = Vec::<u8>::with_capacity(480_000);
        let (big_ptr, mid_ptr) = (big.as_ptr(), mid.as_ptr());
        buffers.give(big);
        buffers.give(mid);
        // Too small or too large to keep.
        buffers.give(Vec::with_capacity(MIN - 1));
        buffers.give(Vec::with_capacity(MAX + 1));
        assert_eq!(buffers.free().len(), 2);

        // 100,000 bytes would fit either, but both are over twice that.
        assert_eq!(buffers.take(100_000).capacity(), 100_000);
        let got = buffers.take(400_000);
        assert_eq!(got.as_ptr(), mid_ptr, "the smallest that fits");
        assert!(got.is_empty());
        let got = buffers.take(3_000_000);
        assert_eq!(got.as_ptr(), big_ptr);
        assert!(buffers.free().is_empty());

        // A miss allocates; a small request never looks.
        assert!(buffers.take(480_000).capacity() >= 480_000);
        buffers.give(vec![7; MIN]);
        assert_eq!(buffers.take(100).capacity(), 100);
        assert_eq!(buffers.free().len(), 1);
        let kept = buffers.take(MIN);
        assert!(kept.is_empty(), "cleared before it was kept");

        for _ in 0..KEPT + 3 {
            buffers.give(Vec::with_capacity(MIN));
        }
        assert_eq!(buffers.free().len(), KEPT);
    }
}
