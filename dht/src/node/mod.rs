//! The DHT thread: one tokio current-thread runtime driving one libp2p `Swarm`
//! (TCP + noise + yamux; Kademlia with α = 3, k = 20 on `/ron/kad/1.0.0`, backed by
//! the LMDB [`ProviderStore`]; `/ron/provide/2` beside it, [`crate::protocol`]).
//!
//! It wakes on swarm events, on requests from the admin threads (a tokio channel), on
//! the stop signal, and on a tick: then it takes the shards' announcements, commits the
//! store's buffered writes, answers resolves whose deadline passed, and moves the
//! publication on (the publisher, `publish.rs`). The tick comes every [`DHT_TICK_MS`]
//! while the thread has work in hand, every [`DHT_IDLE_TICK_MS`] when it has none; the
//! first announcement after that rings the [`AnnounceBell`]
//! and the next tick comes at once.
//!
//! ## Files
//! - `mod.rs` (this file): the handle the engine holds, [`DhtThread`] — [`spawn`]
//!   opens the identity and the store and starts the thread; [`DhtThread::stop`]
//!   signals it and waits, bounded ([`STOP_WAIT_MS`]).
//! - `config.rs`: [`DhtConfig`] and every fixed limit and period.
//! - `address.rs`: [`parse_peer`] (a `--peer`), multiaddr ↔ socket address, an
//!   object's [`record_key`].
//! - `swarm.rs`: the behaviour (connection limits, Kademlia, `/ron/provide/2`) and
//!   the swarm built around it, its TCP connections' keepalive.
//! - `kept.rs`: which idle connections stay open (a behaviour of its own, told the
//!   routing table's changes by `event_loop.rs`).
//! - `kad_dials.rs`: libp2p-kad wrapped, the addresses its dials are given bounded (at
//!   most 8, and an own network's only once this node has had a connection with it).
//! - `state.rs`: what the thread holds — `Node`, the swarm and its tables (greeted
//!   peers, connections' IPs, resolves in flight, the publisher) — and those tables'
//!   entries. The files below add `Node`'s methods by concern.
//! - `event_loop.rs`: the thread's body (runtime, listener, loop), the tick, and the
//!   dispatch of swarm events and requests to the files below.
//! - `peers.rs`: connections, the greeting, the peer table, and others' batches of
//!   keys stored as their provider records.
//! - `resolve.rs`: resolves and their deadlines.
//! - `publish.rs`: announcements, the publisher and the sweep, regions of the key
//!   space.
//! - `placing.rs`: placement lookups — the holders the placement names for a key, as
//!   the operator asks.
//! - `refresh.rs`: the routing-table refresh on the node's own schedule.
//! - `join.rs`: joining — the bootstrap peers' dials and the join lookups, each
//!   repeated with a backoff drawn per node.
//! - `copies.rs`: replication's `/ron/replicate/1` — asking the holders of kept keys
//!   after their publication, accepting peers' copies and handing them to the shards.
//!
//! Imports go one way, down this list: `config.rs` and `address.rs` name no other
//! file of the node; `kept.rs` and `kad_dials.rs` name `config.rs`; `swarm.rs` names those; `state.rs` names those; `peers.rs`,
//! `resolve.rs`, `publish.rs`, `placing.rs`, `copies.rs`, `refresh.rs`, `join.rs` and `event_loop.rs` name `state.rs` and what
//! is under it, never each other (they call each other's methods on `Node`); `mod.rs`
//! names the files and none names it.
//!
//! ## Data flow
//! ```text
//! shards ──ProviderChange (std channel)──▶ tick: take_announcements ─▶ store, publisher.fresh
//!        ──AnnounceBell (only while the thread idles)─▶ the next tick at once
//! admin  ──DhtRequest (tokio channel)────▶ start_resolve ─▶ kad get_providers
//! swarm  ──events────────────────────────▶ on_event: peers (greetings, batches),
//!                                          resolve (providers found), publish (closest peers),
//!                                          copies (peers' requests, holders' answers)
//! publication done (kept keys) ─▶ placement among its peers ─▶ /ron/replicate/1 to holders
//! peer's copies ─▶ accepted ─▶ ReplicationRoutes (tokio channel per shard) ─▶ shard pulls, keeps
//!        ◀── each outcome (oneshot) ── answer when all are done or at the deadline
//! tick   ─▶ flush store ─▶ answer due resolves ─▶ publish_next ─▶ expiry step ─▶ gauges
//! stop   ─▶ leave the loop ─▶ flush store ─▶ the thread ends
//! ```

pub(crate) mod address;
mod config;
mod copies;
mod event_loop;
mod greeted_peers;
mod host_limits;
mod join;
mod kad_dials;
mod kept;
mod peers;
mod placing;
mod provide_budget;
mod publish;
mod refresh;
mod resolve;
mod state;
mod swarm;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ron_link::dht::{AnnounceBell, DhtClient, DhtMetrics, DHT_MAILBOX_LEN};
use tokio::sync::oneshot;

