//! The shard threads: one pinned glommio executor per shard, each running [`run_shard`]
//! — join the mesh, open the stores, build the shard's service and front ends
//! (`front.rs`), accept until stopped, then stop in the steps every shard takes together
//! (docs/design/lifecycle.md).

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};
use ron_codec::denylist::Denylist;
use ron_io::tls::ReloadableCert;
use ron_link::counters::ShardCounters;
use ron_link::dht::{DhtClient, ReplicationMailbox};
use ron_link::link::ShardLink;
use ron_link::policy::Policy;
use ron_shards::layout::Routing;
use ron_shards::mesh::{self, Mesh, MeshEnds};
use ron_shards::ShardIndex;
use ron_shards::{AnnounceFilter, Shard, ShardConfig};
use rustls::sign::CertifiedKey;

use crate::admission::buckets::ShardQuotas;
use crate::admission::Admission;
use crate::blocked::Blocked;
use crate::client_connections::ClientConnections;
use crate::config::Config;
use crate::drain::Drain;
use crate::fetch::{FetchConfig, Origin, ReadThrough};
use crate::limits;
use crate::replication::{DiskFloor, Replication, ReplicationConfig};
use crate::server::clock::{Alarm, ShardClock};
use crate::server::error::StartError;
use crate::server::front::{listen, ConnectionLimits, FrontEnds};

/// What every shard starts from.
pub(super) struct ShardPlan {
    pub config: Arc<Config>,
    /// Tokens, tenants, limits and the denylist, as read at start.
    pub policy: Policy,
    /// The TLS certificate and key read at start (rotations arrive from the control
    /// thread).
    pub tls: Option<Arc<CertifiedKey>>,
    pub routing: Routing,
    pub stop: Arc<AtomicBool>,
    /// The DHT thread's mailboxes, on a node with `--p2p`.
    pub dht: Option<DhtClient>,
    /// The read-through origin, resolved.
    pub origin: Option<Origin>,
    /// The steps of a stop every shard reaches before any goes on ([`run_shard`]).
    pub drained: StopStep,
    pub stopped: StopStep,
}

/// A step of the node's stop that every shard reaches before any goes past it, bounded
/// by its wait (a shard that failed never arrives).
#[derive(Debug, Clone)]
pub(super) struct StopStep {
    arrived: Arc<std::sync::atomic::AtomicUsize>,
    shards: usize,
    wait: Duration,
}

impl StopStep {
    /// The step every shard reaches once drained: a shard with nothing in flight
    /// arrives at once and waits for the others' drain (`drain_timeout`), their fetches'
    /// stop, and [`limits::STOP_STEP_WAIT`] besides. A fixed 10 s cut a raised
    /// `drain_timeout_ms` short: the idle shard stopped its group commit, and the
    /// uploads the others were still draining found their owner gone (503).
    pub fn drained(shards: u16, drain_timeout: Duration) -> StopStep {
        let fetches_stop = 2 * limits::FETCH_STOP_WAIT;
        StopStep::new(
            shards,
            drain_timeout + fetches_stop + limits::STOP_STEP_WAIT,
        )
    }

    /// The step every shard reaches once stopped.
    pub fn stopped(shards: u16) -> StopStep {
        StopStep::new(shards, limits::STOP_STEP_WAIT)
    }

    fn new(shards: u16, wait: Duration) -> StopStep {
        StopStep {
            arrived: Arc::default(),
            shards: usize::from(shards),
            wait,
        }
    }

    fn arrive(&self) {
        self.arrived.fetch_add(1, Ordering::AcqRel);
    }

    /// Arrives, and waits for every shard to have; `false` if the wait ran out.
    async fn arrive_and_wait(&self) -> bool {
        self.arrive();
        let deadline = Instant::now() + self.wait;
        while self.arrived.load(Ordering::Acquire) < self.shards {
            if Instant::now() >= deadline {
                return false;
            }
            glommio::timer::sleep(limits::DRAIN_POLL_PERIOD).await;
        }
        true
    }
}

