//! A scripted node on a local port, for the protocol loops' tests: it accepts one
//! connection and runs the script on it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;

use ron_codec::frame::{Frame, FrameReader, MAX_FRAME_BYTES};

use crate::transport::{Endpoint, Protocol};

/// The endpoint of a node running `script` on its one connection.
pub(crate) fn serve<T: Send + 'static>(
    protocol: Protocol,
    script: impl FnOnce(TcpStream) -> T + Send + 'static,
) -> (Endpoint, JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
    let addr = listener.local_addr().expect("local address").to_string();
    let node = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept the client");
        stream.set_nodelay(true).expect("nodelay");
        script(stream)
    });
    let endpoint = Endpoint {
        addr,
        protocol,
        tls: None,
    };
    (endpoint, node)
}

/// Writes `bytes` one at a time, so the client reads them in as many pieces as the
/// network makes of them.
pub(crate) fn trickle(stream: &mut TcpStream, bytes: &[u8]) {
    for b in bytes {
        if stream.write_all(std::slice::from_ref(b)).is_err() {
            return;
        }
    }
}

/// The client's next frame.
pub(crate) fn read_frame(stream: &mut TcpStream, reader: &mut FrameReader) -> Frame {
    loop {
        if let Some(frame) = reader.next_frame().expect("the client sends valid frames") {
            return frame;
        }
        let n = stream
            .read(reader.read_buf())
            .expect("read from the client");
        assert!(n > 0, "the client closed early");
        reader.filled(n);
    }
}

/// A reader of the client's frames.
pub(crate) fn frame_reader() -> FrameReader {
    FrameReader::new(MAX_FRAME_BYTES, 4096)
}
