//! `ron repair` and `ron scrub`: one request to a node's admin port (HTTP/1.1, one
//! request per connection, as the admin server answers), its answer printed.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use ron_codec::http::head::HEAD_LEN_MAX_DEFAULT;
use ron_codec::http::reply::{parse_response_head, ReplyParse};

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
    let mut answer = Vec::new();
    stream
        .take(ADMIN_ANSWER_BYTES_MAX)
        .read_to_end(&mut answer)
        .map_err(ClientError::io(addr, "read the answer"))?;
    parse_answer(addr, &answer)
}

fn parse_answer(addr: &str, answer: &[u8]) -> Result<AdminAnswer, ClientError> {
    let protocol = |reason: String| ClientError::Protocol {
        addr: addr.to_string(),
        reason: format!("the admin answer: {reason}"),
    };
    match parse_response_head(answer, HEAD_LEN_MAX_DEFAULT) {
        Ok(ReplyParse::Complete(reply)) => Ok(AdminAnswer {
            status: reply.status,
            body: String::from_utf8_lossy(&answer[reply.head_len..]).into_owned(),
        }),
        Ok(ReplyParse::Partial) => Err(protocol("no complete head".into())),
        Err(e) => Err(protocol(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_its_status_and_body_and_anything_else_is_a_protocol_error() {
        let ok = parse_answer("a", b"HTTP/1.1 404 Not Found\r\nX: y\r\n\r\n{\"a\":1}").unwrap();
        assert_eq!(ok.status, 404);
        assert_eq!(ok.body, "{\"a\":1}");
        for bad in [
            &b"HTTP/1.1 200 OK\r\n"[..],
            b"SSH-2.0\r\n\r\n",
            b"HTTP/1.1 2x\r\n\r\n",
        ] {
            assert!(matches!(
                parse_answer("a", bad),
                Err(ClientError::Protocol { .. })
            ));
        }
    }
}
