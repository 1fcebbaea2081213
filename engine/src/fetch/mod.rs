//! Read-through: a GET for an object this node lacks fetches it from a provider the DHT
//! names (OAP/1, verified streaming) or, failing that, from the configured HTTP origin,
//! serves it while it arrives, and stores it.
//!
//! ## What it owns
//! - [`ReadThrough`] (one per shard): the shard's fetches under way ([`Flight`]s, by
//!   address, at most `flights_max`) and how each one runs — resolve, hedged open,
//!   stream, store.
//! - [`flight`]: one fetch and its waiters (window of verified groups, outcome,
//!   per-waiter deadlines).
//! - `follow`: the node's one fetch per object — led by the object's owner shard; a
//!   miss on another shard follows the owner's fetch over the mesh.
//! - [`peer`]: the verified OAP/1 GET from one provider.
//! - [`origin`]: the HTTP origin, verified group by group against its outboard when it
//!   serves one (`<hash>.obao`), else whole.
//!
//! Replication (`crate::replication`) reaches it through [`ReadThrough::join_copy`]: a
//! placement copy is a flight like any other, paced at the shard's share of
//! `replication_bytes_per_s` and committed as kept.
//!
//! ## Invariants
//! - No byte reaches a waiter or the store unverified: a provider's group is checked
//!   against the address through its proof before it enters the window or the upload,
//!   an origin's against the chunk tree of its outboard once that checked out against
//!   the address; an origin's body without an outboard is hashed whole, and only an
//!   upload whose root is the address is committed (served from the store, never
//!   before).
//! - One upstream fetch per object per node: concurrent misses on a shard join its
//!   flight; the owner shard's flight fetches, the other shards' follow it.
//!   The fetch runs in its own task, at the upstream's pace: it never waits for a
//!   waiter (a waiter behind the window reads the store once the object is stored), so
//!   a slow client stalls no one, and a waiter leaving cancels nothing.
//! - A failed fetch satisfies no waiter and leaves nothing behind: its upload is
//!   aborted, the flight leaves the table before its waiters are told, and the next
//!   request starts a new fetch.
//! - Every wait is bounded: the resolve and the first verified group by the fetch
//!   timeout (from the fetch's start; each waiter also by its own, from its arrival),
//!   every later group by the same timeout as a stall limit, and each provider's (and
//!   origin connection's) transfer by `rate_min_bytes_per_s` after that timeout.
//!
//! ## Data flow
//! `Service::find` miss → [`ReadThrough::join`] → (new flight) task: DHT resolve →
//! [`peer::PeerGet::open`] on the first provider, a second one too if the first is
//! slow to its first group (hedge), the faster kept → each group: window → upload →
//! next group; a bad group or a stall drops that provider and the next one resumes at
//! the same group → `Upload::finish` → `Shard::commit` (durable, announced like any
//! upload) → outcome `Stored`. Waiters: `Flight::wait_open` → groups from the window →
//! the store once it is stored. On a shard that does not own the object, the flight's
//! task follows the owner's instead (`follow`): `MeshOp::Flight` → the owner's window →
//! this flight's window, then the owner's outcome.

mod attempts;
pub mod flight;
mod follow;
mod misses;
pub mod origin;
pub mod peer;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ron_codec::tree::{group_count, GROUP_LEN_BYTES};
use ron_codec::Address;
use ron_link::counters::{FetchFailure, FrontCounters};
use ron_link::dht::DhtClient;
use ron_link::policy::Tenant;
use ron_shards::lifecycle::{finished_within, StopSignal, TaskCount};
use ron_shards::scrub::Pacer;
use ron_shards::{CommitOutcome, Shard};

pub use attempts::AttemptError;
use attempts::{first_done, no_room_error, storage_error, Attempt, Attempts};
pub use flight::{Failure, Flight, GroupAt, Outcome};
use misses::Misses;
pub use origin::Origin;
use peer::PeerGet;

use crate::blocked::Blocked;
use crate::refusal::Refusal;
use crate::transfer::TransferPace;

/// What [`ReadThrough::next_group_or_faster`] got.
enum NextGroup {
    /// The group from the provider in use (or its failure).
    Here(Result<bytes::Bytes, AttemptError>),
    /// Another provider's GET from that group on, its first group verified.
    Faster(Box<PeerGet>),
}

