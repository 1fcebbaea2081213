//! Joining the network, and staying joined: the dials of the `--peer`s (the bootstrap
//! peers) and the join lookups (libp2p-kad's bootstrap: a lookup of this node's id, then
//! of a random key in each bucket), each repeated after a wait that doubles and is drawn
//! per node (equal jitter: half the wait fixed, half from a hash of the node's id and the
//! attempt).
//!
//! Why it backs off: a network started at once (a fleet restarted, a harness) sends every
//! node to the same few bootstrap peers in the same seconds. Those peers' handshakes then
//! reset and their answers time out; a node whose dial failed redialed every 2 s and a
//! node whose join lookup timed out kept the three peers it dialed for the ten minutes to
//! its first refresh — at 300 nodes on 2 CPUs, 87–143 tables under 8 peers a minute on,
//! 95 three minutes on (docs/design/dht.md "Joining", docs/PERF.md). Now the redials
//! spread out and thin, and a join lookup that had requests fail while the table holds
//! fewer than [`JOIN_PEERS_MIN`] peers is run again until it does (45–52 short three
//! minutes on).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use libp2p::kad::{QueryId, QueryStats};
use libp2p::PeerId;

use crate::node::address::peer_in;
use crate::node::config::{
    BOOTSTRAP_RETRY, BOOTSTRAP_RETRY_MAX, JOIN_LOOKUP_RETRY, JOIN_LOOKUP_RETRY_MAX, JOIN_PEERS_MIN,
};
use crate::node::state::{drawn_per_node, Node};

/// What the backoff of each is drawn for (one hash input apart).
const DIAL: &[u8] = b"bootstrap dial";
const LOOKUP: &[u8] = b"join lookup";

