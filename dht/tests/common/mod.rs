//! What the DHT's integration tests share: scratch directories, DHT threads on
//! loopback, and bounded waits.
// Each test binary uses the part it needs.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Multiaddr, Swarm};
use ron_dht::node::{self, DhtConfig, DhtThread};
use ron_dht::store::StoreLimits;

/// Every wait gives up after this long.
pub const WAIT: Duration = Duration::from_secs(30);

/// A fresh directory for `test`'s node `name`, under the system's temporary one.
pub fn scratch(test: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ron-dht-{test}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A DHT thread on a free loopback port, bootstrapped from `peers`, announcing
/// `oap_port` as its OAP/1 port, with no zone and one copy per object.
pub fn start(dir: &Path, oap_port: u16, peers: &[SocketAddr]) -> DhtThread {
    start_in_zone(dir, oap_port, peers, "", 1)
}

pub fn start_in_zone(
    dir: &Path,
    oap_port: u16,
    peers: &[SocketAddr],
    zone: &str,
    replicas: usize,
) -> DhtThread {
    node::spawn(DhtConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        peers: peers
            .iter()
            .map(|p| node::parse_peer(&p.to_string()).unwrap())
            .collect(),
        oap: SocketAddr::from(([127, 0, 0, 1], oap_port)),
        zone: zone.into(),
        replicas,
        peer_dead: Duration::ZERO,
        pulls: None,
        limits: StoreLimits::default(),
        network_key: None,
    })
    .unwrap()
}

/// Waits until `done`, at most [`WAIT`] (then fails the test naming `what`); returns when
/// it saw it done, to within 10 ms.
pub fn wait_for(what: &str, done: impl Fn() -> bool) -> Instant {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    Instant::now()
}

/// Runs `task` on a thread of its own in a current-thread tokio runtime: where a libp2p
/// peer of the test's own lives beside the node under test.
pub fn on_own_thread<F>(task: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()>,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(task());
    });
}

/// A libp2p peer of the test's own (not ron's code) on loopback — TCP, noise and yamux,
/// as ron's — listening on a free port, its idle connections kept `idle`. Build it
/// inside a tokio runtime.
pub fn loopback_swarm<B: NetworkBehaviour>(
    behaviour: impl FnOnce(&libp2p::identity::Keypair) -> B,
    idle: Duration,
) -> Swarm<B> {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    let any_port: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
    swarm.listen_on(any_port).unwrap();
    swarm
}

/// The socket of an `/ip4/…/tcp/…` address.
pub fn tcp_socket(addr: &Multiaddr) -> SocketAddr {
    let mut parts = addr.iter();
    match (parts.next(), parts.next()) {
        (Some(Protocol::Ip4(ip)), Some(Protocol::Tcp(port))) => SocketAddr::from((ip, port)),
        _ => panic!("not an /ip4/…/tcp/… address: {addr}"),
    }
}