/// Providers asked for per fetch.
const PROVIDERS_MAX: usize = 8;
/// A group that takes this many hedge intervals (`hedge_after`) to come, while other
/// providers are queued, has the next of them asked to resume at it; whichever
/// delivers first goes on, the slower goes to the back of the queue. A provider that
/// sends a group just within each stall timeout would otherwise set the fetch's pace —
/// a 64 KiB group every ~19 s is a gigabyte in days — for every client waiting on it.
const SLOW_GROUP_HEDGES: u32 = 4;
/// Providers being opened at once, at most: one more is asked each `hedge_after` while
/// none has delivered. With two, two providers that accept and never answer (placed
/// first by claiming this node's zone) kept every other one from being asked until the
/// fetch timed out.
const OPENS_AT_ONCE_MAX: usize = 4;
/// Such switches per fetch, at most: providers that are all slow (a slow link of this
/// node's own) are not traded for one another group after group.
const SLOW_SWITCHES_MAX: u32 = 3;
/// How read-through behaves (from the configuration).
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Bound on the resolve plus the first verified group, and on each later group.
    pub timeout: Duration,
    /// The slowest upstream kept, after `timeout`: a transfer's first `n` bytes must be
    /// through within `timeout + n / rate` of its start (a provider's from when it was
    /// opened; time the node held a copy back for its own pace not counted).
    pub rate_min_bytes_per_s: u64,
    /// Ask a second provider when the first has sent no verified group by then.
    pub hedge_after: Duration,
    /// How long an origin's 404, or its bytes that did not hash to the address, are
    /// remembered (zero: not at all).
    pub miss_remembered: Duration,
    /// Largest object fetched (the node's object limit).
    pub object_bytes_max: u64,
    /// Fetches under way per shard.
    pub flights_max: usize,
    /// This node's zone: providers in it are asked first (the others after the hedge).
    pub zone: Option<String>,
    /// This shard's share of `replication_bytes_per_s`: the bytes of placement copies
    /// it pulls per second, at most (0: unpaced).
    pub copy_bytes_per_s: u64,
}

/// A shard's read-through: where to fetch from and the fetches under way.
#[derive(Debug)]
pub struct ReadThrough {
    shard: Rc<Shard>,
    /// The shard's front counters: fetches, their bytes, failures, hedges and waiters.
    counters: Arc<FrontCounters>,
    dht: Option<DhtClient>,
    origin: Option<Origin>,
    config: FetchConfig,
    flights: RefCell<HashMap<Address, Rc<Flight>>>,
    /// Of `flights`, those a placement copy's pull started: at most half of
    /// `flights_max`, so the pulls other nodes ask for (addresses of their choosing, from
    /// a source of their choosing) never leave this shard's clients no fetch.
    copy_flights: Cell<usize>,
    /// Addresses the origin answered 404 for, until when that answer stands.
    misses: RefCell<Misses>,
    /// Raised by [`ReadThrough::stop`]: every fetch under way is abandoned.
    stop: StopSignal,
    /// Fetch and follow tasks running (each ends by itself, or at a stop).
    running: TaskCount,
    /// Spaces the groups of placement copies (`copy_bytes_per_s`; none: unpaced).
    copy_pacer: RefCell<Option<Pacer>>,
    /// The denylist: a blocked address is never fetched, pulled or swept.
    blocked: Rc<Blocked>,
}

impl ReadThrough {
    /// Read-through is on when the node is in a network or has an origin.
    pub fn new(
        shard: Rc<Shard>,
        counters: Arc<FrontCounters>,
        dht: Option<DhtClient>,
        origin: Option<Origin>,
        config: FetchConfig,
        blocked: Rc<Blocked>,
    ) -> Option<Rc<ReadThrough>> {
        (dht.is_some() || origin.is_some()).then(|| {
            Rc::new(ReadThrough {
                shard,
                counters,
                dht,
                origin,
                flights: RefCell::default(),
                copy_flights: Cell::new(0),
                misses: RefCell::default(),
                stop: StopSignal::default(),
                running: TaskCount::default(),
                copy_pacer: RefCell::new(
                    (config.copy_bytes_per_s > 0)
                        .then(|| Pacer::new(config.copy_bytes_per_s, Instant::now())),
                ),
                config,
                blocked,
            })
        })
    }

    pub fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// The longest object it fetches.
    pub fn object_bytes_max(&self) -> u64 {
        self.config.object_bytes_max
    }

    /// The shard whose objects it fetches.
    pub fn shard(&self) -> &Rc<Shard> {
        &self.shard
    }

    /// The DHT thread, when the node is in a network.
    pub fn dht(&self) -> Option<&DhtClient> {
        self.dht.as_ref()
    }

