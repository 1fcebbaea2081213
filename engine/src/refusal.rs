//! [`Refusal`]: every reason a request is not (or not fully) served, in one type shared
//! by the service and both front ends. Each variant carries the context its message
//! needs, maps onto exactly one entry of the error taxonomy ([`ErrorCode`]), and is
//! written to the client the same way by either protocol ([`Refusal::write_envelope`])
//! and logged once where that happens ([`Refusal::log`]).

use ron_codec::{Address, Envelope, ErrorCode};
use ron_shards::{ShardError, ShardIndex};

use crate::limits::{ERROR_MESSAGE_BYTES_MAX, OVERLOAD_RETRY_AFTER_MS};

#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    // --- the object and the shard ---
    /// Not found, rotten bytes, an I/O or mesh failure: the shard says which.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// A head, frame, message or body the codec rejected.
    #[error(transparent)]
    Codec(#[from] ron_codec::Error),
    #[error("no requested range overlaps the object's {total} bytes")]
    RangeNotSatisfiable { total: u64 },

    // --- admission ---
    /// The tenant's token bucket is empty; `limit` names the tenant and its quota.
    #[error("{limit}")]
    OverQuota { limit: String, retry_after_ms: u64 },
    #[error("shard {shard} has {inflight} requests in flight (limit {limit})")]
    Overloaded {
        shard: u16,
        inflight: u64,
        limit: u64,
    },
    #[error("shard {shard} has {open} uploads open, its most; try again shortly")]
    TooManyUploads { shard: u16, open: u32 },
    #[error("the node is shutting down")]
    ShuttingDown,

    // --- uploads ---
    /// A write without a write token. `carrier` says where the token goes in this
    /// protocol; `tenant_id` is OAP's header field (HTTP has none).
    #[error("{}", unauthorized_text(*tenant_id, *token_given, carrier))]
    Unauthorized {
        tenant_id: Option<u128>,
        token_given: bool,
        carrier: &'static str,
    },
    #[error("an upload of {len} bytes exceeds the object limit of {limit} bytes")]
    TooLarge { len: u64, limit: u64 },
    #[error("upload ended after {received} of the {declared} bytes announced")]
    ShortUpload { received: u64, declared: u64 },
    #[error("upload carries bytes past the {declared} bytes announced")]
    UploadOverrun { declared: u64 },
    #[error("body hashes to {computed}, not to the announced {announced}")]
    DigestMismatch {
        computed: Address,
        announced: Address,
    },

    // --- HTTP/1.1 routing ---
    #[error("an upload needs Content-Length or Transfer-Encoding: chunked")]
    LengthRequired,
    #[error("no such route; objects live under /o, raw blocks by CID under /ipfs")]
    NoRoute,
    #[error("method not allowed here; allowed: {allowed}")]
    MethodNotAllowed { allowed: &'static str },
    #[error("request head not complete within {timeout_ms} ms")]
    HeadTimeout { timeout_ms: u64 },
    #[error("frame header not complete within {timeout_ms} ms of its first byte")]
    FrameHeaderTimeout { timeout_ms: u64 },
    #[error("upload fell behind the minimum rate: {received} bytes received, {rate_min_bytes_per_s} bytes/s owed after a grace of {grace_ms} ms; cancelled")]
    UploadTooSlow {
        received: u64,
        rate_min_bytes_per_s: u64,
        grace_ms: u64,
    },
    #[error("If-Match names no current ETag of {addr}: its one ETag is the strong \"{addr}\"")]
    PreconditionFailed { addr: Address },
    #[error("precondition failed for {addr}: {why}; nothing was written or removed")]
    WritePreconditionFailed { addr: Address, why: &'static str },
    #[error(
        "If-Match names no current ETag of this bao answer: its one ETag is the strong {etag}"
    )]
    BaoPreconditionFailed { etag: String },
    #[error("If-Match names no current ETag of this block: its one ETag is the strong {etag}")]
    BlockPreconditionFailed { etag: String },
    #[error("Accept asks for application/x-bao only at a chunk-group-log this node does not serve (0 through 6)")]
    NotAcceptable,
    #[error("chunk-group-log={given:?}: outboards are served at chunk-group-log 0 through 6")]
    BadChunkGroupLog { given: String },

    // --- OAP/1 framing (each closes the connection) ---
    #[error("frame flags {flags:#06x}: a client frame carries REQ and only REQ, START, END, COMP (unsupported: {unsupported:#06x})")]
    ClientFlags { flags: u16, unsupported: u16 },
    #[error("app_proto_id {app} is not served here (0 HELLO, 1 objects)")]
    UnknownApp { app: u16 },
    #[error("HELLO must be the first frame of the connection")]
    HelloNotFirst,
    #[error("corr_id {corr_id} is already in flight on this connection")]
    DuplicateCorrId { corr_id: u64 },
    #[error("more than max_inflight = {limit} requests in flight on one connection")]
    TooManyInFlight { limit: u32 },
    #[error("DATA for corr_id {corr_id}, which has no upload in progress")]
    DataWithoutUpload { corr_id: u64 },

    // --- OAP/1 uploads (answered on the request's corr_id) ---
    #[error("PUT announces {len} bytes but its START frame carries END")]
    PutWithoutData { len: u64 },
    #[error("DATA at offset {offset} of {total_len} bytes, expected offset {expected_offset} of {expected_total}")]
    DataOutOfOrder {
        offset: u64,
        total_len: u64,
        expected_offset: u64,
        expected_total: u64,
    },
    #[error("DATA names {named} but START announced {announced}")]
    DataNamesOther { named: Address, announced: Address },

    // --- bundles (`/o/<manifest>/<path>`) ---
    #[error("bundle {bundle} has no entry {path:?}")]
    NoBundleEntry { bundle: Address, path: String },
    #[error(
        "bundle {bundle}: {dir:?} is a directory without index.html (directories are not listed)"
    )]
    NoBundleIndex { bundle: Address, dir: String },
    #[error("bundle path {path:?}: {reason}")]
    BadBundlePath { path: String, reason: String },
    #[error("bundle {bundle}: its manifest says {path:?} is {claimed} bytes in {coding}, the object {piece} holds {stored}")]
    BundlePieceLength {
        bundle: Address,
        path: String,
        coding: &'static str,
        piece: Address,
        claimed: u64,
        stored: u64,
    },
    #[error("Accept-Encoding refuses identity and every coding {path:?} is stored in ({stored})")]
    NoAcceptableCoding { path: String, stored: String },

    // --- the trustless gateway (`/ipfs/<cid>`) ---
    #[error("{given:?} is not a CID this gateway reads: {reason}")]
    BadCid { given: String, reason: String },
    #[error("{cid}: {why}; a ron object is the raw block of a CIDv1 with a BLAKE3-256 multihash (bafkr4i…)")]
    CidNotServed { cid: String, why: String },
    #[error("this trustless gateway answers raw blocks when asked: send ?format=raw or Accept: application/vnd.ipld.raw")]
    BlockFormatUnsaid,
    #[error("{asked} is not served here: this gateway answers raw blocks only (?format=raw, Accept: application/vnd.ipld.raw), not CARs, IPNS records or files")]
    BlockFormatNotServed { asked: String },
    #[error("{addr} is {len} bytes, over the 2 MiB (2097152 bytes) IPFS clients accept as one block: fetch it from /o/{addr}, verified as it streams with Accept: application/x-bao")]
    BlockTooLarge { addr: Address, len: u64 },

    // --- read-through (a GET of an object this node lacks) ---
    /// Every upstream tried (providers, then the origin) failed; `last` says how the last
    /// one did.
    #[error("{addr} is not stored here and no upstream delivered a verified copy ({tried} tried; last: {last})")]
    BadGateway {
        addr: Address,
        tried: u32,
        last: String,
    },
    #[error("{addr} is not stored here and its upstream delivered nothing verified within {timeout_ms} ms")]
    GatewayTimeout { addr: Address, timeout_ms: u64 },
    /// The room check refused the length an upstream announced (`ShardError::NoRoom`
    /// in `detail`, for the operator's log).
    #[error("{addr} is not stored here and this node has no room to keep a copy ({detail})")]
    NoRoomForCopy { addr: Address, detail: String },
    #[error("the manifest of bundle {addr} did not arrive whole within {timeout_ms} ms (a slow upstream); try again")]
    ManifestLoadTimeout { addr: Address, timeout_ms: u64 },
    #[error("{addr} is not stored here and the origin {upstream} has no such object")]
    UpstreamNotFound { addr: Address, upstream: String },
    #[error("shard {shard} has {fetches} read-through fetches under way, its most")]
    TooManyFetches { shard: u16, fetches: usize },
    #[error("this client has {fetches} read-through fetches under way on shard {shard}, a client's most (a quarter of the shard's)")]
    TooManyClientFetches { shard: u16, fetches: usize },
    #[error("this client has {open} uploads open on shard {shard}; the rest are kept for other clients: try again shortly")]
    TooManyClientUploads { shard: u16, open: u32 },
    #[error("this client has {waits} uploads waiting for copies on shard {shard}, a client's most: try again shortly")]
    TooManyCopyWaits { shard: u16, waits: u32 },

    #[error("removing an object needs the admin token (Authorization: Bearer <admin_token>)")]
    AdminTokenNeeded,
    #[error("{0}")]
    AdminTokenRefused(&'static str),
    #[error("no admin token is configured, so this data port grants no operator action: remove the copy through the admin port {admin} (`ron rm b3:<hex> --admin {admin}`), or set --admin-token (key admin_token) and send it as Authorization: Bearer")]
    NoAdminToken { admin: std::net::SocketAddr },
    #[error("{addr} is being committed, evicted or repaired on this node; ask again")]
    RemoveBusy { addr: Address },
    #[error("{addr} is blocked on this node by its operator's denylist")]
    Blocked { addr: Address },
    #[error("this node is not {asked}: it answers for its own copies only")]
    NotThisNode { asked: String },
    #[error("{addr} is held here only as an evictable copy, not kept")]
    NotKept { addr: Address },

    // --- copies on other nodes (PUT ?copies=N) ---
    #[error("copies must be a whole number from 1 to 16, not {given:?}")]
    BadCopies { given: String },
    #[error("copies={asked}: this network keeps {replicas} copies of an object (replicas = {replicas}); an upload can wait for at most that many")]
    CopiesOverReplicas { asked: usize, replicas: usize },
    #[error("{addr} is stored durably here, but only {copies} of the {want} copies asked for exist: the placement names no other node that could take it now (every holder asked answered, or no other node could be reached)")]
    TooFewCopies {
        addr: Address,
        copies: usize,
        want: usize,
    },
    #[error("{addr} is stored durably here, but only {copies} of the {want} copies asked for are proven: {unproven} holder(s) answered that they hold it and failed an audit of their copy (a random 64 KiB group, checked against the address)")]
    CopiesUnproven {
        addr: Address,
        copies: usize,
        want: usize,
        unproven: usize,
    },
    #[error("{addr} is stored durably here; {copies} of the {want} copies asked for exist after {waited_ms} ms (the others may follow)")]
    CopiesTimedOut {
        addr: Address,
        copies: usize,
        want: usize,
        waited_ms: u64,
    },
}

