//! What the DHT thread holds: [`Node`] — the swarm and the tables beside it — and the
//! entries of those tables (a peer's ports, a resolve in progress, the publisher's
//! queue and its batch in flight). The files beside this one add `Node`'s methods by
//! concern; the types live here so that none of them needs another.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use libp2p::kad::{QueryId, RecordKey, U256};
use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, Swarm};
use ron_link::dht::{
    CopiesReply, CopyOutcome, DhtMetrics, LeftOut, ReplicationRoutes, ResolveReply,
};

use crate::error::DhtError;
use crate::node::address::tcp_multiaddr;
use crate::node::config::{
    DhtConfig, FIRST_PROVIDER_GRACE_MAX, FIRST_PROVIDER_GRACE_MIN, GREETING_WAIT, PULLS_MAX,
    PULLS_PER_HOST_MAX, PULLS_PER_PEER_MAX, RESOLVE_FOUND_MAX, ROUTING_REFRESH,
    ROUTING_REFRESH_SPREAD_PERCENT,
};
use crate::node::greeted_peers::GreetedPeers;
use crate::node::provide_budget::ProvideBudget;
use crate::node::swarm::{build_swarm, Behaviour};
use crate::protocol::Ports;
use crate::replicate::ReplicateResponse;
use crate::store::ProviderStore;

/// A resolve in progress: its query, then the greetings of the providers it found.
#[derive(Debug)]
pub(super) struct Resolve {
    pub(super) key: RecordKey,
    pub(super) limit: usize,
    pub(super) started: Instant,
    pub(super) deadline: Instant,
    pub(super) found: Vec<PeerId>,
    /// How many of the query's answers named each provider found (this node's own
    /// store counting as one): a provider two answers name is corroborated; one only a
    /// single answer names may be a lying peer's pick of greeted nodes that hold nothing.
    pub(super) named: HashMap<PeerId, u8>,
    /// The OAP/1 address of each provider found that is neither this node nor a greeted
    /// peer, from the provider records the query was answered with (a record holder
    /// stores it beside the provider's libp2p address): such a provider is named
    /// without waiting for its greeting.
    pub(super) oap_from_records: HashMap<PeerId, SocketAddr>,
    /// From when it may be answered with what it found: at once when enough providers
    /// are found or the query is done, its [`patience`](Resolve::patience) after the
    /// first provider otherwise.
    pub(super) answer_from: Option<Instant>,
    /// When the first proven provider was found or greeted (`None` until then): the
    /// lookup's own share of the time to answer, the rest being the wait for more
    /// providers and greetings.
    pub(super) first_found: Option<Instant>,
    /// Requests its query had made to peers when it last found providers.
    pub(super) requests: u32,
    /// Providers not yet greeted that it dialed (at most
    /// [`CLAIMED_DIALS_PER_RESOLVE_MAX`](crate::node::config::CLAIMED_DIALS_PER_RESOLVE_MAX)).
    pub(super) dialed: usize,
    pub(super) reply: ResolveReply,
}

/// Whether the providers a resolve found can be named with their addresses: this node,
/// greeted peers and providers whose records carried their OAP/1 address can, a peer
/// still being dialed for its greeting cannot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Greeted {
    All,
    Some,
    None,
}

impl Resolve {
    /// Whether two or more of the query's answers named `peer`.
    pub(super) fn corroborated(&self, peer: &PeerId) -> bool {
        self.named.get(peer).is_some_and(|n| *n >= 2)
    }

    /// Counts one answer naming `providers` (those it found).
    pub(super) fn count_named(&mut self, providers: &[PeerId]) {
        for peer in providers {
            if self.found.contains(peer) {
                let n = self.named.entry(*peer).or_default();
                *n = n.saturating_add(1);
            }
        }
    }

    /// Those of one answer's `providers` it has not found yet: proven ones (`proven`:
    /// this node, greeted peers) up to its limit of corroborated ones and twice its
    /// limit in all, and of those only claimed — named by the answering peer, unproven
    /// until greeted — up to its limit from this answer, while it holds fewer than
    /// [`RESOLVE_FOUND_MAX`]. One peer's answer naming many made-up providers, or
    /// greeted nodes that hold nothing, then cannot crowd out the real ones found after
    /// it; the answer names the corroborated first.
    pub(super) fn unseen(
        &self,
        providers: HashSet<PeerId>,
        proven: impl Fn(&PeerId) -> bool,
    ) -> Vec<PeerId> {
        // Proven providers up to the limit of corroborated ones, and twice the limit in
        // all: a lying answer naming `limit` greeted nodes that hold nothing must not
        // crowd out the real provider.
        let proven_found = self.found.iter().filter(|p| proven(p)).count();
        let corroborated = self
            .found
            .iter()
            .filter(|p| proven(p) && self.corroborated(p))
            .count();
        let mut room_proven = self
            .limit
            .saturating_sub(corroborated)
            .min((2 * self.limit).saturating_sub(proven_found));
        let mut room_claimed = self
            .limit
            .min(RESOLVE_FOUND_MAX.saturating_sub(self.found.len()));
        providers
            .into_iter()
            .filter(|peer| !self.found.contains(peer))
            .filter(|peer| {
                let room = if proven(peer) {
                    &mut room_proven
                } else {
                    &mut room_claimed
                };
                let taken = *room > 0;
                *room = room.saturating_sub(1);
                taken
            })
            .collect()
    }

