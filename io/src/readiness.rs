//! Socket readiness for a shard's connections, from one edge-triggered epoll set per
//! shard thread instead of one io_uring poll per wait.
//!
//! ## Why
//! glommio 0.9 waits for a socket with an io_uring poll request, and its rings are set
//! up without `IORING_SETUP_COOP_TASKRUN`: a poll that completes while the shard's thread
//! is running makes the kernel queue task work with `TWA_SIGNAL`, which interrupts the
//! thread with a reschedule IPI. A shard that is busy but not saturated is interrupted
//! about once per request: at an open-loop 60,000 req/s of 4 KiB GETs, 0.71 IPIs per
//! request and 27 % of the shard's core at their exit (docs/PERF.md, "Wake-ups").
//! An epoll set is told of ready sockets by the same softirq, but it only links them
//! onto its ready list: nobody is interrupted until somebody asks.
//!
//! ## How
//! - Every connection's socket is registered once, edge-triggered for input and
//!   output ([`Readiness::register`]); closing the socket removes it.
//! - A connection reads and writes with plain non-blocking calls. One that finds its
//!   socket empty (or full) leaves its waker in its slot and waits; the edge that
//!   follows — new bytes, or room — is what wakes it. Bytes that arrived before the
//!   waker was left were seen by the call that came first, so no edge is missed.
//! - A read that came back short emptied the socket: the next one waits for the input
//!   edge without a call that would only meet `EAGAIN` — unless an edge has said the
//!   peer ended, which comes once and may have been taken before that short read.
//! - The shard's pump task collects the ready list with a non-blocking `epoll_wait`
//!   and wakes the waiters named; while it finds some, its next round runs behind the
//!   tasks it woke, and every [`YIELD_ROUNDS_MAX`] rounds after glommio has polled its
//!   rings (disk completions and timers wait for that).
//! - A round that finds nothing first waits for an event in `epoll_pwait2` itself,
//!   within a budget between two visits to glommio's reactor ([`crate::idle_wait`],
//!   [`IDLE_WAIT_BUDGET`](crate::idle_wait::IDLE_WAIT_BUDGET)): a busy shard's short
//!   quiet spells cost it one call, not a reactor's sleep. A spell the budget does not
//!   cover makes the pump wait for the epoll set itself to become readable, through
//!   glommio: one io_uring poll for all of the shard's connections, so an idle shard
//!   sleeps in glommio's reactor as before, and only its first wake-up after a quiet
//!   spell can interrupt it.
//! - A wait with a timeout writes its deadline into its slot; the pump keeps the
//!   earliest deadlines in a heap (one entry per waiting direction at most), fails the
//!   waits whose deadline has passed on its rounds through the reactor, and sleeps no
//!   longer than the earliest. Per wait that is a clock read and a field, where a
//!   glommio timer was an allocation, an insert into the reactor's timer map and a
//!   removal when the wait ended — nearly every wait ends long before its deadline.
//!
//! ## Limits
//! Slots are reused (a generation in each token tells a stale event from a new
//! socket's); [`EVENTS_PER_ROUND_MAX`] events are taken per `epoll_wait` (more remain
//! on the list for the next round). The deadline heap holds at most two live entries
//! per slot; entries of closed sockets are dropped when they come up, or all at once
//! when they outnumber the live ones (`Slots::compact_deadlines`). A deadline is
//! noticed at most [`YIELD_ROUNDS_MAX`] pump rounds (and the idle wait's budget) late
//! on a busy shard.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, FutureExt};
use glommio::timer::Timer;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use crate::idle_wait::IdleWaits;
use crate::socket_calls::{epoll_events_within, epoll_ready_events};

/// Ready sockets taken from the list per `epoll_wait`.
pub const EVENTS_PER_ROUND_MAX: usize = 256;

/// Rounds in a row the pump runs behind the tasks it woke before one waits for glommio's
/// reactor.
pub const YIELD_ROUNDS_MAX: u32 = 8;

