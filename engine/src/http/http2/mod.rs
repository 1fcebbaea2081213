//! HTTP/2 over TLS (ALPN `h2`): the `h2` crate does the framing, HPACK, flow control and
//! the protocol's own defences; each stream it accepts is served by the HTTP/1.1 front
//! end as a one-request connection ([`exchange`]), on the shard that accepted the
//! connection, so every route, admission rule and verification is the same on both.
//!
//! One task per connection drives it (reads frames, writes what streams queued) and
//! spawns one task per stream. Limits, for what a hostile client can stretch
//! (docs/design/http2.md):
//! - streams: at most [`H2_STREAMS_CONCURRENT_MAX`] open at once (SETTINGS); each is a
//!   request admitted like any other (in-flight gate, quotas);
//! - headers: the list at most `head_bytes_max` (SETTINGS_MAX_HEADER_LIST_SIZE), a
//!   HEADERS/CONTINUATION sequence cut off past it (h2 ≥ 0.4.4: CVE-2024-27316 and kin);
//! - resets: streams a client opens and resets before they are served count against
//!   [`H2_PENDING_ACCEPT_RESETS_MAX`], streams reset for its errors against
//!   [`H2_LOCAL_ERROR_RESETS_MAX`], streams it resets while they are served against
//!   [`STREAM_TASKS_MAX`]; past any, GOAWAY (rapid reset, CVE-2023-44487);
//! - windows: [`H2_STREAM_WINDOW_BYTES`] per stream and [`H2_CONNECTION_WINDOW_BYTES`]
//!   for the connection bound what a client may send ahead; what the node sends waits
//!   for the client's window at most the request's transfer deadline;
//! - queued sends: [`H2_SEND_BUFFER_BYTES_MAX`] per stream, [`H2_SEND_QUEUED_BYTES_MAX`]
//!   for all of a connection's streams together ([`send_budget`]): a client that opens
//!   its windows and never reads holds that much, not every stream's buffer;
//! - time: the preface and SETTINGS within `header_timeout`; a connection with no open
//!   stream for `idle_timeout` is sent GOAWAY and closed (a client trickling a header
//!   block, or only PINGs and SETTINGS, holds no stream open and is closed the same).

mod compat;
mod exchange;
mod send_budget;

use std::cell::Cell;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use h2::server::{Connection, SendResponse};
use h2::RecvStream;
use ron_io::stream::Transport;
use ron_shards::lifecycle::StopSignal;

use super::HttpContext;
use crate::drain::Drain;
use crate::limits::{
    H2_CONNECTION_WINDOW_BYTES, H2_LOCAL_ERROR_RESETS_MAX, H2_PENDING_ACCEPT_RESETS_MAX,
    H2_SEND_BUFFER_BYTES_MAX, H2_SEND_QUEUED_BYTES_MAX, H2_STREAMS_CONCURRENT_MAX,
    H2_STREAM_WINDOW_BYTES,
};
use compat::TokioIo;
use exchange::Exchange;
use send_budget::{QueuedBytes, SendBudget};

type H2Connection<S> = Connection<TokioIo<S>, QueuedBytes>;

/// Stream tasks one connection may have running: twice the streams it may have open.
/// A stream's task outlives the stream only briefly, unless the client reset it while
/// it was served; a client that keeps more running than this is resetting streams as
/// fast as it opens them (rapid reset, CVE-2023-44487) and is sent GOAWAY.
const STREAM_TASKS_MAX: usize = 2 * H2_STREAMS_CONCURRENT_MAX as usize;

/// Serves one HTTP/2 connection until it closes.
pub async fn serve_connection<S: Transport>(
    ctx: Rc<HttpContext>,
    stream: S,
    client: Option<IpAddr>,
) {
    let _open = super::opened(&ctx, &stream);
    // The TLS handshake's read deadline must not stay on the socket: h2 always has a
    // read pending, and a client quiet for that long (between requests, or waiting on
    // an answer) would have its connection cut with every stream on it and no GOAWAY.
    // The preface has its own deadline (`handshake`), an idle connection is sent GOAWAY
    // (`next_event`), and each stream's transfers have theirs.
    let _ = stream.tcp().set_read_timeout(None);
    let peer = stream.tcp().peer_addr().ok();
    let Some(mut conn) = handshake(&ctx, stream).await else {
        return;
    };
    let streams = Rc::new(StreamCount::default());
    let budget = SendBudget::new(H2_SEND_QUEUED_BYTES_MAX);
    // Raised when the connection ends: its streams' tasks end with it. A stream waiting
    // on a read-through (up to `fetch_timeout_ms`) otherwise outlived its connection, so
    // a client that opened streams, was cut off and came back piled them up.
    let gone = StopSignal::default();
    let mut going_away = false;
    loop {
        // Until GOAWAY is sent, the stop's drain is an event too (`crate::drain`).
        let drain = (!going_away).then_some(&*ctx.draining);
        match next_event(&mut conn, &streams, ctx.limits.idle_timeout, drain).await {
            Event::Stream(..) if streams.open.get() >= STREAM_TASKS_MAX => {
                // Only streams the client reset while the node still served them can
                // outnumber the concurrency limit: resetting as fast as it opens them.
                conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                going_away = true;
            }
            Event::Stream(request, respond) => {
                let (ctx, guard, gone) = (Rc::clone(&ctx), streams.opened(), gone.clone());
                let budget = Rc::clone(&budget);
                glommio::spawn_local(async move {
                    let exchange = Exchange::new(request, respond, budget, peer);
                    // Boxed: `unless_stopped` would hold the exchange's future twice
                    // over in the task (its argument and its await), per stream.
                    let serve = Box::pin(super::serve_exchange(&ctx, exchange, client));
                    gone.unless_stopped(serve).await;
                    drop(guard);
                })
                .detach();
            }
            Event::Idle if !going_away => {
                // GOAWAY and a PING; once the client answers it, h2 sends the final
                // GOAWAY naming the last stream, and ends the connection when its
                // streams are done. The client has another idle timeout for that.
                conn.graceful_shutdown();
                going_away = true;
                streams.quiet_since.set(Instant::now());
            }
            Event::Draining => {
                conn.graceful_shutdown();
                going_away = true;
            }
            // Idle again after GOAWAY: the client did not close.
            Event::Idle | Event::Closed => break,
        }
        if ctx.draining.is_draining() && !going_away {
            conn.graceful_shutdown();
            going_away = true;
        }
    }
    gone.stop();
}

