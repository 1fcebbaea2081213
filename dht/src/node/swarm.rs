//! The libp2p side of the DHT thread: one `Swarm` over TCP + noise + yamux (each TCP
//! connection with keepalive probes and a bound on unacknowledged data, so the kernel
//! sees a peer cut off), whose behaviour is the connection limits (in all, per peer, and
//! per host: [`HostLimits`]), the connections kept
//! while idle ([`KeptConnections`]), Kademlia (α = 3, k = [`K_VALUE`], its own
//! protocol name [`KAD_PROTOCOL`], server mode, records in the LMDB
//! [`ProviderStore`], its dials' addresses bounded: [`BoundedKad`]), `/ron/provide/2` ([`crate::protocol`]), `/ron/replicate/1`
//! ([`crate::replicate`]), and libp2p's identify
//! (`/ipfs/id/1.0.0`) and ping (`/ipfs/ping/1.0.0`), which standard libp2p peers
//! require before they trust a peer, and which tell this node who is alive. Streams are
//! negotiated lazily (`V1Lazy`): a request goes with its protocol's name, a round trip
//! less each (docs/design/dht.md, "Where it runs").

use std::num::{NonZeroU8, NonZeroUsize};

use libp2p::core::Transport;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{identify, kad, ping};
use libp2p::{PeerId, Swarm};

use crate::error::DhtError;
use crate::network_key::NetworkKey;
use crate::node::config::{
    CONNECTIONS_PER_PEER_MAX, DIAL_ADDRESSES_AT_ONCE, IDENTIFY_PROTOCOL_VERSION,
    IDLE_CONNECTION_TIMEOUT, INBOUND_CONNECTIONS_MAX, KAD_PROTOCOL, KAD_REQUEST_TIMEOUT, K_VALUE,
    OUTBOUND_CONNECTIONS_MAX, PENDING_INBOUND_MAX, PENDING_OUTBOUND_MAX, PING_INTERVAL,
    PING_TIMEOUT, PROVIDER_TTL, QUERY_TIMEOUT, REPLICATE_REQUEST_TIMEOUT,
    STREAMS_PER_CONNECTION_MAX, TCP_KEEPALIVE_IDLE, TCP_KEEPALIVE_INTERVAL, TCP_USER_TIMEOUT,
};
use crate::node::host_limits::HostLimits;
use crate::node::kad_dials::BoundedKad;
use crate::node::kept::KeptConnections;
use crate::protocol::ProvideCodec;
use crate::replicate::ReplicateCodec;
use crate::store::ProviderStore;
use crate::wire::{ReadBudget, MESSAGES_READING_BYTES_MAX};

#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    pub(super) limits: libp2p::connection_limits::Behaviour,
    pub(super) hosts: HostLimits,
    pub(super) kept: KeptConnections,
    pub(super) kad: BoundedKad,
    pub(super) provide: request_response::Behaviour<ProvideCodec>,
    pub(super) replicate: request_response::Behaviour<ReplicateCodec>,
    pub(super) identify: identify::Behaviour,
    pub(super) ping: ping::Behaviour,
}

/// The swarm: TCP, the private network's handshake when there is a `network_key`
/// (`network_key.rs`), noise, yamux.
pub(super) fn build_swarm(
    keypair: libp2p::identity::Keypair,
    store: ProviderStore,
    network_key: Option<NetworkKey>,
) -> Result<Swarm<Behaviour>, DhtError> {
    let start = |what: &str, e: &dyn std::fmt::Display| DhtError::Start(format!("{what}: {e}"));
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(
            |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                Ok(
                    libp2p::tcp::tokio::Transport::new(
                        libp2p::tcp::Config::default().nodelay(true),
                    )
                    .map(|stream, _| {
                        watch_liveness(&stream);
                        stream
                    })
                    .and_then(move |stream, _| private_network(stream, network_key))
                    .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                    .authenticate(libp2p::noise::Config::new(key)?)
                    .multiplex(yamux_config()),
                )
            },
        )
        .map_err(|e| start("transport", &e))?
        .with_behaviour(|key| behaviour(key.public(), store))
        .map_err(|e| start("behaviour", &e))?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT)
                .with_dial_concurrency_factor(
                    NonZeroU8::new(DIAL_ADDRESSES_AT_ONCE).expect("at least one address"),
                )
                .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
                .with_max_negotiating_inbound_streams(STREAMS_PER_CONNECTION_MAX)
        })
        .build();
    Ok(swarm)
}

/// yamux with its stream limit stated ([`STREAMS_PER_CONNECTION_MAX`]).
fn yamux_config() -> libp2p::yamux::Config {
    let mut config = libp2p::yamux::Config::default();
    config.set_max_num_streams(STREAMS_PER_CONNECTION_MAX);
    config
}