    fn metrics(&self) -> &FrontCounters {
        &self.counters
    }

    /// The fetch of `addr`: the one under way, or a new one started now.
    pub fn join(self: &Rc<Self>, addr: Address) -> Result<Rc<Flight>, Refusal> {
        self.join_from(addr, None)
    }

    /// The fetch of `addr` for `client`'s miss: the one under way, or a new one started
    /// now if the client's misses started fewer than [`ReadThrough::client_flights_max`]
    /// of those under way (else `TooManyClientFetches`, 503): one client asking for
    /// addresses nobody holds (each a lookup and a wait to the fetch timeout) cannot
    /// leave every other client's misses refused.
    pub fn join_for(self: &Rc<Self>, addr: Address, client: Tenant) -> Result<Rc<Flight>, Refusal> {
        let starts = !self.flights.borrow().contains_key(&addr);
        // Counted in the table itself (at most `flights_max` flights), not beside it.
        let held = self
            .flights
            .borrow()
            .values()
            .filter(|f| f.started_by.get() == Some(client))
            .count();
        let limit = self.client_flights_max();
        if starts && held >= limit {
            return Err(Refusal::TooManyClientFetches {
                shard: self.shard.index().0,
                fetches: held,
            });
        }
        let flight = self.join_from(addr, None)?;
        if starts {
            flight.started_by.set(Some(client));
        }
        Ok(flight)
    }

    /// Fetches one client's misses may have under way at once on this shard.
    fn client_flights_max(&self) -> usize {
        (self.config.flights_max / 4).max(1)
    }

    /// The fetch of a copy the placement asks this shard to keep (replication's pull):
    /// fetched from `source` first (the node that asked), then — unless `source_only` —
    /// the providers the DHT names, and committed as kept.
    ///
    /// A pull that would start a fetch while half of `flights_max` are pulls' is refused
    /// (`TooManyFetches`): the rest stay for the shard's clients. So is one whose source
    /// is a public host that a quarter of those pulls' fetches are from already
    /// (`copy_host`): a host can make as many peer ids as it likes, and one asking for
    /// copies its slow source serves (at the minimum rate) otherwise held every pull's
    /// place, and every other node's copies here were answered `busy`. Hosts of the
    /// operator's own networks (a harness on loopback, a private cluster) share the
    /// pulls' half as before. With
    /// `replaces_damaged`, the copy held is damaged: fetched again all the same, and
    /// removed just before the verified replacement's commit.
    pub(crate) fn join_copy(
        self: &Rc<Self>,
        addr: Address,
        source: Option<SocketAddr>,
        source_only: bool,
        replaces_damaged: bool,
    ) -> Result<Rc<Flight>, Refusal> {
        let starts = !self.flights.borrow().contains_key(&addr);
        let copies_max = (self.config.flights_max / 2).max(1);
        let host = source.and_then(copy_host);
        let of_host = || {
            let flights = self.flights.borrow();
            let from_host =
                |f: &&Rc<Flight>| f.started_for_copy.get() && f.source.and_then(copy_host) == host;
            flights.values().filter(from_host).count()
        };
        let too_many = self.copy_flights.get() >= copies_max
            || (host.is_some() && of_host() >= (copies_max / 4).max(1));
        if starts && too_many {
            return Err(Refusal::TooManyFetches {
                shard: self.shard.index().0,
                fetches: self.flights.borrow().len(),
            });
        }
        let flight = self.join_from(addr, source)?;
        if starts {
            flight.started_for_copy.set(true);
            flight.source_only.set(source_only);
            self.copy_flights.set(self.copy_flights.get() + 1);
        }
        flight.keep.set(true);
        if replaces_damaged {
            flight.replaces_damaged.set(true);
        }
        Ok(flight)
    }

    /// Takes a flight out of the table (before its waiters are told its outcome, so a
    /// request after a failure starts a new fetch).
    fn leave_table(&self, flight: &Flight) {
        self.flights.borrow_mut().remove(&flight.addr);
        if flight.started_for_copy.get() {
            self.copy_flights.set(self.copy_flights.get() - 1);
        }
    }

