//! Read-through from an HTTP or HTTPS origin (`--origin http[s]://HOST[:PORT][/PREFIX]`):
//! `GET PREFIX/o/b3:<hex>` from another ron, or from nginx or a bucket serving files
//! named by their address. HTTPS is rustls, trusting the system's CA bundle or the
//! operator's (`--origin-ca FILE`), the certificate checked against HOST. TLS proves who
//! sent the bytes; only the address proves they are right.
//!
//! The object is asked for right behind its bao outboard, `PREFIX/o/b3:<hex>.obao` (both
//! requests in one write on one connection, HTTP/1.1 pipelining: no extra round trip).
//! An outboard that checks out against the address (`ron_codec::bao`, any chunk-group
//! log up to 6) gives every 64 KiB group's chaining value, so the body is verified group
//! by group as it arrives and each group goes to the flight's waiters at once, as a
//! peer's does. Without one (a 404, or one that does not check out) the body is
//! verified whole: written to an upload, hashed as it arrives, and only an upload whose
//! root is the address is committed — nothing of it is served before that.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use ron_codec::bao::{is_outboard_len, outboard_group_cvs};
use ron_codec::http::head::Method;
use ron_codec::http::reply::{parse_response_head, ReplyBody, ReplyParse};
use ron_codec::http::response::is_safe_header_value;
use ron_codec::tree::{group_len, GroupIndex, GROUP_LEN_BYTES};
use ron_codec::{Address, ChunkTree};
use ron_link::counters::{FetchFailure, FrontCounters};
use ron_shards::lifecycle::finished_within;
use ron_shards::record::CONTENT_TYPE_LEN_MAX;
use ron_shards::{Shard, StagedObject, Upload};
use rustls::pki_types::ServerName;

use crate::fetch::flight::Flight;
use crate::fetch::AttemptError;
use crate::transfer::TransferPace;

/// Largest response head accepted from an origin.
const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Bytes read from the socket at a time.
const READ_BYTES: usize = 256 * 1024;
/// Largest outboard taken from an origin: a 1 GiB object's at chunk-group log 0, a
/// 64 GiB object's at log 6 (larger ones are verified whole).
const OUTBOARD_BYTES_MAX: u64 = 64 << 20;
/// Outboard bytes the node's origin fetches hold at once, all shards together. An
/// outboard is held whole until it checks out, and a 1 GiB object's at log 0 (the `bao`
/// CLI's) is 64 MiB: 64 fetches a shard of such objects held 4 GiB. One that does not
/// fit is not read; its body is verified whole, as with no outboard.
const OUTBOARDS_BUFFERED_BYTES_MAX: u64 = 256 << 20;
/// Largest body of a refused outboard request read past to reach the object's answer.
const SKIPPED_BODY_BYTES_MAX: u64 = 64 * 1024;
/// Interim (1xx) heads passed over before an answer's final head.
const INTERIM_HEADS_MAX: u32 = 8;
/// Addresses of the origin's host kept from its name lookup, tried in turn.
const ORIGIN_ADDRS_MAX: usize = 8;

/// What an origin connection reads and writes: TCP, or TLS over it.
trait OriginIo: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> OriginIo for T {}

/// What an origin's answers must keep up with: each head and each 64 KiB of body within
/// `stall`, and the body at `rate_min_bytes_per_s` at least after the first `stall`.
#[derive(Debug, Clone, Copy)]
pub struct OriginPace {
    pub stall: Duration,
    pub rate_min_bytes_per_s: u64,
}

/// One connection to the origin and its read buffer (`start..end` not consumed yet).
struct OriginConn {
    stream: Box<dyn OriginIo>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// How long a read may wait, and a whole head or 64 KiB of body may take.
    stall: Duration,
    /// The pace the connection's body bytes must keep: after `stall`, at least the
    /// fetch's minimum rate. Sending each 64 KiB just within `stall` (3–6 KiB/s) held
    /// a fetch for days.
    pace: TransferPace,
    /// Body bytes taken on this connection.
    body_taken: u64,
    /// When the head being read, or the body's next 64 KiB, must have come (the sooner
    /// of `stall` from when the last came and the pace's due time); every read ends by
    /// then. An origin trickling a byte within each read's timeout otherwise held the
    /// fetch (and its waiters, and its place among the shard's fetches) as long as it
    /// liked.
    progress_by: Instant,
    /// Body bytes taken since `progress_by` was last set.
    body_since_progress: u64,
}

