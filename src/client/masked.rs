//! Client data frames written by hand: the header and the payload, masked
//! while copied, into a reused per-thread buffer, out in one `write`.
//!
//! tungstenite builds a client frame by copying the whole payload after
//! the header and then masking it in place: two passes over a 480 KB image,
//! which `bench` paid on every message (copy and mask were a quarter of its
//! time, #3). Masking while copying is one pass. The frame goes out in one
//! write because the size of the writes sets the pace of the transfer:
//! serial 480 KB images, interleaved, 5 runs each, medians: 16 KiB writes
//! 2,490/s, 64 KiB 3,712/s, 256 KiB 4,427/s, one write 4,766/s. Payloads
//! over [`CHUNK`] go in several writes, so the buffer stays bounded.

use std::cell::RefCell;
use std::io::{self, Write};

pub use crate::wire::BINARY;
use crate::wire::{client_header, mask_into};

/// Most payload bytes masked and written per `write` call.
pub const CHUNK: usize = 4 << 20;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Writes one unfragmented, masked data frame with a fresh random mask.
/// `write_all` retries writes a signal interrupted, so nothing is sent
/// twice or lost.
pub fn send(stream: &mut impl Write, opcode: u8, payload: &[u8]) -> io::Result<()> {
    let mask = random_mask();
    let (header, size) = client_header(opcode, payload.len(), mask);
    let header = &header[..size];
    SCRATCH.with_borrow_mut(|out| {
        // The buffer only ever grows, so its zero-fill is paid once per
        // thread, not per frame.
        let first = payload.len().min(CHUNK);
        if out.len() < header.len() + first {
            out.resize(header.len() + first, 0);
        }
        out[..header.len()].copy_from_slice(header);
        // Chunks are multiples of 4, so every chunk starts at mask phase 0.
        let mut chunks = payload.chunks(CHUNK);
        let head = chunks.next().unwrap_or_default();
        mask_into(
            &mut out[header.len()..header.len() + head.len()],
            head,
            mask,
        );
        stream.write_all(&out[..header.len() + head.len()])?;
        for part in chunks {
            mask_into(&mut out[..part.len()], part, mask);
            stream.write_all(&out[..part.len()])?;
        }
        stream.flush()
    })
}

/// Builds a whole masked frame, with a fresh random mask, into `out`, for
/// a caller that wants it ready before its turn to write (`bench` masks
/// the next image while the server works on this one). Reusing `out` for
/// frames of one size costs no zero-fill after the first.
pub fn encode(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    let mask = random_mask();
    let (header, size) = client_header(opcode, payload.len(), mask);
    out.resize(size + payload.len(), 0);
    out[..size].copy_from_slice(&header[..size]);
    mask_into(&mut out[size..], payload, mask);
}

/// RFC 6455 5.3 asks for an unpredictable mask per frame: the kernel's
/// generator, falling back to the clock only if it is unavailable.
fn random_mask() -> [u8; 4] {
    let mut mask = [0u8; 4];
    let mut n = -1;
    // A signal can interrupt the call before any byte is written; four
    // bytes never come back short otherwise (getrandom(2)).
    for _ in 0..3 {
        // SAFETY: getrandom(2) writes at most `mask.len()` bytes into `mask`.
        n = unsafe { libc::getrandom(mask.as_mut_ptr().cast(), mask.len(), 0) };
        if n == mask.len() as isize {
            break;
        }
    }
    if n != mask.len() as isize {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        mask = nanos.to_ne_bytes();
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use tungstenite::protocol::Role;
    use tungstenite::{Message, WebSocket};

    /// What tungstenite's server side reads is what we sent, for every
    /// length encoding and chunk boundary.
    #[test]
    fn tungstenite_reads_our_frames() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let lens = [0, 1, 7, 125, 126, 65_535, 65_536, 480_000, CHUNK + 3];
        let sender = std::thread::spawn(move || {
            let mut frame = Vec::new();
            for (i, len) in lens.into_iter().enumerate() {
                let payload = crate::stats::random_image(len, i as u64);
                send(&mut client, BINARY, &payload).unwrap();
                encode(BINARY, &payload, &mut frame);
                client.write_all(&frame).unwrap();
            }
            client
        });
        let mut ws = WebSocket::from_raw_socket(server, Role::Server, None);
        for (i, len) in lens.into_iter().enumerate() {
            let want = Message::Binary(crate::stats::random_image(len, i as u64).into());
            assert_eq!(ws.read().unwrap(), want, "send, {len}");
            assert_eq!(ws.read().unwrap(), want, "encode, {len}");
        }
        drop(sender.join());
    }

    #[test]
    fn masks_differ_between_frames() {
        let masks: std::collections::HashSet<[u8; 4]> = (0..64).map(|_| random_mask()).collect();
        assert!(masks.len() > 60, "{}", masks.len());
    }
}
