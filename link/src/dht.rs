//! What shards and the admin threads say to the DHT thread (`ron-dht`), and the DHT's
//! counters. Nothing here knows libp2p: a shard sends addresses, an admin thread gets
//! node ids and OAP addresses back.
//!
//! Two mailboxes, both bounded:
//! - provider changes ([`ProviderChange`]): a shard `try_send`s the addresses of
//!   acknowledged objects, and of evicted ones (a std channel: no lock on the shard's
//!   side); the DHT thread takes them in order on its tick. A full mailbox drops an
//!   announcement and counts it; a withdrawal comes back to its sender. While the DHT
//!   thread has nothing to do it ticks once a second, not ten times, and says so on
//!   the [`AnnounceBell`]: the first announcement after that wakes it (one wake-up per
//!   idle spell, not one per announcement).
//! - requests ([`DhtRequest`], a tokio channel): they wake the DHT thread at once, so
//!   a lookup does not wait for a tick.
//!
//! And one the other way ([`ReplicationRoutes`]): copies the DHT thread accepted to make
//! for the placement (replication, docs/design/replication.md), and the admin thread's
//! audits of holders, go to the shard owning each address on a bounded tokio channel per
//! shard, which the shard awaits; each carries a channel for its outcome.

use std::net::SocketAddr;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use tokio::sync::mpsc::error::TrySendError;

use crate::families::declare_counters;
use crate::labels::label_enum;

/// Requests (and, separately, announcements) waiting for the DHT thread, all senders
/// together.
pub const DHT_MAILBOX_LEN: usize = 1_024;
/// Addresses in one announce message.
pub const ANNOUNCE_BATCH_MAX: usize = 4_096;
/// Providers one resolve may return.
pub const RESOLVE_LIMIT_MAX: usize = 64;

/// A provider of an object, as `/resolve` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Provider {
    /// The provider's libp2p `PeerId` (base58).
    pub node_id: String,
    /// Where it serves OAP/1, when the DHT thread learned it (from the provider itself,
    /// at the address it was reached on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oap: Option<SocketAddr>,
    /// Its zone (`--zone`), when it has one and the DHT thread learned it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Whether it is this node.
    pub local: bool,
}

/// Why a resolve has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("the DHT is busy: {0} requests are waiting")]
    Busy(usize),
    #[error("the DHT has {0} lookups running, its most")]
    TooManyLookups(usize),
    #[error("the DHT thread is not running")]
    Stopped,
    #[error("no answer within {0} ms")]
    Timeout(u64),
}

/// What a resolve answers.
pub type Resolved = Result<Vec<Provider>, ResolveError>;

/// Where the DHT thread sends an answer: a blocking admin thread waits on a std
/// channel, a shard task on a oneshot it can await on its own executor.
#[derive(Debug)]
pub enum Reply<T> {
    Blocking(SyncSender<T>),
    Awaited(tokio::sync::oneshot::Sender<T>),
}

impl<T> Reply<T> {
    /// Sends the answer; an asker that has gone away is not an error.
    pub fn send(self, answer: T) {
        match self {
            Reply::Blocking(reply) => {
                let _ = reply.try_send(answer);
            }
            Reply::Awaited(reply) => {
                let _ = reply.send(answer);
            }
        }
    }
}

/// Where a resolve's (or a placement's) answer goes.
pub type ResolveReply = Reply<Resolved>;
/// Where a wait for copies' answer goes.
pub type CopiesReply = Reply<CopiesMade>;

/// What a shard tells the DHT thread about the objects it holds.
#[derive(Debug)]
pub enum ProviderChange {
    /// Stored: provide them (and publish the new ones).
    Provide(Vec<[u8; 32]>),
    /// Stored as kept copies (uploads, placement copies): provide and publish them, then
    /// ask the other holders the placement names to take them.
    ProvideKept(Vec<[u8; 32]>),
    /// Evicted: stop providing them (other nodes' records lapse at their TTL).
    Withdraw(Vec<[u8; 32]>),
}

