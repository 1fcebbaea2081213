//! The DHT thread: one tokio current-thread runtime driving one libp2p `Swarm`
//! (TCP + noise + yamux; Kademlia with α = 3, k = 20 on `/ron/kad/1.0.0`, backed by
//! the LMDB [`ProviderStore`]; `/ron/provide/1` beside it, [`crate::protocol`]).
//!
//! It wakes on swarm events, on requests from the admin threads (a tokio channel), and
//! on a tick every [`DHT_TICK_MS`]: then it takes the shards' announcements, commits
//! the store's buffered writes, answers resolves whose deadline passed, and moves the
//! publication on (see [`Publisher`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::kad::{self, GetClosestPeersOk, GetProvidersOk, QueryId, QueryResult, RecordKey};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm};
use ron_link::dht::{
    DhtClient, DhtMetrics, DhtRequest, Provider, ProviderChange, ResolveError, ResolveReply,
    DHT_MAILBOX_LEN,
};

use crate::error::DhtError;
use crate::protocol::{Ports, ProvideCodec, ProvideRequest, ProvideResponse, PROVIDE_KEYS_MAX};
use crate::store::{unix_ms, ProviderStore, StoreLimits};

/// How often the DHT thread looks at announcements, flushes the store and publishes.
pub const DHT_TICK_MS: u64 = 100;
/// Kademlia's protocol name: ron's DHT is its own network, not the IPFS one.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/ron/kad/1.0.0");
/// Provider records live this long unless republished (the seeds' plan: 24 h).
pub const PROVIDER_TTL: Duration = Duration::from_secs(24 * 3_600);
/// Our keys are published again after this long (the seeds' plan: 12 h).
pub const REPUBLISH_AFTER: Duration = Duration::from_secs(12 * 3_600);
/// A Kademlia query gives up after this long.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Kademlia's k: providers are published to the k peers closest to a key.
pub const K_VALUE: usize = 20;
/// The sweep rests this long after a whole pass over our keys (keys fall due 12 h
/// after their last publication; new ones are published as they come).
pub const SWEEP_REST: Duration = Duration::from_secs(600);
/// Announced keys waiting for their first publication; past it they wait for the sweep.
pub const FRESH_KEYS_MAX: usize = 65_536;
/// Peers whose greeting (ports) is remembered; past it, any one is forgotten for the
/// newcomer (a forgotten peer is greeted again when next connected).
pub const PEERS_MAX: usize = 4_096;
/// Resolves in progress at once (more are refused at once: `TooManyLookups`).
pub const RESOLVES_MAX: usize = 256;
/// How long a resolve waits for the greeting of a provider it dialed.
const GREETING_WAIT: Duration = Duration::from_secs(2);
/// Records of others looked at per expiry step (a bounded step, not a stall).
const EXPIRE_STEP: usize = 100_000;
const EXPIRE_PERIOD: Duration = Duration::from_secs(60);
/// Connections: inbound ones established and pending, and per peer.
const INBOUND_CONNECTIONS_MAX: u32 = 512;
const PENDING_INBOUND_MAX: u32 = 64;
const CONNECTIONS_PER_PEER_MAX: u32 = 2;
/// A connection with no stream open is closed after this long.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

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
    pub limits: StoreLimits,
}

/// Parses a `--peer`: `HOST:PORT` (an IP address) or a multiaddr such as
/// `/ip4/10.0.0.2/tcp/4001/p2p/12D3Koo…`.
pub fn parse_peer(text: &str) -> Result<Multiaddr, String> {
    if text.starts_with('/') {
        let addr: Multiaddr = text
            .parse()
            .map_err(|e| format!("{text:?} is not a multiaddr: {e}"))?;
        return match tcp_socket(&addr) {
            Some(_) => Ok(addr),
            None => Err(format!("{text:?}: expected /ip4|ip6/…/tcp/PORT[/p2p/ID]")),
        };
    }
    let socket: SocketAddr = text
        .parse()
        .map_err(|e| format!("{text:?} is not HOST:PORT with an IP address: {e}"))?;
    Ok(tcp_multiaddr(socket.ip(), socket.port()))
}

fn tcp_multiaddr(ip: IpAddr, port: u16) -> Multiaddr {
    let mut addr = Multiaddr::empty();
    addr.push(match ip {
        IpAddr::V4(v4) => Protocol::Ip4(v4),
        IpAddr::V6(v6) => Protocol::Ip6(v6),
    });
    addr.push(Protocol::Tcp(port));
    addr
}