/// One shard's places in the stop's steps. A shard that ends without reaching a step
/// (it failed at start, or panicked) arrives there as it ends: the others waited out
/// each step's wait for it before (32 s from a failed start to the node's exit).
pub(super) struct ShardSteps {
    drained: StopStep,
    stopped: StopStep,
    reached: [bool; 2],
}

impl ShardSteps {
    fn new(drained: StopStep, stopped: StopStep) -> ShardSteps {
        ShardSteps {
            drained,
            stopped,
            reached: [false; 2],
        }
    }

    /// Arrives at the drained step and waits for the others; `false` if the wait ran out.
    async fn drained(&mut self) -> bool {
        self.reached[0] = true;
        self.drained.arrive_and_wait().await
    }

    /// Arrives at the stopped step and waits for the others; `false` if the wait ran out.
    async fn stopped(&mut self) -> bool {
        self.reached[1] = true;
        self.stopped.arrive_and_wait().await
    }
}

impl Drop for ShardSteps {
    fn drop(&mut self) {
        if !self.reached[0] {
            self.drained.arrive();
        }
        if !self.reached[1] {
            self.stopped.arrive();
        }
    }
}

/// The shard threads, and whether any has failed.
pub(super) struct ShardHandles {
    handles: Vec<JoinHandle<Result<(), StartError>>>,
    /// Per shard: set while it opens its stores, on its own thread (`Shard::start`).
    opening: Vec<Arc<AtomicBool>>,
    failed: Arc<AtomicBool>,
}

impl ShardHandles {
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Wakes shard `shard`'s thread if it still runs (see `super::kick`), unless it is
    /// opening its stores: `Shard::start` never awaits, so its executor runs then
    /// (nothing to wake), and the signal interrupts what waits there — LMDB's lock wait
    /// at an index's open failed the shard with `EINTR`.
    pub fn kick(&self, shard: usize) {
        if self.opening[shard].load(Ordering::Relaxed) {
            return;
        }
        if let Some(handle) = self.handles.get(shard).filter(|h| !h.is_finished()) {
            super::kick::kick(handle);
        }
    }