fn unauthorized_text(tenant_id: Option<u128>, token_given: bool, carrier: &str) -> String {
    let who = tenant_id.map_or(String::new(), |id| format!("tenant {id}: "));
    if token_given {
        format!("{who}the bearer token is not a write token of this node")
    } else {
        format!("{who}writes need a bearer token {carrier}")
    }
}

impl Refusal {
    /// The taxonomy entry the client sees.
    pub fn code(&self) -> ErrorCode {
        use Refusal::*;
        match self {
            Shard(e) => e.code(),
            Codec(e) => e.code(),
            RangeNotSatisfiable { .. } => ErrorCode::RangeNotSatisfiable,
            OverQuota { .. } => ErrorCode::OverQuota,
            Overloaded { .. }
            | TooManyUploads { .. }
            | TooManyClientUploads { .. }
            | TooManyCopyWaits { .. } => ErrorCode::Overloaded,
            ShuttingDown => ErrorCode::NotReady,
            Unauthorized { .. } => ErrorCode::Unauthorized,
            TooLarge { .. } => ErrorCode::TooLarge,
            DigestMismatch { .. } => ErrorCode::UploadDigestMismatch,
            LengthRequired => ErrorCode::LengthRequired,
            NoRoute | NotThisNode { .. } | NotKept { .. } | UpstreamNotFound { .. } => {
                ErrorCode::NotFound
            }
            MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            HeadTimeout { .. } | FrameHeaderTimeout { .. } | UploadTooSlow { .. } => {
                ErrorCode::RequestTimeout
            }
            PreconditionFailed { .. }
            | WritePreconditionFailed { .. }
            | BaoPreconditionFailed { .. }
            | BlockPreconditionFailed { .. } => ErrorCode::PreconditionFailed,
            NotAcceptable | NoAcceptableCoding { .. } => ErrorCode::NotAcceptable,
            NoBundleEntry { .. } | NoBundleIndex { .. } => ErrorCode::NotFound,
            BadBundlePath { .. } => ErrorCode::BadRequest,
            BundlePieceLength { .. } => ErrorCode::BadGateway,
            BadChunkGroupLog { .. } => ErrorCode::BadRequest,
            BadCid { .. } | CidNotServed { .. } => ErrorCode::BadAddr,
            BlockFormatUnsaid => ErrorCode::BadRequest,
            BlockFormatNotServed { .. } | BlockTooLarge { .. } => ErrorCode::NotAcceptable,
            ClientFlags { .. } | DuplicateCorrId { .. } | DataWithoutUpload { .. } => {
                ErrorCode::BadFrame
            }
            ShortUpload { .. }
            | UploadOverrun { .. }
            | UnknownApp { .. }
            | HelloNotFirst
            | TooManyInFlight { .. }
            | PutWithoutData { .. }
            | DataOutOfOrder { .. }
            | DataNamesOther { .. } => ErrorCode::BadRequest,
            BadGateway { .. } => ErrorCode::BadGateway,
            GatewayTimeout { .. } | ManifestLoadTimeout { .. } => ErrorCode::GatewayTimeout,
            NoRoomForCopy { .. } => ErrorCode::InsufficientStorage,
            TooManyFetches { .. } | TooManyClientFetches { .. } => ErrorCode::Overloaded,
            BadCopies { .. } | CopiesOverReplicas { .. } => ErrorCode::BadRequest,
            TooFewCopies { .. } | CopiesUnproven { .. } => ErrorCode::NotReady,
            CopiesTimedOut { .. } => ErrorCode::GatewayTimeout,
            Blocked { .. } => ErrorCode::Blocked,
            AdminTokenNeeded => ErrorCode::Unauthorized,
            AdminTokenRefused(_) | NoAdminToken { .. } => ErrorCode::Forbidden,
            RemoveBusy { .. } => ErrorCode::NotReady,
        }
    }