/// A response head, as far as a read-through needs it.
struct ReplyHead {
    status: u16,
    body: ReplyBody,
    content_type: String,
    /// The origin keeps the connection open after this answer.
    keep_alive: bool,
}

/// The object's answer: its length and content type (the body follows on the connection).
struct ObjectHead {
    len: u64,
    content_type: String,
}

/// What the outboard request gave.
enum OutboardAnswer {
    /// Checked against the address: the chunk tree the body is verified against.
    Tree(ChunkTree),
    /// None to use; the object's answer follows on the same connection.
    Absent,
    /// The connection cannot reach the object's answer (an answer without a length, too
    /// long to read past, not an outboard of the object it names, or closed after it):
    /// ask again on a new one — with the tree when the outboard checked out.
    Spent(Option<ChunkTree>),
}

/// Where the origin is: resolved once at start-up.
#[derive(Debug, Clone)]
pub struct Origin {
    pub url: String,
    /// What HOST resolved to (at most [`ORIGIN_ADDRS_MAX`]), tried in turn.
    addrs: Arc<[SocketAddr]>,
    /// The address the last connection reached: tried first.
    reached: Arc<AtomicUsize>,
    host: String,
    prefix: String,
    /// HTTPS: the TLS client and the name the certificate must carry.
    tls: Option<OriginTls>,
    /// Outboard bytes being read, all shards together (at most
    /// [`OUTBOARDS_BUFFERED_BYTES_MAX`]).
    outboards_buffered: Arc<AtomicU64>,
}

/// An outboard's share of [`OUTBOARDS_BUFFERED_BYTES_MAX`], given back when dropped.
struct OutboardShare {
    buffered: Arc<AtomicU64>,
    bytes: u64,
}

impl OutboardShare {
    fn take(buffered: &Arc<AtomicU64>, bytes: u64) -> Option<OutboardShare> {
        buffered
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                let after = held.checked_add(bytes)?;
                (after <= OUTBOARDS_BUFFERED_BYTES_MAX).then_some(after)
            })
            .ok()?;
        Some(OutboardShare {
            buffered: Arc::clone(buffered),
            bytes,
        })
    }
}

impl Drop for OutboardShare {
    fn drop(&mut self) {
        self.buffered.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[derive(Clone)]
struct OriginTls {
    connector: ron_io::tls::TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for OriginTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginTls")
            .field("name", &self.name)
            .finish()
    }
}

/// Why the origin (`origin`, `--origin`) cannot be used: found once, at start-up.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// Not an `http://` or `https://` URL.
    #[error("origin {url:?}: only http:// and https:// origins are supported")]
    Scheme { url: String },
    /// An HTTPS origin whose CAs could not be read, or whose host is not a name a
    /// certificate can carry.
    #[error("origin {url:?}: {reason}")]
    Tls { url: String, reason: String },
    /// Nothing between `http://` and the path.
    #[error("origin {url:?}: no host")]
    NoHost { url: String },
    /// `HOST[:PORT]` is not an address, or the name lookup failed.
    #[error("origin {url:?}: {source}")]
    Lookup { url: String, source: std::io::Error },
    /// The name lookup of `host` returned no address.
    #[error("origin {url:?}: {host} has no address")]
    NoAddress { url: String, host: String },
}