    /// Waits for every shard; the first failure (if any) is returned.
    pub fn join(self, stop: &AtomicBool) -> Option<StartError> {
        let mut failure = None;
        for (i, handle) in self.handles.into_iter().enumerate() {
            let shard = i as u16;
            let error = match handle.join() {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(payload) => StartError::ShardPanicked {
                    shard,
                    reason: panic_text(payload.as_ref()),
                },
            };
            stop.store(true, Ordering::Relaxed);
            failure.get_or_insert(error);
        }
        failure
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked".into())
}

/// Marks the node failed and stops every shard when a shard thread ends early, by an
/// error or a panic, so the process exits promptly instead of serving with a hole.
struct StopOnFailure {
    failed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl StopOnFailure {
    fn trip(&self) {
        self.failed.store(true, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for StopOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.trip();
        }
    }
}

/// Everything one shard needs to start, moved onto its executor thread.
struct ShardStart {
    index: ShardIndex,
    plan_config: Arc<Config>,
    tls: Option<Arc<CertifiedKey>>,
    routing: Routing,
    /// This shard's ends of the mesh (none on a one-shard node).
    mesh: Option<MeshEnds>,
    counters: ShardCounters,
    stop: Arc<AtomicBool>,
    quotas: ShardQuotas,
    link: ShardLink,
    dht: Option<DhtClient>,
    /// The copies and audits this shard's replication is asked for (a node in a network).
    replication_mailbox: Option<ReplicationMailbox>,
    origin: Option<Origin>,
    /// The denylist read at start (later ones arrive with each reloaded policy).
    denylist: Arc<Denylist>,
    steps: ShardSteps,
    /// Set while this shard opens its stores: no kick then ([`ShardHandles::kick`]).
    opening: Arc<AtomicBool>,
    /// The node's count of connections per client (`None`: no per-client limit).
    client_connections: Option<Arc<ClientConnections>>,
}

pub(super) fn start_shards(
    plan: &ShardPlan,
    counters: &[ShardCounters],
    links: Vec<ShardLink>,
    replication_mailboxes: Vec<Option<ReplicationMailbox>>,
) -> Result<ShardHandles, StartError> {
    let shards = plan.routing.shard_count();
    let mut mesh_ends = if shards == 1 {
        Vec::new()
    } else {
        mesh::mesh_ends(shards)
    }
    .into_iter();
    let cpus = crate::preflight::allowed_cpus();
    let failed = Arc::new(AtomicBool::new(false));
    // One hasher for the node: a tenant has the same quota key on every shard.
    let hasher = std::collections::hash_map::RandomState::new();
    let policy = &plan.policy;
    let mut handles = Vec::with_capacity(usize::from(shards));
    let opening: Vec<Arc<AtomicBool>> = (0..shards).map(|_| Arc::default()).collect();
    let client_connections = ClientConnections::new(plan.config.connections_per_client_max);
    let mailboxes = replication_mailboxes;
    for ((i, link), replication_mailbox) in (0..shards).zip(links).zip(mailboxes) {
        let start = ShardStart {
            index: ShardIndex(i),
            plan_config: Arc::clone(&plan.config),
            tls: plan.tls.clone(),
            routing: plan.routing.clone(),
            mesh: mesh_ends.next(),
            counters: counters[usize::from(i)].clone(),
            stop: Arc::clone(&plan.stop),
            quotas: ShardQuotas::new(
                policy.clone(),
                usize::from(shards),
                hasher.clone(),
                plan.config.quota_tenants_max,
            ),
            link,
            dht: plan.dht.clone(),
            replication_mailbox,
            origin: plan.origin.clone(),
            denylist: Arc::clone(&policy.denylist),
            steps: ShardSteps::new(plan.drained.clone(), plan.stopped.clone()),
            opening: Arc::clone(&opening[usize::from(i)]),
            client_connections: client_connections.clone(),
        };
        let executor = LocalExecutorBuilder::new(placement(&cpus, i))
            .name(&format!("ron-shard-{i}"))
            .io_memory(plan.config.io_memory_bytes as usize)
            .blocking_thread_pool_placement(PoolPlacement::Unbound(2));
        let guard = StopOnFailure {
            failed: Arc::clone(&failed),
            stop: Arc::clone(&plan.stop),
        };
        let handle = std::thread::Builder::new()
            .name(format!("ron-shard-{i}"))
            .spawn(move || run_executor(executor, start, guard))
            .map_err(|e| StartError::Executor {
                shard: i,
                reason: e.to_string(),
            })?;
        handles.push(handle);
    }
    Ok(ShardHandles {
        handles,
        opening,
        failed,
    })
}

/// Shard `i` is pinned to the i-th CPU of the affinity mask (wrapping), so a node
/// started under `taskset` or `CPUAffinity=` pins inside its mask.
fn placement(cpus: &[usize], shard: u16) -> Placement {
    match cpus.len() {
        0 => Placement::Unbound,
        n => Placement::Fixed(cpus[usize::from(shard) % n]),
    }
}

/// Builds the shard's executor on this thread and runs the shard on it. An executor that
/// cannot be built (locked memory, io_uring) fails the node instead of a thread panic.
fn run_executor(
    executor: LocalExecutorBuilder,
    start: ShardStart,
    guard: StopOnFailure,
) -> Result<(), StartError> {
    let shard = start.index.0;
    let executor = executor.make().map_err(|e| {
        guard.trip();
        let error = StartError::Executor {
            shard,
            reason: e.to_string(),
        };
        tracing::error!(shard, reason = %error, "shard failed");
        error
    })?;
    let result = executor
        .run(run_shard(start))
        .map_err(|source| StartError::Shard {
            shard,
            source: Box::new(source),
        });
    if let Err(e) = &result {
        tracing::error!(shard, reason = %e, "shard failed");
        guard.trip();
    }
    result
}

async fn run_shard(mut start: ShardStart) -> Result<(), StartError> {
    let config = Arc::clone(&start.plan_config);
    let blocked = Rc::new(Blocked::new(Arc::clone(&start.denylist)));
    let shard = open_shard(&mut start, &blocked).await?;
    let listeners = listen(&config)?;
    let admission = Rc::new(Admission::new(
        start.index,
        start.counters.clone(),
        config.inflight_max,
        start.quotas,
    ));
    let draining = Rc::new(Drain::default());
    let read_through = ReadThrough::new(
        Rc::clone(&shard),
        Arc::clone(&start.counters.front),
        start.dht.clone(),
        start.origin.take(),
        FetchConfig {
            timeout: Duration::from_millis(config.fetch_timeout_ms),
            rate_min_bytes_per_s: config.fetch_rate_min_bytes_per_s,
            hedge_after: Duration::from_millis(config.fetch_hedge_ms),
            miss_remembered: Duration::from_millis(config.fetch_miss_ms),
            object_bytes_max: config.object_bytes_max,
            flights_max: limits::FETCHES_PER_SHARD_MAX,
            zone: config.zone.clone(),
            copy_bytes_per_s: config
                .replication_bytes_per_s
                .div_ceil(u64::from(start.routing.shard_count())),
        },
        Rc::clone(&blocked),
    );
    if let Some(read_through) = &read_through {
        shard.serve_flights(follower_answers(read_through));
    }
    let replication = read_through.as_ref().and_then(|read_through| {
        let config = ReplicationConfig {
            replicas: config.replicas_target(),
            sweep_every: (config.replication_interval_ms > 0)
                .then(|| Duration::from_millis(config.replication_interval_ms)),
            disk_floor: DiskFloor::new(&config.data_dirs, config.copies_disk_free_percent_min),
            held_check_bytes_per_s: config
                .replication_bytes_per_s
                .div_ceil(u64::from(start.routing.shard_count())),
        };
        let counters = Arc::clone(&start.counters.front);
        let mailbox = start.replication_mailbox.take();
        Replication::start(read_through, Rc::clone(&blocked), counters, mailbox, config)
    });
    // This shard's own TLS configuration and certificate: a rotation is installed by
    // the shard itself (its clock), so no other core touches it.
    let tls = start
        .tls
        .clone()
        .map(|identity| ron_io::tls::server_config_for(Arc::new(ReloadableCert::new(identity))))
        .transpose()?;
    let fronts = FrontEnds::new(
        &config,
        Rc::clone(&shard),
        &admission,
        &draining,
        tls.is_some(),
        read_through.clone(),
        Rc::clone(&blocked),
    )?;
    let first_connection = Rc::new(Alarm::default());
    let acceptors = fronts.accept(
        listeners,
        &first_connection,
        tls.as_ref().map(|(config, _)| Arc::clone(config)),
        &start.counters.front,
        ConnectionLimits {
            connections_max: config.connections_max,
            per_client: start.client_connections.clone(),
        },
    );
    start.counters.front.ready.store(true, Ordering::Relaxed);
    let checks_running = Rc::default();
    let clock = ShardClock {
        admission: &admission,
        shard: &shard,
        checks_running: &checks_running,
        blocked: &blocked,
        dht: start.dht.as_ref(),
        certificate: tls.as_ref().map(|(_, resolver)| &**resolver),
        metrics: &start.counters.front,
        link: &start.link,
        stop: &start.stop,
        first_connection: &first_connection,
    };
    clock.run().await;
    if start.index.0 == 0 {
        crate::server::notify::stopping();
    }
    start.counters.front.ready.store(false, Ordering::Relaxed);
    draining.begin();
    drop(acceptors); // cancels the accept loops and closes the listeners
    drain(&admission, Duration::from_millis(config.drain_timeout_ms)).await;
    let fetching = Fetching {
        read_through: read_through.as_deref(),
        replication: replication.as_deref(),
    };
    stop_behind_requests(&mut start.steps, &shard, fetching).await;
    Ok(())
}

/// What fetches objects from other nodes on a shard: the read-through and, in a
/// network, replication (which fetches through it).
struct Fetching<'a> {
    read_through: Option<&'a ReadThrough>,
    replication: Option<&'a Replication>,
}

/// The stop after the drain, in steps every shard takes together: replication stops
/// starting work, the read-through's fetches are abandoned, and replication's services
/// and pulls are awaited; once every shard has drained, the shard's background services
/// and group commit stop (a commit forwarded by a shard still draining finds its owner
/// taking it); once every shard has stopped, the executor may end (nothing asks over
/// the mesh any more).
async fn stop_behind_requests(steps: &mut ShardSteps, shard: &Shard, fetching: Fetching<'_>) {
    let index = shard.index().0;
    let fetches_stopped = async {
        match fetching.read_through {
            Some(fetches) => fetches.stop(limits::FETCH_STOP_WAIT).await,
            None => 0,
        }
    };
    let (left, abandoned) = match fetching.replication {
        Some(replication) => {
            replication
                .stop(limits::FETCH_STOP_WAIT, fetches_stopped)
                .await
        }
        None => (fetches_stopped.await, Vec::new()),
    };
    if left > 0 {
        tracing::warn!(
            shard = index,
            fetches = left,
            "read-through fetches still running at the stop"
        );
    }
    if !abandoned.is_empty() {
        tracing::warn!(
            shard = index,
            ?abandoned,
            "replication stopped with work abandoned"
        );
    }
    if !steps.drained().await {
        tracing::warn!(shard = index, "stopping before every shard drained");
    }
    let abandoned = shard.stop(limits::SHARD_STOP_WAIT).await;
    if !abandoned.is_empty() {
        tracing::warn!(shard = index, ?abandoned, "stopped with work abandoned");
    }
    if !steps.stopped().await {
        tracing::warn!(shard = index, "ending before every shard stopped");
    }
}

/// What this shard's read-through answers other shards following a fetch of an object
/// it owns (`fetch/follow.rs`).
fn follower_answers(read_through: &Rc<ReadThrough>) -> ron_shards::FlightHandler {
    let weak = Rc::downgrade(read_through);
    Rc::new(move |addr, from| {
        let read_through = weak.clone();
        Box::pin(async move {
            match read_through.upgrade() {
                Some(read_through) => read_through.serve_flight(addr, from).await,
                None => ron_shards::FlightPart::Failed {
                    code: ron_codec::ErrorCode::NotReady,
                    message: "the shard is stopping".into(),
                },
            }
        })
    })
}

/// Joins the mesh and opens the shard's stores.
async fn open_shard(
    start: &mut ShardStart,
    blocked: &Rc<Blocked>,
) -> Result<Rc<Shard>, StartError> {
    let metrics = Arc::clone(&start.counters.storage);
    let mesh = match start.mesh.take() {
        Some(ends) => Some(Mesh::join(ends, Arc::clone(&metrics)).await),
        None => None,
    };
    let config = &start.plan_config;
    let shards = u64::from(start.routing.shard_count());
    let per_shard = |total: u64| (total / shards) as usize;
    let shard_config = ShardConfig {
        data_dirs: config.data_dirs(),
        cache_bytes_max: per_shard(config.cache_bytes),
        meta_bytes_max: per_shard(config.meta_cache_bytes),
        open_files_max: config.open_files_max,
        index_bytes_max: config.index_bytes_max as usize,
        commit_batch_max: limits::COMMIT_BATCH_RECORDS_MAX,
        ec: config.ec_params(),
        scrub_bytes_per_s: config.scrub_bytes_per_s.div_ceil(shards),
        dht: start.dht.clone(),
        evictable_bytes_max: Some(evictable_share(config.fetched_bytes_max, start)),
        announce_filter: {
            let blocked = Rc::clone(blocked);
            AnnounceFilter::new(move |addr| !blocked.blocks(addr))
        },
    };
    let routing = start.routing.clone();
    start.opening.store(true, Ordering::Relaxed);
    let shard = Shard::start(start.index, routing, shard_config, mesh, metrics).await;
    start.opening.store(false, Ordering::Relaxed);
    let shard = shard?;
    log_replays(&shard);
    Ok(shard)
}

/// This shard's share of the node's budget of fetched copies: the share of the stores
/// it owns (a shard owning none holds none).
fn evictable_share(fetched_bytes_max: u64, start: &ShardStart) -> u64 {
    let routing = &start.routing;
    let owned = routing.stores_of(start.index).len() as u128;
    let stores = u128::from(routing.store_count().max(1));
    (u128::from(fetched_bytes_max) * owned / stores) as u64
}

/// Says what the start-up replay of the segments did: acknowledged small objects whose
/// index records a crash had kept back, torn tails (never acknowledged) left alone, and
/// damaged needles passed over; and what the compaction after it gave back.
fn log_replays(shard: &Shard) {
    for (store, replay) in shard.replays() {
        let compaction = &replay.compaction;
        if compaction.segments_removed > 0 {
            tracing::info!(
                shard = shard.index().0,
                store = store.0,
                segments = compaction.segments_removed,
                needles_moved = compaction.needles_moved,
                bytes_moved = compaction.bytes_moved,
                bytes_freed = compaction.bytes_freed,
                "compacted segments at least half dead"
            );
        }
        if compaction.lane_orphans_removed > 0 {
            tracing::info!(
                shard = shard.index().0,
                store = store.0,
                files = compaction.lane_orphans_removed,
                "removed segment files of other lanes whose segment was removed before a crash"
            );
        }
        for segment in &compaction.kept_for_rot {
            tracing::error!(
                shard = shard.index().0,
                store = store.0,
                segment = %segment,
                "segment not compacted: a live needle in it verifies in no lane, or a record pointing into it does not decode"
            );
        }
        for segment in &compaction.kept_for_room {
            tracing::warn!(
                shard = shard.index().0,
                store = store.0,
                segment = %segment,
                "segment not compacted: no room on its disk to move its live needles; it waits for a start with more free space"
            );
        }
        if replay.indexed > 0 {
            tracing::info!(
                shard = shard.index().0,
                store = store.0,
                objects = replay.indexed,
                "indexed packed objects found past the segment checkpoint"
            );
        }
        for (segment, at) in &replay.torn {
            tracing::warn!(
                shard = shard.index().0,
                store = store.0,
                segment = %segment,
                offset = at.0,
                "segment ends in a torn or damaged needle; nothing from there on is indexed"
            );
        }
        for skipped in &replay.skipped {
            let claimed = skipped.claimed.map(|addr| addr.to_string());
            tracing::error!(
                shard = shard.index().0,
                store = store.0,
                segment = %skipped.segment,
                offset = skipped.at.0,
                bytes = skipped.bytes,
                claimed = claimed.as_deref().unwrap_or("unreadable"),
                "damaged needle in every lane, whole ones after it: passed over; its object is lost here unless another node holds it (or, in the segment's last batch, it was a torn write never acknowledged)"
            );
        }
    }
}

/// Waits for admitted requests (worked on or parked) to finish, at most `timeout`.
async fn drain(admission: &Admission, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while admission.admitted() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(limits::DRAIN_POLL_PERIOD).await;
    }
}