    /// From `at` on (or from when it could already), the resolve may be answered.
    pub(super) fn answerable_from(&mut self, at: Instant) {
        self.answer_from = Some(self.answer_from.map_or(at, |from| from.min(at)));
    }

    /// Notes the first provider found (`now`), once; returns when it was found.
    pub(super) fn first_found_at(&mut self, now: Instant) -> Instant {
        *self.first_found.get_or_insert(now)
    }

    /// How long to wait past the first provider for more providers, and past the moment
    /// it may be answered for the greetings of those being dialed while one can already
    /// be named: as long as the lookup took to find the first, within
    /// [`FIRST_PROVIDER_GRACE_MIN`]..=[`FIRST_PROVIDER_GRACE_MAX`]. The responses of the
    /// round that brought the first provider, and a dial and greeting, take about a
    /// round trip of the same network; a provider that has not come by then is one whose
    /// record is not where the query looks yet (copies seconds old), which waiting
    /// longer rarely brings. Before the first provider: the longest.
    pub(super) fn patience(&self) -> Duration {
        self.first_found.map_or(FIRST_PROVIDER_GRACE_MAX, |first| {
            first
                .saturating_duration_since(self.started)
                .clamp(FIRST_PROVIDER_GRACE_MIN, FIRST_PROVIDER_GRACE_MAX)
        })
    }

    /// Whether to answer now: past its deadline, or answerable and its providers
    /// greeted — every one, or one at least and its patience spent on the others, or
    /// [`GREETING_WAIT`] passed.
    pub(super) fn due(&self, now: Instant, greeted: Greeted) -> bool {
        now >= self.deadline || self.answerable_at(greeted).is_some_and(|at| now >= at)
    }

    /// When it falls due if no event comes first (a greeting is one: it answers the
    /// resolves it completes as it arrives); its deadline at the latest. Never before
    /// `now`.
    pub(super) fn next_due(&self, now: Instant, greeted: Greeted) -> Instant {
        let at = self.answerable_at(greeted).unwrap_or(self.deadline);
        at.min(self.deadline).max(now)
    }

    /// When it may be answered with the greetings as they stand: `None` before it is
    /// answerable.
    fn answerable_at(&self, greeted: Greeted) -> Option<Instant> {
        let from = self.answer_from?;
        Some(match greeted {
            Greeted::All => from,
            Greeted::Some => from + self.patience(),
            Greeted::None => from + GREETING_WAIT,
        })
    }
}

/// A placement lookup in progress: its key's closest peers, then their greetings.
#[derive(Debug)]
pub(super) struct PlacementLookup {
    pub(super) addr: [u8; 32],
    pub(super) deadline: Instant,
    pub(super) deadline_ms: u64,
    /// The lookup's peers, once it answered.
    pub(super) found: Option<LookupFound>,
    pub(super) answer: PlacementAnswer,
}

/// What a placement lookup found.
#[derive(Debug)]
pub(super) struct LookupFound {
    pub(super) peers: Vec<PeerId>,
    /// How far from the key every peer is known (the farthest found); `None`: the
    /// lookup found every peer there is.
    pub(super) reach: Option<U256>,
    /// Whether the lookup ran to its end (not cut by its timeout): only then is every
    /// peer within `reach` known.
    pub(super) converged: bool,
    /// How long to wait for the greetings (zones) of the peers found.
    pub(super) greetings_until: Instant,
}

/// Who a placement lookup answers.
#[derive(Debug)]
pub(super) enum PlacementAnswer {
    /// An admin thread or a shard (`/admin/placement`, the sweep).
    Reply(ResolveReply),
    /// This node: the holders it names are asked to take copies (a kept key whose
    /// publication's lookup could not be sure of them).
    AskHolders,
    /// A batch of placements (its number in `Node::placement_batches`): this lookup
    /// answers every address of the batch its view is sure of.
    Batch(u64),
}

