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
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::kad::{self, ProviderRecord, RecordKey};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, SwarmEvent, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{identify, ping, Multiaddr, PeerId};
use ron_dht::node::{
    record_key, CLAIMED_DIALS_PER_RESOLVE_MAX, DIAL_ADDRESSES_PER_PEER_MAX, KAD_PROTOCOL,
};

use common::{
    loopback_swarm, on_own_thread, scratch, start, start_in_zone, tcp_socket, wait_for, WAIT,
};

/// How long the liar runs: past every wait of the test, and bounded.
const LIAR_RUNS_FOR: Duration = Duration::from_secs(60);
/// Providers the liar makes up for the key: more than the copies the resolver keeps,
/// and than the providers not yet greeted a resolve dials.
const MADE_UP: usize = 40;

#[derive(NetworkBehaviour)]
struct Liar {
    undialed: Undialed,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

/// Starts the liar on its own thread: a Kademlia server that knows `provider` (so its
/// answers name it among the closer peers, as an honest peer's would) and holds a
/// provider record of `key` for each of `records` (an id and the addresses it is said
/// to be at). Returns where it listens.
fn spawn_liar(
    key: RecordKey,
    provider: (PeerId, SocketAddr),
    records: Vec<(PeerId, Vec<Multiaddr>)>,
) -> SocketAddr {
    let known = vec![(provider.0, vec![tcp_multiaddr(provider.1)])];
    spawn_liar_knowing(key, known, records, Undialed(Vec::new()))
}

/// [`spawn_liar`] with the peers its routing table holds, each at the addresses given,
/// and a peer it never dials itself.
fn spawn_liar_knowing(
    key: RecordKey,
    known: Vec<(PeerId, Vec<Multiaddr>)>,
    records: Vec<(PeerId, Vec<Multiaddr>)>,
    undialed: Undialed,
) -> SocketAddr {
    let (listening_tx, listening) = mpsc::channel();
    on_own_thread(move || async move {
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
                    undialed,
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
        for (id, addresses) in known {
            for address in addresses {
                kad.add_address(&id, address);
            }
        }
        for (id, addresses) in records {
            let record = ProviderRecord::new(key.clone(), id, addresses);
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

/// A TCP proxy to `target` whose answers start `delay` late on each connection, for the
/// test's life (at most 64 connections).
fn delaying_proxy(target: SocketAddr, delay: Duration) -> SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten().take(64) {
            let Ok(node) = std::net::TcpStream::connect(target) else {
                continue;
            };
            let (mut from_client, mut to_node) =
                (client.try_clone().unwrap(), node.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_client, &mut to_node);
                let _ = to_node.shutdown(std::net::Shutdown::Write);
            });
            let (mut from_node, mut to_client) = (node, client);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let mut first = true;
                while let Ok(n) = from_node.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if std::mem::take(&mut first) {
                        std::thread::sleep(delay);
                    }
                    if to_client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = to_client.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
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

/// Asserts `found` names `provider`.
fn assert_names(found: &[ron_link::dht::Provider], provider: &ron_dht::node::DhtThread) {
    assert!(
        found
            .iter()
            .any(|p| p.node_id == provider.client.node_id.as_ref()),
        "the real provider in {found:?}"
    );
}

/// A resolver (three copies kept) whose one bootstrap peer is `liar`, once it knows it.
fn resolver_of(dir: &std::path::Path, oap_port: u16, liar: SocketAddr) -> ron_dht::node::DhtThread {
    let resolver = start_in_zone(dir, oap_port, &[liar], "", 3);
    wait_for("the resolver to know the liar", || {
        resolver
            .client
            .metrics
            .routing_table_peers
            .load(Ordering::Relaxed)
            >= 1
    });
    resolver
}

/// Test `test`'s scratch dirs for a provider and a resolver, and the provider of
/// `object` (its id too), serving OAP/1 at `oap_port`.
fn a_provider(
    test: &str,
    oap_port: u16,
    object: [u8; 32],
) -> (Vec<PathBuf>, ron_dht::node::DhtThread, PeerId) {
    let dirs: Vec<PathBuf> = ["provider", "resolver"]
        .iter()
        .map(|name| scratch(test, name))
        .collect();
    let provider = start(&dirs[0], oap_port, &[]);
    provider.client.announce(vec![object]);
    let provider_id: PeerId = provider.client.node_id.parse().unwrap();
    (dirs, provider, provider_id)
}

#[test]
fn made_up_providers_from_one_peer_do_not_end_a_resolve_before_the_real_one() {
    let object = [0x51u8; 32];
    let (dirs, provider, provider_id) = a_provider("lying", 7401, object);
    // Where the made-up providers are said to serve: an address nothing listens on,
    // and a host of the liar's choosing, which counts the connections it is sent.
    let claimed_oap = SocketAddr::from(([127, 0, 0, 1], 7409));
    let (victim, connects) = counting_listener();
    let claimed = vec![tcp_multiaddr(victim), oap_multiaddr(claimed_oap)];
    let made_up = (0..MADE_UP)
        .map(|_| (PeerId::random(), claimed.clone()))
        .collect();
    let liar = spawn_liar(record_key(&object), (provider_id, provider.listen), made_up);
    let resolver = resolver_of(&dirs[1], 7402, liar);
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
    // Each made-up provider dialed sends connects to the liar's host (one per address
    // the answers named it at): a resolve dials no more of them than its limit. Before,
    // every claim kept was dialed (20 connects here; 9–11 now, counted at the host).
    let dials = &resolver.client.metrics.claimed_provider_dials_total;
    assert_eq!(
        dials.load(Ordering::Relaxed),
        CLAIMED_DIALS_PER_RESOLVE_MAX as u64
    );
    std::thread::sleep(Duration::from_millis(500));
    let sent = connects.load(Ordering::Relaxed);
    assert!(sent >= 1, "no connect to the liar's host");
    assert!(
        sent <= 2 * CLAIMED_DIALS_PER_RESOLVE_MAX,
        "{sent} connects to the liar's host: more than the dials a resolve may make"
    );
    println!("answered with the real provider and {made_up} made-up ones; {sent} connects sent");
    provider.stop();
    resolver.stop();
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A liar near the key names, as the object's providers, three ron nodes the resolver
/// has greeted — ids it has proven — that hold nothing. A proven id says who a node is,
/// not what it holds: the resolve's clock waits for providers two answers name (or the
/// query's end), so the real provider is found. Before, the three proven ids were as
/// many as the copies kept and ended the resolve at once, the real provider never
/// asked, and every read-through of the object got 404s from the three.
#[test]
fn greeted_nodes_a_liar_names_do_not_end_a_resolve_before_the_real_provider() {
    let dirs: Vec<PathBuf> = ["provider", "resolver", "decoy-0", "decoy-1", "decoy-2"]
        .iter()
        .map(|name| scratch("lying-greeted", name))
        .collect();
    let object = [0x52u8; 32];
    let provider = start(&dirs[0], 7411, &[]);
    provider.client.announce(vec![object]);
    let provider_id: PeerId = provider.client.node_id.parse().unwrap();
    // The decoys each provide an object of their own: the resolver finding one in zone
    // "z" is how the test knows it has greeted that decoy.
    let decoys: Vec<_> = (0..3u8)
        .map(|i| {
            let decoy = start_in_zone(&dirs[2 + usize::from(i)], 7420 + u16::from(i), &[], "z", 1);
            decoy.client.announce(vec![[0x60 + i; 32]]);
            decoy
        })
        .collect();
    let named = decoys
        .iter()
        .map(|d| {
            (
                d.client.node_id.parse().unwrap(),
                vec![tcp_multiaddr(d.listen)],
            )
        })
        .collect();
    // The liar tells the resolver of the real provider (as an honest peer would name a
    // closer one) at an address whose answers come a second late: the liar's answer is
    // always in first.
    let slow_provider = delaying_proxy(provider.listen, Duration::from_secs(1));
    let liar = spawn_liar(record_key(&object), (provider_id, slow_provider), named);
    let mut bootstrap = vec![liar];
    bootstrap.extend(decoys.iter().map(|d| d.listen));
    let resolver = start_in_zone(&dirs[1], 7412, &bootstrap, "", 3);
    for (i, decoy) in (0u8..).zip(&decoys) {
        wait_for("the resolver to greet a decoy", || {
            let found = resolver.client.resolve([0x60 + i; 32], 1, 1_000);
            found.is_ok_and(|found| {
                found.iter().any(|p| {
                    p.node_id == decoy.client.node_id.as_ref() && p.zone.as_deref() == Some("z")
                })
            })
        });
    }
    let found = resolver.client.resolve(object, 8, 5_000).unwrap();
    assert_names(&found, &provider);
    provider.stop();
    resolver.stop();
    for decoy in decoys {
        decoy.stop();
    }
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Made-up providers whose records say they serve at a private address where no peer
/// this node greeted is (`10.9.9.9:6379`, a service on the operator's own network) are
/// never named there: this node's shards would connect and send OAP/1 to it. Before,
/// every resolving node did, on every miss of the object.
#[test]
fn claimed_providers_are_not_named_at_private_addresses_no_greeted_peer_has() {
    let object = [0x53u8; 32];
    let (dirs, provider, provider_id) = a_provider("lying-private", 7431, object);
    let private = SocketAddr::from(([10, 9, 9, 9], 6379));
    let claimed = vec![tcp_multiaddr(private), oap_multiaddr(private)];
    let made_up = (0..3)
        .map(|_| (PeerId::random(), claimed.clone()))
        .collect();
    let liar = spawn_liar(record_key(&object), (provider_id, provider.listen), made_up);
    let resolver = resolver_of(&dirs[1], 7432, liar);
    let found = resolver.client.resolve(object, 8, 5_000).unwrap();
    assert!(
        found.iter().all(|p| p.oap != Some(private)),
        "named at {private}: {found:?}"
    );
    assert_names(&found, &provider);
    provider.stop();
    resolver.stop();
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A listener on loopback that counts the connections it takes and closes each at once
/// (a dial to it fails its handshake, and the dialer goes on to its next address), for
/// the test's life (16 connections).
fn closing_listener() -> (SocketAddr, Arc<AtomicUsize>) {
    closing_listener_at("127.0.0.1")
}

/// [`closing_listener`] at `ip`.
fn closing_listener_at(ip: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&count);
    std::thread::spawn(move || {
        for connection in listener.incoming().flatten().take(16) {
            counted.fetch_add(1, Ordering::Relaxed);
            drop(connection);
        }
    });
    (addr, count)
}

/// A peer the liar never dials itself (its own lookups would: libp2p-kad bootstraps
/// when its table gains a peer), so that what is counted at that peer's addresses is
/// the node under test's dials.
struct Undialed(Vec<PeerId>);

impl NetworkBehaviour for Undialed {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        match peer.is_some_and(|p| self.0.contains(&p)) {
            true => Err(ConnectionDenied::new(
                "the liar does not dial the made-up peer",
            )),
            false => Ok(Vec::new()),
        }
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// A peer a liar's answers name at 64 addresses is dialed at a few of them. A lookup
/// dials the peers an answer names at every address named, and libp2p's TCP transport
/// makes each address's socket when the dial starts (the dial concurrency factor only
/// paces the connects): before, one made-up peer held 64 sockets of the DHT thread and
/// had a connect sent to every address — a port scan by proxy, and with the ~1,600
/// addresses an answer can carry, 128 pending dials could hold 200,000 descriptors
/// against a bound (`DHT_FDS_MAX`) that counted two per dial.
#[test]
fn a_peer_named_at_many_addresses_is_dialed_at_a_few() {
    let listeners: Vec<_> = (0..64).map(|_| closing_listener()).collect();
    let addresses = listeners.iter().map(|(a, _)| tcp_multiaddr(*a)).collect();
    let made_up = PeerId::random();
    let known = vec![(made_up, addresses)];
    let undialed = Undialed(vec![made_up]);
    let liar = spawn_liar_knowing(record_key(&[0x54u8; 32]), known, Vec::new(), undialed);
    let dir = scratch("lying-addresses", "node");
    // Its join lookup asks the liar, whose answers name the made-up peer.
    let node = start(&dir, 7441, &[liar]);
    let dialed = || {
        listeners
            .iter()
            .filter(|(_, n)| n.load(Ordering::Relaxed) > 0)
            .count()
    };
    wait_for("a connect to one of the made-up peer's addresses", || {
        dialed() >= 1
    });
    std::thread::sleep(Duration::from_secs(3));
    let dialed = dialed();
    assert!(
        dialed <= DIAL_ADDRESSES_PER_PEER_MAX,
        "{dialed} of the made-up peer's 64 addresses dialed"
    );
    println!("{dialed} of 64 addresses dialed");
    node.stop();
    let _ = std::fs::remove_dir_all(dir);
}

/// Moves the calling thread — and the threads and processes it starts from then on —
/// into a network namespace of its own, its loopback up and holding `ip` too. Needs root.
fn enter_network_namespace_holding(ip: &str) {
    #[allow(unsafe_code)]
    // SAFETY: `unshare` takes no pointers; it changes only this thread's namespaces.
    let entered = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        entered,
        0,
        "a network namespace needs root: {}",
        std::io::Error::last_os_error()
    );
    for args in [
        vec!["link", "set", "lo", "up"],
        vec!["addr", "add", ip, "dev", "lo"],
    ] {
        let status = std::process::Command::new("ip").args(&args).status();
        assert!(status.is_ok_and(|s| s.success()), "ip {args:?} (iproute2)");
    }
}

/// A node whose connections are all on loopback dials no private address a lookup's
/// answers name (`10.9.9.9`, a service on the operator's network, or a scan of it for
/// the liar), and dials loopback ones, the network it is in. Before, it dialed both.
#[test]
#[ignore = "needs root and iproute2 (a network namespace of its own): run by scripts/test-all.sh"]
fn no_private_address_a_liar_names_is_dialed_from_outside_its_network() {
    enter_network_namespace_holding("10.9.9.9/32");
    let (private, private_connects) = closing_listener_at("10.9.9.9");
    let (loopback, loopback_connects) = closing_listener();
    let (in_private, in_loopback) = (PeerId::random(), PeerId::random());
    let known = vec![
        (in_private, vec![tcp_multiaddr(private)]),
        (in_loopback, vec![tcp_multiaddr(loopback)]),
    ];
    let undialed = Undialed(vec![in_private, in_loopback]);
    let liar = spawn_liar_knowing(record_key(&[0x55u8; 32]), known, Vec::new(), undialed);
    let dir = scratch("lying-private-dials", "node");
    let node = start(&dir, 7451, &[liar]);
    wait_for("a dial of the peer named on loopback", || {
        loopback_connects.load(Ordering::Relaxed) >= 1
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        private_connects.load(Ordering::Relaxed),
        0,
        "connects to the private address a liar named"
    );
    node.stop();
    let _ = std::fs::remove_dir_all(dir);
}
