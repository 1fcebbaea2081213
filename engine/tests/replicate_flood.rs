//! A peer asking this node again and again to hold a copy it holds already: each ask of
//! a copy held reads it back whole, so asks are what a peer could spend this node's disk
//! on. One request naming an address 256 times is one ask; asks of a copy held are
//! checked one at a time per shard, at the pace of placement copies, and a copy found
//! whole is answered `held` without another read for a while. Before, one request of
//! 256 duplicates became 64 whole reads of the object, unpaced, and each further
//! request as many more. A ron node and a libp2p peer of the test's own (rust-libp2p's
//! request-response over TCP, noise and yamux, as ron's), on loopback.

mod common;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::Multiaddr;
use ron_codec::Address;
use ron_dht::replicate::{self, ReplicateCodec, ReplicateRequest, REPLICATE_KEYS_MAX};
use ron_link::dht::CopyOutcome;

const WAIT: Duration = Duration::from_secs(60);

/// A libp2p peer of the test's own dials `node` and sends it `requests`, all at once;
/// returns each one's outcomes once every request is answered.
fn ask(node: SocketAddr, requests: Vec<ReplicateRequest>) -> Vec<Vec<CopyOutcome>> {
    let (done_tx, done) = mpsc::channel();
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
                .with_behaviour(|_| {
                    request_response::Behaviour::with_codec(
                        ReplicateCodec::default(),
                        [(replicate::PROTOCOL, ProtocolSupport::Outbound)],
                        request_response::Config::default()
                            .with_request_timeout(WAIT)
                            .with_max_concurrent_streams(64),
                    )
                })
                .unwrap()
                .with_swarm_config(|c| c.with_idle_connection_timeout(WAIT))
                .build();
            let target = Multiaddr::empty()
                .with(Protocol::from(node.ip()))
                .with(Protocol::Tcp(node.port()));
            swarm.dial(target).unwrap();
            let mut pending = Some(requests);
            let mut ids = Vec::new();
            let mut answers = Vec::new();
            let end = tokio::time::sleep(WAIT);
            tokio::pin!(end);
            loop {
                let event = tokio::select! {
                    event = swarm.select_next_some() => event,
                    _ = &mut end => return,
                };
                match event {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                        for request in pending.take().into_iter().flatten() {
                            ids.push(swarm.behaviour_mut().send_request(&peer_id, request));
                        }
                    }
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        message:
                            request_response::Message::Response {
                                request_id,
                                response,
                            },
                        ..
                    }) => answers.push((request_id, response.outcomes)),
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                        error,
                        ..
                    }) => panic!("a request failed: {error}"),
                    _ => continue,
                }
                if !ids.is_empty() && answers.len() == ids.len() {
                    let in_order = ids
                        .iter()
                        .map(|id| answers.iter().find(|(a, _)| a == id).unwrap().1.clone())
                        .collect();
                    let _ = done_tx.send(in_order);
                    return;
                }
            }
        });
    });
    done.recv_timeout(WAIT + Duration::from_secs(5))
        .expect("the node answered every request")
}

#[test]
fn asks_to_hold_a_copy_held_read_it_back_once_in_a_while() {
    let p2p = free_port();
    let listen = format!("127.0.0.1:{p2p}");
    let n = Node::start(
        &temp_dir("replicate-flood"),
        &["--shards", "1", "--p2p", &listen],
    );
    let data = bytes(90, 4 << 20);
    let addr = upload(&n, &data);
    let request = |times: usize| ReplicateRequest {
        oap_port: 9,
        addrs: vec![*addr.as_bytes(); times],
    };
    // One request naming it 256 times, and 16 more naming it once each, all at once.
    let mut requests = vec![request(REPLICATE_KEYS_MAX)];
    requests.extend((0..16).map(|_| request(1)));
    let answers = ask(SocketAddr::from(([127, 0, 0, 1], p2p)), requests);
    assert_eq!(answers[0].len(), REPLICATE_KEYS_MAX);
    assert_eq!(answers[0][0], CopyOutcome::Held, "{:?}", &answers[0][..4]);
    assert!(
        answers[0][1..].iter().all(|o| *o == CopyOutcome::Failed),
        "an address asked for again in one request is not another copy: {:?}",
        &answers[0][..4]
    );
    for answer in &answers[1..] {
        assert_eq!(answer, &[CopyOutcome::Held]);
    }
    let checks = metric(n.admin, "ron_replication_held_checks_total");
    assert_eq!(checks, 1, "the held copy read back whole {checks} times");
    assert!(holds(&n, &Address::of(&data)));
}