/// The IP and TCP port of an `/ip…/tcp/…` multiaddr.
fn tcp_socket(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut parts = addr.iter();
    let ip = match parts.next()? {
        Protocol::Ip4(v4) => IpAddr::V4(v4),
        Protocol::Ip6(v6) => IpAddr::V6(v6),
        _ => return None,
    };
    match parts.next()? {
        Protocol::Tcp(port) => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

fn peer_in(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

/// ron's record key for an object: the multihash of its BLAKE3 address (code 0x1e).
pub fn record_key(addr: &[u8; 32]) -> RecordKey {
    let mut bytes = Vec::with_capacity(34);
    bytes.extend_from_slice(&[0x1e, 0x20]);
    bytes.extend_from_slice(addr);
    RecordKey::new(&bytes)
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: libp2p::connection_limits::Behaviour,
    kad: kad::Behaviour<ProviderStore>,
    provide: request_response::Behaviour<ProvideCodec>,
}

/// The running DHT thread, as the engine holds it.
#[derive(Debug)]
pub struct DhtThread {
    pub client: DhtClient,
    /// Where libp2p listens (the port chosen when `--p2p` said 0).
    pub listen: SocketAddr,
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl DhtThread {
    /// Stops the thread (within a tick) and waits for it: the store's buffered writes
    /// are committed on the way out.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Opens the identity and the store, binds the listener and starts the thread.
pub fn spawn(config: DhtConfig) -> Result<DhtThread, DhtError> {
    let keypair = crate::identity::load_or_create(&config.data_dir)?;
    let local = keypair.public().to_peer_id();
    let store = ProviderStore::open(&config.data_dir.join("dht"), local, config.limits)?;
    let metrics = Arc::new(DhtMetrics::default());
    let (announce_tx, announces) = std::sync::mpsc::sync_channel(DHT_MAILBOX_LEN);
    let (request_tx, requests) = tokio::sync::mpsc::channel(DHT_MAILBOX_LEN);
    let client = DhtClient::new(
        announce_tx,
        request_tx,
        Arc::clone(&metrics),
        local.to_base58().into(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (started_tx, started) = std::sync::mpsc::sync_channel(1);
    let inbox = Inbox {
        announces,
        requests,
        stop: Arc::clone(&stop),
    };
    let thread = std::thread::Builder::new()
        .name("ron-dht".into())
        .spawn(move || run(config, keypair, store, metrics, inbox, started_tx))
        .map_err(|e| DhtError::Start(format!("cannot start the DHT thread: {e}")))?;
    match started.recv() {
        Ok(Ok(listen)) => Ok(DhtThread {
            client,
            listen,
            thread: Some(thread),
            stop,
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

struct Inbox {
    announces: Receiver<ProviderChange>,
    requests: tokio::sync::mpsc::Receiver<DhtRequest>,
    stop: Arc<AtomicBool>,
}

fn run(
    config: DhtConfig,
    keypair: libp2p::identity::Keypair,
    store: ProviderStore,
    metrics: Arc<DhtMetrics>,
    inbox: Inbox,
    started: SyncSender<Result<SocketAddr, DhtError>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = started.send(Err(DhtError::Start(format!("tokio runtime: {e}"))));
            return;
        }
    };
    runtime.block_on(async move {
        let mut node = match Node::start(&config, keypair, store, metrics) {
            Ok(node) => node,
            Err(e) => {
                let _ = started.send(Err(e));
                return;
            }
        };
        let listen = node.wait_for_listener(config.listen).await;
        let _ = started.send(listen);
        node.run(inbox).await;
    });
}

/// Where a peer serves, from its greeting.
#[derive(Debug, Clone, Copy)]
struct PeerPorts {
    ip: IpAddr,
    ports: Ports,
}

/// A resolve in progress: its query, then the greetings of the providers it found.
#[derive(Debug)]
struct Resolve {
    key: RecordKey,
    limit: usize,
    started: Instant,
    deadline: Instant,
    found: Vec<PeerId>,
    query_done: bool,
    /// Set once the query is done: how long to wait for greetings of dialed providers.
    greeting_deadline: Option<Instant>,
    reply: ResolveReply,
}

/// One batch of keys on its way to the peers closest to its region.
#[derive(Debug)]
struct Publication {
    keys: Vec<RecordKey>,
    lookup: Option<QueryId>,
    outstanding: HashSet<OutboundRequestId>,
    accepted: usize,
}

/// Publishes our keys: newly announced ones first (in order), then the sweep, which
/// walks the `provided` database in distance-key order and publishes the keys not
/// published within [`REPUBLISH_AFTER`]. One batch in flight at a time: one
/// `get_closest_peers` lookup for the batch's region, then the batch to each of those
/// peers over `/ron/provide/1`.
#[derive(Debug, Default)]
struct Publisher {
    fresh: VecDeque<RecordKey>,
    current: Option<Publication>,
    /// Where the sweep goes on; `None` when a pass is done (starts again after a tick
    /// with nothing fresh).
    sweep_from: Option<[u8; 32]>,
    sweep_idle_until: Option<Instant>,
}

struct Node {
    swarm: Swarm<Behaviour>,
    local: PeerId,
    ports: Ports,
    oap: SocketAddr,
    metrics: Arc<DhtMetrics>,
    peers: HashMap<PeerId, PeerPorts>,
    connections: HashMap<ConnectionId, IpAddr>,
    resolves: HashMap<QueryId, Resolve>,
    publisher: Publisher,
    last_expiry: Instant,
    listen_id: libp2p::core::transport::ListenerId,
    bootstrap_peers: Vec<Multiaddr>,
    bootstrapped: bool,
}

fn build_swarm(
    keypair: libp2p::identity::Keypair,
    store: ProviderStore,
) -> Result<Swarm<Behaviour>, DhtError> {
    let start = |what: &str, e: &dyn std::fmt::Display| DhtError::Start(format!("{what}: {e}"));
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .map_err(|e| start("noise", &e))?
        .with_behaviour(|key| {
            let local = key.public().to_peer_id();
            let mut kad_config = kad::Config::new(KAD_PROTOCOL);
            kad_config
                .set_parallelism(NonZeroUsize::new(3).expect("3 > 0"))
                .set_replication_factor(NonZeroUsize::new(K_VALUE).expect("k > 0"))
                .set_query_timeout(QUERY_TIMEOUT)
                .set_provider_record_ttl(Some(PROVIDER_TTL))
                .set_provider_publication_interval(None)
                .set_record_ttl(None)
                .set_replication_interval(None)
                .set_publication_interval(None);
            let mut kad = kad::Behaviour::with_config(local, store, kad_config);
            // Every ron node serves the DHT: without this, a node that has confirmed no
            // external address (any node on a private network) would be a client only.
            kad.set_mode(Some(kad::Mode::Server));
            let limits = libp2p::connection_limits::ConnectionLimits::default()
                .with_max_established_incoming(Some(INBOUND_CONNECTIONS_MAX))
                .with_max_pending_incoming(Some(PENDING_INBOUND_MAX))
                .with_max_established_per_peer(Some(CONNECTIONS_PER_PEER_MAX));
            Behaviour {
                limits: libp2p::connection_limits::Behaviour::new(limits),
                kad,
                provide: request_response::Behaviour::with_codec(
                    ProvideCodec,
                    [(crate::protocol::PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(QUERY_TIMEOUT)
                        .with_max_concurrent_streams(64),
                ),
            }
        })
        .map_err(|e| start("behaviour", &e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}

impl Node {
    fn start(
        config: &DhtConfig,
        keypair: libp2p::identity::Keypair,
        store: ProviderStore,
        metrics: Arc<DhtMetrics>,
    ) -> Result<Node, DhtError> {
        let local = keypair.public().to_peer_id();
        let mut swarm = build_swarm(keypair, store)?;
        let listen = tcp_multiaddr(config.listen.ip(), config.listen.port());
        let listen_id = swarm.listen_on(listen).map_err(|e| DhtError::Listen {
            addr: config.listen.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Node {
            swarm,
            local,
            ports: Ports {
                p2p: config.listen.port(),
                oap: config.oap.port(),
            },
            oap: config.oap,
            metrics,
            peers: HashMap::new(),
            connections: HashMap::new(),
            resolves: HashMap::new(),
            publisher: Publisher::default(),
            last_expiry: Instant::now(),
            listen_id,
            bootstrap_peers: config.peers.clone(),
            bootstrapped: false,
        })
    }

    /// Waits for the listener's address (the port, when `--p2p` said 0), or its error.
    async fn wait_for_listener(&mut self, requested: SocketAddr) -> Result<SocketAddr, DhtError> {
        loop {
            match self.swarm.select_next_some().await {
                SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                } if listener_id == self.listen_id => {
                    let Some(socket) = tcp_socket(&address) else {
                        continue;
                    };
                    self.ports.p2p = socket.port();
                    tracing::info!(node_id = %self.local, listen = %address, "dht listening");
                    return Ok(socket);
                }
                SwarmEvent::ListenerClosed {
                    listener_id,
                    reason,
                    ..
                } if listener_id == self.listen_id => {
                    return Err(DhtError::Listen {
                        addr: requested.to_string(),
                        reason: format!("{reason:?}"),
                    });
                }
                SwarmEvent::ListenerError { error, .. } => {
                    return Err(DhtError::Listen {
                        addr: requested.to_string(),
                        reason: error.to_string(),
                    });
                }
                _ => {}
            }
        }
    }

    async fn run(&mut self, mut inbox: Inbox) {
        self.dial_bootstrap_peers();
        let mut tick = tokio::time::interval(Duration::from_millis(DHT_TICK_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_event(event),
                Some(request) = inbox.requests.recv() => self.on_request(request),
                _ = tick.tick() => {
                    if inbox.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    self.on_tick(&inbox.announces);
                }
            }
        }
        self.flush_store();
        tracing::info!("dht stopped");
    }

    fn dial_bootstrap_peers(&mut self) {
        for addr in self.bootstrap_peers.clone() {
            if let Some(peer) = peer_in(&addr) {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, addr.clone());
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::warn!(peer = %addr, "dht: cannot dial bootstrap peer: {e}");
            }
        }
    }

    fn on_tick(&mut self, announces: &Receiver<ProviderChange>) {
        self.take_announcements(announces);
        self.flush_store();
        self.answer_due_resolves();
        self.publish_next();
        if self.last_expiry.elapsed() >= EXPIRE_PERIOD {
            self.last_expiry = Instant::now();
            self.remove_expired();
        }
        self.update_gauges();
    }

    fn store(&mut self) -> &mut ProviderStore {
        self.swarm.behaviour_mut().kad.store_mut()
    }

    fn flush_store(&mut self) {
        if let Err(e) = self.store().flush() {
            tracing::warn!("{e}");
        }
    }

    fn remove_expired(&mut self) {
        let now_ms = unix_ms(SystemTime::now());
        if let Err(e) = self.store().remove_expired(now_ms, EXPIRE_STEP) {
            tracing::warn!("{e}");
        }
    }

    fn update_gauges(&mut self) {
        let connected = self.swarm.connected_peers().count() as u64;
        let routing: usize = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| b.num_entries())
            .sum();
        let store = self.swarm.behaviour_mut().kad.store_mut();
        let counters = store.counters();
        let provided = store.provided_count().unwrap_or(0);
        let records = store.provider_record_count().unwrap_or(0);
        let m = &self.metrics;
        m.peers_connected.store(connected, Ordering::Relaxed);
        m.routing_table_peers
            .store(routing as u64, Ordering::Relaxed);
        m.provided_keys.store(provided, Ordering::Relaxed);
        m.provider_records.store(records, Ordering::Relaxed);
        m.provider_records_refused_total
            .store(counters.records_refused, Ordering::Relaxed);
        m.provider_records_expired_total
            .store(counters.records_expired, Ordering::Relaxed);
    }

    /// Takes the tick's provider changes in order: announced keys are stored as ours
    /// (one commit per run of announcements) and the new ones queued for their first
    /// publication; withdrawn keys are no longer provided nor published.
    fn take_announcements(&mut self, announces: &Receiver<ProviderChange>) {
        let mut provided: Vec<RecordKey> = Vec::new();
        for change in announces.try_iter().take(DHT_MAILBOX_LEN) {
            match change {
                ProviderChange::Provide(addrs) => {
                    provided.extend(addrs.iter().map(record_key));
                }
                ProviderChange::Withdraw(addrs) => {
                    self.provide(std::mem::take(&mut provided));
                    self.withdraw(addrs.iter().map(record_key).collect());
                }
            }
        }
        self.provide(provided);
    }

    fn provide(&mut self, keys: Vec<RecordKey>) {
        if keys.is_empty() {
            return;
        }
        // Keys provided already (announced again by a start-up walk) wait for the sweep.
        let new = match self.store().provide(&keys) {
            Ok(new) => new,
            Err(e) => {
                tracing::warn!("{e}");
                return;
            }
        };
        let room = FRESH_KEYS_MAX.saturating_sub(self.publisher.fresh.len());
        self.publisher.fresh.extend(new.into_iter().take(room));
    }

    fn withdraw(&mut self, keys: Vec<RecordKey>) {
        if let Err(e) = self.store().unprovide(&keys) {
            tracing::warn!("{e}");
        }
        let gone: std::collections::HashSet<&RecordKey> = keys.iter().collect();
        self.publisher.fresh.retain(|k| !gone.contains(k));
    }

    fn on_request(&mut self, request: DhtRequest) {
        match request {
            DhtRequest::Resolve {
                addr,
                limit,
                deadline_ms,
                reply,
            } => self.start_resolve(record_key(&addr), limit, deadline_ms, reply),
        }
    }

    fn start_resolve(
        &mut self,
        key: RecordKey,
        limit: usize,
        deadline_ms: u64,
        reply: ResolveReply,
    ) {
        if self.resolves.len() >= RESOLVES_MAX {
            reply.send(Err(ResolveError::TooManyLookups(RESOLVES_MAX)));
            return;
        }
        let now = Instant::now();
        let query = self.swarm.behaviour_mut().kad.get_providers(key.clone());
        self.resolves.insert(
            query,
            Resolve {
                key,
                limit,
                started: now,
                deadline: now + Duration::from_millis(deadline_ms),
                found: Vec::new(),
                query_done: false,
                greeting_deadline: None,
                reply,
            },
        );
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => self.on_connected(peer_id, connection_id, &endpoint),
            SwarmEvent::ConnectionClosed { connection_id, .. } => {
                self.connections.remove(&connection_id);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad(event),
            SwarmEvent::Behaviour(BehaviourEvent::Provide(event)) => self.on_provide(event),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, "dht: dial failed: {error}");
            }
            _ => {}
        }
    }

    fn on_connected(&mut self, peer: PeerId, connection: ConnectionId, endpoint: &ConnectedPoint) {
        if let Some(socket) = tcp_socket(endpoint.get_remote_address()) {
            self.connections.insert(connection, socket.ip());
        }
        if endpoint.is_dialer() {
            // The greeting: the other side learns our ports, we learn its ports.
            let greeting = ProvideRequest {
                ports: self.ports,
                keys: Vec::new(),
            };
            self.swarm
                .behaviour_mut()
                .provide
                .send_request(&peer, greeting);
            if !self.bootstrapped {
                self.bootstrapped = self.swarm.behaviour_mut().kad.bootstrap().is_ok();
            }
        }
    }

    /// Remembers a peer's ports at the IP its connection came from, and tells Kademlia
    /// where it listens.
    fn learn_peer(&mut self, peer: PeerId, connection: ConnectionId, ports: Ports) {
        let Some(ip) = self.connections.get(&connection).copied() else {
            return;
        };
        if self.peers.len() >= PEERS_MAX && !self.peers.contains_key(&peer) {
            // Any one goes: a peer forgotten is greeted again when next connected.
            let evicted = self.peers.keys().next().copied();
            if let Some(evicted) = evicted {
                self.peers.remove(&evicted);
            }
        }
        self.peers.insert(peer, PeerPorts { ip, ports });
        self.swarm
            .behaviour_mut()
            .kad
            .add_address(&peer, tcp_multiaddr(ip, ports.p2p));
    }

    fn on_provide(&mut self, event: request_response::Event<ProvideRequest, ProvideResponse>) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                connection_id,
                message:
                    Message::Request {
                        request, channel, ..
                    },
            } => {
                self.learn_peer(peer, connection_id, request.ports);
                let stored = self.store_provided_by(peer, connection_id, request);
                let response = ProvideResponse {
                    ports: self.ports,
                    stored,
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .provide
                    .send_response(channel, response);
            }
            Event::Message {
                peer,
                connection_id,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
            } => {
                self.learn_peer(peer, connection_id, response.ports);
                self.on_published(request_id, true);
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, "dht: /ron/provide/1 request failed: {error}");
                self.on_published(request_id, false);
            }
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "dht: /ron/provide/1 inbound failed: {error}");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    /// Stores a provider record per key of a batch, for the peer that sent it, at the
    /// address its connection came from.
    fn store_provided_by(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        request: ProvideRequest,
    ) -> u16 {
        if request.keys.is_empty() {
            return 0;
        }
        let Some(ip) = self.connections.get(&connection).copied() else {
            return 0;
        };
        let address = tcp_multiaddr(ip, request.ports.p2p);
        let expires = Some(Instant::now() + PROVIDER_TTL);
        let records = request
            .keys
            .into_iter()
            .map(|key| kad::ProviderRecord {
                key,
                provider: peer,
                expires,
                addresses: vec![address.clone()],
            })
            .collect();
        match self.store().add_providers(records) {
            Ok(stored) => u16::try_from(stored).unwrap_or(u16::MAX),
            Err(e) => {
                tracing::warn!("{e}");
                0
            }
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        let kad::Event::OutboundQueryProgressed {
            id, result, step, ..
        } = event
        else {
            return;
        };
        match result {
            QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders { providers, .. })) => {
                self.on_providers_found(id, providers)
            }
            QueryResult::GetProviders(_) if step.last => self.on_providers_done(id),
            QueryResult::GetClosestPeers(result) => {
                let peers = match result {
                    Ok(GetClosestPeersOk { peers, .. }) => peers,
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                };
                self.send_publication(id, peers);
            }
            _ => {}
        }
    }

    fn on_providers_found(&mut self, query: QueryId, providers: HashSet<PeerId>) {
        let Some(resolve) = self.resolves.get_mut(&query) else {
            return;
        };
        let mut dial = Vec::new();
        for peer in providers {
            if resolve.found.len() < resolve.limit && !resolve.found.contains(&peer) {
                resolve.found.push(peer);
                if peer != self.local && !self.peers.contains_key(&peer) {
                    dial.push(peer);
                }
            }
        }
        let enough = resolve.found.len() >= resolve.limit;
        for peer in dial {
            // The query still holds the addresses its answers carried for this peer.
            let _ = self.swarm.dial(peer);
        }
        if enough {
            if let Some(mut running) = self.swarm.behaviour_mut().kad.query_mut(&query) {
                running.finish();
            }
        }
    }

    fn on_providers_done(&mut self, query: QueryId) {
        if let Some(resolve) = self.resolves.get_mut(&query) {
            resolve.query_done = true;
            resolve.greeting_deadline = Some(Instant::now() + GREETING_WAIT);
        }
        self.answer_due_resolves();
    }

    /// Answers the resolves whose query is done and whose providers' greetings arrived
    /// (or stopped being worth waiting for), and those past their deadline.
    fn answer_due_resolves(&mut self) {
        let now = Instant::now();
        let due: Vec<QueryId> = self
            .resolves
            .iter()
            .filter(|(_, r)| {
                let greeted = r
                    .found
                    .iter()
                    .all(|p| *p == self.local || self.peers.contains_key(p));
                let waited = r.greeting_deadline.is_some_and(|at| now >= at);
                now >= r.deadline || (r.query_done && (greeted || waited))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(resolve) = self.resolves.remove(&id) {
                if let Some(mut running) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                    running.finish();
                }
                self.answer(resolve);
            }
        }
    }

    fn answer(&self, resolve: Resolve) {
        let elapsed_ms = u64::try_from(resolve.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.metrics.record_lookup(elapsed_ms, resolve.found.len());
        let providers = resolve
            .found
            .iter()
            .map(|peer| self.provider(peer))
            .collect();
        tracing::debug!(key = ?resolve.key, elapsed_ms, "dht: resolved");
        resolve.reply.send(Ok(providers));
    }

    fn provider(&self, peer: &PeerId) -> Provider {
        let local = *peer == self.local;
        let oap = match local {
            true => Some(self.oap),
            false => self
                .peers
                .get(peer)
                .map(|p| SocketAddr::new(p.ip, p.ports.oap)),
        };
        Provider {
            node_id: peer.to_base58(),
            oap,
            local,
        }
    }

    /// Starts the next batch when none is in flight and some peer is connected: fresh
    /// keys first, then the sweep's next batch. A batch is cut to one region of the key
    /// space ([`region_bits`]): its keys share the closest peers of its first key.
    fn publish_next(&mut self) {
        if self.publisher.current.is_some() || self.swarm.connected_peers().next().is_none() {
            return;
        }
        let bits = region_bits(self.metrics.routing_table_peers.load(Ordering::Relaxed));
        let mut keys = self.fresh_batch(bits);
        if keys.is_empty() {
            keys = self.sweep_batch(bits);
        }
        let Some(first) = keys.first() else {
            return;
        };
        let lookup = self
            .swarm
            .behaviour_mut()
            .kad
            .get_closest_peers(first.to_vec());
        self.publisher.current = Some(Publication {
            keys,
            lookup: Some(lookup),
            outstanding: HashSet::new(),
            accepted: 0,
        });
    }

    /// Up to a batch of fresh keys in one region: the first region of those waiting, in
    /// distance order; the others go back to the front of the queue.
    fn fresh_batch(&mut self, bits: u32) -> Vec<RecordKey> {
        let fresh = &mut self.publisher.fresh;
        let take = fresh.len().min(PROVIDE_KEYS_MAX);
        let mut batch: Vec<([u8; 32], RecordKey)> = fresh
            .drain(..take)
            .map(|k| (crate::store::distance_key(&k), k))
            .collect();
        batch.sort_unstable_by_key(|(distance, _)| *distance);
        let Some(first) = batch.first().map(|(d, _)| region_of(d, bits)) else {
            return Vec::new();
        };
        let cut = batch.partition_point(|(d, _)| region_of(d, bits) == first);
        for (_, key) in batch.drain(cut..).rev() {
            fresh.push_front(key);
        }
        batch.into_iter().map(|(_, k)| k).collect()
    }

    /// The sweep's next batch: keys from where it stopped, in distance order and in one
    /// region, that were never published or not within [`REPUBLISH_AFTER`]. After a
    /// whole pass it rests for [`SWEEP_REST`].
    fn sweep_batch(&mut self, bits: u32) -> Vec<RecordKey> {
        let now = Instant::now();
        if self.publisher.sweep_idle_until.is_some_and(|at| now < at) {
            return Vec::new();
        }
        let from = self.publisher.sweep_from.unwrap_or([0; 32]);
        let due_before =
            unix_ms(SystemTime::now()).saturating_sub(REPUBLISH_AFTER.as_millis() as u64);
        let mut region = match self.store().provided_from(&from, PROVIDE_KEYS_MAX) {
            Ok(region) => region,
            Err(e) => {
                tracing::warn!("{e}");
                return Vec::new();
            }
        };
        let full = region.len() == PROVIDE_KEYS_MAX;
        let first = region.first().map(|p| region_of(&p.distance_key, bits));
        let cut = region.partition_point(|p| Some(region_of(&p.distance_key, bits)) == first);
        self.publisher.sweep_from = match region.get(cut) {
            Some(next) => Some(next.distance_key),
            None if full => region
                .last()
                .and_then(|l| next_distance_key(&l.distance_key)),
            None => None,
        };
        region.truncate(cut);
        self.publisher.sweep_idle_until = match self.publisher.sweep_from {
            Some(_) => None,
            None => Some(now + SWEEP_REST),
        };
        region
            .into_iter()
            .filter(|p| p.published_ms.is_none_or(|at| at <= due_before))
            .map(|p| p.key)
            .collect()
    }

    fn send_publication(&mut self, lookup: QueryId, peers: Vec<kad::PeerInfo>) {
        let Some(current) = self.publisher.current.as_mut() else {
            return;
        };
        if current.lookup != Some(lookup) {
            return;
        }
        current.lookup = None;
        let keys = current.keys.clone();
        let mut outstanding = HashSet::new();
        for peer in peers.into_iter().filter(|p| p.peer_id != self.local) {
            let request = ProvideRequest {
                ports: self.ports,
                keys: keys.clone(),
            };
            let id = self
                .swarm
                .behaviour_mut()
                .provide
                .send_request_with_addresses(&peer.peer_id, request, peer.addrs);
            outstanding.insert(id);
        }
        let empty = outstanding.is_empty();
        if let Some(current) = self.publisher.current.as_mut() {
            current.outstanding = outstanding;
        }
        if empty {
            self.finish_publication();
        }
    }

    fn on_published(&mut self, request: OutboundRequestId, accepted: bool) {
        let Some(current) = self.publisher.current.as_mut() else {
            return;
        };
        if !current.outstanding.remove(&request) {
            return;
        }
        current.accepted += usize::from(accepted);
        if current.outstanding.is_empty() {
            self.finish_publication();
        }
    }

    /// A batch that reached at least one peer is marked published; one that reached
    /// none is left for the sweep.
    fn finish_publication(&mut self) {
        let Some(done) = self.publisher.current.take() else {
            return;
        };
        if done.accepted == 0 {
            self.metrics
                .publish_failures_total
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now_ms = unix_ms(SystemTime::now());
        if let Err(e) = self.store().mark_published(&done.keys, now_ms) {
            tracing::warn!("{e}");
        }
        self.metrics
            .keys_published_total
            .fetch_add(done.keys.len() as u64, Ordering::Relaxed);
    }
}

/// How many leading bits of the distance key name a region: about `N / k` regions for
/// `N` nodes, so the k closest peers of a region's first key are, near enough, those
/// of all its keys. The routing table's size stands in for `N` (it underestimates a
/// large network: regions come out larger, lookups fewer, and a record may land a few
/// peers off its closest ones, where lookups passing near still find it). Up to `k`
/// peers: one region, every key published to every peer.
pub fn region_bits(routing_table_peers: u64) -> u32 {
    let regions = routing_table_peers / K_VALUE as u64;
    match regions {
        0 | 1 => 0,
        n => (n - 1).ilog2() + 1,
    }
    .min(32)
}

fn region_of(distance_key: &[u8; 32], bits: u32) -> u32 {
    let head = u32::from_be_bytes([
        distance_key[0],
        distance_key[1],
        distance_key[2],
        distance_key[3],
    ]);
    match bits {
        0 => 0,
        bits => head >> (32 - bits),
    }
}

/// The distance key just after `key` (`None` past the last one).
fn next_distance_key(key: &[u8; 32]) -> Option<[u8; 32]> {
    let mut next = *key;
    for byte in next.iter_mut().rev() {
        if *byte == u8::MAX {
            *byte = 0;
        } else {
            *byte += 1;
            return Some(next);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_from_host_port_and_multiaddr() {
        assert_eq!(
            parse_peer("127.0.0.1:4001").unwrap().to_string(),
            "/ip4/127.0.0.1/tcp/4001"
        );
        assert_eq!(
            parse_peer("[::1]:4001").unwrap().to_string(),
            "/ip6/::1/tcp/4001"
        );
        let id = PeerId::random();
        let full = format!("/ip4/10.0.0.2/tcp/4001/p2p/{id}");
        let parsed = parse_peer(&full).unwrap();
        assert_eq!(peer_in(&parsed), Some(id));
        let err = parse_peer("example.com:4001").unwrap_err();
        assert!(err.contains("is not HOST:PORT with an IP address"), "{err}");
        let err = parse_peer("/dns4/example.com/tcp/1").unwrap_err();
        assert!(
            err.contains("expected /ip4|ip6/…/tcp/PORT[/p2p/ID]"),
            "{err}"
        );
    }

    #[test]
    fn regions_grow_finer_with_the_network() {
        assert_eq!(region_bits(0), 0);
        assert_eq!(region_bits(39), 0);
        assert_eq!(region_bits(40), 1);
        assert_eq!(region_bits(80), 2);
        assert_eq!(region_bits(81), 2);
        assert_eq!(region_bits(100), 3);
        assert_eq!(region_bits(u64::MAX), 32);
        let mut key = [0u8; 32];
        key[0] = 0b1010_0000;
        assert_eq!(region_of(&key, 0), 0);
        assert_eq!(region_of(&key, 1), 1);
        assert_eq!(region_of(&key, 3), 0b101);
    }

    #[test]
    fn next_distance_key_carries() {
        let mut key = [0u8; 32];
        key[31] = 0xff;
        key[30] = 0x01;
        let next = next_distance_key(&key).unwrap();
        assert_eq!((next[30], next[31]), (0x02, 0x00));
        assert_eq!(next_distance_key(&[0xff; 32]), None);
    }

    #[test]
    fn record_keys_are_blake3_multihashes() {
        let key = record_key(&[7; 32]);
        assert_eq!(&key.as_ref()[..2], &[0x1e, 0x20]);
        assert_eq!(&key.as_ref()[2..], &[7; 32]);
    }
}