    /// The HTTP status, which is also OAP's `code` field.
    pub fn status(&self) -> u16 {
        self.code().status()
    }

    /// How long the client should wait, for the codes that carry a wait.
    pub fn retry_after_ms(&self) -> Option<u64> {
        let code = self.code();
        if !code.carries_retry_after() {
            return None;
        }
        Some(match self {
            Refusal::OverQuota { retry_after_ms, .. } => *retry_after_ms,
            _ => OVERLOAD_RETRY_AFTER_MS,
        })
    }

    /// Appends the JSON error envelope (message cut at [`ERROR_MESSAGE_BYTES_MAX`]).
    pub fn write_envelope(&self, corr_id: &str, out: &mut Vec<u8>) {
        // The operator's log has the file and the error; the client needs neither.
        let message = match self.code() {
            ErrorCode::InsufficientStorage if matches!(self, Refusal::NoRoomForCopy { .. }) => {
                NO_ROOM_FOR_COPY_MESSAGE.to_string()
            }
            ErrorCode::InsufficientStorage => STORAGE_FULL_MESSAGE.to_string(),
            _ => self.to_string(),
        };
        Envelope {
            code: self.code(),
            message: cut_at_char_boundary(&message, ERROR_MESSAGE_BYTES_MAX),
            corr_id,
            retry_after_ms: self.retry_after_ms(),
        }
        .write_json(out);
    }

