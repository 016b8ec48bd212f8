//! Large message buffers kept for the next message, so that a server busy
//! with images reads each one into memory that is already mapped.
//!
//! Why: a fast-mode image is read on its connection's thread and freed on
//! the statistics pool's once computed. glibc then finds more than its trim
//! threshold (twice the largest block it has seen) free at the top of the
//! connection's arena and hands it back to the kernel, and the next image
//! faults those pages in again and has them zeroed: 17 faults per
//! 480,000-byte image on average, and ours used 15% more server CPU than
//! tokio's on serial fast (#17). Recycled here, it is ~0.4 faults per image.
//!
//! Bounded: at most [`KEPT`] buffers of [`MIN`] to [`MAX`] bytes each, so
//! what a burst of large messages leaves behind stays resident but small
//! (≤ 16 MiB). Smaller messages come from malloc's bins as before, larger
//! ones are mapped and unmapped by it.

use std::sync::Mutex;

/// Below this, malloc serves a message from its free lists without a trip
/// to the kernel anyway.
pub const MIN: usize = 64 * 1024;
/// Above this, a buffer is not worth keeping resident for a message that
/// may never come.
pub const MAX: usize = 4 * 1024 * 1024;
/// Enough for the pool's jobs to hand back while the next images arrive.
pub const KEPT: usize = 4;

static FREE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn free() -> std::sync::MutexGuard<'static, Vec<Vec<u8>>> {
    FREE.lock().unwrap_or_else(|p| p.into_inner())
}

/// An empty buffer with room for `len` bytes: a kept one if one fits (the
/// smallest that does), else a fresh allocation.
pub fn take(len: usize) -> Vec<u8> {
    if (MIN..=MAX).contains(&len) {
        let mut free = free();
        let fits = free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        if let Some(i) = fits {
            return free.swap_remove(i);
        }
    }
    Vec::with_capacity(len)
}

/// Keeps `buf` for a later [`take`] if it is large enough to matter and
/// there is room; otherwise it is freed.
pub fn give(mut buf: Vec<u8>) {
    if !(MIN..=MAX).contains(&buf.capacity()) {
        return;
    }
    buf.clear();
    let mut free = free();
    if free.len() < KEPT {
        free.push(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the list is process-wide, and parallel tests would see
    // each other's buffers.
    #[test]
    fn keeps_a_bounded_number_of_large_buffers_and_hands_back_the_smallest_fit() {
        free().clear();
        let big = Vec::<u8>::with_capacity(MAX);
        let mid = Vec::<u8>::with_capacity(480_000);
        let (big_ptr, mid_ptr) = (big.as_ptr(), mid.as_ptr());
        give(big);
        give(mid);
        // Too small or too large to keep.
        give(Vec::with_capacity(MIN - 1));
        give(Vec::with_capacity(MAX + 1));
        assert_eq!(free().len(), 2);

        let got = take(400_000);
        assert_eq!(got.as_ptr(), mid_ptr, "the smallest that fits");
        assert!(got.is_empty());
        let got = take(1_000_000);
        assert_eq!(got.as_ptr(), big_ptr);
        assert!(free().is_empty());

        // A miss allocates; a small request never looks.
        assert!(take(480_000).capacity() >= 480_000);
        give(vec![7; MIN]);
        assert_eq!(take(100).capacity(), 100);
        assert_eq!(free().len(), 1);
        let kept = take(MIN);
        assert!(kept.is_empty(), "cleared before it was kept");

        for _ in 0..KEPT + 3 {
            give(Vec::with_capacity(MIN));
        }
        assert_eq!(free().len(), KEPT);
        free().clear();
    }
}
