//! The error taxonomy shared by OAP/1 and HTTP, and this crate's own error enum.
//!
//! [`ErrorCode`] is wire data: each variant fixes the HTTP status (which is also the
//! OAP `code` field), the `code` string of the JSON envelope and whether a client may
//! retry. [`Error`] is what the parsers in this crate return; every variant carries the
//! context an operator needs and maps onto exactly one [`ErrorCode`].

use std::fmt;

use serde::Serialize;

/// One entry of the error taxonomy (docs/OAP-1.md, "Error envelope").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400: a request that is well framed but makes no sense (unknown op, bad JSON).
    BadRequest,
    /// 400: an OAP/1 frame that violates the framing rules.
    BadFrame,
    /// 400: an OAP/1 frame with `ver != 1`.
    BadVersion,
    /// 400: uploaded bytes do not hash to the address the client announced.
    UploadDigestMismatch,
    /// 400: an address that is not `b3:` + 64 lowercase hex digits.
    BadAddr,
    /// 401: a write without a valid token.
    Unauthorized,
    /// 403: a token that lacks the scope.
    Forbidden,
    /// 404: no such object.
    NotFound,
    /// 405: an HTTP method the route does not serve (project addition).
    MethodNotAllowed,
    /// 408: a request head not complete within the header timeout (project addition).
    RequestTimeout,
    /// 411: a PUT/POST body with neither Content-Length nor chunked (project addition).
    LengthRequired,
    /// 412: an `If-Match` no ETag of the object satisfies (project addition).
    PreconditionFailed,
    /// 406: no representation the request's `Accept` allows is served (project addition:
    /// a bao chunk-group log out of range).
    NotAcceptable,
    /// 413: frame, body or inflate bound exceeded.
    TooLarge,
    /// 416: a range wholly outside the object.
    RangeNotSatisfiable,
    /// 429: the tenant's token bucket is empty.
    OverQuota,
    /// 451: the node's denylist blocks the address (project addition).
    Blocked,
    /// 431: a request head larger than the head limit (project addition).
    HeadTooLarge,
    /// 500: an internal failure (I/O, a broken invariant).
    Internal,
    /// 500: stored bytes failed verification and could not be repaired.
    StoredDigestMismatch,
    /// 501: a Transfer-Encoding other than chunked (project addition).
    NotImplemented,
    /// 507: the node has no space left to store an upload (project addition).
    InsufficientStorage,
    /// 502: a read-through found no provider or origin that delivered a verified copy
    /// (project addition).
    BadGateway,
    /// 504: a read-through's upstream did not deliver within its deadline (project
    /// addition).
    GatewayTimeout,
    /// 503: the inflight gate is full.
    Overloaded,
    /// 503: the node is not ready yet.
    NotReady,
}

impl ErrorCode {
    /// Every variant, for exhaustive tests and documentation tables.
    pub const ALL: [ErrorCode; 26] = [
        ErrorCode::BadRequest,
        ErrorCode::BadFrame,
        ErrorCode::BadVersion,
        ErrorCode::UploadDigestMismatch,
        ErrorCode::BadAddr,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::RequestTimeout,
        ErrorCode::LengthRequired,
        ErrorCode::PreconditionFailed,
        ErrorCode::NotAcceptable,
        ErrorCode::TooLarge,
        ErrorCode::RangeNotSatisfiable,
        ErrorCode::OverQuota,
        ErrorCode::HeadTooLarge,
        ErrorCode::Blocked,
        ErrorCode::Internal,
        ErrorCode::StoredDigestMismatch,
        ErrorCode::NotImplemented,
        ErrorCode::BadGateway,
        ErrorCode::GatewayTimeout,
        ErrorCode::Overloaded,
        ErrorCode::NotReady,
        ErrorCode::InsufficientStorage,
    ];

