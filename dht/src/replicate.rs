//! `/ron/replicate/1`: a holder of kept copies asks the other holders its placement
//! names to take them (replication, docs/design/replication.md).
//!
//! - A request carries the asker's OAP/1 port and up to [`REPLICATE_KEYS_MAX`] object
//!   addresses. The receiver pulls each address it accepts from the asker (at the IP
//!   its connection came from, with that port) or another provider, verified against
//!   the address, and keeps it.
//! - The response carries one [`CopyOutcome`] per address, in order, once every
//!   accepted copy is durable or [`crate::node::REPLICATE_ANSWER_WITHIN`] passed
//!   (`pending`: still copying).
//!
//! Wire format (big-endian): request = `1` ‖ OAP port u16 ‖ count u16 ‖ count × 32-byte
//! address; response = `1` ‖ count u16 ‖ count × outcome u8 (0 held, 1 not a holder,
//! 2 failed, 3 busy, 4 pending, 5 no room: below its disk floor for copies of others;
//! a node before 5 was added fails such a response, which reads to it as unanswered).
//! Anything else (another version, a count past the
//! limit, a short or long message, an unknown outcome) fails the stream
//! (`InvalidData`).

use std::io;

use libp2p::StreamProtocol;

use crate::wire::{WireCodec, WireMessages};
use ron_link::dht::CopyOutcome;

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/ron/replicate/1");
/// Addresses in one request.
pub const REPLICATE_KEYS_MAX: usize = 256;
/// The largest message read: a full request.
pub const MESSAGE_BYTES_MAX: usize = 5 + REPLICATE_KEYS_MAX * 32;
const VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicateRequest {
    /// Where the asker serves OAP/1 (its claim; the IP is the connection's).
    pub oap_port: u16,
    pub addrs: Vec<[u8; 32]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicateResponse {
    /// One per address of the request, in its order.
    pub outcomes: Vec<CopyOutcome>,
}

fn invalid(what: &str) -> io::Error {
    crate::wire::invalid(PROTOCOL.as_ref(), what)
}

fn count_of(len: usize) -> io::Result<u16> {
    match len <= REPLICATE_KEYS_MAX {
        true => Ok(len as u16),
        false => Err(invalid("too many addresses")),
    }
}

pub fn encode_request(request: &ReplicateRequest) -> io::Result<Vec<u8>> {
    let count = count_of(request.addrs.len())?;
    let mut out = Vec::with_capacity(5 + request.addrs.len() * 32);
    out.push(VERSION);
    out.extend_from_slice(&request.oap_port.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    request.addrs.iter().for_each(|a| out.extend_from_slice(a));
    Ok(out)
}

/// The version checked and the count read: (count, the rest).
fn head(message: &[u8], fixed: usize) -> io::Result<(&[u8], usize, &[u8])> {
    let (&version, rest) = message
        .split_first()
        .ok_or_else(|| invalid("short message"))?;
    if version != VERSION {
        return Err(invalid("unknown version"));
    }
    let (fields, rest) = rest
        .split_at_checked(fixed + 2)
        .ok_or_else(|| invalid("short message"))?;
    let count = usize::from(u16::from_be_bytes([fields[fixed], fields[fixed + 1]]));
    if count > REPLICATE_KEYS_MAX {
        return Err(invalid("too many addresses"));
    }
    Ok((&fields[..fixed], count, rest))
}

pub fn decode_request(message: &[u8]) -> io::Result<ReplicateRequest> {
    let (port, count, rest) = head(message, 2)?;
    if rest.len() != count * 32 {
        return Err(invalid("addresses do not match their count"));
    }
    let addrs = rest
        .chunks_exact(32)
        .map(|a| a.try_into().expect("32-byte chunks"))
        .collect();
    Ok(ReplicateRequest {
        oap_port: u16::from_be_bytes([port[0], port[1]]),
        addrs,
    })
}

pub fn encode_response(response: &ReplicateResponse) -> io::Result<Vec<u8>> {
    let count = count_of(response.outcomes.len())?;
    let mut out = Vec::with_capacity(3 + response.outcomes.len());
    out.push(VERSION);
    out.extend_from_slice(&count.to_be_bytes());
    for outcome in &response.outcomes {
        out.push(outcome_byte(*outcome).ok_or_else(|| invalid("unanswered is not an answer"))?);
    }
    Ok(out)
}

pub fn decode_response(message: &[u8]) -> io::Result<ReplicateResponse> {
    let (_, count, rest) = head(message, 0)?;
    if rest.len() != count {
        return Err(invalid("outcomes do not match their count"));
    }
    let outcomes = rest
        .iter()
        .map(|b| outcome_of(*b).ok_or_else(|| invalid("unknown outcome")))
        .collect::<io::Result<_>>()?;
    Ok(ReplicateResponse { outcomes })
}

/// The wire byte of an answer; `Unanswered` is the asker's own word, never sent.
fn outcome_byte(outcome: CopyOutcome) -> Option<u8> {
    Some(match outcome {
        CopyOutcome::Held => 0,
        CopyOutcome::NotHolder => 1,
        CopyOutcome::Failed => 2,
        CopyOutcome::Busy => 3,
        CopyOutcome::Pending => 4,
        CopyOutcome::NoRoom => 5,
        CopyOutcome::Unanswered => return None,
    })
}

fn outcome_of(byte: u8) -> Option<CopyOutcome> {
    Some(match byte {
        0 => CopyOutcome::Held,
        1 => CopyOutcome::NotHolder,
        2 => CopyOutcome::Failed,
        3 => CopyOutcome::Busy,
        4 => CopyOutcome::Pending,
        5 => CopyOutcome::NoRoom,
        _ => return None,
    })
}

/// `/ron/replicate/1`'s messages, for the stream codec ([`ReplicateCodec`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplicateMessages;

impl WireMessages for ReplicateMessages {
    const PROTOCOL: StreamProtocol = PROTOCOL;
    const MESSAGE_BYTES_MAX: usize = MESSAGE_BYTES_MAX;
    type Request = ReplicateRequest;
    type Response = ReplicateResponse;

    fn encode_request(request: &ReplicateRequest) -> io::Result<Vec<u8>> {
        encode_request(request)
    }

    fn decode_request(message: &[u8]) -> io::Result<ReplicateRequest> {
        decode_request(message)
    }

    fn encode_response(response: &ReplicateResponse) -> io::Result<Vec<u8>> {
        encode_response(response)
    }

    fn decode_response(message: &[u8]) -> io::Result<ReplicateResponse> {
        decode_response(message)
    }
}

/// The request-response codec for [`PROTOCOL`].
pub type ReplicateCodec = WireCodec<ReplicateMessages>;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn outcome() -> impl Strategy<Value = CopyOutcome> {
        (0u8..6).prop_map(|b| outcome_of(b).unwrap())
    }

    proptest! {
        #[test]
        fn messages_round_trip(oap_port: u16,
            addrs in proptest::collection::vec(any::<[u8; 32]>(), 0..=REPLICATE_KEYS_MAX),
            outcomes in proptest::collection::vec(outcome(), 0..=REPLICATE_KEYS_MAX)) {
            let request = ReplicateRequest { oap_port, addrs };
            prop_assert_eq!(decode_request(&encode_request(&request).unwrap()).unwrap(), request);
            let response = ReplicateResponse { outcomes };
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
        let ok = encode_request(&ReplicateRequest {
            oap_port: 9,
            addrs: vec![[7; 32], [8; 32]],
        })
        .unwrap();
        let cases: [(Vec<u8>, &str); 5] = [
            (ok[..3].to_vec(), "short message"),
            ([&[2u8][..], &ok[1..]].concat(), "unknown version"),
            (
                ok[..ok.len() - 1].to_vec(),
                "addresses do not match their count",
            ),
            (
                [&ok[..], &[0u8][..]].concat(),
                "addresses do not match their count",
            ),
            ([&ok[..3], &[1u8, 1][..]].concat(), "too many addresses"),
        ];
        for (bytes, expected) in cases {
            let err = decode_request(&bytes).unwrap_err();
            assert_eq!(err.to_string(), format!("/ron/replicate/1: {expected}"));
        }
        let answer = [VERSION, 0, 2, 0, 9];
        assert_eq!(
            decode_response(&answer).unwrap_err().to_string(),
            "/ron/replicate/1: unknown outcome"
        );
        let too_many = ReplicateRequest {
            oap_port: 1,
            addrs: vec![[0; 32]; REPLICATE_KEYS_MAX + 1],
        };
        assert_eq!(
            encode_request(&too_many).unwrap_err().to_string(),
            "/ron/replicate/1: too many addresses"
        );
        let unanswered = ReplicateResponse {
            outcomes: vec![CopyOutcome::Held, CopyOutcome::Unanswered],
        };
        assert_eq!(
            encode_response(&unanswered).unwrap_err().to_string(),
            "/ron/replicate/1: unanswered is not an answer"
        );
    }
}
