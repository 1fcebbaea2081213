//! `ron serve`: start-up, the shard executors, and graceful shutdown.
//!
//! Start-up order: validate the config (write rule), lock and open the data dir
//! (partition table; cost independent of the number of objects), probe the ports, load
//! TLS, empty the temp dir, install the signal handlers, start the control thread, then
//! one pinned executor per shard ([`shard`]). Each shard joins the mesh, opens its
//! stores, binds its SO_REUSEPORT listeners and marks itself ready. Every step that can
//! fail names what failed ([`StartError`]).
//! Before any of it, the [`crate::preflight`] checks: a host where a shard could not
//! start (io_uring blocked, locked memory too low, …) gets one line per problem and
//! exits 1. Under systemd (`Type=notify`), READY=1 is sent once every shard is ready
//! and STOPPING=1 when a stop begins ([`notify`]).
//! SIGINT/SIGTERM: every shard stops accepting, lets in-flight requests finish (bounded
//! by `drain_timeout_ms`), abandons its fetches, stops its background services and group
//! commit once every shard has drained, and exits; then the control thread and the DHT
//! thread stop; the process exits 0 (docs/design/lifecycle.md). SIGHUP (or a change of the
//! configuration file) reloads tokens, tenants and quotas through the control thread.
//!
//! Files: this one (the order of start and stop), `shard.rs` (a shard's thread),
//! `front.rs` (its listeners, front ends and accept loops), `control.rs` (the control
//! thread's handle), `clock.rs` (a shard's periodic work), `operator.rs` (the operator's
//! requests a shard answers), `notify.rs` (systemd), `signals.rs`, `error.rs`.

mod clock;
mod control;
mod error;
mod front;
mod kick;
mod notify;
mod operator;
mod shard;
mod signals;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ron_link::counters::ShardCounters;
use ron_shards::layout::{self, Routing};

use crate::cli::Resolved;
use crate::config::{keys, Config};
use crate::limits::READY_WAIT;
pub use crate::server::error::StartError;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use crate::server::front::FrontEnds;
use crate::server::shard::{ShardHandles, ShardPlan, StopStep};
use crate::server::signals::install_signals;

pub fn serve(resolved: Resolved) -> Result<(), StartError> {
    let mut config = resolved.config.clone();
    crate::logging::init(config.log_format, config.log_level);
    // First of all: a SIGHUP (a reload, logrotate) or SIGTERM during the start — the
    // port retries, the origin's resolve, the data dirs' creation — took the default
    // action and killed the node there. Now they are flags the start and the shards read.
    let signals = install_signals()?;
    config.validate()?;
    let policy = config.policy()?;
    preflight(&config)?;
    config.connections_max = crate::preflight::connections_within_open_files(&config);
    let shards = config.shard_count();
    // The locks come first: creating the partition table, cleaning tmp/ and opening the
    // stores are for the one node that owns the data dirs.
    let _locks = config
        .data_dirs
        .iter()
        .map(|dir| lock_data_dir(dir))
        .collect::<Result<Vec<_>, _>>()?;
    let dirs = config.data_dirs();
    let opened = layout::open_data_dirs(&dirs, shards, config.ec_params().parity)?;
    warn_replaced(&dirs, &opened.replaced);
    let table = opened.table;
    for (_, addr) in config.data_listeners() {
        probe_port(addr)?;
    }
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(ron_io::tls::certified_key(cert, key)?),
        _ => None,
    };
    warn_if_certificate_out_of_date(tls.as_deref(), config.tls_cert.as_deref());
    for (_, dir) in dirs.iter() {
        clean_tmp(dir)?;
    }
    let origin = config
        .origin
        .as_deref()
        .map(|url| crate::fetch::Origin::resolve(url, config.origin_ca.as_deref()))
        .transpose()
        .map_err(StartError::Origin)?;
    let routing = Routing::new(table, shards);
    warn_if_shards_idle(&routing);
    let counters: Vec<ShardCounters> = (0..shards).map(|_| ShardCounters::default()).collect();
    let (replication_routes, mut replication_mailboxes) = match config.p2p {
        Some(_) => {
            let (routes, mailboxes) = ron_link::dht::ReplicationRoutes::new(
                usize::from(shards),
                owner_of_address(routing.clone()),
            );
            (Some(routes), mailboxes.into_iter().map(Some).collect())
        }
        None => (None, Vec::new()),
    };
    replication_mailboxes.resize_with(usize::from(shards), || None);
    let dht = start_dht(&config, replication_routes.clone())?;
    let dht_client = dht.as_ref().map(|d| d.client.clone());
    let (control_link, shard_links) = ron_link::link::links(usize::from(shards));
    let control = crate::server::control::start_control(
        &resolved,
        &counters,
        control_link,
        &signals,
        &routing,
        dht_client.clone().zip(replication_routes),
        crate::server::control::Running {
            policy: policy.clone(),
            certificate: tls.clone(),
        },
    )?;
    let drain_timeout = std::time::Duration::from_millis(config.drain_timeout_ms);
    let plan = ShardPlan {
        config: Arc::new(config),
        policy,
        tls,
        routing,
        stop: Arc::clone(&signals.stop),
        dht: dht_client,
        origin,
        drained: StopStep::drained(shards, drain_timeout),
        stopped: StopStep::stopped(shards),
    };
    let handles = shard::start_shards(&plan, &counters, shard_links, replication_mailboxes)?;
    wait_until_ready(&counters, &handles, &plan.stop);
    if counters
        .iter()
        .all(|c| c.front.ready.load(Ordering::Relaxed))
    {
        // Every shard opened its stores, their scrub passes restarted if a replacement
        // dir was taken (a start cut short before this restarts them again).
        if let Err(e) = layout::scrub_restart_done(&dirs) {
            tracing::warn!("the mark that restarts the scrub passes could not be removed: {e}");
        }
        print_banner(&plan.config, shards, control.admin_addr, dht.as_ref());
        notify::ready(shards);
    }
    let failure = handles.join(&plan.stop);
    control.stop();
    if let Some(dht) = dht {
        dht.stop();
    }
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// Which shard owns an address, for the copies and audits its replication is asked for
/// (`ReplicationRoutes`).
fn owner_of_address(routing: Routing) -> ron_link::dht::OwnerOf {
    Arc::new(move |addr| usize::from(routing.owner(&ron_codec::Address::from_bytes(*addr)).0))
}

