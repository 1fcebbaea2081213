//! The control thread as `ron serve` holds it: started with the shards' counters and
//! mailboxes, the policy and its reload, and stopped (joined) after the shards.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use ron_link::counters::ShardCounters;
use ron_link::dht::{DhtClient, ReplicationRoutes};
use ron_link::link::ControlLink;
use ron_link::policy::Policy;
use ron_shards::layout::Routing;

use crate::cli::Resolved;
use crate::server::error::StartError;
use crate::server::signals::Signals;

/// The running control thread.
pub(super) struct Control {
    pub admin_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Control {
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}

/// What the shards start with, and reloads replace.
pub(super) struct Running {
    pub policy: Policy,
    /// The TLS pair (none without TLS).
    pub certificate: Option<Arc<rustls::sign::CertifiedKey>>,
}

/// Starts the control thread and the admin listener; `network` is the DHT thread and the
/// shards' replication mailboxes, on a node with `--p2p`.
pub(super) fn start_control(
    resolved: &Resolved,
    counters: &[ShardCounters],
    link: ControlLink,
    signals: &Signals,
    routing: &Routing,
    network: Option<(DhtClient, ReplicationRoutes)>,
    running: Running,
) -> Result<Control, StartError> {
    let Running {
        policy,
        certificate,
    } = running;
    let config = &resolved.config;
    let (dht, replication) = network.unzip();
    let stop = Arc::new(AtomicBool::new(false));
    let state = ron_control::ControlState {
        shards: counters.to_vec(),
        version: env!("CARGO_PKG_VERSION"),
        stop: Arc::clone(&stop),
        admin_token: config.admin_token.clone(),
        link,
        policy,
        reloader: Some(ron_control::Reloader {
            watch: watched_files(resolved),
            watch_dir: config.denylist_dir.clone(),
            load: reload_policy(resolved.clone()),
            load_certificate: certificate_loader(&resolved.config),
            running_certificate: certificate,
            hangup: Arc::clone(&signals.hangup),
        }),
        owner: owner_of(routing.clone()),
        dht,
        replication,
    };
    let (admin_addr, thread) =
        ron_control::spawn(config.admin, state).map_err(|source| StartError::Admin {
            addr: config.admin,
            source,
        })?;
    Ok(Control {
        admin_addr,
        stop,
        thread,
    })
}

/// Reads the TLS pair again from the files the node started with (a rotation replaces
/// their contents; new paths take a restart), or says why it was refused (a pair that
/// does not belong together, or a certificate expired or not valid yet).
fn certificate_loader(config: &crate::config::Config) -> Option<ron_control::LoadCertificate> {
    let (Some(cert), Some(key)) = (config.tls_cert.clone(), config.tls_key.clone()) else {
        return None;
    };
    Some(Box::new(move || {
        ron_io::tls::certified_key_in_date(&cert, &key).map_err(|e| e.to_string())
    }))
}

/// Which shard owns an object, for the operator's check of one object: the control
/// thread gets the shards' routing as a function, not the storage's types.
fn owner_of(routing: Routing) -> ron_control::OwnerOf {
    ron_control::OwnerOf::new(move |addr| usize::from(routing.owner(addr).0))
}

/// The files whose change is a reload: the configuration file, and the TLS certificate
/// and key (a rotation by an ACME client).
fn watched_files(resolved: &Resolved) -> Vec<std::path::PathBuf> {
    let config = &resolved.config;
    let tls = [&config.tls_cert, &config.tls_key];
    let files = resolved.config_file.iter().chain(tls.into_iter().flatten());
    files.cloned().collect()
}

/// The control thread's way to read the configuration again: the same layers (file,
/// environment, flags), validated; only tokens, tenants and quotas apply live — checked
/// again with every other key as running (`Config::with_reloaded`) — and the denylist,
/// read again from the directory the node started with (a new `denylist_dir` is for a
/// restart: that is the directory watched).
fn reload_policy(running: Resolved) -> ron_control::LoadPolicy {
    Box::new(move || {
        let again = running.reload()?;
        let restart_keys = running.config.restart_keys_changed(&again.config);
        let live = running.config.with_reloaded(&again.config);
        live.validate()?;
        Ok(ron_control::Reloaded {
            restart_keys,
            policy: live.policy()?,
        })
    })
}
