//! Read buffers lent to connections only while bytes are in them.
//!
//! A connection waiting for its next request holds no read buffer: it waits with
//! [`read_pooled`], which lends a buffer for each poll of the socket and takes it back
//! when nothing has arrived (`AsyncRead::poll_read` never keeps the buffer across
//! `Pending`; glommio polls the socket for readiness and then reads). So 10,000 idle
//! connections cost their sockets and tasks, not 10,000 × 80 KiB of buffers. An OAP/1
//! connection part way through a frame, or with uploads waiting for data, waits the
//! same way (`transfer::read_pooled`): it held a buffer for its whole transfer deadline.
//!
//! One pool per shard and buffer size (`Rc`, no locks). Buffers come back on drop; the
//! pool keeps at most `free_max` of them and frees the rest, so its memory is bounded by
//! the busiest moment's need, capped.
//!
//! HTTP write buffers (a response's head, a small body the socket did not take) are lent
//! the same way ([`WriteBufferPool`]): a connection gives its buffer back when it starts
//! waiting for its next request and takes one when that request arrives, so an answer
//! neither holds memory while idle nor allocates and grows a fresh buffer (a `malloc`
//! and a `realloc` per header line, 2–3 % of a shard's core at 4 KiB GETs).

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use bytes::BytesMut;
use futures_lite::AsyncRead;

/// Fixed-size buffers for one kind of connection read.
#[derive(Debug)]
pub struct BufferPool {
    buffer_bytes: usize,
    free: RefCell<Vec<Box<[u8]>>>,
    free_max: usize,
}

impl BufferPool {
    pub fn new(buffer_bytes: usize, free_max: usize) -> Rc<BufferPool> {
        Rc::new(BufferPool {
            buffer_bytes,
            free: RefCell::new(Vec::new()),
            free_max,
        })
    }

    /// A buffer of `buffer_bytes`, reused when one is free (its old bytes are not
    /// cleared: callers track what they filled).
    pub fn take(self: &Rc<Self>) -> PooledBuffer {
        let buffer = self
            .free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| vec![0; self.buffer_bytes].into_boxed_slice());
        PooledBuffer {
            buffer: Some(buffer),
            pool: Rc::clone(self),
        }
    }

    /// The size of the buffers it lends.
    pub fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }

    /// Buffers kept for reuse.
    pub fn free_count(&self) -> usize {
        self.free.borrow().len()
    }

    fn give_back(&self, buffer: Box<[u8]>) {
        let mut free = self.free.borrow_mut();
        if free.len() < self.free_max {
            free.push(buffer);
        }
    }
}

/// A buffer lent by a [`BufferPool`], returned to it on drop.
#[derive(Debug)]
pub struct PooledBuffer {
    buffer: Option<Box<[u8]>>,
    pool: Rc<BufferPool>,
}

impl Deref for PooledBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buffer.as_deref().unwrap_or(&[])
    }
}

impl DerefMut for PooledBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.buffer.as_deref_mut().unwrap_or(&mut [])
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            self.pool.give_back(buffer);
        }
    }
}

/// A write buffer's capacity when the pool makes one: a response head with room to
/// spare.
pub const WRITE_BUFFER_BYTES: usize = 1024;

/// The largest write buffer the pool keeps: one that grew past it (a TLS record, a body
/// the socket would not take) is freed when given back.
pub const WRITE_BUFFER_KEPT_BYTES_MAX: usize = 32 * 1024;

/// Write buffers lent to HTTP connections while they answer.
#[derive(Debug)]
pub struct WriteBufferPool {
    free: RefCell<Vec<BytesMut>>,
    free_max: usize,
}

impl WriteBufferPool {
    pub fn new(free_max: usize) -> Rc<WriteBufferPool> {
        Rc::new(WriteBufferPool {
            free: RefCell::new(Vec::new()),
            free_max,
        })
    }