impl ProviderChange {
    /// How many addresses it names.
    pub fn len(&self) -> usize {
        match self {
            ProviderChange::Provide(addrs)
            | ProviderChange::ProvideKept(addrs)
            | ProviderChange::Withdraw(addrs) => addrs.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a wait for copies ended (`PUT ?copies=N`): `copies` counts this node's copy and
/// every holder that answered `held`, which are `held_by` — claims, until an audit of
/// each holder's copy proves them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiesMade {
    pub copies: usize,
    pub ended: CopiesEnd,
    pub held_by: Vec<Provider>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopiesEnd {
    /// At least the copies wanted.
    Reached,
    /// Every holder asked answered, and fewer hold it (the network has fewer nodes, or
    /// they refused or failed).
    Fewer,
    /// The deadline passed first.
    TimedOut,
    /// The DHT thread has too many waits for copies under way.
    Busy,
}

#[derive(Debug)]
pub enum DhtRequest {
    /// Who provides `addr`: at most `limit` providers, answered on `reply` within
    /// `deadline_ms`.
    Resolve {
        addr: [u8; 32],
        limit: usize,
        deadline_ms: u64,
        reply: ResolveReply,
    },
    /// The holders the placement names for `addr` (in pick order), from a lookup of its
    /// closest peers, answered on `reply` within `deadline_ms`.
    Placement {
        addr: [u8; 32],
        deadline_ms: u64,
        reply: ResolveReply,
    },
    /// The holders the placement names for each of `addrs` (at most
    /// [`PLACEMENTS_PER_REQUEST_MAX`]), answered together on `reply`, in their order,
    /// within `deadline_ms`: one lookup per stretch of the key space they lie in, not one
    /// per address (a shard's repair sweep).
    Placements {
        addrs: Vec<[u8; 32]>,
        deadline_ms: u64,
        reply: Reply<Vec<Resolved>>,
    },
    /// Ask for copies of `addr` and answer once `want` copies exist (this node's
    /// counted), every node asked answered, or `deadline_ms` passed. With `to` empty:
    /// publish it now (a kept object this node holds) and ask the holders its placement
    /// names; else ask the nodes `to` names (node ids) directly (an operator's repair).
    Copies {
        addr: [u8; 32],
        want: usize,
        deadline_ms: u64,
        to: Vec<String>,
        reply: CopiesReply,
    },
    /// Leave the peer `node_id` names out of this node's placements for a while: it
    /// answered `held` for a copy and then failed the audit of it (a shard's sweep).
    LeaveOut { node_id: String, why: LeftOut },
}

/// How an announcement wakes a DHT thread that sleeps on its idle tick: the thread
/// says it is asleep, then looks at the mailbox once more; a sender queues its
/// announcement, then looks at the flag, and the one that finds it set clears it and
/// wakes the thread. Each side's write comes before its read with a full fence between,
/// so at least one of them sees the other's (the announcement is taken by that last
/// look, or the sender rings). A busy thread's flag is clear: senders only read it.
#[derive(Debug, Default)]
pub struct AnnounceBell {
    asleep: AtomicBool,
    rung: AtomicBool,
    waker: AtomicWaker,
}

impl AnnounceBell {
    /// The DHT thread: from now on it sleeps on its idle tick. It must look at the
    /// mailbox after this (an announcement queued just before did not ring).
    pub fn fall_asleep(&self) {
        self.asleep.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// The DHT thread: it ticks at its busy pace again (senders need not ring).
    pub fn wake_up(&self) {
        self.asleep.store(false, Ordering::Relaxed);
    }

    /// A sender, after queuing: wakes the thread if it sleeps (once per sleep).
    fn ring_if_asleep(&self) {
        fence(Ordering::SeqCst);
        if self.asleep.load(Ordering::Relaxed) && self.asleep.swap(false, Ordering::AcqRel) {
            self.rung.store(true, Ordering::Release);
            self.waker.wake();
        }
    }

    /// The DHT thread: ready once a sender rang since the last time it was.
    pub fn poll_rung(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        if self.rung.swap(false, Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// The senders' end of the DHT mailbox (cheap to clone: one per shard and admin).
#[derive(Debug, Clone)]
pub struct DhtClient {
    announces: SyncSender<ProviderChange>,
    bell: Arc<AnnounceBell>,
    requests: tokio::sync::mpsc::Sender<DhtRequest>,
    pub metrics: Arc<DhtMetrics>,
    /// This node's id (base58), for the banner and `/admin/stats`.
    pub node_id: Arc<str>,
}

impl DhtClient {
    pub fn new(
        announces: SyncSender<ProviderChange>,
        bell: Arc<AnnounceBell>,
        requests: tokio::sync::mpsc::Sender<DhtRequest>,
        metrics: Arc<DhtMetrics>,
        node_id: Arc<str>,
    ) -> Self {
        DhtClient {
            announces,
            bell,
            requests,
            metrics,
            node_id,
        }
    }

    /// Queues an announcement (never waits; a full mailbox drops it, counted).
    pub fn announce(&self, addrs: Vec<[u8; 32]>) {
        let count = addrs.len() as u64;
        self.announce_change(ProviderChange::Provide(addrs), count);
    }

    /// Queues an announcement of kept copies, which the placement's other holders are
    /// then asked to take (never waits; a full mailbox drops it, counted).
    pub fn announce_kept(&self, addrs: Vec<[u8; 32]>) {
        let count = addrs.len() as u64;
        self.announce_change(ProviderChange::ProvideKept(addrs), count);
    }

    /// Queues `change` of `count` addresses; a full mailbox drops it, counted.
    fn announce_change(&self, change: ProviderChange, count: u64) {
        if !matches!(self.try_change(change), Some(Ok(()))) {
            self.metrics
                .announce_dropped_total
                .fetch_add(count, Ordering::Relaxed);
        }
    }

    /// Queues an announcement unless the mailbox is full, in which case the batch comes
    /// back (for a sender that would rather wait than drop: the start-up walk). `None`
    /// once the DHT thread has stopped.
    pub fn try_announce(&self, addrs: Vec<[u8; 32]>) -> Option<Result<(), Vec<[u8; 32]>>> {
        self.try_change(ProviderChange::Provide(addrs))
    }

    /// A client of no DHT thread, for the tests of its callers: its announcements wait
    /// in the returned mailbox (room for `mailbox_len`), its requests go nowhere.
    pub fn for_tests(mailbox_len: usize) -> (DhtClient, std::sync::mpsc::Receiver<ProviderChange>) {
        let (announces, mailbox) = std::sync::mpsc::sync_channel(mailbox_len);
        let (requests, _) = tokio::sync::mpsc::channel(1);
        let metrics = Arc::new(DhtMetrics::default());
        let bell = Arc::new(AnnounceBell::default());
        (
            DhtClient::new(announces, bell, requests, metrics, "test".into()),
            mailbox,
        )
    }

    /// [`DhtClient::try_announce`] for kept copies ([`DhtClient::announce_kept`]).
    pub fn try_announce_kept(&self, addrs: Vec<[u8; 32]>) -> Option<Result<(), Vec<[u8; 32]>>> {
        self.try_change(ProviderChange::ProvideKept(addrs))
    }

    /// Counts announcements a sender gave up on (`ron_dht_announce_dropped_total`).
    pub fn count_dropped_announcements(&self, count: u64) {
        self.metrics
            .announce_dropped_total
            .fetch_add(count, Ordering::Relaxed);
    }

    /// Queues a withdrawal unless the mailbox is full, in which case the batch comes
    /// back (the evicter waits and sends it again). `None` once the DHT thread has
    /// stopped.
    pub fn try_withdraw(&self, addrs: Vec<[u8; 32]>) -> Option<Result<(), Vec<[u8; 32]>>> {
        self.try_change(ProviderChange::Withdraw(addrs))
    }

    fn try_change(&self, change: ProviderChange) -> Option<Result<(), Vec<[u8; 32]>>> {
        match self.announces.try_send(change) {
            Ok(()) => {
                self.bell.ring_if_asleep();
                Some(Ok(()))
            }
            Err(std::sync::mpsc::TrySendError::Full(
                ProviderChange::Provide(back)
                | ProviderChange::ProvideKept(back)
                | ProviderChange::Withdraw(back),
            )) => Some(Err(back)),
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => None,
        }
    }

    /// Asks who provides `addr` and waits for the answer (admin threads only: blocking).
    pub fn resolve(&self, addr: [u8; 32], limit: usize, deadline_ms: u64) -> Resolved {
        let limit = limit.clamp(1, RESOLVE_LIMIT_MAX);
        self.ask_blocking(deadline_ms, |reply| DhtRequest::Resolve {
            addr,
            limit,
            deadline_ms,
            reply,
        })
        .and_then(|answer| answer)
    }

    /// Asks who provides `addr` without blocking: the answer arrives on the returned
    /// oneshot, which any executor can await (a shard bounds the wait with its own
    /// timer). A full mailbox is refused at once.
    pub fn resolve_later(
        &self,
        addr: [u8; 32],
        limit: usize,
        deadline_ms: u64,
    ) -> Result<tokio::sync::oneshot::Receiver<Resolved>, ResolveError> {
        let limit = limit.clamp(1, RESOLVE_LIMIT_MAX);
        self.ask_later(|reply| DhtRequest::Resolve {
            addr,
            limit,
            deadline_ms,
            reply,
        })
    }

    /// Asks which nodes the placement names for `addr` and waits for the answer (admin
    /// threads only: blocking).
    pub fn placement(&self, addr: [u8; 32], deadline_ms: u64) -> Resolved {
        self.ask_blocking(deadline_ms, |reply| DhtRequest::Placement {
            addr,
            deadline_ms,
            reply,
        })
        .and_then(|answer| answer)
    }

    /// The placement's holders of each of `addrs` without blocking (a shard's repair
    /// sweep): the answers arrive together, in the order of `addrs`, on the returned
    /// oneshot by `deadline_ms`. Panics past [`PLACEMENTS_PER_REQUEST_MAX`] addresses (the
    /// sweep's page is that long at most).
    pub fn placements_later(
        &self,
        addrs: Vec<[u8; 32]>,
        deadline_ms: u64,
    ) -> Result<tokio::sync::oneshot::Receiver<Vec<Resolved>>, ResolveError> {
        assert!(
            addrs.len() <= PLACEMENTS_PER_REQUEST_MAX,
            "a placements request of {} addresses, at most {PLACEMENTS_PER_REQUEST_MAX}",
            addrs.len()
        );
        self.ask_later(|reply| DhtRequest::Placements {
            addrs,
            deadline_ms,
            reply,
        })
    }

    /// Asks for `want` copies of `addr` (this node's included) without blocking: the
    /// answer arrives on the returned oneshot by `deadline_ms` (a shard bounds the wait
    /// with its own timer too). A full mailbox is refused at once.
    pub fn copies_later(
        &self,
        addr: [u8; 32],
        want: usize,
        deadline_ms: u64,
    ) -> Result<tokio::sync::oneshot::Receiver<CopiesMade>, ResolveError> {
        self.ask_later(|reply| DhtRequest::Copies {
            addr,
            want,
            deadline_ms,
            to: Vec::new(),
            reply,
        })
    }

    /// Asks the nodes `to` (node ids) to take a copy of `addr` and waits for their
    /// answers, at most `deadline_ms` (admin threads only: blocking).
    pub fn copy_to(
        &self,
        addr: [u8; 32],
        to: Vec<String>,
        deadline_ms: u64,
    ) -> Result<CopiesMade, ResolveError> {
        self.ask_blocking(deadline_ms, |reply| {
            copy_to_request(addr, to, deadline_ms, reply)
        })
    }

    /// Has the DHT thread leave `node_id` out of this node's placements for a while
    /// (`why`); a full mailbox refuses it at once.
    pub fn leave_out(&self, node_id: String, why: LeftOut) -> Result<(), ResolveError> {
        self.send_request(DhtRequest::LeaveOut { node_id, why })
    }

    /// Asks the nodes `to` (node ids) to take a copy of `addr` without blocking; the
    /// answer arrives on the returned oneshot by `deadline_ms`.
    pub fn copy_to_later(
        &self,
        addr: [u8; 32],
        to: Vec<String>,
        deadline_ms: u64,
    ) -> Result<tokio::sync::oneshot::Receiver<CopiesMade>, ResolveError> {
        self.ask_later(|reply| copy_to_request(addr, to, deadline_ms, reply))
    }

    /// Sends the request `ask` makes and waits for its answer: the DHT thread answers
    /// by `deadline_ms`, and a little slack covers its tick.
    fn ask_blocking<T>(
        &self,
        deadline_ms: u64,
        ask: impl FnOnce(Reply<T>) -> DhtRequest,
    ) -> Result<T, ResolveError> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.send_request(ask(Reply::Blocking(reply)))?;
        let wait = std::time::Duration::from_millis(deadline_ms + 1_000);
        answer.recv_timeout(wait).map_err(|e| match e {
            std::sync::mpsc::RecvTimeoutError::Timeout => ResolveError::Timeout(deadline_ms),
            std::sync::mpsc::RecvTimeoutError::Disconnected => ResolveError::Stopped,
        })
    }

    /// Sends the request `ask` makes; its answer arrives on the returned oneshot.
    fn ask_later<T>(
        &self,
        ask: impl FnOnce(Reply<T>) -> DhtRequest,
    ) -> Result<tokio::sync::oneshot::Receiver<T>, ResolveError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send_request(ask(Reply::Awaited(reply)))?;
        Ok(answer)
    }

    /// Queues a request; a full mailbox is refused at once.
    fn send_request(&self, request: DhtRequest) -> Result<(), ResolveError> {
        match self.requests.try_send(request) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(ResolveError::Busy(DHT_MAILBOX_LEN)),
            Err(TrySendError::Closed(_)) => Err(ResolveError::Stopped),
        }
    }
}

/// Copies of `addr` asked of the nodes `to` directly: one each, and this node's.
fn copy_to_request(
    addr: [u8; 32],
    to: Vec<String>,
    deadline_ms: u64,
    reply: CopiesReply,
) -> DhtRequest {
    DhtRequest::Copies {
        addr,
        want: to.len() + 1,
        deadline_ms,
        to,
        reply,
    }
}

/// Addresses one placements request may carry (a page of a shard's repair sweep).
pub const PLACEMENTS_PER_REQUEST_MAX: usize = 256;

/// Upper bounds of the lookup-latency buckets, milliseconds
/// (`ron_dht_lookup_duration_seconds`, shown in seconds).
pub const LOOKUP_BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 5_000, 30_000];

/// Upper bounds of the publish-delay buckets, milliseconds
/// (`ron_dht_publish_delay_seconds`, shown in seconds).
pub const PUBLISH_DELAY_BUCKETS_MS: [u64; 10] = [
    100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 300_000,
];

declare_counters! {
    /// The DHT thread's counters (it writes them, relaxed; the admin threads read them).
    /// One writer, so each family's `Sum` is its one value.
    pub struct DhtMetrics;
    /// Plain values read from [`DhtMetrics`].
    pub struct DhtSnapshot;
    /// The family of each exported counter of [`DhtMetrics`], by field (the lookup
    /// histogram is rendered from its buckets by the control thread).
    pub struct DhtFamilies = DHT;
    {
        /// Provider lookups by latency: `lookup_ms_buckets[i]` counts lookups of at most
        /// `LOOKUP_BUCKETS_MS[i]` (not cumulative; the renderer sums), the last one the rest.
        lookup_ms_buckets: [AtomicU64; LOOKUP_BUCKETS_MS.len() + 1],
        lookup_ms_sum: AtomicU64,
        /// Provider lookups that found a provider, by the time to the first one found
        /// (same buckets): the query's share of `lookup_ms_buckets`, the rest being the
        /// wait for more providers and for the greetings of those dialed.
        first_provider_ms_buckets: [AtomicU64; LOOKUP_BUCKETS_MS.len() + 1],
        first_provider_ms_sum: AtomicU64,
        /// Connections this node dialed, by the time to establish them (TCP, noise,
        /// yamux; same buckets): what each hop of a lookup to a peer not connected pays.
        dial_ms_buckets: [AtomicU64; LOOKUP_BUCKETS_MS.len() + 1],
        dial_ms_sum: AtomicU64,
        /// The provider store's LMDB commits, by duration (same buckets): the DHT thread
        /// answers nobody while one runs. Mirrors the store's own cumulative counts.
        store_commit_ms_buckets: [AtomicU64; LOOKUP_BUCKETS_MS.len() + 1],
        store_commit_ms_sum: AtomicU64,
        /// Fresh keys by the time from their announcement to the first peer that took
        /// their provider record: `publish_delay_ms_buckets[i]` counts those of at most
        /// `PUBLISH_DELAY_BUCKETS_MS[i]` (not cumulative), the last one the rest.
        publish_delay_ms_buckets: [AtomicU64; PUBLISH_DELAY_BUCKETS_MS.len() + 1],
        publish_delay_ms_sum: AtomicU64,
        /// The `replicas` setting: copies each kept object should have.
        replication_target: AtomicU64 => Gauge "ron_replication_target", Sum,
            "Copies each kept object should have (the replicas setting).",
        /// Copies this node accepted to make for others (pulls handed to a shard).
        copies_accepted_total: AtomicU64 => Counter "ron_replication_accepted_total", Sum,
            "Copies other nodes asked this node to hold that it accepted and handed to a shard.",
        /// Lookups that found no provider.
        missing_records_total: AtomicU64 => Counter "ron_dht_missing_records_total", Sum,
            "Provider lookups that found no provider.",
        providers_found_total: AtomicU64 => Counter "ron_dht_providers_found_total", Sum,
            "Providers returned by lookups.",
        /// Keys this node provides.
        provided_keys: AtomicU64 => Gauge "ron_dht_provided_keys", Sum,
            "Objects this node provides (its own provider records).",
        /// Records of other nodes held here.
        provider_records: AtomicU64 => Gauge "ron_dht_provider_records", Sum,
            "Provider records of other nodes held here.",
        provider_records_refused_total: AtomicU64 => Counter "ron_dht_provider_records_refused_total", Sum,
            "Records of other nodes refused (store or key full, malformed).",
        provider_records_expired_total: AtomicU64 => Counter "ron_dht_provider_records_expired_total", Sum,
            "Records of other nodes removed at their expiry.",
        provider_records_evicted_total: AtomicU64 => Counter "ron_dht_provider_records_evicted_total", Sum,
            "Records of other nodes removed from a full store for one from a host holding fewer.",
        /// Keys published to the closest peers (first time and republished).
        keys_published_total: AtomicU64 => Counter "ron_dht_keys_published_total", Sum,
            "Own keys published to their closest peers (first time and republished).",
        /// Batches no peer accepted (left for the next sweep).
        publish_failures_total: AtomicU64 => Counter "ron_dht_publish_failures_total", Sum,
            "Publication batches no peer accepted (left for the sweep).",
        /// `/ron/provide/2` requests this node sent that got no answer: timed out (a peer
        /// slow or silent), not spoken by the peer, or cut with their connection.
        provide_requests_failed_total: AtomicU64 => Counter "ron_dht_provide_requests_failed_total", Sum,
            "/ron/provide/2 requests this node sent (publications, greetings) that got no answer: timed out (a peer slow or silent), not spoken by the peer, or cut with their connection.",
        /// Keys of others' `/ron/provide/2` batches not stored because their sender (a
        /// public host; a peer on own networks) or all senders together were past their
        /// rate.
        provided_keys_throttled_total: AtomicU64 => Counter "ron_dht_provided_keys_throttled_total", Sum,
            "Keys of other nodes' /ron/provide/2 batches not stored because their sender (a public host, or a peer on an operator's own networks) or all senders together were past their rate.",
        /// Placements answered from a view not sure of the key's candidates (a lookup
        /// that timed out or came back short).
        placements_unsure_total: AtomicU64 => Counter "ron_replication_placements_unsure_total", Sum,
            "Placements named from a view not sure of the key's candidates (its lookup timed out or came back short).",
        /// Lookups run to name holders (a placement's own, or one of a page's).
        placement_lookups_total: AtomicU64 => Counter "ron_replication_placement_lookups_total", Sum,
            "Lookups of a key's closest peers run to name its holders (a placement's own, or one of a sweep page's).",
        /// Keys of a batch whose k closest peers its lookup may have missed, sent back to
        /// be looked up on their own.
        publish_keys_deferred_total: AtomicU64 => Counter "ron_dht_publish_keys_deferred_total", Sum,
            "Keys of a publication batch whose k closest peers its lookup may have missed (looked up on their own).",
        /// Requests that took fresh keys to peers likely among their closest before the
        /// batch's lookup ended (optimistic provide), by where the peer came from
        /// ([`EarlyPeer`] order).
        publish_early_requests_total: [AtomicU64; EarlyPeer::ALL.len()] => Counter "ron_dht_publish_early_requests_total", Labelled("peer", &EarlyPeer::LABELS),
            "Requests that took fresh keys at once to peers likely among their closest, before the batch's lookup ended (optimistic provide), by where the peer came from: this node's routing table as the lookup started, or a connection opened meanwhile.",
        announce_dropped_total: AtomicU64 => Counter "ron_dht_announce_dropped_total", Sum,
            "Stored objects not announced at once (DHT mailbox full; the sweep announces them).",
        /// Routing-table refreshes started (on the node's schedule: docs/design/dht.md).
        routing_refreshes_total: AtomicU64 => Counter "ron_dht_routing_refreshes_total", Sum,
            "Routing-table refreshes started (a lookup of this node's id and of a random key in each bucket not full; every 10 min +- 25 %).",
        /// Join lookups run (libp2p-kad's as peers enter a short table, and ron's again
        /// while one had requests fail and left the routing table under 10 peers).
        join_lookups_total: AtomicU64 => Counter "ron_dht_join_lookups_total", Sum,
            "Join lookups run (a lookup of this node's id, then of a random key in each bucket): libp2p-kad's, as a peer enters a table under 20 (the first join among them), and ron's, again, backing off, while one had requests fail and left the table under 10 peers.",
        /// Providers a resolve named from the OAP/1 address their records carried,
        /// without waiting for their greeting (neither this node nor a greeted peer).
        providers_named_from_records_total: AtomicU64 => Counter "ron_dht_providers_named_from_records_total", Sum,
            "Providers a lookup named with the OAP/1 address their provider records carried, without dialing them for their greeting first (peers this node had not greeted).",
        /// Providers not yet greeted that resolves dialed (at most 8 a resolve).
        claimed_provider_dials_total: AtomicU64 => Counter "ron_dht_claimed_provider_dials_total", Sum,
            "Providers not yet greeted that lookups dialed to prove them (at most 8 a lookup).",
        /// Peers with an open connection.
        peers_connected: AtomicU64 => Gauge "ron_dht_peers_connected", Sum,
            "Peers with an open libp2p connection.",
        /// Connections kept open while idle: to routing-table peers, and inbound ones
        /// (their dialers keep them), each bounded.
        connections_kept: AtomicU64 => Gauge "ron_dht_connections_kept", Sum,
            "libp2p connections kept open while idle: to peers in this node's routing table (at most 256), and inbound ones their dialers keep (at most 256).",
        /// Peers that answered a libp2p ping within the last 120 s.
        peers_alive: AtomicU64 => Gauge "ron_dht_peers_alive", Sum,
            "Peers that answered a libp2p ping within the last 120 s.",
        /// Peers left out of this node's placements, by why, until their time is up.
        peers_left_out: [AtomicU64; LeftOut::ALL.len()] => Gauge "ron_dht_peers_left_out", Labelled("reason", &LeftOut::LABELS),
            "Peers this node's placements leave out for an hour, by reason: no_room (they refused a copy it asked for below their disk floor, copies_disk_free_percent_min), held_unproven (they answered that they held a copy, then failed this node's audit of it).",
        /// Peers in the Kademlia routing table.
        routing_table_peers: AtomicU64 => Gauge "ron_dht_routing_table_peers", Sum,
            "Peers in the Kademlia routing table.",
        lookups_total: AtomicU64 => Counter "ron_dht_lookups_total", Sum,
            "Provider lookups answered.",
        /// Dials of this node that failed (refused, timed out, a peer's limits, another
        /// id at the address); dials skipped or aborted are not counted.
        dial_failures_total: AtomicU64 => Counter "ron_dht_dial_failures_total", Sum,
            "Connections this node dialed that failed (refused, timed out, over the peer's limits, another id at the address); skipped or aborted dials are not counted.",
        /// Requests the provider lookups had sent to peers when each found its first
        /// provider (none for one this node's own records answered).
        first_provider_requests_total: AtomicU64 => Counter "ron_dht_lookup_first_provider_requests_total", Sum,
            "Requests provider lookups had sent to peers when they found their first provider (over ron_dht_lookup_first_provider_seconds_count: about 3 a round of the lookup, its parallelism).",
        /// Answers of holders asked to take a copy, by outcome ([`CopyOutcome`] order).
        copies_asked_total: [AtomicU64; CopyOutcome::ALL.len()] => Counter "ron_replication_copies_total", Labelled("outcome", &CopyOutcome::LABELS),
            "Answers of the holders this node asked to take copies of its kept objects, by outcome.",
        /// Audits of holders' copies, by outcome ([`AUDIT_OUTCOMES`] order).
        audits_total: [AtomicU64; AUDIT_OUTCOMES.len()] => Counter "ron_replica_audits_total", Labelled("outcome", &AUDIT_OUTCOMES),
            "Audits of the copies holders keep (a random 64 KiB group with its proof, checked against the address), by outcome.",
    }
}

/// How an audit of a holder's copy ends (`ron_replica_audits_total{outcome}`).
pub const AUDIT_OUTCOMES: [&str; 3] = ["verified", "missing", "failed"];

label_enum! {
    /// Where an optimistic provide's peer came from
    /// (`ron_dht_publish_early_requests_total{peer}`).
    pub enum EarlyPeer {
        /// This node's routing table, as the batch's lookup started.
        RoutingTable = "routing_table",
        /// A connection opened while the lookup ran (most often one it dialed).
        Connection = "connection",
    }
}

label_enum! {
    /// Why this node's placements leave a peer out (`ron_dht_peers_left_out{reason}`).
    pub enum LeftOut {
        /// It refused a copy below its disk floor.
        NoRoom = "no_room",
        /// It answered that it held a copy, then failed this node's audit of it.
        HeldUnproven = "held_unproven",
    }
}

label_enum! {
    /// How a holder asked to take a copy answered (`ron_replication_copies_total{outcome}`).
    pub enum CopyOutcome {
        /// It holds a verified kept copy, durably.
        Held = "held",
        /// It does not count itself among the object's holders.
        NotHolder = "not_holder",
        /// Its pull failed (no source had a verified copy, or its store refused).
        Failed = "failed",
        /// It had too many copies under way.
        Busy = "busy",
        /// Still copying when it answered.
        Pending = "pending",
        /// No answer (the connection or the request failed or timed out).
        Unanswered = "unanswered",
        /// It refused: its data dirs are below its floor for copies of others
        /// (`copies_disk_free_percent_min`). The asker leaves it out of its placements
        /// for a while.
        NoRoom = "no_room",
    }
}

/// Copies and audits waiting for a shard, per shard.
pub const REPLICATION_MAILBOX_LEN: usize = 256;

/// What a shard's replication is asked on its mailbox.
#[derive(Debug)]
pub enum ToReplication {
    /// A copy the DHT thread accepted to make for the placement.
    Pull(Pull),
    /// The audit of holders' copies the admin thread makes for `/admin/placement` and
    /// `/admin/replicate`: the shard audits them as its sweep does.
    Audit(AuditHolders),
}

/// A copy the DHT thread accepted to make: the owner shard pulls `addr` from `source`
/// (the asking node's OAP/1 address) or another provider, verified, and keeps it.
#[derive(Debug)]
pub struct Pull {
    pub addr: [u8; 32],
    pub source: SocketAddr,
    pub reply: tokio::sync::oneshot::Sender<PullOutcome>,
}

/// Audit each of `holders`' copies of `addr` (at once); the outcomes come back in the
/// holders' order.
#[derive(Debug)]
pub struct AuditHolders {
    pub addr: [u8; 32],
    pub holders: Vec<Provider>,
    pub reply: SyncSender<Vec<AuditOutcome>>,
}

/// How a node's copy of an object fared in an audit (counted by its label in
/// `ron_replica_audits_total`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditOutcome {
    /// It sent the group asked for, and it verified against the address.
    Verified { group: u64 },
    /// It holds no copy (its own answer: 404).
    Missing,
    /// It could not be asked, or what it sent did not verify.
    Failed(String),
}

impl AuditOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            AuditOutcome::Verified { .. } => "verified",
            AuditOutcome::Missing => "missing",
            AuditOutcome::Failed(_) => "failed",
        }
    }

    pub fn is_verified(&self) -> bool {
        matches!(self, AuditOutcome::Verified { .. })
    }
}

