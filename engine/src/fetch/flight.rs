//! One fetch under way and the requests waiting on it.
//!
//! The fetch task is the only writer: it sets the object's length once an upstream has
//! answered, pushes each group once it is verified, and sets the outcome last. Waiters
//! only read, and wait on the flight's [`Signal`], which wakes them all when anything
//! changes. Verified groups are kept in a window of at most
//! [`FLIGHT_WINDOW_BYTES_MAX`]: the fetch never waits for a waiter, and a waiter that
//! falls behind the window reads the rest from the store once the object is stored.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use ron_codec::Address;
use ron_link::policy::Tenant;
use ron_shards::CommitOutcome;

use crate::refusal::Refusal;

/// Verified groups a flight keeps for its waiters (64 groups).
pub const FLIGHT_WINDOW_BYTES_MAX: usize = 4 << 20;

/// Wakes every task waiting for a change. Single-threaded: a flight lives on one shard.
/// A waiter that gives up (its deadline, its client gone) takes its waker with it: a
/// long fetch that many requests waited on and left keeps none of them.
#[derive(Debug, Default)]
struct Signal {
    version: Cell<u64>,
    wakers: RefCell<HashMap<u64, Waker>>,
    next_waiter: Cell<u64>,
}

impl Signal {
    fn version(&self) -> u64 {
        self.version.get()
    }

    fn notify(&self) {
        self.version.set(self.version.get() + 1);
        for (_, waker) in self.wakers.take() {
            waker.wake();
        }
    }

    /// Resolves once the version moved past `seen`.
    fn changed(&self, seen: u64) -> Changed<'_> {
        Changed {
            signal: self,
            seen,
            waiter: None,
        }
    }
}

/// A wait for a [`Signal`]'s change; dropped, it leaves no waker behind.
struct Changed<'a> {
    signal: &'a Signal,
    seen: u64,
    /// Its key among the signal's wakers, once it has waited.
    waiter: Option<u64>,
}

impl Future for Changed<'_> {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let signal = this.signal;
        if signal.version.get() != this.seen {
            if let Some(waiter) = this.waiter.take() {
                signal.wakers.borrow_mut().remove(&waiter);
            }
            return Poll::Ready(());
        }
        let waiter = *this.waiter.get_or_insert_with(|| {
            let next = signal.next_waiter.get();
            signal.next_waiter.set(next + 1);
            next
        });
        let mut wakers = signal.wakers.borrow_mut();
        match wakers.get(&waiter) {
            Some(known) if known.will_wake(cx.waker()) => {}
            _ => {
                wakers.insert(waiter, cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for Changed<'_> {
    fn drop(&mut self) {
        if let Some(waiter) = self.waiter {
            self.signal.wakers.borrow_mut().remove(&waiter);
        }
    }
}

/// How a fetch ended for its waiters.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The object is verified and stored: read it from the store.
    Stored,
    /// No upstream delivered it: every waiter gets this answer.
    Failed(Failure),
}

/// Why a fetch failed, as its waiters answer it.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Nothing verified arrived within the fetch timeout (504).
    TimedOut { timeout_ms: u64 },
    /// Every upstream tried failed (502); `last` says how the last one did.
    NoVerifiedCopy { tried: u32, last: Rc<str> },
    /// The owner shard's fetch, which this shard followed, failed or was refused: its
    /// answer, as the owner gave it.
    Owner {
        shard: u16,
        code: ron_codec::ErrorCode,
        message: Rc<str>,
    },
    /// The shard stopped while the fetch was under way: it was abandoned (503).
    Stopping,
    /// The origin answered that it has no such object (404), now or within
    /// `fetch_miss_ms` before.
    NotFound { upstream: Rc<str> },
    /// The data dirs have no room for the length the upstream announced (507).
    NoRoom { detail: Rc<str> },
}