pub use address::{parse_peer, record_key};
pub use config::{
    DhtConfig, ANNOUNCED_KEYS_PER_RUN_MAX, ANNOUNCEMENTS_WORK_PER_TICK,
    CLAIMED_DIALS_PER_RESOLVE_MAX, COPIES_WAITING_MAX, COPY_WATCHES_MAX, DHT_FDS_MAX,
    DHT_IDLE_TICK_MS, DHT_TICK_MS, DIAL_ADDRESSES_PER_PEER_MAX, FRESH_KEYS_MAX,
    KAD_ADDRESSES_PER_PEER_MAX, KAD_PROTOCOL, KAD_REQUEST_TIMEOUT, K_VALUE, PEERS_MAX,
    PROVIDER_TTL, PROVIDE_TO_CLOSEST, PUBLICATIONS_AT_ONCE, PUBLISH_LOOKUP_PEERS,
    PUBLISH_RETRY_AFTER, PULLS_MAX, PULLS_PER_HOST_MAX, PULLS_PER_PEER_MAX, QUERY_TIMEOUT,
    REPLICATE_ANSWER_WITHIN, REPUBLISH_AFTER, RESOLVES_MAX, STOP_WAIT_MS, SWEEP_REST,
    UNANSWERED_PUBLISH_REQUESTS_MAX,
};
pub use provide_budget::{
    PROVIDED_KEYS_BURST, PROVIDED_KEYS_BURST_PER_SENDER, PROVIDED_KEYS_PER_SECOND,
    PROVIDED_KEYS_PER_SECOND_PER_SENDER, PROVIDE_SENDERS_MAX,
};
pub use publish::region_bits;

use crate::error::DhtError;
use crate::store::ProviderStore;
use event_loop::{run_thread, Inbox};

/// The running DHT thread, as the engine holds it.
#[derive(Debug)]
pub struct DhtThread {
    pub client: DhtClient,
    /// Where libp2p listens (the port chosen when `--p2p` said 0).
    pub listen: SocketAddr,
    thread: Option<JoinHandle<()>>,
    stop: Option<oneshot::Sender<()>>,
    /// Disconnected when the thread ends (its sender is dropped then, even on a panic).
    exited: Receiver<Infallible>,
}

impl DhtThread {
    /// Stops the thread and waits for it, at most [`STOP_WAIT_MS`]: the signal wakes
    /// it at once (between two events: a tick in progress is finished first), it
    /// commits the store's buffered writes and exits. Past the bound it logs a warning
    /// and returns, abandoning the thread: it goes on (and still commits, if it gets
    /// there) until the process exits; what it had not committed by then — at most a
    /// tick of others' records, which their providers republish — is lost, and its
    /// store stays open (a new DHT thread on the same data dir in this process cannot
    /// open it until the old one ends).
    ///
    /// Dropping the handle does the same.
    pub fn stop(mut self) {
        self.stop_and_wait();
    }

    fn stop_and_wait(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if let Some(stop) = self.stop.take() {
            // An error means the thread has gone already: the join below says how.
            let _ = stop.send(());
        }
        match self
            .exited
            .recv_timeout(Duration::from_millis(STOP_WAIT_MS))
        {
            Err(RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    waited_ms = STOP_WAIT_MS,
                    "dht: the DHT thread did not stop in time; left running, its last \
                     writes to the provider store may not be committed"
                );
            }
            Err(RecvTimeoutError::Disconnected) => {
                if thread.join().is_err() {
                    tracing::warn!("dht: the DHT thread panicked");
                }
            }
            Ok(never) => match never {},
        }
    }
}

impl Drop for DhtThread {
    fn drop(&mut self) {
        self.stop_and_wait();
    }
}

/// Opens the identity and the store, binds the listener and starts the thread.
pub fn spawn(config: DhtConfig) -> Result<DhtThread, DhtError> {
    let keypair = crate::identity::load_or_create(&config.data_dir)?;
    let local = keypair.public().to_peer_id();
    let store = ProviderStore::open(&config.data_dir.join("dht"), local, config.limits)?;
    let metrics = Arc::new(DhtMetrics::default());
    let (announce_tx, announces) = std::sync::mpsc::sync_channel(DHT_MAILBOX_LEN);
    let bell = Arc::new(AnnounceBell::default());
    let (request_tx, requests) = tokio::sync::mpsc::channel(DHT_MAILBOX_LEN);
    let client = DhtClient::new(
        announce_tx,
        Arc::clone(&bell),
        request_tx,
        Arc::clone(&metrics),
        local.to_base58().into(),
    );
    let (stop, stop_rx) = oneshot::channel();
    let (exited_tx, exited) = std::sync::mpsc::sync_channel::<Infallible>(0);
    let (started_tx, started) = std::sync::mpsc::sync_channel(1);
    let inbox = Inbox {
        announces,
        bell,
        requests,
        stop: stop_rx,
    };
    let thread = std::thread::Builder::new()
        .name("ron-dht".into())
        .spawn(move || {
            let _exited = exited_tx;
            run_thread(config, keypair, store, metrics, inbox, started_tx);
        })
        .map_err(|e| DhtError::Start(format!("cannot start the DHT thread: {e}")))?;
    match started.recv() {
        Ok(Ok(listen)) => Ok(DhtThread {
            client,
            listen,
            thread: Some(thread),
            stop: Some(stop),
            exited,
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(DhtError::Start(
                "the DHT thread stopped while starting".into(),
            ))
        }
    }
}
