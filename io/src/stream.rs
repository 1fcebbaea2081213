//! Connection streams: one trait over plain TCP, TLS-over-TCP and in-memory streams
//! (`crate::memory`), and a split into a read half and a write half for protocols that
//! read and write from two tasks.
//!
//! Both halves share the stream through an `Rc<RefCell<_>>`: a shard is one thread and
//! each `poll_*` call borrows the stream only for its own duration, so the two halves
//! never borrow it at once. A [`PolledTcp`] keeps separate wakers for the receive and the
//! send side of its socket, so a reader parked on the socket does not hide a writer parked
//! on it.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::readiness::{poll_io, poll_read_io, Direction, Readiness, Registration};
use crate::socket_calls;

/// A connection's byte stream: plain TCP, TLS over TCP, or an in-memory stream. `tcp`
/// reaches the socket underneath for timeouts and options.
pub trait Transport: AsyncRead + WriteMore + 'static {
    fn tcp(&self) -> SocketRef<'_>;

    /// The socket, when bytes written to it reach the peer as they are: plain TCP only
    /// (TLS encrypts in user space; an in-memory stream has no socket).
    fn plain_socket(&self) -> Option<PlainSocket<'_>> {
        None
    }
}

/// A writer that can tell the kernel more bytes follow at once (`MSG_MORE`): a TCP
/// socket then holds a short last segment back to fill it with them. With BBR pacing in
/// the socket (loopback, or any device without the fq qdisc) a short segment sent right
/// behind a full one waits on a pacing timer. The OAP/1 writer says so for every send
/// of a batch but the last (docs/PERF.md, "OAP/1 sends"). A writer that says more
/// follows must end with a plain write, or the bytes held back wait for the next one.
/// Writers with no socket write as `poll_write` does.
pub trait WriteMore: AsyncWrite + Unpin {
    fn poll_write_more(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write(cx, buf)
    }
}

/// A writer every write of which says more follows at once ([`WriteMore`]).
#[derive(Debug)]
pub struct MoreFollows<'a, W>(pub &'a mut W);

impl<W> MoreFollows<'_, W> {
    pub fn get_ref(&self) -> &W {
        self.0
    }
}

impl<W: WriteMore> AsyncWrite for MoreFollows<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write_more(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_close(cx)
    }
}

/// A plain TCP socket for the sends glommio 0.9 does not offer: `sendfile(2)` from a
/// file, and a send that tells the kernel more follows (`MSG_MORE`). Every call is
/// non-blocking and fails with `WouldBlock` when the socket is full; waiting for room is
/// the caller's (through the stream's own write, which waits for room).
#[derive(Debug, Clone, Copy)]
pub struct PlainSocket<'a>(BorrowedFd<'a>);

impl<'a> PlainSocket<'a> {
    fn of(tcp: &'a TcpStream) -> PlainSocket<'a> {
        #[allow(unsafe_code)]
        // SAFETY: the fd is the open socket `tcp` owns, and the borrow cannot outlive
        // `tcp` (lifetime 'a), so it stays open for as long as the `BorrowedFd` exists.
        let fd = unsafe { BorrowedFd::borrow_raw(tcp.as_raw_fd()) };
        PlainSocket(fd)
    }

    /// Makes the socket non-blocking: every read, write and `send_file` on it returns
    /// `WouldBlock` rather than blocking the shard.
    fn make_nonblocking(&self) -> io::Result<()> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let fd = self.0.as_raw_fd();
        let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
        fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        Ok(())
    }

