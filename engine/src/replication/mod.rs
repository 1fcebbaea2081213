//! Replication on one shard (docs/design/replication.md): the copies this shard keeps
//! for the network's placement, and the checks that keep every object it owns at
//! `replicas` verified copies. The placement itself, the replicate protocol and the
//! audits' bookkeeping live in the DHT thread (`ron-dht`); this is the shard's side.
//!
//! ## What it owns
//! - [`Replication`] (one per shard, on a node in a network): its two services, started
//!   into a [`BackgroundTasks`] and stopped with the shard (docs/design/lifecycle.md).
//! - `pull`: the copies other nodes ask this shard to keep (`/ron/replicate/1`, handed
//!   over by the DHT thread for the addresses this shard owns) — kept if held and whole,
//!   else fetched verified through the read-through ([`ReadThrough::join_copy`]: a
//!   flight like any other, paced at `replication_bytes_per_s`, committed as kept).
//! - `sweep`: every `replication_interval_ms`, the kept objects this shard owns, their
//!   holders audited and those without a verified copy asked to take one; copies the
//!   placement no longer names made evictable once every named holder proved its own;
//!   then `rescue`: a page of the evictable copies, one made kept and offered to the
//!   holders when no holder named proves a copy (an object whose holders were all lost).
//! - `disk_floor`: the free disk a pull leaves to the node's own uploads
//!   (`copies_disk_free_percent_min`): below it, no new copy is kept for another node.
//! - `held_checks`: whole checks of copies held that peers ask for: one at a time per
//!   shard, paced, a copy found whole not read again for 10 minutes.
//! - `claims`: the holders that answered `held` when the sweep asked them for a copy,
//!   until the object's next check audits them; one that fails is left out of this
//!   node's placements (`DhtClient::leave_out`). And the other side: a copy this shard
//!   answered `held` for is not demoted within a grace of the request
//!   (`ASKED_TO_HOLD_MAX`), so the asker's audit finds it.
//! - `recent`: the bounded memory of recently seen addresses `held_checks` and the
//!   grace keep.
//! - `audit`: the audit of one holder's copy ([`audit_holder`]), the node's only one: the
//!   sweep, `PUT ?copies=N`, and the admin thread's `/admin/placement` and
//!   `/admin/replicate` (handed over on the same mailbox as the pulls) all use it.
//!
//! ## Invariants
//! - A copy is kept only once every group of it verified against its address (the
//!   read-through's invariant), and a holder counts only once an audit verified a
//!   random group of its own kept copy.
//! - A blocked address is never pulled, swept or copied.
//! - A kept copy here becomes evictable only after every holder the placement names has
//!   proved its own (and no sooner than the grace after a peer last asked for it): an
//!   object never has fewer copies than the placement asks during a move.
//! - Bounded: the DHT thread bounds the pulls under way (per peer and in all), the read-
//!   through bounds the flights, the sweep checks `SWEEP_CHECKS_AT_ONCE` objects at a
//!   time; every wait on the DHT or a holder has a deadline, and the stop cuts them short.
//!
//! ## Lifecycle
//! [`Replication::start`] starts the server of its mailbox (pulls and audits) and the sweep; [`Replication::stop`]
//! raises their signal (no new pull or sweep step starts), lets the read-through stop
//! (which fails the flights the pulls under way wait on), then waits for the services
//! and the pulls, bounded.

mod audit;
mod claims;
mod disk_floor;
mod held_checks;
mod pull;
mod recent;
mod rescue;
mod sweep;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ron_codec::Address;
use ron_link::counters::FrontCounters;
use ron_link::dht::{
    AuditHolders, DhtClient, LeftOut, Provider, ReplicationMailbox, ToReplication,
};
use ron_shards::lifecycle::{finished_within, join_all, BackgroundTasks, StopSignal, TaskCount};
use ron_shards::shard::DamagedDiscard;
use ron_shards::Shard;

pub use audit::{audit_holder, AuditLimits};
pub use disk_floor::{BelowFloor, DiskFloor};

use crate::blocked::Blocked;
use crate::fetch::ReadThrough;
use claims::{HeldClaims, ASKED_TO_HOLD_MAX};
use held_checks::HeldChecks;
use recent::RecentAddresses;
use sweep::COPIES_WAIT_MS;

/// How replication runs on a shard (from the configuration).
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    /// Copies the network keeps of each object.
    pub replicas: usize,
    /// Between two passes of the sweep; `None`: no sweep.
    pub sweep_every: Option<Duration>,
    /// No new copy is kept for another node while a data dir is below this floor.
    pub disk_floor: DiskFloor,
    /// The pace of whole checks of copies held that peers ask for (the shard's share of
    /// `replication_bytes_per_s`; 0: unpaced).
    pub held_check_bytes_per_s: u64,
}