/// Why the admin thread's audit has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error(
        "shard {0} did not take the audit (its replication mailbox is full or stopped); try again"
    )]
    NotTaken(usize),
    #[error("shard {shard} did not finish the audit within {wait_ms} ms")]
    Timeout { shard: usize, wait_ms: u64 },
    #[error("shard {0} is stopping; the audit did not finish")]
    Stopped(usize),
}

/// A shard's end of its replication mailbox (a tokio channel: any executor can await
/// it, and a send wakes the shard at once).
pub type ReplicationMailbox = tokio::sync::mpsc::Receiver<ToReplication>;

/// How a shard's pull ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullOutcome {
    /// Held durably as a kept copy (fetched now, or held already).
    Held,
    /// The shard has too many copies under way.
    Busy,
    /// Refused: a data dir is below the floor for copies of others (the reason).
    NoRoom(String),
    /// Why no verified copy could be made.
    Failed(String),
}

/// Which shard owns an address (the engine's partition table, as a function).
pub type OwnerOf = Arc<dyn Fn(&[u8; 32]) -> usize + Send + Sync>;

/// The way to the shards' replication mailboxes: the DHT thread's for the copies it
/// accepted, the admin thread's for audits. Each request goes to the shard that owns
/// its address.
#[derive(Clone)]
pub struct ReplicationRoutes {
    shards: Vec<tokio::sync::mpsc::Sender<ToReplication>>,
    owner_of: OwnerOf,
}

