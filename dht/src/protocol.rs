//! `/ron/provide/1`: the one request-response protocol ron adds beside Kademlia.
//!
//! - A request carries the sender's ports (libp2p and OAP) and up to
//!   [`PROVIDE_KEYS_MAX`] record keys it provides: with no keys it is the greeting a
//!   dialer sends on every new connection (each side learns where the other serves
//!   OAP and listens for libp2p); with keys it is a batch of the reprovide sweep, and
//!   the receiver stores one provider record per key for the sender.
//! - The response carries the receiver's ports and how many records it stored.
//!
//! Addresses are never taken from a message: the IP is the one the connection came
//! from, the ports are the peer's claim (so a peer cannot point others at a third
//! host). The sender's `PeerId` is the connection's, authenticated by noise.
//!
//! Wire format (big-endian): request = `1` ‖ p2p port u16 ‖ OAP port u16 ‖ key count
//! u16 ‖ per key: length u8 ‖ bytes; response = `1` ‖ p2p port u16 ‖ OAP port u16 ‖
//! stored u16. A message longer than [`MESSAGE_BYTES_MAX`], a key longer than
//! [`crate::store::RECORD_KEY_BYTES_MAX`] or an unknown version fails the stream
//! (`InvalidData`).

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::kad::RecordKey;
use libp2p::StreamProtocol;

use crate::store::RECORD_KEY_BYTES_MAX;

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/ron/provide/1");
/// Keys in one request.
pub const PROVIDE_KEYS_MAX: usize = 4_096;
/// The largest message read: a full batch of the longest keys.
pub const MESSAGE_BYTES_MAX: usize = 7 + PROVIDE_KEYS_MAX * (1 + RECORD_KEY_BYTES_MAX);
const VERSION: u8 = 1;

/// Where a node listens, as it says itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub p2p: u16,
    pub oap: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvideRequest {
    pub ports: Ports,
    pub keys: Vec<RecordKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProvideResponse {
    pub ports: Ports,
    pub stored: u16,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("/ron/provide/1: {what}"),
    )
}

pub fn encode_request(request: &ProvideRequest) -> io::Result<Vec<u8>> {
    if request.keys.len() > PROVIDE_KEYS_MAX {
        return Err(invalid("too many keys"));
    }
    let mut out = Vec::with_capacity(7 + request.keys.len() * 35);
    out.push(VERSION);
    out.extend_from_slice(&request.ports.p2p.to_be_bytes());
    out.extend_from_slice(&request.ports.oap.to_be_bytes());
    out.extend_from_slice(&(request.keys.len() as u16).to_be_bytes());
    for key in &request.keys {
        let bytes = key.as_ref();
        if bytes.len() > RECORD_KEY_BYTES_MAX {
            return Err(invalid("key too long"));
        }
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    Ok(out)
}

fn ports_and_count(message: &[u8]) -> io::Result<(Ports, u16, &[u8])> {
    let (head, rest) = message
        .split_at_checked(7)
        .ok_or_else(|| invalid("short message"))?;
    if head[0] != VERSION {
        return Err(invalid("unknown version"));
    }
    let word = |i: usize| u16::from_be_bytes([head[i], head[i + 1]]);
    Ok((
        Ports {
            p2p: word(1),
            oap: word(3),
        },
        word(5),
        rest,
    ))
}

pub fn decode_request(message: &[u8]) -> io::Result<ProvideRequest> {
    let (ports, count, mut rest) = ports_and_count(message)?;
    if usize::from(count) > PROVIDE_KEYS_MAX {
        return Err(invalid("too many keys"));
    }
    let mut keys = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let (&len, tail) = rest.split_first().ok_or_else(|| invalid("short key"))?;
        if usize::from(len) > RECORD_KEY_BYTES_MAX {
            return Err(invalid("key too long"));
        }
        let (key, tail) = tail
            .split_at_checked(usize::from(len))
            .ok_or_else(|| invalid("short key"))?;
        keys.push(RecordKey::new(&key));
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(invalid("bytes after the last key"));
    }
    Ok(ProvideRequest { ports, keys })
}

pub fn encode_response(response: &ProvideResponse) -> Vec<u8> {
    let mut out = Vec::with_capacity(7);
    out.push(VERSION);
    out.extend_from_slice(&response.ports.p2p.to_be_bytes());
    out.extend_from_slice(&response.ports.oap.to_be_bytes());
    out.extend_from_slice(&response.stored.to_be_bytes());
    out
}

pub fn decode_response(message: &[u8]) -> io::Result<ProvideResponse> {
    let (ports, stored, rest) = ports_and_count(message)?;
    if !rest.is_empty() {
        return Err(invalid("bytes after the response"));
    }
    Ok(ProvideResponse { ports, stored })
}

/// Reads a whole message (the stream's end delimits it), at most `MESSAGE_BYTES_MAX`.
async fn read_message<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut message = Vec::new();
    io.take(MESSAGE_BYTES_MAX as u64 + 1)
        .read_to_end(&mut message)
        .await?;
    if message.len() > MESSAGE_BYTES_MAX {
        return Err(invalid("message too long"));
    }
    Ok(message)
}

async fn write_message<T: AsyncWrite + Unpin + Send>(io: &mut T, message: &[u8]) -> io::Result<()> {
    io.write_all(message).await?;
    io.close().await
}

/// The request-response codec for [`PROTOCOL`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ProvideCodec;

impl libp2p::request_response::Codec for ProvideCodec {
    type Protocol = StreamProtocol;
    type Request = ProvideRequest;
    type Response = ProvideResponse;

    async fn read_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<ProvideRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        decode_request(&read_message(io).await?)
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<ProvideResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        decode_response(&read_message(io).await?)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: ProvideRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &encode_request(&request)?).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: ProvideResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &encode_response(&response)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn requests_round_trip(p2p: u16, oap: u16, keys in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..=RECORD_KEY_BYTES_MAX), 0..50)) {
            let request = ProvideRequest {
                ports: Ports { p2p, oap },
                keys: keys.iter().map(RecordKey::new).collect(),
            };
            prop_assert_eq!(decode_request(&encode_request(&request).unwrap()).unwrap(), request);
        }

        #[test]
        fn no_input_panics_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_request(&bytes);
            let _ = decode_response(&bytes);
        }
    }

    #[test]
    fn malformed_messages_get_named_errors() {
        let ok = encode_request(&ProvideRequest {
            ports: Ports { p2p: 1, oap: 2 },
            keys: vec![RecordKey::new(&[9u8; 34])],
        })
        .unwrap();
        let cases: [(Vec<u8>, &str); 5] = [
            (ok[..5].to_vec(), "short message"),
            ([&[2u8][..], &ok[1..]].concat(), "unknown version"),
            (ok[..ok.len() - 1].to_vec(), "short key"),
            ([&ok[..], &[0u8][..]].concat(), "bytes after the last key"),
            (
                [&ok[..7], &[65u8][..], &[0u8; 65][..]].concat(),
                "key too long",
            ),
        ];
        for (bytes, expected) in cases {
            let err = decode_request(&bytes).unwrap_err();
            assert_eq!(err.to_string(), format!("/ron/provide/1: {expected}"));
        }
        let response = ProvideResponse {
            ports: Ports { p2p: 3, oap: 4 },
            stored: 7,
        };
        assert_eq!(
            decode_response(&encode_response(&response)).unwrap(),
            response
        );
    }
}