    /// Sends up to `len` bytes of `file` from `offset` without copying them through
    /// user space (the socket takes references to the file's pages).
    pub fn send_file(&self, file: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<usize> {
        let mut offset = i64::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        Ok(nix::sys::sendfile::sendfile64(
            self.0,
            file,
            Some(&mut offset),
            len,
        )?)
    }

    /// Sends what of `head`, then `body`, fits now in one `sendmsg`: the kernel gathers
    /// both, so the body is never copied behind the head in user space.
    pub fn send_gathered(&self, head: &[u8], body: &[u8]) -> io::Result<usize> {
        let slices = [io::IoSlice::new(head), io::IoSlice::new(body)];
        socket_calls::send_slices(self.0, &slices, 0)
    }

    /// Holds short segments back (`TCP_CORK`) until [`PlainSocket::uncork`]: a body sent
    /// as several `sendfile` runs then leaves as full segments, not a short one (and,
    /// with pacing in the socket, a timer) at the end of every run.
    pub fn cork(&self) -> io::Result<()> {
        socket_calls::set_cork(self.0, true)
    }

    /// Sends what [`PlainSocket::cork`] held back.
    pub fn uncork(&self) -> io::Result<()> {
        socket_calls::set_cork(self.0, false)
    }

    /// The socket's congestion control: whether it paces its sends decides if a head
    /// may wait for a long body (`MSG_MORE`).
    pub fn congestion_control(&self) -> io::Result<socket_calls::CongestionControl> {
        socket_calls::congestion_control(self.0)
    }

    /// Sends what of `buf` fits now, telling the kernel more follows at once (the bytes
    /// wait to share a segment with the next send instead of leaving alone).
    pub fn send_more(&self, buf: &[u8]) -> io::Result<usize> {
        socket_calls::send(self.0, buf, libc::MSG_MORE)
    }
}

/// The TCP socket under a [`Transport`], or none (an in-memory stream): options and
/// timeouts apply to the socket; without one they are accepted and do nothing, and
/// `peer_addr` is the address the stream was given, if any.
#[derive(Debug, Clone, Copy)]
pub struct SocketRef<'a>(Socket<'a>);

#[derive(Debug, Clone, Copy)]
enum Socket<'a> {
    Polled(&'a PolledTcp),
    None {
        peer: Option<SocketAddr>,
    },
    /// A stream within a connection (an HTTP/2 stream): its timeouts are kept for the
    /// stream's own waits to enforce.
    Limited {
        peer: Option<SocketAddr>,
        limits: &'a WaitLimits,
    },
}

/// The wait limits of a stream that has no socket of its own (an HTTP/2 stream): what
/// [`SocketRef::set_read_timeout`] and [`SocketRef::set_write_timeout`] asked, read by
/// the stream's own reads and writes, which fail with `TimedOut` past them.
#[derive(Debug, Default)]
pub struct WaitLimits {
    timeouts: [Cell<Option<Duration>>; 2],
}

impl WaitLimits {
    /// How long a read may wait (`None`: for ever).
    pub fn read(&self) -> Option<Duration> {
        self.timeouts[Direction::Read.index()].get()
    }

    /// How long a write may wait (`None`: for ever).
    pub fn write(&self) -> Option<Duration> {
        self.timeouts[Direction::Write.index()].get()
    }
}

impl<'a> SocketRef<'a> {
    /// A stream with no socket; `peer` is what `peer_addr` reports.
    pub fn none(peer: Option<SocketAddr>) -> SocketRef<'static> {
        SocketRef(Socket::None { peer })
    }

    /// A stream within a connection whose waits `limits` bounds; `peer` is what
    /// `peer_addr` reports.
    pub fn limited(peer: Option<SocketAddr>, limits: &'a WaitLimits) -> SocketRef<'a> {
        SocketRef(Socket::Limited { peer, limits })
    }

    /// Reads wait at most `timeout`, then fail with `TimedOut` (`None`: for ever).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_timeout(Direction::Read, timeout)
    }

    /// Writes wait at most `timeout`, then fail with `TimedOut` (`None`: for ever).
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_timeout(Direction::Write, timeout)
    }

    fn set_timeout(&self, direction: Direction, timeout: Option<Duration>) -> io::Result<()> {
        match self.0 {
            Socket::Polled(polled) => polled.set_timeout(direction, timeout),
            Socket::Limited { limits, .. } => {
                limits.timeouts[direction.index()].set(timeout);
                Ok(())
            }
            Socket::None { .. } => Ok(()),
        }
    }

    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        match self.0 {
            Socket::Polled(polled) => Ok(polled.tcp.set_nodelay(nodelay)?),
            Socket::None { .. } | Socket::Limited { .. } => Ok(()),
        }
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self.0 {
            Socket::Polled(polled) => Ok(polled.tcp.peer_addr()?),
            Socket::None { peer } | Socket::Limited { peer, .. } => {
                peer.ok_or_else(|| io::ErrorKind::NotConnected.into())
            }
        }
    }

    /// Makes the socket's close send a TCP reset instead of a FIN (SO_LINGER with a zero
    /// timeout). For a response cut short after its head: a reset is what no client can
    /// mistake for the end of a complete body. Unsent bytes are discarded, never sent.
    pub fn reset_on_close(&self) -> io::Result<()> {
        match self.0 {
            Socket::Polled(polled) => {
                socket2::SockRef::from(&polled.tcp).set_linger(Some(Duration::ZERO))
            }
            Socket::None { .. } | Socket::Limited { .. } => Ok(()),
        }
    }
}

