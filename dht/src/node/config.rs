//! What the engine configures ([`DhtConfig`]) and every fixed limit and period of the
//! DHT thread, in one place: ticks, TTLs, Kademlia's parameters, the bounds on what the
//! thread holds (announced keys, peers, resolves, connections) and how long a stop
//! waits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use libp2p::{Multiaddr, StreamProtocol};

use crate::store::{StoreLimits, PROVIDER_TTL_MAX};

/// How often the DHT thread looks at announcements, flushes the store and publishes
/// while it has work in hand (a publication, a resolve, a placement, buffered records…).
pub const DHT_TICK_MS: u64 = 100;
/// How often it ticks with nothing in hand (the gauges, the bootstrap retry, the routing
/// refresh and the sweep's rest are all seconds or more). Ten ticks a second were most
/// of an idle node's CPU (a wake-up costs ~0.1 ms on a VM); the first announcement or
/// request wakes the thread at once (`AnnounceBell`, the request channel).
pub const DHT_IDLE_TICK_MS: u64 = 1_000;
/// How long [`crate::node::DhtThread::stop`] waits for the thread to finish its tick,
/// commit the store's buffered writes and exit.
pub const STOP_WAIT_MS: u64 = 5_000;
/// Kademlia's protocol name: ron's DHT is its own network, not the IPFS one.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/ron/kad/1.0.0");
/// What identify says this node speaks (`/ipfs/id/1.0.0`'s `protocolVersion`).
pub const IDENTIFY_PROTOCOL_VERSION: &str = "/ron/1.0.0";
/// libp2p ping on every connection this often; an answer not back within
/// [`PING_TIMEOUT`] closes the connection: a peer whose process stopped answering (a
/// host and its kernel still there) is counted lost within their sum. A peer cut off or
/// gone with its host is the kernel's to see, sooner ([`TCP_KEEPALIVE_IDLE`]). A ping
/// costs each end ~0.1 ms of a core (libp2p's per-connection machinery around 32 bytes,
/// and the yamux RTT ping it brings along): every 5 s on the ~150 connections a node
/// keeps, that was 0.8 % of a core; every 30 s, 0.13 % at 300 nodes (docs/PERF.md).
pub const PING_INTERVAL: Duration = Duration::from_secs(60);
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Every libp2p TCP connection: a keepalive probe after this long without a segment
/// from the peer, then every [`TCP_KEEPALIVE_INTERVAL`]; the kernel closes a
/// connection whose data or probes went unacknowledged for [`TCP_USER_TIMEOUT`]. A peer
/// cut off by a partition, or gone with its host, is counted lost within ~9 s, at the
/// kernel's cost (a probe and its ACK), whether the connection was idle or busy — TCP
/// alone retransmits for many minutes (docs/design/faults.md).
pub const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(4);
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(8);
/// A peer whose last ping answer is older than this (two pings' time) is not counted
/// alive.
pub const ALIVE_WITHIN: Duration = Duration::from_secs(120);
/// Provider records live this long unless republished (the seeds' plan: 24 h).
pub const PROVIDER_TTL: Duration = Duration::from_secs(24 * 3_600);
/// Our keys are published again after this long (the seeds' plan: 12 h).
pub const REPUBLISH_AFTER: Duration = Duration::from_secs(12 * 3_600);
/// A Kademlia query gives up after this long.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// A Kademlia request to one peer (`FIND_NODE`, `GET_PROVIDERS`) waits this long for
/// its answer once its stream is open; past it the peer counts as failed for that query,
/// which goes on without it. A peer answers one from its routing table or its store in
/// milliseconds; at libp2p-kad's default (10 s) one peer that never answers, among a
/// key's k closest, held every lookup of that key until the query's own timeout.
pub const KAD_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Kademlia's k: providers are published to the k peers closest to a key.
pub const K_VALUE: usize = 20;
/// Peers a lookup asks for: k, the most libp2p-kad returns (it caps
/// `get_n_closest_peers` at its own k, 20, whatever is asked — asking 40 got 20, which
/// read as "every peer there is"; docs/design/dht.md).
pub const PUBLISH_LOOKUP_PEERS: usize = K_VALUE;
/// Each key is published to its this many closest peers: half the lookup, so that the
/// keys of a region near the batch's first key have theirs among the lookup's k
/// (`crate::closest`) and a batch needs one lookup, not one per key.
pub const PROVIDE_TO_CLOSEST: usize = K_VALUE / 2;
/// Optimistic provide: a fresh key also goes at once, before its lookup ends, to the
/// peers of this node's routing table within the share of the key space where this
/// many peers are expected (half of [`PROVIDE_TO_CLOSEST`]: such a peer is one of the
/// key's k/2 closest 99.8 % of the time when the network's size is known, `crate::
/// closest::likely_closest`'s test) — at most [`EARLY_PROVIDE_PEERS`] of them. A fresh
/// object is then findable after one request instead of a whole lookup (seconds while
/// many uploads' lookups dial at once: docs/design/dht.md).
pub const EARLY_PROVIDE_RANK: usize = PROVIDE_TO_CLOSEST / 2;
pub const EARLY_PROVIDE_PEERS: usize = 2;
/// A fresh batch with more keys than this gets no early sends on a new connection
/// (each connection looks at every key of every batch still looking up).
pub const EARLY_BATCH_KEYS_MAX: usize = 64;
/// The sweep rests this long after a whole pass over our keys (keys fall due 12 h
/// after their last publication; new ones are published as they come).
pub const SWEEP_REST: Duration = Duration::from_secs(600);
/// A batch no peer took is published again by a sweep pass started this long after
/// (not after the sweep's rest).
pub const PUBLISH_RETRY_AFTER: Duration = Duration::from_secs(5);
/// Publication batches in flight at once (one lookup each, then its provide requests),
/// the sweep's one of them at most: one at a time made the third fresh object put on a
/// node wait for the lookups of the first two, seconds each on a loaded network.
pub const PUBLICATIONS_AT_ONCE: usize = 4;
/// Provide requests of ended batches still unanswered (a peer slow or silent: each is
/// given up at [`QUERY_TIMEOUT`]); while this many are out no new batch starts, so a
/// network of silent peers costs this many requests, not a batch's slot each.
pub const UNANSWERED_PUBLISH_REQUESTS_MAX: usize = 256;
/// Addresses of one peer Kademlia's routing table keeps (its greeting's and what its
/// identify answers claim: one port each, at most four from an answer).
pub const KAD_ADDRESSES_PER_PEER_MAX: usize = 4;
/// Announced keys stored in one LMDB commit (a run of announcements).
pub const ANNOUNCED_KEYS_PER_RUN_MAX: usize = 16_384;
/// How long a tick goes on storing announced keys, a run after another; the rest wait
/// in the mailbox for the next ticks. A start-up walk or a burst fills the mailbox with
/// up to 1,024 × 4,096 keys, which one tick used to store at once while every
/// connection's pings, every query and every resolve waited (seconds).
pub const ANNOUNCEMENTS_WORK_PER_TICK: Duration = Duration::from_millis(50);
/// Announced keys waiting for their first publication; past it they wait for the sweep.
pub const FRESH_KEYS_MAX: usize = 65_536;
/// Peers whose greeting (ports) is remembered; past it, any one is forgotten for the
/// newcomer (a forgotten peer is greeted again when next connected).
pub const PEERS_MAX: usize = 4_096;
/// How long placements leave out a holder that refused a copy below its disk floor, or
/// answered `held` and failed the audit after (`copies.rs`): several passes of the sweep
/// at its default interval (10 minutes), so that the objects placed on it stay placed on
/// others between the asks that find it still full (each such pass counts them short
/// once); a holder with room again is named again within this (at once by a node that
/// restarts: the marks live in memory).
pub const PEER_LEFT_OUT_FOR: Duration = Duration::from_secs(3_600);
/// Greeted peers remembered per public host (an IPv4 address, an IPv6 /64); a host past
/// it has its oldest forgotten (`node/greeted_peers.rs`). Loopback and private hosts are not
/// limited.
pub const PEERS_PER_HOST_MAX: usize = 8;
/// The same per IPv6 site (a /48: 65,536 /64s, free from a tunnel broker).
pub const PEERS_PER_SITE_MAX: usize = 4 * PEERS_PER_HOST_MAX;
/// A greeted peer not connected and not heard from for this long is not counted among
/// the nodes nearer a key than this one (the acceptance of copies, `copies.rs`): it has
/// most likely left, and a table of peers long gone would have this node refuse the
/// copies its placement gives it.
pub(super) const NEARER_SEEN_WITHIN: Duration = Duration::from_secs(3_600);
/// Providers not yet greeted that one resolve dials (to prove them, and learn their
/// zones): the addresses it dials are those the query's answers gave, which a lying peer
/// chooses — before, each claimed provider of an answer was dialed, up to the resolve's
/// limit, so one answer sent this node's connects to a host of the liar's choosing.
/// Twice the copies a node keeps by default and more.
pub const CLAIMED_DIALS_PER_RESOLVE_MAX: usize = 8;
/// Resolves in progress at once (more are refused at once: `TooManyLookups`).
pub const RESOLVES_MAX: usize = 256;
/// Providers one resolve keeps, proven and claimed: a bound on what the answers of a
/// query's peers can make it hold (each answer adds at most the resolve's limit of
/// providers only claimed).
pub(super) const RESOLVE_FOUND_MAX: usize = 256;
/// A resolve that found some providers but fewer than the copies kept (a fresh object:
/// only its uploader provides it until copies are made) is answered as long after the
/// first as the lookup took to find it, within these bounds (`Resolve::patience`), not
/// when its query has asked every one of the k closest peers — seconds on a loaded
/// network, for the same answer: each of them holds the same records.
pub(super) const FIRST_PROVIDER_GRACE_MAX: Duration = Duration::from_millis(200);
/// The shortest such wait: a lookup answered by a peer already connected finds its
/// first provider in well under a millisecond, before the other responses of its round.
pub(super) const FIRST_PROVIDER_GRACE_MIN: Duration = Duration::from_millis(10);
/// How long a resolve that can name none of its providers, and a placement lookup, wait
/// for the greetings of the peers they dialed.
pub(super) const GREETING_WAIT: Duration = Duration::from_secs(2);
/// Records of others looked at per expiry step (a bounded step, not a stall).
pub(super) const EXPIRE_STEP: usize = 100_000;
/// Expired records of others removed per step at most (each with its index updates:
/// ~0.1 s of the DHT thread); while a step stops there, the next comes at the next tick
/// rather than a minute later.
pub(super) const EXPIRED_PER_STEP_MAX: usize = 4_096;
pub(super) const EXPIRE_PERIOD: Duration = Duration::from_secs(60);
/// Connections: inbound ones established and pending, and per peer.
pub(super) const INBOUND_CONNECTIONS_MAX: u32 = 512;
pub(super) const PENDING_INBOUND_MAX: u32 = 64;
pub(super) const CONNECTIONS_PER_PEER_MAX: u32 = 2;
/// Connections this node dials, established and in their handshake. The routing table's
/// kept peers (at most [`KEPT_ROUTING_PEERS_MAX`]) and the lookups' passing ones fit;
/// past it a dial is denied at once (a lookup takes it as that peer failing and asks
/// the next), so answers naming peers at addresses that never answer cannot hold an
/// unbounded number of sockets. A denied dial is `ron_dht_dial_failures_total`.
pub(super) const OUTBOUND_CONNECTIONS_MAX: u32 = 512;
pub(super) const PENDING_OUTBOUND_MAX: u32 = 128;
/// Addresses of one peer a dial tries at once (libp2p's dial concurrency factor; its
/// default is 8).
pub(super) const DIAL_ADDRESSES_AT_ONCE: u8 = 2;
/// Addresses of one peer a dial tries at most (`kad_dials.rs`): libp2p's TCP transport
/// makes every address's socket when the dial starts, so a peer an answer names at a
/// thousand addresses cost a thousand sockets, and a connect to each. Its routing-table
/// addresses ([`KAD_ADDRESSES_PER_PEER_MAX`]) come first, then what the lookups'
/// answers claimed.
pub const DIAL_ADDRESSES_PER_PEER_MAX: usize = 8;
/// Streams a connection may have open (yamux's default, set explicitly), and as many
/// negotiating their protocol at once: the swarm takes every stream yamux accepts
/// straight into negotiation, which reads it. With libp2p's 128, the rest waited in
/// libp2p-yamux's queue (up to 256), each holding what its peer sent — yamux keeps a
/// frame per allocation, ~64 bytes for a one-byte frame, so up to 16 MiB a stream
/// (`engine/tests/stream_flood.rs`; docs/design/dht.md, "Message buffers").
pub(super) const STREAMS_PER_CONNECTION_MAX: usize = 512;
/// The most file descriptors the DHT thread holds: its listener, every connection the
/// limits above allow (a pending dial holding a socket for each of its
/// `DIAL_ADDRESSES_PER_PEER_MAX` addresses), and
/// the provider store's LMDB environment (its file and lock file). The engine's
/// start-up counts them beside the shards' (open-files limit).
pub const DHT_FDS_MAX: u64 = 1
    + INBOUND_CONNECTIONS_MAX as u64
    + PENDING_INBOUND_MAX as u64
    + OUTBOUND_CONNECTIONS_MAX as u64
    + PENDING_OUTBOUND_MAX as u64 * DIAL_ADDRESSES_PER_PEER_MAX as u64
    + 2;