/// With a network key, the pnet handshake on a new connection (bounded by the builder's
/// connection timeout, 10 s, like the rest of the handshake); without one, the stream
/// as is.
async fn private_network(
    stream: libp2p::tcp::tokio::TcpStream,
    network_key: Option<NetworkKey>,
) -> Result<
    futures::future::Either<
        libp2p::pnet::PnetOutput<libp2p::tcp::tokio::TcpStream>,
        libp2p::tcp::tokio::TcpStream,
    >,
    std::io::Error,
> {
    use futures::future::Either;
    match network_key {
        Some(key) => libp2p::pnet::PnetConfig::new(key.pre_shared_key())
            .handshake(stream)
            .await
            .map(Either::Left)
            .map_err(std::io::Error::other),
        None => Ok(Either::Right(stream)),
    }
}

/// Keepalive probes and a bound on unacknowledged data for one TCP connection
/// (config: [`TCP_KEEPALIVE_IDLE`], [`TCP_USER_TIMEOUT`]). A socket that refuses them is
/// still used: its loss is then ping's to see, as before.
fn watch_liveness(stream: &libp2p::tcp::tokio::TcpStream) {
    let socket = socket2::SockRef::from(&stream.0);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE_IDLE)
        .with_interval(TCP_KEEPALIVE_INTERVAL);
    let set = socket
        .set_tcp_keepalive(&keepalive)
        .and_then(|()| socket.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT)));
    if let Err(e) = set {
        tracing::debug!("dht: TCP keepalive not set: {e}");
    }
}

fn behaviour(public: libp2p::identity::PublicKey, store: ProviderStore) -> Behaviour {
    let local: PeerId = public.to_peer_id();
    let mut kad_config = kad::Config::new(KAD_PROTOCOL);
    kad_config
        .set_parallelism(NonZeroUsize::new(3).expect("3 > 0"))
        .set_replication_factor(NonZeroUsize::new(K_VALUE).expect("k > 0"))
        .set_query_timeout(QUERY_TIMEOUT)
        .set_substreams_timeout(KAD_REQUEST_TIMEOUT)
        .set_provider_record_ttl(Some(PROVIDER_TTL))
        .set_provider_publication_interval(None)
        .set_record_ttl(None)
        .set_replication_interval(None)
        .set_publication_interval(None)
        // The routing table is refreshed on the node's own jittered schedule
        // (config::ROUTING_REFRESH, refresh.rs); a refresh when the table is short and
        // the first bootstrap stay libp2p-kad's.
        .set_periodic_bootstrap_interval(None);
    let mut kad = kad::Behaviour::with_config(local, store, kad_config);
    // Every ron node serves the DHT: without this, a node that has confirmed no
    // external address (any node on a private network) would be a client only.
    kad.set_mode(Some(kad::Mode::Server));
    // Messages being read on /ron/provide/2 and /ron/replicate/1 share one budget.
    let read_budget = ReadBudget::new(MESSAGES_READING_BYTES_MAX);
    let limits = libp2p::connection_limits::ConnectionLimits::default()
        .with_max_established_incoming(Some(INBOUND_CONNECTIONS_MAX))
        .with_max_pending_incoming(Some(PENDING_INBOUND_MAX))
        .with_max_established_outgoing(Some(OUTBOUND_CONNECTIONS_MAX))
        .with_max_pending_outgoing(Some(PENDING_OUTBOUND_MAX))
        .with_max_established_per_peer(Some(CONNECTIONS_PER_PEER_MAX));
    Behaviour {
        limits: libp2p::connection_limits::Behaviour::new(limits),
        hosts: HostLimits::default(),
        kept: KeptConnections::new(local),
        kad: BoundedKad::new(kad),
        provide: request_response::Behaviour::with_codec(
            ProvideCodec::with_budget(read_budget.clone()),
            [(crate::protocol::PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(QUERY_TIMEOUT)
                .with_max_concurrent_streams(64),
        ),
        replicate: request_response::Behaviour::with_codec(
            ReplicateCodec::with_budget(read_budget),
            [(crate::replicate::PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(REPLICATE_REQUEST_TIMEOUT)
                .with_max_concurrent_streams(64),
        ),
        identify: identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL_VERSION.into(), public)
                .with_agent_version(concat!("ron/", env!("CARGO_PKG_VERSION")).into())
                .with_cache_size(0),
        ),
        ping: ping::Behaviour::new(
            ping::Config::new()
                .with_interval(PING_INTERVAL)
                .with_timeout(PING_TIMEOUT),
        ),
    }
}