/// How long the pump's wait for the reactor is: anything above zero makes it a glommio
/// timer, fired when the executor next polls its rings.
pub const ROUND_TIMER: Duration = Duration::from_micros(1);

/// Which way a waiter waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Read,
    Write,
}

impl Direction {
    pub(crate) fn index(self) -> usize {
        match self {
            Direction::Read => 0,
            Direction::Write => 1,
        }
    }
}

/// One registered socket's waiters (read, write); `generation` changes each time the
/// slot is reused.
#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    in_use: bool,
    waiters: [Waiter; 2],
    /// A read came back short and no input edge has come since: the socket is known
    /// empty, and the next read waits for the edge without asking the kernel first.
    drained: bool,
    /// An edge said the peer closed, reset or failed. Sticky: that edge comes once, and
    /// it may be taken before the short read that returns the bytes ahead of it — so a
    /// socket that had it is never taken for drained (its next read returns 0 or the
    /// error).
    input_ended: bool,
}

impl Slot {
    /// Whether the slot is `token`'s socket's (not free, not reused since).
    fn holds(&self, token: Token) -> bool {
        self.in_use && self.generation == token.generation
    }
}

/// One direction's wait under way.
#[derive(Debug, Default)]
struct Waiter {
    waker: Option<Waker>,
    /// When the wait under way fails (none: no wait, or no timeout).
    deadline: Option<Instant>,
    /// The deadline passed: the waiter's next call that would block fails instead.
    expired: bool,
    /// The earliest entry the heap holds for this waiter: never after `deadline`.
    /// Entries of the waiter at other times are stale (a deadline that came earlier
    /// replaced them) and dropped when they come up.
    queued: Option<Instant>,
}

/// A deadline in the heap: when, whose (token data) and which direction (index).
type Queued = Reverse<(Instant, u64, usize)>;

#[derive(Debug, Default)]
struct Slots {
    slots: Vec<Slot>,
    free: Vec<u32>,
    deadlines: BinaryHeap<Queued>,
    /// The earliest deadline the sleeping pump will wake for (`None` inside: none), and
    /// its waker; none while the pump runs.
    pump_sleep: Option<(Option<Instant>, Waker)>,
}

/// A socket's place in its shard's epoll set, for as long as the socket lives.
#[derive(Debug)]
pub struct Registration {
    readiness: Rc<Readiness>,
    token: Token,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Token {
    index: u32,
    generation: u32,
}

impl Token {
    fn to_data(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    fn from_data(data: u64) -> Token {
        Token {
            index: data as u32,
            generation: (data >> 32) as u32,
        }
    }
}

/// A shard thread's epoll set and the waiters on its sockets.
#[derive(Debug)]
pub struct Readiness {
    epoll: Epoll,
    slots: RefCell<Slots>,
}

thread_local! {
    /// The epoll set of the executor running on this thread (by its id: an executor
    /// made later on the same thread gets a set and a pump of its own).
    static SHARD_READINESS: RefCell<Option<(usize, Rc<Readiness>)>> = const { RefCell::new(None) };
}

impl Readiness {
    /// This thread's epoll set, made (and its pump started) on first use. Must be called
    /// on a glommio executor thread.
    pub fn of_this_thread() -> io::Result<Rc<Readiness>> {
        let executor = glommio::executor().id();
        SHARD_READINESS.with(|cell| {
            if let Some((id, readiness)) = cell.borrow().as_ref() {
                if *id == executor {
                    return Ok(Rc::clone(readiness));
                }
            }
            let readiness = Rc::new(Readiness {
                epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
                slots: RefCell::new(Slots::default()),
            });
            glommio::spawn_local(pump(Rc::clone(&readiness))).detach();
            *cell.borrow_mut() = Some((executor, Rc::clone(&readiness)));
            Ok(readiness)
        })
    }