    fn join_from(
        self: &Rc<Self>,
        addr: Address,
        source: Option<SocketAddr>,
    ) -> Result<Rc<Flight>, Refusal> {
        self.blocked.check(&addr)?;
        if let Some(flight) = self.flights.borrow().get(&addr) {
            FrontCounters::add(&self.metrics().fetch_coalesced_waiters, 1);
            return Ok(Rc::clone(flight));
        }
        let under_way = self.flights.borrow().len();
        if under_way >= self.config.flights_max {
            return Err(Refusal::TooManyFetches {
                shard: self.shard.index().0,
                fetches: under_way,
            });
        }
        let flight = Flight::new(addr, source);
        self.flights.borrow_mut().insert(addr, Rc::clone(&flight));
        let (this, fetching) = (Rc::clone(self), Rc::clone(&flight));
        let running = self.running.start();
        match self.shard.owner(&addr) {
            // Another shard owns it: that shard leads the node's one fetch of it.
            Some(owner) => {
                glommio::spawn_local(async move {
                    this.follow(owner, fetching).await;
                    drop(running);
                })
                .detach();
            }
            None => {
                FrontCounters::add(&self.metrics().fetches, 1);
                glommio::spawn_local(async move {
                    this.run(fetching).await;
                    drop(running);
                })
                .detach();
            }
        }
        Ok(flight)
    }

    /// Abandons every fetch under way (its upload's temp files are left for the shard's
    /// stop to remove, its waiters answered 503) and waits for their tasks to end, at
    /// most `within`; returns how many had not ended by then.
    pub async fn stop(&self, within: Duration) -> usize {
        self.stop.stop();
        self.running.wait_none(within).await
    }

    async fn run(&self, flight: Rc<Flight>) {
        if !flight.replaces_damaged.get() && self.stored_meanwhile(&flight).await {
            self.leave_table(&flight);
            flight.finish(Outcome::Stored);
            return;
        }
        let started = Instant::now();
        let fetched = match self.remembered_miss(&flight, started) {
            // Answered as the origin answered before: remembered until then, not again.
            Some(failure) => Some(Err(failure)),
            None => self.stop.unless_stopped(self.fetch(&flight)).await,
        };
        let outcome = match fetched {
            Some(Ok(())) => {
                FrontCounters::add(&self.metrics().fetches_stored, 1);
                Outcome::Stored
            }
            Some(Err(failure)) => Outcome::Failed(failure),
            None => Outcome::Failed(Failure::Stopping),
        };
        tracing::debug!(
            obj = %flight.addr,
            elapsed_ms = started.elapsed().as_millis() as u64,
            ?outcome,
            "read-through ended"
        );
        // Out of the table first: a request after a failure starts a new fetch.
        self.leave_table(&flight);
        flight.finish(outcome);
    }

    /// Remembers how the origin failed `addr` for `fetch_miss_ms` from now, whatever
    /// asks for the object meanwhile (`misses.rs`).
    fn remember_origin_failure(&self, addr: Address, failure: &Failure) {
        let now = Instant::now();
        let until = now + self.config.miss_remembered;
        let mut misses = self.misses.borrow_mut();
        misses.remember(addr, failure.clone(), until, now);
    }

    /// Whether `flight` is a placement copy of an object committed between its pull's
    /// look at the store and this flight's start (a flight of it that had just ended):
    /// then it is kept as it is (made kept now), not fetched a second time.
    async fn stored_meanwhile(&self, flight: &Flight) -> bool {
        flight.keep.get() && matches!(self.shard.keep_if_stored(&flight.addr).await, Ok(true))
    }

    /// How the origin failed `flight`'s object, when that is remembered still. A copy
    /// another node asks for (a flight with a source) asks its source regardless.
    fn remembered_miss(&self, flight: &Flight, now: Instant) -> Option<Failure> {
        if flight.source.is_some() || self.origin.is_none() {
            return None;
        }
        let failure = self.misses.borrow().remembered(&flight.addr, now)?;
        FrontCounters::add(&self.metrics().fetch_misses_remembered, 1);
        Some(failure)
    }

