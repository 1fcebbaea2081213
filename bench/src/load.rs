//! The load loop: one thread pinned per CPU, each running its share of the connections
//! on a local executor over an epoll reactor (`async-io`). Not io_uring: on loopback
//! the server's core completes the client's receives, and an io_uring completion costs
//! it a task-work signal to the client thread (~6 µs per 4 KiB request here, PERF.md),
//! where an epoll readiness only marks the socket ready. Closed loop keeps `depth` requests in flight per connection; open loop
//! sends at a fixed rate and measures latency from each request's *intended* send time,
//! so a stalled server cannot hide its stall by slowing the generator down (coordinated
//! omission).
//!
//! A peak run may drop bodies unread (`RunConfig::discard_bodies`): past its head, an
//! answer's bytes are taken off the socket by `recv` with `MSG_TRUNC`, which a TCP socket
//! honours by freeing them without the copy to user space (tcp(7)). A 64 KiB range then
//! costs the client the kernel's receive path and no copy, so fewer client CPUs saturate
//! a server (issue 54's many-core runs, where the client had as many CPUs as the server
//! and could not).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use hdrhistogram::Histogram;
use ron_codec::frame::{Flags, FrameDecoder, MAX_FRAME_BYTES};
use ron_codec::messages::DataHeader;
use ron_codec::Address;

use crate::dataset::Dataset;
use crate::workload::{Expect, Proto, Rng, Workload};

/// Latency is recorded in microseconds, 1 µs to 100 s, 3 significant digits.
pub const LATENCY_MAX_US: u64 = 100_000_000;

/// HTTP bodies longer than this are checked (or just counted) as they arrive instead of
/// being buffered whole: a 256 MiB object on 64 connections would otherwise hold 16 GiB.
pub const STREAM_BODY_BYTES: usize = 4 << 20;

/// Read size while streaming a long body.
const STREAM_READ_BYTES: usize = 256 << 10;

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub target: SocketAddr,
    /// Connections in total, spread over `cpus`.
    pub connections: usize,
    /// Requests in flight per connection (closed loop).
    pub depth: usize,
    /// Requests per second in total (open loop); `None` for closed loop.
    pub rate: Option<f64>,
    pub duration: Duration,
    pub warmup: Duration,
    pub verify: bool,
    /// Drop HTTP bodies unread (`recv` with `MSG_TRUNC`) instead of copying them in:
    /// plain TCP without `verify` only (elsewhere bodies are read as usual).
    pub discard_bodies: bool,
    pub cpus: Vec<usize>,
    pub seed: u64,
    /// TLS client configuration (ALPN set for the protocol); plain TCP when absent.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// What one connection, worker or run observed after warm-up.
#[derive(Debug, Clone)]
pub struct Stats {
    pub latency_us: Histogram<u64>,
    pub requests: u64,
    pub body_bytes: u64,
    /// Body bytes received during the measured window, whatever their request's send
    /// time (long bodies counted as they stream in): the throughput answers that take
    /// longer than a run cannot skew, where `body_bytes` counts whole answers to the
    /// requests sent in the window.
    pub window_body_bytes: u64,
    pub statuses: BTreeMap<u16, u64>,
    /// Answers with an unexpected status (also counted in `statuses`).
    pub unexpected: u64,
    pub verify_failures: u64,
    pub io_errors: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latency_us: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid bounds"),
            requests: 0,
            body_bytes: 0,
            window_body_bytes: 0,
            statuses: BTreeMap::new(),
            unexpected: 0,
            verify_failures: 0,
            io_errors: 0,
        }
    }
}

impl Stats {
    pub fn merge(&mut self, other: &Stats) {
        let _ = self.latency_us.add(&other.latency_us);
        self.requests += other.requests;
        self.body_bytes += other.body_bytes;
        self.window_body_bytes += other.window_body_bytes;
        for (status, n) in &other.statuses {
            *self.statuses.entry(*status).or_default() += n;
        }
        self.unexpected += other.unexpected;
        self.verify_failures += other.verify_failures;
        self.io_errors += other.io_errors;
    }
}

