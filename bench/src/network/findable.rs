//! How soon a fresh object is findable: each object is resolved from another node from
//! the moment its upload is acknowledged, again every [`POLL_PAUSE`] until a provider is
//! named or [`FINDABLE_WAIT`] has passed.
//!
//! The polls are one schedule for every object, earliest due first, served by a
//! prober thread per object (at most [`PROBE_WORKERS_MAX`]), and it starts with the first
//! upload, not after the last: an object's time counts from its own acknowledgement,
//! and no object waits for a free prober while others are polled. A resolve that finds
//! nothing yet can take seconds (its query runs to the end), so fewer probers than
//! objects fall behind: 32 of them sent their polls 3.7–5.0 s late (p50) at 300 and
//! 1,000 nodes, longer than the nodes took to publish. How late each poll started
//! against its due time is reported ([`Findable::poll_lag_ms`]): a lag near the found
//! times would mean the harness, not the network, set them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use ron_codec::Address;

use super::figures::Summary;
use super::probe::exchange;
use super::ADMIN_TIMEOUT;

/// How long a fresh object may take to be resolvable before it counts as not found.
pub const FINDABLE_WAIT: Duration = Duration::from_secs(30);
/// Pause between one object's resolves.
const POLL_PAUSE: Duration = Duration::from_millis(250);
/// Resolves under way at once, at most: one per object up to this many.
const PROBE_WORKERS_MAX: usize = 512;
/// A prober's stack: it only waits on a socket and parses a short JSON answer.
const PROBER_STACK_BYTES: usize = 256 * 1024;

/// How fresh objects became findable.
#[derive(Debug, Clone, Default)]
pub struct Findable {
    /// From an upload's acknowledgement to the answer of the first resolve naming a
    /// provider, s.
    pub found_s: Summary,
    /// Objects no resolve named a provider for within [`FINDABLE_WAIT`].
    pub not_found: usize,
    /// Every resolve's latency, ms.
    pub resolve_ms: Summary,
    /// How long after its due time each resolve was sent, ms.
    pub poll_lag_ms: Summary,
    pub upload_ms: Summary,
    /// As the nodes saw it: from each stored object's announcement (uploads and the
    /// copies made of them) to the first peer that took its provider record, s — the
    /// upper bounds of `ron_dht_publish_delay_seconds`'s buckets, summed over the nodes.
    pub publish_delay_s: Summary,
    /// As the nodes counted them: optimistic provides to peers of a routing table and to
    /// peers connected while a lookup ran (`ron_dht_publish_early_requests_total`).
    pub early_requests: [u64; 2],
}

/// One object to find: where it is resolved and when its upload was acknowledged.
struct Poll {
    due: Instant,
    object: usize,
    addr: Address,
    acked: Instant,
    /// The admin address of the node that resolves it.
    reader: SocketAddr,
}

impl PartialEq for Poll {
    fn eq(&self, other: &Poll) -> bool {
        (self.due, self.object) == (other.due, other.object)
    }
}

impl Eq for Poll {}

impl PartialOrd for Poll {
    fn partial_cmp(&self, other: &Poll) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Poll {
    fn cmp(&self, other: &Poll) -> std::cmp::Ordering {
        (self.due, self.object).cmp(&(other.due, other.object))
    }
}

#[derive(Default)]
struct Schedule {
    due: BinaryHeap<Reverse<Poll>>,
    /// No more objects will be added.
    closed: bool,
}

#[derive(Default)]
struct Outcomes {
    found_s: Vec<f64>,
    not_found: usize,
    resolve_ms: Vec<f64>,
    poll_lag_ms: Vec<f64>,
}

/// The probers' shared state: objects are added as their uploads are acknowledged
/// ([`Prober::add`]); [`Prober::run`] serves the schedule until it is closed and empty.
#[derive(Default)]
pub(super) struct Prober {
    schedule: Mutex<Schedule>,
    changed: Condvar,
    outcomes: Mutex<Outcomes>,
}

impl Prober {
    /// Object `object` (`addr`), acknowledged at `acked`, is resolved at `reader` from now.
    pub(super) fn add(&self, object: usize, addr: Address, acked: Instant, reader: SocketAddr) {
        let poll = Poll {
            due: acked,
            object,
            addr,
            acked,
            reader,
        };
        self.lock_schedule().due.push(Reverse(poll));
        self.changed.notify_one();
    }

