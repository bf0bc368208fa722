//! A read-ahead buffer that exists only while data is flowing.
//!
//! tungstenite allocates its read buffer per connection up front, and that
//! buffer dominates the memory of an idle tunnel. A small tungstenite
//! buffer saves memory but turns a bulk transfer into many small socket
//! reads. [`ReadAhead`] sits between the socket and tungstenite: small
//! reads are served from a large buffer filled by one socket read, and the
//! buffer is freed as soon as the socket has nothing more to give, so an
//! idle tunnel holds none.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Buffers of the standard size kept for reuse across tunnels, at most this
/// many: taking and giving back one per burst costs no allocation and no
/// zeroing, and idle tunnels still hold nothing.
const POOL_MAX: usize = 64;

static POOL: std::sync::Mutex<Vec<Box<[u8]>>> = std::sync::Mutex::new(Vec::new());

fn take_buffer(size: usize) -> Box<[u8]> {
    if size == crate::READ_AHEAD
        && let Some(b) = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop()
    {
        return b;
    }
    vec![0; size].into_boxed_slice()
}

fn give_back(buf: Box<[u8]>) {
    if buf.len() == crate::READ_AHEAD {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(buf);
        }
    }
}

/// Reads from `inner` in chunks of `chunk` bytes while it is busy; holds no
/// buffer while it is idle. Writes pass straight through.
pub struct ReadAhead<S> {
    inner: S,
    chunk: usize,
    /// Held only while data flows (initialized once, reused without zeroing).
    buf: Option<Box<[u8]>>,
    /// Bytes `pos..end` of `buf` are read and not yet handed out.
    pos: usize,
    end: usize,
}

impl<S> ReadAhead<S> {
    /// Wraps `inner`, reading `chunk` bytes at a time.
    pub fn new(inner: S, chunk: usize) -> Self {
        ReadAhead { inner, chunk, buf: None, pos: 0, end: 0 }
    }

    /// Bytes of buffer currently held (0 when idle).
    pub fn buffered_capacity(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.len())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(buf) = &this.buf
            && this.pos < this.end
        {
            let n = out.remaining().min(this.end - this.pos);
            out.put_slice(&buf[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        // A caller with a big buffer of its own gets the bytes directly.
        if out.remaining() >= this.chunk {
            this.release();
            return Pin::new(&mut this.inner).poll_read(cx, out);
        }
        let chunk = this.chunk;
        let buf = this.buf.get_or_insert_with(|| take_buffer(chunk));
        let mut fill = ReadBuf::new(buf);
        match Pin::new(&mut this.inner).poll_read(cx, &mut fill) {
            Poll::Pending => {
                // Nothing more right now: the tunnel is idle, give the
                // memory back.
                this.release();
                Poll::Pending
            }
            Poll::Ready(Err(e)) => {
                this.release();
                Poll::Ready(Err(e))
            }
            Poll::Ready(Ok(())) => {
                let n = fill.filled().len();
                if n == 0 {
                    this.release();
                    return Poll::Ready(Ok(()));
                }
                let take = out.remaining().min(n);
                if let Some(buf) = &this.buf {
                    out.put_slice(&buf[..take]);
                }
                this.pos = take;
                this.end = n;
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl<S> ReadAhead<S> {
    fn release(&mut self) {
        if let Some(b) = self.buf.take() {
            give_back(b);
        }
        self.pos = 0;
        self.end = 0;
    }
}

impl<S> Drop for ReadAhead<S> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(Pin::new(&mut self.get_mut().inner).poll_shutdown(cx))?;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_reads_are_served_from_one_big_read_and_the_buffer_goes_when_idle() {
        let (mut a, b) = tokio::io::duplex(1 << 20);
        let mut r = ReadAhead::new(b, 64 * 1024);
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        a.write_all(&data).await.unwrap();
        let mut got = Vec::new();
        let mut small = [0u8; 4096];
        while got.len() < data.len() {
            let n = r.read(&mut small).await.unwrap();
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, data);
        // Nothing left to read: the next read is pending and frees the buffer.
        let pending = tokio::time::timeout(std::time::Duration::from_millis(50), r.read(&mut small)).await;
        assert!(pending.is_err());
        assert_eq!(r.buffered_capacity(), 0);
        drop(a);
        assert_eq!(r.read(&mut small).await.unwrap(), 0);
    }
}
