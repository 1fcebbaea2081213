//! One message of a request-response protocol on its stream: the stream's end
//! delimits it, and a message longer than its protocol allows fails the stream. The
//! libp2p codec of every such protocol ron speaks is [`WireCodec`] over its messages'
//! encoders ([`WireMessages`]).
//!
//! Memory: a message is read in chunks of [`READ_CHUNK_BYTES`] (the first read, before
//! anything has come, of [`FIRST_READ_BYTES`]: a silent stream holds little) into a buffer grown to
//! exactly what came (not doubled), and every byte of a message still being read is
//! held against one node-wide [`ReadBudget`] ([`MESSAGES_READING_BYTES_MAX`]): a peer
//! that opens many streams and trickles each (up to 64 per connection and protocol,
//! 512 connections) fails its streams once the budget is spent, instead of holding up
//! to 64 × 512 KiB per connection until each stream's timeout. Once its first byte has
//! come, a message must be whole within [`MESSAGE_READ_GRACE`] plus its length at
//! [`MESSAGE_READ_BYTES_PER_S_MIN`]: a stream trickling a message held its share of
//! the budget until the protocol's request timeout (10 s, 75 s for `/ron/replicate/1`),
//! so one host's streams could hold the whole budget for ~6 MiB/s of sends, and every
//! other peer's greeting and copy request was refused meanwhile. (What yamux holds below
//! it, a stream's data not yet read, the budget does not see: docs/design/dht.md,
//! "Message buffers".)

use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

/// Bytes of messages being read, all streams and protocols of the node together.
pub const MESSAGES_READING_BYTES_MAX: usize = 64 << 20;
/// Bytes read from a stream at a time.
const READ_CHUNK_BYTES: usize = 16 << 10;
/// Bytes of a stream's first read, before anything has come: 64 streams per
/// connection and protocol, 512 connections, left silent, held 16 KiB each (~1 GiB)
/// outside the budget.
const FIRST_READ_BYTES: usize = 256;
/// A message's time to be whole from its first byte, beside its length at
/// [`MESSAGE_READ_BYTES_PER_S_MIN`]. Not from the stream's start: a response may
/// rightly come a minute after its request (a replicate answer waits on the pulls).
pub const MESSAGE_READ_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// The slowest a message's bytes may come once it has begun.
pub const MESSAGE_READ_BYTES_PER_S_MIN: u64 = 256 << 10;

/// A message of `protocol` that is not what it says it is: it fails the stream.
pub(crate) fn invalid(protocol: &str, what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{protocol}: {what}"))
}

/// The bytes messages being read may hold, shared by every codec of a node.
#[derive(Debug, Clone)]
pub struct ReadBudget {
    left: Arc<AtomicUsize>,
}

impl ReadBudget {
    pub fn new(bytes: usize) -> ReadBudget {
        ReadBudget {
            left: Arc::new(AtomicUsize::new(bytes)),
        }
    }

    /// Bytes not held by a message being read.
    pub fn left(&self) -> usize {
        self.left.load(Ordering::Relaxed)
    }

    fn hold(&self) -> Held<'_> {
        Held {
            budget: self,
            bytes: 0,
        }
    }
}

/// What one message being read holds of the budget; given back when it is dropped.
struct Held<'a> {
    budget: &'a ReadBudget,
    bytes: usize,
}

impl Held<'_> {
    fn grow(&mut self, bytes: usize) -> bool {
        let taken = self
            .budget
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(bytes)
            })
            .is_ok();
        if taken {
            self.bytes += bytes;
        }
        taken
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.budget.left.fetch_add(self.bytes, Ordering::Relaxed);
    }
}

