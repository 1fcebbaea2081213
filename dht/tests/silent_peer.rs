//! A peer that speaks the DHT but never answers (overloaded, or hostile) costs others
//! a request and its timeout, not their work: a publication batch whose keys other
//! peers took ends, and its keys are marked published, while the silent peer's
//! `/ron/provide/2` request is still out; a lookup goes on without a peer that never
//! answers its Kademlia request once [`KAD_REQUEST_TIMEOUT`] has passed. Four DHT
//! threads and one silent libp2p peer on loopback, in one process; every wait is bounded.

mod common;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, kad, ping, StreamProtocol};
use ron_dht::node::{DhtThread, KAD_PROTOCOL, KAD_REQUEST_TIMEOUT, QUERY_TIMEOUT};
use ron_dht::protocol::{self, ProvideCodec};

use common::{loopback_swarm, on_own_thread, scratch, start, tcp_socket, wait_for, WAIT};

/// How long the silent peer runs: past every wait of the test, so it is silent
/// throughout, and bounded, so it ends by itself.
const SILENT_FOR: Duration = Duration::from_secs(90);
const KEYS: u8 = 8;

/// What the silent peer leaves unanswered.
#[derive(Clone, Copy)]
enum Silence {
    /// `/ron/provide/2` only: it answers Kademlia like any peer.
    Provide,
    /// `/ron/provide/2` and Kademlia: it takes each request and never answers.
    ProvideAndKademlia,
}

#[derive(NetworkBehaviour)]
struct Silent {
    kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    kad_unanswered: Toggle<request_response::Behaviour<Unanswered>>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    provide: request_response::Behaviour<ProvideCodec>,
}

/// Takes a request's first bytes on a protocol and leaves it at that: the handler
/// holds the request's channel and never answers it.
#[derive(Clone, Default)]
struct Unanswered;

/// What the codec's reads and writes are given (the trait's bounds, named once).
trait Read: futures::AsyncRead + Unpin + Send {}
impl<T: futures::AsyncRead + Unpin + Send> Read for T {}
trait Write: futures::AsyncWrite + Unpin + Send {}
impl<T: futures::AsyncWrite + Unpin + Send> Write for T {}
type Proto = StreamProtocol;

impl request_response::Codec for Unanswered {
    type Protocol = StreamProtocol;
    type Request = ();
    type Response = ();

    async fn read_request<T: Read>(&mut self, _: &Proto, io: &mut T) -> io::Result<()> {
        let mut first = [0u8; 64];
        futures::AsyncReadExt::read(io, &mut first)
            .await
            .map(|_| ())
    }

    async fn read_response<T: Read>(&mut self, _: &Proto, _: &mut T) -> io::Result<()> {
        unreachable!("the silent peer sends no request")
    }

    async fn write_request<T: Write>(&mut self, _: &Proto, _: &mut T, _: ()) -> io::Result<()> {
        unreachable!("the silent peer sends no request")
    }

    async fn write_response<T: Write>(&mut self, _: &Proto, _: &mut T, _: ()) -> io::Result<()> {
        unreachable!("the silent peer never answers")
    }
}

fn silent_behaviour(key: &libp2p::identity::Keypair, silence: Silence) -> Silent {
    let local = key.public().to_peer_id();
    // Its own side of a request never gives up before the test is over.
    let patient = request_response::Config::default().with_request_timeout(SILENT_FOR);
    let (kad, kad_unanswered) = match silence {
        Silence::Provide => {
            let mut kad = kad::Behaviour::with_config(
                local,
                kad::store::MemoryStore::new(local),
                kad::Config::new(KAD_PROTOCOL),
            );
            kad.set_mode(Some(kad::Mode::Server));
            (Some(kad), None)
        }
        Silence::ProvideAndKademlia => {
            let unanswered = request_response::Behaviour::with_codec(
                Unanswered,
                [(KAD_PROTOCOL, ProtocolSupport::Inbound)],
                patient.clone(),
            );
            (None, Some(unanswered))
        }
    };
    Silent {
        kad: kad.into(),
        kad_unanswered: kad_unanswered.into(),
        identify: identify::Behaviour::new(identify::Config::new(
            "/ron/1.0.0".into(),
            key.public(),
        )),
        ping: ping::Behaviour::default(),
        provide: request_response::Behaviour::with_codec(
            ProvideCodec::default(),
            [(protocol::PROTOCOL, ProtocolSupport::Full)],
            patient,
        ),
    }
}

