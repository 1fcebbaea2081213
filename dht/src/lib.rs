//! # ron-dht — the node's identity, Kademlia, and who provides an object
//!
//! ## What it owns
//! - [`identity`]: the node key (`node.key` in data dir 0, Ed25519), created once; its
//!   `PeerId` is the node id peers and `/resolve` answers know this node by.
//! - [`store`]: [`store::ProviderStore`], libp2p-kad's `RecordStore` on LMDB (`dht/` in
//!   data dir 0): the keys this node provides, ordered by Kademlia distance key for the
//!   sweep, and the records other nodes published to it, capped per key and in all.
//! - [`network_key`]: a private network's pre-shared key (libp2p pnet, IPFS's
//!   `swarm.key`): with one, only peers holding it get past the first bytes of a
//!   connection.
//! - [`closest`]: pure — which of a lookup's peers are each key's k closest, and the
//!   network's size estimated from a lookup.
//! - [`coverage`]: pure — the parts of the key space in which a page of placement
//!   lookups knows every node, so one lookup answers the addresses around it.
//! - [`placement`]: pure — the holders of an object: `replicas` of the live nodes
//!   closest to its key, chosen by rendezvous score within each zone's window, spread
//!   over zones (replication, docs/design/replication.md).
//! - [`protocol`]: `/ron/provide/2`, the greeting (each side's libp2p and OAP ports, its zone)
//!   and the sweep's batches of keys.
//! - [`replicate`]: `/ron/replicate/1`, a holder of kept copies asking the other
//!   holders its placement names to take them, and their answers.
//! - `wire`: one message of either protocol on its stream (bounded, the stream's end
//!   delimits it).
//! - [`node`]: the DHT thread. One OS thread runs a tokio current-thread runtime that
//!   drives one libp2p `Swarm`: TCP (+ pnet with a network key) + noise + yamux, `libp2p-kad` (α = 3, k = 20, its
//!   own protocol name `/ron/kad/1.0.0`, server mode), `/ron/provide/2`,
//!   `/ron/replicate/1`, libp2p's
//!   identify and ping (what standard libp2p peers need; ping is liveness), TCP
//!   keepalive on every connection, connection limits, and the connections kept open
//!   while idle (to the routing table's peers, and inbound ones their dialers keep). It publishes our keys, answers others' queries from the store,
//!   runs the lookups the admin port and the shards ask for, asks the holders of kept
//!   objects to take copies, and hands the copies others ask of it to the shards.
//!
//! ## Invariants
//! - Nothing of it runs on a shard. Shards `try_send` the addresses of acknowledged
//!   objects into a bounded std channel the thread drains on its tick (no wake-up, no
//!   lock on the shard's side); admin threads send resolves on a bounded tokio channel
//!   (it wakes the thread) and wait, bounded, for the answer.
//! - Everything has a limit: others' records (`StoreLimits`), keys per batch
//!   ([`protocol::PROVIDE_KEYS_MAX`]) and message bytes, others' keys stored a second
//!   per sender and in all ([`node::PROVIDED_KEYS_PER_SECOND_PER_SENDER`],
//!   [`node::PROVIDED_KEYS_PER_SECOND`]), announced keys waiting
//!   ([`node::FRESH_KEYS_MAX`]), provide requests of ended batches still unanswered
//!   ([`node::UNANSWERED_PUBLISH_REQUESTS_MAX`]), remembered peers, resolves in flight,
//!   connections (inbound, pending, per peer, kept while idle), every query ([`node::QUERY_TIMEOUT`]) and
//!   each of its requests ([`node::KAD_REQUEST_TIMEOUT`]), copies made for others
//!   ([`node::PULLS_PER_PEER_MAX`], [`node::PULLS_PER_HOST_MAX`], [`node::PULLS_MAX`])
//!   and waited for ([`node::COPY_WATCHES_MAX`], [`node::COPIES_WAITING_MAX`]), the
//!   bytes of `/ron/provide/2` and `/ron/replicate/1` messages being read (64 MiB for
//!   all streams together, `wire.rs`), and the sockets ([`node::DHT_FDS_MAX`]).
//! - A peer asking this node to hold a copy proves nothing by asking: the node takes
//!   only keys it is near (fewer than twice the candidates, 40, of the nodes it knows,
//!   any zone, are nearer), and stores only bytes verified against the address, pulled
//!   from the asker alone; a holder counts as one only after an audit of its own copy.
//! - A peer's claims are checked or bounded: its `PeerId` is the one noise
//!   authenticated; the address stored for it is the IP its connection came from with
//!   the port it claims; value records (anyone's bytes on our disk) are refused; a
//!   key's first providers are kept and later ones refused, so a flood of fake
//!   providers cannot push the real ones out.
//! - Our own keys are durable when announced (one LMDB commit per tick's
//!   announcements). Others' records are committed once per tick: a crash loses at
//!   most a tick of them, which their providers republish.
//!
//! ## Data flow
//! ```text
//! shard commit ──addresses (std channel)──▶ tick: store.provide ─▶ publisher.fresh
//! publisher: fresh keys, else the sweep's next region of keys due (12 h)
//!    └─ the k closest peers of its first key ─▶ each key to its own k/2 closest of them
//!       over /ron/provide/2 (keys they may not cover: back to the queue) ─▶ mark_published
//! peer's batch ─▶ store.add_providers (for the authenticated sender, at its IP)
//! admin /resolve ──tokio channel──▶ get_providers ─▶ dial unknown providers (greeting)
//!    └─ answer: node id + OAP address per provider (greeted, or from its record), within
//!       the deadline
//! kept keys published ─▶ placement among the lookup's peers ─▶ /ron/replicate/1 to holders
//! peer's /ron/replicate/1 ─▶ accepted keys ─▶ owner shard's replication mailbox ─▶ answer held
//! admin /admin/placement, a shard's sweep ──▶ get_closest_peers ─▶ placement ─▶ holders
//! PUT ?copies=N, /admin/replicate, the sweep ──▶ ask holders ─▶ count `held` ─▶ answer
//! ```
//! The design note, and what is still a plan (peer fetch, coalescing, origin mode):
//! `docs/design/dht.md`.

pub mod closest;
pub mod coverage;
pub mod error;
pub mod identity;
pub mod network_key;
pub mod node;
pub mod placement;
pub mod protocol;
pub mod replicate;
pub mod store;
mod wire;

pub use error::DhtError;