impl Node {
    /// Dials every bootstrap peer (telling Kademlia where each is) and sets when they are
    /// dialed again if the node is still alone then.
    pub(super) fn dial_bootstrap_peers(&mut self) {
        let join = &mut self.join;
        join.dials = join.dials.saturating_add(1);
        join.next_dial = Instant::now()
            + backoff(
                &self.local,
                DIAL,
                join.dials,
                BOOTSTRAP_RETRY,
                BOOTSTRAP_RETRY_MAX,
            );
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

    /// A node with no connection dials its bootstrap peers again when their time has
    /// come, until it has joined, while it knows no peer, and after a ping or a dial
    /// failed or a connection timed out (cut off: a heal reconnects within one wait).
    /// Not merely while it has no connection: a node can be left with none and still
    /// know its peers (they restarted; before connections to the table were kept, every
    /// idle node), and every such node dialing them every 2 s kept 200+ connections open
    /// on each bootstrap peer at 300 nodes.
    pub(super) fn redial_bootstrap_peers_when_due(&mut self) {
        let unconnected = self.swarm.connected_peers().next().is_none();
        let joined = self.join.started && !self.routing_table_empty();
        if unconnected && (!joined || self.contact_failed) && Instant::now() >= self.join.next_dial
        {
            self.dial_bootstrap_peers();
        }
    }

    /// A connection opened: the redial's wait starts over, and the first dialed one
    /// starts the join lookup when the table already holds a peer (a `--peer` with its
    /// id; otherwise libp2p-kad starts it once the peer enters the table).
    pub(super) fn on_connected_join(&mut self, dialer: bool) {
        self.join.dials = 0;
        if dialer && !self.join.started {
            self.start_join_lookup();
        }
    }

    /// Starts a join lookup (none when the table is empty); whether it started.
    fn start_join_lookup(&mut self) -> bool {
        let Ok(id) = self.swarm.behaviour_mut().kad.bootstrap() else {
            return false;
        };
        self.follow_join_lookup(id);
        true
    }

    /// The join lookup `id` is the one whose failures decide whether to look again.
    fn follow_join_lookup(&mut self, id: QueryId) {
        self.join.started = true;
        self.join.running = Some(id);
        self.join.failures = 0;
        self.join.lookups = self.join.lookups.saturating_add(1);
        self.join.retry_at = None;
        self.metrics
            .join_lookups_total
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A step of a bootstrap query ended (its own id's lookup, then one per bucket: each
    /// step's stats are its own). libp2p-kad starts one itself whenever a peer enters a
    /// table under k — the usual first join, since a `--peer` given as an address enters
    /// the table only once the peer has identified itself — and one with none running is
    /// followed like ours. The followed lookup's failed requests (and a step that timed
    /// out) are added up; at its last step, if any failed (peers too busy to answer in
    /// time, or gone) and the table still holds fewer than [`JOIN_PEERS_MIN`] peers,
    /// another is set for after the backoff. A lookup whose every request was answered
    /// has found what the network holds (a small network stays under the minimum for
    /// good).
    pub(super) fn on_join_lookup_step(
        &mut self,
        id: QueryId,
        timed_out: bool,
        stats: &QueryStats,
        last: bool,
    ) {
        if self.join.running.is_none() {
            self.follow_join_lookup(id);
        }
        if self.join.running != Some(id) {
            return;
        }
        self.join.failures = self
            .join
            .failures
            .saturating_add(stats.num_failures())
            .saturating_add(u32::from(timed_out));
        if !last {
            return;
        }
        self.join.running = None;
        let peers = self.routing_table_len();
        if peers < JOIN_PEERS_MIN && self.join.failures > 0 {
            let wait = backoff(
                &self.local,
                LOOKUP,
                self.join.lookups,
                JOIN_LOOKUP_RETRY,
                JOIN_LOOKUP_RETRY_MAX,
            );
            tracing::debug!(
                peers,
                failures = self.join.failures,
                ?wait,
                "dht: the join lookup left the routing table short; looking again"
            );
            self.join.retry_at = Some(Instant::now() + wait);
        } else {
            self.join.lookups = 0;
        }
    }

    /// Runs the join lookup set by [`Node::on_join_lookup_step`] when its time has come
    /// (not while a refresh's lookups run: they look for the same peers).
    pub(super) fn retry_join_when_due(&mut self) {
        let due = self.join.retry_at.is_some_and(|at| Instant::now() >= at);
        if due && self.join.running.is_none() && self.refresh.running.is_none() {
            self.join.retry_at = None;
            if self.routing_table_len() < JOIN_PEERS_MIN {
                self.start_join_lookup();
            } else {
                self.join.lookups = 0;
            }
        }
    }
}

/// The wait after the `attempt`-th (from 1) try: `first` doubled per try before it, at
/// most `max`; half of it fixed and half drawn from a hash of the node's id, `what` and
/// the attempt, so nodes that failed together do not try again together.
pub(super) fn backoff(
    local: &PeerId,
    what: &[u8],
    attempt: u32,
    first: Duration,
    max: Duration,
) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    let wait = first.saturating_mul(1 << doublings).min(max);
    let half_ms = u64::try_from(wait.as_millis() / 2).unwrap_or(u64::MAX);
    let drawn_ms = drawn_per_node(local, &[what, &attempt.to_le_bytes()]) % (half_ms + 1);
    Duration::from_millis(half_ms + drawn_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_secs(2);
    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn a_wait_doubles_per_attempt_within_half_and_all_of_it_up_to_the_most() {
        let node = PeerId::random();
        for (attempt, full_s) in [
            (1, 2),
            (2, 4),
            (3, 8),
            (4, 16),
            (5, 30),
            (9, 30),
            (u32::MAX, 30),
        ] {
            let wait = backoff(&node, DIAL, attempt, FIRST, MAX);
            let full = Duration::from_secs(full_s);
            assert!(
                wait >= full / 2 && wait <= full,
                "attempt {attempt}: {wait:?} not within [{:?}, {full:?}]",
                full / 2
            );
        }
    }

    #[test]
    fn attempt_zero_waits_like_the_first() {
        let node = PeerId::random();
        let wait = backoff(&node, LOOKUP, 0, FIRST, MAX);
        assert!(wait >= FIRST / 2 && wait <= FIRST, "{wait:?}");
    }

    #[test]
    fn nodes_that_failed_together_spread_their_next_try() {
        let waits: Vec<Duration> = (0..200)
            .map(|_| backoff(&PeerId::random(), DIAL, 4, FIRST, MAX))
            .collect();
        let earliest = waits.iter().min().copied().unwrap_or_default();
        let latest = waits.iter().max().copied().unwrap_or_default();
        // 200 draws over [8 s, 16 s]: the spread covers most of the 8 s.
        assert!(
            latest - earliest >= Duration::from_secs(6),
            "200 nodes' waits span only {earliest:?}..{latest:?}"
        );
        let mut seconds: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
        seconds.sort_unstable();
        seconds.dedup();
        assert!(seconds.len() >= 7, "200 waits fell in only {seconds:?}");
    }

    #[test]
    fn the_same_node_and_attempt_draw_the_same_wait_and_dials_differ_from_lookups() {
        let node = PeerId::random();
        assert_eq!(
            backoff(&node, DIAL, 3, FIRST, MAX),
            backoff(&node, DIAL, 3, FIRST, MAX)
        );
        let differ = (1..=8).any(|attempt| {
            backoff(&node, DIAL, attempt, FIRST, MAX) != backoff(&node, LOOKUP, attempt, FIRST, MAX)
        });
        assert!(differ, "the dial and lookup waits are drawn alike");
    }
}