    async fn fetch(&self, flight: &Flight) -> Result<(), Failure> {
        let deadline = Instant::now() + self.config.timeout;
        let mut attempts = Attempts::default();
        if let Some(source) = flight.source {
            let mut first = VecDeque::from([source]);
            match self
                .stream_from_peers(flight, &mut first, deadline, &mut attempts)
                .await
            {
                Ok(()) => return Ok(()),
                Err(Streamed::Partly) => return Err(attempts.failure(&self.config, false)),
                Err(Streamed::Nothing) if flight.source_only.get() => {
                    return Err(attempts.failure(&self.config, false))
                }
                Err(Streamed::Nothing) => {}
            }
        }
        let mut peers = self.providers(flight.addr, deadline, &mut attempts).await;
        peers.retain(|p| Some(*p) != flight.source);
        if !peers.is_empty() {
            match self
                .stream_from_peers(flight, &mut peers, deadline, &mut attempts)
                .await
            {
                Ok(()) => return Ok(()),
                Err(Streamed::Partly) => return Err(attempts.failure(&self.config, false)),
                Err(Streamed::Nothing) => {}
            }
        }
        let Some(origin) = &self.origin else {
            return Err(attempts.failure(&self.config, Instant::now() >= deadline));
        };
        match self.read_origin(origin, flight).await {
            Ok(()) => Ok(()),
            // The origin is the authority of last resort: its "no such object" is the
            // answer (404), not an upstream failure (502).
            Err(e) if e.reason == FetchFailure::NotFound => {
                attempts.note(self.metrics(), flight.addr, e);
                let failure = Failure::NotFound {
                    upstream: Rc::from(origin.url.as_str()),
                };
                self.remember_origin_failure(flight.addr, &failure);
                Err(failure)
            }
            // Its bytes hashed to something else, or it claimed more than this node
            // takes: asked again at once, it answers the same, at the cost of the whole
            // download each time.
            Err(e) if matches!(e.reason, FetchFailure::BadGroup | FetchFailure::TooLarge) => {
                attempts.note(self.metrics(), flight.addr, e);
                let failure = attempts.failure(&self.config, false);
                self.remember_origin_failure(flight.addr, &failure);
                Err(failure)
            }
            Err(e) => {
                attempts.note(self.metrics(), flight.addr, e);
                Err(attempts.failure(&self.config, false))
            }
        }
    }