/// The client's preface and SETTINGS exchanged within the header timeout.
async fn handshake<S: Transport>(ctx: &HttpContext, stream: S) -> Option<H2Connection<S>> {
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(H2_STREAMS_CONCURRENT_MAX)
        .max_header_list_size(u32::try_from(ctx.limits.head_bytes_max).unwrap_or(u32::MAX))
        .initial_window_size(H2_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(H2_CONNECTION_WINDOW_BYTES)
        .max_send_buffer_size(H2_SEND_BUFFER_BYTES_MAX)
        .max_pending_accept_reset_streams(H2_PENDING_ACCEPT_RESETS_MAX)
        .max_local_error_reset_streams(Some(H2_LOCAL_ERROR_RESETS_MAX));
    let handshake = async { builder.handshake(TokioIo(stream)).await.ok() };
    let expired = async {
        glommio::timer::sleep(ctx.limits.header_timeout).await;
        None
    };
    future::or(handshake, expired).await
}

// Not boxed: one event lives at a time, on the connection task's stack.
#[allow(clippy::large_enum_variant)]
enum Event {
    Stream(http::Request<RecvStream>, SendResponse<QueuedBytes>),
    /// No stream open for the idle timeout.
    Idle,
    /// The shard's stop began: GOAWAY, then the connection ends with its streams.
    Draining,
    /// The client closed, or the connection failed (a protocol error: h2 sent GOAWAY).
    Closed,
}

/// The next stream, or the connection's end, or the idle timeout passing with no
/// stream open. Polling `accept` is what drives the connection: it runs all along.
async fn next_event<S: Transport>(
    conn: &mut H2Connection<S>,
    streams: &StreamCount,
    idle: Duration,
    drain: Option<&Drain>,
) -> Event {
    let accept = async {
        match conn.accept().await {
            Some(Ok((request, respond))) => Event::Stream(request, respond),
            Some(Err(_)) | None => Event::Closed,
        }
    };
    let idle = async {
        loop {
            match idle_left(streams.quiet_since(), idle, Instant::now()) {
                Some(left) if left.is_zero() => return Event::Idle,
                Some(left) => glommio::timer::sleep(left).await,
                None => glommio::timer::sleep(idle).await,
            }
        }
    };
    let draining = async {
        match drain {
            Some(drain) => drain.wait().await,
            None => std::future::pending().await,
        }
        Event::Draining
    };
    future::or(accept, future::or(idle, draining)).await
}

/// How much of the idle timeout is left at `now` for a connection quiet since
/// `quiet_since` (none while a stream is open). One reading of the clock: two readings
/// could straddle the timeout, and their difference underflow (a panic that stopped the
/// node).
fn idle_left(quiet_since: Option<Instant>, idle: Duration, now: Instant) -> Option<Duration> {
    quiet_since.map(|since| idle.saturating_sub(now.saturating_duration_since(since)))
}

/// Open streams, and since when none is.
#[derive(Debug)]
struct StreamCount {
    open: Cell<usize>,
    quiet_since: Cell<Instant>,
}

impl Default for StreamCount {
    fn default() -> Self {
        StreamCount {
            open: Cell::new(0),
            quiet_since: Cell::new(Instant::now()),
        }
    }
}

impl StreamCount {
    fn opened(self: &Rc<Self>) -> StreamGuard {
        self.open.set(self.open.get() + 1);
        StreamGuard(Rc::clone(self))
    }

    fn quiet_since(&self) -> Option<Instant> {
        (self.open.get() == 0).then(|| self.quiet_since.get())
    }
}

struct StreamGuard(Rc<StreamCount>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let count = &self.0;
        count.open.set(count.open.get() - 1);
        if count.open.get() == 0 {
            count.quiet_since.set(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_left_never_underflows() {
        let idle = Duration::from_millis(100);
        let since = Instant::now();
        assert_eq!(idle_left(None, idle, since), None);
        assert_eq!(idle_left(Some(since), idle, since), Some(idle));
        let later = since + Duration::from_millis(40);
        assert_eq!(
            idle_left(Some(since), idle, later),
            Some(Duration::from_millis(60))
        );
        // At and past the timeout: nothing left (two clock readings used to straddle it
        // and subtract into a panic).
        for past in [100, 101, 10_000] {
            let now = since + Duration::from_millis(past);
            assert_eq!(idle_left(Some(since), idle, now), Some(Duration::ZERO));
        }
        // A quiet-since after now (set after the reading) is a whole timeout left.
        assert_eq!(idle_left(Some(later), idle, since), Some(idle));
    }
}