/// Placements asked together (a page of a shard's sweep): lookups a few at a time, until
/// the union of their views is sure of each address.
#[derive(Debug)]
pub(super) struct PlacementBatch {
    /// The addresses, in the order asked, each with its position and answer once known.
    pub(super) addrs: Vec<([u8; 32], crate::closest::DistanceKey)>,
    pub(super) answers: Vec<Option<ron_link::dht::Resolved>>,
    /// Per address: whether a lookup for it is in flight.
    pub(super) looking: Vec<bool>,
    /// Where the batch's converged lookups know every node, and the peers they found.
    pub(super) coverage: crate::coverage::Coverage,
    pub(super) peers: Vec<PeerId>,
    pub(super) deadline: Instant,
    pub(super) deadline_ms: u64,
    pub(super) reply: ron_link::dht::Reply<Vec<ron_link::dht::Resolved>>,
}

impl PlacementBatch {
    /// Lookups of the batch in flight.
    pub(super) fn in_flight(&self) -> usize {
        self.looking.iter().filter(|looking| **looking).count()
    }

    /// The address to look up next: one outside the coverage before one inside it (its
    /// ball adds the most), the farthest from the lookups in flight (theirs will cover
    /// their own neighbours), the lowest position on a tie; never an address whose lookup
    /// is in flight (a page may name one twice).
    pub(super) fn next_lookup(&self) -> Option<usize> {
        let in_flight: Vec<&crate::closest::DistanceKey> = (0..self.addrs.len())
            .filter(|at| self.looking[*at])
            .map(|at| &self.addrs[at].1)
            .collect();
        (0..self.addrs.len())
            .filter(|at| self.answers[*at].is_none() && !in_flight.contains(&&self.addrs[*at].1))
            .map(|at| {
                let position = &self.addrs[at].1;
                let outside = !self.coverage.covers_ball(position, U256::zero());
                let apart = in_flight
                    .iter()
                    .map(|other| crate::closest::distance(position, other))
                    .min()
                    .unwrap_or(U256::MAX);
                (outside, apart, std::cmp::Reverse(*position), at)
            })
            .max()
            .map(|(.., at)| at)
    }
}

/// How a view treats a peer whose greeting (zone) has not come: as one that may still
/// come (the view ends before it), or as not a ron node (left out, after the wait).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ungreeted {
    CutsTheView,
    LeftOut,
}

/// One batch of keys on its way to the peers closest to each of them.
#[derive(Debug)]
pub(super) struct Publication {
    pub(super) keys: Vec<RecordKey>,
    pub(super) lookup: Option<QueryId>,
    /// Requests sent, each with the indexes of the keys it carries.
    pub(super) outstanding: HashMap<OutboundRequestId, Vec<usize>>,
    /// Per key: whether some peer took it.
    pub(super) taken: Vec<bool>,
    /// The peers the lookup found (the candidates of the keys' placement).
    pub(super) peers: Vec<PeerId>,
    /// How far from the first key every peer is known; `None`: every peer there is.
    pub(super) reach: Option<U256>,
    /// A batch of the sweep (else of fresh keys).
    pub(super) swept: bool,
    /// The peers a fresh batch's keys went to before its lookup ended (optimistic
    /// provide: `Node::provide_early`), each with the indexes of the keys it carried.
    pub(super) early: HashMap<PeerId, Vec<usize>>,
    /// The early requests' ids: the batch does not wait for them to end.
    pub(super) early_requests: HashSet<OutboundRequestId>,
    /// Indexes of the keys the lookup's peers may not be closest to, sent back to the
    /// queue for a batch of their own: not this batch's to mark published, even if an
    /// early request took them.
    pub(super) deferred: Vec<usize>,
    /// Per key of a fresh batch, when it was announced (empty for the sweep's); taken
    /// when its delay is recorded (the first peer that took it) or when it is deferred
    /// to a batch of its own, so that it is timed once.
    pub(super) queued: Vec<Option<Instant>>,
}

impl Publication {
    /// Whether the batch may end: its lookup has ended and either no request is out,
    /// or every key of its own (not deferred) reached some peer, or only early requests
    /// are out and some key of its own reached a peer. The requests still out are not
    /// waited for: their records land all the same, and a peer that is slow or never
    /// answers would otherwise hold the batch's slot, its keys' marks and the copies
    /// asked after them for the request's whole timeout.
    pub(super) fn may_end(&self) -> bool {
        if self.lookup.is_some() {
            return false;
        }
        if self.outstanding.is_empty() {
            return true;
        }
        let mut own = (0..self.keys.len()).filter(|at| !self.deferred.contains(at));
        let some_own_taken = own.clone().any(|at| self.taken[at]);
        let every_own_taken = own.all(|at| self.taken[at]);
        let only_early_out = self
            .outstanding
            .keys()
            .all(|id| self.early_requests.contains(id));
        some_own_taken && (every_own_taken || only_early_out)
    }

