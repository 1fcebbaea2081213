//! # ron-control — the slow-path control thread and the admin server
//!
//! ## What it owns
//! OS threads that are not shards, started by [`spawn`]:
//! - the **control thread**: every [`REBALANCE_PERIOD_MS`] it takes the shards' reports
//!   and splits each tenant's quota across the shards by demand ([`shares`]); on SIGHUP
//!   or when the configuration file changes it asks the engine to load the policy again
//!   and sends a good result to every shard, or logs why it kept the running one
//!   ([`reload`]); on a node in a network it withdraws from the DHT what the denylist
//!   blocks by name — at start, and what a changed list newly blocks once every shard
//!   runs it (`withdrawals`); when the shards have served nobody for a while it hands the
//!   heap's free pages back to the kernel, at most once a minute ([`heap`]); after any
//!   of these it publishes what the admin answers show ([`view`]);
//! - the **admin server** ([`admin`]) on its own port: an acceptor thread and one
//!   short-lived thread per connection, answering `/healthz` (liveness), `/readyz` (a
//!   JSON report, 200 only when every shard accepts and none is saturated), `/metrics`
//!   (Prometheus text, [`prometheus`]), `/version`, `/admin/stats` ([`reports`]), and
//!   the operator's storage requests: `GET /admin/scrub`, `POST /admin/scrub/pause`
//!   and `/resume`, `POST /admin/repair/b3:<hex>` (sent to the shards' inboxes).
//!
//! ## Invariants
//! - Nothing on a shard waits on these threads: they read the shards' relaxed atomic
//!   counters ([`ShardCounters`]: storage, front, requests) and talk to shards only
//!   through bounded mailboxes that both sides poll ([`ron_link::link`]). The one
//!   exception is the heap trim ([`heap`]): a shard that allocates during it waits for
//!   its arena's walk, so it runs only after 10 s in which the shards served nobody.
//! - It knows the shards only through `ron-link`'s types and what the engine hands it:
//!   the counters (rendered by the families `ron-link` declares with them) and which
//!   shard owns an object ([`OwnerOf`]), not the storage.
//! - No admin client can delay another, a probe, or the control thread: connections are
//!   served concurrently, at most [`admin::ADMIN_CONNECTIONS_MAX`] at once (past it,
//!   those without a whole head after [`admin::ADMIN_CROWDED_HEAD_MS`] are closed to make
//!   room, and a newcomer finding none within [`admin::ADMIN_CROWDED_WAIT_MS`] is
//!   answered 503); each must send its whole head within
//!   [`admin::ADMIN_HEAD_TIMEOUT_MS`] of the accept and within
//!   [`admin::ADMIN_HEAD_BYTES_MAX`], gets its answer within
//!   [`admin::ADMIN_WRITE_TIMEOUT_MS`], and is closed after it.
//! - The one lock between the control thread and the admin threads ([`view::Board`]) is
//!   held only to swap or clone an `Arc`: never during socket I/O or rendering. The one
//!   lock among admin threads ([`prometheus::Scrapes`]) is held only while a `/metrics`
//!   scrape reads the shards' counters.
//! - What crosses a trust boundary is checked on both sides (`assert!`, once per reload,
//!   period or scrape): what goes down the mailboxes and what comes up
//!   ([`ron_link::link`]); a tenant's shares add up to its limit ([`shares`]); a good
//!   reload raises the version by one ([`view`]); a counter never goes back between
//!   scrapes and a histogram's buckets add up ([`prometheus`]).
//! - The control thread's own work is bounded: a period's tenant reports are capped
//!   ([`ron_link::policy::REPORT_TENANTS_MAX`]), a reload runs once per change.
//! - Setting [`ControlState::stop`] ends the control thread within [`CONTROL_TICK_MS`];
//!   on its way out it stops the acceptor and joins it, and the acceptor waits (bounded
//!   by the write deadline) for the connection threads.
//!
//! ## Data flow
//! ```text
//! shards ──ShardReport (mailbox)──▶ control thread ──ToShard::{Policy, Shares}──▶ shards
//! engine ──LoadPolicy (SIGHUP, file change)──▶ control thread
//! control thread ──Published (Arc swap on the Board)──▶ admin threads
//! shards ──ShardCounters (atomics)──▶ admin threads ──HTTP──▶ clients
//! admin threads ──ToShard::{PauseScrub, CheckObject} (inbox; a check answers on its
//!                 own channel, waited for at most ADMIN_REPAIR_WAIT_MS)──▶ shards
//! ```

pub mod admin;
pub mod heap;
pub mod prometheus;
pub mod reload;
pub mod reports;
pub mod shares;
pub mod view;
mod withdrawals;

use std::io::{Error, ErrorKind};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ron_link::counters::ShardCounters;
use ron_link::dht::{DhtClient, ReplicationRoutes};
use ron_link::link::ControlLink;
use ron_link::policy::{Policy, REBALANCE_PERIOD_MS};

pub use admin::OwnerOf;
pub use reload::{LoadCertificate, LoadPolicy, ReloadError, Reloaded, Reloader};