impl Origin {
    /// Parses `http[s]://HOST[:PORT][/PREFIX]` and resolves HOST (at start-up: it
    /// blocks); an HTTPS origin trusts the CAs of `ca_file`, else the system's.
    pub fn resolve(url: &str, ca_file: Option<&Path>) -> Result<Origin, OriginError> {
        let (rest, https) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => {
                return Err(OriginError::Scheme {
                    url: url.to_string(),
                })
            }
        };
        let (host, prefix) = match rest.find('/') {
            Some(at) => (&rest[..at], rest[at..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if host.is_empty() {
            return Err(OriginError::NoHost {
                url: url.to_string(),
            });
        }
        let default_port = if https { 443 } else { 80 };
        let with_port = if host.contains(':') && !host.ends_with(']') {
            host.to_string()
        } else {
            format!("{host}:{default_port}")
        };
        let addrs: Vec<SocketAddr> = with_port
            .to_socket_addrs()
            .map_err(|source| OriginError::Lookup {
                url: url.to_string(),
                source,
            })?
            .take(ORIGIN_ADDRS_MAX)
            .collect();
        if addrs.is_empty() {
            return Err(OriginError::NoAddress {
                url: url.to_string(),
                host: host.to_string(),
            });
        }
        let tls = https
            .then(|| origin_tls(host, ca_file))
            .transpose()
            .map_err(|reason| OriginError::Tls {
                url: url.to_string(),
                reason,
            })?;
        Ok(Origin {
            url: url.to_string(),
            addrs: addrs.into(),
            reached: Arc::default(),
            host: host.to_string(),
            prefix: prefix.to_string(),
            tls,
            outboards_buffered: Arc::default(),
        })
    }

    fn error(&self, reason: FetchFailure, detail: impl ToString) -> AttemptError {
        AttemptError {
            upstream: self.url.clone(),
            reason,
            detail: detail.to_string(),
        }
    }

    /// Fetches `flight`'s object into an upload on `shard` and returns it staged and
    /// verified, with its length: group by group into the flight's window when the
    /// origin's outboard checks out, else whole. Each response head and each 64 KiB of
    /// body must come within `pace.stall`, and the body at `pace.rate_min_bytes_per_s`
    /// at least after the first `pace.stall`.
    pub async fn fetch(
        &self,
        shard: &Shard,
        flight: &Flight,
        len_max: u64,
        pace: OriginPace,
        metrics: &FrontCounters,
    ) -> Result<(StagedObject, u64), AttemptError> {
        let addr = flight.addr;
        let mut conn = self.connect(pace).await?;
        let both = format!(
            "{}{}",
            self.request(addr, ".obao", false),
            self.request(addr, "", true)
        );
        conn.send(self, both.as_bytes()).await?;
        let tree = match self.outboard(&mut conn, addr, len_max, metrics).await? {
            OutboardAnswer::Tree(tree) => Some(tree),
            OutboardAnswer::Absent => None,
            OutboardAnswer::Spent(tree) => {
                conn = self.connect(pace).await?;
                conn.send(self, self.request(addr, "", true).as_bytes())
                    .await?;
                tree
            }
        };
        let head = self.object_head(&mut conn, len_max).await?;
        let mut upload = shard
            .begin_fetched_copy(Some(head.len))
            .map_err(|e| self.error(FetchFailure::NoRoom, e))?;
        let received = match tree.filter(|t| t.object_len() == head.len) {
            Some(tree) => {
                FrontCounters::add(&metrics.fetch_origin_streamed, 1);
                let content_type = std::rc::Rc::from(head.content_type.as_str());
                flight.set_head(head.len, content_type);
                self.receive_groups(&mut conn, &mut upload, flight, &tree)
                    .await
            }
            None => self.receive_whole(&mut conn, &mut upload, head.len).await,
        };
        if let Err(e) = received {
            upload.abort().await;
            return Err(e);
        }
        let stored = |e: ron_shards::ShardError| self.error(FetchFailure::Storage, e);
        let staged = upload.finish(head.content_type).await.map_err(stored)?;
        let computed = staged.meta.addr();
        if computed != addr {
            ron_shards::discard(staged).await;
            return Err(self.error(
                FetchFailure::BadGroup,
                format!("the body hashes to {computed}, not to {addr}"),
            ));
        }
        Ok((staged, head.len))
    }

    /// A TCP connection to the origin: the address the last one reached first, then
    /// the others HOST resolved to (an origin behind several A/AAAA records, one of
    /// them down), each within `stall`. The last failure when none answers.
    async fn connect_tcp(&self, stall: Duration) -> Result<TcpStream, AttemptError> {
        let first = self.reached.load(Ordering::Relaxed) % self.addrs.len();
        let mut failed = None;
        for at in (0..self.addrs.len()).map(|i| (first + i) % self.addrs.len()) {
            match TcpStream::connect_timeout(self.addrs[at], stall).await {
                Ok(stream) => {
                    if at != first {
                        self.reached.store(at, Ordering::Relaxed);
                    }
                    return Ok(stream);
                }
                Err(e) => failed = Some(self.error(FetchFailure::Connect, e)),
            }
        }
        Err(failed.expect("an origin has at least one address"))
    }

    /// A new connection (TLS when the origin is HTTPS) whose reads and writes each
    /// time out after `pace.stall`.
    async fn connect(&self, pace: OriginPace) -> Result<OriginConn, AttemptError> {
        let stall = pace.stall;
        let stream = self.connect_tcp(stall).await?;
        let timeouts = stream
            .set_read_timeout(Some(stall))
            .and_then(|()| stream.set_write_timeout(Some(stall)));
        timeouts.map_err(|e| self.error(FetchFailure::Connect, e))?;
        let stream: Box<dyn OriginIo> = match &self.tls {
            None => Box::new(stream),
            Some(tls) => Box::new(
                ron_io::tls::connect(&tls.connector, tls.name.clone(), stream, stall)
                    .await
                    .map_err(|e| self.error(FetchFailure::Connect, format!("TLS: {e}")))?,
            ),
        };
        Ok(OriginConn {
            stream,
            buf: vec![0u8; READ_BYTES],
            start: 0,
            end: 0,
            stall,
            pace: TransferPace::new(Instant::now(), stall, pace.rate_min_bytes_per_s),
            body_taken: 0,
            progress_by: Instant::now() + stall,
            body_since_progress: 0,
        })
    }

    /// `GET PREFIX/o/<addr><suffix>`; the last request of a connection closes it. The
    /// bytes are asked for as stored (`Accept-Encoding: identity`): without it any coding
    /// is acceptable (RFC 9110 §12.5.3), and a compressed answer never hashes to the
    /// address of the bytes it encodes.
    fn request(&self, addr: Address, suffix: &str, last: bool) -> String {
        let connection = if last { "close" } else { "keep-alive" };
        format!(
            "GET {}/o/{addr}{suffix} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ron/{} read-through\r\nAccept-Encoding: identity\r\nConnection: {connection}\r\n\r\n",
            self.prefix,
            self.host,
            env!("CARGO_PKG_VERSION")
        )
    }

    fn io_error(&self, e: std::io::Error) -> AttemptError {
        match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                self.error(FetchFailure::Timeout, e)
            }
            _ => self.error(FetchFailure::Protocol, e),
        }
    }

