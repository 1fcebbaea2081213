//! `ron serve`: start-up, the shard executors, and graceful shutdown.
//!
//! Start-up order: validate the config (write rule), open the data dir (partition table;
//! cost independent of the number of objects), empty the temp dir, start the control
//! thread, then one pinned executor per shard. Each shard joins the mesh, opens its
//! stores, binds its SO_REUSEPORT listener and marks itself ready.
//! SIGINT/SIGTERM: every shard stops accepting, lets in-flight requests finish (bounded
//! by `drain_timeout_ms`), and exits; the process exits 0. SIGHUP (or a change of the
//! configuration file) reloads tokens, tenants and quotas through the control thread.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};
use ron_shards::layout::{self, Routing, ShardIndex};
use ron_shards::mesh::{self, Mesh, MeshBuilderFull};
use ron_shards::{Shard, ShardConfig, ShardMetrics};

use crate::admission::{Admission, HEARTBEAT_PERIOD};
use crate::cli::Resolved;
use crate::config::Config;
use crate::http::{self, HttpContext, HttpLimits};
use crate::oap::{self, OapContext, OapLimits};
use ron_control::link::{ShardLink, REPORT_PERIOD_MS};
use ron_control::quota::ShardQuotas;
use ron_io::tls::AppProtocol;

/// Pending connections the kernel queues per shard listener.
const LISTEN_BACKLOG: i32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Shard(#[from] ron_shards::ShardError),
    #[error("admin listener on {addr}: {source}")]
    Admin {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("shard {shard}: {reason}")]
    ShardStart { shard: u16, reason: String },
}

