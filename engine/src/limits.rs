//! Every fixed limit of the node's request path and start-up, with its unit and why.
//! Limits an operator sizes (connections, in-flight requests, timeouts, cache bytes,
//! object size, frame size) are configuration keys (`crate::config`); the ones here are
//! properties of the design and change only with it.
//!
//! The other threads' limits stay beside the code that enforces them: the mesh channel
//! length (`ron_shards::mesh::mesh_channel_len`), the stored content-type length
//! (`ron_shards::record::CONTENT_TYPE_LEN_MAX`), the control link's periods and report
//! size (`ron_link::link`, `ron_link::policy`), the admin server's connections, head
//! size and deadlines (`ron_control::admin`), TLS send buffering
//! (`ron_io::tls::SEND_BUFFER_BYTES_MAX`), and the codec's frame, head and inflate
//! bounds (`ron_codec`).

use std::time::Duration;

use ron_codec::tree::GROUP_LEN_BYTES;

// --- HTTP/2 (engine/src/http/http2/, docs/design/http2.md) ---

/// Streams a client may have open on one connection (SETTINGS_MAX_CONCURRENT_STREAMS;
/// nginx's `http2_max_concurrent_streams` default). Each is a request admitted like any
/// other: the shard's in-flight gate bounds them all together.
pub const H2_STREAMS_CONCURRENT_MAX: u32 = 128;
/// Bytes a client may send on one stream before the node reads them (an upload's
/// window; SETTINGS_INITIAL_WINDOW_SIZE). One DATA frame is held at most per stream.
pub const H2_STREAM_WINDOW_BYTES: u32 = 256 * 1024;
/// Bytes a client may send on the whole connection ahead of the node's reads.
pub const H2_CONNECTION_WINDOW_BYTES: u32 = 1024 * 1024;
/// Bytes the node queues per stream for sending (the stream waits for window beyond).
pub const H2_SEND_BUFFER_BYTES_MAX: usize = 64 * 1024;
/// Bytes all of a connection's streams queue for sending together, until the socket
/// takes them: a client that opens its windows and never reads had each of its 128
/// streams queue its own send buffer, 8 MiB a connection. Four DATA frames of a full
/// stream's send: enough to keep a socket fed between the connection task's turns.
pub const H2_SEND_QUEUED_BYTES_MAX: usize = 4 * H2_SEND_BUFFER_BYTES_MAX;
/// Streams a client opened and reset before they were served, held at once: past it,
/// GOAWAY (the rapid-reset attack, CVE-2023-44487).
pub const H2_PENDING_ACCEPT_RESETS_MAX: usize = 20;
/// Streams the node reset for a client's protocol errors on one connection: past it,
/// GOAWAY (a client that makes the node reset streams for ever costs it work each time).
pub const H2_LOCAL_ERROR_RESETS_MAX: usize = 256;

// --- answers (both protocols) ---

/// A body slice of at most this many bytes leaves with its head in one send: an HTTP
/// response gathers head and slice in one `sendmsg` on plain TCP (copied behind the
/// head only over TLS), an OAP frame copies it behind its head. Larger slices go out on
/// their own, from the arena with `sendfile` or straight from the verified buffer.
pub const COALESCE_BODY_BYTES_MAX: usize = 16 * 1024;

/// A head sent ahead of a zero-copy body waits for it (`MSG_MORE`) and rides in its
/// first packet when head and body fit one TCP packet as the stack builds them (64 KiB
/// GSO, less room for headers), and for a longer body too unless the socket's
/// congestion control paces its sends: one packet fewer per answer (64 KiB ranges
/// 1.04–1.14 times as many per busy core with cubic; docs/PERF.md, "A head in the
/// body's first packet"). A pacing one (BBR) with no fq qdisc to pace for it
/// (loopback, most devices by default) holds the short last packet that head and body
/// leave back with a timer behind the full one — per request, costly in a VM — so
/// there such a head goes alone, as nginx's does (docs/PERF.md, "Where the server's
/// core goes").
pub const HEAD_WITH_BODY_BYTES_MAX: u64 = 64 * 1024 - 1024;

/// Whether a `sendfile` run that does not end its body corks the socket (`TCP_CORK`,
/// until the body's end): a run's last segment is short, and every run pushes one. The
/// cork saves those pushes and costs about what a few of them do (this VM, docs/PERF.md,
/// "The cork's price"). So a run corks when it is short (under this: groups scattered by
/// ranges in a full cache) or when more than [`UNCORKED_REST_BYTES_MAX`] follows it (a
/// stream of many window runs); a long run with at most two windows behind it (a 1 MiB
/// answer in two windows: 0.81–0.85 of nginx per busy core corked, 0.94–0.97 not)
/// does not.
pub const CORK_RUN_BYTES_MAX: u64 = 256 * 1024;