    /// Whether the key at `at` is this batch's to mark published: some peer took it,
    /// and it was not deferred to a batch of its own.
    pub(super) fn published(&self, at: usize) -> bool {
        self.taken[at] && !self.deferred.contains(&at)
    }
}

/// A key waiting for its first publication, and when it was announced (the publish
/// delay counts from there; `None`: a key of the sweep's sent back for a lookup of its
/// own).
#[derive(Debug, Clone)]
pub(super) struct FreshKey {
    pub(super) key: RecordKey,
    pub(super) queued: Option<Instant>,
}

/// Replication's tables: kept keys whose holders are still to be asked, the requests
/// this node sent, and the copies it is making for others.
#[derive(Default)]
pub(super) struct Copies {
    /// Kept keys whose holders are asked after their next publication (at most
    /// [`COPIES_WAITING_MAX`](crate::node::COPIES_WAITING_MAX)).
    pub(super) waiting: HashSet<RecordKey>,
    /// Requests sent, each with the addresses it carries.
    pub(super) asked: HashMap<OutboundRequestId, Vec<[u8; 32]>>,
    /// Addresses a client waits to see copied (`PUT ?copies=N`), at most
    /// [`COPY_WATCHES_MAX`](crate::node::COPY_WATCHES_MAX).
    pub(super) watches: HashMap<[u8; 32], Watch>,
    /// Peers' requests being worked on, by their number here.
    pub(super) answering: HashMap<u64, Answering>,
    pub(super) next_answering: u64,
    /// Copies under way, per asking peer, per asking host
    /// (`ron_link::policy::quota_address` of the IP its connection came from) and in all.
    pub(super) per_peer: HashMap<PeerId, usize>,
    pub(super) per_host: HashMap<std::net::IpAddr, usize>,
    pub(super) under_way: usize,
    /// The shards' replication mailboxes (none: copies are answered `failed`).
    pub(super) pulls: Option<ReplicationRoutes>,
    /// The shards' answers, as they come.
    pub(super) pulled: FuturesUnordered<Pin<Box<dyn Future<Output = PullDone>>>>,
}

impl Copies {
    /// Whether a copy for `peer`, asking from `source`, would pass a limit on copies
    /// under way: in all, per peer, or per host.
    pub(super) fn full_for(&self, peer: PeerId, source: SocketAddr) -> bool {
        let host = ron_link::policy::quota_address(source.ip());
        let of_peer = self.per_peer.get(&peer).copied().unwrap_or(0);
        let of_host = self.per_host.get(&host).copied().unwrap_or(0);
        self.under_way >= PULLS_MAX
            || of_peer >= PULLS_PER_PEER_MAX
            || of_host >= PULLS_PER_HOST_MAX
    }
}

/// The copies of one address clients wait for, as its holders answer.
#[derive(Default)]
pub(super) struct Watch {
    /// Holders asked (other than this node), since the watch began.
    pub(super) asked: usize,
    pub(super) answered: usize,
    /// Of those, the ones that answered `held` (each once).
    pub(super) held_by: Vec<PeerId>,
    /// Whether its holders have been asked yet (after its publication).
    pub(super) asked_yet: bool,
    pub(super) waiters: Vec<CopiesWaiter>,
}

pub(super) struct CopiesWaiter {
    pub(super) want: usize,
    pub(super) deadline: Instant,
    pub(super) reply: CopiesReply,
}

/// A peer's request for copies being worked on.
pub(super) struct Answering {
    pub(super) channel: ResponseChannel<ReplicateResponse>,
    /// Per address of the request: its outcome once known.
    pub(super) outcomes: Vec<Option<CopyOutcome>>,
    pub(super) deadline: Instant,
}

/// One copy a shard finished (or gave up).
pub(super) struct PullDone {
    pub(super) answering: u64,
    pub(super) index: usize,
    pub(super) peer: PeerId,
    /// The host the asking peer's connection came from.
    pub(super) host: std::net::IpAddr,
    pub(super) outcome: CopyOutcome,
}

