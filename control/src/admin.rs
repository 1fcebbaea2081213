//! The admin HTTP server. An acceptor thread polls a non-blocking listener and hands
//! each connection to its own short-lived thread, at most [`ADMIN_CONNECTIONS_MAX`] at
//! once. When all are taken, those that have not sent a whole head within
//! [`ADMIN_CROWDED_HEAD_MS`] are closed to make room, and the newcomer waits up to
//! [`ADMIN_CROWDED_WAIT_MS`] for it; only then is it answered 503 and closed. A
//! connection gets one answer and is closed: its complete head must arrive within
//! [`ADMIN_HEAD_TIMEOUT_MS`] of the accept (each read waits only for the time left, so
//! trickling bytes buys nothing) and within [`ADMIN_HEAD_BYTES_MAX`], and its answer
//! must be written within [`ADMIN_WRITE_TIMEOUT_MS`]. A request that waits on a shard
//! or the DHT holds its thread up to its own wait (a repair check 60 s), and at most
//! [`ADMIN_WAITING_MAX`] do at once (past it: 503 at once). So one slow client costs one
//! thread for a bounded time and never delays another client, a probe or the control
//! thread.
//!
//! Answers read the shards' atomic counters and the control thread's latest
//! [`Published`](crate::view::Published) copy; no lock is held during socket I/O.

mod connection;
mod routes;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ron_codec::Address;
use ron_link::counters::ShardCounters;
use ron_link::dht::{DhtClient, ReplicationRoutes};
use ron_link::link::Mailboxes;

use crate::prometheus::Scrapes;
use crate::view::Board;
use connection::serve;
use routes::Reply;

/// Admin connections served at once. Each costs a thread and ≤ 8 KiB of head for at
/// most its head, write and linger deadlines (≤ 4.2 s) and what its answer waits on (see
/// [`ADMIN_WAITING_MAX`]); past this a client is answered
/// 503 at once, so a flood of slow clients costs bounded threads and memory and a probe
/// still gets a fast, clear answer.
pub const ADMIN_CONNECTIONS_MAX: usize = 64;
// Each admin connection waits for the answer to its one operator request before it
// sends another, so every one of them fits in a shard's inbox at once.
const _: () = assert!(ADMIN_CONNECTIONS_MAX < ron_link::link::INBOX_LEN);
const _: () = assert!(ADMIN_WAITING_MAX < ADMIN_CONNECTIONS_MAX);
/// Admin requests waiting on a shard or the DHT at once (the operator's storage requests,
/// `/resolve`, `/admin/placement`; each holds its thread up to its wait, a repair check
/// 60 s, a replication about two minutes): past it one is answered 503 at once, so a
/// quarter of the threads are always left for probes and the reads that answer at once.
pub const ADMIN_WAITING_MAX: usize = 48;
/// Largest request head: an admin request is a request line and a few headers.
pub const ADMIN_HEAD_BYTES_MAX: usize = 8 * 1024;
/// From accept to a complete request head. A whole-head deadline, not a per-read
/// timeout, so a client trickling bytes cannot hold a connection longer; probes send
/// their head in one packet, far inside it.
pub const ADMIN_HEAD_TIMEOUT_MS: u64 = 2_000;
/// The longest an admin thread waits for the owner shard's check of one object
/// (`POST /admin/repair/b3:<hex>`): reading a 64 GiB object at device speed takes about
/// this; past it the answer is 504 and the check goes on (its repairs show in metrics).
pub const ADMIN_REPAIR_WAIT_MS: u64 = 60_000;
/// The longest an admin thread waits for the owner shard's removal of one object's copy
/// (`POST /admin/remove/b3:<hex>`): a durable commit of its new state and the files'
/// removal, behind whatever the shard's storage is doing.
pub const ADMIN_REMOVE_WAIT_MS: u64 = 30_000;
/// To write a whole answer (the largest, `/metrics`, is tens of KiB).
pub const ADMIN_WRITE_TIMEOUT_MS: u64 = 2_000;
/// How long the acceptor backs off after a failed accept (e.g. out of descriptors), and
/// how often the stopping acceptor looks whether its connections have ended.
pub const ADMIN_ACCEPT_POLL_MS: u64 = 10;
/// The longest single read wait, so a connection thread notices a stop this soon.
pub const ADMIN_STOP_POLL_MS: u64 = 100;
/// After an answer, how long what the client still sends is read and dropped before
/// the close: closing with unread bytes would reset the connection and could destroy
/// the answer on its way.
pub const ADMIN_LINGER_MS: u64 = 200;
/// When every connection thread is taken, a connection that has not sent its whole head
/// within this long of its accept is closed to make room: probes and tools send theirs
/// at once, so what holds a thread that long without one is a slow or silent client —
/// and 64 of those, reopened every 2 s, would otherwise have every liveness probe
/// answered 503.
pub const ADMIN_CROWDED_HEAD_MS: u64 = 250;
/// How long a connection finding every thread taken waits for one to be freed.
pub const ADMIN_CROWDED_WAIT_MS: u64 = 300;

