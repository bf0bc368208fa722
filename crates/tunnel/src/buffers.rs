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
use std::thread::LocalKey;

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

/// A kept buffer: this thread's first, then any thread's.
fn take<T: 'static>(local: &'static LocalKey<RefCell<Vec<T>>>, all: &Mutex<Vec<T>>) -> Option<T> {
    local.with(|p| p.borrow_mut().pop()).or_else(|| shared(all).pop())
}

/// Keeps `buf` in this thread's pool, or the shared one, or frees it.
fn keep<T: 'static>(local: &'static LocalKey<RefCell<Vec<T>>>, all: &Mutex<Vec<T>>, buf: T) {
    let overflow = local.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < KEEP {
            p.push(buf);
            None
        } else {
            Some(buf)
        }
    });
    if let Some(buf) = overflow {
        let mut pool = shared(all);
        if pool.len() < KEEP_SHARED {
            pool.push(buf);
        }
    }
}

/// A zeroed (or reused) read buffer of [`READ_BUFFER`] bytes.
pub fn take_read() -> Box<[u8]> {
    take(&READS, &SHARED_READS).unwrap_or_else(|| vec![0; READ_BUFFER].into_boxed_slice())
}

/// Keeps `buf` for the next [`take_read`], on this thread or any, or frees it.
pub fn give_read(buf: Box<[u8]>) {
    if buf.len() == READ_BUFFER {
        keep(&READS, &SHARED_READS, buf);
    }
}

/// An empty write buffer with room for [`WRITE_BUFFER`] bytes.
pub fn take_write() -> Vec<u8> {
    take(&WRITES, &SHARED_WRITES).unwrap_or_else(|| Vec::with_capacity(WRITE_BUFFER))
}

/// Keeps `buf` (emptied) for the next [`take_write`], on this thread or
/// any, or frees it when it grew beyond the usual size.
pub fn give_write(mut buf: Vec<u8>) {
    if buf.capacity() >= WRITE_BUFFER && buf.capacity() <= 2 * WRITE_BUFFER {
        buf.clear();
        keep(&WRITES, &SHARED_WRITES, buf);
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
        // Pools of the test's own, so that other tests' buffers do not
        // come and go in them.
        thread_local! {
            static LOCAL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
        }
        static ALL: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());
        // This thread's pool full, the next one goes to the shared pool;
        // another thread, whose own pool is empty, takes it.
        for _ in 0..KEEP {
            keep(&LOCAL, &ALL, vec![0u8; 8].into_boxed_slice());
        }
        let extra = vec![1u8; 8].into_boxed_slice();
        let at = extra.as_ptr() as usize;
        keep(&LOCAL, &ALL, extra);
        let taken = std::thread::spawn(|| take(&LOCAL, &ALL).map(|b| b.as_ptr() as usize)).join().unwrap();
        assert_eq!(taken, Some(at), "the other thread did not get the given-back buffer");
        assert_eq!(take(&LOCAL, &ALL).map(|b| b[0]), Some(0), "this thread's own come first");
    }
}