/// Runs the load on every CPU of `config.cpus` and merges what they saw.
pub fn run(config: RunConfig, workload: Workload, data: Dataset) -> std::io::Result<Stats> {
    run_from(
        config,
        workload,
        data,
        Instant::now() + Duration::from_millis(50),
    )
}

/// [`run`], starting at `start` (soon): the warm-up runs from `start`, the measured
/// window from `start + warmup` for `duration`.
pub fn run_from(
    config: RunConfig,
    workload: Workload,
    data: Dataset,
    start: Instant,
) -> std::io::Result<Stats> {
    let (config, workload, data) = (Arc::new(config), Arc::new(workload), Arc::new(data));
    let workers = config.cpus.len().max(1);
    let mut handles = Vec::new();
    for (w, &cpu) in config.cpus.iter().enumerate() {
        let share = config.connections / workers + usize::from(w < config.connections % workers);
        let (config, workload, data) = (
            Arc::clone(&config),
            Arc::clone(&workload),
            Arc::clone(&data),
        );
        let handle = std::thread::Builder::new()
            .name(format!("ron-bench-{w}"))
            .spawn(move || -> std::io::Result<Stats> {
                pin_to_cpu(cpu)?;
                let executor = async_executor::LocalExecutor::new();
                let tasks: Vec<_> = (0..share)
                    .map(|c| {
                        let id = (w * 1_000_000 + c) as u64;
                        executor.spawn(connection(&config, &workload, &data, id, start))
                    })
                    .collect();
                Ok(async_io::block_on(executor.run(async {
                    let mut stats = Stats::default();
                    for t in tasks {
                        stats.merge(&t.await);
                    }
                    stats
                })))
            })?;
        handles.push(handle);
    }
    let mut total = Stats::default();
    for h in handles {
        let stats = h
            .join()
            .map_err(|_| std::io::Error::other("a load thread panicked"))??;
        total.merge(&stats);
    }
    Ok(total)
}

/// Pins the calling thread to `cpu`, so the generator stays off the server's cores.
fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)
        .and_then(|()| nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set))
        .map_err(|e| std::io::Error::other(format!("cannot pin a load thread to CPU {cpu}: {e}")))
}