/// Starts the DHT thread on a node with `--p2p`: the node key and the provider store
/// live in data dir 0. Copies the placement asks this node to hold go to the owner
/// shard through `pulls`.
fn start_dht(
    config: &Config,
    pulls: Option<ron_link::dht::ReplicationRoutes>,
) -> Result<Option<ron_dht::node::DhtThread>, StartError> {
    let Some(listen) = config.p2p else {
        return Ok(None);
    };
    let peers = config
        .peers
        .iter()
        .map(|p| ron_dht::node::parse_peer(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(StartError::Dht)?;
    let network_key = config
        .p2p_network_key_file
        .as_deref()
        .map(ron_dht::network_key::NetworkKey::read)
        .transpose()
        .map_err(StartError::Dht)?;
    let dht = ron_dht::node::spawn(ron_dht::node::DhtConfig {
        data_dir: config.data_dirs[0].clone(),
        listen,
        peers,
        oap: std::net::SocketAddr::new(
            config.oap.ip(),
            config.oap_advertised_port.unwrap_or(config.oap.port()),
        ),
        zone: config.zone.clone().unwrap_or_default(),
        replicas: config.replicas_target(),
        peer_dead: std::time::Duration::from_millis(config.peer_dead_ms),
        pulls,
        limits: ron_dht::store::StoreLimits::default(),
        network_key,
    })?;
    match network_key {
        Some(key) => tracing::info!(
            node_id = %dht.client.node_id,
            p2p = %dht.listen,
            network_key_fingerprint = %key.fingerprint(),
            "joined the DHT: a private network, only peers holding its key connect"
        ),
        None => tracing::info!(node_id = %dht.client.node_id, p2p = %dht.listen, "joined the DHT"),
    }
    Ok(Some(dht))
}

/// Refuses to start, with one line per problem, when a shard could not start on this
/// host; logs the warnings. Lifts the soft open-files limit first.
fn preflight(config: &Config) -> Result<(), StartError> {
    crate::preflight::raise_open_files(config);
    let report = crate::preflight::run(config);
    for warning in report.warnings() {
        tracing::warn!("preflight: {warning}");
    }
    let problems: Vec<String> = report.failures().map(ToString::to_string).collect();
    match problems.is_empty() {
        true => Ok(()),
        false => Err(StartError::Preflight(problems)),
    }
}

/// Holds an exclusive lock on the data dir for the life of the process: a second node on
/// the same data dir refuses to start.
fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, StartError> {
    let refuse = |reason: String| StartError::DataDirLock {
        path: data_dir.to_path_buf(),
        reason,
    };
    ron_shards::layout::create_dir_durably(data_dir)
        .map_err(|e| refuse(format!("cannot create it: {e}")))?;
    let path = data_dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| refuse(format!("cannot open {}: {e}", path.display())))?;
    file.try_lock()
        .map_err(|_| refuse("in use by another ron process".to_string()))?;
    Ok(file)
}

/// Shards bind with SO_REUSEPORT, which would let a second process share the port and
/// silently split its traffic. A plain bind first fails if anyone already listens there.
/// A port in use is tried again, `PORT_PROBE_ATTEMPTS` times in all and
/// `PORT_PROBE_RETRY` apart, as nginx does: a node killed a moment ago may still hold
/// its listener after its exit was reported (seen in engine/tests/faults, a restart
/// right after kill -9), and a restart must not fail for that.
fn probe_port(addr: SocketAddr) -> Result<(), StartError> {
    let mut attempt = 1;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => return Ok(()),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse && attempt < PORT_PROBE_ATTEMPTS =>
            {
                tracing::warn!(%addr, attempt, "port in use; trying again in 500 ms");
                std::thread::sleep(PORT_PROBE_RETRY);
                attempt += 1;
            }
            Err(source) => return Err(StartError::Listen { addr, source }),
        }
    }
}