/// A shard's replication: the copies it keeps for the placement and its sweep.
#[derive(Debug)]
pub struct Replication {
    shard: Rc<Shard>,
    read_through: Rc<ReadThrough>,
    dht: DhtClient,
    blocked: Rc<Blocked>,
    counters: Arc<FrontCounters>,
    /// The mailbox's server and the sweep; taken by the stop.
    services: RefCell<Option<BackgroundTasks>>,
    /// Raised by the stop: no new pull or sweep step starts.
    stop: StopSignal,
    /// Pulls and admin audits under way, each in a task of its own.
    requests_running: TaskCount,
    /// Where the sweep's rescue walk over evictable copies goes on (`None`: the start).
    rescue_from: Cell<Option<Address>>,
    disk_floor: DiskFloor,
    /// Holders that answered `held` when the sweep asked them for a copy, audited at the
    /// object's next check (`claims.rs`).
    held_claims: RefCell<HeldClaims>,
    /// Whole checks of copies held that peers asked for (`held_checks.rs`).
    held_checks: HeldChecks,
    /// Copies peers asked this shard to hold, not demoted within `demote_grace` of the
    /// last request (`claims.rs`).
    asked_to_hold: RefCell<RecentAddresses>,
    sweep_interval: Duration,
    /// How long the sweep's last pass took: the asker's next check of an object comes
    /// an interval and a pass after its request.
    last_pass: Cell<Duration>,
}

/// Sweep intervals (each with a pass of this node's sweep) a copy a peer asked for is
/// kept past its request: the asker's audit comes at its next check of the object, an
/// interval and a pass of its own after it asked.
const DEMOTE_GRACE_INTERVALS: u32 = 3;
/// The least grace: the asker's audit itself (a lookup, a connection, a group read)
/// takes seconds under loss however short the interval.
const DEMOTE_GRACE_MIN: Duration = Duration::from_secs(10);

impl Replication {
    /// Starts replication on a shard in a network (`None` off one): the server of
    /// `mailbox` (pulls and audits) and, with `config.sweep_every`, the sweep.
    pub fn start(
        read_through: &Rc<ReadThrough>,
        blocked: Rc<Blocked>,
        counters: Arc<FrontCounters>,
        mailbox: Option<ReplicationMailbox>,
        config: ReplicationConfig,
    ) -> Option<Rc<Replication>> {
        let dht = read_through.dht()?.clone();
        let services = BackgroundTasks::default();
        let replication = Rc::new(Replication {
            shard: Rc::clone(read_through.shard()),
            read_through: Rc::clone(read_through),
            dht,
            blocked,
            counters,
            stop: services.signal(),
            services: RefCell::new(Some(services)),
            requests_running: TaskCount::default(),
            rescue_from: Cell::new(None),
            disk_floor: config.disk_floor.clone(),
            held_claims: RefCell::new(HeldClaims::default()),
            held_checks: HeldChecks::new(config.held_check_bytes_per_s),
            asked_to_hold: RefCell::new(RecentAddresses::new(ASKED_TO_HOLD_MAX)),
            sweep_interval: config.sweep_every.unwrap_or_default(),
            last_pass: Cell::new(Duration::ZERO),
        });
        if let Some(mailbox) = mailbox {
            replication.start_service("replication requests", {
                let this = Rc::clone(&replication);
                this.serve_requests(mailbox)
            });
        }
        replication.start_service("damaged copies", {
            let this = Rc::clone(&replication);
            this.replace_damaged()
        });
        if let (Some(every), true) = (config.sweep_every, config.replicas > 1) {
            replication.start_service("replication sweep", {
                let this = Rc::clone(&replication);
                this.sweep_copies(every, config.replicas)
            });
        }
        Some(replication)
    }

    fn start_service(&self, name: &'static str, service: impl Future<Output = ()> + 'static) {
        let queue = glommio::executor().current_task_queue();
        let mut services = self.services.borrow_mut();
        let started = services.as_mut().map(|s| s.start(name, queue, service));
        if let Some(Err(e)) = started {
            tracing::error!(shard = self.shard.index().0, "{name} did not start: {e}");
        }
    }

    /// Serves the copies the DHT thread hands this shard (it owns their addresses) and
    /// the admin thread's audits, each in its own task, until the stop or until the
    /// senders are gone. The DHT thread bounds the pulls under way; past half the
    /// read-through's `flights_max` (the rest is its clients') a copy is answered busy.
    async fn serve_requests(self: Rc<Self>, mut mailbox: ReplicationMailbox) {
        while let Some(Some(request)) = self.stop.unless_stopped(mailbox.recv()).await {
            match request {
                ToReplication::Pull(pull) => self.start_pull(pull),
                ToReplication::Audit(audit) => self.start_audit(audit),
            }
        }
    }