    /// Reads the outboard's answer. A missing, refused or unusable outboard is no
    /// failure (the body is then verified whole); an origin that stalls or breaks the
    /// protocol on it fails the fetch, as it would on the object.
    async fn outboard(
        &self,
        conn: &mut OriginConn,
        addr: Address,
        len_max: u64,
        metrics: &FrontCounters,
    ) -> Result<OutboardAnswer, AttemptError> {
        let head = conn.read_head(self).await?;
        let ReplyBody::Length(len) = head.body else {
            return Ok(OutboardAnswer::Spent(None));
        };
        // An origin that closes after one answer (HTTP/1.0 servers, keep-alive off) has
        // dropped the object's request: asked again, with what this answer gave.
        let spent_after = |answer| match (head.keep_alive, answer) {
            (true, answer) => answer,
            (false, OutboardAnswer::Tree(tree)) => OutboardAnswer::Spent(Some(tree)),
            (false, _) => OutboardAnswer::Spent(None),
        };
        if head.status != 200 {
            if len > SKIPPED_BODY_BYTES_MAX {
                return Ok(OutboardAnswer::Spent(None));
            }
            conn.skip(self, len).await?;
            return Ok(spent_after(OutboardAnswer::Absent));
        }
        if !(8..=OUTBOARD_BYTES_MAX).contains(&len) {
            return Ok(OutboardAnswer::Spent(None));
        }
        let Some(_share) = OutboardShare::take(&self.outboards_buffered, len) else {
            FrontCounters::add(&metrics.fetch_outboards_unbuffered, 1);
            return Ok(OutboardAnswer::Spent(None));
        };
        let mut outboard = Vec::with_capacity(len as usize);
        let mut header_checked = false;
        while (outboard.len() as u64) < len {
            let bytes = conn.body_bytes(self, len - outboard.len() as u64).await?;
            outboard.extend_from_slice(bytes);
            // Not an outboard of the object it names (an error page, another file), or
            // of one larger than this node takes: not read further, and the object is
            // asked for again on a new connection.
            if !header_checked && outboard.len() >= 8 {
                header_checked = true;
                let object_len = object_len_of(&outboard);
                if !is_outboard_len(object_len, len) || object_len > len_max {
                    return Ok(OutboardAnswer::Spent(None));
                }
            }
        }
        let answer = match self.checked_tree(addr, &outboard) {
            Ok(tree) => OutboardAnswer::Tree(tree),
            Err(e) => {
                tracing::warn!(origin = %self.url, obj = %addr, reason = %e, "the origin's outboard does not check out: the body is verified whole");
                FrontCounters::add(&metrics.fetch_outboards_refused, 1);
                OutboardAnswer::Absent
            }
        };
        Ok(spent_after(answer))
    }