/// What the silent peer left unanswered: per `/ron/provide/2` request, when it came,
/// from whom (base58 id) and whether it carried keys (else a greeting); per Kademlia
/// request, when it came.
struct Heard {
    provide: mpsc::Receiver<(Instant, String, bool)>,
    kad: mpsc::Receiver<Instant>,
}

/// Starts the silent peer on its own thread: it answers identify and ping like any
/// peer, takes every request `silence` names (greetings included) and never answers
/// one. Returns where it listens and what it heard.
fn spawn_silent_peer(silence: Silence) -> (SocketAddr, Heard) {
    let (listening_tx, listening) = mpsc::channel();
    let (provide_tx, provide) = mpsc::channel();
    let (kad_tx, kad) = mpsc::channel();
    on_own_thread(move || async move {
        let mut swarm = loopback_swarm(|key| silent_behaviour(key, silence), SILENT_FOR);
        let mut held_provides = Vec::new();
        let mut held_kad = Vec::new();
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
                SwarmEvent::Behaviour(SilentEvent::Provide(request_response::Event::Message {
                    peer,
                    message:
                        request_response::Message::Request {
                            request, channel, ..
                        },
                    ..
                })) => {
                    let heard = (Instant::now(), peer.to_base58(), !request.keys.is_empty());
                    let _ = provide_tx.send(heard);
                    held_provides.push(channel);
                }
                SwarmEvent::Behaviour(SilentEvent::KadUnanswered(
                    request_response::Event::Message {
                        message: request_response::Message::Request { channel, .. },
                        ..
                    },
                )) => {
                    let _ = kad_tx.send(Instant::now());
                    held_kad.push(channel);
                }
                _ => {}
            }
        }
    });
    let listen = listening.recv_timeout(WAIT).unwrap();
    (listen, Heard { provide, kad })
}

/// A publisher, three peers that answer, and the silent peer; the publisher knows all
/// four. Returns the publisher first.
fn network(name: &str, silent: SocketAddr) -> (DhtThread, Vec<DhtThread>, Vec<PathBuf>) {
    let dirs: Vec<PathBuf> = (0..4)
        .map(|i| scratch("silent", &format!("{name}-n{i}")))
        .collect();
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
    (publisher, others, dirs)
}