    /// Adds `fd` to the set, edge-triggered for input, output, hang-up and errors.
    pub fn register(self: &Rc<Self>, fd: BorrowedFd<'_>) -> io::Result<Registration> {
        let token = self.slots.borrow_mut().take();
        let flags = EpollFlags::EPOLLIN
            | EpollFlags::EPOLLOUT
            | EpollFlags::EPOLLRDHUP
            | EpollFlags::EPOLLET;
        if let Err(e) = self.epoll.add(fd, EpollEvent::new(flags, token.to_data())) {
            self.slots.borrow_mut().give_back(token);
            return Err(e.into());
        }
        Ok(Registration {
            readiness: Rc::clone(self),
            token,
        })
    }

    /// Takes what is on the ready list (without waiting) and wakes the waiters it
    /// names; how many events there were.
    fn collect(&self, events: &mut [EpollEvent]) -> usize {
        let found = epoll_ready_events(self.epoll.0.as_fd(), events).unwrap_or(0);
        self.wake_all(&events[..found]);
        found
    }

    /// [`Readiness::collect`], waiting at most `timeout` for a first event (blocking the
    /// thread: [`crate::idle_wait`]).
    fn collect_within(&self, events: &mut [EpollEvent], timeout: Duration) -> io::Result<usize> {
        let found = epoll_events_within(self.epoll.0.as_fd(), events, timeout)?;
        self.wake_all(&events[..found]);
        Ok(found)
    }

    fn wake_all(&self, events: &[EpollEvent]) {
        let mut slots = self.slots.borrow_mut();
        for event in events {
            slots.wake(Token::from_data(event.data()), event.events());
        }
    }

    /// Fails the waits whose deadline is not after `now`; the earliest deadline left.
    fn expire(&self, now: Instant) -> Option<Instant> {
        self.slots.borrow_mut().expire(now)
    }
}

impl Slots {
    fn take(&mut self) -> Token {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.in_use = true;
        Token {
            index,
            generation: slot.generation,
        }
    }

    fn give_back(&mut self, token: Token) {
        let slot = &mut self.slots[token.index as usize];
        *slot = Slot {
            generation: slot.generation.wrapping_add(1),
            ..Slot::default()
        };
        self.free.push(token.index);
    }

    fn slot(&mut self, token: Token) -> Option<&mut Slot> {
        self.slots
            .get_mut(token.index as usize)
            .filter(|slot| slot.holds(token))
    }

    fn wake(&mut self, token: Token, events: EpollFlags) {
        let Some(slot) = self.slot(token) else {
            return;
        };
        let trouble = EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP;
        let ended = EpollFlags::EPOLLRDHUP | trouble;
        slot.input_ended |= events.intersects(ended);
        let [read, write] = &mut slot.waiters;
        if events.intersects(EpollFlags::EPOLLIN | ended) {
            slot.drained = false;
            if let Some(waker) = read.waker.take() {
                waker.wake();
            }
        }
        if events.intersects(EpollFlags::EPOLLOUT | trouble) {
            if let Some(waker) = write.waker.take() {
                waker.wake();
            }
        }
    }

    /// A read on `token`'s socket returned `read` bytes into room for `room`: fewer (and
    /// not end of stream) means it emptied the socket.
    fn note_read(&mut self, token: Token, read: usize, room: usize) {
        if let Some(slot) = self.slot(token) {
            slot.drained = (1..room).contains(&read) && !slot.input_ended;
        }
    }

    /// Whether `token`'s socket is known empty (`Slot::drained`).
    fn drained(&mut self, token: Token) -> bool {
        self.slot(token).is_some_and(|slot| slot.drained)
    }

