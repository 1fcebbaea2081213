//! The shard's one timer ([`ShardClock`]) and the wake-up that cuts its idle sleep
//! short ([`Alarm`]).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use std::rc::Rc;

use ron_io::tls::ReloadableCert;
use ron_link::counters::FrontCounters;
use ron_link::dht::DhtClient;
use ron_link::link::{ShardLink, REPORT_PERIOD_MS};
use ron_shards::Shard;

use super::operator::{operator_request, ChecksRunning, Operated};
use crate::admission::Admission;
use crate::blocked::Blocked;
use crate::limits;

/// The shard's one timer, until the stop flag (SIGINT/SIGTERM, or a failed shard) is
/// set. While the shard has connections it is the heartbeat: it wakes every
/// [`limits::HEARTBEAT_PERIOD`], and a wake later than that means a task held the
/// reactor. Without connections it sleeps [`limits::IDLE_TICK`], or until the first
/// connection arrives, so an idle node stays asleep (docs/OPERATIONS.md "Idle cost").
/// It is the shard's end of the control link: a message put in the shard's inbox (an
/// operator's request, a policy) cuts its sleep short and is taken at once, and every
/// [`REPORT_PERIOD_MS`] it reports.
pub(super) struct ShardClock<'a> {
    pub admission: &'a Admission,
    pub shard: &'a Rc<Shard>,
    /// Operator checks running on the shard.
    pub checks_running: &'a ChecksRunning,
    pub blocked: &'a Rc<Blocked>,
    pub dht: Option<&'a DhtClient>,
    pub certificate: Option<&'a ReloadableCert>,
    pub metrics: &'a FrontCounters,
    pub link: &'a ShardLink,
    pub stop: &'a AtomicBool,
    pub first_connection: &'a Alarm,
}

impl ShardClock<'_> {
    pub async fn run(&self) {
        let report_period = Duration::from_millis(REPORT_PERIOD_MS);
        let mut next_report = Instant::now() + report_period;
        while !self.stop.load(Ordering::Relaxed) {
            let busy = self.metrics.connections_open.load(Ordering::Relaxed) > 0;
            let due = match busy {
                true => self.beat().await,
                false => self.doze().await,
            };
            let now = Instant::now();
            if let Some(due) = due {
                self.admission.heartbeat(now.saturating_duration_since(due));
            }
            let operated = Operated {
                shard: self.shard,
                checks_running: self.checks_running,
                blocked: self.blocked,
                dht: self.dht,
                certificate: self.certificate,
            };
            self.admission
                .take_messages(self.link, |message| operator_request(&operated, message));
            self.shard.send_announcements();
            if now >= next_report {
                self.admission.report(self.link);
                next_report = now + report_period;
            }
        }
    }

    /// One heartbeat, or less when a message is put in the inbox: returns when the
    /// heartbeat was due (`None` when cut short).
    async fn beat(&self) -> Option<Instant> {
        let due = Instant::now() + limits::HEARTBEAT_PERIOD;
        let beat = async {
            glommio::timer::sleep(limits::HEARTBEAT_PERIOD).await;
            Some(due)
        };
        let message = async {
            self.link.message_put().await;
            None
        };
        futures_lite::future::or(beat, message).await
    }

    /// Sleeps until the idle tick, the first connection or a message in the inbox; no
    /// heartbeat is due.
    async fn doze(&self) -> Option<Instant> {
        let idle = async {
            glommio::timer::sleep(limits::IDLE_TICK).await;
        };
        let woken = futures_lite::future::or(self.first_connection.wait(), self.link.message_put());
        futures_lite::future::or(idle, woken).await;
        None
    }
}

/// A one-shot wake-up between tasks of one shard: `ring` wakes the task in `wait` (or
/// makes its next `wait` return at once).
#[derive(Default)]
pub(super) struct Alarm {
    rung: Cell<bool>,
    waiter: Cell<Option<std::task::Waker>>,
}

impl Alarm {
    pub fn ring(&self) {
        self.rung.set(true);
        if let Some(waker) = self.waiter.take() {
            waker.wake();
        }
    }

    async fn wait(&self) {
        std::future::poll_fn(|cx| match self.rung.replace(false) {
            true => std::task::Poll::Ready(()),
            false => {
                self.waiter.set(Some(cx.waker().clone()));
                std::task::Poll::Pending
            }
        })
        .await
    }
}
