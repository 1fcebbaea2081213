//! A peer that speaks Kademlia but never answers `/ron/provide/2` (overloaded, or
//! hostile) costs a publisher one request, not its batch: the batch whose keys other
//! peers took ends, and its keys are marked published, while the silent peer's request
//! is still out. Four DHT threads and one silent libp2p peer on loopback, in one
//! process; every wait is bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, kad, ping, Multiaddr};
use ron_dht::node::{self, DhtConfig, DhtThread, KAD_PROTOCOL, QUERY_TIMEOUT};
use ron_dht::protocol::{self, ProvideCodec};
use ron_dht::store::StoreLimits;

const WAIT: Duration = Duration::from_secs(30);
/// How long the silent peer runs: past every wait of the test, so it is silent
/// throughout, and bounded, so it ends by itself.
const SILENT_FOR: Duration = Duration::from_secs(90);
const KEYS: u8 = 8;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ron-dht-silent-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn start(dir: &Path, oap_port: u16, peers: &[SocketAddr]) -> DhtThread {
    node::spawn(DhtConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        peers: peers
            .iter()
            .map(|p| node::parse_peer(&p.to_string()).unwrap())
            .collect(),
        oap: SocketAddr::from(([127, 0, 0, 1], oap_port)),
        zone: String::new(),
        replicas: 1,
        peer_dead: Duration::ZERO,
        pulls: None,
        limits: StoreLimits::default(),
    })
    .unwrap()
}

fn wait_for(what: &str, done: impl Fn() -> bool) -> Instant {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    Instant::now()
}

#[derive(NetworkBehaviour)]
struct Silent {
    kad: kad::Behaviour<kad::store::MemoryStore>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    provide: request_response::Behaviour<ProvideCodec>,
}

fn silent_behaviour(key: &libp2p::identity::Keypair) -> Silent {
    let local = key.public().to_peer_id();
    let mut kad = kad::Behaviour::with_config(
        local,
        kad::store::MemoryStore::new(local),
        kad::Config::new(KAD_PROTOCOL),
    );
    kad.set_mode(Some(kad::Mode::Server));
    Silent {
        kad,
        identify: identify::Behaviour::new(identify::Config::new(
            "/ron/1.0.0".into(),
            key.public(),
        )),
        ping: ping::Behaviour::default(),
        // Its own side of a request never gives up before the test is over.
        provide: request_response::Behaviour::with_codec(
            ProvideCodec::default(),
            [(protocol::PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(SILENT_FOR),
        ),
    }
}

/// Starts the silent peer on its own thread: it answers Kademlia, identify and ping
/// like any peer, takes every `/ron/provide/2` request (greetings included) and never
/// answers one. Returns where it listens and, per request carrying keys, when it came.
fn spawn_silent_peer() -> (SocketAddr, mpsc::Receiver<Instant>) {
    let (listening_tx, listening) = mpsc::channel();
    let (requests_tx, requests) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut swarm = libp2p::SwarmBuilder::with_new_identity()
                .with_tokio()
                .with_tcp(
                    libp2p::tcp::Config::default().nodelay(true),
                    libp2p::noise::Config::new,
                    libp2p::yamux::Config::default,
                )
                .unwrap()
                .with_behaviour(silent_behaviour)
                .unwrap()
                .with_swarm_config(|c| c.with_idle_connection_timeout(SILENT_FOR))
                .build();
            let any_port: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
            swarm.listen_on(any_port).unwrap();
            let mut held = Vec::new();
            let end = tokio::time::sleep(SILENT_FOR);
            tokio::pin!(end);
            loop {
                let event = tokio::select! {
                    event = swarm.select_next_some() => event,
                    _ = &mut end => return,
                };
                match event {
                    SwarmEvent::NewListenAddr { address, .. } => {
                        let _ = listening_tx.send(tcp_socket(&address));
                    }
                    SwarmEvent::Behaviour(SilentEvent::Provide(
                        request_response::Event::Message {
                            message:
                                request_response::Message::Request {
                                    request, channel, ..
                                },
                            ..
                        },
                    )) => {
                        if !request.keys.is_empty() {
                            let _ = requests_tx.send(Instant::now());
                        }
                        held.push(channel);
                    }
                    _ => {}
                }
            }
        });
    });
    let listen = listening.recv_timeout(WAIT).unwrap();
    (listen, requests)
}

fn tcp_socket(addr: &Multiaddr) -> SocketAddr {
    let mut parts = addr.iter();
    match (parts.next(), parts.next()) {
        (Some(Protocol::Ip4(ip)), Some(Protocol::Tcp(port))) => SocketAddr::from((ip, port)),
        _ => panic!("not an /ip4/…/tcp/… address: {addr}"),
    }
}

#[test]
fn a_peer_that_never_answers_does_not_hold_a_publication() {
    let (silent, silent_requests) = spawn_silent_peer();
    let dirs: Vec<PathBuf> = (0..4).map(|i| scratch(&format!("n{i}"))).collect();
    let others: Vec<DhtThread> = (1..4)
        .map(|i| start(&dirs[i], 7100 + i as u16, &[]))
        .collect();
    let mut bootstrap: Vec<SocketAddr> = others.iter().map(|n| n.listen).collect();
    bootstrap.push(silent);
    let publisher = start(&dirs[0], 7100, &bootstrap);
    let metrics = &publisher.client.metrics;
    wait_for(
        "the publisher to know every peer, the silent one too",
        || metrics.routing_table_peers.load(Ordering::Relaxed) >= 4,
    );

    // Several keys in one batch: optimistic provide sends each key early to two peers
    // at most, so the silent peer gets some of them from the lookup's own sends.
    let keys: Vec<[u8; 32]> = (1..=KEYS).map(|i| [i; 32]).collect();
    publisher.client.announce(keys);
    let published = wait_for("the batch's keys to be published", || {
        metrics.keys_published_total.load(Ordering::Relaxed) >= u64::from(KEYS)
    });
    let first_silent = silent_requests
        .recv_timeout(WAIT)
        .expect("the silent peer, among every key's closest, got a request with keys");
    assert!(
        published < first_silent + QUERY_TIMEOUT,
        "the keys were published {:?} after the silent peer got its request: the batch \
         waited for the request's timeout ({QUERY_TIMEOUT:?})",
        published.saturating_duration_since(first_silent)
    );
    let failures = metrics.publish_failures_total.load(Ordering::Relaxed);
    assert_eq!(
        failures, 0,
        "no batch failed: the other peers took every key"
    );
    println!(
        "published {:?} after the silent peer's first request",
        published.saturating_duration_since(first_silent)
    );

    publisher.stop();
    for node in others {
        node.stop();
    }
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}