impl std::fmt::Debug for ReplicationRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationRoutes")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl ReplicationRoutes {
    /// Routes to `shards` mailboxes of [`REPLICATION_MAILBOX_LEN`], and their receiving
    /// ends (one per shard, in shard order).
    pub fn new(shards: usize, owner_of: OwnerOf) -> (ReplicationRoutes, Vec<ReplicationMailbox>) {
        let (senders, receivers) = (0..shards.max(1))
            .map(|_| tokio::sync::mpsc::channel(REPLICATION_MAILBOX_LEN))
            .unzip();
        (
            ReplicationRoutes {
                shards: senders,
                owner_of,
            },
            receivers,
        )
    }

    /// Hands `pull` to its owner shard: whether it took it (a full mailbox or a stopped
    /// shard does not).
    pub fn hand_over(&self, pull: Pull) -> bool {
        let owner = (self.owner_of)(&pull.addr);
        self.try_send_to(owner, ToReplication::Pull(pull))
    }

    /// Audits `holders`' copies of `addr` on the shard that owns it and waits for the
    /// outcomes (in the holders' order) at most `wait_ms`. Blocking: for the admin thread.
    pub fn audit(
        &self,
        addr: [u8; 32],
        holders: Vec<Provider>,
        wait_ms: u64,
    ) -> Result<Vec<AuditOutcome>, AuditError> {
        let owner = (self.owner_of)(&addr);
        let (reply, outcomes) = std::sync::mpsc::sync_channel(1);
        let audit = AuditHolders {
            addr,
            holders,
            reply,
        };
        if !self.try_send_to(owner, ToReplication::Audit(audit)) {
            return Err(AuditError::NotTaken(owner));
        }
        use std::sync::mpsc::RecvTimeoutError;
        outcomes
            .recv_timeout(std::time::Duration::from_millis(wait_ms))
            .map_err(|e| match e {
                RecvTimeoutError::Timeout => AuditError::Timeout {
                    shard: owner,
                    wait_ms,
                },
                RecvTimeoutError::Disconnected => AuditError::Stopped(owner),
            })
    }

    fn try_send_to(&self, shard: usize, request: ToReplication) -> bool {
        self.shards
            .get(shard)
            .is_some_and(|mailbox| mailbox.try_send(request).is_ok())
    }
}

