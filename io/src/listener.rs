//! Per-shard listeners sharing one address.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `addr` with SO_REUSEPORT and SO_REUSEADDR and listens with `backlog`.
/// Must run on the glommio executor that will accept on the listener.
pub fn reuseport_listener(
    addr: SocketAddr,
    backlog: i32,
) -> std::io::Result<glommio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    let fd = socket.into_raw_fd();
    // SAFETY: `fd` is a listening TCP socket this function just created and released
    // with `into_raw_fd`; ownership passes to the glommio listener, which closes it.
    #[allow(unsafe_code)]
    let listener = unsafe { glommio::net::TcpListener::from_raw_fd(fd) };
    Ok(listener)
}
