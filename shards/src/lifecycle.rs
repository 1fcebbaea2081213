//! The lifecycle of a shard's background services (docs/design/lifecycle.md): each is
//! a task started into the shard's background queue with a name, and stopped by one
//! [`StopSignal`] that every service checks at the points where stopping leaves
//! nothing half done — between objects, batches and write-backs — and that cuts its
//! waits (timers, wake-up channels) short. [`BackgroundTasks::stop`] raises the signal
//! and awaits the tasks in the order they were started, all within one deadline; a task
//! still running at the deadline is cancelled (its work abandoned at an await point),
//! named in the log, and counted in the answer.
//!
//! Seastar's sharded services and iroh-blobs' store are the model: started, stopped and
//! awaited, in order, never forgotten.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::ShardError;

/// Tasks that may wait on one signal at once: the shard's services and the few tasks
/// they wait beside. Past it a waiting task is still woken (by polling), never lost.
const STOP_WAITERS_MAX: usize = 16;

/// The request to stop, shared by a shard's background services. Set once; never
/// cleared.
#[derive(Clone, Default)]
pub struct StopSignal(Rc<StopState>);

#[derive(Default)]
struct StopState {
    stopped: Cell<bool>,
    /// One waker per task waiting (deduplicated with `will_wake`), woken by `stop`.
    waiting: RefCell<Vec<Waker>>,
}

impl std::fmt::Debug for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopSignal")
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

impl StopSignal {
    /// Asks every service holding this signal to stop, and wakes those waiting.
    pub fn stop(&self) {
        self.0.stopped.set(true);
        for waker in self.0.waiting.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.0.stopped.get()
    }

    /// Resolves once [`StopSignal::stop`] has been called.
    pub async fn stopped(&self) {
        std::future::poll_fn(|cx| {
            if self.is_stopped() {
                return Poll::Ready(());
            }
            let mut waiting = self.0.waiting.borrow_mut();
            if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
                if waiting.len() >= STOP_WAITERS_MAX {
                    // Full: this task is woken at once and polls again, so it sees the
                    // stop on a later poll rather than never.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                waiting.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// `work`'s output, or `None` if a stop came first (then `work` is dropped).
    pub async fn unless_stopped<F: Future>(&self, work: F) -> Option<F::Output> {
        futures_lite::future::or(async { Some(work.await) }, async {
            self.stopped().await;
            None
        })
        .await
    }

    /// Sleeps `duration`, or less if a stop comes; `false` if it did.
    pub async fn sleep(&self, duration: Duration) -> bool {
        self.unless_stopped(glommio::timer::sleep(duration))
            .await
            .is_some()
    }
}

/// `work`'s output if it finishes within `limit`, else `None` (then `work` is dropped: a
/// glommio task handle dropped so is cancelled).
pub async fn finished_within<F: Future>(limit: Duration, work: F) -> Option<F::Output> {
    futures_lite::future::or(async { Some(work.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

/// A shard's running background services, in the order they were started.
#[derive(Debug, Default)]
pub struct BackgroundTasks {
    signal: StopSignal,
    running: Vec<(&'static str, glommio::Task<()>)>,
}

impl BackgroundTasks {
    /// The signal the services started here stop on.
    pub fn signal(&self) -> StopSignal {
        self.signal.clone()
    }

    /// Starts `service` (named for the log) in `queue`.
    pub fn start(
        &mut self,
        name: &'static str,
        queue: glommio::TaskQueueHandle,
        service: impl Future<Output = ()> + 'static,
    ) -> Result<(), ShardError> {
        let task = glommio::spawn_local_into(service, queue).map_err(|e| {
            let op = "start a background service in the shard's task queue";
            ShardError::io(op, name)(std::io::Error::other(e.to_string()))
        })?;
        self.running.push((name, task));
        Ok(())
    }

    /// Raises the stop signal and waits for every service, in start order, until
    /// `within` has passed; returns the names of those cancelled at the deadline.
    pub async fn stop(self, within: Duration) -> Vec<&'static str> {
        self.signal.stop();
        let deadline = Instant::now() + within;
        let mut abandoned = Vec::new();
        for (name, task) in self.running {
            let left = deadline.saturating_duration_since(Instant::now());
            if finished_within(left, task).await.is_none() {
                tracing::warn!(
                    service = name,
                    within_ms = within.as_millis() as u64,
                    "background service did not stop in time; its work in progress is abandoned"
                );
                abandoned.push(name);
            }
        }
        abandoned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(test: impl Future<Output = T> + 'static) -> T {
        glommio::LocalExecutorBuilder::default()
            .make()
            .expect("an executor")
            .run(test)
    }

    #[test]
    fn a_stop_cuts_a_sleep_short_and_every_waiter_sees_it() {
        run(async {
            let signal = StopSignal::default();
            let sleepers: Vec<_> = (0..3)
                .map(|_| {
                    let signal = signal.clone();
                    glommio::spawn_local(async move { signal.sleep(Duration::from_secs(60)).await })
                })
                .collect();
            glommio::timer::sleep(Duration::from_millis(5)).await;
            let started = Instant::now();
            signal.stop();
            for sleeper in sleepers {
                assert!(!sleeper.await, "a stopped sleep reports the stop");
            }
            assert!(started.elapsed() < Duration::from_secs(5));
            assert!(
                !signal.sleep(Duration::from_secs(60)).await,
                "stopped stays stopped"
            );
        });
    }

    #[test]
    fn work_that_finishes_first_is_not_lost() {
        run(async {
            let signal = StopSignal::default();
            assert_eq!(signal.unless_stopped(async { 7 }).await, Some(7));
            signal.stop();
            assert_eq!(
                signal.unless_stopped(std::future::pending::<u8>()).await,
                None
            );
        });
    }

    #[test]
    fn stop_waits_for_services_and_cancels_one_that_ignores_the_signal() {
        run(async {
            let queue = glommio::executor().create_task_queue(
                glommio::Shares::default(),
                glommio::Latency::NotImportant,
                "test-background",
            );
            let mut tasks = BackgroundTasks::default();
            let finished = Rc::new(Cell::new(false));
            let (signal, done) = (tasks.signal(), Rc::clone(&finished));
            let polite = async move {
                signal.stopped().await;
                done.set(true);
            };
            tasks.start("polite", queue, polite).unwrap();
            tasks
                .start("deaf", queue, std::future::pending::<()>())
                .unwrap();
            let abandoned = tasks.stop(Duration::from_millis(50)).await;
            assert!(finished.get(), "the service that heeds the signal finished");
            assert_eq!(abandoned, vec!["deaf"]);
        });
    }
}
