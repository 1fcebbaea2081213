//! A peer that opens yamux streams and fills them before their protocol is settled costs
//! the node little memory. yamux keeps each received frame as an allocation of its own,
//! about 64 bytes for a one-byte frame, and a stream's 256 KiB window lets a peer send
//! 262,144 of them; libp2p's swarm negotiated 128 streams at a time and left up to 256
//! more queued in libp2p-yamux, each buffering what it had been sent until its turn. A
//! peer that stalled 128 negotiations (a byte each, then silence, for their 10 s) and
//! filled the queued streams with one-byte frames made the node hold about 16 MiB a
//! stream. A ron node (the real binary) and a peer of the test's own: TCP, noise and
//! yamux from libp2p, yamux driven by hand to send one-byte frames; every wait bounded.

mod common;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::*;
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p::core::transport::{DialOpts, PortUse, Transport};
use libp2p::core::upgrade::{
    InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo, Version,
};
use libp2p::core::Endpoint;
use libp2p::futures::future::{self, poll_fn};
use libp2p::futures::{AsyncRead, AsyncWrite, FutureExt};
use libp2p::{Multiaddr, StreamProtocol};

/// Streams whose negotiation the peer stalls: as many as the swarm negotiated at once.
const STALLED: usize = 128;
/// Streams opened after those (under yamux's backlog of 256 unacknowledged streams).
const QUEUED: usize = 120;
/// One-byte frames sent on each queued stream.
const FRAMES_PER_STREAM: usize = 16_384;
/// What every stream is sent: bytes that each say "more of this varint follows".
const CONTINUED_VARINT: [u8; 4_096] = [0x80; 4_096];
/// What the node may grow by while it holds them: far below the ~120 MiB that
/// 120 × 16,384 one-byte frames took queued.
const GROWTH_MAX_KIB: u64 = 40 << 10;

/// The connection after noise, with yamux's protocol agreed but no muxer over it: a
/// "muxer" that only hands the socket back, so that the test drives yamux itself.
#[derive(Debug, Clone)]
struct RawYamux;

struct RawSocket<C>(C);

impl<C: AsyncRead + AsyncWrite + Unpin> StreamMuxer for RawSocket<C> {
    type Substream = C;
    type Error = std::io::Error;
    fn poll_inbound(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<C>> {
        Poll::Pending
    }
    fn poll_outbound(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<C>> {
        Poll::Pending
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<StreamMuxerEvent>> {
        Poll::Pending
    }
}

impl UpgradeInfo for RawYamux {
    type Info = StreamProtocol;
    type InfoIter = std::iter::Once<StreamProtocol>;
    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once(StreamProtocol::new("/yamux/1.0.0"))
    }
}

impl<C: Send + 'static> OutboundConnectionUpgrade<C> for RawYamux {
    type Output = RawSocket<C>;
    type Error = std::io::Error;
    type Future = future::Ready<std::io::Result<RawSocket<C>>>;
    fn upgrade_outbound(self, socket: C, _: StreamProtocol) -> Self::Future {
        future::ready(Ok(RawSocket(socket)))
    }
}

impl<C: Send + 'static> InboundConnectionUpgrade<C> for RawYamux {
    type Output = RawSocket<C>;
    type Error = std::io::Error;
    type Future = future::Ready<std::io::Result<RawSocket<C>>>;
    fn upgrade_inbound(self, socket: C, _: StreamProtocol) -> Self::Future {
        future::ready(Ok(RawSocket(socket)))
    }
}

/// One stream's bytes still to send.
struct Sending {
    stream: yamux::Stream,
    left: usize,
}

