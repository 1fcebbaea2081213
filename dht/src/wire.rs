//! One message of a request-response protocol on its stream: the stream's end
//! delimits it, and a message longer than its protocol allows fails the stream.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