/// An accepted TCP connection whose waits go through its shard's epoll set
/// ([`crate::readiness`]) instead of an io_uring poll per wait: reads and writes are
/// plain non-blocking calls, and a socket that is empty (or full) is waited for by the
/// shard's pump. Timeouts bound each wait as glommio's do: a read or write that waits
/// longer than its timeout fails with `TimedOut`.
#[derive(Debug)]
pub struct PolledTcp {
    tcp: TcpStream,
    registration: Registration,
    /// How long a read's (write's) wait may last.
    timeouts: [Cell<Option<Duration>>; 2],
    /// Writes say more follows (`MSG_MORE`): set for the duration of a
    /// `poll_write_more`, through TLS too.
    more_follows: Cell<bool>,
    /// Under TLS ([`PolledTcp::read_by_deadline`]): when the read timeout last set runs
    /// out, counted from when it was set.
    read_until: Cell<Option<Instant>>,
    reads_by_deadline: Cell<bool>,
    /// Whether a read has brought a byte yet: a TLS handshake that fails before the
    /// client sent one was no TLS attempt (a port probe, a balancer's health check).
    received_any: std::rc::Rc<Cell<bool>>,
}

impl PolledTcp {
    /// Makes the socket non-blocking and registers it with this shard's epoll set. Must
    /// be called on the glommio thread that will use it.
    pub fn new(tcp: TcpStream) -> io::Result<PolledTcp> {
        let socket = PlainSocket::of(&tcp);
        socket.make_nonblocking()?;
        let registration = Readiness::of_this_thread()?.register(socket.0)?;
        Ok(PolledTcp {
            tcp,
            registration,
            timeouts: Default::default(),
            more_follows: Cell::new(false),
            read_until: Cell::new(None),
            reads_by_deadline: Cell::new(false),
            received_any: std::rc::Rc::default(),
        })
    }

    /// Whether the peer has sent a byte that a read took, as a flag that outlives the
    /// stream (a handshake that fails or times out drops the stream with it).
    pub fn received_any(&self) -> std::rc::Rc<Cell<bool>> {
        std::rc::Rc::clone(&self.received_any)
    }

    /// From now on a read timeout is a deadline: every wait of the reads after it ends
    /// by the time it was set plus the timeout, not that long after the wait began. For
    /// the socket under TLS, where one read of plaintext is a whole record, made of as
    /// many socket waits as the client splits it into: a record trickled a byte at a
    /// time would otherwise restart the timeout with each byte, and an idle or head
    /// timeout would hold for as long as the record has bytes.
    pub fn read_by_deadline(&self) {
        self.reads_by_deadline.set(true);
    }

