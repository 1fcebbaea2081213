//! The socket calls a shard makes for every request — `recv`, `send`, `sendmsg`, and
//! the readiness pump's `epoll_pwait` and `epoll_pwait2` — made as raw system calls
//! rather than through libc's wrappers; and the socket options the sends depend on
//! (`TCP_CORK`, `TCP_CONGESTION`).
//!
//! glibc (2.34 on) brackets every call that is a thread-cancellation point with two
//! atomic read-modify-writes of the calling thread's cancel state
//! (`__pthread_enable_asynccancel`, `__pthread_disable_asynccancel`); in a profile of
//! 4 KiB GETs the second alone took 1.8 % of the shard's core, nearly all of it on its
//! `lock cmpxchg` (docs/PERF.md, "Fewer timers, fewer atomics"). ron never cancels a
//! thread, so the bracket buys nothing (`epoll_wait`'s took 0.25 % of a shard serving
//! ranges). Every socket call here is non-blocking: the socket is `O_NONBLOCK` and
//! `MSG_DONTWAIT` is passed too, and sends pass `MSG_NOSIGNAL` (a closed peer is an
//! `EPIPE` error, never a `SIGPIPE`); only [`epoll_events_within`] waits, for as long
//! as it is told.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use nix::sys::epoll::EpollEvent;

/// Receives what is queued, up to `buf.len()` bytes; `WouldBlock` when nothing is.
pub fn recv(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    #[allow(unsafe_code)]
    // SAFETY: `buf` is writable for its whole length for the duration of the call, and
    // `socket` is an open descriptor (borrowed for the call); the address arguments are
    // null, which `recvfrom(2)` allows.
    let received = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            libc::c_long::from(socket.as_raw_fd()),
            buf.as_mut_ptr(),
            buf.len(),
            libc::c_long::from(libc::MSG_DONTWAIT),
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    result(received)
}

/// Sends what of `buf` fits now, with `flags` besides `MSG_DONTWAIT | MSG_NOSIGNAL`.
pub fn send(socket: BorrowedFd<'_>, buf: &[u8], flags: libc::c_int) -> io::Result<usize> {
    let flags = flags | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    #[allow(unsafe_code)]
    // SAFETY: `buf` is readable for its whole length for the duration of the call, and
    // `socket` is an open descriptor; the null destination is what `send(2)` passes.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            libc::c_long::from(socket.as_raw_fd()),
            buf.as_ptr(),
            buf.len(),
            libc::c_long::from(flags),
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        )
    };
    result(sent)
}

/// Sends what of `slices`, in order, fits now in one call, with `flags` besides
/// `MSG_DONTWAIT | MSG_NOSIGNAL`.
pub fn send_slices(
    socket: BorrowedFd<'_>,
    slices: &[io::IoSlice<'_>],
    flags: libc::c_int,
) -> io::Result<usize> {
    let flags = flags | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY (of the zeroed header): `msghdr` is plain data; all-zero is a valid value.
    #[allow(unsafe_code)]
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is ABI-compatible with `iovec` on Unix (its documented guarantee).
    header.msg_iov = slices.as_ptr().cast_mut().cast::<libc::iovec>();
    header.msg_iovlen = slices.len();
    #[allow(unsafe_code)]
    // SAFETY: `header` points at `slices`, each readable for its length for the duration
    // of the call, and names no address or control data; `socket` is an open descriptor.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_sendmsg,
            libc::c_long::from(socket.as_raw_fd()),
            &header as *const libc::msghdr,
            libc::c_long::from(flags),
        )
    };
    result(sent)
}

/// Sets or clears `TCP_CORK`: while set, the socket sends only full segments; clearing
/// it sends what it holds at once.
pub fn set_cork(socket: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let value = libc::c_int::from(on);
    #[allow(unsafe_code)]
    // SAFETY: `value` is a readable `c_int` for the duration of the call and its size is
    // passed; `socket` is an open descriptor.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    result(set as libc::c_long).map(drop)
}

