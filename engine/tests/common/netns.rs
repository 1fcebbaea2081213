//! A network namespace of the calling thread's own, for the tests whose promise depends
//! on a network setting the host's would otherwise decide (the congestion control), or
//! on hosts of other networks than loopback: every socket the thread opens, and every
//! process it starts, lives in it. Needs root
//! (`CAP_SYS_ADMIN`, as scripts/test-all.sh runs).

use std::io;
use std::os::fd::AsRawFd;

/// Moves the calling thread into a new network namespace with its loopback up and
/// `congestion` as the default congestion control of its TCP sockets; an error when the
/// kernel has no such congestion control (and cannot load it), or when only the host's
/// own namespace may choose it (one not in `net.ipv4.tcp_allowed_congestion_control`:
/// `EPERM`).
pub fn enter_with_congestion_control(congestion: &str) -> io::Result<()> {
    enter();
    // /proc/sys/net is the namespace of the thread that opens it: this one's.
    std::fs::write("/proc/sys/net/ipv4/tcp_congestion_control", congestion)
}

/// Moves the calling thread into a new network namespace whose loopback is up and also
/// holds `addresses` (IPv4, each a /32): hosts of other networks than loopback, on one
/// machine. Adding them needs `ip` (iproute2).
pub fn enter_holding(addresses: &[std::net::Ipv4Addr]) {
    enter();
    for address in addresses {
        let status = std::process::Command::new("ip")
            .args(["addr", "add", &format!("{address}/32"), "dev", "lo"])
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "ip addr add {address}/32 dev lo (iproute2)"
        );
    }
}

fn enter() {
    #[allow(unsafe_code)]
    // SAFETY: `unshare` takes no pointers; it changes only this thread's namespaces.
    let entered = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        entered,
        0,
        "a network namespace needs root (CAP_SYS_ADMIN): {}",
        io::Error::last_os_error()
    );
    loopback_up();
}

/// Sets `lo` up (a new namespace's loopback starts down).
fn loopback_up() {
    // A socket to ask through: binding one needs no interface up.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("a socket to ask through");
    #[allow(unsafe_code)]
    // SAFETY: an all-zero `ifreq` is a valid value (a name of NULs, no flags).
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (to, from) in request.ifr_name.iter_mut().zip(b"lo") {
        *to = *from as libc::c_char;
    }
    #[allow(unsafe_code)]
    // SAFETY: `request` is a valid, writable `ifreq` naming `lo` for both calls, and
    // the flags are the union's field these two requests read and write.
    let set = unsafe {
        let got = libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request);
        assert_eq!(got, 0, "lo's flags: {}", io::Error::last_os_error());
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request)
    };
    assert_eq!(set, 0, "lo up: {}", io::Error::last_os_error());
}