/// A long run followed by at most this much of its body leaves the socket uncorked
/// ([`CORK_RUN_BYTES_MAX`]): two more window runs at most, fewer pushes than the cork
/// costs. A 256 MiB stream of window runs uncorked cost 1.2 times the same corked.
pub const UNCORKED_REST_BYTES_MAX: u64 = 1 << 20;

/// A GET body of at most this many bytes (a 64 KiB range across two groups, with room)
/// has all its groups fetched and verified before the head is written, so a rotten
/// group is still a clean error rather than a cut-short body.
pub const VERIFY_BEFORE_HEAD_BYTES_MAX: u64 = 2 * GROUP_LEN_BYTES;

/// At most this many groups are held verified before the head (a
/// [`VERIFY_BEFORE_HEAD_BYTES_MAX`] range that starts mid-group spans three).
pub const VERIFY_BEFORE_HEAD_GROUPS_MAX: usize = 3;

/// Longest error message sent in an envelope, bytes: a message may quote client input
/// (a bad JSON field), and the envelope must stay small.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 1024;

/// What a client refused by the in-flight gate (or a draining node) is told to wait.
pub const OVERLOAD_RETRY_AFTER_MS: u64 = 1000;

/// The most `uploads_open_max` may be: the uploads a shard has open at once (HTTP and
/// OAP/1 together, 32 by default). Each holds temp files (a data and a parity file per
/// data dir) and direct-write buffers, and gives its in-flight slot back while it waits
/// for its client, so the in-flight gate does not bound them. Past the configured
/// number: 503 `overloaded`. Their descriptors are in the open-files budget
/// (`preflight`), so the ceiling keeps that budget within what a host grants.
pub const UPLOADS_OPEN_MAX_CEILING: u32 = 1024;

/// Most object files a shard may keep open (`open_files_max`): Linux's default ceiling
/// on one process's descriptors (`fs.nr_open`). The open-files arithmetic at start-up
/// adds it per shard.
pub const OPEN_FILES_MAX_CEILING: usize = 1 << 20;

// --- HTTP/1.1 ---

/// Longest `X-Corr-ID` echoed back, bytes; longer or unsafe ones are replaced by ours.
pub const CORR_ID_BYTES_MAX: usize = 64;

/// A connection's read buffer holds one request head plus one group of body, so a
/// pipelined head after a body never needs a second buffer.
pub fn http_read_buffer_bytes(head_bytes_max: usize) -> usize {
    head_bytes_max + GROUP_LEN_BYTES as usize
}

/// Free read buffers a shard keeps for reuse, per kind (HTTP, OAP/1); connections hold
/// one only while they have bytes to parse (`crate::buffers`), so this bounds the pool,
/// not the connections.
pub const READ_BUFFERS_POOLED_MAX: usize = 64;

/// Free HTTP write buffers a shard keeps for reuse (each at most
/// `buffers::WRITE_BUFFER_KEPT_BYTES_MAX`, 32 KiB: 2 MiB per shard at most).
pub const WRITE_BUFFERS_POOLED_MAX: usize = 64;

// --- OAP/1 ---

/// Response frames a request may have queued before its task waits for the writer:
/// two keeps the next group's frame ready while one is on the wire.
pub const OUTBOX_FRAMES_MAX: usize = 2;

/// The writer gathers small frames into one send of at most this many bytes.
pub const WRITE_BATCH_BYTES_MAX: usize = 64 * 1024;

/// A compressed HELLO or START (a request: a small JSON document) inflates to at most
/// this many bytes. They are inflated before admission, so this is all a client can
/// make the node inflate without having passed its quota and the in-flight gate.
pub const REQUEST_INFLATE_BYTES_MAX: u64 = 16 * 1024;

/// The largest HELLO or START frame (a request) a node with `head_bytes_max` takes: its
/// header, a bearer token no longer than an HTTP head may be, and a request of
/// [`REQUEST_INFLATE_BYTES_MAX`] — what a client that has not been admitted can make a
/// connection hold part way through a frame, as an HTTP head is (the largest 1 MiB
/// frames are an admitted upload's DATA; every other body is read and dropped unheld).
pub fn oap_request_frame_bytes_max(head_bytes_max: usize, max_frame: u32) -> u32 {
    let bytes =
        ron_codec::frame::HEADER_LEN as u64 + head_bytes_max as u64 + REQUEST_INFLATE_BYTES_MAX;
    bytes.min(u64::from(max_frame)) as u32
}