    /// The OAP addresses of the object's providers (other nodes), from the DHT.
    async fn providers(
        &self,
        addr: Address,
        deadline: Instant,
        attempts: &mut Attempts,
    ) -> VecDeque<SocketAddr> {
        let Some(dht) = &self.dht else {
            return VecDeque::new();
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let no_provider = |detail: String| AttemptError {
            upstream: "the DHT".into(),
            reason: FetchFailure::NoProvider,
            detail,
        };
        let left_ms = left.as_millis() as u64;
        let answer = match dht.resolve_later(*addr.as_bytes(), PROVIDERS_MAX, left_ms) {
            Ok(answer) => answer,
            Err(e) => {
                attempts.note(self.metrics(), addr, no_provider(e.to_string()));
                return VecDeque::new();
            }
        };
        let answered = finished_within(left, answer).await;
        let providers = match answered {
            Some(Ok(Ok(providers))) => providers,
            Some(Ok(Err(e))) => {
                attempts.note(self.metrics(), addr, no_provider(e.to_string()));
                return VecDeque::new();
            }
            Some(Err(_)) | None => {
                let detail = format!("no answer within {left_ms} ms");
                attempts.note(self.metrics(), addr, no_provider(detail));
                return VecDeque::new();
            }
        };
        let peers = near_first(&providers, self.config.zone.as_deref());
        // No holder named, with an origin to ask next: not a failed attempt (an edge
        // with both counted one for every object the network lacks, and alerted for
        // good). A lookup that failed or timed out still counts; so does no holder on
        // a node with no origin, where the read fails.
        if peers.is_empty() && self.origin.is_none() {
            let detail = "no other node provides it".to_string();
            attempts.note(self.metrics(), addr, no_provider(detail));
        }
        peers
    }

    /// Streams the object from `peers`, resuming at the group where a provider failed
    /// with the next one, and stores it.
    async fn stream_from_peers(
        &self,
        flight: &Flight,
        peers: &mut VecDeque<SocketAddr>,
        deadline: Instant,
        attempts: &mut Attempts,
    ) -> Result<(), Streamed> {
        let addr = flight.addr;
        let mut get = self
            .open_hedged(addr, peers, 0, None, deadline, attempts)
            .await
            .ok_or(Streamed::Nothing)?;
        let total_len = get.total_len;
        flight.set_head(total_len, Rc::from(""));
        let groups = if total_len == 0 {
            0
        } else {
            group_count(total_len)
        };
        // A placement copy is kept, and may be packed; a read-through copy is evictable.
        let begun = match flight.keep.get() {
            true => self.shard.begin_upload(Some(total_len)),
            false => self.shard.begin_fetched_copy(Some(total_len)),
        };
        let mut upload = match begun {
            Ok(upload) => upload,
            Err(no_room) => {
                // No other source would find room either.
                attempts.note(self.metrics(), addr, no_room_error(no_room));
                return Err(Streamed::Partly);
            }
        };
        let mut next = 0;
        let mut switches_left = SLOW_SWITCHES_MAX;
        // What the provider in hand has sent, and the pace it must keep: a provider that
        // sends each group just within the stall timeout (6.4 KiB/s at 10 s) held the
        // fetch, its waiters and its place among the shard's fetches for days.
        let (mut pace, mut sent) = (self.provider_pace(), 0u64);
        while next < groups {
            let due = sent + (total_len - next * GROUP_LEN_BYTES).min(GROUP_LEN_BYTES);
            // A resume cut off by the pace gives back the providers it had in hand.
            let queued = peers.clone();
            let raced = match pace.time_left(due, Instant::now()) {
                Some(left) => {
                    let race = async {
                        match switches_left {
                            0 => NextGroup::Here(get.next_group(addr).await),
                            _ => {
                                (self.next_group_or_faster(
                                    &mut get, addr, peers, next, total_len, attempts,
                                ))
                                .await
                            }
                        }
                    };
                    finished_within(left, race).await
                }
                None => None,
            };
            let next_group = match raced {
                Some(NextGroup::Here(group)) => group,
                Some(NextGroup::Faster(faster)) => {
                    FrontCounters::add(&self.metrics().fetch_hedges, 1);
                    peers.push_back(get.peer);
                    get = *faster;
                    switches_left -= 1;
                    (pace, sent) = (self.provider_pace(), 0);
                    continue;
                }
                None => {
                    *peers = queued;
                    Err(self.below_rate(get.peer))
                }
            };
            let group = match next_group {
                Ok(group) => group,
                Err(e) => {
                    attempts.note(self.metrics(), addr, e);
                    let resume_by = Instant::now() + self.config.timeout;
                    let resumed = self
                        .open_hedged(addr, peers, next, Some(total_len), resume_by, attempts)
                        .await;
                    match resumed {
                        Some(other) => get = other,
                        None => {
                            upload.abort().await;
                            return Err(Streamed::Partly);
                        }
                    }
                    (pace, sent) = (self.provider_pace(), 0);
                    continue;
                }
            };
            FrontCounters::add(&self.metrics().fetch_bytes, group.len() as u64);
            sent += group.len() as u64;
            pace.spend_credit_past_grace(sent, Instant::now());
            if flight.keep.get() {
                FrontCounters::add(&self.metrics().replication_bytes, group.len() as u64);
                pace.excuse(self.pace_copy(group.len() as u64).await);
            }
            flight.push(group.clone());
            if let Err(e) = upload.write(&group).await {
                upload.abort().await;
                attempts.note(self.metrics(), addr, storage_error(e));
                return Err(Streamed::Partly);
            }
            next += 1;
        }
        if let Err(e) = self.store(upload, flight).await {
            attempts.note(self.metrics(), addr, e);
            return Err(Streamed::Partly);
        }
        Ok(())
    }

    /// The next group from `get` — or, when it has not come within
    /// [`SLOW_GROUP_HEDGES`] hedge intervals and other providers are queued, a GET of the
    /// rest from one of them, should that deliver its first group before `get` does
    /// (`get` is then left mid-group: the caller drops it).
    async fn next_group_or_faster(
        &self,
        get: &mut PeerGet,
        addr: Address,
        peers: &mut VecDeque<SocketAddr>,
        next: u64,
        total_len: u64,
        attempts: &mut Attempts,
    ) -> NextGroup {
        let own = async { NextGroup::Here(get.next_group(addr).await) };
        if peers.is_empty() {
            return own.await;
        }
        let slow_after = self.config.hedge_after * SLOW_GROUP_HEDGES;
        // The providers a resume taken and dropped half-way had in hand go back.
        let queued = peers.clone();
        let faster = async {
            glommio::timer::sleep(slow_after).await;
            let resume_by = Instant::now() + self.config.timeout;
            let resumed = self
                .open_hedged(addr, peers, next, Some(total_len), resume_by, attempts)
                .await;
            match resumed {
                Some(faster) => NextGroup::Faster(Box::new(faster)),
                // No other provider delivers: the slow one is all there is.
                None => std::future::pending().await,
            }
        };
        let raced = futures_lite::future::or(own, faster).await;
        if matches!(raced, NextGroup::Here(_)) {
            *peers = queued;
        }
        raced
    }

    /// Holds a placement copy's transfer back (the sender waits on TCP's window) until
    /// its last group is paid for at `copy_bytes_per_s`, so repair after a loss cannot
    /// take a node's whole link; a stop ends the wait.
    async fn pace_copy(&self, bytes: u64) -> Duration {
        let delay = match self.copy_pacer.borrow_mut().as_mut() {
            Some(pacer) => pacer.delay(bytes, Instant::now()),
            None => return Duration::ZERO,
        };
        if !delay.is_zero() {
            self.stop.sleep(delay).await;
        }
        delay
    }

    /// The pace a provider must keep from now: its first bytes within the fetch
    /// timeout, then at least `rate_min_bytes_per_s`.
    fn provider_pace(&self) -> TransferPace {
        let rate = self.config.rate_min_bytes_per_s;
        TransferPace::new(Instant::now(), self.config.timeout, rate)
    }

    fn below_rate(&self, peer: SocketAddr) -> AttemptError {
        AttemptError {
            upstream: peer.to_string(),
            reason: FetchFailure::Timeout,
            detail: format!(
                "slower than {} bytes/s after its first {} ms",
                self.config.rate_min_bytes_per_s,
                self.config.timeout.as_millis()
            ),
        }
    }

    /// Finishes a fetched object's upload and commits it (durable before it returns).
    async fn store(&self, upload: ron_shards::Upload, flight: &Flight) -> Result<(), AttemptError> {
        let addr = flight.addr;
        let staged = upload.finish(String::new()).await.map_err(storage_error)?;
        // Every group was verified against `addr`; a different root is a broken invariant.
        if staged.meta.addr() != addr {
            let computed = staged.meta.addr();
            ron_shards::discard(staged).await;
            return Err(storage_error(format!(
                "verified groups hash to {computed}, not {addr}"
            )));
        }
        let outcome = self.commit_copy(staged, flight, flight.keep.get()).await?;
        flight.committed(outcome);
        Ok(())
    }

    /// Commits a verified fetched object: a placement copy as kept, a read-through copy
    /// as evictable (docs/design/eviction.md) — unless the denylist blocked it while it
    /// was fetched: then nothing is stored (nor announced again after its withdrawal).
    /// A damaged copy it replaces is removed first, now that the replacement is staged.
    async fn commit_copy(
        &self,
        mut staged: ron_shards::StagedObject,
        flight: &Flight,
        keep: bool,
    ) -> Result<CommitOutcome, AttemptError> {
        let addr = staged.meta.addr();
        if self.blocked.blocks(&addr) {
            ron_shards::discard(staged).await;
            return Err(storage_error(format!(
                "{addr} was blocked by the denylist while it was fetched: not stored"
            )));
        }
        let replaced = flight.replaces_damaged.get();
        if replaced {
            if let Err(busy) = self.discard_damaged(addr).await {
                ron_shards::discard(staged).await;
                return Err(busy);
            }
        }
        staged.retention = match keep {
            true => ron_shards::Retention::Kept,
            false => ron_shards::Retention::Evictable,
        };
        let committed = self.shard.commit(staged).await.map_err(storage_error);
        if let (true, Err(_), Some(dht)) = (replaced, &committed, self.dht()) {
            // The damaged copy is gone and its replacement did not commit.
            let _ = dht.try_withdraw(vec![*addr.as_bytes()]);
        }
        committed
    }

    /// Removes the damaged copy a verified replacement is about to take the place of.
    async fn discard_damaged(&self, addr: Address) -> Result<(), AttemptError> {
        match self.shard.discard_damaged(&addr).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(storage_error(format!(
                "the damaged copy of {addr} is gone or busy (a commit, eviction or repair of it is under way): not replaced now"
            ))),
            Err(e) => Err(storage_error(e)),
        }
    }

