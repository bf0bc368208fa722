//! Socket buffers that exist only while a tunnel is busy.
//!
//! An idle tunnel should cost little memory (100,000 of them on one relay),
//! yet a busy one should read and write its socket in big chunks. The
//! WebSocket framing ([`crate::ws`]) takes a read buffer and a write buffer
//! when data starts flowing and gives them back as soon as the socket has
//! nothing more to give and nothing is left to send. Given-back buffers are
//! kept for reuse, a few per thread and more for all threads: taking one
//! on every request costs no allocation and no zeroing, and idle tunnels
//! still hold none.

use std::cell::RefCell;
use std::sync::Mutex;

/// Bytes of one read buffer: the largest socket read a busy tunnel makes.
pub const READ_BUFFER: usize = crate::READ_AHEAD;

/// Capacity a write buffer starts with: a full data frame and its header.
pub const WRITE_BUFFER: usize = 64 * 1024 + 64;

/// Buffers of each kind kept for reuse per thread.
const KEEP: usize = 32;

/// Buffers of each kind kept for all threads, beyond each thread's own:
/// a buffer is often taken on one thread and given back on another (a
/// tunnel stream's received bytes are filled by the session's task and
/// read by the stream's), and without this the taking thread would
/// allocate (and zero) a new one every time.
const KEEP_SHARED: usize = 128;

thread_local! {
    static READS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
    static WRITES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

static SHARED_READS: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());
static SHARED_WRITES: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn shared<T>(pool: &Mutex<Vec<T>>) -> std::sync::MutexGuard<'_, Vec<T>> {
    pool.lock().unwrap_or_else(|e| e.into_inner())
}

/// A zeroed (or reused) read buffer of [`READ_BUFFER`] bytes.
pub fn take_read() -> Box<[u8]> {
    READS
        .with(|p| p.borrow_mut().pop())
        .or_else(|| shared(&SHARED_READS).pop())
        .unwrap_or_else(|| vec![0; READ_BUFFER].into_boxed_slice())
}

/// Keeps `buf` for the next [`take_read`], on this thread or any, or frees it.
pub fn give_read(buf: Box<[u8]>) {
    if buf.len() != READ_BUFFER {
        return;
    }
    let overflow = READS.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < KEEP {
            p.push(buf);
            None
        } else {
            Some(buf)
        }
    });
    if let Some(buf) = overflow {
        let mut pool = shared(&SHARED_READS);
        if pool.len() < KEEP_SHARED {
            pool.push(buf);
        }
    }
}

/// An empty write buffer with room for [`WRITE_BUFFER`] bytes.
pub fn take_write() -> Vec<u8> {
    WRITES
        .with(|p| p.borrow_mut().pop())
        .or_else(|| shared(&SHARED_WRITES).pop())
        .unwrap_or_else(|| Vec::with_capacity(WRITE_BUFFER))
}

/// Keeps `buf` (emptied) for the next [`take_write`], on this thread or
/// any, or frees it when it grew beyond the usual size.
pub fn give_write(mut buf: Vec<u8>) {
    if buf.capacity() < WRITE_BUFFER || buf.capacity() > 2 * WRITE_BUFFER {
        return;
    }
    buf.clear();
    let overflow = WRITES.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < KEEP {
            p.push(buf);
            None
        } else {
            Some(buf)
        }
    });
    if let Some(buf) = overflow {
        let mut pool = shared(&SHARED_WRITES);
        if pool.len() < KEEP_SHARED {
            pool.push(buf);
        }
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

    #[test]
    fn buffers_given_back_on_another_thread_are_taken_again() {
        // This thread's own pool full, the next one goes to the shared
        // pool; another thread (with an empty pool of its own) takes it.
        let mine: Vec<_> = (0..KEEP).map(|_| take_read()).collect();
        for b in mine {
            give_read(b);
        }
        let extra = vec![0u8; READ_BUFFER].into_boxed_slice();
        let at = extra.as_ptr() as usize;
        give_read(extra);
        let taken: Vec<usize> = std::thread::spawn(|| {
            // Held until all are taken (one given back would come again).
            let held: Vec<Box<[u8]>> = (0..KEEP_SHARED).map(|_| take_read()).collect();
            held.iter().map(|b| b.as_ptr() as usize).collect()
        })
        .join()
        .unwrap();
        assert!(taken.contains(&at), "the other thread allocated instead of reusing");
    }
}