    /// The chunk tree an outboard describes, checked against the address.
    fn checked_tree(&self, addr: Address, outboard: &[u8]) -> Result<ChunkTree, ron_codec::Error> {
        let len = object_len_of(outboard);
        let cvs = outboard_group_cvs(addr, len, outboard)?;
        ChunkTree::from_stored(len, addr, &cvs)
    }

    /// The object's answer head: a 200 with a Content-Length within `len_max`.
    async fn object_head(
        &self,
        conn: &mut OriginConn,
        len_max: u64,
    ) -> Result<ObjectHead, AttemptError> {
        let head = conn.read_head(self).await?;
        self.object_of(head, len_max)
    }

    /// Receives the body whole into `upload` (which hashes it as it arrives).
    async fn receive_whole(
        &self,
        conn: &mut OriginConn,
        upload: &mut Upload,
        len: u64,
    ) -> Result<(), AttemptError> {
        let started = Instant::now();
        let mut received = 0;
        while received < len {
            let bytes = conn.body_bytes(self, len - received).await?;
            received += bytes.len() as u64;
            upload
                .write(bytes)
                .await
                .map_err(|e| self.error(FetchFailure::Storage, e))?;
        }
        tracing::debug!(origin = %self.url, len, elapsed_ms = started.elapsed().as_millis() as u64, "origin body received");
        Ok(())
    }

    /// Receives the body group by group, each checked against `tree` before it goes to
    /// the flight's waiters and into `upload`. A group that does not match ends the
    /// fetch: waiters see a short body, never a wrong byte, and nothing is stored.
    async fn receive_groups(
        &self,
        conn: &mut OriginConn,
        upload: &mut Upload,
        flight: &Flight,
        tree: &ChunkTree,
    ) -> Result<(), AttemptError> {
        let len = tree.object_len();
        let mut group = Vec::with_capacity(GROUP_LEN_BYTES as usize);
        let mut index = GroupIndex(0);
        let mut received = 0;
        while received < len {
            let mut bytes = conn.body_bytes(self, len - received).await?;
            received += bytes.len() as u64;
            while !bytes.is_empty() {
                let whole = group_len(len, index).unwrap_or(0) as usize;
                let take = (whole - group.len()).min(bytes.len());
                group.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if group.len() < whole {
                    continue;
                }
                tree.verify_group(index, &group).map_err(|e| {
                    self.error(
                        FetchFailure::BadGroup,
                        format!("does not match its outboard: {e}"),
                    )
                })?;
                let verified = Bytes::from(std::mem::replace(
                    &mut group,
                    Vec::with_capacity(GROUP_LEN_BYTES as usize),
                ));
                flight.push(verified.clone());
                upload
                    .write(&verified)
                    .await
                    .map_err(|e| self.error(FetchFailure::Storage, e))?;
                index = GroupIndex(index.0 + 1);
            }
        }
        Ok(())
    }
}