/// Reads a whole message, at most `bytes_max` (`protocol` names it in the error), its
/// bytes held against `budget` while it is read.
pub(crate) async fn read_message<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    bytes_max: usize,
    protocol: &str,
    budget: &ReadBudget,
) -> io::Result<Vec<u8>> {
    let mut message = Vec::new();
    let mut held = budget.hold();
    // Small until the first byte: a stream opened and left silent (64 per connection
    // and protocol, held until the protocol's timeout) holds this, outside the budget.
    let mut chunk = vec![0u8; FIRST_READ_BYTES.min(bytes_max + 1)];
    let mut began: Option<tokio::time::Instant> = None;
    loop {
        let read = match began {
            None => io.read(&mut chunk).await?,
            Some(began) => {
                let due = whole_by(began, message.len() + chunk.len());
                match tokio::time::timeout_at(due, io.read(&mut chunk)).await {
                    Ok(read) => read?,
                    Err(_) => return Err(too_slow(protocol)),
                }
            }
        };
        if began.is_none() {
            began = Some(tokio::time::Instant::now());
            chunk.resize(READ_CHUNK_BYTES.min(bytes_max + 1), 0);
        }
        if read == 0 {
            return Ok(message);
        }
        if message.len() + read > bytes_max {
            return Err(invalid(protocol, "message too long"));
        }
        if !held.grow(read) {
            return Err(invalid(
                protocol,
                "this node's buffers for messages being read are full",
            ));
        }
        message.reserve_exact(read);
        message.extend_from_slice(&chunk[..read]);
    }
}

/// When a message begun at `began` must have its first `bytes` bytes.
fn whole_by(began: tokio::time::Instant, bytes: usize) -> tokio::time::Instant {
    let allowed_ms = bytes as u64 * 1_000 / MESSAGE_READ_BYTES_PER_S_MIN;
    began + MESSAGE_READ_GRACE + std::time::Duration::from_millis(allowed_ms)
}

fn too_slow(protocol: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "{protocol}: a message not whole within {} ms of its first byte, at {} bytes/s",
            MESSAGE_READ_GRACE.as_millis(),
            MESSAGE_READ_BYTES_PER_S_MIN
        ),
    )
}

/// Writes `message` and closes the stream's sending side (the end of the message).
pub(crate) async fn write_message<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    message: &[u8],
) -> io::Result<()> {
    io.write_all(message).await?;
    io.close().await
}

/// A request-response protocol whose messages are whole streams: its name, its largest
/// message, and how its requests and responses are written and read.
pub trait WireMessages: Send + 'static {
    const PROTOCOL: StreamProtocol;
    const MESSAGE_BYTES_MAX: usize;
    type Request: Send;
    type Response: Send;
    fn encode_request(request: &Self::Request) -> io::Result<Vec<u8>>;
    fn decode_request(message: &[u8]) -> io::Result<Self::Request>;
    fn encode_response(response: &Self::Response) -> io::Result<Vec<u8>>;
    fn decode_response(message: &[u8]) -> io::Result<Self::Response>;
}

/// The libp2p request-response codec of the protocol `M`: each message one stream,
/// read to its end within `M::MESSAGE_BYTES_MAX` and the node's [`ReadBudget`].
#[derive(Debug)]
pub struct WireCodec<M> {
    budget: ReadBudget,
    messages: PhantomData<M>,
}

impl<M> WireCodec<M> {
    /// A codec whose messages being read share `budget` (every codec of a node one).
    pub fn with_budget(budget: ReadBudget) -> Self {
        WireCodec {
            budget,
            messages: PhantomData,
        }
    }
}

impl<M> Clone for WireCodec<M> {
    fn clone(&self) -> Self {
        WireCodec::with_budget(self.budget.clone())
    }
}

/// A codec with a budget of its own ([`MESSAGES_READING_BYTES_MAX`]).
impl<M> Default for WireCodec<M> {
    fn default() -> Self {
        WireCodec::with_budget(ReadBudget::new(MESSAGES_READING_BYTES_MAX))
    }
}