    /// No more objects will be added: the probers end once every one is settled.
    pub(super) fn close(&self) {
        self.lock_schedule().closed = true;
        self.changed.notify_all();
    }

    /// Serves the schedule with a thread per object (`objects`, at most
    /// [`PROBE_WORKERS_MAX`]; fewer if the system gives fewer, and this thread serves
    /// it too) until it is closed and empty.
    pub(super) fn run(&self, objects: usize) {
        let serve = || {
            while let Some(poll) = self.next_due() {
                self.resolve_once(poll);
            }
        };
        std::thread::scope(|scope| {
            for _ in 1..objects.clamp(1, PROBE_WORKERS_MAX) {
                let spawned = std::thread::Builder::new()
                    .stack_size(PROBER_STACK_BYTES)
                    .spawn_scoped(scope, serve);
                if spawned.is_err() {
                    break;
                }
            }
            serve();
        });
    }

    /// What was measured.
    pub(super) fn findable(self) -> Findable {
        let outcomes = self
            .outcomes
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        Findable {
            found_s: Summary::of(outcomes.found_s),
            not_found: outcomes.not_found,
            resolve_ms: Summary::of(outcomes.resolve_ms),
            poll_lag_ms: Summary::of(outcomes.poll_lag_ms),
            upload_ms: Summary::default(),
            publish_delay_s: Summary::default(),
            early_requests: [0; 2],
        }
    }