/// The longest congestion-control name the kernel keeps (`TCP_CA_NAME_MAX`).
const CONGESTION_NAME_BYTES_MAX: usize = 16;

/// A TCP socket's congestion control, by name (`TCP_CONGESTION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CongestionControl {
    name: [u8; CONGESTION_NAME_BYTES_MAX],
}

impl CongestionControl {
    /// Its name as the kernel gives it (`cubic`, `bbr`, ...).
    pub fn name(&self) -> &str {
        let len = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.name.len());
        std::str::from_utf8(&self.name[..len]).unwrap_or("")
    }

    /// Whether it paces its own sends (BBR, every version): with no fq qdisc on the
    /// device to pace them (loopback, and most devices by default) the socket then
    /// holds a short segment sent right behind a full one back with a timer.
    pub fn paces_sends(&self) -> bool {
        self.name().starts_with("bbr")
    }
}

/// The congestion control `socket` (TCP) runs: the system's default when it was
/// accepted, a route's, or one set on it.
pub fn congestion_control(socket: BorrowedFd<'_>) -> io::Result<CongestionControl> {
    let mut name = [0u8; CONGESTION_NAME_BYTES_MAX];
    let mut len = name.len() as libc::socklen_t;
    #[allow(unsafe_code)]
    // SAFETY: `name` is writable for `len` bytes and `len` is a writable `socklen_t`
    // for the duration of the call; `socket` is an open descriptor.
    let got = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_mut_ptr().cast(),
            &mut len,
        )
    };
    result(got as libc::c_long).map(|_| CongestionControl { name })
}

/// The events on `epoll`'s ready list, without waiting (`epoll_pwait(2)` with no
/// timeout and no signal mask: `epoll_wait`, which not every architecture has).
pub fn epoll_ready_events(epoll: BorrowedFd<'_>, events: &mut [EpollEvent]) -> io::Result<usize> {
    epoll_pwait_call(libc::SYS_epoll_pwait, epoll, events, 0)
}

/// The events on `epoll`'s ready list, waiting for a first one at most `timeout`
/// (`epoll_pwait2(2)`, Linux 5.11: `ENOSYS` before); 0 when none came.
pub fn epoll_events_within(
    epoll: BorrowedFd<'_>,
    events: &mut [EpollEvent],
    timeout: Duration,
) -> io::Result<usize> {
    let timeout = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos()),
    };
    // The pointer is read by the kernel during the call, while `timeout` lives.
    let timeout_arg = &timeout as *const libc::timespec as libc::c_long;
    epoll_pwait_call(libc::SYS_epoll_pwait2, epoll, events, timeout_arg)
}

/// `epoll_pwait` or `epoll_pwait2` (`call`), which differ only in their timeout: an
/// `int` of milliseconds or a `timespec` pointer (`timeout`), with no signal mask.
fn epoll_pwait_call(
    call: libc::c_long,
    epoll: BorrowedFd<'_>,
    events: &mut [EpollEvent],
    timeout: libc::c_long,
) -> io::Result<usize> {
    let room = libc::c_int::try_from(events.len()).unwrap_or(libc::c_int::MAX);
    #[allow(unsafe_code)]
    // SAFETY: `EpollEvent` is `repr(transparent)` over `libc::epoll_event`, so `events`
    // is `room` writable `epoll_event`s for the duration of the call; `epoll` is an
    // open descriptor; `timeout` is what `call` takes (its callers above); a null
    // signal mask leaves the thread's alone.
    let found = unsafe {
        libc::syscall(
            call,
            libc::c_long::from(epoll.as_raw_fd()),
            events.as_mut_ptr().cast::<libc::epoll_event>(),
            libc::c_long::from(room),
            timeout,
            std::ptr::null::<libc::sigset_t>(),
            0 as libc::size_t,
        )
    };
    result(found).map(|found| found.min(events.len()))
}

