//! A peer that sends `/ron/provide/2` batches as fast as the node answers them has its
//! keys stored at its sender's rate, not at whatever pace it likes: each batch costs
//! the node's DHT thread tens of milliseconds, and that thread answers every lookup and
//! resolve. Another sender keeps a budget of its own. A ron node and two libp2p peers of
//! the test's own, on loopback (where a sender is a peer id), every wait bounded.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::Multiaddr;
use ron_dht::node::{
    record_key, PROVIDED_KEYS_BURST_PER_SENDER, PROVIDED_KEYS_PER_SECOND_PER_SENDER,
};
use ron_dht::protocol::{self, Ports, ProvideCodec, ProvideRequest, PROVIDE_KEYS_MAX};

use common::{loopback_swarm, on_own_thread, scratch, start, WAIT};

const PER_SECOND: u64 = PROVIDED_KEYS_PER_SECOND_PER_SENDER;
const BURST: u64 = PROVIDED_KEYS_BURST_PER_SENDER;
/// Batches the flooding peer sends: five times its burst.
const FLOOD_BATCHES: u32 = 80;
/// Its batches on their way at once.
const IN_FLIGHT_MAX: u32 = 16;

/// What a sender's batches came to: keys sent, keys the node answered stored, how long
/// from the first batch to the last answer.
struct Sent {
    keys: u64,
    stored: u64,
    took: Duration,
}

/// A libp2p peer of the test's own dials `node` and sends it `batches` batches of
/// [`PROVIDE_KEYS_MAX`] made-up object keys (`seed` makes them its own), at most
/// [`IN_FLIGHT_MAX`] unanswered; returns once every batch was answered.
fn send_batches(node: SocketAddr, seed: u8, batches: u32) -> Sent {
    let (done_tx, done) = mpsc::channel();
    on_own_thread(move || async move {
        let mut swarm = loopback_swarm(
            |_| {
                request_response::Behaviour::with_codec(
                    ProvideCodec::default(),
                    [(protocol::PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(60))
                        .with_max_concurrent_streams(IN_FLIGHT_MAX as usize),
                )
            },
            WAIT,
        );
        let target = Multiaddr::empty()
            .with(Protocol::from(node.ip()))
            .with(Protocol::Tcp(node.port()));
        swarm.dial(target).unwrap();
        let batch = |n: u32| ProvideRequest {
            ports: Ports { p2p: 9, oap: 9 },
            zone: String::new(),
            keys: (0..PROVIDE_KEYS_MAX as u32)
                .map(|i| {
                    let mut made_up = blake3::Hasher::new();
                    made_up.update(&[seed]);
                    made_up.update(&n.to_le_bytes());
                    made_up.update(&i.to_le_bytes());
                    record_key(made_up.finalize().as_bytes())
                })
                .collect(),
        };
        let (mut sent, mut answered, mut stored) = (0u32, 0u32, 0u64);
        let mut started = None;
        let end = tokio::time::sleep(WAIT * 2);
        tokio::pin!(end);
        loop {
            let event = tokio::select! {
                event = swarm.select_next_some() => event,
                _ = &mut end => return,
            };
            let peer = match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => peer_id,
                SwarmEvent::Behaviour(request_response::Event::Message {
                    peer,
                    message: request_response::Message::Response { response, .. },
                    ..
                }) => {
                    answered += 1;
                    stored += u64::from(response.stored);
                    peer
                }
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    error, ..
                }) => panic!("a batch failed: {error}"),
                _ => continue,
            };
            if answered == batches {
                let took = started.map_or(Duration::ZERO, |s: Instant| s.elapsed());
                let keys = u64::from(batches) * PROVIDE_KEYS_MAX as u64;
                let _ = done_tx.send(Sent { keys, stored, took });
                return;
            }
            while sent < batches && sent - answered < IN_FLIGHT_MAX {
                started.get_or_insert_with(Instant::now);
                swarm.behaviour_mut().send_request(&peer, batch(sent));
                sent += 1;
            }
        }
    });
    done.recv_timeout(WAIT * 2)
        .expect("the node answered every batch")
}

#[test]
fn a_peer_flooding_provides_is_stored_at_its_rate_and_another_keeps_its_own() {
    let dir = scratch("provide-flood", "a");
    let a = start(&dir, 7311, &[]);
    let flood = send_batches(a.listen, 1, FLOOD_BATCHES);
    let allowed = BURST + PER_SECOND * (flood.took.as_millis() as u64 + 999) / 1_000;
    assert!(
        flood.stored >= BURST && flood.stored <= allowed,
        "the flood had {} of {} keys stored in {:?}: its burst ({BURST}) and its rate \
         ({PER_SECOND} a second) allow {allowed}",
        flood.stored,
        flood.keys,
        flood.took
    );
    let throttled = a
        .client
        .metrics
        .provided_keys_throttled_total
        .load(Ordering::Relaxed);
    assert_eq!(throttled, flood.keys - flood.stored);
    // Another sender has its own budget: four batches, stored whole.
    let other = send_batches(a.listen, 2, 4);
    assert_eq!(other.stored, other.keys, "the second sender's keys");
    a.stop();
    std::fs::remove_dir_all(dir).unwrap();
}