    /// Copies the shard found damaged past its own repair (its scrubber, a read), one at
    /// a time: a kept copy is checked whole and, still damaged, replaced by one fetched
    /// verified (as a copy asked for is); a read-through's evictable copy is dropped (its
    /// next read reads it through).
    async fn replace_damaged(self: Rc<Self>) {
        while let Some(addr) = self
            .stop
            .unless_stopped(self.shard.next_damaged_copy())
            .await
        {
            let outcome = match self.shard.discard_damaged_if_evictable(&addr).await {
                Ok(DamagedDiscard::Kept) => format!("{:?}", self.pull(addr, None, false).await),
                Ok(DamagedDiscard::Discarded) => "dropped: read through from now on".into(),
                Ok(DamagedDiscard::NotHeld) => "not dropped: not held here, or busy".into(),
                Err(e) => e.to_string(),
            };
            tracing::warn!(obj = %addr, %outcome, "a copy damaged past this node's own repair");
        }
    }

    /// The admin thread's audit of holders' copies, at once, in a task of its own.
    fn start_audit(self: &Rc<Self>, audit: AuditHolders) {
        let running = self.requests_running.start();
        let this = Rc::clone(self);
        glommio::spawn_local(async move {
            let addr = Address::from_bytes(audit.addr);
            let limits = this.audit_limits();
            let audits = audit
                .holders
                .iter()
                .map(|holder| audit_holder(&this.dht, holder, addr, None, limits));
            let outcomes = join_all(audits.collect()).await;
            let _ = audit.reply.try_send(outcomes);
            drop(running);
        })
        .detach();
    }

    /// Whether `holder` sends a random group of its own kept copy of `addr` (of `len`
    /// bytes), verified.
    pub async fn audit(&self, dht: &DhtClient, holder: &Provider, addr: Address, len: u64) -> bool {
        let limits = self.audit_limits();
        audit_holder(dht, holder, addr, Some(len), limits)
            .await
            .is_verified()
    }

    /// [`Replication::audit`], and a holder in `claimed` (it answered `held` when last
    /// asked for a copy of `addr`) that fails it is left out of this node's placements:
    /// it claims a copy it cannot show.
    async fn audit_claim(
        &self,
        dht: &DhtClient,
        holder: &Provider,
        addr: Address,
        len: u64,
        claimed: &[String],
    ) -> bool {
        let proved = self.audit(dht, holder, addr, len).await;
        if !proved && claimed.contains(&holder.node_id) {
            tracing::warn!(obj = %addr, holder = %holder.node_id, "repair sweep: a holder answered that it held a copy, then failed its audit: left out of this node's placements");
            let _ = dht.leave_out(holder.node_id.clone(), LeftOut::HeldUnproven);
        }
        proved
    }

    /// Asks `holders` (node ids) to take a copy of `addr` and waits for their answers,
    /// bounded; those that answer `held` are remembered for the next check's audit.
    async fn ask_for_copies(&self, dht: &DhtClient, addr: Address, holders: Vec<String>) {
        let Ok(answer) = dht.copy_to_later(*addr.as_bytes(), holders, COPIES_WAIT_MS) else {
            return;
        };
        let wait = Duration::from_millis(COPIES_WAIT_MS + 1_000);
        if let Some(Ok(made)) = finished_within(wait, answer).await {
            self.held_claims.borrow_mut().remember(addr, &made.held_by);
        }
    }

    /// How long a copy a peer asked for is not demoted ([`ASKED_TO_HOLD_MAX`]'s note).
    fn demote_grace(&self) -> Duration {
        (self.sweep_interval + self.last_pass.get())
            .saturating_mul(DEMOTE_GRACE_INTERVALS)
            .max(DEMOTE_GRACE_MIN)
    }

    fn audit_limits(&self) -> AuditLimits {
        AuditLimits::of(&self.read_through)
    }

    /// Stops replication: its signal first (no new pull or sweep step starts), then
    /// `fetches_stopped` (the read-through's stop, which fails the flights the pulls
    /// under way wait on), then the services and the pulls are waited for until `within`
    /// has passed. Returns what `fetches_stopped` did and what was abandoned.
    pub async fn stop<T>(
        &self,
        within: Duration,
        fetches_stopped: impl Future<Output = T>,
    ) -> (T, Vec<&'static str>) {
        self.stop.stop();
        let fetches = fetches_stopped.await;
        let deadline = Instant::now() + within;
        let services = self.services.borrow_mut().take();
        let mut abandoned = match services {
            Some(services) => services.stop(within).await,
            None => Vec::new(),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if self.requests_running.wait_none(left).await > 0 {
            abandoned.push("replication pulls and audits under way");
        }
        (fetches, abandoned)
    }
}