    /// How long a wait in `direction` may last if it starts now.
    fn wait_limit(&self, direction: Direction) -> Option<Duration> {
        match (direction, self.read_until.get()) {
            (Direction::Read, Some(until)) => Some(
                until
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_micros(1)),
            ),
            _ => self.timeouts[direction.index()].get(),
        }
    }

    /// Polls a non-blocking call in `direction`: its result, or `Pending` with the
    /// waker left for the socket's next edge — unless the wait has outlasted its
    /// timeout (`TimedOut`).
    fn poll_call(
        &self,
        direction: Direction,
        cx: &mut Context<'_>,
        call: impl FnMut() -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        poll_io(
            &self.registration,
            direction,
            cx,
            self.wait_limit(direction),
            call,
        )
    }

    fn send_flags(&self) -> libc::c_int {
        match self.more_follows.get() {
            true => libc::MSG_MORE,
            false => 0,
        }
    }

    /// Sets the timeout of the waits in `direction` and ends the wait under way.
    fn set_timeout(&self, direction: Direction, timeout: Option<Duration>) -> io::Result<()> {
        if timeout == Some(Duration::ZERO) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a zero timeout would fail every wait",
            ));
        }
        self.timeouts[direction.index()].set(timeout);
        if direction == Direction::Read && self.reads_by_deadline.get() {
            self.read_until.set(timeout.map(|t| Instant::now() + t));
        }
        self.registration.end_wait(direction);
        Ok(())
    }
}

impl Transport for PolledTcp {
    fn tcp(&self) -> SocketRef<'_> {
        SocketRef(Socket::Polled(self))
    }

    fn plain_socket(&self) -> Option<PlainSocket<'_>> {
        Some(PlainSocket::of(&self.tcp))
    }
}

impl WriteMore for PolledTcp {
    fn poll_write_more(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        poll_write_saying_more(self.get_mut(), |tcp| tcp, cx, buf)
    }
}

impl Transport for futures_rustls::server::TlsStream<PolledTcp> {
    fn tcp(&self) -> SocketRef<'_> {
        self.get_ref().0.tcp()
    }
}

/// The records that a write of plaintext produces go out saying more follows (OAP/1
/// over TLS: +10 % at 1 MiB GETs, docs/PERF.md "OAP/1 sends").
impl WriteMore for futures_rustls::server::TlsStream<PolledTcp> {
    fn poll_write_more(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        poll_write_saying_more(self.get_mut(), |tls| tls.get_ref().0, cx, buf)
    }
}

/// `poll_write` on `stream`, the sends of whose socket (`socket` reaches it) say more
/// follows for the duration of the call.
fn poll_write_saying_more<W: AsyncWrite + Unpin>(
    stream: &mut W,
    socket: impl Fn(&W) -> &PolledTcp,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>> {
    socket(stream).more_follows.set(true);
    let written = Pin::new(&mut *stream).poll_write(cx, buf);
    socket(stream).more_follows.set(false);
    written
}

impl AsyncRead for PolledTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let socket = PlainSocket::of(&self.tcp).0;
        let timeout = self.wait_limit(Direction::Read);
        let room = buf.len();
        let read = poll_read_io(&self.registration, cx, timeout, room, || {
            socket_calls::recv(socket, buf)
        });
        if matches!(read, Poll::Ready(Ok(n)) if n > 0) {
            self.received_any.set(true);
        }
        read
    }
}

impl AsyncWrite for PolledTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let socket = PlainSocket::of(&self.tcp).0;
        let flags = self.send_flags();
        self.poll_call(Direction::Write, cx, || {
            socket_calls::send(socket, buf, flags)
        })
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let socket = PlainSocket::of(&self.tcp).0;
        let flags = self.send_flags();
        self.poll_call(Direction::Write, cx, || {
            socket_calls::send_slices(socket, bufs, flags)
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&self.tcp).shutdown(std::net::Shutdown::Write))
    }
}

/// The reading half of a split stream.
#[derive(Debug)]
pub struct ReadHalf<S>(Rc<RefCell<S>>);

/// The writing half of a split stream.
#[derive(Debug)]
pub struct WriteHalf<S>(Rc<RefCell<S>>);

/// Splits `stream` so that one task can read while another writes.
pub fn split<S>(stream: S) -> (ReadHalf<S>, WriteHalf<S>) {
    let shared = Rc::new(RefCell::new(stream));
    (ReadHalf(Rc::clone(&shared)), WriteHalf(shared))
}

impl<S: Transport> ReadHalf<S> {
    /// Sets the socket's read timeout (`None`: wait for ever).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) {
        // An error here means a zero duration, which callers never pass.
        let _ = self.0.borrow().tcp().set_read_timeout(timeout);
    }
}