/// Publishes our keys: newly announced ones first (in order), then the sweep, which
/// walks the `provided` database in distance-key order and publishes the keys not
/// published within [`REPUBLISH_AFTER`](crate::node::REPUBLISH_AFTER). One batch in
/// flight at a time: one `get_closest_peers` lookup for the batch's region, then the
/// batch to each of those peers over `/ron/provide/2`, each key to its k/2 closest.
#[derive(Debug, Default)]
pub(super) struct Publisher {
    pub(super) fresh: VecDeque<FreshKey>,
    /// Batches on their way: at most [`PUBLICATIONS_AT_ONCE`], of which at most one
    /// the sweep's.
    ///
    /// [`PUBLICATIONS_AT_ONCE`]: crate::node::PUBLICATIONS_AT_ONCE
    pub(super) in_flight: Vec<Publication>,
    /// Where the sweep goes on; `None` when a pass is done (starts again after a tick
    /// with nothing fresh).
    pub(super) sweep_from: Option<[u8; 32]>,
    pub(super) sweep_idle_until: Option<Instant>,
    /// A batch failed: the next pass starts after [`PUBLISH_RETRY_AFTER`] rather than
    /// the sweep's rest.
    ///
    /// [`PUBLISH_RETRY_AFTER`]: crate::node::PUBLISH_RETRY_AFTER
    pub(super) retry_soon: bool,
    /// How many peers the network holds, as the publication lookups estimate it
    /// (smoothed); 0 before the first.
    pub(super) network_peers_estimate: f64,
    /// Requests of batches that ended without waiting for them ([`Publication::may_end`]):
    /// no new batch starts while there are
    /// [`UNANSWERED_PUBLISH_REQUESTS_MAX`](crate::node::UNANSWERED_PUBLISH_REQUESTS_MAX).
    pub(super) unanswered: HashSet<OutboundRequestId>,
    /// The last tick left announcements in the mailbox (it had spent
    /// [`ANNOUNCEMENTS_WORK_PER_TICK`](crate::node::ANNOUNCEMENTS_WORK_PER_TICK) on
    /// them): the next ticks come at the busy pace until it is empty.
    pub(super) announcements_left: bool,
}

/// A routing-table refresh under way (`refresh.rs`): its lookups, one at a time.
#[derive(Debug, Default)]
pub(super) struct RoutingRefresh {
    /// The lookup running.
    pub(super) running: Option<QueryId>,
    /// The keys still to look up, the next one last.
    pub(super) targets: Vec<Vec<u8>>,
}

/// The join (`join.rs`): the bootstrap peers' dials and the join lookups, each with its
/// backoff.
#[derive(Debug)]
pub(super) struct Joining {
    /// A join lookup has run (this node's or libp2p-kad's).
    pub(super) started: bool,
    /// Dials of the bootstrap peers since a connection last opened, and when the next is
    /// due (if the node is still alone then).
    pub(super) dials: u32,
    pub(super) next_dial: Instant,
    /// Join lookups since one last left the routing table full enough (or found all
    /// there is), the one running and its failed requests so far, and when the next is
    /// due.
    pub(super) lookups: u32,
    pub(super) running: Option<QueryId>,
    pub(super) failures: u32,
    pub(super) retry_at: Option<Instant>,
}

impl Default for Joining {
    fn default() -> Self {
        Joining {
            started: false,
            dials: 0,
            next_dial: Instant::now(),
            lookups: 0,
            running: None,
            failures: 0,
            retry_at: None,
        }
    }
}

pub(super) struct Node {
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) local: PeerId,
    pub(super) ports: Ports,
    /// This node's zone ("": none).
    pub(super) zone: String,
    /// Copies of each kept object, this one included.
    pub(super) replicas: usize,
    pub(super) copies: Copies,
    pub(super) oap: SocketAddr,
    pub(super) metrics: Arc<DhtMetrics>,
    pub(super) peers: GreetedPeers,
    /// When each peer last answered a libp2p ping (at most [`PEERS_MAX`] peers).
    ///
    /// [`PEERS_MAX`]: crate::node::PEERS_MAX
    pub(super) alive: HashMap<PeerId, Instant>,
    /// Greeted peers whose last connection closed, and when (at most [`PEERS_MAX`]):
    /// placements still name them for `peer_dead` after that, though lookups no longer
    /// find them.
    ///
    /// [`PEERS_MAX`]: crate::node::PEERS_MAX
    pub(super) lost: HashMap<PeerId, Instant>,
    pub(super) peer_dead: Duration,
    /// Peers placements leave out, why, and until when (at most [`PEERS_MAX`];
    /// `copies.rs`).
    ///
    /// [`PEERS_MAX`]: crate::node::PEERS_MAX
    pub(super) left_out: HashMap<PeerId, (LeftOut, Instant)>,
    pub(super) connections: HashMap<ConnectionId, IpAddr>,
    /// Keys of others' `/ron/provide/2` batches this node may store, per sender and in
    /// all (`provide_budget.rs`).
    pub(super) provide_budget: ProvideBudget,
    pub(super) resolves: HashMap<QueryId, Resolve>,
    pub(super) placements: HashMap<QueryId, PlacementLookup>,
    pub(super) placement_batches: HashMap<u64, PlacementBatch>,
    pub(super) next_placement_batch: u64,
    pub(super) publisher: Publisher,
    pub(super) last_expiry: Instant,
    /// The last expiry step stopped at its most removals: the next comes at the next tick.
    pub(super) expiry_backlog: bool,
    pub(super) listen_id: libp2p::core::transport::ListenerId,
    pub(super) bootstrap_peers: Vec<Multiaddr>,
    pub(super) join: Joining,
    /// A ping went unanswered, a dial failed or the kernel timed a connection out
    /// (`ETIMEDOUT`) since the last connection was established: the node may be cut off,
    /// not merely idle (a peer's close of an idle connection reads as another I/O error,
    /// so closes are not counted).
    pub(super) contact_failed: bool,
    /// When the routing table is next refreshed, how many refreshes came before, and
    /// the one under way.
    pub(super) next_refresh: Instant,
    pub(super) refreshes: u64,
    pub(super) refresh: RoutingRefresh,
}