impl OriginConn {
    async fn send(&mut self, origin: &Origin, bytes: &[u8]) -> Result<(), AttemptError> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| origin.io_error(e))
    }

    /// From now, the next head or 64 KiB of body must come within the stall timeout,
    /// and by the time the pace says the body's next 64 KiB are due.
    fn expect_progress(&mut self) {
        let by_stall = Instant::now() + self.stall;
        let by_pace = self.pace.deadline(self.body_taken + GROUP_LEN_BYTES);
        self.progress_by = by_stall.min(by_pace);
        self.body_since_progress = 0;
    }

    fn late(&self, origin: &Origin) -> AttemptError {
        origin.error(
            FetchFailure::Timeout,
            format!(
                "no whole response head, or 64 KiB of body, within {} ms, or its body slower than {} bytes/s after its first {} ms",
                self.stall.as_millis(),
                self.pace.rate_min_bytes_per_s(),
                self.stall.as_millis()
            ),
        )
    }

    /// Reads more into the buffer (moving what is left to its front); 0 at the end.
    /// The read ends by `progress_by`: begun just before it, a read that waited out its
    /// own timeout stretched each 64 KiB's limit to twice the stall.
    async fn fill(&mut self, origin: &Origin) -> Result<usize, AttemptError> {
        let Some(left) = self
            .progress_by
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
        else {
            return Err(self.late(origin));
        };
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        let read = self.stream.read(&mut self.buf[self.end..]);
        let Some(read) = finished_within(left, read).await else {
            return Err(self.late(origin));
        };
        let n = read.map_err(|e| origin.io_error(e))?;
        self.end += n;
        Ok(n)
    }

    /// The next response head (what follows it stays buffered).
    async fn read_head(&mut self, origin: &Origin) -> Result<ReplyHead, AttemptError> {
        self.expect_progress();
        let mut interim = 0;
        loop {
            if let Some((head, len)) = origin.parse_reply(&self.buf[self.start..self.end])? {
                self.start += len;
                // 100 Continue, 103 Early Hints: the final answer follows (RFC 9110
                // §15.2), after a few of them at most.
                if (100..200).contains(&head.status) && head.status != 101 {
                    interim += 1;
                    if interim > INTERIM_HEADS_MAX {
                        return Err(origin.error(
                            FetchFailure::Protocol,
                            format!("answered {interim} interim (1xx) heads"),
                        ));
                    }
                    continue;
                }
                return Ok(head);
            }
            if self.fill(origin).await? == 0 {
                return Err(origin.error(
                    FetchFailure::Protocol,
                    "closed before a whole response head",
                ));
            }
        }
    }

    /// The next body bytes, at most `left`: what is buffered, else one read.
    async fn body_bytes(&mut self, origin: &Origin, left: u64) -> Result<&[u8], AttemptError> {
        if self.start == self.end && self.fill(origin).await? == 0 {
            return Err(origin.error(
                FetchFailure::Protocol,
                format!("closed {left} bytes before the end of the body"),
            ));
        }
        let take = ((self.end - self.start) as u64).min(left) as usize;
        self.body_taken += take as u64;
        self.body_since_progress += take as u64;
        if self.body_since_progress >= GROUP_LEN_BYTES {
            self.expect_progress();
        }
        let bytes = &self.buf[self.start..self.start + take];
        self.start += take;
        Ok(bytes)
    }

    async fn skip(&mut self, origin: &Origin, mut len: u64) -> Result<(), AttemptError> {
        while len > 0 {
            len -= self.body_bytes(origin, len).await?.len() as u64;
        }
        Ok(())
    }
}

/// The object length an outboard's header states (0 when it has no header).
fn object_len_of(outboard: &[u8]) -> u64 {
    let header: [u8; 8] = outboard
        .get(..8)
        .and_then(|h| h.try_into().ok())
        .unwrap_or_default();
    u64::from_le_bytes(header)
}

