//! Waking a shard whose executor went to sleep with its work still to run.
//!
//! glommio 0.9's run loop arms its preemption timer (100 ms), then runs the task
//! queues; if the timer has already fired by then, it runs none and reports "nothing
//! ran", which the loop reads as "nothing to run" and parks (fixed upstream in
//! glommio/glommio#53, not released on crates.io). The park sleeps until a completion
//! or a timer: in a shard's first moments, before its clock's timer exists, there is
//! neither, and the shard never becomes ready. It takes only a shard thread kept off
//! its CPU for 100 ms at that point — a node started among hundreds on a loaded host
//! (three starts in seven of 300 nodes on two cores). Later in a shard's life its
//! clock's timer bounds such a sleep.
//!
//! A signal ends the sleep: `io_uring_enter` returns `EINTR`, which glommio takes as a
//! wake-up, and the loop runs its queues. `serve` signals each shard still not ready
//! [`KICK_PERIOD`] after the start, and every period after; the handler does nothing.
//! A shard opening its stores (`Shard::start`: merging, replaying, compacting) is not
//! kicked: that work never awaits, so its executor cannot be asleep, and a signal there
//! interrupts what may wait — LMDB's wait for its lock at an index's open failed the
//! shard with `EINTR` (`lifecycle.rs`
//! `an_index_held_locked_for_a_moment_delays_the_start_and_no_more`).

#![allow(unsafe_code)] // sigaction, pthread_kill: nothing else is shared with the handler

use std::os::unix::thread::JoinHandleExt;
use std::sync::Once;
use std::thread::JoinHandle;
use std::time::Duration;

/// The signal a shard is woken with: ignored by default, and nothing else in ron sends
/// or handles it.
pub(super) const KICK_SIGNAL: libc::c_int = libc::SIGURG;
/// How long a shard may take to start before it is first woken, and how often after.
pub(super) const KICK_PERIOD: Duration = Duration::from_secs(1);

extern "C" fn do_nothing(_: libc::c_int) {}

/// Installs the do-nothing handler for [`KICK_SIGNAL`] (once per process), without
/// `SA_RESTART`, so that a sleeping system call returns `EINTR`.
pub(super) fn install_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: a zeroed sigaction with a handler that touches nothing is valid;
        // sigemptyset initialises its mask before use.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = do_nothing as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            action.sa_flags = 0;
            let installed = libc::sigaction(KICK_SIGNAL, &action, std::ptr::null_mut());
            debug_assert_eq!(installed, 0, "sigaction({KICK_SIGNAL})");
        }
    });
}

/// Sends [`KICK_SIGNAL`] to the thread of `handle` (which must still run: a joined
/// handle cannot be passed). [`install_handler`] must have run first.
pub(super) fn kick<T>(handle: &JoinHandle<T>) {
    // SAFETY: the handle is not joined, so its pthread_t names a live or unjoined
    // thread; the handler for the signal is installed.
    unsafe {
        libc::pthread_kill(handle.as_pthread_t(), KICK_SIGNAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{mpsc, Arc, Mutex};
    use std::task::{Context, Poll, Waker};
    use std::time::Instant;

    /// A value handed to the executor from another thread: a wake from outside, the
    /// only thing that ends its park besides a kick.
    #[derive(Default)]
    struct Handed {
        value: AtomicU32,
        waker: Mutex<Option<Waker>>,
    }

    struct Receive(Arc<Handed>);

    impl Future for Receive {
        type Output = u32;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            *self.0.waker.lock().expect("not poisoned") = Some(cx.waker().clone());
            match self.0.value.load(Ordering::Acquire) {
                0 => Poll::Pending,
                v => Poll::Ready(v),
            }
        }
    }

    fn hand(handed: &Handed, value: u32) {
        handed.value.store(value, Ordering::Release);
        if let Some(waker) = handed.waker.lock().expect("not poisoned").take() {
            waker.wake();
        }
    }

    /// Voluntary context switches of thread `tid` of this process: each sleep counts one.
    fn sleeps_of(tid: i32) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
            .expect("the thread's status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("voluntary_ctxt_switches")
    }

    fn state_of(tid: i32) -> char {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
            .expect("the thread's stat");
        let after_name = &stat[stat.rfind(')').expect("a name") + 2..];
        after_name.chars().next().expect("a state")
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_kick_ends_a_parked_executors_sleep_and_it_carries_on() {
        install_handler();
        let (tid_tx, tid_rx) = mpsc::channel();
        let handed = Arc::new(Handed::default());
        let receive = Receive(Arc::clone(&handed));
        let executor = std::thread::spawn(move || {
            tid_tx
                .send(unsafe { libc::gettid() })
                .expect("the test waits");
            let executor = glommio::LocalExecutorBuilder::default()
                .make()
                .expect("an executor");
            // Parks with no timer and no I/O: only a hand-over (or a kick) wakes it.
            executor.run(receive)
        });
        let tid = tid_rx.recv().expect("the executor's thread id");
        wait_until("the executor parks", || {
            handed.waker.lock().expect("not poisoned").is_some() && state_of(tid) == 'S'
        });
        std::thread::sleep(Duration::from_millis(50));
        let parked = sleeps_of(tid);
        for _ in 0..3 {
            let before = sleeps_of(tid);
            kick(&executor);
            wait_until("the kick wakes the executor, which parks again", || {
                sleeps_of(tid) > before && state_of(tid) == 'S'
            });
        }
        assert!(sleeps_of(tid) >= parked + 3);
        assert!(!executor.is_finished(), "a kick is not an error");
        hand(&handed, 7);
        assert_eq!(executor.join().expect("no panic"), 7);
    }
}
