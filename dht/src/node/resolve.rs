//! Resolves: an admin thread's "who provides this object?" as a Kademlia
//! `get_providers` query, at most [`RESOLVES_MAX`] at once. Providers not greeted yet
//! are dialed while the query still holds their addresses; one whose record carried its
//! OAP/1 address (records this node's peers stored from `/ron/provide/2`) can be named
//! from it without waiting for that greeting.
//!
//! A provider is *proven* when it is this node or a peer that greeted it (over a
//! connection noise authenticated, at the IP the connection came from); one that a
//! query's answer names is only *claimed* by whichever peer answered — a lying peer can
//! name ids nobody runs, at addresses of its choosing. Only proven providers move a
//! resolve's clock: it is answered once it has proven as many providers as the placement
//! keeps copies (`replicas`, or its limit if lower), or when its query is done, or its
//! patience after the first proven one (as long as the lookup took to find it, 10–200
//! ms: [`Resolve::patience`]), and then once it can name every provider it found — or,
//! with one it can name already, its patience again; with none, up to
//! [`GREETING_WAIT`] — or at its own deadline, whichever comes first, with each
//! provider's node id and OAP address (none for a provider still being dialed), proven
//! ones first. Claims are kept up to the resolve's limit from each answer
//! ([`RESOLVE_FOUND_MAX`] in all), so one answer full of them crowds out no provider
//! found after it. Answering once the copies are found, not when the query has asked
//! all k closest peers, is what makes a resolve take a round trip or two instead of the
//! whole query (a provider record sits on the k closest peers, and each of them names
//! every provider it holds records of). Waiting past the first provider in proportion
//! to the lookup keeps a resolve within about twice the time the network took to show
//! one provider: the rest of its round's responses, and a dial and greeting, take about
//! a round trip of the same network.
//!
//! [`GREETING_WAIT`]: crate::node::config::GREETING_WAIT
//! [`RESOLVE_FOUND_MAX`]: crate::node::config::RESOLVE_FOUND_MAX

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use libp2p::core::Endpoint;
use libp2p::kad::{QueryId, RecordKey};
use libp2p::swarm::{ConnectionId, NetworkBehaviour};
use libp2p::PeerId;
use ron_link::dht::{Provider, ResolveError, ResolveReply};

use crate::node::address::oap_socket;
use crate::node::config::{CLAIMED_DIALS_PER_RESOLVE_MAX, RESOLVES_MAX};
use crate::node::greeted_peers::GreetedPeers;
use crate::node::state::{Greeted, Node, Resolve};