/// Socket reads go into a buffer of this size (one 64 KiB DATA frame per read).
pub const OAP_READ_BUFFER_BYTES: usize = 64 * 1024;

// --- the shard ---

/// Pending connections the kernel queues per shard listener.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Most records in one group commit (one fsync pass and one LMDB transaction).
pub const COMMIT_BATCH_RECORDS_MAX: usize = 1024;

/// How often the shard's heartbeat wakes; a wake later than [`STALL_THRESHOLD`] past
/// its due time means a task held the reactor.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_millis(10);
pub const STALL_THRESHOLD: Duration = Duration::from_millis(20);
/// How often a shard without connections wakes (its control link, the stop flag): an
/// idle node wakes rarely, and notices SIGTERM within this.
pub const IDLE_TICK: Duration = Duration::from_secs(1);

/// While the shard holds `connections_max` connections, the accept loop looks again
/// after this long (the kernel backlog holds new ones meanwhile).
pub const ACCEPT_FULL_BACKOFF: Duration = Duration::from_millis(5);

/// After a failed accept (e.g. out of file descriptors) the loop waits this long.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(10);
/// While accepts keep failing, at most one log line per this period (each is counted).
pub const ACCEPT_ERROR_LOG_PERIOD: Duration = Duration::from_secs(10);

/// How often a draining shard looks whether its in-flight requests have finished.
pub const DRAIN_POLL_PERIOD: Duration = Duration::from_millis(10);

/// Longest wait, at a stop, for a shard's read-through fetches to end once abandoned
/// (each ends at its next await).
pub const FETCH_STOP_WAIT: Duration = Duration::from_secs(1);

/// Longest wait, at a stop, for a shard's background services and group commit to
/// finish what they are doing (a repair's write-back, a batch's sync and index commit).
pub const SHARD_STOP_WAIT: Duration = Duration::from_secs(5);

/// Longest wait, at a stop, for the other shards to reach the same step (drained, or
/// stopped): a shard that never arrives (failed) holds the others no longer.
pub const STOP_STEP_WAIT: Duration = Duration::from_secs(10);

/// A start past this is logged, and systemd's start timeout is extended by it every half
/// of it while shards are still starting (the node waits for them however long).
pub const READY_WAIT: Duration = Duration::from_secs(60);

/// Most copies an upload may ask for (the most `replicas` allows).
pub const COPIES_MAX: usize = 16;

/// Longest wait of an upload that asks for copies on other nodes (`PUT /o?copies=N`)
/// once it is durable here; past it the answer is 504 with the copies made so far.
pub const COPIES_WAIT: Duration = Duration::from_secs(30);

/// Read-through fetches under way per shard (each holds one upstream connection, a
/// window of at most 4 MiB of verified groups and an upload); a miss past it is 503.
pub const FETCHES_PER_SHARD_MAX: usize = 64;

/// Parsed bundle manifests a shard's HTTP front end keeps (`http/bundle.rs`), at most.
pub const MANIFEST_CACHE_ENTRIES_MAX: usize = 64;
/// Bytes of those manifests (their encoded form), at most.
pub const MANIFEST_CACHE_BYTES_MAX: usize = 32 << 20;
/// Objects a shard remembers are not manifests, with why (~200 bytes each): each one
/// forgotten costs a read of up to 16 MiB when asked for again.
pub const MANIFEST_REFUSALS_MAX: usize = 4096;
/// Manifests a shard reads and parses at once, at most (each up to 16 MiB in memory).
pub const MANIFEST_LOADS_MAX: u64 = 4;
/// The longest one manifest load may hold its slot once its object is found (reading
/// it, read through if need be, and parsing it): a stored 16 MiB manifest takes
/// milliseconds, so only a trickling upstream reaches it.
pub const MANIFEST_LOAD_MS_MAX: u64 = 20_000;
/// Manifests up to this size are parsed on the shard; larger ones on the blocking pool.
pub const MANIFEST_INLINE_PARSE_BYTES_MAX: usize = 64 * 1024;
/// How long the close of an HTTP/1.1 connection whose answer left a request's body
/// unread, or of an OAP/1 connection after its protocol error's answer, waits for the
/// client to stop sending (nginx's `lingering_timeout`, 5 s), and how much of what it
/// sends meanwhile is read and dropped, at most.
pub const LINGER_MS: u64 = 5_000;
pub const LINGER_BYTES_MAX: usize = 64 << 20;