fn stop(publisher: DhtThread, others: Vec<DhtThread>, dirs: Vec<PathBuf>) {
    publisher.stop();
    for node in others {
        node.stop();
    }
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Announces [`KEYS`] keys on `publisher` (one batch: optimistic provide sends each key
/// early to two peers at most, so the silent peer gets some of them from the lookup's
/// own sends) and returns when they were announced and when all were published.
fn publish(publisher: &DhtThread) -> (Instant, Instant) {
    let metrics = &publisher.client.metrics;
    let before = metrics.keys_published_total.load(Ordering::Relaxed);
    let keys: Vec<[u8; 32]> = (1..=KEYS).map(|i| [i; 32]).collect();
    let announced = Instant::now();
    publisher.client.announce(keys);
    let published = wait_for("the batch's keys to be published", || {
        metrics.keys_published_total.load(Ordering::Relaxed) >= before + u64::from(KEYS)
    });
    let failures = metrics.publish_failures_total.load(Ordering::Relaxed);
    assert_eq!(
        failures, 0,
        "no batch failed: the other peers took every key"
    );
    (announced, published)
}

#[test]
fn a_peer_that_never_answers_a_provide_does_not_hold_the_publication() {
    let (silent, heard) = spawn_silent_peer(Silence::Provide);
    let (publisher, others, dirs) = network("provide", silent);
    let (_, published) = publish(&publisher);
    let from_publisher = publisher.client.node_id.to_string();
    let held = std::cell::Cell::new(0u64);
    let take = |heard: (Instant, String, bool)| -> Option<Instant> {
        let (at, from, keys) = heard;
        if from != from_publisher {
            return None;
        }
        held.set(held.get() + 1);
        keys.then_some(at)
    };
    let first_silent = loop {
        let heard = heard
            .provide
            .recv_timeout(WAIT)
            .expect("the silent peer, among every key's closest, got a request with keys");
        if let Some(at) = take(heard) {
            break at;
        }
    };
    assert!(
        published < first_silent + QUERY_TIMEOUT,
        "the keys were published {:?} after the silent peer got its request: the batch \
         waited for the request's timeout ({QUERY_TIMEOUT:?})",
        published.saturating_duration_since(first_silent)
    );
    println!(
        "published {:?} after the silent peer's first request",
        published.saturating_duration_since(first_silent)
    );
    // Every request the silent peer holds (greetings and keys) is given up at its
    // timeout, and counted.
    wait_for(
        "the silent peer's requests to be given up and counted",
        || {
            heard.provide.try_iter().for_each(|h| {
                take(h);
            });
            let failed = publisher
                .client
                .metrics
                .provide_requests_failed_total
                .load(Ordering::Relaxed);
            failed >= held.get()
        },
    );
    stop(publisher, others, dirs);
}

#[test]
fn a_peer_that_never_answers_kademlia_holds_a_lookup_for_the_request_timeout_only() {
    let (silent, heard) = spawn_silent_peer(Silence::ProvideAndKademlia);
    let (publisher, others, dirs) = network("kad", silent);
    let (announced, published) = publish(&publisher);
    let took = published - announced;
    assert!(
        heard.kad.try_iter().count() > 0,
        "the silent peer was asked by the lookups"
    );
    // The batch's lookup needs an answer from every peer of this small network: from the
    // silent one it waits KAD_REQUEST_TIMEOUT, not the query's whole timeout.
    assert!(
        took < QUERY_TIMEOUT,
        "the keys were published {took:?} after their announcement: the lookup waited for \
         the silent peer until the query's timeout ({QUERY_TIMEOUT:?}), not \
         {KAD_REQUEST_TIMEOUT:?}"
    );
    println!("published {took:?} after the announcement (a Kademlia request gives up after {KAD_REQUEST_TIMEOUT:?})");
    stop(publisher, others, dirs);
}

/// A node whose only bootstrap peer takes its Kademlia requests and never answers (a
/// peer too busy to answer in time reads the same) has a join lookup that failed and a
/// routing table of one: it looks again, with waits that grow, rather than keeping what
/// it has until its first refresh, ten minutes on. A node whose join lookup was answered
/// in full looks once, however small the network.
#[test]
fn a_join_lookup_that_failed_is_run_again_and_one_answered_in_full_is_not() {
    let (silent, heard) = spawn_silent_peer(Silence::ProvideAndKademlia);
    let dirs: Vec<PathBuf> = ["joiner", "first", "second"]
        .iter()
        .map(|name| scratch("silent", &format!("join-{name}")))
        .collect();
    let joiner = start(&dirs[0], 7200, &[silent]);
    let first = start(&dirs[1], 7201, &[]);
    let second = start(&dirs[2], 7202, &[first.listen]);
    let lookups = |node: &DhtThread| {
        node.client
            .metrics
            .join_lookups_total
            .load(Ordering::Relaxed)
    };
    // The first lookup waits KAD_REQUEST_TIMEOUT for the silent peer at each of its steps,
    // then the next starts 1–2 s after it ends.
    let began = Instant::now();
    wait_for("the joiner's first join lookup", || lookups(&joiner) >= 1);
    wait_for("the joiner's second join lookup", || lookups(&joiner) >= 2);
    let second_after = began.elapsed();
    // Each lookup's request reaches the silent peer a moment after the lookup starts.
    let asked = std::cell::Cell::new(0);
    wait_for("the silent peer to be asked by both lookups", || {
        asked.set(asked.get() + heard.kad.try_iter().count());
        asked.get() >= 2
    });
    let second_knows_first = || {
        let table = &second.client.metrics.routing_table_peers;
        table.load(Ordering::Relaxed) == 1 && lookups(&second) >= 1
    };
    wait_for(
        "the second node to know the first and to have looked",
        second_knows_first,
    );
    assert_eq!(
        lookups(&second),
        1,
        "the answered join lookup was run again"
    );
    println!("the joiner's second join lookup started {second_after:?} after the joiner did");
    for node in [joiner, first, second] {
        node.stop();
    }
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}