/// Dials `p2p` and runs the flood; calls `measure` while the streams are held open, and
/// returns what it returned.
async fn flood(p2p: Multiaddr, measure: impl FnOnce() -> u64 + Send + 'static) -> u64 {
    let key = libp2p::identity::Keypair::generate_ed25519();
    let mut transport = libp2p::tcp::tokio::Transport::new(libp2p::tcp::Config::default())
        .upgrade(Version::V1)
        .authenticate(libp2p::noise::Config::new(&key).unwrap())
        .multiplex(RawYamux);
    let opts = DialOpts {
        role: Endpoint::Dialer,
        port_use: PortUse::New,
    };
    let (_, RawSocket(socket)) = transport.dial(p2p, opts).unwrap().await.unwrap();
    let mut config = yamux::Config::default();
    // Every byte its own frame.
    config.set_split_send_size(1);
    let mut connection = yamux::Connection::new(socket, config, yamux::Mode::Client);
    let mut sending: Vec<Sending> = Vec::new();
    let drive = poll_fn(|cx| {
        while let Poll::Ready(Some(Ok(inbound))) = connection.poll_next_inbound(cx) {
            drop(inbound);
        }
        while sending.len() < STALLED + QUEUED {
            match connection.poll_new_outbound(cx) {
                Poll::Ready(Ok(stream)) => {
                    // A varint's first byte, more to come: the negotiation waits.
                    let left = match sending.len() < STALLED {
                        true => 1,
                        false => FRAMES_PER_STREAM,
                    };
                    sending.push(Sending { stream, left });
                }
                Poll::Ready(Err(e)) => panic!("opening a stream: {e}"),
                Poll::Pending => return Poll::Pending,
            }
        }
        let mut done = true;
        for s in sending.iter_mut() {
            while s.left > 0 {
                let bytes = &CONTINUED_VARINT[..s.left.min(CONTINUED_VARINT.len())];
                match Pin::new(&mut s.stream).poll_write(cx, bytes) {
                    Poll::Ready(Ok(n)) => s.left -= n,
                    // The node reset it (a failed negotiation): nothing more to send.
                    Poll::Ready(Err(_)) => s.left = 0,
                    Poll::Pending => break,
                }
            }
            done &= s.left == 0;
        }
        match done {
            true => Poll::Ready(()),
            false => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(60), drive)
        .await
        .expect("the flood was sent within 60 s");
    // Keep the connection moving while the node is measured.
    let (measured_tx, measured) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = measured_tx.send(measure());
    });
    let keep = poll_fn(|cx| {
        while let Poll::Ready(Some(Ok(inbound))) = connection.poll_next_inbound(cx) {
            drop(inbound);
        }
        Poll::<()>::Pending
    });
    futures_select(measured, keep).await
}

async fn futures_select(
    measured: tokio::sync::oneshot::Receiver<u64>,
    keep: impl std::future::Future<Output = ()>,
) -> u64 {
    let mut measured = measured.fuse();
    let mut keep = Box::pin(keep.fuse());
    libp2p::futures::select! {
        m = measured => m.expect("measured"),
        _ = keep => unreachable!("keeping never ends"),
    }
}

#[test]
fn streams_filled_before_their_protocol_is_settled_cost_the_node_little_memory() {
    let p2p = free_port();
    let n = Node::start(
        &temp_dir("stream-flood"),
        &["--shards", "1", "--p2p", &format!("127.0.0.1:{p2p}")],
    );
    let pid = n.pid();
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(pid);
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{p2p}").parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let peak = runtime.block_on(flood(addr, move || {
        // The queued streams' frames, held for as long as the stalled negotiations last
        // (10 s): the highest resident memory over 3 s.
        let until = Instant::now() + Duration::from_secs(3);
        let mut peak = 0;
        while Instant::now() < until {
            peak = peak.max(rss_kib(pid));
            std::thread::sleep(Duration::from_millis(50));
        }
        peak
    }));
    let grew = peak.saturating_sub(before);
    eprintln!(
        "stream flood: {} streams ({STALLED} stalled, {QUEUED} × {FRAMES_PER_STREAM} one-byte \
         frames) in {:?}; node RSS {before} KiB before, {peak} KiB at most while held \
         (+{grew} KiB)",
        STALLED + QUEUED,
        started.elapsed()
    );
    assert!(
        grew <= GROWTH_MAX_KIB,
        "the node grew by {grew} KiB holding the flood's streams (at most {GROWTH_MAX_KIB})"
    );
    assert_eq!(get(n.admin, "/healthz").unwrap().status, 200);
}
