//! Socket buffers that exist only while a tunnel is busy.
//!
//! An idle tunnel should cost little memory (100,000 of them on one relay),
//! yet a busy one should read and write its socket in big chunks. The
//! WebSocket framing ([`crate::ws`]) takes a read buffer and a write buffer
//! when data starts flowing and gives them back as soon as the socket has
//! nothing more to give and nothing is left to send. Given-back buffers are
//! kept for reuse, a few per thread: taking one on every request costs no
//! allocation and no zeroing, and idle tunnels still hold none.

use std::cell::RefCell;

/// Bytes of one read buffer: the largest socket read a busy tunnel makes.
pub const READ_BUFFER: usize = crate::READ_AHEAD;

/// Capacity a write buffer starts with: a full data frame and its header.
pub const WRITE_BUFFER: usize = 64 * 1024 + 64;

/// Buffers of each kind kept for reuse per thread.
const KEEP: usize = 32;

thread_local! {
    static READS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
    static WRITES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A zeroed (or reused) read buffer of [`READ_BUFFER`] bytes.
pub fn take_read() -> Box<[u8]> {
    READS.with(|p| p.borrow_mut().pop()).unwrap_or_else(|| vec![0; READ_BUFFER].into_boxed_slice())
}

/// Keeps `buf` for the next [`take_read`] on this thread, or frees it.
pub fn give_read(buf: Box<[u8]>) {
    if buf.len() == READ_BUFFER {
        READS.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < KEEP {
                p.push(buf);
            }
        });
    }
}

/// An empty write buffer with room for [`WRITE_BUFFER`] bytes.
pub fn take_write() -> Vec<u8> {
    WRITES.with(|p| p.borrow_mut().pop()).unwrap_or_else(|| Vec::with_capacity(WRITE_BUFFER))
}

/// Keeps `buf` (emptied) for the next [`take_write`] on this thread, or
/// frees it when it grew beyond the usual size.
pub fn give_write(mut buf: Vec<u8>) {
    if buf.capacity() >= WRITE_BUFFER && buf.capacity() <= 2 * WRITE_BUFFER {
        buf.clear();
        WRITES.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < KEEP {
                p.push(buf);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_given_back_are_taken_again_and_odd_ones_are_dropped() {
        let mut r = take_read();
        r[0] = 7;
        let at = r.as_ptr();
        give_read(r);
        let again = take_read();
        assert_eq!(again.as_ptr(), at);
        assert_eq!(again.len(), READ_BUFFER);
        give_read(vec![0; 10].into_boxed_slice());
        assert_eq!(take_read().len(), READ_BUFFER);

        let mut w = take_write();
        w.extend_from_slice(b"abc");
        let at = w.as_ptr();
        give_write(w);
        let again = take_write();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), at);
        give_write(Vec::with_capacity(16));
        assert!(take_write().capacity() >= WRITE_BUFFER);
    }
}
