//! The DHT thread's body and its loop: a tokio current-thread runtime, the listener
//! awaited before [`crate::node::spawn`] returns, then one `select!` over swarm events,
//! the admin threads' requests, the stop signal, the tick and the alarm of the earliest
//! resolve's due time (its patience or greeting wait ending). Each event is handed to
//! the file that owns its concern (`peers.rs`, `resolve.rs`, `publish.rs`); the tick
//! does the periodic work: announcements, the store's commit, due resolves, the next
//! publication, the expiry step and the gauges.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use libp2p::kad::{self, GetClosestPeersOk, GetProvidersOk, QueryResult};
use libp2p::swarm::{DialError, SwarmEvent};
use ron_link::dht::{AnnounceBell, DhtMetrics, DhtRequest, ProviderChange};
use tokio::sync::oneshot;

use crate::error::DhtError;
use crate::node::address::{record_key, tcp_socket};
use crate::node::config::{
    DhtConfig, DHT_IDLE_TICK_MS, DHT_TICK_MS, EXPIRED_PER_STEP_MAX, EXPIRE_PERIOD, EXPIRE_STEP,
};
use crate::node::state::Node;
use crate::node::swarm::BehaviourEvent;
use crate::store::{unix_ms, ProviderStore};

const BUSY_TICK: Duration = Duration::from_millis(DHT_TICK_MS);
const IDLE_TICK: Duration = Duration::from_millis(DHT_IDLE_TICK_MS);

/// What the thread is told: the shards' provider changes (drained on the tick; the
/// bell wakes an idle thread for them), the admin threads' requests (they wake it), and
/// the stop signal (it wakes it; a dropped sender stops it too).
pub(super) struct Inbox {
    pub(super) announces: Receiver<ProviderChange>,
    pub(super) bell: Arc<AnnounceBell>,
    pub(super) requests: tokio::sync::mpsc::Receiver<DhtRequest>,
    pub(super) stop: oneshot::Receiver<()>,
}

