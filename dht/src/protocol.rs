//! `/ron/provide/2`: ron's request-response protocol beside Kademlia for who provides
//! what.
//!
//! - A request carries the sender's ports (libp2p and OAP), its zone and up to
//!   [`PROVIDE_KEYS_MAX`] record keys it provides: with no keys it is the greeting a
//!   dialer sends on every new connection (each side learns where the other serves
//!   OAP and listens for libp2p, and the zone placement counts it in); with keys it is a batch of the reprovide sweep, and
//!   the receiver stores one provider record per key for the sender.
//! - The response carries the receiver's ports and zone and how many records it stored.
//!
//! Addresses are never taken from a message: the IP is the one the connection came
//! from, the ports are the peer's claim (so a peer cannot point others at a third
//! host). The sender's `PeerId` is the connection's, authenticated by noise.
//!
//! Wire format (big-endian): request = `2` ‖ p2p port u16 ‖ OAP port u16 ‖ zone
//! length u8 ‖ zone ‖ key count u16 ‖ per key: length u8 ‖ bytes; response = `2` ‖ p2p
//! port u16 ‖ OAP port u16 ‖ zone length u8 ‖ zone ‖ stored u16. A zone is at most
//! [`ZONE_BYTES_MAX`] bytes of `A-Z a-z 0-9 . _ -` (empty: no zone). A key is an
//! object's record key: the BLAKE3-256 multihash (`0x1e 0x20` ‖ 32 bytes). A message
//! longer than [`MESSAGE_BYTES_MAX`], a key that is not an object's, a zone that is not
//! a zone name or an unknown version fails the stream (`InvalidData`): a batch of short
//! made-up keys cost the receiver as much as real ones, in a fraction of the bytes.

use std::io;

use libp2p::kad::RecordKey;
use libp2p::StreamProtocol;

use crate::wire::{WireCodec, WireMessages};

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/ron/provide/2");
/// A zone name's length at most.
pub const ZONE_BYTES_MAX: usize = 64;
/// Keys in one request.
pub const PROVIDE_KEYS_MAX: usize = 4_096;
/// An object's record key: the BLAKE3-256 multihash code and length, then the hash.
pub const OBJECT_KEY_BYTES: usize = 34;
const OBJECT_KEY_PREFIX: [u8; 2] = [0x1e, 0x20];
/// The largest message read: a full batch of keys.
pub const MESSAGE_BYTES_MAX: usize = 8 + ZONE_BYTES_MAX + PROVIDE_KEYS_MAX * (1 + OBJECT_KEY_BYTES);
const VERSION: u8 = 2;