/// Binds tried before a port in use is an error (nginx: 5, 500 ms apart).
const PORT_PROBE_ATTEMPTS: u32 = 5;
const PORT_PROBE_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

fn clean_tmp(data_dir: &Path) -> Result<(), StartError> {
    let removed = layout::clean_tmp(data_dir)?;
    if removed > 0 {
        tracing::info!(
            removed,
            dir = %layout::tmp_dir(data_dir).display(),
            "removed unfinished uploads"
        );
    }
    Ok(())
}

/// Replacement dirs (empty where a marked dir was expected; `open_data_dirs` took at
/// most `m` of them) are rebuilt by the scrubber while the node serves.
fn warn_replaced(dirs: &layout::DataDirs, replaced: &[ron_shards::DirIndex]) {
    for d in replaced {
        tracing::warn!(
            dir = %dirs.dir(*d).display(),
            position = d.0,
            "data dir is empty: taken as a replacement disk; every store's scrub pass starts \
             again from its first object and rebuilds its blocks while the node serves (its \
             end raises ron_scrub_passes_total; watch ron_ec_repair_bytes_total)"
        );
    }
}

fn warn_if_shards_idle(routing: &Routing) {
    let (shards, stores) = (routing.shard_count(), routing.store_count());
    if shards > stores {
        tracing::warn!(
            shards,
            stores,
            "more shards than stores; shards from {stores} on own no store and forward every object request",
        );
    }
}