impl DhtMetrics {
    /// Counts one audit by its outcome's label (one of [`AUDIT_OUTCOMES`]).
    pub fn count_audit(&self, outcome: &str) {
        if let Some(at) = AUDIT_OUTCOMES.iter().position(|o| *o == outcome) {
            self.audits_total[at].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A fresh key some peer took, `elapsed_ms` after it was announced.
    pub fn record_publish_delay(&self, elapsed_ms: u64) {
        let bucket = bucket_of(&PUBLISH_DELAY_BUCKETS_MS, elapsed_ms);
        self.publish_delay_ms_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.publish_delay_ms_sum
            .fetch_add(elapsed_ms, Ordering::Relaxed);
    }

    pub fn record_lookup(&self, elapsed_ms: u64, providers: usize) {
        self.lookup_ms_buckets[bucket_of(&LOOKUP_BUCKETS_MS, elapsed_ms)]
            .fetch_add(1, Ordering::Relaxed);
        self.lookup_ms_sum.fetch_add(elapsed_ms, Ordering::Relaxed);
        self.lookups_total.fetch_add(1, Ordering::Relaxed);
        self.providers_found_total
            .fetch_add(providers as u64, Ordering::Relaxed);
        if providers == 0 {
            self.missing_records_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A provider lookup found its first provider after sending `requests` to peers.
    pub fn record_first_provider_requests(&self, requests: u32) {
        self.first_provider_requests_total
            .fetch_add(u64::from(requests), Ordering::Relaxed);
    }

    /// A connection this node dialed was established `elapsed_ms` after the dial began.
    pub fn record_dial(&self, elapsed_ms: u64) {
        self.dial_ms_buckets[bucket_of(&LOOKUP_BUCKETS_MS, elapsed_ms)]
            .fetch_add(1, Ordering::Relaxed);
        self.dial_ms_sum.fetch_add(elapsed_ms, Ordering::Relaxed);
    }

    /// A provider lookup found its first provider `elapsed_ms` after it started.
    pub fn record_first_provider(&self, elapsed_ms: u64) {
        self.first_provider_ms_buckets[bucket_of(&LOOKUP_BUCKETS_MS, elapsed_ms)]
            .fetch_add(1, Ordering::Relaxed);
        self.first_provider_ms_sum
            .fetch_add(elapsed_ms, Ordering::Relaxed);
    }
}

/// The bucket of `elapsed_ms` among upper bounds `bounds_ms` (`bounds_ms.len()`: over
/// every bound).
pub fn bucket_of(bounds_ms: &[u64], elapsed_ms: u64) -> usize {
    bounds_ms
        .iter()
        .position(|le| elapsed_ms <= *le)
        .unwrap_or(bounds_ms.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Wakes(AtomicU64);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn client() -> (
        DhtClient,
        std::sync::mpsc::Receiver<ProviderChange>,
        Arc<AnnounceBell>,
    ) {
        let (announces, mailbox) = std::sync::mpsc::sync_channel(DHT_MAILBOX_LEN);
        let bell = Arc::new(AnnounceBell::default());
        let (requests, _) = tokio::sync::mpsc::channel(1);
        let metrics = Arc::new(DhtMetrics::default());
        let client = DhtClient::new(announces, Arc::clone(&bell), requests, metrics, "me".into());
        (client, mailbox, bell)
    }

    #[test]
    fn an_announcement_rings_only_a_sleeping_thread_and_only_once() {
        let (client, mailbox, bell) = client();
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        assert!(bell.poll_rung(&mut cx).is_pending());

        client.announce(vec![[1; 32]]);
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            0,
            "a busy thread is not woken"
        );
        assert!(bell.poll_rung(&mut cx).is_pending());

        bell.fall_asleep();
        client.announce(vec![[2; 32]]);
        client.announce_kept(vec![[3; 32]]);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "one wake per sleep");
        assert!(bell.poll_rung(&mut cx).is_ready());
        assert!(bell.poll_rung(&mut cx).is_pending(), "a ring is taken once");
        assert_eq!(mailbox.try_iter().count(), 3, "every announcement queued");

        bell.fall_asleep();
        bell.wake_up();
        assert_eq!(client.try_withdraw(vec![[4; 32]]), Some(Ok(())));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "awake again: no ring");
    }

    #[test]
    fn an_announcement_racing_the_fall_asleep_is_taken_or_rings() {
        // The thread falls asleep and then looks at the mailbox; a sender queues and
        // then looks at the flag. In every interleaving one of them sees the other.
        for _ in 0..2_000 {
            let (client, mailbox, bell) = client();
            let start = Arc::new(std::sync::Barrier::new(2));
            let sender = {
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    start.wait();
                    client.announce(vec![[7; 32]]);
                })
            };
            start.wait();
            bell.fall_asleep();
            let taken = mailbox.try_iter().count();
            sender.join().expect("the sender");
            let waker = std::task::Waker::from(Arc::new(Wakes::default()));
            let rung = bell.poll_rung(&mut Context::from_waker(&waker)).is_ready();
            assert!(
                taken == 1 || rung,
                "the announcement was neither taken nor rung"
            );
        }
    }

