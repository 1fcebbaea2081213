//! The pump's idle wait: a short quiet spell of a busy shard waited out in
//! `epoll_pwait2` on the shard's epoll set, instead of in glommio's reactor.
//!
//! ## Why
//! A pump round that finds no ready socket used to put the pump to sleep through
//! glommio 0.9's reactor: a watcher made on a duplicate of the set's descriptor (an
//! io_uring poll), the executor's run queue empty, two reactor turns that cancel and
//! re-arm glommio's preemption timers (about six `io_uring_enter` a sleep), the
//! watcher closed after. On the 2-vCPU VM that is 8–11 µs of the shard's CPU from one
//! empty round to the next, and a shard serving random 64 KiB ranges as fast as one
//! client CPU asks found its ready list empty every three or four ranges: about a fifth
//! of its core (docs/PERF.md, "A quiet spell waited out in epoll"). nginx's sleep is one
//! `epoll_wait`.
//!
//! ## How
//! The pump first yields (tasks already runnable go first: the wait blocks the thread),
//! then waits in `epoll_pwait2` for at most what is left of its budget. Events: woken
//! and handled like any round's, without the reactor. None: the spell was not short,
//! and the pump sleeps through the reactor as before.
//!
//! ## Bounds
//! While the thread blocks in `epoll_pwait2`, glommio's rings are not polled: disk
//! completions, timers, the mesh's messages from other shards and the control thread's
//! wait. So a pump blocks at most [`IDLE_WAIT_BUDGET`] in all between two visits to the
//! reactor (its sleeps, and every `YIELD_ROUNDS_MAX`-th round): whatever glommio holds
//! is seen at most that much later than before.
//! A wait that runs out is a spell the budget did not cover: the next spells sleep in
//! the reactor until one of them is shorter than the budget, so an idle or lightly
//! loaded shard does not pay a timed-out wait (a timer interrupt, two context
//! switches) per request. A kernel without `epoll_pwait2` (before 5.11) never waits
//! here. The call itself is [`crate::socket_calls::epoll_events_within`].

use std::io;
use std::time::Duration;

/// The most a pump blocks in `epoll_pwait2`, in all, between two visits to glommio's
/// reactor; also the longest quiet spell it waits out there.
pub const IDLE_WAIT_BUDGET: Duration = Duration::from_micros(50);

/// Whether the pump's next quiet spell is waited out in `epoll_pwait2`, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdleWaits {
    budget_left: Duration,
    /// The last wait ran out, and no sleep since was shorter than the budget.
    ran_out: bool,
    supported: bool,
}

impl IdleWaits {
    pub(crate) fn new() -> IdleWaits {
        IdleWaits {
            budget_left: IDLE_WAIT_BUDGET,
            ran_out: false,
            supported: true,
        }
    }

    /// How long the next quiet spell may be waited out in `epoll_pwait2`; `None`: the
    /// pump sleeps in glommio's reactor.
    pub(crate) fn next(&self) -> Option<Duration> {
        let waits = self.supported && !self.ran_out && !self.budget_left.is_zero();
        waits.then_some(self.budget_left)
    }

    /// What a wait that blocked for `blocked` returned; how many events it brought.
    pub(crate) fn waited(&mut self, outcome: io::Result<usize>, blocked: Duration) -> usize {
        self.budget_left = self.budget_left.saturating_sub(blocked);
        match outcome {
            Ok(0) => {
                self.ran_out = true;
                0
            }
            Ok(found) => found,
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                self.supported = false;
                0
            }
            // Interrupted: the pump sleeps in the reactor this time.
            Err(_) => 0,
        }
    }

    /// The pump slept in glommio's reactor for `slept`: the budget is whole again, and a
    /// spell shorter than it says the next ones may be waited out again.
    pub(crate) fn slept(&mut self, slept: Duration) {
        self.budget_left = IDLE_WAIT_BUDGET;
        if slept < IDLE_WAIT_BUDGET {
            self.ran_out = false;
        }
    }

    /// The pump went through glommio's reactor without sleeping.
    pub(crate) fn visited_reactor(&mut self) {
        self.budget_left = IDLE_WAIT_BUDGET;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn waits_spend_one_budget_between_visits_to_the_reactor() {
        let mut idle = IdleWaits::new();
        assert_eq!(idle.next(), Some(IDLE_WAIT_BUDGET));
        assert_eq!(idle.waited(Ok(3), 20 * US), 3);
        assert_eq!(idle.next(), Some(IDLE_WAIT_BUDGET - 20 * US));
        assert_eq!(idle.waited(Ok(1), 30 * US), 1);
        assert_eq!(
            idle.next(),
            None,
            "spent: the next spell sleeps in the reactor"
        );
        idle.visited_reactor();
        assert_eq!(idle.next(), Some(IDLE_WAIT_BUDGET));
    }

    #[test]
    fn a_wait_that_runs_out_stops_the_waits_until_a_short_sleep() {
        let mut idle = IdleWaits::new();
        assert_eq!(idle.waited(Ok(0), IDLE_WAIT_BUDGET), 0);
        assert_eq!(idle.next(), None);
        idle.slept(Duration::from_millis(3));
        assert_eq!(
            idle.next(),
            None,
            "a long sleep: the waits would run out too"
        );
        idle.visited_reactor();
        assert_eq!(idle.next(), None);
        idle.slept(12 * US);
        assert_eq!(idle.next(), Some(IDLE_WAIT_BUDGET));
    }

    #[test]
    fn a_kernel_without_the_call_never_waits_and_an_interrupted_wait_sleeps() {
        let mut idle = IdleWaits::new();
        assert_eq!(
            idle.waited(Err(io::Error::from_raw_os_error(libc::EINTR)), US),
            0
        );
        assert_eq!(idle.next(), Some(IDLE_WAIT_BUDGET - US));
        let missing = io::Error::from_raw_os_error(libc::ENOSYS);
        assert_eq!(idle.waited(Err(missing), Duration::ZERO), 0);
        idle.slept(US);
        assert_eq!(idle.next(), None);
    }
}
