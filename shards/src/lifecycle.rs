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

/// The request to stop, shared by a shard's background services and the tasks that
/// wait beside them (read-through fetches). Set once; never cleared.
#[derive(Clone, Default)]
pub struct StopSignal(Rc<StopState>);

#[derive(Default)]
struct StopState {
    stopped: Cell<bool>,
    /// The waker of each [`Stopped`] future waiting now, by its ticket; a future takes
    /// its entry out when it ends, so this holds only the waiters alive (a waiter per
    /// task that exists: services, fetches in flight), never those of ended tasks.
    waiting: RefCell<Vec<(u64, Waker)>>,
    next_ticket: Cell<u64>,
}

impl std::fmt::Debug for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopSignal")
            .field("stopped", &self.is_stopped())
            .field("waiting", &self.0.waiting.borrow().len())
            .finish()
    }
}

/// Resolves once the signal is raised; leaves the signal's waiters when dropped.
struct Stopped<'a> {
    signal: &'a StopState,
    ticket: Option<u64>,
}

impl Future for Stopped<'_> {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.signal.stopped.get() {
            return Poll::Ready(());
        }
        let mut waiting = self.signal.waiting.borrow_mut();
        match self.ticket {
            Some(ticket) => {
                if let Some((_, waker)) = waiting.iter_mut().find(|(t, _)| *t == ticket) {
                    if !waker.will_wake(cx.waker()) {
                        waker.clone_from(cx.waker());
                    }
                }
            }
            None => {
                let ticket = self.signal.next_ticket.get();
                self.signal.next_ticket.set(ticket + 1);
                waiting.push((ticket, cx.waker().clone()));
                drop(waiting);
                self.ticket = Some(ticket);
            }
        }
        Poll::Pending
    }
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket {
            let mut waiting = self.signal.waiting.borrow_mut();
            if let Some(at) = waiting.iter().position(|(t, _)| *t == ticket) {
                waiting.swap_remove(at);
            }
        }
    }
}

impl StopSignal {
    /// Asks every service holding this signal to stop, and wakes those waiting.
    pub fn stop(&self) {
        self.0.stopped.set(true);
        let waiting = std::mem::take(&mut *self.0.waiting.borrow_mut());
        for (_, waker) in waiting {
            waker.wake();
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.0.stopped.get()
    }

    /// Resolves once [`StopSignal::stop`] has been called.
    pub async fn stopped(&self) {
        Stopped {
            signal: &self.0,
            ticket: None,
        }
        .await
    }

    /// Futures waiting for the stop now (a test's view of the list of waiters).
    pub fn waiting(&self) -> usize {
        self.0.waiting.borrow().len()
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

/// Tasks under way that a stop waits for without holding their handles (detached tasks
/// that end by themselves): each holds a [`Counted`] until it ends.
#[derive(Debug, Default, Clone)]
pub struct TaskCount(Rc<Cell<usize>>);

/// One task counted in a [`TaskCount`] until it drops (at the task's end, or with it).
#[derive(Debug)]
pub struct Counted(Rc<Cell<usize>>);

/// How often [`TaskCount::wait_none`] looks again.
const TASK_COUNT_POLL: Duration = Duration::from_millis(10);

impl TaskCount {
    pub fn start(&self) -> Counted {
        self.0.set(self.0.get() + 1);
        Counted(Rc::clone(&self.0))
    }

    pub fn get(&self) -> usize {
        self.0.get()
    }

    /// Waits until no counted task runs or `within` has passed; how many still run.
    pub async fn wait_none(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        while self.get() > 0 && Instant::now() < deadline {
            glommio::timer::sleep(TASK_COUNT_POLL).await;
        }
        self.get()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Runs `futures` concurrently on this task and returns their outputs in order.
pub async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (future, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                if let std::task::Poll::Ready(done) = future.as_mut().poll(cx) {
                    *output = Some(done);
                }
            }
        }
        match outputs.iter().all(Option::is_some) {
            true => std::task::Poll::Ready(()),
            false => std::task::Poll::Pending,
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
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
    fn a_task_count_waits_for_counted_tasks_and_gives_up_at_its_bound() {
        run(async {
            let count = TaskCount::default();
            let counted = count.start();
            let task = glommio::spawn_local(async move {
                glommio::timer::sleep(Duration::from_millis(30)).await;
                drop(counted);
            });
            assert_eq!(count.get(), 1);
            assert_eq!(count.wait_none(Duration::from_secs(5)).await, 0);
            task.await;
            let stuck = count.start();
            let started = Instant::now();
            assert_eq!(count.wait_none(Duration::from_millis(50)).await, 1);
            assert!(started.elapsed() < Duration::from_secs(2), "bounded");
            drop(stuck);
            assert_eq!(count.get(), 0);
        });
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
    fn a_waiter_that_ends_leaves_the_signal() {
        run(async {
            let signal = StopSignal::default();
            for _ in 0..100 {
                let done = signal.unless_stopped(async { 7 }).await;
                assert_eq!(done, Some(7));
                let slept = signal.sleep(Duration::from_millis(1)).await;
                assert!(slept);
            }
            assert_eq!(signal.waiting(), 0, "ended waiters left no waker behind");
            let waiter = {
                let signal = signal.clone();
                glommio::spawn_local(async move { signal.sleep(Duration::from_secs(60)).await })
            };
            glommio::timer::sleep(Duration::from_millis(5)).await;
            assert_eq!(signal.waiting(), 1);
            signal.stop();
            assert!(!waiter.await);
            assert_eq!(signal.waiting(), 0);
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