    /// Starts the deadline of `token`'s wait in `direction`, `timeout` from now, unless
    /// one is running; queues it unless the heap holds an earlier entry for the waiter
    /// (that entry, when it comes up, re-queues the later deadline). A deadline earlier
    /// than the sleeping pump's wakes the pump, to sleep less.
    fn start_deadline(&mut self, token: Token, direction: Direction, timeout: Duration) {
        let Some(slot) = self.slot(token) else {
            return;
        };
        let waiter = &mut slot.waiters[direction.index()];
        if waiter.deadline.is_some() {
            return;
        }
        let at = Instant::now() + timeout;
        waiter.deadline = Some(at);
        if waiter.queued.is_some_and(|queued| queued <= at) {
            return;
        }
        waiter.queued = Some(at);
        self.deadlines
            .push(Reverse((at, token.to_data(), direction.index())));
        self.compact_deadlines();
        let sleeps_past = |&(until, _): &(Option<Instant>, Waker)| until.is_none_or(|u| at < u);
        if let Some((_, pump)) = self.pump_sleep.take_if(|sleep| sleeps_past(sleep)) {
            pump.wake();
        }
    }

    /// Ends `token`'s wait in `direction`: its deadline (its heap entry stays, and is
    /// dropped when it comes up) and a timeout not yet reported.
    fn end_wait(&mut self, token: Token, direction: Direction) {
        if let Some(slot) = self.slot(token) {
            let waiter = &mut slot.waiters[direction.index()];
            waiter.deadline = None;
            waiter.expired = false;
        }
    }

    /// Whether `token`'s wait in `direction` has outlasted its deadline; if so the wait
    /// is over (the next one gets a deadline of its own).
    fn take_expired(&mut self, token: Token, direction: Direction) -> bool {
        let Some(slot) = self.slot(token) else {
            return false;
        };
        let waiter = &mut slot.waiters[direction.index()];
        std::mem::take(&mut waiter.expired)
    }

    /// Marks the waits whose deadline is not after `now` expired and wakes them; entries
    /// that come up for a wait that has ended are dropped, for a later deadline of the
    /// same waiter re-queued. The earliest entry left.
    fn expire(&mut self, now: Instant) -> Option<Instant> {
        while let Some(&Reverse((at, data, direction))) = self.deadlines.peek() {
            if at > now {
                return Some(at);
            }
            self.deadlines.pop();
            let token = Token::from_data(data);
            let Some(slot) = self.slot(token) else {
                continue;
            };
            let waiter = &mut slot.waiters[direction];
            if waiter.queued != Some(at) {
                continue;
            }
            waiter.queued = None;
            match waiter.deadline {
                Some(deadline) if deadline <= now => {
                    waiter.deadline = None;
                    waiter.expired = true;
                    if let Some(waker) = waiter.waker.take() {
                        waker.wake();
                    }
                }
                Some(later) => {
                    waiter.queued = Some(later);
                    self.deadlines.push(Reverse((later, data, direction)));
                }
                None => {}
            }
        }
        None
    }