/// The thread's body: builds the runtime and the node, reports the listener's address
/// (or the error) on `started`, then runs the loop until stopped.
pub(super) fn run_thread(
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

impl Node {
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

    /// The loop, until the stop signal (or its sender's drop); then the store's
    /// buffered writes are committed. After each event the next tick is set from the
    /// last one: [`DHT_TICK_MS`] on while there is work in hand, [`DHT_IDLE_TICK_MS`]
    /// when there is none (then the bell is set and the mailbox looked at once more).
    async fn run(&mut self, mut inbox: Inbox) {
        self.dial_bootstrap_peers();
        self.update_gauges();
        let mut last_tick = Instant::now();
        let mut asleep = false;
        let tick = tokio::time::sleep_until((last_tick + BUSY_TICK).into());
        tokio::pin!(tick);
        // The earliest resolve's due time (a patience or a greeting wait ending), so it is
        // answered then and not at the next tick.
        let resolve_alarm = tokio::time::sleep_until((last_tick + IDLE_TICK).into());
        tokio::pin!(resolve_alarm);
        let mut resolve_due = None;
        loop {
            tokio::select! {
                () = &mut resolve_alarm, if resolve_due.is_some() => {
                    resolve_due = None;
                    self.answer_due_resolves();
                }
                event = self.swarm.select_next_some() => self.on_event(event),
                Some(done) = self.copies.pulled.next() => self.on_pull_done(done),
                Some(request) = inbox.requests.recv() => self.on_request(request),
                () = std::future::poll_fn(|cx| inbox.bell.poll_rung(cx)) => asleep = false,
                _ = &mut inbox.stop => break,
                () = &mut tick => {
                    self.on_tick(&inbox.announces);
                    last_tick = Instant::now();
                }
            }
            let busy = self.has_work();
            if busy && asleep {
                asleep = false;
                inbox.bell.wake_up();
            } else if !busy && !asleep {
                inbox.bell.fall_asleep();
                self.take_announcements(&inbox.announces);
                // What the work in hand changed, and what that look took, shows now.
                self.update_gauges();
                asleep = !self.has_work();
                if !asleep {
                    inbox.bell.wake_up();
                }
            }
            let next = last_tick + if asleep { IDLE_TICK } else { BUSY_TICK };
            if tick.deadline() != next.into() {
                tick.as_mut().reset(next.into());
            }
            let due = self.next_resolve_due().filter(|at| *at < next);
            if due != resolve_due {
                resolve_due = due;
                if let Some(at) = due {
                    resolve_alarm.as_mut().reset(at.into());
                }
            }
        }
        self.flush_store();
        tracing::info!("dht stopped");
    }

    /// Whether the thread has something in hand a tick moves on: keys to publish (with
    /// a peer to publish to) or a sweep pass under way, publications, resolves,
    /// placements, copies or watches in flight, records not committed.
    fn has_work(&mut self) -> bool {
        let publishing = self.publisher.announcements_left
            || !self.publisher.in_flight.is_empty()
            || self.publisher.sweep_from.is_some()
            || (!self.publisher.fresh.is_empty() && !self.isolated());
        publishing
            || !self.resolves.is_empty()
            || !self.placements.is_empty()
            || !self.placement_batches.is_empty()
            || !self.copies.watches.is_empty()
            || !self.copies.answering.is_empty()
            || self.store().has_pending()
            || self.expiry_backlog
    }

    fn on_tick(&mut self, announces: &Receiver<ProviderChange>) {
        self.redial_bootstrap_peers_when_due();
        self.take_announcements(announces);
        self.flush_store();
        self.answer_due_resolves();
        self.answer_due_placements();
        self.answer_due_copies();
        self.settle_due_watches();
        self.publish_next();
        self.refresh_routing_when_due();
        self.retry_join_when_due();
        if self.expiry_backlog || self.last_expiry.elapsed() >= EXPIRE_PERIOD {
            self.last_expiry = Instant::now();
            self.remove_expired();
        }
        self.update_gauges();
    }

    fn flush_store(&mut self) {
        if let Err(e) = self.store().flush() {
            tracing::warn!("{e}");
        }
    }

    fn remove_expired(&mut self) {
        let now_ms = unix_ms(SystemTime::now());
        let removed = self
            .store()
            .remove_expired(now_ms, EXPIRE_STEP, EXPIRED_PER_STEP_MAX)
            .unwrap_or_else(|e| {
                tracing::warn!("{e}");
                0
            });
        self.expiry_backlog = removed == EXPIRED_PER_STEP_MAX;
    }

    fn update_gauges(&mut self) {
        let connected = self.swarm.connected_peers().count() as u64;
        let kept = self.swarm.behaviour().kept.kept_count() as u64;
        let routing = self.routing_table_len();
        let store = self.swarm.behaviour_mut().kad.store_mut();
        let counters = store.counters();
        let provided = store.provided_count().unwrap_or(0);
        let records = store.provider_record_count().unwrap_or(0);
        let alive = self.count_alive() as u64;
        let left_out = self.count_left_out();
        let m = &self.metrics;
        m.peers_connected.store(connected, Ordering::Relaxed);
        m.connections_kept.store(kept, Ordering::Relaxed);
        m.peers_alive.store(alive, Ordering::Relaxed);
        for (gauge, count) in m.peers_left_out.iter().zip(left_out) {
            gauge.store(count, Ordering::Relaxed);
        }
        m.routing_table_peers
            .store(routing as u64, Ordering::Relaxed);
        m.provided_keys.store(provided, Ordering::Relaxed);
        m.provider_records.store(records, Ordering::Relaxed);
        m.provider_records_refused_total
            .store(counters.records_refused, Ordering::Relaxed);
        m.provider_records_expired_total
            .store(counters.records_expired, Ordering::Relaxed);
        m.provider_records_evicted_total
            .store(counters.records_evicted, Ordering::Relaxed);
        for (bucket, count) in m
            .store_commit_ms_buckets
            .iter()
            .zip(counters.commit_ms_buckets)
        {
            bucket.store(count, Ordering::Relaxed);
        }
        m.store_commit_ms_sum
            .store(counters.commit_ms_sum, Ordering::Relaxed);
    }

    fn on_request(&mut self, request: DhtRequest) {
        match request {
            DhtRequest::Resolve {
                addr,
                limit,
                deadline_ms,
                reply,
            } => self.start_resolve(record_key(&addr), limit, deadline_ms, reply),
            DhtRequest::Placement {
                addr,
                deadline_ms,
                reply,
            } => self.ask_placement(addr, deadline_ms, reply),
            DhtRequest::Placements {
                addrs,
                deadline_ms,
                reply,
            } => self.ask_placements(addrs, deadline_ms, reply),
            DhtRequest::Copies {
                addr,
                want,
                deadline_ms,
                to,
                reply,
            } => self.watch_copies(addr, want, deadline_ms, &to, reply),
            DhtRequest::LeaveOut { node_id, why } => match node_id.parse() {
                Ok(peer) => self.leave_out(peer, why),
                Err(_) => tracing::debug!(%node_id, "dht: not a node id to leave out"),
            },
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                established_in,
                ..
            } => {
                if endpoint.is_dialer() {
                    let ms = u64::try_from(established_in.as_millis()).unwrap_or(u64::MAX);
                    self.metrics.record_dial(ms);
                }
                self.on_connected(peer_id, connection_id, &endpoint)
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => self.on_closed(peer_id, connection_id, num_established, cause.as_ref()),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad(event),
            SwarmEvent::Behaviour(BehaviourEvent::Provide(event)) => self.on_provide(event),
            SwarmEvent::Behaviour(BehaviourEvent::Replicate(event)) => self.on_replicate(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => self.on_identify(event),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(event)) => self.on_ping(event),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, "dht: dial failed: {error}");
                // A dial skipped (one to that peer already under way or connected) or
                // aborted says nothing about being cut off, nor does one this node's
                // own connection limits denied (counted: a lookup lost that peer).
                match error {
                    DialError::DialPeerConditionFalse(_) | DialError::Aborted => {}
                    DialError::Denied { .. } => {
                        self.metrics
                            .dial_failures_total
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        self.contact_failed = true;
                        self.metrics
                            .dial_failures_total
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        if let kad::Event::RoutingUpdated { peer, old_peer, .. } = event {
            let kept = &mut self.swarm.behaviour_mut().kept;
            return kept.on_routing_updated(peer, old_peer);
        }
        let kad::Event::OutboundQueryProgressed {
            id,
            result,
            step,
            stats,
        } = event
        else {
            return;
        };
        match result {
            QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders { providers, .. })) => {
                self.on_providers_found(id, providers, stats.num_requests())
            }
            QueryResult::GetProviders(_) if step.last => self.on_providers_done(id),
            QueryResult::GetClosestPeers(_) if self.on_refresh_lookup_done(id) => {}
            QueryResult::Bootstrap(result) => {
                self.on_join_lookup_step(id, result.is_err(), &stats, step.last)
            }
            QueryResult::GetClosestPeers(result) => {
                let (peers, timed_out) = match result {
                    Ok(GetClosestPeersOk { peers, .. }) => (peers, false),
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => (peers, true),
                };
                let found = peers.iter().map(|p| p.peer_id).collect();
                if !self.on_placement_peers(id, found, timed_out) {
                    self.send_publication(id, peers, timed_out);
                }
            }
            _ => {}
        }
    }
}