    /// HTTP status; OAP/1 puts the same number in the frame's `code` field.
    pub const fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::BadFrame
            | ErrorCode::BadVersion
            | ErrorCode::UploadDigestMismatch
            | ErrorCode::BadAddr => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::NotAcceptable => 406,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::LengthRequired => 411,
            ErrorCode::PreconditionFailed => 412,
            ErrorCode::TooLarge => 413,
            ErrorCode::RangeNotSatisfiable => 416,
            ErrorCode::OverQuota => 429,
            ErrorCode::HeadTooLarge => 431,
            ErrorCode::Blocked => 451,
            ErrorCode::Internal | ErrorCode::StoredDigestMismatch => 500,
            ErrorCode::NotImplemented => 501,
            ErrorCode::BadGateway => 502,
            ErrorCode::GatewayTimeout => 504,
            ErrorCode::Overloaded | ErrorCode::NotReady => 503,
            ErrorCode::InsufficientStorage => 507,
        }
    }

    /// The OAP/1 frame `code` field for this error (HTTP numbering).
    pub const fn oap_code(self) -> u16 {
        self.status()
    }

    /// The `code` string of the JSON envelope.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::BadVersion => "bad_version",
            ErrorCode::UploadDigestMismatch | ErrorCode::StoredDigestMismatch => "bad_digest",
            ErrorCode::BadAddr => "bad_addr",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::LengthRequired => "length_required",
            ErrorCode::PreconditionFailed => "precondition_failed",
            ErrorCode::NotAcceptable => "not_acceptable",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RangeNotSatisfiable => "range_not_satisfiable",
            ErrorCode::OverQuota => "over_quota",
            ErrorCode::HeadTooLarge => "head_too_large",
            ErrorCode::Blocked => "blocked",
            ErrorCode::Internal => "internal",
            ErrorCode::NotImplemented => "not_implemented",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::BadGateway => "bad_gateway",
            ErrorCode::GatewayTimeout => "gateway_timeout",
            ErrorCode::InsufficientStorage => "insufficient_storage",
        }
    }

    /// Whether the same request may succeed later without change.
    pub const fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::OverQuota
                | ErrorCode::Overloaded
                | ErrorCode::NotReady
                | ErrorCode::BadGateway
                | ErrorCode::GatewayTimeout
        )
    }

    /// Whether answers with this code must carry Retry-After / `retry_after_ms`.
    pub const fn carries_retry_after(self) -> bool {
        self.retryable()
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON error envelope of OAP/1 and HTTP:
/// `{"code":..,"message":..,"retryable":..,"corr_id":..}` plus `retry_after_ms` when the
/// code is retryable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub code: ErrorCode,
    pub message: &'a str,
    pub corr_id: &'a str,
    /// Required for retryable codes; ignored otherwise.
    pub retry_after_ms: Option<u64>,
}

#[derive(Serialize)]
struct EnvelopeJson<'a> {
    code: &'static str,
    message: &'a str,
    retryable: bool,
    corr_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

impl Envelope<'_> {
    /// Renders the envelope as compact JSON, appended to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let retry_after_ms = if self.code.carries_retry_after() {
            Some(self.retry_after_ms.unwrap_or(1000))
        } else {
            None
        };
        let json = EnvelopeJson {
            code: self.code.as_str(),
            message: self.message,
            retryable: self.code.retryable(),
            corr_id: self.corr_id,
            retry_after_ms,
        };
        // Serialising plain strings, bools and integers into a Vec cannot fail.
        serde_json::to_writer(out, &json).expect("envelope serialisation is infallible");
    }

    /// The envelope as a JSON string.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(128);
        self.write_json(&mut out);
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }
}