/// One connection's loop until the deadline; reconnects after errors.
async fn connection(
    config: &RunConfig,
    workload: &Workload,
    data: &Dataset,
    id: u64,
    start: Instant,
) -> Stats {
    let mut stats = Stats::default();
    let mut rng = Rng::new(config.seed ^ id.wrapping_mul(0x1000_0000_01b3));
    let mut put_seq = id << 32;
    let measure_from = start + config.warmup;
    let deadline = measure_from + config.duration;
    let per_conn_rate = config.rate.map(|r| r / config.connections.max(1) as f64);
    let interval = per_conn_rate.map(|r| Duration::from_secs_f64(1.0 / r.max(1e-9)));
    // Spread the connections' first sends over one interval.
    let mut intended = start + interval.map_or(Duration::ZERO, |i| i.mul_f64(rng.unit()));
    if let Some(wait) = start.checked_duration_since(Instant::now()) {
        Timer::after(wait).await;
    }
    while Instant::now() < deadline {
        let stream = match open(config).await {
            Ok(s) => s,
            Err(_) => {
                stats.io_errors += 1;
                Timer::after(Duration::from_millis(10)).await;
                continue;
            }
        };
        let discard = config.discard_bodies
            && !config.verify
            && workload.proto == Proto::Http
            && matches!(stream, Stream::Plain(_));
        let mut conn = Conn {
            stream,
            discard,
            buf: Vec::with_capacity(1 << 16),
            filled: 0,
            oap: (workload.proto == Proto::Oap).then(OapAnswers::default),
            window: (measure_from, deadline),
            window_bytes: 0,
        };
        let mut corr_id = 0u64;
        let mut inflight: VecDeque<(u64, Instant, Expect)> = VecDeque::new();
        // Whole (not streamed) bodies completed in the window.
        let mut buffered_window_bytes = 0u64;
        let result: std::io::Result<()> = async {
            loop {
                let now = Instant::now();
                // Send while the window allows (closed loop) or the schedule says (open).
                while inflight.len() < config.depth.max(1) && now < deadline {
                    let sent_at = match interval {
                        None => Instant::now(),
                        Some(step) => {
                            if inflight.is_empty() {
                                if let Some(wait) = intended.checked_duration_since(Instant::now())
                                {
                                    Timer::after(wait).await;
                                }
                            } else if intended > Instant::now() {
                                break;
                            }
                            let at = intended;
                            intended += step;
                            at
                        }
                    };
                    corr_id += 1;
                    let plan = workload.next(&mut rng, data, &mut put_seq, config.verify, corr_id);
                    conn.stream.write_all(&plan.wire).await?;
                    inflight.push_back((corr_id, sent_at, plan.expect));
                }
                if inflight.is_empty() {
                    return Ok(());
                }
                // HTTP answers come in order: a long body is checked against the oldest
                // request's expectation as it streams in.
                let check = inflight
                    .front()
                    .filter(|_| config.verify)
                    .map(|(_, _, expect)| (data, expect));
                let answer = conn.read_answer(config.verify, check).await?;
                let done = Instant::now();
                if !answer.streamed && done >= measure_from && done < deadline {
                    buffered_window_bytes += answer.body_len;
                }
                let position = inflight
                    .iter()
                    .position(|(c, _, _)| Some(*c) == answer.corr_id || answer.corr_id.is_none())
                    .ok_or_else(|| std::io::Error::other("answer to no request in flight"))?;
                let (_, sent_at, expect) = inflight.remove(position).expect("position is valid");
                if sent_at >= measure_from && sent_at < deadline {
                    record(
                        &mut stats,
                        config.verify,
                        data,
                        &expect,
                        &answer,
                        done - sent_at,
                    );
                }
                let used = answer.total_len;
                conn.consume(used);
                if Instant::now() >= deadline && inflight.is_empty() {
                    return Ok(());
                }
            }
        }
        .await;
        stats.window_body_bytes += conn.window_bytes + buffered_window_bytes;
        if result.is_err() && Instant::now() < deadline {
            stats.io_errors += 1;
        }
    }
    stats
}

fn record(
    stats: &mut Stats,
    verify: bool,
    data: &Dataset,
    expect: &Expect,
    answer: &Answer<'_>,
    latency: Duration,
) {
    let us = (latency.as_micros() as u64).clamp(1, LATENCY_MAX_US);
    let _ = stats.latency_us.record(us);
    stats.requests += 1;
    stats.body_bytes += answer.body_len;
    *stats.statuses.entry(answer.status).or_default() += 1;
    let expected_status = match expect {
        Expect::Object { .. } => answer.status == 200,
        Expect::Slice { .. } => answer.status == 206,
        Expect::Stored { .. } => matches!(answer.status, 200 | 201 | 204),
    };
    if !expected_status {
        stats.unexpected += 1;
        return;
    }
    if verify && !verified(data, expect, answer) {
        stats.verify_failures += 1;
    }
}

/// Checks a body: a whole object must hash to its address; a slice must equal the
/// object's bytes; a PUT's reply must name the address of what was sent.
fn verified(data: &Dataset, expect: &Expect, answer: &Answer<'_>) -> bool {
    if let Some(ok) = answer.checked {
        return ok;
    }
    match expect {
        Expect::Object { index } => Address::of(&answer.body) == data.objects[*index].addr,
        Expect::Slice { index, first, last } => {
            answer.body[..] == data.objects[*index].bytes[*first..=*last]
        }
        Expect::Stored { addr } => {
            let text = addr.to_string();
            answer
                .body
                .windows(text.len())
                .any(|w| w == text.as_bytes())
        }
    }
}

/// A TLS connection's byte stream.
trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// A connection's byte stream: plain TCP, whose input can be dropped unread, or TLS.
enum Stream {
    Plain(Async<TcpStream>),
    Tls(Box<dyn Io>),
}