/// The TLS client of an HTTPS origin: the CAs to trust and the name its certificate
/// must carry (HOST without its port; an IP address is checked as one).
fn origin_tls(host: &str, ca_file: Option<&Path>) -> Result<OriginTls, String> {
    let bare = match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let bare = bare.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(bare.to_string())
        .map_err(|e| format!("{bare:?} is not a name a certificate can carry: {e}"))?;
    let roots = ron_io::tls::client_roots(ca_file).map_err(|e| e.to_string())?;
    let connector = ron_io::tls::client_connector(roots).map_err(|e| e.to_string())?;
    Ok(OriginTls { connector, name })
}

impl Origin {
    /// A response head at the front of `bytes`, once it is whole, and its length.
    fn parse_reply(&self, bytes: &[u8]) -> Result<Option<(ReplyHead, usize)>, AttemptError> {
        let reply = match parse_response_head(bytes, HEAD_BYTES_MAX) {
            Ok(ReplyParse::Complete(reply)) => reply,
            Ok(ReplyParse::Partial) => return Ok(None),
            Err(e) => return Err(self.error(FetchFailure::Protocol, e)),
        };
        let content_type = reply
            .content_type
            // Stored, then written in every answer: visible ASCII only (httparse lets
            // bytes 0x80–0xFF through, which a sender must not generate).
            .filter(|v| v.len() <= CONTENT_TYPE_LEN_MAX && is_safe_header_value(v))
            .and_then(|v| std::str::from_utf8(v).ok())
            .unwrap_or_default()
            .to_string();
        let head = ReplyHead {
            status: reply.status,
            body: reply.body(Method::Get),
            content_type,
            keep_alive: reply.keep_alive,
        };
        Ok(Some((head, reply.head_len)))
    }