    /// Drops the stale entries (of closed sockets, and replaced by an earlier deadline)
    /// once the heap holds more than twice as many as it can hold live ones: a flood of
    /// short connections, or of shrinking timeouts, would otherwise grow it for as long
    /// as the longest timeout. Amortized, a few entries looked at per entry queued.
    fn compact_deadlines(&mut self) {
        let live_max = 2 * self.slots.len();
        if self.deadlines.len() <= 2 * live_max + DEADLINES_SLACK {
            return;
        }
        let slots = &self.slots;
        self.deadlines.retain(|&Reverse((at, data, direction))| {
            let token = Token::from_data(data);
            slots
                .get(token.index as usize)
                .is_some_and(|slot| slot.holds(token) && slot.waiters[direction].queued == Some(at))
        });
    }
}

/// Stale heap entries tolerated past twice the live ones before the heap is compacted.
const DEADLINES_SLACK: usize = 1024;

impl Registration {
    /// Leaves `cx`'s waker to be woken by the socket's next edge in `direction`, and
    /// starts the wait's deadline `timeout` from now if it has none running; or, when
    /// that deadline has passed, ends the wait with `TimedOut`. Call only after a
    /// non-blocking call found the socket empty (or full): an edge is a change, and one
    /// that came before is not repeated.
    fn wait(
        &self,
        direction: Direction,
        cx: &Context<'_>,
        timeout: Option<Duration>,
    ) -> Poll<io::Result<usize>> {
        let mut slots = self.readiness.slots.borrow_mut();
        if slots.take_expired(self.token, direction) {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        let Some(slot) = slots.slot(self.token) else {
            return Poll::Pending;
        };
        let waiter = &mut slot.waiters[direction.index()].waker;
        match waiter {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => *waiter = Some(cx.waker().clone()),
        }
        if let Some(timeout) = timeout {
            slots.start_deadline(self.token, direction, timeout);
        }
        Poll::Pending
    }

    /// Whether the socket is known empty: its last read came back short and no input
    /// edge has come since.
    fn drained(&self) -> bool {
        self.readiness.slots.borrow_mut().drained(self.token)
    }

    /// Records what a read returned (`read` bytes into room for `room`): a short one
    /// means the socket is empty until its next input edge.
    fn note_read(&self, read: usize, room: usize) {
        self.readiness
            .slots
            .borrow_mut()
            .note_read(self.token, read, room);
    }

    /// Ends the wait in `direction` (the call it waited for went through, or its
    /// timeout changed): its deadline stops, and a timeout not yet reported is dropped.
    pub(crate) fn end_wait(&self, direction: Direction) {
        self.readiness
            .slots
            .borrow_mut()
            .end_wait(self.token, direction);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // The socket leaves the epoll set when it is closed (after this); an event of
        // it still on the list finds the slot's generation changed.
        self.readiness.slots.borrow_mut().give_back(self.token);
    }
}

/// The shard's pump: wakes the waiters of ready sockets, round after round while it
/// finds any, and sleeps on the epoll set as soon as a round finds none.
///
/// A round after one that found sockets runs right behind the tasks it woke (a yield:
/// they are queued before it), so a busy shard serves its ready connections without
/// returning to glommio's reactor in between — each return costs an `io_uring_enter`
/// that re-arms glommio's preemption timer. Every [`YIELD_ROUNDS_MAX`] rounds one
/// waits for the reactor instead (a timer of [`ROUND_TIMER`]), so disk completions
/// and timers are never held back by a stream of ready sockets. Deadlines are checked
/// on those rounds and before every sleep. A round that finds nothing waits for the
/// next event in `epoll_pwait2` while the budget of [`crate::idle_wait`] allows, and
/// sleeps in the reactor when it does not or no event comes.
async fn pump(readiness: Rc<Readiness>) {
    let mut events = vec![EpollEvent::empty(); EVENTS_PER_ROUND_MAX];
    let mut rounds_without_reactor = 0;
    let mut idle = IdleWaits::new();
    loop {
        let mut found = readiness.collect(&mut events);
        if found == 0 {
            if let Some(timeout) = idle.next() {
                // Tasks already runnable go first: the wait blocks the thread.
                futures_lite::future::yield_now().await;
                let started = Instant::now();
                let outcome = readiness.collect_within(&mut events, timeout);
                found = idle.waited(outcome, started.elapsed());
            }
        }
        if found == 0 {
            rounds_without_reactor = 0;
            let now = Instant::now();
            let earliest = readiness.expire(now);
            sleep_until_ready_or(&readiness, earliest).await;
            idle.slept(now.elapsed());
        } else if rounds_without_reactor < YIELD_ROUNDS_MAX {
            rounds_without_reactor += 1;
            futures_lite::future::yield_now().await;
        } else {
            rounds_without_reactor = 0;
            readiness.expire(Instant::now());
            glommio::timer::sleep(ROUND_TIMER).await;
            idle.visited_reactor();
        }
    }
}

/// Waits in glommio's reactor until the epoll set has something on its ready list, the
/// `earliest` deadline comes, or a wait starts a deadline earlier than that.
async fn sleep_until_ready_or(readiness: &Readiness, earliest: Option<Instant>) {
    let Ok(mut watcher) = epoll_watcher(&readiness.epoll) else {
        // No io_uring poll could be made: go on a round at a time rather than stop.
        glommio::timer::sleep(ROUND_TIMER).await;
        return;
    };
    let mut alarm = earliest.map(|at| Timer::new(at.saturating_duration_since(Instant::now())));
    let mut byte = [0u8; 1];
    let mut asleep = false;
    std::future::poll_fn(|cx| {
        // Woken: by the watcher's poll (the set became readable), the alarm, or a wait
        // whose deadline comes before `earliest` (`start_deadline`). Each ends the sleep;
        // asking the watcher which would cost a `recv` that can only fail (an epoll set
        // is not a socket), once per sleep.
        if asleep {
            return Poll::Ready(());
        }
        asleep = true;
        // Its poll was armed when it was made: this leaves the waker, no system call.
        if Pin::new(&mut watcher).poll_read(cx, &mut byte).is_ready() {
            return Poll::Ready(());
        }
        if alarm
            .as_mut()
            .is_some_and(|timer| timer.poll(cx).is_ready())
        {
            return Poll::Ready(());
        }
        readiness.slots.borrow_mut().pump_sleep = Some((earliest, cx.waker().clone()));
        Poll::Pending
    })
    .await;
    readiness.slots.borrow_mut().pump_sleep = None;
}

/// A glommio socket on a duplicate of the epoll set's descriptor, whose first read waits
/// for the set to become readable.
///
/// glommio 0.9 offers no readiness wait for a raw descriptor; a glommio socket made
/// from one arms an io_uring read-readiness poll on it at once, and its first read
/// leaves the waker for that poll — which is all that is used of it. It owns its
/// duplicate and closes it when dropped.
fn epoll_watcher(epoll: &Epoll) -> io::Result<glommio::net::UnixStream> {
    let fd: OwnedFd = epoll.0.as_fd().try_clone_to_owned()?;
    let raw = fd.into_raw_fd();
    #[allow(unsafe_code)]
    // SAFETY: `raw` is a descriptor this function owns (a fresh duplicate, released by
    // `into_raw_fd`); the glommio socket takes it over and closes it when dropped.
    let watcher = unsafe { <glommio::net::UnixStream as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    Ok(watcher)
}

/// [`poll_io`] for a read of at most `room` bytes. On a socket known empty (the last
/// read came back short, no input edge since) it waits at once: the call would only
/// meet `EAGAIN` (nginx's `ready` flag does the same). A read that comes back short
/// marks the socket so.
pub fn poll_read_io(
    registration: &Registration,
    cx: &Context<'_>,
    timeout: Option<Duration>,
    room: usize,
    read: impl FnMut() -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    if registration.drained() {
        return registration.wait(Direction::Read, cx, timeout);
    }
    let polled = poll_io(registration, Direction::Read, cx, timeout, read);
    if let Poll::Ready(Ok(n)) = polled {
        registration.note_read(n, room);
    }
    polled
}

/// Polls a non-blocking call on a registered socket: its result, or — when it would
/// block — the waker left for the socket's next edge in `direction` and `Pending`,
/// unless the wait has outlasted `timeout` (`TimedOut`; `None`: waits for ever).
pub fn poll_io(
    registration: &Registration,
    direction: Direction,
    cx: &Context<'_>,
    timeout: Option<Duration>,
    mut call: impl FnMut() -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        let result = call();
        match &result {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return registration.wait(direction, cx, timeout);
            }
            _ => {
                registration.end_wait(direction);
                return Poll::Ready(result);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reused_slots_change_generation() {
        let mut slots = Slots::default();
        let a = slots.take();
        assert_eq!(Token::from_data(a.to_data()), a);
        slots.give_back(a);
        let b = slots.take();
        assert_eq!(b.index, a.index, "the slot is reused");
        assert_ne!(b.generation, a.generation);
        assert!(slots.slot(a).is_none(), "a stale token finds nobody");
        assert!(slots.slot(b).is_some());
    }

    #[test]
    fn a_short_read_leaves_the_socket_drained_until_an_input_edge_and_never_after_an_end() {
        let mut slots = Slots::default();
        let a = slots.take();
        assert!(!slots.drained(a), "a new socket may hold bytes already");
        slots.note_read(a, 100, 4096);
        assert!(slots.drained(a));
        slots.wake(a, EpollFlags::EPOLLOUT);
        assert!(slots.drained(a), "room to write says nothing of input");
        slots.wake(a, EpollFlags::EPOLLIN);
        assert!(!slots.drained(a));
        slots.note_read(a, 4096, 4096);
        assert!(!slots.drained(a), "a full read may have left more");
        slots.note_read(a, 0, 4096);
        assert!(!slots.drained(a), "the end of the stream is read again");
        slots.wake(a, EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP);
        slots.note_read(a, 10, 4096);
        assert!(
            !slots.drained(a),
            "after the peer's end, the next read returns it"
        );
        slots.give_back(a);
        let b = slots.take();
        assert!(!slots.drained(b), "a reused slot starts afresh");
    }

    #[test]
    fn a_deadline_expires_once_and_an_ended_wait_never_does() {
        let mut slots = Slots::default();
        let (a, b) = (slots.take(), slots.take());
        slots.start_deadline(a, Direction::Read, Duration::from_millis(10));
        slots.start_deadline(b, Direction::Write, Duration::from_millis(10));
        slots.end_wait(b, Direction::Write);
        let later = Instant::now() + Duration::from_millis(20);
        assert_eq!(slots.expire(later), None, "both entries came up");
        assert!(slots.take_expired(a, Direction::Read));
        assert!(!slots.take_expired(a, Direction::Read), "reported once");
        assert!(!slots.take_expired(a, Direction::Write));
        assert!(
            !slots.take_expired(b, Direction::Write),
            "its wait had ended"
        );
    }

    /// A deadline that replaces a later one is queued on its own and comes up on time;
    /// the later entry then finds nothing to do.
    #[test]
    fn an_earlier_deadline_is_queued_ahead_of_a_later_one() {
        let mut slots = Slots::default();
        let a = slots.take();
        slots.start_deadline(a, Direction::Read, Duration::from_secs(60));
        slots.end_wait(a, Direction::Read);
        slots.start_deadline(a, Direction::Read, Duration::from_millis(10));
        let soon = Instant::now() + Duration::from_millis(20);
        let next = slots.expire(soon).expect("the 60 s entry is left");
        assert!(next > soon + Duration::from_secs(50));
        assert!(slots.take_expired(a, Direction::Read));
        // The next wait queues its own entry; the stale 60 s one is dropped unheeded.
        slots.start_deadline(a, Direction::Read, Duration::from_secs(120));
        let left = slots.expire(next).expect("the 120 s entry");
        assert!(left > next + Duration::from_secs(50));
        assert!(!slots.take_expired(a, Direction::Read));
        assert_eq!(slots.deadlines.len(), 1);
    }

    /// Stale entries (closed sockets, replaced deadlines) never outgrow the bound, however
    /// many waits come and go.
    #[test]
    fn the_heap_stays_bounded_under_churn_and_shrinking_timeouts() {
        let mut slots = Slots::default();
        let live: Vec<Token> = (0..8).map(|_| slots.take()).collect();
        for round in 0..20_000u64 {
            // A short connection that waits once with a long timeout, then closes.
            let short = slots.take();
            slots.start_deadline(short, Direction::Read, Duration::from_secs(60));
            slots.give_back(short);
            // A live one whose every wait is shorter than the last.
            let token = live[(round % 8) as usize];
            slots.end_wait(token, Direction::Read);
            let timeout = Duration::from_secs(1_000_000 - round);
            slots.start_deadline(token, Direction::Read, timeout);
            let bound = 4 * slots.slots.len() + DEADLINES_SLACK + 1;
            assert!(slots.deadlines.len() <= bound, "{}", slots.deadlines.len());
        }
    }
}