/// Where a node listens, as it says itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub p2p: u16,
    pub oap: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvideRequest {
    pub ports: Ports,
    pub zone: String,
    pub keys: Vec<RecordKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvideResponse {
    pub ports: Ports,
    pub zone: String,
    pub stored: u16,
}

/// Whether `zone` is a zone name (or empty: no zone).
pub fn is_zone_name(zone: &str) -> bool {
    zone.len() <= ZONE_BYTES_MAX
        && zone
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn invalid(what: &str) -> io::Error {
    crate::wire::invalid(PROTOCOL.as_ref(), what)
}

pub fn encode_request(request: &ProvideRequest) -> io::Result<Vec<u8>> {
    if request.keys.len() > PROVIDE_KEYS_MAX {
        return Err(invalid("too many keys"));
    }
    let mut out = Vec::with_capacity(8 + request.zone.len() + request.keys.len() * 35);
    greeting(&mut out, request.ports, &request.zone)?;
    out.extend_from_slice(&(request.keys.len() as u16).to_be_bytes());
    for key in &request.keys {
        let bytes = key.as_ref();
        if !is_object_key(bytes) {
            return Err(invalid("not an object's key"));
        }
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    Ok(out)
}

/// Writes what both messages start with: the version, the ports and the zone.
fn greeting(out: &mut Vec<u8>, ports: Ports, zone: &str) -> io::Result<()> {
    if !is_zone_name(zone) {
        return Err(invalid("not a zone name"));
    }
    out.push(VERSION);
    out.extend_from_slice(&ports.p2p.to_be_bytes());
    out.extend_from_slice(&ports.oap.to_be_bytes());
    out.push(zone.len() as u8);
    out.extend_from_slice(zone.as_bytes());
    Ok(())
}

/// What both messages start with, then their count (keys, or records stored).
fn greeting_and_count(message: &[u8]) -> io::Result<(Ports, String, u16, &[u8])> {
    let (head, rest) = message
        .split_at_checked(6)
        .ok_or_else(|| invalid("short message"))?;
    if head[0] != VERSION {
        return Err(invalid("unknown version"));
    }
    let word = |i: usize| u16::from_be_bytes([head[i], head[i + 1]]);
    let ports = Ports {
        p2p: word(1),
        oap: word(3),
    };
    let (zone, rest) = rest
        .split_at_checked(usize::from(head[5]))
        .ok_or_else(|| invalid("short message"))?;
    let zone = std::str::from_utf8(zone)
        .ok()
        .filter(|z| is_zone_name(z))
        .ok_or_else(|| invalid("not a zone name"))?;
    let (count, rest) = rest
        .split_at_checked(2)
        .ok_or_else(|| invalid("short message"))?;
    let count = u16::from_be_bytes([count[0], count[1]]);
    Ok((ports, zone.to_owned(), count, rest))
}

pub fn decode_request(message: &[u8]) -> io::Result<ProvideRequest> {
    let (ports, zone, count, mut rest) = greeting_and_count(message)?;
    if usize::from(count) > PROVIDE_KEYS_MAX {
        return Err(invalid("too many keys"));
    }
    let mut keys = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let (&len, tail) = rest.split_first().ok_or_else(|| invalid("short key"))?;
        let (key, tail) = tail
            .split_at_checked(usize::from(len))
            .ok_or_else(|| invalid("short key"))?;
        if !is_object_key(key) {
            return Err(invalid("not an object's key"));
        }
        keys.push(RecordKey::new(&key));
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(invalid("bytes after the last key"));
    }
    Ok(ProvideRequest { ports, zone, keys })
}

/// Whether `key` is an object's record key ([`OBJECT_KEY_BYTES`]).
pub fn is_object_key(key: &[u8]) -> bool {
    key.len() == OBJECT_KEY_BYTES && key.starts_with(&OBJECT_KEY_PREFIX)
}

pub fn encode_response(response: &ProvideResponse) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(8 + response.zone.len());
    greeting(&mut out, response.ports, &response.zone)?;
    out.extend_from_slice(&response.stored.to_be_bytes());
    Ok(out)
}

pub fn decode_response(message: &[u8]) -> io::Result<ProvideResponse> {
    let (ports, zone, stored, rest) = greeting_and_count(message)?;
    if !rest.is_empty() {
        return Err(invalid("bytes after the response"));
    }
    Ok(ProvideResponse {
        ports,
        zone,
        stored,
    })
}

/// `/ron/provide/2`'s messages, for the stream codec ([`ProvideCodec`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProvideMessages;

impl WireMessages for ProvideMessages {
    const PROTOCOL: StreamProtocol = PROTOCOL;
    const MESSAGE_BYTES_MAX: usize = MESSAGE_BYTES_MAX;
    type Request = ProvideRequest;
    type Response = ProvideResponse;

    fn encode_request(request: &ProvideRequest) -> io::Result<Vec<u8>> {
        encode_request(request)
    }

    fn decode_request(message: &[u8]) -> io::Result<ProvideRequest> {
        decode_request(message)
    }

    fn encode_response(response: &ProvideResponse) -> io::Result<Vec<u8>> {
        encode_response(response)
    }

    fn decode_response(message: &[u8]) -> io::Result<ProvideResponse> {
        decode_response(message)
    }
}

/// The request-response codec for [`PROTOCOL`].
pub type ProvideCodec = WireCodec<ProvideMessages>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::record_key as object_key;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn requests_round_trip(p2p: u16, oap: u16, zone in "[a-zA-Z0-9._-]{0,64}",
            keys in proptest::collection::vec(any::<[u8; 32]>(), 0..50)) {
            let request = ProvideRequest {
                ports: Ports { p2p, oap },
                zone: zone.clone(),
                keys: keys.iter().map(object_key).collect(),
            };
            prop_assert_eq!(decode_request(&encode_request(&request).unwrap()).unwrap(), request);
            let response = ProvideResponse { ports: Ports { p2p, oap }, zone, stored: oap };
            prop_assert_eq!(decode_response(&encode_response(&response).unwrap()).unwrap(), response);
        }

        /// No input panics a decoder, and what decodes is canonical: encoded again, the
        /// same bytes (the `dht_messages` fuzz target asks the same).
        #[test]
        fn no_input_panics_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(request) = decode_request(&bytes) {
                prop_assert_eq!(encode_request(&request).unwrap(), bytes.clone());
            }
            if let Ok(response) = decode_response(&bytes) {
                prop_assert_eq!(encode_response(&response).unwrap(), bytes);
            }
        }
    }

    #[test]
    fn malformed_messages_get_named_errors() {
        let ok = encode_request(&ProvideRequest {
            ports: Ports { p2p: 1, oap: 2 },
            zone: "eu".into(),
            keys: vec![object_key(&[9u8; 32])],
        })
        .unwrap();
        let head = 10; // version, ports, zone "eu", count
        let key_of = |bytes: &[u8]| [&ok[..head], &[bytes.len() as u8][..], bytes].concat();
        let cases: [(Vec<u8>, &str); 11] = [
            (ok[..5].to_vec(), "short message"),
            (ok[..7].to_vec(), "short message"),
            ([&[1u8][..], &ok[1..]].concat(), "unknown version"),
            ([&ok[..6], b"e/", &ok[8..]].concat(), "not a zone name"),
            (ok[..ok.len() - 1].to_vec(), "short key"),
            ([&ok[..], &[0u8][..]].concat(), "bytes after the last key"),
            (key_of(&[0u8; 65]), "not an object's key"),
            (key_of(&[0x1e, 0x20]), "not an object's key"),
            (
                key_of(&[[0x1e, 0x20].as_slice(), &[7; 33]].concat()),
                "not an object's key",
            ),
            (
                key_of(&[[0x12, 0x20].as_slice(), &[7; 32]].concat()),
                "not an object's key",
            ),
            (
                [&ok[..5], &[200u8][..], &[b'a'; 200][..]].concat(),
                "not a zone name",
            ),
        ];
        for (bytes, expected) in cases {
            let err = decode_request(&bytes).unwrap_err();
            assert_eq!(err.to_string(), format!("/ron/provide/2: {expected}"));
        }
        let long_zone = ProvideResponse {
            ports: Ports { p2p: 3, oap: 4 },
            zone: "z".repeat(ZONE_BYTES_MAX + 1),
            stored: 7,
        };
        assert_eq!(
            encode_response(&long_zone).unwrap_err().to_string(),
            "/ron/provide/2: not a zone name"
        );
    }
}