    /// The object's answer: anything but a 200 with a Content-Length within `len_max`
    /// is refused (a 404 as `NotFound`: the origin's word that there is no such object).
    fn object_of(&self, head: ReplyHead, len_max: u64) -> Result<ObjectHead, AttemptError> {
        match head.status {
            200 => {}
            404 => return Err(self.error(FetchFailure::NotFound, "answered 404")),
            status => return Err(self.error(FetchFailure::Refused, format!("answered {status}"))),
        }
        let len = match head.body {
            ReplyBody::Length(len) => len,
            ReplyBody::Chunked => {
                return Err(self.error(
                    FetchFailure::Protocol,
                    "answered with Transfer-Encoding; a read-through needs Content-Length",
                ))
            }
            _ => {
                return Err(self.error(FetchFailure::Protocol, "answered without a Content-Length"))
            }
        };
        if len > len_max {
            return Err(self.error(
                FetchFailure::TooLarge,
                format!("answered {len} bytes, over the object limit of {len_max}"),
            ));
        }
        Ok(ObjectHead {
            len,
            content_type: head.content_type,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn origin() -> Origin {
        Origin::resolve("http://127.0.0.1:1", None).unwrap()
    }

    /// An origin whose name resolved to an address where nothing listens, then one that
    /// answers: the connection reaches the second, and the next one tries it first.
    /// Before, only the first address a lookup returned was ever tried.
    #[test]
    fn a_connection_tries_every_address_the_host_resolved_to() {
        let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let origin = Origin {
            addrs: vec![dead_addr, live.local_addr().unwrap()].into(),
            ..origin()
        };
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let stall = Duration::from_secs(2);
                let first = origin.connect_tcp(stall).await.unwrap();
                assert_eq!(first.peer_addr().unwrap(), origin.addrs[1]);
                assert_eq!(origin.reached.load(Ordering::Relaxed), 1);
                let again = origin.connect_tcp(stall).await.unwrap();
                assert_eq!(again.peer_addr().unwrap(), origin.addrs[1]);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    impl Origin {
        /// The object's answer head at the front of `bytes`: length, content type and
        /// where the body starts.
        fn parse_head(
            &self,
            bytes: &[u8],
            len_max: u64,
        ) -> Result<Option<(u64, String, usize)>, AttemptError> {
            let Some((head, at)) = self.parse_reply(bytes)? else {
                return Ok(None);
            };
            let object = self.object_of(head, len_max)?;
            Ok(Some((object.len, object.content_type, at)))
        }
    }

    #[test]
    fn only_a_200_with_a_bounded_content_length_is_taken() {
        let o = origin();
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/css\r\n\r\nhello";
        let (len, ct, at) = o.parse_head(head, 10).unwrap().unwrap();
        assert_eq!(
            (len, ct.as_str(), &head[at..]),
            (5, "text/css", &b"hello"[..])
        );
        assert!(o
            .parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", 10)
            .unwrap()
            .is_none());
        let accented = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Type: text/plain; charset=\u{e9}\r\n\r\n";
        let (_, ct, _) = o.parse_head(accented.as_bytes(), 10).unwrap().unwrap();
        assert_eq!(ct, "", "a type that is not visible ASCII is not kept");
        let refusal = |bytes: &[u8]| o.parse_head(bytes, 10).unwrap_err();
        let missing = refusal(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            (missing.reason, missing.detail.as_str()),
            (FetchFailure::NotFound, "answered 404")
        );
        let big = refusal(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n");
        assert_eq!(big.reason, FetchFailure::TooLarge);
        assert_eq!(big.detail, "answered 11 bytes, over the object limit of 10");
        let chunked = refusal(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(chunked.reason, FetchFailure::Protocol);
        let no_len = refusal(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(no_len.detail, "answered without a Content-Length");
        assert_eq!(
            no_len.to_string(),
            "http://127.0.0.1:1: answered without a Content-Length"
        );
    }

    proptest! {
        /// Whatever an origin sends as its head, the answer is a refusal or a length
        /// within the limit, never a panic.
        #[test]
        fn any_response_head_is_refused_or_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(Some((len, ct, at))) = origin().parse_head(&bytes, 1 << 20) {
                prop_assert!(len <= 1 << 20);
                prop_assert!(ct.len() <= CONTENT_TYPE_LEN_MAX);
                prop_assert!(is_safe_header_value(ct.as_bytes()));
                prop_assert!(at <= bytes.len());
            }
        }
    }

    #[test]
    fn origin_urls_are_http_or_https_with_an_optional_prefix() {
        let o = Origin::resolve("http://127.0.0.1:8080/cdn/", None).unwrap();
        assert_eq!((o.addrs[0].port(), o.prefix.as_str()), (8080, "/cdn"));
        assert_eq!(o.host, "127.0.0.1:8080");
        assert!(o.tls.is_none());
        let bare = Origin::resolve("http://127.0.0.1", None).unwrap();
        assert_eq!((bare.addrs[0].port(), bare.prefix.as_str()), (80, ""));
        let ftp = Origin::resolve("ftp://example.invalid", None).unwrap_err();
        assert!(
            matches!(&ftp, OriginError::Scheme { url } if url == "ftp://example.invalid"),
            "{ftp:?}"
        );
        assert_eq!(
            ftp.to_string(),
            "origin \"ftp://example.invalid\": only http:// and https:// origins are supported"
        );
        let missing_ca =
            Origin::resolve("https://127.0.0.1", Some(Path::new("/nonexistent/ca.pem")));
        let missing_ca = missing_ca.unwrap_err().to_string();
        assert!(
            missing_ca
                .starts_with("origin \"https://127.0.0.1\": TLS certificate /nonexistent/ca.pem"),
            "{missing_ca}"
        );
        let no_host = Origin::resolve("http:///x", None).unwrap_err();
        assert!(matches!(no_host, OriginError::NoHost { .. }), "{no_host:?}");
        assert_eq!(no_host.to_string(), "origin \"http:///x\": no host");
        let bad_port = Origin::resolve("http://127.0.0.1:http", None).unwrap_err();
        assert!(
            matches!(bad_port, OriginError::Lookup { .. }),
            "{bad_port:?}"
        );
        assert!(
            bad_port
                .to_string()
                .starts_with("origin \"http://127.0.0.1:http\": "),
            "{bad_port}"
        );
    }
}
