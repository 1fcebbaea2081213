//! An in-memory [`Transport`]: the peer's bytes are given up front, read back in pieces
//! of a chosen size and then end of stream; what the server writes is collected (up to
//! a cap) for the caller to check. No socket: options and timeouts do nothing
//! ([`SocketRef::none`]). For fuzzing and testing the front ends without the network.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};

use crate::stream::{SocketRef, Transport, WriteMore};

/// One end of an in-memory connection (see the module docs).
#[derive(Debug)]
pub struct MemoryStream {
    input: Vec<u8>,
    pos: usize,
    /// Bytes per piece (`0`: the whole input is one piece).
    piece: usize,
    /// Between two pieces, the next read returns `Pending` once (its waker woken), so
    /// other tasks run between pieces as they would between packets.
    pause: bool,
    peer: Option<SocketAddr>,
    /// After the input, the peer stays connected this long before its end of stream
    /// (an HTTP/2 client waits for its answers: h2 ends every stream at the end of
    /// stream).
    linger: Option<Duration>,
    lingering: Option<glommio::timer::Timer>,
    written: Written,
}

/// What the server wrote to a [`MemoryStream`], shared with whoever created it.
#[derive(Debug, Clone, Default)]
pub struct Written(Rc<RefCell<WrittenState>>);

#[derive(Debug, Default)]
struct WrittenState {
    bytes: Vec<u8>,
    /// Bytes written in all, including those past `cap`.
    total: u64,
    cap: usize,
    closed: bool,
    /// Each write's length and whether it said more follows (`poll_write_more`): the
    /// first [`SENDS_RECORDED_MAX`].
    sends: Vec<(usize, bool)>,
}

/// Writes a stream records the kind of (a fuzzed connection may write without end).
const SENDS_RECORDED_MAX: usize = 4096;

impl Written {
    /// The first bytes written, at most the stream's `keep` bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.borrow().bytes.clone()
    }

    /// Bytes written in all (including those not kept).
    pub fn total(&self) -> u64 {
        self.0.borrow().total
    }

    /// Whether the server closed its side (`poll_close`).
    pub fn closed(&self) -> bool {
        self.0.borrow().closed
    }

    /// Each write's length and whether it told the stream more follows at once (the
    /// first 4,096 writes).
    pub fn sends(&self) -> Vec<(usize, bool)> {
        self.0.borrow().sends.clone()
    }

    fn write(&self, buf: &[u8], more: bool) -> io::Result<usize> {
        let mut w = self.0.borrow_mut();
        if w.closed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let room = w.cap.saturating_sub(w.bytes.len());
        w.bytes.extend_from_slice(&buf[..buf.len().min(room)]);
        w.total += buf.len() as u64;
        if w.sends.len() < SENDS_RECORDED_MAX {
            w.sends.push((buf.len(), more));
        }
        Ok(buf.len())
    }
}

impl MemoryStream {
    /// A stream whose peer sends `input` in pieces of `piece` bytes (`0`: one piece),
    /// then ends. Of what is written, the first `keep` bytes are kept.
    pub fn new(input: Vec<u8>, piece: usize, keep: usize) -> MemoryStream {
        MemoryStream {
            input,
            pos: 0,
            piece,
            pause: false,
            peer: None,
            linger: None,
            lingering: None,
            written: Written(Rc::new(RefCell::new(WrittenState {
                cap: keep,
                ..WrittenState::default()
            }))),
        }
    }

    /// The peer address `tcp().peer_addr()` reports (none by default).
    pub fn with_peer(mut self, peer: SocketAddr) -> MemoryStream {
        self.peer = Some(peer);
        self
    }

    /// The peer's end of stream comes `linger` after its last byte.
    pub fn with_linger(mut self, linger: Duration) -> MemoryStream {
        self.linger = Some(linger);
        self
    }

    /// A handle on what the server writes, valid after the stream is dropped.
    pub fn written(&self) -> Written {
        self.written.clone()
    }
}

impl AsyncRead for MemoryStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pos == this.input.len() {
            if let Some(linger) = this.linger {
                let timer = this
                    .lingering
                    .get_or_insert_with(|| glommio::timer::Timer::new(linger));
                if Pin::new(timer).poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.linger = None;
            }
            return Poll::Ready(Ok(0));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.pause {
            this.pause = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let piece_end = match this.piece {
            0 => this.input.len(),
            piece => (this.pos / piece + 1) * piece,
        };
        let n = buf.len().min(piece_end.min(this.input.len()) - this.pos);
        buf[..n].copy_from_slice(&this.input[this.pos..this.pos + n]);
        this.pos += n;
        this.pause = this.pos == piece_end;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for MemoryStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.written.write(buf, false))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.written.0.borrow_mut().closed = true;
        Poll::Ready(Ok(()))
    }
}

impl Transport for MemoryStream {
    fn tcp(&self) -> SocketRef<'_> {
        SocketRef::none(self.peer)
    }
}

/// Recorded as such (`Written::sends`), so tests can check who says more follows.
impl WriteMore for MemoryStream {
    fn poll_write_more(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.written.write(buf, true))
    }
}

#[cfg(test)]
mod tests {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn reads_in_pieces_then_ends_and_collects_writes() {
        glommio::LocalExecutor::default().run(async {
            let input: Vec<u8> = (0..10).collect();
            let mut stream =
                MemoryStream::new(input.clone(), 4, 3).with_peer("127.0.0.1:9".parse().unwrap());
            let written = stream.written();
            let tcp = stream.tcp();
            assert!(tcp
                .set_read_timeout(Some(std::time::Duration::ZERO))
                .is_ok());
            assert!(tcp.set_nodelay(true).is_ok() && tcp.reset_on_close().is_ok());
            assert_eq!(tcp.peer_addr().unwrap().port(), 9);
            let mut buf = [0u8; 16];
            let mut reads = Vec::new();
            loop {
                match stream.read(&mut buf).await.unwrap() {
                    0 => break,
                    n => reads.push(buf[..n].to_vec()),
                }
            }
            assert_eq!(reads, [&input[..4], &input[4..8], &input[8..]]);
            stream.write_all(b"hello").await.unwrap();
            stream.close().await.unwrap();
            assert!(stream.write(b"x").await.is_err());
            assert_eq!((written.bytes(), written.total()), (b"hel".to_vec(), 5));
            assert!(written.closed());
        });
    }

    #[test]
    fn without_a_peer_there_is_no_peer_address() {
        let stream = MemoryStream::new(Vec::new(), 0, 0);
        let err = stream.tcp().peer_addr().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotConnected);
    }
}
