//! The client's one error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connection to {addr} failed during {op}: {source}")]
    Io {
        addr: String,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    /// The node answered with an error envelope.
    #[error("{status} {code}: {message}")]
    Server {
        status: u16,
        code: String,
        message: String,
        retryable: bool,
        retry_after_ms: Option<u64>,
    },
    /// The node broke the protocol (a frame or header the client cannot accept).
    #[error("protocol error from {addr}: {reason}")]
    Protocol { addr: String, reason: String },
    /// Bytes did not verify against the requested address; nothing unverified was
    /// written.
    #[error("verification failed for {addr}: {reason}")]
    Verification { addr: String, reason: String },
    #[error("{op} {path}: {source}")]
    File {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading the input: {0}")]
    Input(std::io::Error),
    #[error("writing the output: {0}")]
    Output(std::io::Error),
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    /// Maps an I/O error on the connection to `addr` during `op`.
    pub fn io<'a>(
        addr: &'a str,
        op: &'static str,
    ) -> impl FnOnce(std::io::Error) -> ClientError + 'a {
        move |source| ClientError::Io {
            addr: addr.to_string(),
            op,
            source: named_timeout(source),
        }
    }

    /// The `ron` CLI's exit code for this error (documented in `ron help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Server { .. } => 1,
            ClientError::Usage(_) => 2,
            ClientError::Connect { .. }
            | ClientError::Io { .. }
            | ClientError::Tls(_)
            | ClientError::Protocol { .. } => 3,
            ClientError::Verification { .. } => 4,
            ClientError::File { .. } | ClientError::Input(_) | ClientError::Output(_) => 5,
        }
    }

    /// From an error envelope the node sent with `status`.
    pub fn from_envelope(status: u16, body: &[u8]) -> ClientError {
        #[derive(serde::Deserialize)]
        struct Envelope {
            code: String,
            message: String,
            #[serde(default)]
            retryable: bool,
            #[serde(default)]
            retry_after_ms: Option<u64>,
        }
        match serde_json::from_slice::<Envelope>(body) {
            Ok(e) => ClientError::Server {
                status,
                code: printable(&e.code),
                message: printable(&e.message),
                retryable: e.retryable,
                retry_after_ms: e.retry_after_ms,
            },
            Err(_) => ClientError::Server {
                status,
                code: "unknown".into(),
                message: printable(&String::from_utf8_lossy(body)),
                retryable: false,
                retry_after_ms: None,
            },
        }
    }
}

/// A read timeout says "Resource temporarily unavailable" (EAGAIN) on Unix: said as
/// what it is.
fn named_timeout(source: std::io::Error) -> std::io::Error {
    match source.kind() {
        std::io::ErrorKind::WouldBlock => std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out: nothing came within the timeout",
        ),
        _ => source,
    }
}

/// Longest text of a node's kept in an error (what a terminal shows of it).
pub const NODE_TEXT_CHARS_MAX: usize = 512;

/// A node's text as the client prints it: control characters (a terminal's escape
/// sequences: a node could retitle the window, clear the screen, or hide what it
/// printed) written as `\u{..}`, at most [`NODE_TEXT_CHARS_MAX`] characters.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(NODE_TEXT_CHARS_MAX));
    for (i, c) in text.chars().enumerate() {
        if i == NODE_TEXT_CHARS_MAX {
            out.push('…');
            break;
        }
        match c.is_control() {
            true => out.push_str(&c.escape_unicode().to_string()),
            false => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_text_reaches_the_terminal_without_control_characters() {
        let err = ClientError::from_envelope(
            500,
            br#"{"code":"x\u001b[2J","message":"\u001b]0;pwn\u0007 done"}"#,
        );
        let shown = err.to_string();
        assert_eq!(shown, "500 x\\u{1b}[2J: \\u{1b}]0;pwn\\u{7} done");
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        let long = ClientError::from_envelope(502, "\u{1b}".repeat(10_000).as_bytes());
        assert!(long.to_string().chars().count() < 10 * NODE_TEXT_CHARS_MAX);
        assert!(!long.to_string().chars().any(char::is_control));
    }
}
