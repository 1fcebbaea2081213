//! A peer that greets a node again and again, each time claiming another libp2p port,
//! does not grow what the node's Kademlia knows of it: every answer naming the peer
//! carried every address it had claimed, and past a few hundred the answers outgrew
//! what receivers read (16 KiB) — the lookups and resolves that went through the node
//! failed. A ron node, a second one that resolves through it, and the flooding peer (a
//! libp2p peer of the test's own); on loopback, in one process, every wait bounded.

mod common;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, Multiaddr};
use ron_dht::node::KAD_ADDRESSES_PER_PEER_MAX;
use ron_dht::protocol::{self, Ports, ProvideCodec, ProvideRequest};

use common::{loopback_swarm, on_own_thread, scratch, start, WAIT};

/// Greetings the flooding peer sends, each with a port of its own.
const GREETINGS: u16 = 600;
/// Its greetings on their way at once.
const IN_FLIGHT_MAX: u16 = 16;
/// How long it runs: past every wait of the test, and bounded.
const FLOODS_FOR: Duration = Duration::from_secs(60);

#[derive(NetworkBehaviour)]
struct Flooder {
    identify: identify::Behaviour,
    provide: request_response::Behaviour<ProvideCodec>,
}

/// Starts the flooding peer: it dials `node` and greets it [`GREETINGS`] times, each
/// greeting claiming another p2p port. Returns once every greeting was answered.
fn flood(node: SocketAddr) {
    let (done_tx, done) = mpsc::channel();
    on_own_thread(move || async move {
        let mut swarm = loopback_swarm(
            |key| Flooder {
                identify: identify::Behaviour::new(identify::Config::new(
                    "/ron/1.0.0".into(),
                    key.public(),
                )),
                provide: request_response::Behaviour::with_codec(
                    ProvideCodec::default(),
                    [(protocol::PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default(),
                ),
            },
            FLOODS_FOR,
        );
        let target = Multiaddr::empty()
            .with(Protocol::from(node.ip()))
            .with(Protocol::Tcp(node.port()));
        swarm.dial(target).unwrap();
        let (mut sent, mut answered) = (0u16, 0u16);
        let end = tokio::time::sleep(FLOODS_FOR);
        tokio::pin!(end);
        loop {
            let event = tokio::select! {
                event = swarm.select_next_some() => event,
                _ = &mut end => return,
            };
            let peer = match event {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => peer_id,
                SwarmEvent::Behaviour(FlooderEvent::Provide(
                    request_response::Event::Message {
                        peer,
                        message: request_response::Message::Response { .. },
                        ..
                    },
                )) => {
                    answered += 1;
                    peer
                }
                _ => continue,
            };
            if answered == GREETINGS {
                let _ = done_tx.send(());
                continue;
            }
            while sent < GREETINGS && sent - answered < IN_FLIGHT_MAX {
                let greeting = ProvideRequest {
                    ports: Ports {
                        p2p: 20_000 + sent,
                        oap: 9,
                    },
                    zone: String::new(),
                    keys: Vec::new(),
                };
                swarm.behaviour_mut().provide.send_request(&peer, greeting);
                sent += 1;
            }
        }
    });
    done.recv_timeout(WAIT)
        .expect("the node answered every greeting");
}

#[test]
fn a_peer_claiming_port_after_port_does_not_break_lookups_through_the_node() {
    const { assert!(GREETINGS as usize > 100 * KAD_ADDRESSES_PER_PEER_MAX) };
    let dirs = [scratch("address-flood", "a"), scratch("address-flood", "b")];
    let a = start(&dirs[0], 7301, &[]);
    let object = [0x77; 32];
    a.client.announce(vec![object]);
    flood(a.listen);
    let b = start(&dirs[1], 7302, &[a.listen]);
    let a_id = a.client.node_id.to_string();
    let mut found = Vec::new();
    for _ in 0..20 {
        found = b.client.resolve(object, 16, 2_000).unwrap_or_default();
        if found.iter().any(|p| p.node_id == a_id) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        found.iter().any(|p| p.node_id == a_id),
        "resolved through the node the peer flooded: {found:?}"
    );
    b.stop();
    a.stop();
    for dir in dirs {
        std::fs::remove_dir_all(dir).unwrap();
    }
}
