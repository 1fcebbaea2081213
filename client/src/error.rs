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
            source,
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
                code: e.code,
                message: e.message,
                retryable: e.retryable,
                retry_after_ms: e.retry_after_ms,
            },
            Err(_) => ClientError::Server {
                status,
                code: "unknown".into(),
                message: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
                retryable: false,
                retry_after_ms: None,
            },
        }
    }
}