impl Node {
    pub(super) fn start(
        config: &DhtConfig,
        keypair: libp2p::identity::Keypair,
        store: ProviderStore,
        metrics: Arc<DhtMetrics>,
    ) -> Result<Node, DhtError> {
        let local = keypair.public().to_peer_id();
        metrics
            .replication_target
            .store(config.replicas as u64, Ordering::Relaxed);
        let mut swarm = build_swarm(keypair, store, config.network_key)?;
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
            zone: config.zone.clone(),
            replicas: config.replicas,
            copies: Copies {
                pulls: config.pulls.clone(),
                ..Copies::default()
            },
            oap: config.oap,
            metrics,
            peers: GreetedPeers::default(),
            alive: HashMap::new(),
            lost: HashMap::new(),
            peer_dead: config.peer_dead,
            left_out: HashMap::new(),
            connections: HashMap::new(),
            provide_budget: ProvideBudget::new(Instant::now()),
            resolves: HashMap::new(),
            placements: HashMap::new(),
            placement_batches: HashMap::new(),
            next_placement_batch: 0,
            publisher: Publisher::default(),
            last_expiry: Instant::now(),
            expiry_backlog: false,
            listen_id,
            bootstrap_peers: config.peers.clone(),
            join: Joining::default(),
            contact_failed: false,
            next_refresh: Instant::now() + refresh_wait(&local, 0),
            refreshes: 0,
            refresh: RoutingRefresh::default(),
        })
    }

    /// Whether this node can reach no peer: no connection open and none in its routing
    /// table. A node of an idle network has its connections closed (they idle out after
    /// `IDLE_CONNECTION_TIMEOUT`) and is not cut off for that: its lookups dial the peers
    /// in its table.
    pub(super) fn isolated(&mut self) -> bool {
        self.swarm.connected_peers().next().is_none() && self.routing_table_empty()
    }

    pub(super) fn routing_table_empty(&mut self) -> bool {
        self.swarm.behaviour_mut().kad.kbuckets().next().is_none()
    }

    pub(super) fn routing_table_len(&mut self) -> usize {
        self.swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| b.num_entries())
            .sum()
    }

    pub(super) fn store(&mut self) -> &mut ProviderStore {
        self.swarm.behaviour_mut().kad.store_mut()
    }
}

/// The wait before a node's `round`-th routing-table refresh: [`ROUTING_REFRESH`] ±
/// [`ROUTING_REFRESH_SPREAD_PERCENT`], drawn from a hash of the node's id and the round,
/// so that nodes started at the same moment spread their refreshes over the period.
pub(super) fn refresh_wait(local: &PeerId, round: u64) -> Duration {
    let spread_ms = ROUTING_REFRESH.as_millis() as u64 * ROUTING_REFRESH_SPREAD_PERCENT / 100;
    let offset_ms = drawn_per_node(local, &[&round.to_le_bytes()]) % (2 * spread_ms + 1);
    ROUTING_REFRESH - Duration::from_millis(spread_ms) + Duration::from_millis(offset_ms)
}