impl Failure {
    pub fn refusal(&self, addr: Address) -> Refusal {
        match self {
            Failure::TimedOut { timeout_ms } => Refusal::GatewayTimeout {
                addr,
                timeout_ms: *timeout_ms,
            },
            Failure::NoVerifiedCopy { tried, last } => Refusal::BadGateway {
                addr,
                tried: *tried,
                last: last.to_string(),
            },
            Failure::Owner {
                shard,
                code,
                message,
            } => Refusal::Shard(ron_shards::ShardError::Remote {
                shard: *shard,
                code: *code,
                message: message.to_string(),
            }),
            Failure::Stopping => Refusal::ShuttingDown,
            Failure::NotFound { upstream } => Refusal::UpstreamNotFound {
                addr,
                upstream: upstream.to_string(),
            },
            Failure::NoRoom { detail } => Refusal::NoRoomForCopy {
                addr,
                detail: detail.to_string(),
            },
        }
    }
}

#[derive(Debug, Default)]
struct FlightState {
    /// The object's length and content type, once an upstream answered.
    head: Option<(u64, Rc<str>)>,
    /// Verified groups `window_first ..` in order.
    window: VecDeque<Bytes>,
    window_first: u64,
    window_bytes: usize,
    outcome: Option<Outcome>,
}

impl FlightState {
    fn received(&self) -> u64 {
        self.window_first + self.window.len() as u64
    }
}

/// A fetch of one object, shared by every request that missed it meanwhile.
#[derive(Debug)]
pub struct Flight {
    pub addr: Address,
    /// Asked first, before the providers the DHT names: the node that asked this one
    /// to hold a copy (replication).
    pub source: Option<std::net::SocketAddr>,
    /// Fetch from `source` only, never from the providers the DHT names: a copy another
    /// node asked for is that node's to serve (its request is a claim; a lookup per
    /// address it names would be the asker's to spend, not this node's).
    pub source_only: Cell<bool>,
    /// Commit what is fetched as a kept copy (a placement copy), not an evictable one.
    pub keep: std::cell::Cell<bool>,
    /// Started by a placement copy's pull: counted against the shard's share of fetches
    /// for copies while it is under way.
    pub started_for_copy: Cell<bool>,
    /// Started by a client's miss: counted against that client's share of fetches
    /// while it is under way (`ReadThrough::join_for`).
    pub started_by: Cell<Option<Tenant>>,
    /// A copy damaged beyond its parity is held: fetched again all the same, and removed
    /// only once the replacement is verified and staged, just before its commit (a
    /// failed fetch leaves the damaged copy, which still serves its good groups).
    pub replaces_damaged: Cell<bool>,
    /// The commit made a new copy (not one already stored), until a pull claims it.
    new_copy: Cell<bool>,
    state: RefCell<FlightState>,
    signal: Signal,
}

/// What a waiter finds for a group it asks for.
#[derive(Debug)]
pub enum GroupAt {
    /// Verified bytes from the window.
    Here(Bytes),
    /// The object is stored: read the group (and the rest) from the store.
    Stored,
}

impl Flight {
    pub fn new(addr: Address, source: Option<std::net::SocketAddr>) -> Rc<Flight> {
        Rc::new(Flight {
            addr,
            source,
            source_only: Cell::new(false),
            keep: std::cell::Cell::new(false),
            started_for_copy: Cell::new(false),
            started_by: Cell::new(None),
            replaces_damaged: Cell::new(false),
            new_copy: Cell::new(false),
            state: RefCell::default(),
            signal: Signal::default(),
        })
    }

    // --- the fetch task's side ---

    pub fn set_head(&self, len: u64, content_type: Rc<str>) {
        self.state.borrow_mut().head = Some((len, content_type));
        self.signal.notify();
    }

    /// Adds the next verified group, dropping the oldest past the window.
    pub fn push(&self, group: Bytes) {
        let mut state = self.state.borrow_mut();
        state.window_bytes += group.len();
        state.window.push_back(group);
        while state.window_bytes > FLIGHT_WINDOW_BYTES_MAX && state.window.len() > 1 {
            if let Some(old) = state.window.pop_front() {
                state.window_bytes -= old.len();
                state.window_first += 1;
            }
        }
        drop(state);
        self.signal.notify();
    }

    /// Records what the commit of the fetched object did.
    pub fn committed(&self, outcome: CommitOutcome) {
        self.new_copy.set(matches!(outcome, CommitOutcome::Created));
    }

