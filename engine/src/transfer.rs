//! Bodies in both directions: a deadline that grows with the bytes moved, and the
//! in-flight slot given back while the peer is what we wait for.
//!
//! An idle timer restarts on any progress, so a peer reading (or sending) one byte every
//! few seconds holds a connection for ever. Instead each request gets a
//! [`TransferPace`]: its first `n` body bytes must be through by
//! `started + body_timeout + n / body_rate_min`. Every socket wait is bounded by the time
//! left for the bytes it moves, so the whole transfer is bounded, and a slow peer is cut
//! off once it falls behind the minimum rate (counted in `transfer_deadline_drops`).
//! What a fast start earns past the grace is spent before each wait, so a stall never
//! lasts more than the grace plus the time the next bytes are owed.
//!
//! A write the socket takes at once (the common case: every send is tried non-blocking
//! first) costs nothing more. Only when the socket is full — or, reading, empty — does
//! the request park its in-flight slot ([`Ticket::park`]) for the wait, so peers slower
//! than the node cannot fill the shard's in-flight gate.

use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future::poll_once;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use ron_link::counters::FrontCounters;

use crate::admission::{Parked, Ticket};
use crate::buffers::{self, BufferPool, PooledBuffer};
use crate::limits::{LINGER_BYTES_MAX, LINGER_MS};

/// A deadline too far to matter (a transfer that may take longer has no deadline).
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// When a transfer's bytes must be through: `grace` for the first, then at least
/// `rate_min_bytes_per_s`.
#[derive(Debug, Clone, Copy)]
pub struct TransferPace {
    started: Instant,
    grace: Duration,
    rate_min_bytes_per_s: u64,
}

impl TransferPace {
    pub fn new(started: Instant, grace: Duration, rate_min_bytes_per_s: u64) -> TransferPace {
        TransferPace {
            started,
            grace,
            rate_min_bytes_per_s: rate_min_bytes_per_s.max(1),
        }
    }

    pub fn rate_min_bytes_per_s(&self) -> u64 {
        self.rate_min_bytes_per_s
    }

    /// When the first `bytes` bytes of the transfer must be through.
    pub fn deadline(&self, bytes: u64) -> Instant {
        let micros = u128::from(bytes) * 1_000_000 / u128::from(self.rate_min_bytes_per_s);
        let allowed = Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX));
        self.started
            .checked_add(self.grace.saturating_add(allowed))
            .unwrap_or(self.started + NEVER)
    }

    /// Spends the credit a fast start earned past `grace`: once the first `moved` bytes
    /// are through by `now`, they may be due at most `grace` later. Without this, early
    /// speed bought silence — a peer that took 48 MiB at once at a minimum rate of
    /// 1 MiB/s could then stall for 48 s, and each MiB more for another second — and a
    /// stall is what holds a connection and its buffers. With it, a stall lasts at most
    /// `grace` plus the time the next bytes are owed (nginx's `send_timeout` between two
    /// writes, and the minimum rate besides).
    pub fn spend_credit_past_grace(&mut self, moved: u64, now: Instant) {
        let latest = now.checked_add(self.grace).unwrap_or(now + NEVER);
        if let Some(excess) = self.deadline(moved).checked_duration_since(latest) {
            self.started = self.started.checked_sub(excess).unwrap_or(self.started);
        }
    }

    /// Leaves out of the transfer's time `held`, time the node itself held it back (a
    /// placement copy waiting on its own pace): the minimum rate is the peer's to keep.
    pub fn excuse(&mut self, held: Duration) {
        self.started = self.started.checked_add(held).unwrap_or(self.started);
    }

    /// Time left at `now` to get the first `bytes` bytes through; `None` once late.
    pub fn time_left(&self, bytes: u64, now: Instant) -> Option<Duration> {
        self.deadline(bytes)
            .checked_duration_since(now)
            .filter(|left| !left.is_zero())
    }
}

/// One request's transfer: its pace and the body bytes it has moved so far.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    pub pace: TransferPace,
    pub moved: u64,
}

impl Transfer {
    pub fn new(pace: TransferPace) -> Transfer {
        Transfer { pace, moved: 0 }
    }

