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
//! - The shard's pump task collects the ready list with a non-blocking `epoll_wait`
//!   and wakes the waiters named; while it finds some, its next round runs behind the
//!   tasks it woke, and every [`YIELD_ROUNDS_MAX`] rounds after glommio has polled its
//!   rings (disk completions and timers wait for that).
//! - A round that finds nothing makes the pump wait for the epoll set itself to become
//!   readable, through glommio: one io_uring poll for all of the shard's connections,
//!   so an idle shard sleeps in glommio's reactor as before, and only its first
//!   wake-up after a quiet spell can interrupt it.
//!
//! ## Limits
//! Slots are reused (a generation in each token tells a stale event from a new
//! socket's); [`EVENTS_PER_ROUND_MAX`] events are taken per `epoll_wait` (more remain
//! on the list for the next round).

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

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

/// One registered socket's waiters; `generation` changes each time the slot is reused.
#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    in_use: bool,
    read: Option<Waker>,
    write: Option<Waker>,
}

#[derive(Debug, Default)]
struct Slots {
    slots: Vec<Slot>,
    free: Vec<u32>,
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
        let found = self.epoll.wait(events, 0).unwrap_or(0);
        let mut slots = self.slots.borrow_mut();
        for event in &events[..found] {
            slots.wake(Token::from_data(event.data()), event.events());
        }
        found
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
            .filter(|slot| slot.in_use && slot.generation == token.generation)
    }

    fn wake(&mut self, token: Token, events: EpollFlags) {
        let Some(slot) = self.slot(token) else {
            return;
        };
        let trouble = EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP;
        if events.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | trouble) {
            if let Some(waker) = slot.read.take() {
                waker.wake();
            }
        }
        if events.intersects(EpollFlags::EPOLLOUT | trouble) {
            if let Some(waker) = slot.write.take() {
                waker.wake();
            }
        }
    }
}

impl Registration {
    /// Leaves `cx`'s waker to be woken by the socket's next edge in `direction`. Call
    /// only after a non-blocking call found the socket empty (or full): an edge is a
    /// change, and one that came before is not repeated.
    pub fn wait(&self, direction: Direction, cx: &Context<'_>) {
        let mut slots = self.readiness.slots.borrow_mut();
        let Some(slot) = slots.slot(self.token) else {
            return;
        };
        let waiter = match direction {
            Direction::Read => &mut slot.read,
            Direction::Write => &mut slot.write,
        };
        match waiter {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => *waiter = Some(cx.waker().clone()),
        }
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
/// and timers are never held back by a stream of ready sockets.
async fn pump(readiness: Rc<Readiness>) {
    let mut events = vec![EpollEvent::empty(); EVENTS_PER_ROUND_MAX];
    let mut rounds_without_reactor = 0;
    loop {
        if readiness.collect(&mut events) == 0 {
            rounds_without_reactor = 0;
            if epoll_set_readable(&readiness.epoll).await.is_err() {
                // No io_uring poll could be made: go on a round at a time rather than stop.
                glommio::timer::sleep(ROUND_TIMER).await;
            }
        } else if rounds_without_reactor < YIELD_ROUNDS_MAX {
            rounds_without_reactor += 1;
            futures_lite::future::yield_now().await;
        } else {
            rounds_without_reactor = 0;
            glommio::timer::sleep(ROUND_TIMER).await;
        }
    }
}

/// Waits in glommio's reactor until the epoll set has something on its ready list.
///
/// glommio 0.9 offers no readiness wait for a raw descriptor; a glommio socket made
/// from one arms an io_uring read-readiness poll on it at once, and its first read
/// waits for that poll — which is all that is used of it. It is given its own
/// duplicate of the set's descriptor, closed when it is dropped.
async fn epoll_set_readable(epoll: &Epoll) -> io::Result<()> {
    let fd: OwnedFd = epoll.0.as_fd().try_clone_to_owned()?;
    let raw = fd.into_raw_fd();
    #[allow(unsafe_code)]
    // SAFETY: `raw` is a descriptor this function owns (a fresh duplicate, released by
    // `into_raw_fd`); the glommio socket takes it over and closes it when dropped.
    let mut watcher =
        unsafe { <glommio::net::UnixStream as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    let mut byte = [0u8; 1];
    // Ready (with an error: an epoll set is not a socket) once the poll has fired.
    let _ = std::future::poll_fn(|cx| {
        futures_lite::AsyncRead::poll_read(std::pin::Pin::new(&mut watcher), cx, &mut byte)
            .map(|_| Ok::<(), io::Error>(()))
    })
    .await;
    Ok(())
}

/// Polls a non-blocking call on a registered socket: its result, or — when it would
/// block — the waker left for the socket's next edge in `direction` and `Pending`.
pub fn poll_io(
    registration: &Registration,
    direction: Direction,
    cx: &Context<'_>,
    mut call: impl FnMut() -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        let result = call();
        match &result {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                registration.wait(direction, cx);
                return Poll::Pending;
            }
            _ => return Poll::Ready(result),
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
}