impl Stream {
    /// Takes up to `n` bytes off a plain socket's input without copying them (`recv`
    /// with `MSG_TRUNC`), waiting until some are there; how many it took (0: the peer
    /// closed). On TLS, `Unsupported`: its records must be decrypted to be counted.
    async fn discard(&mut self, n: usize) -> std::io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.read_with(|s| recv_discarding(s, n)).await,
            Stream::Tls(_) => Err(std::io::ErrorKind::Unsupported.into()),
        }
    }

    /// Either stream, as the one kind both are.
    fn io(self: Pin<&mut Self>) -> Pin<&mut dyn Io> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s),
            Stream::Tls(s) => Pin::new(s.as_mut()),
        }
    }
}

/// One non-blocking `recv(MSG_TRUNC)` of at most `n` bytes.
fn recv_discarding(socket: &TcpStream, n: usize) -> std::io::Result<usize> {
    #[allow(unsafe_code)]
    // SAFETY: with MSG_TRUNC a TCP socket frees the bytes it takes instead of copying
    // them out (tcp(7)), so the null buffer is never written; a kernel that did copy
    // would fail the call with EFAULT, not write through it.
    let taken = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            std::ptr::null_mut(),
            n,
            libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(taken).map_err(|_| std::io::Error::last_os_error())
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.io().poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_close(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.io().poll_close(cx)
    }
}

async fn open(config: &RunConfig) -> std::io::Result<Stream> {
    let stream = Async::<TcpStream>::connect(config.target).await?;
    let _ = stream.get_ref().set_nodelay(true);
    let Some(tls) = &config.tls else {
        return Ok(Stream::Plain(stream));
    };
    let name = rustls::pki_types::ServerName::IpAddress(config.target.ip().into());
    let tls = futures_rustls::TlsConnector::from(Arc::clone(tls))
        .connect(name, stream)
        .await?;
    Ok(Stream::Tls(Box::new(tls)))
}

struct Conn {
    stream: Stream,
    /// Bodies are dropped unread ([`RunConfig::discard_bodies`], on a plain socket).
    discard: bool,
    buf: Vec<u8>,
    filled: usize,
    /// OAP responses being assembled; `None` on HTTP.
    oap: Option<OapAnswers>,
    /// The measured window, and the streamed body bytes received in it.
    window: (Instant, Instant),
    window_bytes: u64,
}

/// OAP/1 response frames of requests still open, by corr_id.
#[derive(Default)]
struct OapAnswers {
    decoder: Option<FrameDecoder>,
    open: HashMap<u64, (u16, Vec<u8>, u64)>,
}

struct Answer<'a> {
    /// The request answered (OAP); HTTP answers come in order.
    corr_id: Option<u64>,
    status: u16,
    /// The body, when kept (HTTP always; OAP when verifying).
    body: std::borrow::Cow<'a, [u8]>,
    body_len: u64,
    /// Bytes of the read buffer this answer used.
    total_len: usize,
    /// The body was streamed or dropped unread (and counted in `Conn::window_bytes` as
    /// it came).
    streamed: bool,
    /// The verdict of a body checked while it streamed in (then `body` is empty).
    checked: Option<bool>,
}

/// A long body's check, fed as the bytes arrive: a whole object is hashed and compared
/// with its address, a slice compared byte for byte, so memory stays bounded.
#[derive(Debug)]
enum BodyCheck<'a> {
    Hash {
        hasher: Box<blake3::Hasher>,
        want: Address,
    },
    Bytes {
        want: &'a [u8],
        at: usize,
        ok: bool,
    },
    /// A PUT's reply is never this long: it fails.
    Fail,
}