    /// The time left for the next `len` bytes, or the deadline error (counted): what the
    /// bytes so far earned past the grace spent first
    /// ([`TransferPace::spend_credit_past_grace`]).
    fn wait_limit(&mut self, len: usize, metrics: &FrontCounters) -> io::Result<Duration> {
        let now = Instant::now();
        self.pace.spend_credit_past_grace(self.moved, now);
        let through = self.moved + len as u64;
        self.pace
            .time_left(through, now)
            .ok_or_else(|| behind(metrics))
    }
}

fn behind(metrics: &FrontCounters) -> io::Error {
    FrontCounters::add(&metrics.transfer_deadline_drops, 1);
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the peer fell behind the transfer deadline",
    )
}

/// Counts a socket wait that ran out as a deadline drop.
fn counted(e: io::Error, metrics: &FrontCounters) -> io::Error {
    if e.kind() == io::ErrorKind::TimedOut {
        FrontCounters::add(&metrics.transfer_deadline_drops, 1);
    }
    e
}

/// The close after an answer that left bytes of the client's unread waits — up to
/// [`LINGER_MS`], reading and dropping at most [`LINGER_BYTES_MAX`] — for the client to
/// stop sending: a socket closed with bytes unread is reset, and a client still sending
/// would see the reset, not the answer (RFC 9112 §9.6; nginx's `lingering_close`). The
/// answer has gone, and the sending side is shut. A read buffer is lent by `pool` only
/// while bytes are there to drop: a client that sends nothing more holds none.
pub(crate) async fn linger<R: AsyncRead + Unpin>(
    r: &mut R,
    pool: &Rc<BufferPool>,
    set_timeout: impl Fn(&R, Duration),
) {
    let deadline = Instant::now() + Duration::from_millis(LINGER_MS);
    let mut dropped = 0;
    while dropped < LINGER_BYTES_MAX {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        set_timeout(r, left);
        match buffers::read_pooled(r, pool).await {
            Ok((_, 0)) | Err(_) => return,
            Ok((_, n)) => dropped += n,
        }
    }
}

/// A read waits at most as long as these bytes are owed, however large the buffer it
/// fills (a body read straight into a 512 KiB write buffer must not buy a slow peer
/// eight times the time a read into the connection's buffer gets).
const READ_WAIT_BYTES_MAX: usize = 64 * 1024;

/// Parks one request's slot for a wait (`None`: the wait holds no slot).
pub(crate) fn park_one<'a>(ticket: Option<&'a Ticket>) -> impl Fn() -> Option<Parked<'a>> + 'a {
    move || ticket.map(Ticket::park)
}

/// Writes all of `buf` within `transfer`'s deadline; while the socket is full, the
/// guard `park` returns is held (the waiting requests' slots given back).
/// `set_timeout` sets the socket's write timeout.
pub(crate) async fn write_all<W: AsyncWrite + Unpin, G>(
    w: &mut W,
    buf: &[u8],
    transfer: &mut Transfer,
    park: impl Fn() -> G,
    metrics: &FrontCounters,
    set_timeout: impl Fn(&W, Duration),
) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = match poll_once(w.write(&buf[done..])).await {
            Some(written) => written?,
            None => {
                let left = transfer.wait_limit(buf.len() - done, metrics)?;
                let _parked = park();
                set_timeout(w, left);
                w.write(&buf[done..])
                    .await
                    .map_err(|e| counted(e, metrics))?
            }
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        done += n;
        transfer.moved += n as u64;
    }
    Ok(())
}

/// Reads once into `buf` within `transfer`'s deadline (0 at end of stream); while
/// nothing has arrived, the guard `park` returns is held. `set_timeout` sets the
/// socket's read timeout.
pub(crate) async fn read<R: AsyncRead + Unpin, G>(
    r: &mut R,
    buf: &mut [u8],
    transfer: &mut Transfer,
    park: impl FnOnce() -> G,
    metrics: &FrontCounters,
    set_timeout: impl Fn(&R, Duration),
) -> io::Result<usize> {
    let n = match poll_once(r.read(buf)).await {
        Some(read) => read?,
        None => {
            let owed = buf.len().min(READ_WAIT_BYTES_MAX);
            let left = transfer.wait_limit(owed, metrics)?;
            let _parked = park();
            set_timeout(r, left);
            r.read(buf).await.map_err(|e| counted(e, metrics))?
        }
    };
    transfer.moved += n as u64;
    Ok(n)
}