    /// Waits for the earliest poll to fall due; `None` once the schedule is closed and
    /// empty.
    fn next_due(&self) -> Option<Poll> {
        let mut schedule = self.lock_schedule();
        loop {
            let now = Instant::now();
            match schedule.due.peek() {
                Some(Reverse(poll)) if poll.due <= now => {
                    return schedule.due.pop().map(|Reverse(poll)| poll);
                }
                Some(Reverse(poll)) => {
                    let wait = poll.due - now;
                    schedule = self
                        .changed
                        .wait_timeout(schedule, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                None if schedule.closed => return None,
                None => {
                    schedule = self
                        .changed
                        .wait(schedule)
                        .unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }

    /// One resolve of `poll`'s object: found, given up, or put back due after a pause.
    fn resolve_once(&self, mut poll: Poll) {
        let asked = Instant::now();
        let lag_ms = asked.saturating_duration_since(poll.due).as_secs_f64() * 1e3;
        let path = format!("/resolve?hash={}", poll.addr);
        let answer = exchange(poll.reader, "GET", &path, b"", ADMIN_TIMEOUT);
        let answered = Instant::now();
        let named = answer
            .ok()
            .and_then(|a| a.json())
            .is_some_and(|v| v["providers"].as_array().is_some_and(|p| !p.is_empty()));
        {
            let mut outcomes = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
            outcomes
                .resolve_ms
                .push((answered - asked).as_secs_f64() * 1e3);
            outcomes.poll_lag_ms.push(lag_ms);
            let since_ack = answered - poll.acked;
            match (named, since_ack < FINDABLE_WAIT) {
                (true, _) => outcomes.found_s.push(since_ack.as_secs_f64()),
                (false, false) => outcomes.not_found += 1,
                (false, true) => {}
            }
            if named || since_ack >= FINDABLE_WAIT {
                return;
            }
        }
        poll.due = answered + POLL_PAUSE;
        self.lock_schedule().due.push(Reverse(poll));
        self.changed.notify_one();
    }

    fn lock_schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The series of the histogram `family` in a node's `/metrics`: (upper bound in
/// seconds, cumulative count), in order, `+Inf` last.
pub(super) fn histogram_buckets(metrics: &str, family: &str) -> Vec<(f64, u64)> {
    let prefix = format!("{family}_bucket{{le=\"");
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(prefix.as_str())?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = match le {
                "+Inf" => f64::INFINITY,
                le => le.parse().ok()?,
            };
            Some((le, count.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// The summary of a cumulative histogram summed over nodes: each quantile is the upper
/// bound of the first bucket that reaches it.
pub(super) fn bucket_summary(buckets: &[(f64, u64)]) -> Summary {
    let count = buckets.last().map_or(0, |(_, c)| *c);
    let at = |q: f64| {
        let want = ((count as f64) * q).ceil().max(1.0) as u64;
        buckets
            .iter()
            .find(|(_, c)| *c >= want)
            .map_or(f64::INFINITY, |(le, _)| *le)
    };
    if count == 0 {
        return Summary::default();
    }
    Summary {
        count: count as usize,
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: at(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_delays_are_read_from_the_histogram_and_summed() {
        let node = "# TYPE ron_dht_publish_delay_seconds histogram\n\
            ron_dht_publish_delay_seconds_bucket{le=\"0.1\"} 0\n\
            ron_dht_publish_delay_seconds_bucket{le=\"0.5\"} 6\n\
            ron_dht_publish_delay_seconds_bucket{le=\"2\"} 9\n\
            ron_dht_publish_delay_seconds_bucket{le=\"+Inf\"} 10\n\
            ron_dht_publish_delay_seconds_sum 12.5\n";
        let buckets = histogram_buckets(node, "ron_dht_publish_delay_seconds");
        assert_eq!(
            buckets,
            vec![(0.1, 0), (0.5, 6), (2.0, 9), (f64::INFINITY, 10)]
        );
        let summary = bucket_summary(&buckets);
        assert_eq!(summary.count, 10);
        assert_eq!((summary.p50, summary.p90), (0.5, 2.0));
        assert_eq!(summary.p99, f64::INFINITY);
        assert_eq!(bucket_summary(&[]), Summary::default());
    }

    fn poll(object: usize, due: Instant) -> Poll {
        Poll {
            due,
            object,
            addr: Address::of(&object.to_le_bytes()),
            acked: due,
            reader: "127.0.0.1:1".parse().unwrap(),
        }
    }

    #[test]
    fn the_earliest_poll_is_served_first() {
        let prober = Prober::default();
        let now = Instant::now();
        let later = now + Duration::from_millis(5);
        prober.lock_schedule().due.push(Reverse(poll(1, later)));
        prober.lock_schedule().due.push(Reverse(poll(2, now)));
        prober.close();
        assert_eq!(prober.next_due().map(|p| p.object), Some(2));
        assert_eq!(prober.next_due().map(|p| p.object), Some(1));
        assert!(Instant::now() >= later);
        assert!(prober.next_due().is_none());
    }

    /// A node whose resolves each take `answer_after` and name one provider.
    fn slow_resolver(answer_after: Duration) -> SocketAddr {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut head = [0u8; 1024];
                    let _ = stream.read(&mut head);
                    std::thread::sleep(answer_after);
                    let body = br#"{"providers":[{"oap":"127.0.0.1:1"}]}"#;
                    let reply =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                    let _ = stream.write_all(reply.as_bytes());
                    let _ = stream.write_all(body);
                });
            }
        });
        addr
    }

    #[test]
    fn objects_uploaded_together_are_each_polled_when_due_though_resolves_are_slow() {
        // 64 objects acknowledged at once, each resolve answered after 400 ms: with a
        // fixed pool of 32 probers the second half would be polled 400 ms late.
        let objects = 64;
        let reader = slow_resolver(Duration::from_millis(400));
        let prober = Prober::default();
        let now = Instant::now();
        for object in 0..objects {
            prober.add(object, Address::of(&object.to_le_bytes()), now, reader);
        }
        prober.close();
        prober.run(objects);
        let found = prober.findable();
        assert_eq!((found.found_s.count, found.not_found), (objects, 0));
        assert!(
            found.poll_lag_ms.max < 200.0,
            "polls sent up to {:.0} ms late",
            found.poll_lag_ms.max
        );
    }

    #[test]
    fn a_waiting_prober_wakes_for_an_object_added_and_ends_when_closed() {
        let prober = Prober::default();
        std::thread::scope(|scope| {
            let waiting = scope.spawn(|| {
                let first = prober.next_due().map(|p| p.object);
                (first, prober.next_due().is_none())
            });
            std::thread::sleep(Duration::from_millis(20));
            let reader = "127.0.0.1:1".parse().unwrap();
            prober.add(7, Address::of(b"x"), Instant::now(), reader);
            std::thread::sleep(Duration::from_millis(20));
            prober.close();
            assert_eq!(waiting.join().unwrap(), (Some(7), true));
        });
    }
}