    /// Whether this flight made a new copy not claimed yet: `true` for one caller only,
    /// so several pulls waiting on one flight count one copy.
    pub fn claim_new_copy(&self) -> bool {
        self.new_copy.replace(false)
    }

    pub fn finish(&self, outcome: Outcome) {
        let mut state = self.state.borrow_mut();
        state.outcome = Some(outcome);
        // Waiters look at the outcome first: a stored object is read from the store, a
        // failed one is never served from what was received. The window is only freed.
        state.window.clear();
        state.window_bytes = 0;
        drop(state);
        self.signal.notify();
    }

    pub fn outcome(&self) -> Option<Outcome> {
        self.state.borrow().outcome.clone()
    }

    // --- the waiters' side ---

    /// Verified groups from `from` on that the window holds, at most `max`.
    pub fn window_from(&self, from: u64, max: usize) -> Vec<Bytes> {
        let state = self.state.borrow();
        if from < state.window_first {
            return Vec::new();
        }
        let skip = (from - state.window_first) as usize;
        state.window.iter().skip(skip).take(max).cloned().collect()
    }

    /// Waits until the object can be answered: its head is known and its first group
    /// verified (or it is empty), or the fetch ended. `Ok(None)`: stored, read it from
    /// the store. Past `deadline` this waiter gives up alone (504); the fetch goes on.
    pub async fn wait_open(
        &self,
        deadline: Instant,
        timeout_ms: u64,
    ) -> Result<Option<(u64, Rc<str>)>, Refusal> {
        let timed_out = || Refusal::GatewayTimeout {
            addr: self.addr,
            timeout_ms,
        };
        loop {
            let seen = self.signal.version();
            {
                let state = self.state.borrow();
                match (&state.outcome, &state.head) {
                    (Some(Outcome::Stored), _) => return Ok(None),
                    (Some(Outcome::Failed(failure)), _) => return Err(failure.refusal(self.addr)),
                    (None, Some((len, ct))) if *len == 0 || state.received() > 0 => {
                        return Ok(Some((*len, Rc::clone(ct))))
                    }
                    (None, _) => {}
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            if ron_shards::lifecycle::finished_within(left, self.signal.changed(seen))
                .await
                .is_none()
            {
                return Err(timed_out());
            }
        }
    }

    /// Waits until the fetch has ended, stored (`Ok`) or failed.
    pub async fn wait_stored(&self) -> Result<(), Refusal> {
        loop {
            let seen = self.signal.version();
            match self.outcome() {
                Some(Outcome::Stored) => return Ok(()),
                Some(Outcome::Failed(failure)) => return Err(failure.refusal(self.addr)),
                None => self.signal.changed(seen).await,
            }
        }
    }

    /// Waits for verified group `group`. The fetch's own stall timer bounds the wait:
    /// a fetch that stops delivering fails, and that ends every wait.
    pub async fn group(&self, group: u64) -> Result<GroupAt, Refusal> {
        loop {
            let seen = self.signal.version();
            {
                let state = self.state.borrow();
                match &state.outcome {
                    Some(Outcome::Stored) => return Ok(GroupAt::Stored),
                    Some(Outcome::Failed(failure)) => return Err(failure.refusal(self.addr)),
                    None => {}
                }
                if group >= state.window_first && group < state.received() {
                    let at = (group - state.window_first) as usize;
                    return Ok(GroupAt::Here(state.window[at].clone()));
                }
                // Behind the window: the rest comes from the store once it is stored.
            }
            self.signal.changed(seen).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::LocalExecutorBuilder;
    use std::time::Duration;

    fn run<F: Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        LocalExecutorBuilder::default()
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    /// Waiters that give up before anything changes (their deadline passed: the fetch
    /// is verifying a large object whole) leave no waker behind, and one still waiting
    /// is woken. Before, each kept its waker (and its task) until the fetch ended.
    #[test]
    fn waiters_that_give_up_leave_no_waker_behind() {
        run(|| async {
            let flight = Flight::new(Address::of(b"x"), None);
            for _ in 0..1_000 {
                let deadline = Instant::now() + Duration::from_millis(1);
                assert!(flight.wait_open(deadline, 1).await.is_err());
            }
            assert_eq!(flight.signal.wakers.borrow().len(), 0);
            let waiter = Rc::clone(&flight);
            let open = glommio::spawn_local(async move {
                let deadline = Instant::now() + Duration::from_secs(5);
                waiter.wait_open(deadline, 5_000).await.is_ok()
            });
            glommio::yield_if_needed().await;
            glommio::timer::sleep(Duration::from_millis(5)).await;
            assert_eq!(flight.signal.wakers.borrow().len(), 1);
            flight.set_head(100, "text/plain".into());
            flight.push(Bytes::from(vec![1u8; 100]));
            assert!(open.await);
            assert_eq!(flight.signal.wakers.borrow().len(), 0);
        });
    }

    /// Waiters see groups as they are pushed, a waiter behind the window is told to read
    /// the store, and a failed flight fails every waiter, however far it got.
    #[test]
    fn waiters_follow_the_window_and_the_outcome() {
        run(|| async {
            let addr = Address::of(b"x");
            let flight = Flight::new(addr, None);
            let waiter = Rc::clone(&flight);
            let opened = glommio::spawn_local(async move {
                let deadline = Instant::now() + Duration::from_secs(5);
                waiter.wait_open(deadline, 5_000).await.unwrap()
            });
            flight.set_head(3 * 65_536, "text/plain".into());
            glommio::yield_if_needed().await;
            flight.push(Bytes::from(vec![1u8; 65_536]));
            let (len, ct) = opened.await.unwrap();
            assert_eq!((len, &*ct), (3 * 65_536, "text/plain"));
            match flight.group(0).await.unwrap() {
                GroupAt::Here(bytes) => assert_eq!(bytes[0], 1),
                GroupAt::Stored => panic!("group 0 is in the window"),
            }
            let window_groups = FLIGHT_WINDOW_BYTES_MAX / 65_536;
            for _ in 0..window_groups {
                flight.push(Bytes::from(vec![2u8; 65_536]));
            }
            let behind = Rc::clone(&flight);
            let late = glommio::spawn_local(async move { behind.group(0).await });
            glommio::yield_if_needed().await;
            flight.finish(Outcome::Stored);
            assert!(matches!(late.await.unwrap(), GroupAt::Stored));

            let failed = Flight::new(addr, None);
            failed.set_head(65_536, "".into());
            failed.push(Bytes::from(vec![3u8; 65_536]));
            failed.finish(Outcome::Failed(Failure::NoVerifiedCopy {
                tried: 2,
                last: "bad group".into(),
            }));
            let refused = failed.group(0).await.unwrap_err();
            assert_eq!(refused.status(), 502);
            assert!(refused.to_string().contains("2 tried"), "{refused}");
        });
    }

    /// Each waiter has its own deadline: one that joined late times out later, and a
    /// timeout does not end the flight.
    #[test]
    fn each_waiter_times_out_on_its_own_deadline() {
        run(|| async {
            let flight = Flight::new(Address::of(b"y"), None);
            let start = Instant::now();
            let early = flight
                .wait_open(start + Duration::from_millis(50), 50)
                .await
                .unwrap_err();
            assert_eq!(early.status(), 504);
            assert!(start.elapsed() >= Duration::from_millis(50));
            let late = flight
                .wait_open(Instant::now() + Duration::from_millis(80), 80)
                .await
                .unwrap_err();
            assert!(start.elapsed() >= Duration::from_millis(130), "{late}");
            assert!(flight.outcome().is_none(), "the flight goes on");
        });
    }

    /// Several pulls waiting on one flight count one copy, and a flight whose object
    /// was stored already (a second fetch that raced the first one's commit) none.
    #[test]
    fn a_new_copy_is_claimed_once() {
        let flight = Flight::new(Address::of(b"z"), None);
        assert!(!flight.claim_new_copy(), "nothing committed yet");
        flight.committed(CommitOutcome::Created);
        assert!(flight.claim_new_copy());
        assert!(!flight.claim_new_copy(), "a second waiter");
        let again = Flight::new(Address::of(b"z"), None);
        again.committed(CommitOutcome::AlreadyStored);
        assert!(!again.claim_new_copy());
    }
}