/// Which shard owns an object, as the engine routes it: the control thread knows the
/// shards' count, not their storage.
#[derive(Clone)]
pub struct OwnerOf(Arc<dyn Fn(&Address) -> usize + Send + Sync>);

impl OwnerOf {
    pub fn new(owner: impl Fn(&Address) -> usize + Send + Sync + 'static) -> OwnerOf {
        OwnerOf(Arc::new(owner))
    }

    /// The index of the shard that owns `addr`.
    pub fn shard(&self, addr: &Address) -> usize {
        (self.0)(addr)
    }
}

impl std::fmt::Debug for OwnerOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnerOf(..)")
    }
}

/// What every admin answer may read.
#[derive(Debug)]
pub(crate) struct Answers {
    /// Each shard's counters, in shard order.
    pub shards: Vec<ShardCounters>,
    pub version: &'static str,
    pub admin_token: Option<String>,
    pub board: Arc<Board>,
    /// The shards' inboxes and which shard owns an object, for operator requests
    /// (scrub pause/resume, the check of one object).
    pub mailboxes: Mailboxes,
    pub owner: OwnerOf,
    /// The DHT thread, on a node with `--p2p` (`/resolve`, the DHT's metrics).
    pub dht: Option<DhtClient>,
    /// The shards' replication, which audits holders' copies for `/admin/placement`
    /// and `/admin/replicate` (a node in a network).
    pub replication: Option<ReplicationRoutes>,
    /// What the last `/metrics` read of the counters, to hold the next to.
    pub scrapes: Scrapes,
    /// Requests waiting on a shard or the DHT now (at most [`ADMIN_WAITING_MAX`]).
    pub waiting: AtomicUsize,
}

#[cfg(test)]
impl Answers {
    /// One shard, no token, no network but `dht`.
    pub(crate) fn for_tests(dht: Option<DhtClient>) -> Answers {
        Answers {
            shards: vec![ShardCounters::default()],
            version: "9.9.9",
            admin_token: None,
            board: Arc::new(Board::new(Default::default())),
            mailboxes: ron_link::link::links(1).0.mailboxes(),
            owner: OwnerOf::new(|_| 0),
            dht,
            replication: None,
            scrapes: Default::default(),
            waiting: AtomicUsize::new(0),
        }
    }
}

/// The running admin server; dropping it stops the acceptor and waits for it.
#[derive(Debug)]
pub(crate) struct AdminServer {
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    /// Where to connect to wake the acceptor from its blocking accept at a stop.
    wake: SocketAddr,
}

impl AdminServer {
    /// Starts the acceptor on a bound, blocking listener: an idle admin port costs no
    /// wake-ups; a stop wakes the acceptor with a connection of its own.
    pub(crate) fn spawn(listener: TcpListener, answers: Answers) -> std::io::Result<AdminServer> {
        let mut wake = listener.local_addr()?;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = Acceptor {
            listener,
            answers: Arc::new(answers),
            stop: Arc::clone(&stop),
            open: Arc::new(AtomicUsize::new(0)),
            crowded: Arc::new(AtomicBool::new(false)),
        };
        let handle = std::thread::Builder::new()
            .name("ron-admin".into())
            .spawn(move || acceptor.run())?;
        Ok(AdminServer {
            stop,
            acceptor: Some(handle),
            wake,
        })
    }