/// Below the disk floor, a peer's ask does not make a read-through copy held here kept:
/// kept, it could never be evicted, so a client's GET and one request pinned any object
/// the node could fetch, floor or not. It is answered `no_room`, as a copy not held is,
/// and stays evictable.
#[test]
fn below_the_floor_an_ask_does_not_pin_a_read_through_copy() {
    let origin = Node::start(&temp_dir("replicate-pin-origin"), &["--shards", "1"]);
    let data = bytes(91, 300_000);
    let addr = upload(&origin, &data);
    let p2p = free_port();
    let listen = format!("127.0.0.1:{p2p}");
    let origin_url = format!("http://{}", origin.http);
    let n = Node::start(
        &temp_dir("replicate-pin"),
        &[
            "--shards",
            "1",
            "--p2p",
            &listen,
            "--origin",
            &origin_url,
            "--copies-disk-free-percent-min",
            "100",
        ],
    );
    let r = get(n.http, &format!("/o/{addr}")).unwrap();
    assert!(
        r.status == 200 && r.body == data,
        "read through: {}",
        r.status
    );
    let stored = std::time::Instant::now();
    while metric(n.admin, "ron_fetched_objects") != 1 {
        assert!(stored.elapsed() < WAIT, "the read-through copy stored");
        std::thread::sleep(Duration::from_millis(50));
    }
    let asked = ReplicateRequest {
        oap_port: 9,
        addrs: vec![*addr.as_bytes()],
    };
    let answers = ask(SocketAddr::from(([127, 0, 0, 1], p2p)), vec![asked]);
    assert_eq!(answers[0], [CopyOutcome::NoRoom]);
    assert_eq!(
        metric(n.admin, "ron_fetched_objects"),
        1,
        "still an evictable copy"
    );
    assert_eq!(metric(n.admin, "ron_replication_pulls_no_room_total"), 1);
}

/// A listener at `at` that takes connections and says nothing, for the test's life.
fn silent_listener(at: std::net::Ipv4Addr) -> u16 {
    let listener = std::net::TcpListener::bind((at, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(256).collect();
        drop(held);
    });
    port
}

/// A TCP proxy on loopback to `to` whose connections to it come from `from`: the node
/// sees a peer dialing through it as a host at `from`. For the test's life.
fn proxy_from(from: std::net::Ipv4Addr, to: SocketAddr) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten().take(16) {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
            socket.connect(&to.into()).unwrap();
            let node: std::net::TcpStream = socket.into();
            for (mut a, mut b) in [
                (client.try_clone().unwrap(), node.try_clone().unwrap()),
                (node, client),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a, &mut b);
                    let _ = b.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    at
}

/// One public host asking for copies takes at most a quarter of a shard's pulls (8 of
/// 32): each copy whose source stalls holds a fetch until its pace gives it up, and
/// before, one host asking for 32 made-up addresses at a silent source held them all —
/// every other node's copies here were answered `busy` for as long, repeatable at the
/// minimum rate. Two hosts of TEST-NET-3 on one machine (a network namespace: root).
#[test]
#[ignore = "needs root and iproute2 (a network namespace of its own): run by scripts/test-all.sh"]
fn one_host_asking_for_copies_leaves_pulls_for_others() {
    use std::net::Ipv4Addr;
    let (node_ip, a_ip, b_ip) = (
        Ipv4Addr::new(203, 0, 113, 1),
        Ipv4Addr::new(203, 0, 113, 2),
        Ipv4Addr::new(203, 0, 113, 3),
    );
    netns::enter_holding(&[node_ip, a_ip, b_ip]);
    let p2p = SocketAddr::from((node_ip, free_port()));
    let n = Node::start(
        &temp_dir("replicate-hosts"),
        &[
            "--shards",
            "1",
            "--p2p",
            &p2p.to_string(),
            "--fetch-timeout-ms",
            "3000",
        ],
    );
    let made_up = |seed: u8, count: u8| -> Vec<[u8; 32]> {
        (0..count)
            .map(|i| *Address::of(&[seed, i]).as_bytes())
            .collect()
    };
    let from_a = ReplicateRequest {
        oap_port: silent_listener(a_ip),
        addrs: made_up(1, 32),
    };
    let through_a = proxy_from(a_ip, p2p);
    let asking = std::thread::spawn(move || ask(through_a, vec![from_a]));
    let started = std::time::Instant::now();
    while metric(n.admin, "ron_fetches_total") < 8 {
        assert!(started.elapsed() < WAIT, "A's copies under way");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let from_b = ReplicateRequest {
        oap_port: silent_listener(b_ip),
        addrs: made_up(2, 1),
    };
    let answer_b = ask(proxy_from(b_ip, p2p), vec![from_b]);
    assert_ne!(
        answer_b[0],
        [CopyOutcome::Busy],
        "another host's copy refused while one host's pulls held the shard's"
    );
    let answer_a = asking.join().unwrap();
    let busy = answer_a[0]
        .iter()
        .filter(|o| **o == CopyOutcome::Busy)
        .count();
    assert_eq!(busy, 24, "A's copies past its share: {:?}", answer_a[0]);
}