/// A raw call's return value: the count, or the error `errno` holds.
fn result(returned: libc::c_long) -> io::Result<usize> {
    usize::try_from(returned).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (server, client)
    }

    #[test]
    fn calls_move_bytes_and_report_errors_as_libc_would() {
        let (server, mut client) = pair();
        let mut buf = [0u8; 64];
        let empty = recv(server.as_fd(), &mut buf).unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);

        client.write_all(b"request").unwrap();
        let n = loop {
            match recv(server.as_fd(), &mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                other => break other.unwrap(),
            }
        };
        assert_eq!(&buf[..n], b"request");

        assert_eq!(send(server.as_fd(), b"head ", libc::MSG_MORE).unwrap(), 5);
        let slices = [io::IoSlice::new(b"and "), io::IoSlice::new(b"body")];
        assert_eq!(send_slices(server.as_fd(), &slices, 0).unwrap(), 8);
        let mut got = [0u8; 13];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"head and body");

        drop(client);
        // A send to a closed peer fails (first with a reset, then a broken pipe) as an
        // error; `MSG_NOSIGNAL` keeps it from raising SIGPIPE even in a process that
        // has not ignored the signal (Rust's runtime ignores it, so this cannot show it).
        let failed = (0..100).find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(5));
            send(server.as_fd(), b"x", 0).err()
        });
        let kind = failed.expect("a send to a closed peer fails").kind();
        assert!(
            matches!(
                kind,
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ),
            "{kind:?}"
        );
    }

    #[test]
    fn a_socket_names_its_congestion_control_and_whether_it_paces_its_sends() {
        let (server, _client) = pair();
        let default = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
            .expect("Linux names its default congestion control");
        let running = congestion_control(server.as_fd()).unwrap();
        assert_eq!(running.name(), default.trim());
        // Reno is built into every kernel and any user may choose it.
        let reno = c"reno";
        #[allow(unsafe_code)]
        // SAFETY: `reno` is readable for the length passed; the socket is open.
        let set = unsafe {
            libc::setsockopt(
                server.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_CONGESTION,
                reno.as_ptr().cast(),
                reno.to_bytes().len() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0, "{}", io::Error::last_os_error());
        let reno = congestion_control(server.as_fd()).unwrap();
        assert_eq!(reno.name(), "reno");
        assert!(!reno.paces_sends());
        let named = |name: &str| {
            let mut bytes = [0u8; CONGESTION_NAME_BYTES_MAX];
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            CongestionControl { name: bytes }
        };
        for pacing in ["bbr", "bbr2", "bbr3"] {
            assert!(named(pacing).paces_sends(), "{pacing}");
        }
        for not_pacing in ["cubic", "reno", "dctcp", "htcp", ""] {
            assert!(!named(not_pacing).paces_sends(), "{not_pacing}");
        }
        assert_eq!(named("sixteen-letters!").name(), "sixteen-letters!");
    }

    #[test]
    fn epoll_calls_return_what_is_ready_or_nothing_after_the_timeout() {
        use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollFlags};
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        let mut events = [EpollEvent::empty(); 4];
        assert_eq!(epoll_ready_events(epoll.0.as_fd(), &mut events).unwrap(), 0);
        let timeout = Duration::from_micros(200);
        let started = std::time::Instant::now();
        assert_eq!(
            epoll_events_within(epoll.0.as_fd(), &mut events, timeout).unwrap(),
            0
        );
        assert!(started.elapsed() >= timeout, "it waited for its timeout");
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        epoll
            .add(a.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 7))
            .unwrap();
        (&b).write_all(b"x").unwrap();
        assert_eq!(epoll_ready_events(epoll.0.as_fd(), &mut events).unwrap(), 1);
        assert_eq!(events[0].data(), 7);
        events = [EpollEvent::empty(); 4];
        let found = epoll_events_within(epoll.0.as_fd(), &mut events, timeout).unwrap();
        assert_eq!(
            (found, events[0].data()),
            (1, 7),
            "level-triggered: still ready"
        );
        let closed = epoll_ready_events(b.as_fd(), &mut events).unwrap_err();
        assert_eq!(
            closed.raw_os_error(),
            Some(libc::EINVAL),
            "not an epoll set"
        );
    }
}