use admin::{AdminServer, Answers};
use heap::HeapTrimmer;
use prometheus::Scrapes;
use reload::Reloads;
use view::{Board, View};
use withdrawals::Withdrawals;

/// How often the control thread wakes: how soon it notices SIGHUP and `stop`. An idle
/// node's wake-ups are these and the shards' slow timers (docs/OPERATIONS.md "Idle cost").
pub const CONTROL_TICK_MS: u64 = REBALANCE_PERIOD_MS;

/// What the control thread reads and owns.
#[derive(Debug)]
pub struct ControlState {
    /// Each shard's counters (storage, front, requests), in shard order.
    pub shards: Vec<ShardCounters>,
    pub version: &'static str,
    /// Set by the engine to stop the control thread and the admin server.
    pub stop: Arc<AtomicBool>,
    /// When set, every endpoint but the probes (`/healthz`, `/readyz`) needs
    /// `Authorization: Bearer <admin_token>`.
    pub admin_token: Option<String>,
    /// One mailbox pair per shard (same count as `shards`).
    pub link: ControlLink,
    /// The policy the shards started with.
    pub policy: Policy,
    pub reloader: Option<Reloader>,
    /// Which shard owns an object (the operator's check of one object goes there).
    pub owner: OwnerOf,
    /// The DHT thread, on a node with `--p2p`.
    pub dht: Option<DhtClient>,
    /// The shards' replication mailboxes, on a node with `--p2p`: `/admin/placement`
    /// and `/admin/replicate` have the owner shard audit each holder's copy.
    pub replication: Option<ReplicationRoutes>,
}

/// Binds the admin listener, starts the admin server and the control thread. Returns
/// the bound address and the control thread, which ends (after the admin server) once
/// `state.stop` is set.
pub fn spawn(
    addr: SocketAddr,
    state: ControlState,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let shards = state.link.shard_count();
    if state.shards.len() != shards {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "control state for {shards} shards has counters for {}",
                state.shards.len()
            ),
        ));
    }
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let withdrawals = match &state.dht {
        Some(_) => Withdrawals::at_start(&state.policy.denylist, state.policy.version),
        None => Withdrawals::default(),
    };
    let view = View::new(state.policy, shards);
    let board = Arc::new(Board::new(view.publish()));
    let heap = HeapTrimmer::new(state.shards.clone(), Instant::now());
    let answers = Answers {
        shards: state.shards,
        version: state.version,
        admin_token: state.admin_token,
        board: Arc::clone(&board),
        mailboxes: state.link.mailboxes(),
        owner: state.owner,
        dht: state.dht,
        replication: state.replication,
        scrapes: Scrapes::default(),
        waiting: Default::default(),
    };
    let control = Control {
        dht: answers.dht.clone(),
        withdrawals,
        admin: AdminServer::spawn(listener, answers)?,
        link: state.link,
        stop: state.stop,
        reloads: state.reloader.map(Reloads::new),
        view,
        board,
        heap,
    };
    // Should the thread not start, `control` is dropped and the admin server with it.
    let handle = std::thread::Builder::new()
        .name("ron-control".into())
        .spawn(move || control.run())?;
    Ok((local, handle))
}

/// The control thread.
#[derive(Debug)]
struct Control {
    link: ControlLink,
    stop: Arc<AtomicBool>,
    reloads: Option<Reloads>,
    view: View,
    board: Arc<Board>,
    admin: AdminServer,
    heap: HeapTrimmer,
    /// The DHT thread, on a node with `--p2p`: what the denylist blocks is withdrawn.
    dht: Option<DhtClient>,
    withdrawals: Withdrawals,
}

impl Control {
    fn run(mut self) {
        let mut next_rebalance = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut changed = false;
            if now >= next_rebalance {
                next_rebalance = now + Duration::from_millis(REBALANCE_PERIOD_MS);
                self.view.take_reports(&self.link);
                shares::rebalance(&self.link, self.view.reports());
                changed = true;
            }
            if let Some(reloads) = &mut self.reloads {
                let running = Arc::clone(&self.view.policy().denylist);
                changed |= reloads.poll(now, &self.link, &mut self.view);
                let policy = self.view.policy();
                if self.dht.is_some() && !Arc::ptr_eq(&running, &policy.denylist) {
                    self.withdrawals
                        .changed(&running, &policy.denylist, policy.version);
                }
            }
            if let Some(dht) = &self.dht {
                let versions = self.view.reports().iter().map(|r| r.policy_version);
                self.withdrawals.poll(dht, versions);
                let versions = self.view.reports().iter().map(|r| r.policy_version);
                self.withdrawals.poll_unblocked(&self.link, versions);
            }
            if let Some(released_bytes) = self.heap.poll(now) {
                self.view.heap_trimmed(released_bytes);
                changed = true;
            }
            if changed {
                self.board.post(self.view.publish());
            }
            // Parked, not asleep: the stopper unparks it, so a stop (and with it a
            // restart) does not wait out the tick.
            std::thread::park_timeout(Duration::from_millis(CONTROL_TICK_MS));
        }
        self.admin.shutdown();
    }
}
