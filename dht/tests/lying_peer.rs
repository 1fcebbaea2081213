//! A peer on a lookup's path that answers a provider query with made-up providers — ids
//! nobody runs, each with an OAP/1 address of the liar's choosing — does not end the
//! resolve on its word: only providers a node has proven (itself, or a peer that greeted
//! it over an authenticated connection) count as the copies found, so the query goes on
//! to the real provider, which the answer names. Before, eight claims were "enough" and
//! the resolve was answered with them alone, the real provider never asked. A ron
//! provider, a resolver (three copies kept) that knows only the liar, and the liar, a
//! libp2p peer whose Kademlia store holds the made-up records; on loopback, in one
//! process, every wait bounded.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::kad::{self, ProviderRecord, RecordKey};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, ping, Multiaddr, PeerId};
use ron_dht::node::{record_key, CLAIMED_DIALS_PER_RESOLVE_MAX, KAD_PROTOCOL};

use common::{loopback_swarm, scratch, start, start_in_zone, tcp_socket, wait_for, WAIT};

/// How long the liar runs: past every wait of the test, and bounded.
const LIAR_RUNS_FOR: Duration = Duration::from_secs(60);
/// Providers the liar makes up for the key: more than the copies the resolver keeps,
/// and than the providers not yet greeted a resolve dials.
const MADE_UP: usize = 40;

#[derive(NetworkBehaviour)]
struct Liar {
    kad: kad::Behaviour<kad::store::MemoryStore>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

/// Starts the liar on its own thread: a Kademlia server that knows `provider` (so its
/// answers name it among the closer peers, as an honest peer's would) and holds
/// [`MADE_UP`] provider records of `key` for ids nobody runs, each at `oap`'s address
/// and at `dialed` (a host of the liar's choosing). Returns where it listens.
fn spawn_liar(
    key: RecordKey,
    provider: (PeerId, SocketAddr),
    oap: SocketAddr,
    dialed: SocketAddr,
) -> SocketAddr {
    let (listening_tx, listening) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut swarm = loopback_swarm(
                |key| {
                    let local = key.public().to_peer_id();
                    let mut kad = kad::Behaviour::with_config(
                        local,
                        kad::store::MemoryStore::new(local),
                        kad::Config::new(KAD_PROTOCOL),
                    );
                    kad.set_mode(Some(kad::Mode::Server));
                    Liar {
                        kad,
                        identify: identify::Behaviour::new(identify::Config::new(
                            "/ron/1.0.0".into(),
                            key.public(),
                        )),
                        ping: ping::Behaviour::default(),
                    }
                },
                LIAR_RUNS_FOR,
            );
            let kad = &mut swarm.behaviour_mut().kad;
            kad.add_address(&provider.0, tcp_multiaddr(provider.1));
            let claimed = vec![tcp_multiaddr(dialed), oap_multiaddr(oap)];
            for _ in 0..MADE_UP {
                let record = ProviderRecord::new(key.clone(), PeerId::random(), claimed.clone());
                kad::store::RecordStore::add_provider(kad.store_mut(), record).unwrap();
            }
            let end = tokio::time::sleep(LIAR_RUNS_FOR);
            tokio::pin!(end);
            loop {
                let event = tokio::select! {
                    event = swarm.select_next_some() => event,
                    _ = &mut end => return,
                };
                if let SwarmEvent::NewListenAddr { address, .. } = event {
                    let _ = listening_tx.send(tcp_socket(&address));
                }
            }
        });
    });
    listening.recv_timeout(WAIT).unwrap()
}

/// A listener that takes connections and counts them (and says nothing: a dial to it
/// fails its handshake), for the test's life.
fn counting_listener() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&count);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for connection in listener.incoming().flatten().take(4 * MADE_UP) {
            counted.fetch_add(1, Ordering::Relaxed);
            held.push(connection);
        }
    });
    (addr, count)
}

fn tcp_multiaddr(socket: SocketAddr) -> Multiaddr {
    let SocketAddr::V4(v4) = socket else {
        panic!("loopback IPv4 only: {socket}")
    };
    Multiaddr::empty()
        .with(Protocol::Ip4(*v4.ip()))
        .with(Protocol::Tcp(v4.port()))
}

/// An OAP/1 address as a ron record carries it (`/ip4/…/tcp/PORT/sni/oap`).
fn oap_multiaddr(socket: SocketAddr) -> Multiaddr {
    tcp_multiaddr(socket).with(Protocol::Sni("oap".into()))
}

#[test]
fn made_up_providers_from_one_peer_do_not_end_a_resolve_before_the_real_one() {
    let dirs: Vec<PathBuf> = ["provider", "resolver"]
        .iter()
        .map(|name| scratch("lying", name))
        .collect();
    let object = [0x51u8; 32];
    let provider = start(&dirs[0], 7401, &[]);
    provider.client.announce(vec![object]);
    let provider_id: PeerId = provider.client.node_id.parse().unwrap();
    // Where the made-up providers are said to serve: an address nothing listens on,
    // and a host of the liar's choosing, which counts the connections it is sent.
    let claimed_oap = SocketAddr::from(([127, 0, 0, 1], 7409));
    let (victim, connects) = counting_listener();
    let liar = spawn_liar(
        record_key(&object),
        (provider_id, provider.listen),
        claimed_oap,
        victim,
    );
    let resolver = start_in_zone(&dirs[1], 7402, &[liar], "", 3);
    wait_for("the resolver to know the liar", || {
        resolver
            .client
            .metrics
            .routing_table_peers
            .load(Ordering::Relaxed)
            >= 1
    });
    let found = resolver.client.resolve(object, MADE_UP + 1, 5_000).unwrap();
    let real = found
        .iter()
        .find(|p| p.node_id == provider.client.node_id.as_ref());
    assert_eq!(
        real.map(|p| p.oap),
        Some(Some(SocketAddr::from(([127, 0, 0, 1], 7401)))),
        "the real provider, with its OAP/1 address, in {found:?}"
    );
    let made_up = found.iter().filter(|p| p.oap == Some(claimed_oap)).count();
    assert!(made_up <= MADE_UP, "{found:?}");
    // Each made-up provider dialed sends connects to the liar's host (one per address
    // the answers named it at): a resolve dials no more of them than its limit. Before,
    // every claim kept was dialed (20 connects here; 9–11 now).
    let dials = &resolver.client.metrics.claimed_provider_dials_total;
    assert_eq!(
        dials.load(Ordering::Relaxed),
        CLAIMED_DIALS_PER_RESOLVE_MAX as u64
    );
    std::thread::sleep(Duration::from_millis(500));
    let sent = connects.load(Ordering::Relaxed);
    assert!(sent >= 1, "no connect to the liar's host");
    println!("answered with the real provider and {made_up} made-up ones; {sent} connects sent");
    provider.stop();
    resolver.stop();
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}