/// A number drawn from a hash of the node's id and `parts`: the same node and parts
/// always draw the same one, nodes started together draw apart (the jitter of
/// refreshes and of `join.rs`'s backoffs).
pub(super) fn drawn_per_node(local: &PeerId, parts: &[&[u8]]) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&local.to_bytes());
    for part in parts {
        hasher.update(part);
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy is refused busy past any of the three limits: in all, the asking peer's,
    /// and its host's (an IPv6 host by its /64).
    #[test]
    fn copies_are_full_past_any_of_their_limits() {
        let (alice, bob) = (PeerId::random(), PeerId::random());
        let from = |ip: &str| SocketAddr::new(ip.parse().unwrap(), 4000);
        let mut copies = Copies::default();
        assert!(!copies.full_for(alice, from("192.0.2.1")));
        copies.per_peer.insert(alice, PULLS_PER_PEER_MAX);
        assert!(copies.full_for(alice, from("192.0.2.1")));
        assert!(!copies.full_for(bob, from("192.0.2.1")));
        let host = ron_link::policy::quota_address("2001:db8::1".parse().unwrap());
        copies.per_host.insert(host, PULLS_PER_HOST_MAX);
        assert!(copies.full_for(bob, from("2001:db8::2")), "the same /64");
        assert!(!copies.full_for(bob, from("2001:db8:1::2")));
        copies.under_way = PULLS_MAX;
        assert!(copies.full_for(bob, from("198.51.100.7")));
    }

    fn resolve(now: Instant) -> Resolve {
        let (reply, _answer) = std::sync::mpsc::sync_channel(1);
        Resolve {
            key: RecordKey::new(b"k"),
            limit: 8,
            started: now,
            deadline: now + Duration::from_secs(10),
            found: Vec::new(),
            named: HashMap::new(),
            oap_from_records: HashMap::new(),
            answer_from: None,
            first_found: None,
            requests: 0,
            dialed: 0,
            reply: ResolveReply::Blocking(reply),
        }
    }

    /// Proven providers are taken up to the limit of corroborated ones (named by two
    /// answers), and twice the limit in all: providers one answer names leave room for
    /// those others name.
    #[test]
    fn a_resolve_takes_the_providers_it_has_not_found_up_to_its_limit() {
        let mut r = resolve(Instant::now());
        let seen = PeerId::random();
        r.found.push(seen);
        r.count_named(&[seen]);
        r.count_named(&[seen]);
        assert!(r.corroborated(&seen));
        let fresh: HashSet<PeerId> = (0..20).map(|_| PeerId::random()).collect();
        let mut answered = fresh.clone();
        answered.insert(seen);
        let all_proven = |_: &PeerId| true;
        let unseen = r.unseen(answered, all_proven);
        assert_eq!(unseen.len(), r.limit - 1, "room for {} more", r.limit - 1);
        assert!(unseen.iter().all(|p| fresh.contains(p)), "{unseen:?}");
        r.found.extend(unseen.iter().copied());
        r.count_named(&unseen);
        assert!(!r.corroborated(&unseen[0]), "named by one answer");
        let more = r.unseen(fresh.clone(), all_proven);
        assert_eq!(more.len(), r.limit - 1, "uncorroborated ones leave room");
        r.found.extend(more);
        let last = r.unseen(fresh.clone(), all_proven);
        assert_eq!(last.len(), 1, "up to twice the limit in all");
        r.found.extend(last);
        assert!(r.unseen(fresh, all_proven).is_empty(), "no room left");
    }

    /// Providers only claimed by a query's answers are taken up to the limit from each
    /// answer, and no more once the resolve holds `RESOLVE_FOUND_MAX`; proven ones are
    /// taken whatever claims came before them.
    #[test]
    fn claimed_providers_cannot_crowd_out_proven_ones() {
        let mut r = resolve(Instant::now());
        let proven_peers: HashSet<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        let proven = |p: &PeerId| proven_peers.contains(p);
        let claims = || {
            (0..40)
                .map(|_| PeerId::random())
                .collect::<HashSet<PeerId>>()
        };
        let taken = r.unseen(claims(), proven);
        assert_eq!(taken.len(), r.limit, "one answer's claims up to the limit");
        r.found.extend(taken);
        while r.found.len() < RESOLVE_FOUND_MAX {
            let taken = r.unseen(claims(), proven);
            assert!(!taken.is_empty());
            r.found.extend(taken);
        }
        assert_eq!(r.found.len(), RESOLVE_FOUND_MAX);
        assert!(
            r.unseen(claims(), proven).is_empty(),
            "no claims past the bound"
        );
        let taken = r.unseen(proven_peers.clone(), proven);
        assert_eq!(taken.len(), 3, "every proven provider still taken");
    }

    #[test]
    fn a_resolve_names_the_moment_it_falls_due_and_that_moment_is_due() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        let mut r = resolve(now);
        assert_eq!(
            r.next_due(now, Greeted::All),
            now + ms(10_000),
            "nothing found: the deadline"
        );
        r.first_found_at(now + ms(40));
        r.answerable_from(now + ms(80));
        assert_eq!(
            r.next_due(now, Greeted::All),
            now + ms(80),
            "the patience's end"
        );
        assert_eq!(
            r.next_due(now, Greeted::Some),
            now + ms(120),
            "one to name: the patience again for the others"
        );
        assert_eq!(
            r.next_due(now, Greeted::None),
            now + ms(80) + GREETING_WAIT,
            "none to name: the greetings' wait"
        );
        let after = now + ms(100);
        assert_eq!(r.next_due(after, Greeted::All), after, "greeted: at once");
        r.deadline = now + ms(300);
        assert_eq!(
            r.next_due(after, Greeted::None),
            now + ms(300),
            "never past the deadline"
        );
        assert_eq!(
            r.next_due(now + ms(400), Greeted::None),
            now + ms(400),
            "never before now"
        );
        // Whatever moment it names, the resolve is due then: the loop's alarm never
        // fires for nothing, nor spins on a resolve it will not answer.
        for greeted in [Greeted::All, Greeted::Some, Greeted::None] {
            for at in [0, 40, 79, 80, 100, 119, 120, 250, 299, 300, 2_500] {
                let at = now + ms(at);
                assert!(
                    r.due(r.next_due(at, greeted), greeted),
                    "{at:?} {greeted:?}"
                );
            }
        }
    }

    #[test]
    fn a_resolve_waits_for_an_answerable_moment_and_the_greetings() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        let mut r = resolve(now);
        assert!(!r.due(now, Greeted::All), "nothing found, query running");
        r.first_found_at(now + ms(50));
        r.answerable_from(now + ms(100));
        assert!(!r.due(now + ms(99), Greeted::All), "within the patience");
        assert!(r.due(now + ms(100), Greeted::All));
        assert!(
            !r.due(now + ms(149), Greeted::Some),
            "the others' greetings"
        );
        assert!(
            r.due(now + ms(150), Greeted::Some),
            "then the ones it can name"
        );
        assert!(!r.due(now + ms(150), Greeted::None), "none to name yet");
        assert!(r.due(now + ms(100) + GREETING_WAIT, Greeted::None));
        r.answerable_from(now);
        assert!(
            r.due(now, Greeted::All),
            "enough found, or the query done: at once"
        );
        r.answerable_from(now + Duration::from_secs(1));
        assert!(
            r.due(now, Greeted::All),
            "a later moment never delays an earlier one"
        );
        assert!(
            resolve(now).due(now + Duration::from_secs(10), Greeted::None),
            "deadline"
        );
    }

    #[test]
    fn a_resolve_waits_past_its_first_provider_as_long_as_the_lookup_took_to_find_it() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        let patience_after = |first_ms: u64| {
            let mut r = resolve(now);
            r.first_found_at(now + ms(first_ms));
            r.patience()
        };
        assert_eq!(
            resolve(now).patience(),
            FIRST_PROVIDER_GRACE_MAX,
            "none found yet"
        );
        assert_eq!(patience_after(35), ms(35));
        assert_eq!(
            patience_after(0),
            FIRST_PROVIDER_GRACE_MIN,
            "a connected peer's answer"
        );
        assert_eq!(
            patience_after(3_000),
            FIRST_PROVIDER_GRACE_MAX,
            "a loaded network"
        );
        let mut r = resolve(now);
        r.first_found_at(now + ms(35));
        r.first_found_at(now + ms(90));
        assert_eq!(r.patience(), ms(35), "the first provider's moment is kept");
    }

    #[test]
    fn routing_refreshes_of_nodes_started_together_spread_over_the_period() {
        let spread = ROUTING_REFRESH * ROUTING_REFRESH_SPREAD_PERCENT as u32 / 100;
        let (low, high) = (ROUTING_REFRESH - spread, ROUTING_REFRESH + spread);
        let nodes: Vec<PeerId> = (0..300)
            .map(|i: u32| {
                let mut seed = [0u8; 32];
                seed[..4].copy_from_slice(&i.to_le_bytes());
                let key = libp2p::identity::Keypair::ed25519_from_bytes(seed).expect("a key");
                key.public().to_peer_id()
            })
            .collect();
        let first: Vec<Duration> = nodes.iter().map(|n| refresh_wait(n, 0)).collect();
        assert!(first.iter().all(|w| (low..=high).contains(w)), "{first:?}");
        // Ten equal slices of the spread: 300 nodes, about 30 in each.
        let mut slices = [0usize; 10];
        for w in &first {
            let at = (*w - low).as_secs_f64() / (high - low).as_secs_f64();
            slices[((at * 10.0) as usize).min(9)] += 1;
        }
        assert!(slices.iter().all(|&n| n >= 10), "bunched: {slices:?}");
        let node = nodes[0];
        let rounds: HashSet<Duration> = (0..8).map(|r| refresh_wait(&node, r)).collect();
        assert!(rounds.len() >= 7, "one node's rounds repeat: {rounds:?}");
    }
}