impl Node {
    pub(super) fn start_resolve(
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
                named: HashMap::new(),
                oap_from_records: HashMap::new(),
                answer_from: None,
                first_found: None,
                requests: 0,
                dialed: 0,
                reply,
            },
        );
    }

    /// Providers a resolve's query found, after `requests` to peers in all.
    pub(super) fn on_providers_found(
        &mut self,
        query: QueryId,
        providers: HashSet<PeerId>,
        requests: u32,
    ) {
        let Some(resolve) = self.resolves.get(&query) else {
            return;
        };
        let answer: Vec<PeerId> = providers.iter().copied().collect();
        let new = resolve.unseen(providers, |peer| self.authenticated(peer));
        let dial_room = CLAIMED_DIALS_PER_RESOLVE_MAX.saturating_sub(resolve.dialed);
        let dial: Vec<PeerId> = new
            .iter()
            .copied()
            .filter(|peer| *peer != self.local && !self.peers.contains_key(peer))
            .collect();
        let from_records: Vec<(PeerId, SocketAddr)> = dial
            .iter()
            .filter_map(|peer| Some((*peer, self.oap_from_records(*peer)?)))
            .collect();
        let from_records: Vec<(PeerId, SocketAddr)> = from_records
            .into_iter()
            .filter(|(_, oap)| self.may_name(oap.ip()))
            .collect();
        self.metrics
            .providers_named_from_records_total
            .fetch_add(from_records.len() as u64, Ordering::Relaxed);
        let Some(resolve) = self.resolves.get_mut(&query) else {
            return;
        };
        resolve.found.extend(new);
        resolve.count_named(&answer);
        resolve.oap_from_records.extend(from_records);
        resolve.requests = requests;
        let dial = &dial[..dial.len().min(dial_room)];
        resolve.dialed += dial.len();
        self.metrics
            .claimed_provider_dials_total
            .fetch_add(dial.len() as u64, Ordering::Relaxed);
        for &peer in dial {
            // The query still holds the addresses its answers carried for this peer. A
            // provider named from its record is dialed too: its greeting proves it, and
            // tells its zone (which a record does not carry) to later resolves and
            // fetches.
            let _ = self.swarm.dial(peer);
        }
        self.answer_due_resolves();
    }

    pub(super) fn on_providers_done(&mut self, query: QueryId) {
        if let Some(resolve) = self.resolves.get_mut(&query) {
            resolve.answerable_from(Instant::now());
        }
        self.answer_due_resolves();
    }

    /// Answers the resolves that may be answered ([`Resolve::due`]). Called when
    /// providers are found, when a query is done, on each greeting, and when the
    /// earliest [`Node::next_resolve_due`] comes.
    pub(super) fn answer_due_resolves(&mut self) {
        let now = Instant::now();
        self.note_proven_providers(now);
        let due: Vec<QueryId> = self
            .resolves
            .iter()
            .filter(|(_, r)| r.due(now, self.greeted(r)))
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

    /// When the earliest resolve falls due if no event comes first: the event loop
    /// wakes for it, so a patience or a greeting wait ends on time, not at the next tick
    /// (up to [`DHT_TICK_MS`] later). `None` when no resolve is in progress.
    ///
    /// [`DHT_TICK_MS`]: crate::node::config::DHT_TICK_MS
    pub(super) fn next_resolve_due(&self) -> Option<Instant> {
        let now = Instant::now();
        self.resolves
            .values()
            .map(|r| r.next_due(now, self.greeted(r)))
            .min()
    }

    /// The OAP/1 address the provider records of running queries give for `peer`, if
    /// one does. libp2p-kad 0.49 reports a query's providers as ids only and keeps the
    /// addresses their records carried inside the query, for its own dials; this is the
    /// call through which the swarm asks it for them before a dial (the connection id is
    /// not read by it).
    fn oap_from_records(&mut self, peer: PeerId) -> Option<SocketAddr> {
        let addresses = self
            .swarm
            .behaviour_mut()
            .kad
            .handle_pending_outbound_connection(
                ConnectionId::new_unchecked(0),
                Some(peer),
                &[],
                Endpoint::Dialer,
            )
            .ok()?;
        addresses.iter().find_map(oap_socket)
    }

    /// Whether a provider only claimed by an answer may be named at `ip`, where this
    /// node's shards would connect and send an OAP/1 GET: a public address, or one of an
    /// operator's own networks (loopback, private) where a greeted peer is — a node in a
    /// private cluster or a harness on one machine. A lying answer naming
    /// `127.0.0.1:6379` or a private address would otherwise send every resolving node's
    /// shards to services on their own hosts and networks.
    fn may_name(&self, ip: std::net::IpAddr) -> bool {
        !ron_link::policy::is_own_network(ip) || self.peers.any_at(ip)
    }

    fn authenticated(&self, peer: &PeerId) -> bool {
        proven(&self.local, &self.peers, peer)
    }

    /// Each resolve's clock, from what its providers prove now (a provider found, a
    /// greeting): from its first proven provider it may be answered after its patience,
    /// and at once with as many proven as the placement keeps copies (`replicas`, or its
    /// limit if lower). Only proven providers count: a lying peer's answer naming
    /// made-up ones would otherwise end the query at once (or start its patience), before
    /// the real providers' answers came. And only corroborated ones (named by two
    /// answers, or this node): a proven id says who a node is, not that it holds the
    /// object, and one lying answer naming greeted nodes that hold nothing ended the
    /// query before the real provider was found. Provider records sit on the k closest
    /// peers, so a real provider is named by every one of them the query asks.
    fn note_proven_providers(&mut self, now: Instant) {
        let (local, peers, needed_max) = (self.local, &self.peers, self.replicas.max(1));
        for resolve in self.resolves.values_mut() {
            let proven_found = resolve
                .found
                .iter()
                .filter(|p| **p == local || (proven(&local, peers, p) && resolve.corroborated(p)))
                .count();
            if proven_found == 0 {
                continue;
            }
            if resolve.first_found.is_none() {
                self.metrics
                    .record_first_provider_requests(resolve.requests);
                let first = resolve.first_found_at(now);
                resolve.answerable_from(first + resolve.patience());
            }
            if proven_found >= resolve.limit.min(needed_max) {
                resolve.answerable_from(now);
            }
        }
    }

    /// How many of the providers `resolve` found can be named: this node, greeted peers,
    /// and those whose records carried their OAP/1 address.
    fn greeted(&self, resolve: &Resolve) -> Greeted {
        let named =
            |p: &&PeerId| self.authenticated(p) || resolve.oap_from_records.contains_key(*p);
        match resolve.found.iter().filter(named).count() {
            n if n == resolve.found.len() => Greeted::All,
            0 => Greeted::None,
            _ => Greeted::Some,
        }
    }

    fn answer(&self, resolve: Resolve) {
        let ms = |since: Instant| u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
        let elapsed_ms = ms(resolve.started);
        self.metrics.record_lookup(elapsed_ms, resolve.found.len());
        if let Some(first) = resolve.first_found {
            self.metrics
                .record_first_provider(elapsed_ms.saturating_sub(ms(first)));
        }
        // Corroborated proven providers first, then proven ones, and at most the limit
        // of them all: claimed ones fill what is left.
        let mut found = resolve.found.clone();
        found.sort_by_key(|peer| match self.authenticated(peer) {
            true => u8::from(!(resolve.corroborated(peer) || *peer == self.local)),
            false => 2,
        });
        found.truncate(resolve.limit);
        let providers = found
            .iter()
            .map(|peer| {
                let mut provider = self.provider(peer);
                if provider.oap.is_none() {
                    provider.oap = resolve.oap_from_records.get(peer).copied();
                }
                provider
            })
            .collect();
        tracing::debug!(key = ?resolve.key, elapsed_ms, "dht: resolved");
        resolve.reply.send(Ok(providers));
    }

    pub(super) fn provider(&self, peer: &PeerId) -> Provider {
        let local = *peer == self.local;
        let (oap, zone) = match (local, self.peers.get(peer)) {
            (true, _) => (Some(self.oap), Some(self.zone.clone())),
            (false, Some(p)) => (
                Some(SocketAddr::new(p.ip, p.ports.oap)),
                Some(p.zone.clone()),
            ),
            (false, None) => (None, None),
        };
        Provider {
            node_id: peer.to_base58(),
            oap,
            zone: zone.filter(|z| !z.is_empty()),
            local,
        }
    }
}

/// Whether `peer` is proven to be who a resolve would name: this node (`local`), or a
/// peer that greeted it (`peers`: over a connection noise authenticated, at the IP it
/// came from). A provider a query's answer named, with the address its record carried,
/// is a claim of whichever peer answered: it is named too, but proves nothing.
fn proven(local: &PeerId, peers: &GreetedPeers, peer: &PeerId) -> bool {
    peer == local || peers.contains_key(peer)
}