    async fn read_origin(&self, origin: &Origin, flight: &Flight) -> Result<(), AttemptError> {
        let max = self.config.object_bytes_max;
        let (staged, len) = origin
            .fetch(
                &self.shard,
                flight,
                max,
                origin::OriginPace {
                    stall: self.config.timeout,
                    rate_min_bytes_per_s: self.config.rate_min_bytes_per_s,
                },
                self.metrics(),
            )
            .await?;
        let outcome = self.commit_copy(staged, flight, false).await?;
        flight.committed(outcome);
        FrontCounters::add(&self.metrics().fetch_bytes, len);
        Ok(())
    }

    /// Opens a verified GET of groups `from..` on the first provider of `peers` that
    /// delivers its first group, asking one more each `hedge_after` while none has
    /// (at most [`OPENS_AT_ONCE_MAX`] at once). The slower are dropped, and go back to
    /// the end of `peers`: they failed at nothing, and may resume the object if the
    /// fastest fails later. `None` when every provider failed or `deadline` passed.
    async fn open_hedged(
        &self,
        addr: Address,
        peers: &mut VecDeque<SocketAddr>,
        from: u64,
        expect_len: Option<u64>,
        deadline: Instant,
        attempts: &mut Attempts,
    ) -> Option<PeerGet> {
        let mut running: Vec<Attempt> = Vec::new();
        loop {
            if running.is_empty() {
                let peer = peers.pop_front()?;
                running.push(self.attempt(peer, addr, from, expect_len));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let hedge = running.len() < OPENS_AT_ONCE_MAX && !peers.is_empty();
            let wait = if hedge {
                self.config.hedge_after.min(left)
            } else {
                left
            };
            let done = finished_within(wait, first_done(&mut running)).await;
            match done {
                Some((i, Ok(get))) => {
                    running.swap_remove(i);
                    peers.extend(running.iter().map(|a| a.peer));
                    return Some(get);
                }
                Some((i, Err(e))) => {
                    running.swap_remove(i);
                    attempts.note(self.metrics(), addr, e);
                }
                None if Instant::now() >= deadline => {
                    attempts.note(
                        self.metrics(),
                        addr,
                        AttemptError {
                            upstream: format!("{} provider(s)", running.len()),
                            reason: FetchFailure::Timeout,
                            detail: format!(
                                "no verified group within {} ms",
                                self.config.timeout.as_millis()
                            ),
                        },
                    );
                    return None;
                }
                None => {
                    if let Some(peer) = peers.pop_front() {
                        FrontCounters::add(&self.metrics().fetch_hedges, 1);
                        running.push(self.attempt(peer, addr, from, expect_len));
                    }
                }
            }
        }
    }

    fn attempt(
        &self,
        peer: SocketAddr,
        addr: Address,
        from: u64,
        expect_len: Option<u64>,
    ) -> Attempt {
        let (max, stall) = (self.config.object_bytes_max, self.config.timeout);
        let open = PeerGet::open(peer, None, addr, from, expect_len, max, stall);
        Attempt {
            peer,
            task: glommio::spawn_local(open),
        }
    }
}

/// The OAP addresses of the other providers, those in `zone` first (in the DHT's
/// order otherwise): a miss is served from the near copy, and hedges to a remote one
/// only when the near one is slow.
fn near_first(providers: &[ron_link::dht::Provider], zone: Option<&str>) -> VecDeque<SocketAddr> {
    let mut others: Vec<&ron_link::dht::Provider> = providers
        .iter()
        .filter(|p| !p.local && p.oap.is_some())
        .collect();
    others.sort_by_key(|p| zone.is_none() || p.zone.as_deref() != zone);
    others.into_iter().filter_map(|p| p.oap).collect()
}

/// How far a fetch from providers got before it failed.
#[derive(Debug)]
enum Streamed {
    /// No provider delivered a first group: the origin may still be tried.
    Nothing,
    /// Groups were served already: no other source can continue them verified.
    Partly,
}

/// The host a pull's source counts under for its share of the pulls' fetches (an
/// IPv4 address, an IPv6 /64); `None` for the operator's own networks, which are not
/// limited (`ron_link::policy::is_own_network`).
fn copy_host(source: SocketAddr) -> Option<std::net::IpAddr> {
    let ip = source.ip().to_canonical();
    (!ron_link::policy::is_own_network(ip)).then(|| ron_link::policy::quota_address(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    use ron_link::dht::Provider;

    fn provider(port: u16, zone: Option<&str>, local: bool) -> Provider {
        Provider {
            node_id: format!("n{port}"),
            oap: Some(SocketAddr::from(([127, 0, 0, 1], port))),
            zone: zone.map(String::from),
            local,
        }
    }

    #[test]
    fn providers_in_this_zone_come_first_and_this_node_never() {
        let found = [
            provider(1, Some("eu"), false),
            provider(2, Some("us"), false),
            provider(3, None, false),
            provider(4, Some("us"), false),
            provider(5, Some("us"), true),
        ];
        let ports = |q: VecDeque<SocketAddr>| q.iter().map(|a| a.port()).collect::<Vec<_>>();
        assert_eq!(ports(near_first(&found, Some("us"))), [2, 4, 1, 3]);
        assert_eq!(ports(near_first(&found, Some("ap"))), [1, 2, 3, 4]);
        assert_eq!(ports(near_first(&found, None)), [1, 2, 3, 4]);
    }
}