/// Everything the parsers and encoders of this crate can reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("frame len {len} is smaller than the {header_len}-byte header")]
    FrameTooShort { len: u32, header_len: usize },
    #[error("frame len {len} exceeds max_frame {max_frame}")]
    FrameTooLarge { len: u64, max_frame: u32 },
    #[error(
        "a request frame (HELLO or START) of len {len} exceeds the {max}-byte limit for a bearer token and a JSON request"
    )]
    RequestFrameTooLarge { len: u32, max: u32 },
    #[error("protocol version {ver} is not supported (this node speaks 1)")]
    UnsupportedVersion { ver: u16 },
    #[error("unknown flag bits {unknown:#06x} in flags {flags:#06x}")]
    UnknownFlags { flags: u16, unknown: u16 },
    #[error("cap_len {cap_len} on a frame without START")]
    CapabilityWithoutStart { cap_len: u16 },
    #[error("cap_len {cap_len} exceeds the {body_len} bytes after the header")]
    CapabilityOverrun { cap_len: u16, body_len: u32 },
    #[error(
        "compressed payload of {compressed_len} bytes inflates past the bound of {bound} bytes"
    )]
    InflateTooLarge { compressed_len: usize, bound: u64 },
    #[error("compressed payload is not valid zstd: {reason}")]
    InflateCorrupt { reason: String },
    #[error("{what}: invalid JSON: {reason}")]
    BadJson { what: &'static str, reason: String },
    #[error("bundle manifest: {reason}")]
    BadManifest { reason: String },
    #[error("{what}: {reason}")]
    BadMessage {
        what: &'static str,
        reason: &'static str,
    },
    #[error("DATA payload of {payload_len} bytes announces a {header_len}-byte header")]
    DataHeaderOverrun { header_len: u16, payload_len: usize },
    #[error("address must be 'b3:' plus 64 lowercase hex digits, got {got_len} bytes: {reason}")]
    BadAddress {
        got_len: usize,
        reason: &'static str,
    },
    #[error("partition table: {reason}")]
    BadPartitionTable { reason: &'static str },
    #[error("chunk tree of a {object_len}-byte object needs {expected} bytes of chaining values, got {got}")]
    TreeLength {
        object_len: u64,
        expected: u64,
        got: usize,
    },
    #[error("chunk tree does not hash to the object's root {root}")]
    TreeRootMismatch { root: String },
    #[error("group {group} of {group_count}: {got_len} bytes do not match its chaining value")]
    GroupMismatch {
        group: u64,
        group_count: u64,
        got_len: usize,
    },
    #[error("group {group} has {got_len} bytes, a {object_len}-byte object needs {expected_len}")]
    GroupLength {
        group: u64,
        object_len: u64,
        expected_len: u64,
        got_len: usize,
    },
    #[error("verified stream, group {group}: {reason}")]
    ProofMismatch { group: u64, reason: &'static str },
    #[error("bao answer, chunk {chunk}: {reason}")]
    BaoMismatch { chunk: u64, reason: &'static str },
    #[error("group {group} is past the last group ({group_count} groups)")]
    GroupOutOfRange { group: u64, group_count: u64 },
    #[error("request head exceeds the {limit_bytes}-byte limit")]
    HeadTooLarge { limit_bytes: usize },
    #[error("request head has more than {limit} header fields")]
    TooManyHeaders { limit: usize },
    #[error("malformed request head: {reason}")]
    BadHead { reason: &'static str },
    #[error("Transfer-Encoding {value:?} is not supported (only chunked)")]
    UnsupportedTransferEncoding { value: String },
    #[error("malformed chunked body: {reason}")]
    BadChunkedBody { reason: &'static str },
    #[error("response head exceeds the {limit_bytes}-byte limit")]
    ResponseHeadTooLarge { limit_bytes: usize },
    #[error("response head has more than {limit} header fields")]
    TooManyResponseHeaders { limit: usize },
    #[error("malformed response head: {reason}")]
    BadResponseHead { reason: &'static str },
    #[error("the stream ended {missing} bytes short of a whole frame")]
    TruncatedFrame { missing: usize },
}

impl Error {
    /// The taxonomy entry a peer sees for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::FrameTooShort { .. }
            | Error::TruncatedFrame { .. }
            | Error::UnknownFlags { .. }
            | Error::CapabilityWithoutStart { .. }
            | Error::CapabilityOverrun { .. }
            | Error::DataHeaderOverrun { .. }
            | Error::InflateCorrupt { .. } => ErrorCode::BadFrame,
            Error::FrameTooLarge { .. }
            | Error::RequestFrameTooLarge { .. }
            | Error::InflateTooLarge { .. } => ErrorCode::TooLarge,
            Error::UnsupportedVersion { .. } => ErrorCode::BadVersion,
            Error::BadJson { .. }
            | Error::BadManifest { .. }
            | Error::BadMessage { .. }
            | Error::BadHead { .. }
            | Error::BadChunkedBody { .. } => ErrorCode::BadRequest,
            Error::BadAddress { .. } => ErrorCode::BadAddr,
            Error::HeadTooLarge { .. } | Error::TooManyHeaders { .. } => ErrorCode::HeadTooLarge,
            Error::UnsupportedTransferEncoding { .. } => ErrorCode::NotImplemented,
            Error::BadPartitionTable { .. }
            | Error::TreeLength { .. }
            | Error::TreeRootMismatch { .. }
            | Error::GroupLength { .. }
            | Error::GroupOutOfRange { .. } => ErrorCode::Internal,
            Error::GroupMismatch { .. }
            | Error::ProofMismatch { .. }
            | Error::BaoMismatch { .. } => ErrorCode::StoredDigestMismatch,
            // What an upstream answered: a read-through reports it as a bad gateway.
            Error::ResponseHeadTooLarge { .. }
            | Error::TooManyResponseHeaders { .. }
            | Error::BadResponseHead { .. } => ErrorCode::BadGateway,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taxonomy_matches_the_contract_table() {
        let expect = [
            (ErrorCode::BadRequest, 400, "bad_request", false),
            (ErrorCode::BadFrame, 400, "bad_frame", false),
            (ErrorCode::BadVersion, 400, "bad_version", false),
            (ErrorCode::UploadDigestMismatch, 400, "bad_digest", false),
            (ErrorCode::BadAddr, 400, "bad_addr", false),
            (ErrorCode::Unauthorized, 401, "unauthorized", false),
            (ErrorCode::Forbidden, 403, "forbidden", false),
            (ErrorCode::NotFound, 404, "not_found", false),
            (
                ErrorCode::MethodNotAllowed,
                405,
                "method_not_allowed",
                false,
            ),
            (ErrorCode::NotAcceptable, 406, "not_acceptable", false),
            (ErrorCode::RequestTimeout, 408, "request_timeout", false),
            (ErrorCode::LengthRequired, 411, "length_required", false),
            (ErrorCode::TooLarge, 413, "too_large", false),
            (
                ErrorCode::RangeNotSatisfiable,
                416,
                "range_not_satisfiable",
                false,
            ),
            (
                ErrorCode::PreconditionFailed,
                412,
                "precondition_failed",
                false,
            ),
            (ErrorCode::OverQuota, 429, "over_quota", true),
            (ErrorCode::HeadTooLarge, 431, "head_too_large", false),
            (ErrorCode::Blocked, 451, "blocked", false),
            (ErrorCode::Internal, 500, "internal", false),
            (ErrorCode::StoredDigestMismatch, 500, "bad_digest", false),
            (ErrorCode::NotImplemented, 501, "not_implemented", false),
            (ErrorCode::BadGateway, 502, "bad_gateway", true),
            (ErrorCode::GatewayTimeout, 504, "gateway_timeout", true),
            (ErrorCode::Overloaded, 503, "overloaded", true),
            (ErrorCode::NotReady, 503, "not_ready", true),
            (
                ErrorCode::InsufficientStorage,
                507,
                "insufficient_storage",
                false,
            ),
        ];
        assert_eq!(expect.len(), ErrorCode::ALL.len());
        for (code, status, name, retryable) in expect {
            assert_eq!(code.status(), status, "{code:?}");
            assert_eq!(code.oap_code(), status, "{code:?}");
            assert_eq!(code.as_str(), name, "{code:?}");
            assert_eq!(code.retryable(), retryable, "{code:?}");
        }
    }

    #[test]
    fn envelope_renders_exact_json() {
        let env = Envelope {
            code: ErrorCode::NotFound,
            message: "no object b3:00 here",
            corr_id: "42",
            retry_after_ms: Some(5),
        };
        assert_eq!(
            env.to_json(),
            r#"{"code":"not_found","message":"no object b3:00 here","retryable":false,"corr_id":"42"}"#
        );
    }

    #[test]
    fn retryable_envelope_always_carries_retry_after() {
        let env = Envelope {
            code: ErrorCode::OverQuota,
            message: "tenant \"x\" is over quota",
            corr_id: "c-1",
            retry_after_ms: None,
        };
        assert_eq!(
            env.to_json(),
            r#"{"code":"over_quota","message":"tenant \"x\" is over quota","retryable":true,"corr_id":"c-1","retry_after_ms":1000}"#
        );
    }

    #[test]
    fn errors_say_what_an_operator_needs() {
        let e = Error::FrameTooLarge {
            len: 2_000_000,
            max_frame: 1_048_576,
        };
        assert_eq!(e.to_string(), "frame len 2000000 exceeds max_frame 1048576");
        assert_eq!(e.code(), ErrorCode::TooLarge);
        let e = Error::GroupMismatch {
            group: 3,
            group_count: 161,
            got_len: 65536,
        };
        assert_eq!(
            e.to_string(),
            "group 3 of 161: 65536 bytes do not match its chaining value"
        );
        assert_eq!(e.code(), ErrorCode::StoredDigestMismatch);
        assert_eq!(e.code().status(), 500);
    }
}