impl<'a> BodyCheck<'a> {
    fn new(data: &'a Dataset, expect: &Expect) -> BodyCheck<'a> {
        match expect {
            Expect::Object { index } => BodyCheck::Hash {
                hasher: Box::default(),
                want: data.objects[*index].addr,
            },
            Expect::Slice { index, first, last } => BodyCheck::Bytes {
                want: &data.objects[*index].bytes[*first..=*last],
                at: 0,
                ok: true,
            },
            Expect::Stored { .. } => BodyCheck::Fail,
        }
    }

    fn update(&mut self, chunk: &[u8]) {
        match self {
            BodyCheck::Hash { hasher, .. } => {
                hasher.update(chunk);
            }
            BodyCheck::Bytes { want, at, ok } => {
                let end = *at + chunk.len();
                *ok = *ok && end <= want.len() && want[*at..end] == *chunk;
                *at = end;
            }
            BodyCheck::Fail => {}
        }
    }

    fn finish(self) -> bool {
        match self {
            BodyCheck::Hash { hasher, want } => {
                Address::from_bytes(*hasher.finalize().as_bytes()) == want
            }
            BodyCheck::Bytes { want, at, ok } => ok && at == want.len(),
            BodyCheck::Fail => false,
        }
    }
}

impl Conn {
    /// The next answer; `check` is the oldest request's expectation when verifying
    /// (used by HTTP for long bodies, checked as they stream in).
    async fn read_answer(
        &mut self,
        verify: bool,
        check: Option<(&Dataset, &Expect)>,
    ) -> std::io::Result<Answer<'_>> {
        if self.oap.is_some() {
            return self.read_oap_answer(verify).await;
        }
        self.read_response(check).await
    }

    /// Decodes frames until one request's END arrives.
    async fn read_oap_answer(&mut self, verify: bool) -> std::io::Result<Answer<'_>> {
        loop {
            let state = self.oap.as_mut().expect("OAP connection");
            let decoder = state
                .decoder
                .get_or_insert_with(|| FrameDecoder::new(MAX_FRAME_BYTES));
            let mut input = &self.buf[..self.filled];
            let mut finished = None;
            while finished.is_none() {
                let frame = match decoder.decode(&mut input) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => return Err(std::io::Error::other(e.to_string())),
                };
                let corr_id = frame.header.corr_id;
                let flags = frame.header.flags;
                let entry = state
                    .open
                    .entry(corr_id)
                    .or_insert((frame.header.code, Vec::new(), 0));
                if flags.contains(Flags::START) || frame.header.code >= 400 {
                    entry.0 = frame.header.code;
                }
                if flags.contains(Flags::END) {
                    if entry.1.is_empty() && entry.2 == 0 {
                        // A single-frame answer (PUT, STAT, error): its payload is the body.
                        entry.1.extend_from_slice(&frame.payload);
                        entry.2 = frame.payload.len() as u64;
                    }
                    finished = Some(corr_id);
                } else if !flags.contains(Flags::START) {
                    let (_, raw) = DataHeader::split(&frame.payload)
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                    entry.2 += raw.len() as u64;
                    if verify {
                        entry.1.extend_from_slice(&raw);
                    }
                }
            }
            let used = self.filled - input.len();
            if let Some(corr_id) = finished {
                let (status, body, body_len) = state.open.remove(&corr_id).expect("inserted above");
                return Ok(Answer {
                    corr_id: Some(corr_id),
                    status,
                    body: std::borrow::Cow::Owned(body),
                    body_len,
                    total_len: used,
                    streamed: false,
                    checked: None,
                });
            }
            self.consume(used);
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        if self.filled == self.buf.len() {
            let grow = self.buf.len().max(1 << 16);
            self.buf.resize(self.buf.len() + grow, 0);
        }
        let n = self.stream.read(&mut self.buf[self.filled..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.filled += n;
        Ok(())
    }

    async fn read_response(
        &mut self,
        check: Option<(&Dataset, &Expect)>,
    ) -> std::io::Result<Answer<'_>> {
        loop {
            if let Some((status, head_len, body_len)) = parse_head(&self.buf[..self.filled])? {
                if self.discard || body_len > STREAM_BODY_BYTES {
                    // Dropped unread, or checked (counted) as it streams in: not held.
                    let checked = if self.discard {
                        self.drop_body(head_len, body_len).await?;
                        None
                    } else {
                        self.stream_body(head_len, body_len, check).await?
                    };
                    return Ok(Answer {
                        corr_id: None,
                        status,
                        body: std::borrow::Cow::Borrowed(&[]),
                        body_len: body_len as u64,
                        total_len: 0,
                        streamed: true,
                        checked,
                    });
                }
                while self.filled < head_len + body_len {
                    if self.buf.len() < head_len + body_len {
                        self.buf.resize(head_len + body_len, 0);
                    }
                    self.fill().await?;
                }
                return Ok(Answer {
                    corr_id: None,
                    status,
                    body: std::borrow::Cow::Borrowed(&self.buf[head_len..head_len + body_len]),
                    body_len: body_len as u64,
                    total_len: head_len + body_len,
                    streamed: false,
                    checked: None,
                });
            }
            self.fill().await?;
        }
    }