    /// An empty buffer with room for at least [`WRITE_BUFFER_BYTES`].
    pub fn take(&self) -> BytesMut {
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(WRITE_BUFFER_BYTES))
    }

    /// Takes `buffer` back for the next answer, emptied; frees it when the pool is full,
    /// it grew past [`WRITE_BUFFER_KEPT_BYTES_MAX`], or it cannot hold
    /// [`WRITE_BUFFER_BYTES`] without allocating (a connection's buffer before its first
    /// answer holds no memory at all: nothing to keep).
    pub fn give_back(&self, mut buffer: BytesMut) {
        buffer.clear();
        // Empty and not shared: takes back what was consumed from its front, no copy.
        let roomy = buffer.try_reclaim(WRITE_BUFFER_BYTES);
        let mut free = self.free.borrow_mut();
        if roomy && free.len() < self.free_max && buffer.capacity() <= WRITE_BUFFER_KEPT_BYTES_MAX {
            free.push(buffer);
        }
    }

    /// Buffers kept for reuse.
    pub fn free_count(&self) -> usize {
        self.free.borrow().len()
    }
}

/// Waits for bytes on `stream` without holding a buffer while nothing arrives; returns
/// the buffer that received them and how many (0 at end of stream).
pub async fn read_pooled<S: AsyncRead + Unpin>(
    stream: &mut S,
    pool: &Rc<BufferPool>,
) -> io::Result<(PooledBuffer, usize)> {
    poll_fn(|cx| {
        let mut buffer = pool.take();
        match Pin::new(&mut *stream).poll_read(cx, &mut buffer) {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok((buffer, n))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    /// A stream that is not ready on its first poll, then yields `data`.
    struct LateStream {
        polls: usize,
        data: &'static [u8],
    }

    impl AsyncRead for LateStream {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            self.polls += 1;
            if self.polls == 1 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = self.data.len().min(buf.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            Poll::Ready(Ok(n))
        }
    }

    #[test]
    fn a_waiting_read_holds_no_buffer_and_the_reader_gets_the_bytes() {
        let pool = BufferPool::new(16, 4);
        let mut stream = LateStream {
            polls: 0,
            data: b"GET / HTTP/1.1\r\n",
        };
        let (buffer, n) = block_on(read_pooled(&mut stream, &pool)).unwrap();
        assert_eq!(
            (&buffer[..n], stream.polls),
            (&b"GET / HTTP/1.1\r\n"[..], 2)
        );
        // The buffer lent to the pending poll came back and was lent again.
        assert_eq!(pool.free_count(), 0);
        drop(buffer);
        assert_eq!(pool.free_count(), 1);
    }

    #[test]
    fn a_write_buffer_given_back_is_lent_again_emptied_with_its_room() {
        let pool = WriteBufferPool::new(2);
        let mut first = pool.take();
        assert!(first.capacity() >= WRITE_BUFFER_BYTES);
        first.extend_from_slice(&[7; 600]);
        let _ = first.split_to(500); // what a partial send consumed from the front
        pool.give_back(first);
        let again = pool.take();
        assert!(again.is_empty());
        assert!(again.capacity() >= WRITE_BUFFER_BYTES);
        assert_eq!(pool.free_count(), 0);
        // A connection's buffer that never held memory is not kept (nor allocated).
        pool.give_back(BytesMut::new());
        assert_eq!(pool.free_count(), 0);
        // Grown past the bound: freed, not kept; and no more than free_max are kept.
        let mut grown = pool.take();
        grown.reserve(WRITE_BUFFER_KEPT_BYTES_MAX + 1);
        pool.give_back(grown);
        assert_eq!(pool.free_count(), 0);
        for _ in 0..3 {
            pool.give_back(BytesMut::with_capacity(WRITE_BUFFER_BYTES));
        }
        assert_eq!(pool.free_count(), 2);
        pool.give_back(again);
        assert_eq!(pool.free_count(), 2);
    }

    #[test]
    fn the_pool_keeps_at_most_free_max_buffers() {
        let pool = BufferPool::new(8, 2);
        let lent: Vec<_> = (0..5).map(|_| pool.take()).collect();
        assert!(lent.iter().all(|b| b.len() == 8));
        drop(lent);
        assert_eq!(pool.free_count(), 2);
    }
}