impl<S: Transport> WriteHalf<S> {
    pub fn set_write_timeout(&self, timeout: Option<Duration>) {
        let _ = self.0.borrow().tcp().set_write_timeout(timeout);
    }
}

impl<S: Transport> WriteMore for WriteHalf<S> {
    fn poll_write_more(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write_more(cx, buf)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadHalf<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteHalf<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

/// `PolledTcp`'s waits on the shard's epoll set (`crate::readiness`), over real sockets.
#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use glommio::net::TcpListener;
    use std::time::Instant;

    /// Runs `test` on a glommio executor of its own, as a spawned task: glommio polls
    /// its main future on every round whether woken or not, which would hide a missing
    /// wake-up. The whole test must end well before a wait's 5 s bound (a waiter whose
    /// wake-up never came is woken by its timer, and finds its bytes then).
    fn on_executor<F, Fut>(test: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let started = Instant::now();
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(|| async move { glommio::spawn_local(test()).await })
            .unwrap()
            .join()
            .unwrap();
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "every wait ended by its wake-up: {took:?}"
        );
    }

    /// An accepted connection waiting through the epoll set, and its peer (a plain
    /// glommio socket).
    /// Its waits are bounded (5 s), so a wake-up that never comes fails the test
    /// rather than hangs it.
    async fn pair() -> (PolledTcp, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = glommio::spawn_local(async move { TcpStream::connect(addr).await.unwrap() });
        let polled = PolledTcp::new(listener.accept().await.unwrap()).unwrap();
        let bound = Some(Duration::from_secs(5));
        polled.tcp().set_read_timeout(bound).unwrap();
        polled.tcp().set_write_timeout(bound).unwrap();
        (polled, peer.await)
    }