    /// Reads a long body through the buffer, feeding it to `check`; consumes the head
    /// and the body. Returns the verdict when checking.
    async fn stream_body(
        &mut self,
        head_len: usize,
        body_len: usize,
        check: Option<(&Dataset, &Expect)>,
    ) -> std::io::Result<Option<bool>> {
        self.consume(head_len);
        if self.buf.len() < STREAM_READ_BYTES {
            self.buf.resize(STREAM_READ_BYTES, 0);
        }
        let mut check = check.map(|(data, expect)| BodyCheck::new(data, expect));
        let mut left = body_len;
        loop {
            let take = left.min(self.filled);
            if let Some(c) = check.as_mut() {
                c.update(&self.buf[..take]);
            }
            self.count_in_window(take);
            self.consume(take);
            left -= take;
            if left == 0 {
                return Ok(check.map(BodyCheck::finish));
            }
            self.fill().await?;
        }
    }

    /// Consumes the head and the body, the body's bytes not yet buffered dropped from
    /// the socket unread ([`Stream::discard`]), and counts them in the window as they go.
    async fn drop_body(&mut self, head_len: usize, body_len: usize) -> std::io::Result<()> {
        let buffered = body_len.min(self.filled - head_len);
        self.consume(head_len + buffered);
        self.count_in_window(buffered);
        let mut left = body_len - buffered;
        while left > 0 {
            let taken = self.stream.discard(left).await?;
            if taken == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.count_in_window(taken);
            left -= taken;
        }
        Ok(())
    }

    /// Counts `bytes` of a streamed or dropped body in the window's, if now is in it.
    fn count_in_window(&mut self, bytes: usize) {
        let now = Instant::now();
        if now >= self.window.0 && now < self.window.1 {
            self.window_bytes += bytes as u64;
        }
    }

    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.filled, 0);
        self.filled -= n;
    }
}

