//! One message of a request-response protocol on its stream: the stream's end
//! delimits it, and a message longer than its protocol allows fails the stream. The
//! libp2p codec of every such protocol ron speaks is [`WireCodec`] over its messages'
//! encoders ([`WireMessages`]).

use std::io;
use std::marker::PhantomData;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

/// A message of `protocol` that is not what it says it is: it fails the stream.
pub(crate) fn invalid(protocol: &str, what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{protocol}: {what}"))
}

/// Reads a whole message, at most `bytes_max` (`protocol` names it in the error).
pub(crate) async fn read_message<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    bytes_max: usize,
    protocol: &str,
) -> io::Result<Vec<u8>> {
    let mut message = Vec::new();
    io.take(bytes_max as u64 + 1)
        .read_to_end(&mut message)
        .await?;
    if message.len() > bytes_max {
        return Err(invalid(protocol, "message too long"));
    }
    Ok(message)
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
/// read to its end within `M::MESSAGE_BYTES_MAX`.
#[derive(Debug)]
pub struct WireCodec<M>(PhantomData<M>);

impl<M> Clone for WireCodec<M> {
    fn clone(&self) -> Self {
        WireCodec(PhantomData)
    }
}

impl<M> Default for WireCodec<M> {
    fn default() -> Self {
        WireCodec(PhantomData)
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
        M::decode_request(&read_message(io, M::MESSAGE_BYTES_MAX, M::PROTOCOL.as_ref()).await?)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<M::Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        M::decode_response(&read_message(io, M::MESSAGE_BYTES_MAX, M::PROTOCOL.as_ref()).await?)
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