pub fn serve(resolved: Resolved) -> Result<(), ServeError> {
    let config = resolved.config.clone();
    crate::logging::init(config.log_format, config.log_level);
    config.validate()?;
    let shards = config.shard_count();
    // The lock comes first: creating the partition table, cleaning tmp/ and opening the
    // stores are for the one node that owns the data dir.
    let _lock = lock_data_dir(&config.data_dir)?;
    let table = layout::open_data_dir(&config.data_dir, shards)?;
    for (_, addr) in config.data_listeners() {
        probe_port(addr)?;
    }
    let tls =
        match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(ron_io::tls::server_config(cert, key).map_err(
                |e| ServeError::ShardStart {
                    shard: 0,
                    reason: e.to_string(),
                },
            )?),
            _ => None,
        };
    let removed = layout::clean_tmp(&config.data_dir)?;
    if removed > 0 {
        tracing::info!(
            removed,
            dir = %layout::tmp_dir(&config.data_dir).display(),
            "removed unfinished uploads"
        );
    }
    let routing = Routing::new(table, shards);
    if shards > routing.store_count() {
        tracing::warn!(
            shards,
            stores = routing.store_count(),
            "more shards than stores; shards from {} on own no store and forward every object request",
            routing.store_count()
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(|e| {
            ServeError::ShardStart {
                shard: 0,
                reason: format!("cannot install signal handler: {e}"),
            }
        })?;
    }
    let metrics: Vec<Arc<ShardMetrics>> = (0..shards)
        .map(|_| Arc::new(ShardMetrics::default()))
        .collect();
    let hangup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hangup)).map_err(|e| {
        ServeError::ShardStart {
            shard: 0,
            reason: format!("cannot install signal handler: {e}"),
        }
    })?;
    let control_stop = Arc::new(AtomicBool::new(false));
    let (control_link, shard_links) = ron_control::link::links(usize::from(shards));
    let policy = config.policy();
    let state = ron_control::ControlState {
        shards: metrics.clone(),
        version: env!("CARGO_PKG_VERSION"),
        stop: Arc::clone(&control_stop),
        admin_token: config.admin_token.clone(),
        link: control_link,
        policy: policy.clone(),
        reloader: Some(ron_control::Reloader {
            watch: resolved.config_file.clone(),
            load: reload_policy(resolved),
            hangup,
        }),
    };
    let (admin_addr, control) =
        ron_control::spawn(config.admin, state).map_err(|source| ServeError::Admin {
            addr: config.admin,
            source,
        })?;

    let mesh_builder =
        (shards > 1).then(|| MeshBuilderFull::full(usize::from(shards), mesh::MESH_CHANNEL_LEN));
    let directory = mesh::peer_directory(shards);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let config = Arc::new(config);
    let mut handles = Vec::new();
    let failed = Arc::new(AtomicBool::new(false));
    // One hasher for the node: a tenant has the same quota key on every shard.
    let hasher = std::collections::hash_map::RandomState::new();
    for (i, link) in (0..shards).zip(shard_links) {
        let quotas = ShardQuotas::new(
            policy.clone(),
            usize::from(shards),
            hasher.clone(),
            config.quota_tenants_max,
        );
        let failed = Arc::clone(&failed);
        let tls = tls.clone();
        let (config, routing, metrics, stop) = (
            Arc::clone(&config),
            routing.clone(),
            Arc::clone(&metrics[usize::from(i)]),
            Arc::clone(&stop),
        );
        let stop_on_failure = Arc::clone(&stop);
        let (mesh_builder, directory) = (mesh_builder.clone(), Arc::clone(&directory));
        let handle = LocalExecutorBuilder::new(Placement::Fixed(usize::from(i) % cpus))
            .name(&format!("ron-shard-{i}"))
            .blocking_thread_pool_placement(PoolPlacement::Unbound(1))
            .spawn(move || async move {
                let result = run_shard(
                    ShardIndex(i),
                    config,
                    tls,
                    routing,
                    mesh_builder,
                    directory,
                    Arc::clone(&metrics),
                    stop,
                    (quotas, link),
                )
                .await;
                let stop = stop_on_failure;
                if let Err(e) = &result {
                    tracing::error!(shard = i, reason = %e, "shard failed");
                    failed.store(true, Ordering::Relaxed);
                    stop.store(true, Ordering::Relaxed);
                }
                result
            })
            .map_err(|e| ServeError::ShardStart {
                shard: i,
                reason: e.to_string(),
            })?;
        handles.push(handle);
    }

    wait_until_ready(&metrics, &failed, &stop);
    if metrics.iter().all(|m| m.ready.load(Ordering::Relaxed)) {
        print_banner(&config, shards, admin_addr);
    }
    let mut failure = None;
    for (i, handle) in handles.into_iter().enumerate() {
        let outcome = match handle.join() {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        stop.store(true, Ordering::Relaxed);
        failure.get_or_insert(ServeError::ShardStart {
            shard: i as u16,
            reason: outcome,
        });
    }
    control_stop.store(true, Ordering::Relaxed);
    let _ = control.join();
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// The control thread's way to read the configuration again: the same layers (file,
/// environment, flags), validated; only tokens, tenants and quotas apply live.
fn reload_policy(running: Resolved) -> ron_control::LoadPolicy {
    Box::new(move || {
        let again = running.reload().map_err(|e| e.to_string())?;
        let restart_keys = running.config.restart_keys_changed(&again.config);
        Ok((again.config.policy(), restart_keys))
    })
}

/// Holds an exclusive lock on the data dir for the life of the process: a second node on
/// the same data dir refuses to start.
fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File, ServeError> {
    let path = data_dir.join("LOCK");
    let refuse = |reason: String| ServeError::ShardStart { shard: 0, reason };
    std::fs::create_dir_all(data_dir)
        .map_err(|e| refuse(format!("cannot create {}: {e}", data_dir.display())))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| refuse(format!("cannot open {}: {e}", path.display())))?;
    file.try_lock().map_err(|_| {
        refuse(format!(
            "data dir {} is in use by another ron process",
            data_dir.display()
        ))
    })?;
    Ok(file)
}

/// Shards bind with SO_REUSEPORT, which would let a second process share the port and
/// silently split its traffic. A plain bind first fails if anyone already listens there.
fn probe_port(addr: std::net::SocketAddr) -> Result<(), ServeError> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|e| ServeError::ShardStart {
            shard: 0,
            reason: format!("cannot listen on {addr}: {e}"),
        })
}