/// (status, head length, body length) once a whole head is buffered.
fn parse_head(buf: &[u8]) -> std::io::Result<Option<(u16, usize, usize)>> {
    use ron_codec::http::head::{Method, HEAD_LEN_MAX_DEFAULT};
    use ron_codec::http::reply::{parse_response_head, ReplyBody, ReplyParse};
    let bad = |e: String| std::io::Error::other(format!("bad response head: {e}"));
    let reply = match parse_response_head(buf, HEAD_LEN_MAX_DEFAULT) {
        Ok(ReplyParse::Complete(reply)) => reply,
        Ok(ReplyParse::Partial) => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
    };
    let body_len = match reply.body(Method::Get) {
        ReplyBody::Empty => 0,
        ReplyBody::Length(len) => usize::try_from(len).map_err(|e| bad(e.to_string()))?,
        other => {
            return Err(bad(format!(
                "{other:?}: the load generator reads Content-Length bodies"
            )))
        }
    };
    Ok(Some((reply.status, reply.head_len, body_len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection to a server that has written `replies` and closed.
    fn conn_to(replies: Vec<u8>, discard: bool) -> Conn {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            let (mut s, _) = listener.accept().unwrap();
            let _ = s.write_all(&replies);
        });
        let stream = async_io::block_on(Async::<TcpStream>::connect(addr)).unwrap();
        let now = Instant::now();
        Conn {
            stream: Stream::Plain(stream),
            discard,
            buf: Vec::with_capacity(1 << 16),
            filled: 0,
            oap: None,
            window: (now, now + Duration::from_secs(60)),
            window_bytes: 0,
        }
    }

    /// Two answers back to back, 300,000 and 5 body bytes: a dropped body never enters
    /// the buffer (which stays at its first 64 KiB), is counted whole, and the answer
    /// behind it lines up; read as usual, the same body grows the buffer past its size.
    #[test]
    fn a_dropped_body_never_enters_the_buffer_and_the_next_answer_lines_up() {
        let mut replies = b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n".to_vec();
        replies.extend(std::iter::repeat_n(7u8, 300_000));
        replies.extend_from_slice(b"HTTP/1.1 206 Partial\r\nContent-Length: 5\r\n\r\nhello");
        let mut dropped = conn_to(replies.clone(), true);
        let answers: Vec<(u16, u64)> = async_io::block_on(async {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let a = dropped.read_answer(false, None).await.unwrap();
                let (status, len, used) = (a.status, a.body_len, a.total_len);
                dropped.consume(used);
                seen.push((status, len));
            }
            seen
        });
        assert_eq!(answers, [(200, 300_000), (206, 5)]);
        assert_eq!(dropped.window_bytes, 300_005);
        assert!(dropped.buf.len() <= 1 << 16, "{}", dropped.buf.len());

        let mut read = conn_to(replies, false);
        let status =
            async_io::block_on(async { read.read_answer(false, None).await.unwrap().status });
        assert_eq!(status, 200);
        assert!(read.buf.len() >= 300_000, "{}", read.buf.len());
    }

    /// Feeds `body` in chunks of the given sizes (cycled).
    fn check(data: &Dataset, expect: &Expect, body: &[u8], chunks: &[usize]) -> bool {
        let mut c = BodyCheck::new(data, expect);
        let mut rest = body;
        for &n in chunks.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at(n.min(rest.len()));
            c.update(now);
            rest = later;
        }
        c.finish()
    }

    #[test]
    fn streamed_checks_pass_on_the_right_bytes_however_they_are_split() {
        let data = Dataset::generate(3, 2, 300_000);
        let whole = Expect::Object { index: 1 };
        let slice = Expect::Slice {
            index: 0,
            first: 12_345,
            last: 12_345 + 65_535,
        };
        for chunks in [&[1][..], &[7, 4096], &[65_536], &[300_000]] {
            assert!(check(&data, &whole, &data.objects[1].bytes, chunks));
            assert!(check(
                &data,
                &slice,
                &data.objects[0].bytes[12_345..12_345 + 65_536],
                chunks
            ));
        }
    }

    #[test]
    fn streamed_checks_catch_a_flipped_byte_a_short_or_a_long_body() {
        let data = Dataset::generate(4, 1, 100_000);
        let whole = Expect::Object { index: 0 };
        let slice = Expect::Slice {
            index: 0,
            first: 1,
            last: 50_000,
        };
        let mut bad = data.objects[0].bytes.clone();
        bad[77_777] ^= 1;
        assert!(!check(&data, &whole, &bad, &[4096]));
        assert!(!check(
            &data,
            &whole,
            &data.objects[0].bytes[..99_999],
            &[4096]
        ));
        let right = &data.objects[0].bytes[1..=50_000];
        let mut flipped = right.to_vec();
        flipped[49_999] ^= 0x80;
        assert!(!check(&data, &slice, &flipped, &[4096]));
        assert!(!check(&data, &slice, &right[..49_999], &[4096]));
        assert!(!check(
            &data,
            &slice,
            &data.objects[0].bytes[1..=50_001],
            &[4096]
        ));
        assert!(!check(
            &data,
            &Expect::Stored {
                addr: data.objects[0].addr
            },
            b"",
            &[1]
        ));
    }
}