/// [`read`] into a buffer `pool` lends only once bytes are there
/// ([`buffers::read_pooled`]): a connection waiting within its deadline — part way
/// through a frame, its uploads waiting for data — holds none. Holding one there, each
/// connection sending a byte a minute kept 64 KiB of the shard.
pub(crate) async fn read_pooled<R: AsyncRead + Unpin, G>(
    r: &mut R,
    pool: &Rc<BufferPool>,
    transfer: &mut Transfer,
    park: impl FnOnce() -> G,
    metrics: &FrontCounters,
    set_timeout: impl Fn(&R, Duration) -> Duration,
) -> io::Result<(PooledBuffer, usize)> {
    let (buf, n) = match poll_once(buffers::read_pooled(r, pool)).await {
        Some(read) => read?,
        None => {
            let left =
                transfer.wait_limit(pool.buffer_bytes().min(READ_WAIT_BYTES_MAX), metrics)?;
            let _parked = park();
            // A shorter wait the caller set is its own deadline's (a frame header's, an
            // upload's), which it answers and counts: only the transfer's own running
            // out is a transfer-deadline drop.
            let waited = set_timeout(r, left);
            let read = buffers::read_pooled(r, pool).await;
            match waited < left {
                true => read?,
                false => read.map_err(|e| counted(e, metrics))?,
            }
        }
    };
    transfer.moved += n as u64;
    Ok((buf, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_deadline_is_the_grace_plus_the_bytes_at_the_minimum_rate() {
        let t0 = Instant::now();
        let pace = TransferPace::new(t0, Duration::from_secs(60), 4096);
        assert_eq!(pace.deadline(0), t0 + Duration::from_secs(60));
        assert_eq!(pace.deadline(4096 * 10), t0 + Duration::from_secs(70));
        assert_eq!(
            pace.time_left(4096, t0 + Duration::from_secs(61)),
            None,
            "exactly at the deadline is late"
        );
        assert_eq!(
            pace.time_left(8192, t0 + Duration::from_secs(61)),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn a_rate_of_zero_is_read_as_one_byte_per_second_and_huge_counts_do_not_overflow() {
        let t0 = Instant::now();
        let pace = TransferPace::new(t0, Duration::from_secs(1), 0);
        assert_eq!(pace.deadline(2), t0 + Duration::from_secs(3));
        let far = TransferPace::new(t0, Duration::MAX, 1).deadline(u64::MAX);
        assert!(far > t0);
    }

    #[test]
    fn a_fast_start_buys_no_stall_past_the_grace() {
        let t0 = Instant::now();
        let mut pace = TransferPace::new(t0, Duration::from_secs(60), 4096);
        // 40 MiB through in 1 s: 10,240 s earned at 4 KiB/s.
        let moved = 40 << 20;
        let now = t0 + Duration::from_secs(1);
        assert!(pace.time_left(moved + 4096, now).unwrap() > Duration::from_secs(10_000));
        pace.spend_credit_past_grace(moved, now);
        assert_eq!(
            pace.time_left(moved + 4096, now),
            Some(Duration::from_secs(61)),
            "the grace, and the next bytes' second"
        );
        // A transfer behind its grace is not given more.
        let mut late = TransferPace::new(t0, Duration::from_secs(60), 4096);
        late.spend_credit_past_grace(4096, t0 + Duration::from_secs(30));
        assert_eq!(late.deadline(4096), t0 + Duration::from_secs(61));
    }

    proptest! {
        #[test]
        fn more_bytes_never_get_an_earlier_deadline(
            a in 0u64..1 << 40, b in 0u64..1 << 40, rate in 1u64..1 << 30,
        ) {
            let pace = TransferPace::new(Instant::now(), Duration::from_secs(5), rate);
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(pace.deadline(lo) <= pace.deadline(hi));
        }
    }
}