impl<M: WireMessages> libp2p::request_response::Codec for WireCodec<M> {
    type Protocol = StreamProtocol;
    type Request = M::Request;
    type Response = M::Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<M::Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        let protocol = M::PROTOCOL;
        let message = read_message(io, M::MESSAGE_BYTES_MAX, protocol.as_ref(), &self.budget);
        M::decode_request(&message.await?)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<M::Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let protocol = M::PROTOCOL;
        let message = read_message(io, M::MESSAGE_BYTES_MAX, protocol.as_ref(), &self.budget);
        M::decode_response(&message.await?)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: M::Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &M::encode_request(&request)?).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: M::Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &M::encode_response(&response)?).await
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures::io::Cursor;
    use futures::FutureExt;

    use super::*;

    /// A stream that sends `bytes` and then nothing, never ending (a trickling peer).
    struct Trickle {
        bytes: Vec<u8>,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            if self.bytes.is_empty() {
                return Poll::Pending;
            }
            let n = buf.len().min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes.drain(..n);
            Poll::Ready(Ok(n))
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    fn read(bytes: &[u8], max: usize, budget: &ReadBudget) -> io::Result<Vec<u8>> {
        runtime().block_on(read_message(&mut Cursor::new(bytes), max, "/t/1", budget))
    }

    #[test]
    fn a_message_is_read_whole_into_exactly_its_size_or_refused_past_its_limit() {
        let budget = ReadBudget::new(1 << 20);
        let body: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let message = read(&body, 100_000, &budget).unwrap();
        assert_eq!(message, body);
        assert_eq!(message.capacity(), body.len());
        let err = read(&body, 99_999, &budget).unwrap_err();
        assert_eq!(err.to_string(), "/t/1: message too long");
        assert_eq!(read(&[], 10, &budget).unwrap(), Vec::<u8>::new());
        assert_eq!(budget.left(), 1 << 20);
    }

    /// A stream that has sent nothing is read into 256 bytes, not 16 KiB: a peer
    /// opening silent streams (64 per connection and protocol) held 16 KiB each, outside
    /// the budget, until the protocol's timeout.
    #[test]
    fn a_silent_stream_holds_a_small_buffer() {
        struct Silent {
            asked: usize,
        }
        impl AsyncRead for Silent {
            fn poll_read(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                self.asked = self.asked.max(buf.len());
                Poll::Pending
            }
        }
        let budget = ReadBudget::new(1 << 20);
        let mut silent = Silent { asked: 0 };
        let reading = read_message(&mut silent, 1 << 20, "/t/1", &budget);
        assert!(Box::pin(reading).now_or_never().is_none());
        assert!(
            silent.asked <= 256,
            "{} bytes for a stream that sent none",
            silent.asked
        );
        // Once bytes come, the reads are whole chunks again.
        let body: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        assert_eq!(read(&body, 100_000, &budget).unwrap(), body);
    }

    #[test]
    fn messages_being_read_share_one_budget_and_give_it_back() {
        let budget = ReadBudget::new(50_000);
        // A trickling stream holds what it sent while its message is unfinished.
        let mut stalled = Trickle {
            bytes: vec![7; 40_000],
        };
        let rt = runtime();
        let _in_runtime = rt.enter();
        let mut reading = Box::pin(read_message(&mut stalled, 100_000, "/t/1", &budget));
        assert!((&mut reading).now_or_never().is_none());
        assert_eq!(budget.left(), 10_000);
        // Another stream's message does not fit beside it: refused, not buffered.
        let err = read(&[1; 20_000], 100_000, &budget).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/t/1: this node's buffers for messages being read are full"
        );
        assert_eq!(budget.left(), 10_000);
        assert_eq!(read(&[1; 9_000], 100_000, &budget).unwrap().len(), 9_000);
        // The stalled stream ends (its timeout): its bytes come back.
        drop(reading);
        assert_eq!(budget.left(), 50_000);
        assert_eq!(read(&[1; 20_000], 100_000, &budget).unwrap().len(), 20_000);
    }

    #[test]
    fn a_message_begun_and_not_finished_in_time_is_cut_and_its_bytes_come_back() {
        let budget = ReadBudget::new(1 << 20);
        let rt = runtime();
        let begun = std::time::Instant::now();
        let outcome = rt.block_on(async {
            let mut stalled = Trickle {
                bytes: vec![7; 40_000],
            };
            let reading = read_message(&mut stalled, 100_000, "/t/1", &budget);
            tokio::time::timeout(MESSAGE_READ_GRACE * 3, reading).await
        });
        let took = begun.elapsed();
        let err = outcome
            .expect("cut before the test's own timeout")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/t/1: a message not whole within 2000 ms of its first byte, at 262144 bytes/s"
        );
        assert!(took >= MESSAGE_READ_GRACE, "{took:?}");
        assert!(took < MESSAGE_READ_GRACE * 2, "{took:?}");
        assert_eq!(budget.left(), 1 << 20, "its bytes given back");
    }
}