/// Waits until every shard is ready (or one failed, or the stop), waking each shard
/// still starting every [`kick::KICK_PERIOD`]: glommio 0.9 can go to sleep before
/// running a shard's first task (see `kick`).
/// Waits until every shard is ready, one has failed, or a stop came, kicking those still
/// starting. However long that takes: a start that merges index replicas, replays
/// segments or compacts them can take minutes, and a node that stopped waiting at 60 s
/// never told systemd it was ready (`systemctl start` failed at `TimeoutStartSec`, and
/// `Restart=on-failure` began the same long start again). [`StartWait`] says when to
/// kick, to ask systemd for more time, and to log.
fn wait_until_ready(counters: &[ShardCounters], handles: &ShardHandles, stop: &AtomicBool) {
    let mut wait = StartWait::new(Instant::now());
    kick::install_handler();
    let starting = |shard: &usize| !counters[*shard].front.ready.load(Ordering::Relaxed);
    while !stop.load(Ordering::Relaxed) {
        let still = (0..counters.len()).filter(starting).count();
        if still == 0 || handles.failed() {
            return;
        }
        let due = wait.due(Instant::now());
        if due.kick {
            (0..counters.len())
                .filter(starting)
                .for_each(|s| handles.kick(s));
        }
        if due.extend {
            notify::extend_start(READY_WAIT, still, counters.len());
        }
        if due.warn {
            tracing::warn!(shards_starting = still, "shards still starting after {} s (opening stores: merging index replicas, replaying or compacting segments); waiting", READY_WAIT.as_secs());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The schedule of the wait for the shards: a kick every [`kick::KICK_PERIOD`], a
/// request to extend systemd's start timeout every half [`READY_WAIT`], a warning once
/// past [`READY_WAIT`]; never an end.
struct StartWait {
    started: Instant,
    next_kick: Instant,
    next_extend: Instant,
    warned: bool,
}

/// What is due at one look.
#[derive(Debug, Default, PartialEq)]
struct StartDue {
    kick: bool,
    extend: bool,
    warn: bool,
}

impl StartWait {
    fn new(started: Instant) -> StartWait {
        StartWait {
            started,
            next_kick: started + kick::KICK_PERIOD,
            next_extend: started + READY_WAIT / 2,
            warned: false,
        }
    }

    fn due(&mut self, now: Instant) -> StartDue {
        let mut due = StartDue::default();
        if now >= self.next_kick {
            self.next_kick += kick::KICK_PERIOD;
            due.kick = true;
        }
        if now >= self.next_extend {
            self.next_extend = now + READY_WAIT / 2;
            due.extend = true;
        }
        if !self.warned && now >= self.started + READY_WAIT {
            self.warned = true;
            due.warn = true;
        }
        due
    }
}

fn print_banner(
    config: &Config,
    shards: u16,
    admin: SocketAddr,
    dht: Option<&ron_dht::node::DhtThread>,
) {
    let writes = match config.has_tokens() {
        false => "writes open: no write token",
        true => "writes need a bearer token",
    };
    let tls = config
        .tls
        .map(|addr| format!("\n  tls    {addr}   (ALPN oap/1 and http/1.1)"))
        .unwrap_or_default();
    let network = match config.p2p_network_key_file {
        Some(_) => "; a private network: only peers holding its key",
        None => "",
    };
    let p2p = dht
        .map(|d| {
            format!(
                "\n  p2p    {}   (node {}{network})",
                d.listen, d.client.node_id
            )
        })
        .unwrap_or_default();
    let cache = format!(
        "\n  cache  {} of verified groups ({} per shard; `ron config print` says how it was sized)",
        keys::size_text(config.cache_bytes),
        keys::size_text(config.cache_bytes / u64::from(shards.max(1))),
    );
    let fetched = match config.p2p.is_some() || config.origin.is_some() {
        true => format!(
            "\n  fetch  read-through copies kept up to {} (oldest evicted past it)",
            keys::size_text(config.fetched_bytes_max)
        ),
        false => String::new(),
    };
    println!(
        "ron {} serving {} with {shards} shard(s)\n  http   http://{}   ({writes})\n  oap    {}{tls}{p2p}{cache}{fetched}\n  admin  http://{admin}   (/healthz /readyz /metrics /version)\ntry:\n  ron put FILE\n  ron get b3:<hex> -o FILE\n  curl -T FILE http://{}/o",
        env!("CARGO_PKG_VERSION"),
        config
            .data_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        config.http,
        config.oap,
        config.http,
    );
    for warning in trust_warnings(config) {
        println!("warning: {warning}");
    }
}

/// What the banner says about rights a newcomer may not expect (docs/design/trust.md).
fn trust_warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    if !config.has_tokens() {
        warnings.push(
            "writes need no token: anyone who reaches a data port may store objects. A proxy \
             in front on this host (nginx, HAProxy, Caddy, an SSH tunnel) makes that everyone \
             it serves; set --token before putting one in front."
                .to_string(),
        );
    }
    if config.admin_token.is_none() {
        warnings.push(format!(
            "no admin token: operator actions only on the admin port {} (`ron rm`); the data \
             ports remove nothing. Never put a proxy in front of the admin port.",
            config.admin
        ));
    }
    warnings
}

/// Started with a certificate no client accepts (expired, or not valid yet): the node
/// starts (its other listeners serve), and says so; a rotation is taken without a
/// restart.
fn warn_if_certificate_out_of_date(
    identity: Option<&rustls::sign::CertifiedKey>,
    path: Option<&std::path::Path>,
) {
    let (Some(identity), Some(path)) = (identity, path) else {
        return;
    };
    if let Some(reason) = ron_io::tls::validity_refusal(identity, std::time::SystemTime::now()) {
        tracing::error!(
            cert = %path.display(),
            %reason,
            "every TLS client will refuse this certificate; install one in date (taken without a restart)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A start of 130 s: a kick a second, systemd asked for more time at 30, 60, 90 and
    /// 120 s, one warning at 60 s, and the wait goes on (it ended at 60 s before, and
    /// READY=1 was never sent).
    #[test]
    fn a_long_start_is_waited_for_with_systemd_told_and_one_warning() {
        let started = Instant::now();
        let mut wait = StartWait::new(started);
        let (mut kicks, mut extends, mut warns) = (Vec::new(), Vec::new(), Vec::new());
        for ms in (0..130_000u64).step_by(5) {
            let due = wait.due(started + std::time::Duration::from_millis(ms));
            let at_s = ms / 1000;
            due.kick.then(|| kicks.push(at_s));
            due.extend.then(|| extends.push(at_s));
            due.warn.then(|| warns.push(at_s));
        }
        assert_eq!(kicks.len(), 129);
        assert_eq!(extends, vec![30, 60, 90, 120]);
        assert_eq!(warns, vec![60]);
    }
}
