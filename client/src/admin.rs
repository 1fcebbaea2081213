//! `ron repair` and `ron scrub`: one request to a node's admin port (HTTP/1.1, one
//! request per connection, as the admin server answers), its answer printed.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use ron_codec::http::head::{Method, HEAD_LEN_MAX_DEFAULT};
use ron_codec::http::reply::{parse_response_head, ReplyBody, ReplyParse};

use crate::ClientError;

/// The environment variable holding the admin token: the node's own (`admin_token`),
/// so one shell serves both the node and its operator.
pub const ADMIN_TOKEN_VAR: &str = "RON_ADMIN_TOKEN";
/// Where the admin port is unless `--admin` says otherwise (the node's default).
pub const ADMIN_DEFAULT: &str = "127.0.0.1:9600";
/// Largest admin answer read (the largest, `/metrics`, is tens of KiB).
pub const ADMIN_ANSWER_BYTES_MAX: u64 = 1 << 20;

/// The node's admin port and the token it wants.
#[derive(Debug, Clone)]
pub struct AdminEndpoint {
    pub addr: String,
    pub token: Option<String>,
}

/// An answer: its status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAnswer {
    pub status: u16,
    pub body: String,
}

/// Sends `method path` and reads the whole answer; every read and write waits at most
/// `timeout`.
pub fn request(
    admin: &AdminEndpoint,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<AdminAnswer, ClientError> {
    let addr = admin.addr.as_str();
    let connect = |source| ClientError::Connect {
        addr: addr.to_string(),
        source,
    };
    // Every address the name resolves to, in order (`localhost` is often ::1 first,
    // and the admin port listens on 127.0.0.1 by default).
    let mut failed = std::io::Error::other("no address");
    let mut connected = None;
    for socket in addr.to_socket_addrs().map_err(connect)? {
        match TcpStream::connect_timeout(&socket, timeout) {
            Ok(stream) => {
                connected = Some(stream);
                break;
            }
            Err(e) => failed = e,
        }
    }
    let mut stream = connected.ok_or_else(|| connect(failed))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(ClientError::io(addr, "set timeouts"))?;
    let authorization = admin
        .token
        .as_deref()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .map_err(ClientError::io(addr, "send the request"))?;
    read_answer(addr, &mut stream, method == "HEAD")
}

/// Reads one answer as its head frames it: `Content-Length` bytes (a node holding the
/// connection open after them is not waited on), or up to the close when it says no
/// length. A body past [`ADMIN_ANSWER_BYTES_MAX`] or cut short is an error, never
/// an answer shorter than sent; a chunked one is refused (the admin server sends none).
fn read_answer(
    addr: &str,
    stream: &mut impl Read,
    head_request: bool,
) -> Result<AdminAnswer, ClientError> {
    let protocol = |reason: String| ClientError::Protocol {
        addr: addr.to_string(),
        reason: format!("the admin answer: {reason}"),
    };
    let mut answer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut closed = false;
    let (status, head_len, body) = loop {
        match parse_response_head(&answer, HEAD_LEN_MAX_DEFAULT) {
            Ok(ReplyParse::Complete(reply)) => {
                let method = if head_request {
                    Method::Head
                } else {
                    Method::Get
                };
                break (reply.status, reply.head_len, reply.body(method));
            }
            Ok(ReplyParse::Partial) if closed => return Err(protocol("no complete head".into())),
            Ok(ReplyParse::Partial) => {}
            Err(e) => return Err(protocol(e.to_string())),
        }
        let n = read_some(addr, stream, &mut chunk)?;
        closed = n == 0;
        answer.extend_from_slice(&chunk[..n]);
    };
    let body_len = match body {
        ReplyBody::Empty => 0,
        ReplyBody::Length(len) if len > ADMIN_ANSWER_BYTES_MAX => {
            return Err(protocol(format!(
                "announces {len} bytes, more than the {ADMIN_ANSWER_BYTES_MAX} read"
            )))
        }
        ReplyBody::Length(len) => len as usize,
        ReplyBody::Chunked => return Err(protocol("a chunked body".into())),
        ReplyBody::UntilClose => {
            while !closed && answer.len() - head_len <= ADMIN_ANSWER_BYTES_MAX as usize {
                let n = read_some(addr, stream, &mut chunk)?;
                closed = n == 0;
                answer.extend_from_slice(&chunk[..n]);
            }
            if !closed {
                return Err(protocol(format!(
                    "more than the {ADMIN_ANSWER_BYTES_MAX} bytes read"
                )));
            }
            answer.len() - head_len
        }
    };
    while answer.len() < head_len + body_len {
        let n = read_some(addr, stream, &mut chunk)?;
        if n == 0 {
            return Err(protocol(format!(
                "ended after {} of {body_len} body bytes",
                answer.len() - head_len
            )));
        }
        answer.extend_from_slice(&chunk[..n]);
    }
    Ok(AdminAnswer {
        status,
        body: String::from_utf8_lossy(&answer[head_len..head_len + body_len]).into_owned(),
    })
}

fn read_some(addr: &str, stream: &mut impl Read, chunk: &mut [u8]) -> Result<usize, ClientError> {
    loop {
        match stream.read(chunk) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            read => return read.map_err(ClientError::io(addr, "read the answer")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_answer(answer: &[u8]) -> Result<AdminAnswer, ClientError> {
        read_answer("a", &mut std::io::Cursor::new(answer), false)
    }

    #[test]
    fn an_answer_is_its_status_and_body_and_anything_else_is_a_protocol_error() {
        let ok = parse_answer(b"HTTP/1.1 404 Not Found\r\nX: y\r\n\r\n{\"a\":1}").unwrap();
        assert_eq!(ok.status, 404);
        assert_eq!(ok.body, "{\"a\":1}");
        for bad in [
            &b"HTTP/1.1 200 OK\r\n"[..],
            b"SSH-2.0\r\n\r\n",
            b"HTTP/1.1 2x\r\n\r\n",
        ] {
            assert!(matches!(
                parse_answer(bad),
                Err(ClientError::Protocol { .. })
            ));
        }
    }

    /// The answer ends where its Content-Length says: a node keeping the connection open
    /// after it is not waited on (before, the client read to the close: the timeout, then
    /// a failure). A body cut short or past the limit is an error, not a shorter answer.
    #[test]
    fn an_answer_is_read_as_its_head_frames_it() {
        let (endpoint, node) = crate::fake_node::serve(crate::Protocol::Http, |mut s| {
            let mut request = [0u8; 1024];
            let _ = s.read(&mut request);
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            std::thread::sleep(Duration::from_secs(3));
        });
        let admin = AdminEndpoint {
            addr: endpoint.addr,
            token: None,
        };
        let started = std::time::Instant::now();
        let answer = request(&admin, "GET", "/x", Duration::from_secs(2)).unwrap();
        assert_eq!((answer.status, answer.body.as_str()), (200, "ok"));
        assert!(started.elapsed() < Duration::from_secs(1));
        node.join().unwrap();

        let short = parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok");
        assert_eq!(
            short.unwrap_err().to_string(),
            "protocol error from a: the admin answer: ended after 2 of 5 body bytes"
        );
        let huge = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 2 << 20);
        assert!(parse_answer(huge.as_bytes()).is_err());
        let mut unframed = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        unframed.resize(unframed.len() + (2 << 20), b'x');
        assert!(parse_answer(&unframed).is_err(), "past the limit");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        assert!(parse_answer(chunked).is_err());
    }
}