    fn one_shard() -> (ReplicationRoutes, ReplicationMailbox) {
        let (routes, mut mailboxes) = ReplicationRoutes::new(1, Arc::new(|_| 0));
        (routes, mailboxes.remove(0))
    }

    #[test]
    fn an_audit_says_why_it_has_no_answer() {
        let (routes, mailbox) = one_shard();
        // Not answered in time.
        let waited = routes.audit([1; 32], Vec::new(), 10);
        assert_eq!(
            waited,
            Err(AuditError::Timeout {
                shard: 0,
                wait_ms: 10
            })
        );
        // Taken, then dropped unanswered: the shard stopped. (The timed-out request is
        // still queued ahead of it: taken first, or the taker would drop that one and
        // close the mailbox before the next is sent — `NotTaken`, as a loaded machine
        // made it once.)
        let mut mailbox = mailbox;
        let stale = mailbox.try_recv();
        assert!(matches!(stale, Ok(ToReplication::Audit(_))));
        let taker = std::thread::spawn(move || {
            let request = mailbox.blocking_recv();
            assert!(matches!(request, Some(ToReplication::Audit(_))));
        });
        let stopped = routes.audit([2; 32], Vec::new(), 5_000);
        taker.join().unwrap();
        assert_eq!(stopped, Err(AuditError::Stopped(0)));
        assert_eq!(
            stopped.unwrap_err().to_string(),
            "shard 0 is stopping; the audit did not finish"
        );
        // The shard's end is gone: not taken.
        let not_taken = routes.audit([3; 32], Vec::new(), 5_000);
        assert_eq!(not_taken, Err(AuditError::NotTaken(0)));
    }

    #[test]
    fn an_audit_comes_back_in_the_holders_order() {
        let (routes, mut mailbox) = one_shard();
        let shard = std::thread::spawn(move || {
            let Some(ToReplication::Audit(audit)) = mailbox.blocking_recv() else {
                panic!("an audit was sent");
            };
            let outcomes = audit
                .holders
                .iter()
                .map(|h| AuditOutcome::Failed(h.node_id.clone()))
                .collect();
            audit.reply.send(outcomes).unwrap();
        });
        let holder = |id: &str| Provider {
            node_id: id.into(),
            oap: None,
            zone: None,
            local: false,
        };
        let outcomes = routes.audit([4; 32], vec![holder("a"), holder("b")], 5_000);
        shard.join().unwrap();
        let expected = vec![
            AuditOutcome::Failed("a".into()),
            AuditOutcome::Failed("b".into()),
        ];
        assert_eq!(outcomes, Ok(expected));
    }
}