    /// Logs the answer once: server faults at warn, refusals (4xx, 429, 503) at debug,
    /// so a flood of refusals never floods the log. Every line names the request, the
    /// shard and the reason.
    pub fn log(&self, shard: ShardIndex, corr_id: &str) {
        let code = self.code();
        let refused =
            code.status() < 500 || matches!(code, ErrorCode::Overloaded | ErrorCode::NotReady);
        let (code, reason) = (code.as_str(), self);
        if refused {
            tracing::debug!(corr_id, shard = shard.0, code, %reason, "request refused");
        } else {
            tracing::warn!(corr_id, shard = shard.0, code, %reason, "request failed");
        }
    }
}

const STORAGE_FULL_MESSAGE: &str =
    "the node has no space left to store this upload; nothing was stored";
const NO_ROOM_FOR_COPY_MESSAGE: &str =
    "the node is not storing this object and has no space left to keep a copy of it";

pub(crate) fn cut_at_char_boundary(text: &str, bytes_max: usize) -> &str {
    let mut cut = text.len().min(bytes_max);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_failed() {
        let oap = Refusal::Unauthorized {
            tenant_id: Some(0),
            token_given: false,
            carrier: "in the START frame's capability section",
        };
        assert_eq!(
            oap.to_string(),
            "tenant 0: writes need a bearer token in the START frame's capability section"
        );
        let http = Refusal::Unauthorized {
            tenant_id: None,
            token_given: true,
            carrier: "in Authorization: Bearer <token>",
        };
        assert_eq!(
            http.to_string(),
            "the bearer token is not a write token of this node"
        );
        let big = Refusal::TooLarge { len: 10, limit: 4 };
        assert_eq!(
            big.to_string(),
            "an upload of 10 bytes exceeds the object limit of 4 bytes"
        );
        assert_eq!(big.status(), 413);
    }

    #[test]
    fn waits_default_for_overload_and_follow_the_bucket_for_quotas() {
        let quota = Refusal::OverQuota {
            limit: "tenant \"a\" is over its quota".into(),
            retry_after_ms: 250,
        };
        assert_eq!(quota.retry_after_ms(), Some(250));
        assert_eq!(Refusal::ShuttingDown.retry_after_ms(), Some(1000));
        assert_eq!(Refusal::NoRoute.retry_after_ms(), None);
    }

    #[test]
    fn envelopes_are_bounded_and_cut_on_a_character() {
        let long = Refusal::OverQuota {
            limit: "é".repeat(ERROR_MESSAGE_BYTES_MAX),
            retry_after_ms: 5,
        };
        let mut out = Vec::new();
        long.write_envelope("c-1", &mut out);
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["code"], "over_quota");
        assert_eq!(json["retry_after_ms"], 5);
        assert_eq!(json["corr_id"], "c-1");
        let message = json["message"].as_str().unwrap();
        assert!(message.len() <= ERROR_MESSAGE_BYTES_MAX && message.len() > 1000);
    }
}