/// Inbound connections from one public host, in their handshake and established
/// (`host_limits.rs`): a host's ron node has two at most (per peer), a few nodes behind
/// one address a few times that.
pub(super) const PENDING_INBOUND_PER_HOST_MAX: usize = 4;
pub(super) const INBOUND_PER_HOST_MAX: usize = 16;
/// The same from one IPv6 site (a /48: 65,536 /64s, free from a tunnel broker).
pub(super) const PENDING_INBOUND_PER_SITE_MAX: usize = 4 * PENDING_INBOUND_PER_HOST_MAX;
pub(super) const INBOUND_PER_SITE_MAX: usize = 4 * INBOUND_PER_HOST_MAX;
/// A holder asked for copies answers within this long; what is still copying then is
/// answered `pending` (and goes on).
pub const REPLICATE_ANSWER_WITHIN: Duration = Duration::from_secs(60);
/// How long the asker waits for that answer.
pub(super) const REPLICATE_REQUEST_TIMEOUT: Duration = Duration::from_secs(75);
/// Copies one peer may have this node make at once (past it: `busy`).
pub const PULLS_PER_PEER_MAX: usize = 64;
/// Copies the peers of one host may have this node make at once (past it: `busy`), by
/// the IP their connections came from (an IPv6 host's /64): a host can make as many
/// peer ids as it likes, and would otherwise take all of [`PULLS_MAX`], leaving other
/// peers' copies unmade. A quarter of it: a network on one host (a test harness on
/// loopback) still pulls four times what one peer may.
pub const PULLS_PER_HOST_MAX: usize = PULLS_MAX / 4;
/// Copies under way at once, for all peers together.
pub const PULLS_MAX: usize = 1_024;
/// Addresses clients wait to see copied at once (`PUT ?copies=N`); more are answered
/// busy.
pub const COPY_WATCHES_MAX: usize = 1_024;
/// Lookups one page of placements (a shard's sweep) keeps in flight. One at a time
/// left a 48-address page past its 30 s on a loaded machine; eight filled 100 saturated
/// nodes with lookups (admin placements timed out, copies took 4× longer: docs/PERF.md).
pub(super) const BATCH_LOOKUPS_AT_ONCE: usize = 2;
/// How long the placement lookup of a kept key whose publication could not be sure of
/// its holders may take.
pub(super) const COPIES_PLACEMENT_WAIT: Duration = QUERY_TIMEOUT;
/// Kept keys waiting for their publication, after which their holders are asked.
pub const COPIES_WAITING_MAX: usize = FRESH_KEYS_MAX;
/// A node accepts a copy when fewer than this many times the key's candidates
/// (`placement::candidates`) of the nodes it knows are closer to the key: the asker's view and its own may
/// differ by a few nodes, and a node outside every window is still refused.
pub(super) const ACCEPT_WINDOW_SLACK: usize = 2;
/// While a node with no connection has not joined, knows no peer, or saw a ping or a dial
/// fail or a connection time out since its last connection, the bootstrap peers are
/// dialed again (a node started before its bootstrap peer, or cut off from every peer,
/// joins once one answers): first
/// after this long, each wait twice the last up to [`BOOTSTRAP_RETRY_MAX`], half of it
/// drawn per node (`join.rs`). Every such node dialing every 2 s sent the three bootstrap
/// peers of a 300-node network started at once ~100 handshakes a second while they were
/// already too busy to finish them.
pub(super) const BOOTSTRAP_RETRY: Duration = Duration::from_secs(2);
/// The longest wait between those dials: a partition's heal reconnects a node cut off
/// from every peer within it.
pub(super) const BOOTSTRAP_RETRY_MAX: Duration = Duration::from_secs(8);
/// A join lookup (libp2p-kad's bootstrap) that had requests fail and left the routing
/// table under this many peers is run again (go-libp2p-kad-dht refreshes a table under
/// the same 10): a node that joined through busy bootstrap peers otherwise kept just
/// them until its first refresh, ten minutes on (`join.rs`).
pub(super) const JOIN_PEERS_MIN: usize = 10;
/// The first wait before such a lookup is run again, doubled per lookup up to
/// [`JOIN_LOOKUP_RETRY_MAX`], half of it drawn per node.
pub(super) const JOIN_LOOKUP_RETRY: Duration = Duration::from_secs(2);
pub(super) const JOIN_LOOKUP_RETRY_MAX: Duration = Duration::from_secs(30);
/// How often, on average, a node refreshes its routing table (a lookup of its own id
/// and of a random key in each bucket not full: `refresh.rs`) — go-libp2p-kad-dht's
/// refresh period. Each wait is drawn within ± [`ROUTING_REFRESH_SPREAD_PERCENT`] of it
/// from the node's id: libp2p-kad's own periodic bootstrap (every 5 min from the last,
/// no jitter) kept nodes started together — a network restarted, a harness — refreshing
/// together for ever, every node's lookups and dials at once (docs/design/dht.md).
pub(super) const ROUTING_REFRESH: Duration = Duration::from_secs(600);
pub(super) const ROUTING_REFRESH_SPREAD_PERCENT: u64 = 25;
/// A connection with no stream open is closed after this long unless it is kept
/// (`kept.rs`: the routing table's peers, inbound ones their dialers keep): a node holds
/// connections to the peers its lookups start from and those it talks to, not to every
/// peer it met (docs/design/dht.md).
pub(super) const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Routing-table peers whose connections stay open while idle (`kept.rs`): every lookup
/// starts from the table, and a kept connection spares its first round a dial. The
/// table stays under this in any network (k per bucket, ~log2(N / k) buckets not empty:
/// ~130 peers at 1,000 nodes, ~200 at 100,000).
pub(super) const KEPT_ROUTING_PEERS_MAX: usize = 256;
/// Inbound connections kept open while idle: those whose dialers keep them (this node is
/// in their tables). Over a network, as many tables name a node as its own table names
/// peers, on average; a node keeps half as many again as its table holds
/// (`KEPT_INBOUND_PER_TABLE_PEER_TENTHS`), at least `KEPT_INBOUND_MIN`, at most this. A
/// node named by more (a bootstrap peer, in every table it was the first contact of)
/// lets the rest close when idle: their dialers pay a dial when a lookup needs it, not
/// this node ~37 KiB and a ping a minute for each.
pub(super) const KEPT_INBOUND_MAX: usize = 256;
/// The fewest inbound places, for a node whose table is still small (it just joined).
pub(super) const KEPT_INBOUND_MIN: usize = 64;
/// Inbound places per routing-table peer, in tenths: 15 = one and a half.
pub(super) const KEPT_INBOUND_PER_TABLE_PEER_TENTHS: usize = 15;