    #[test]
    fn a_read_waits_for_bytes_then_times_out() {
        on_executor(|| async {
            let (mut polled, mut peer) = pair().await;
            let late = glommio::spawn_local(async move {
                glommio::timer::sleep(Duration::from_millis(20)).await;
                peer.write_all(b"ping").await.unwrap();
                peer
            });
            let mut buf = [0u8; 16];
            let n = polled.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"ping");
            let mut peer = late.await;
            polled
                .tcp()
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let started = Instant::now();
            let err = polled.read(&mut buf).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
            let waited = started.elapsed();
            assert!(waited >= Duration::from_millis(200), "{waited:?}");
            assert!(waited < Duration::from_secs(3), "{waited:?}");
            // A wait after a timeout gets a deadline of its own.
            let again = glommio::spawn_local(async move {
                glommio::timer::sleep(Duration::from_millis(100)).await;
                peer.write_all(b"pong").await.unwrap();
                peer
            });
            let n = polled.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"pong");
            let _peer = again.await;
        });
    }

    /// A short timeout that starts while the pump sleeps towards a later deadline wakes
    /// the pump to sleep less: the short wait fails on time, the long one still waits.
    #[test]
    fn a_short_deadline_is_kept_while_a_longer_one_is_waited_for() {
        on_executor(|| async {
            let (mut long, mut long_peer) = pair().await;
            let (mut short, _short_peer) = pair().await;
            long.tcp()
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let long_reader = glommio::spawn_local(async move {
                let mut buf = [0u8; 8];
                let n = long.read(&mut buf).await.unwrap();
                buf[..n].to_vec()
            });
            // The pump goes to sleep with the 2 s deadline the earliest.
            glommio::timer::sleep(Duration::from_millis(30)).await;
            short
                .tcp()
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let started = Instant::now();
            let mut buf = [0u8; 8];
            let err = short.read(&mut buf).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
            let waited = started.elapsed();
            assert!(waited >= Duration::from_millis(100), "{waited:?}");
            assert!(waited < Duration::from_millis(1_000), "{waited:?}");
            long_peer.write_all(b"late").await.unwrap();
            assert_eq!(long_reader.await, b"late");
        });
    }

    /// The pump sleeps on the epoll set once a round finds nothing: bytes that come
    /// after a quiet spell still wake the reader.
    #[test]
    fn bytes_after_a_quiet_spell_wake_the_reader() {
        on_executor(|| async {
            let (mut polled, mut peer) = pair().await;
            let mut buf = [0u8; 16];
            for round in 0..3u8 {
                let sender = glommio::spawn_local(async move {
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                    peer.write_all(&[round]).await.unwrap();
                    peer
                });
                let n = polled.read(&mut buf).await.unwrap();
                assert_eq!(&buf[..n], &[round]);
                peer = sender.await;
            }
            drop(peer);
            assert_eq!(
                polled.read(&mut buf).await.unwrap(),
                0,
                "the peer's close is seen"
            );
        });
    }

    /// A writer that fills the socket waits for room and resumes as the peer reads:
    /// every byte arrives in order; one that nobody drains times out.
    #[test]
    fn a_full_socket_is_waited_for_and_a_stalled_one_times_out() {
        on_executor(|| async {
            let (mut polled, mut peer) = pair().await;
            let body: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
            let expected = body.clone();
            let reader = glommio::spawn_local(async move {
                glommio::timer::sleep(Duration::from_millis(20)).await;
                let mut got = vec![0u8; expected.len()];
                peer.read_exact(&mut got).await.unwrap();
                assert!(got == expected, "the body arrives whole and in order");
                peer
            });
            polled.write_all(&body).await.unwrap();
            let _peer = reader.await;

            polled
                .tcp()
                .set_write_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let started = Instant::now();
            // More than the two sockets' buffers can hold between them.
            let stalled = vec![7u8; 64 << 20];
            let err = polled.write_all(&stalled).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
            assert!(started.elapsed() >= Duration::from_millis(200));
        });
    }

    /// Many connections waiting at once are each woken by their own bytes, however the
    /// pump's rounds split them.
    #[test]
    fn many_waiting_connections_are_each_woken() {
        on_executor(|| async {
            let mut pairs = Vec::new();
            for _ in 0..64 {
                pairs.push(pair().await);
            }
            let mut readers = Vec::new();
            let mut peers = Vec::new();
            for (i, (mut polled, peer)) in pairs.into_iter().enumerate() {
                readers.push(glommio::spawn_local(async move {
                    let mut buf = [0u8; 8];
                    let n = polled.read(&mut buf).await.unwrap();
                    assert_eq!(&buf[..n], &(i as u64).to_le_bytes()[..n]);
                    n
                }));
                peers.push(peer);
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
            for (i, peer) in peers.iter_mut().enumerate().rev() {
                peer.write_all(&(i as u64).to_le_bytes()).await.unwrap();
            }
            for reader in readers {
                assert!(reader.await > 0);
            }
        });
    }

    /// The peer's bytes, then its close (FIN) or reset, reach the socket before it is
    /// read, and the pump takes their one edge first: the read that returns the bytes
    /// comes back short, and the next one must still see the end, not wait for an edge
    /// that has already come (a read that skipped the kernel after a short read did).
    #[test]
    fn an_end_whose_edge_came_before_the_last_bytes_were_read_is_seen() {
        for reset in [false, true] {
            on_executor(move || async move {
                let (mut polled, mut peer) = pair().await;
                peer.write_all(b"last words").await.unwrap();
                if reset {
                    socket2::SockRef::from(&peer)
                        .set_linger(Some(Duration::ZERO))
                        .unwrap();
                    drop(peer);
                } else {
                    peer.shutdown(std::net::Shutdown::Write).await.unwrap();
                }
                // The pump's rounds take the edges while nobody reads.
                glommio::timer::sleep(Duration::from_millis(50)).await;
                let mut buf = [0u8; 64];
                let n = polled.read(&mut buf).await.unwrap();
                assert_eq!(&buf[..n], b"last words");
                let end = polled.read(&mut buf).await;
                match (reset, end) {
                    (false, Ok(0)) => {}
                    (true, Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => {}
                    (_, other) => panic!("reset {reset}: the end was not seen: {other:?}"),
                }
            });
        }
    }
}