    /// Stops accepting, lets open connections end (bounded), and joins the acceptor.
    pub(crate) fn shutdown(self) {
        drop(self);
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect_timeout(&self.wake, Duration::from_millis(ADMIN_STOP_POLL_MS));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

struct Acceptor {
    listener: TcpListener,
    answers: Arc<Answers>,
    stop: Arc<AtomicBool>,
    /// Connection threads running now.
    open: Arc<AtomicUsize>,
    /// Raised while a connection waits for a thread: those without a whole head past
    /// [`ADMIN_CROWDED_HEAD_MS`] close.
    crowded: Arc<AtomicBool>,
}

impl Acceptor {
    fn run(self) {
        while !self.stop.load(Ordering::Relaxed) {
            match self.listener.accept() {
                Ok(_) if self.stop.load(Ordering::Relaxed) => break,
                Ok((stream, _)) => self.admit(stream, Instant::now()),
                Err(e) => {
                    tracing::debug!(error = %e, "admin accept failed");
                    std::thread::sleep(Duration::from_millis(ADMIN_ACCEPT_POLL_MS));
                }
            }
        }
        let Acceptor { listener, open, .. } = self;
        drop(listener);
        // Readers notice the stop within ADMIN_STOP_POLL_MS; a writer has its deadline.
        let limit =
            Duration::from_millis(ADMIN_WRITE_TIMEOUT_MS + ADMIN_LINGER_MS + ADMIN_STOP_POLL_MS);
        let deadline = Instant::now() + limit;
        while open.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(ADMIN_ACCEPT_POLL_MS));
        }
    }

    fn admit(&self, stream: TcpStream, accepted: Instant) {
        if !room_made(&self.open, &self.crowded, &self.stop) {
            busy(stream);
            return;
        }
        let slot = Slot::take(&self.open);
        let answers = Arc::clone(&self.answers);
        let stop = Arc::clone(&self.stop);
        let crowded = Arc::clone(&self.crowded);
        let spawned = std::thread::Builder::new()
            .name("ron-admin-conn".into())
            .spawn(move || {
                let _slot = slot;
                let _ = serve(stream, accepted, &answers, &stop, &crowded);
            });
        if let Err(e) = spawned {
            // The closure, its slot and the connection were dropped with it.
            tracing::warn!(error = %e, "cannot start an admin connection thread");
        }
    }
}

/// Whether a connection thread is free (fewer than [`ADMIN_CONNECTIONS_MAX`] `open`),
/// or freed within [`ADMIN_CROWDED_WAIT_MS`] by the connections without a whole head
/// that raising `crowded` closes.
fn room_made(open: &AtomicUsize, crowded: &AtomicBool, stop: &AtomicBool) -> bool {
    let has_room = || open.load(Ordering::Acquire) < ADMIN_CONNECTIONS_MAX;
    if has_room() {
        crowded.store(false, Ordering::Relaxed);
        return true;
    }
    crowded.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_millis(ADMIN_CROWDED_WAIT_MS);
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(ADMIN_ACCEPT_POLL_MS));
        if has_room() {
            // Made: the connections still sending their heads need not give way now,
            // nor this one, which waited past ADMIN_CROWDED_HEAD_MS for its thread.
            crowded.store(false, Ordering::Relaxed);
            return true;
        }
    }
    false
}

/// One running connection thread, counted in `open` for as long as it lives.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>) -> Slot {
        open.fetch_add(1, Ordering::AcqRel);
        Slot(Arc::clone(open))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every connection thread is taken: drop what the client has sent so far, one write
/// attempt, close; nothing here waits.
fn busy(mut stream: TcpStream) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut sink = [0u8; 1024];
    for _ in 0..ADMIN_HEAD_BYTES_MAX / sink.len() {
        if !matches!(stream.read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
    let reply = Reply::text(503, "admin server busy: too many connections\n");
    let _ = stream.write(&reply.to_bytes(false));
    let _ = stream.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With every thread taken, a newcomer raises `crowded` and gets room once a thread
    /// ends within the wait; with none ending, it is refused after the wait.
    #[test]
    fn a_newcomer_waits_for_room_only_as_long_as_the_crowded_wait() {
        let open = Arc::new(AtomicUsize::new(ADMIN_CONNECTIONS_MAX));
        let (crowded, stop) = (AtomicBool::new(false), AtomicBool::new(false));
        let started = Instant::now();
        assert!(!room_made(&open, &crowded, &stop));
        assert!(started.elapsed() >= Duration::from_millis(ADMIN_CROWDED_WAIT_MS));
        assert!(crowded.load(Ordering::Relaxed));
        let ending = Arc::clone(&open);
        let one_ends = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            ending.fetch_sub(1, Ordering::AcqRel);
        });
        assert!(room_made(&open, &crowded, &stop));
        assert!(
            !crowded.load(Ordering::Relaxed),
            "room made: no longer crowded"
        );
        one_ends.join().unwrap();
        assert!(room_made(&open, &crowded, &stop), "room at once");
        assert!(!crowded.load(Ordering::Relaxed), "and no longer crowded");
    }
}