// The store asserts that no record of others outlives the longest TTL it knows of.
const _: () = assert!(PROVIDER_TTL.as_secs() <= PROVIDER_TTL_MAX.as_secs());

/// What the engine configures.
#[derive(Debug, Clone)]
pub struct DhtConfig {
    /// Data dir 0: `node.key` and `dht/` live there.
    pub data_dir: PathBuf,
    /// `--p2p`: where libp2p listens.
    pub listen: SocketAddr,
    /// `--peer`: bootstrap peers.
    pub peers: Vec<Multiaddr>,
    /// Where this node serves OAP/1 (what resolves report for it).
    pub oap: SocketAddr,
    /// `--zone`: this node's failure domain ("": none), told to peers in the greeting.
    pub zone: String,
    /// `--replicas`: copies of each kept object, this one included (1: none asked for).
    pub replicas: usize,
    /// `--peer-dead-ms`: how long a peer whose connections all closed still counts in
    /// placements (a restart or a short outage moves no copies); 0: gone at once.
    pub peer_dead: Duration,
    /// Where accepted copies go: the owner shard of each address (none: copies are
    /// refused, answered `failed`).
    pub pulls: Option<ron_link::dht::ReplicationRoutes>,
    pub limits: StoreLimits,
    /// `p2p_network_key_file`: a private network's key; only peers holding it connect.
    pub network_key: Option<crate::network_key::NetworkKey>,
}