fn wait_until_ready(metrics: &[Arc<ShardMetrics>], failed: &AtomicBool, stop: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        if metrics.iter().all(|m| m.ready.load(Ordering::Relaxed)) {
            return;
        }
        if failed.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn print_banner(config: &Config, shards: u16, admin: std::net::SocketAddr) {
    let writes = if !config.has_tokens() {
        "writes open (loopback, no tokens)"
    } else {
        "writes need a bearer token"
    };
    let tls = config
        .tls
        .map(|addr| format!("\n  tls    {addr}   (ALPN oap/1 and http/1.1)"))
        .unwrap_or_default();
    println!(
        "ron {} serving {} with {shards} shard(s)\n  http   http://{}   ({writes})\n  oap    {}{tls}\n  admin  http://{admin}   (/healthz /readyz /metrics /version)\ntry:\n  ron put FILE\n  ron get b3:<hex> -o FILE\n  curl -T FILE http://{}/o",
        env!("CARGO_PKG_VERSION"),
        config.data_dir.display(),
        config.http,
        config.oap,
        config.http,
    );
}

#[allow(clippy::too_many_arguments)]
async fn run_shard(
    index: ShardIndex,
    config: Arc<Config>,
    tls: Option<Arc<rustls::ServerConfig>>,
    routing: Routing,
    mesh_builder: Option<MeshBuilderFull>,
    directory: Arc<Vec<std::sync::atomic::AtomicUsize>>,
    metrics: Arc<ShardMetrics>,
    stop: Arc<AtomicBool>,
    (quotas, link): (ShardQuotas, ShardLink),
) -> Result<(), ServeError> {
    let shards = routing.shard_count();
    let mesh = match mesh_builder {
        Some(builder) => Some(Mesh::join(builder, index, directory, Arc::clone(&metrics)).await?),
        None => None,
    };
    let per_shard = |total: u64| (total / u64::from(shards)) as usize;
    let shard_config = ShardConfig {
        data_dir: config.data_dir.clone(),
        cache_bytes_max: per_shard(config.cache_bytes),
        meta_bytes_max: per_shard(config.meta_cache_bytes),
        open_files_max: config.open_files_max,
        index_bytes_max: config.index_bytes_max as usize,
        commit_batch_max: 1024,
    };
    let shard = Shard::start(index, routing, shard_config, mesh, Arc::clone(&metrics)).await?;
    let listen = |addr: std::net::SocketAddr| {
        ron_io::listener::reuseport_listener(addr, LISTEN_BACKLOG).map_err(|e| {
            ServeError::ShardStart {
                shard: index.0,
                reason: format!("cannot listen on {addr}: {e}"),
            }
        })
    };
    let http_listener = listen(config.http)?;
    let oap_listener = listen(config.oap)?;
    let tls_listener = config.tls.map(listen).transpose()?;
    let admission = Rc::new(Admission::new(
        index,
        Arc::clone(&metrics),
        config.inflight_max,
        quotas,
    ));
    let limits = HttpLimits {
        head_bytes_max: config.head_bytes_max,
        header_timeout: Duration::from_millis(config.header_timeout_ms),
        idle_timeout: Duration::from_millis(config.idle_timeout_ms),
        body_timeout: Duration::from_millis(config.body_timeout_ms),
        object_bytes_max: config.object_bytes_max,
    };
    let mut transports = vec!["tcp".to_string()];
    if tls.is_some() {
        transports.push("tls".into());
    }
    let oap_limits = OapLimits {
        max_frame: config.oap_max_frame,
        requests_per_connection_max: config.oap_max_inflight,
        inflate_ratio_max: config.inflate_ratio_max,
        idle_timeout: Duration::from_millis(config.idle_timeout_ms),
        body_timeout: Duration::from_millis(config.body_timeout_ms),
        object_bytes_max: config.object_bytes_max,
        transports,
    };
    let draining = Rc::new(Cell::new(false));
    let oap = Rc::new(OapContext {
        shard: Rc::clone(&shard),
        admission: Rc::clone(&admission),
        limits: oap_limits,
        draining: Rc::clone(&draining),
        shard_count: shards,
    });
    let ctx = Rc::new(HttpContext::new(
        shard,
        Rc::clone(&admission),
        limits,
        Rc::clone(&draining),
    ));
    let background = [
        glommio::spawn_local(control_tick(Rc::clone(&admission), link)),
        glommio::spawn_local(heartbeat(Rc::clone(&admission))),
    ];
    let accept = |listener, serve: Rc<dyn Fn(TcpStream)>| {
        glommio::spawn_local(accept_loop(
            listener,
            Arc::clone(&metrics),
            index,
            config.connections_max,
            serve,
        ))
    };
    let mut acceptors = vec![
        accept(http_listener, {
            let ctx = Rc::clone(&ctx);
            Rc::new(move |s| spawn(http::serve_connection(Rc::clone(&ctx), s)))
        }),
        accept(oap_listener, {
            let oap = Rc::clone(&oap);
            Rc::new(move |s| spawn(oap::serve_connection(Rc::clone(&oap), s)))
        }),
    ];
    if let (Some(listener), Some(tls)) = (tls_listener, tls) {
        let acceptor = Rc::new(ron_io::tls::acceptor(tls));
        let handshake_timeout = Duration::from_millis(config.header_timeout_ms);
        let (ctx, oap) = (Rc::clone(&ctx), Rc::clone(&oap));
        acceptors.push(accept(
            listener,
            Rc::new(move |s| {
                let (ctx, oap, acceptor) = (Rc::clone(&ctx), Rc::clone(&oap), Rc::clone(&acceptor));
                spawn(async move {
                    let Ok((stream, protocol)) =
                        ron_io::tls::accept(&acceptor, s, handshake_timeout).await
                    else {
                        ShardMetrics::add(&ctx.shard.metrics().tls_handshake_failures, 1);
                        return;
                    };
                    match protocol {
                        AppProtocol::Oap => oap::serve_connection(oap, stream).await,
                        AppProtocol::Http => http::serve_connection(ctx, stream).await,
                    }
                })
            }),
        ));
    }
    metrics.ready.store(true, Ordering::Relaxed);

    while !stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    metrics.ready.store(false, Ordering::Relaxed);
    draining.set(true);
    drop(acceptors); // cancels the accept loops and closes the listeners
    let deadline = Instant::now() + Duration::from_millis(config.drain_timeout_ms);
    while admission.inflight() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    drop(background);
    Ok(())
}

/// The shard's end of the control link, every [`REPORT_PERIOD_MS`].
async fn control_tick(admission: Rc<Admission>, link: ShardLink) {
    loop {
        glommio::timer::sleep(Duration::from_millis(REPORT_PERIOD_MS)).await;
        admission.tick(&link);
    }
}

/// Wakes every [`HEARTBEAT_PERIOD`]; a late wake means a task held the reactor.
async fn heartbeat(admission: Rc<Admission>) {
    loop {
        let due = Instant::now() + HEARTBEAT_PERIOD;
        glommio::timer::sleep(HEARTBEAT_PERIOD).await;
        admission.heartbeat(Instant::now().saturating_duration_since(due));
    }
}

fn spawn(connection: impl std::future::Future<Output = ()> + 'static) {
    glommio::spawn_local(connection).detach();
}

/// Accepts connections while the shard has room for them and hands each to `serve`.
async fn accept_loop(
    listener: TcpListener,
    metrics: Arc<ShardMetrics>,
    shard: ShardIndex,
    connections_max: u32,
    serve: Rc<dyn Fn(TcpStream)>,
) {
    loop {
        if metrics.connections_open.load(Ordering::Relaxed) >= u64::from(connections_max) {
            glommio::timer::sleep(Duration::from_millis(5)).await;
            continue;
        }
        match listener.accept().await {
            Ok(stream) => serve(stream),
            Err(e) => {
                tracing::warn!(shard = shard.0, reason = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
