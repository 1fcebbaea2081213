//! OAP/1 payloads: HELLO, object-plane requests and replies, and DATA frames.
//!
//! JSON payloads are parsed with serde_json and rendered with a fixed field order, which
//! the golden vectors pin down. Requests are strict (an unknown `op` or field is
//! `bad_request`: a misspelt option must not be taken as absent); replies and HELLO
//! ignore unknown fields, so a newer node may add them (docs/OAP-1.md).
//! DATA payloads are `[u16 header_len][JSON header][raw bytes]`; their JSON header is
//! written by hand into a stack buffer because one is written per 64 KiB on the hot path.

use std::io::Write as _;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::address::{Address, ADDRESS_PREFIX};
use crate::error::Error;
use crate::frame::{Flags, Frame, FrameHeader, FrameMeta, APP_HELLO, APP_OBJECTS, HEADER_LEN};

/// The storage streaming chunk: one verified group per DATA frame. Not `max_frame`.
pub const DATA_CHUNK_BYTES: u32 = crate::tree::GROUP_LEN_BYTES as u32;

fn json_error(what: &'static str) -> impl FnOnce(serde_json::Error) -> Error {
    move |e| Error::BadJson {
        what,
        reason: e.to_string(),
    }
}

fn to_json<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("message serialisation is infallible"))
}

/// HELLO request payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ua: Option<String>,
}

/// HELLO reply payload. The first five fields are required by OAP-1.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    pub max_frame: u32,
    pub max_inflight: u32,
    pub flags_supported: u16,
    pub versions: Vec<u16>,
    pub transports: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<u32>,
}

impl HelloRequest {
    pub fn parse(payload: &[u8]) -> Result<Self, Error> {
        if payload.is_empty() {
            return Ok(HelloRequest::default());
        }
        serde_json::from_slice(payload).map_err(json_error("HELLO"))
    }

    pub fn frame(&self, corr_id: u64) -> Frame {
        control_frame(Flags::REQ, 0, corr_id, to_json(self))
    }
}

impl HelloReply {
    pub fn parse(payload: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(payload).map_err(json_error("HELLO reply"))
    }

    pub fn frame(&self, corr_id: u64) -> Frame {
        control_frame(Flags::RESP, 200, corr_id, to_json(self))
    }
}

fn control_frame(flags: Flags, code: u16, corr_id: u64, payload: Bytes) -> Frame {
    let meta = FrameMeta {
        flags,
        code,
        app_proto_id: APP_HELLO,
        tenant_id: 0,
        corr_id,
    };
    Frame::new(meta, Bytes::new(), payload, crate::frame::MAX_FRAME_BYTES)
        .expect("a HELLO payload is far below max_frame")
}

/// An inclusive byte range `[first, last]`, as in HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "[u64; 2]", into = "[u64; 2]")]
pub struct InclusiveRange {
    pub first: u64,
    pub last: u64,
}

impl TryFrom<[u64; 2]> for InclusiveRange {
    type Error = &'static str;
    fn try_from([first, last]: [u64; 2]) -> Result<Self, Self::Error> {
        if first > last {
            return Err("range first is after last");
        }
        Ok(InclusiveRange { first, last })
    }
}

impl From<InclusiveRange> for [u64; 2] {
    fn from(r: InclusiveRange) -> [u64; 2] {
        [r.first, r.last]
    }
}

/// The longest node id a GET may name (a base58 Ed25519 `PeerId` is 52 bytes).
pub const NODE_ID_BYTES_MAX: usize = 64;

/// A GET's `node`: base58 characters, at most [`NODE_ID_BYTES_MAX`].
fn node_id(text: std::borrow::Cow<'_, str>) -> Result<String, Error> {
    let base58 = |c: char| c.is_ascii_alphanumeric() && !"0OIl".contains(c);
    if text.is_empty() || text.len() > NODE_ID_BYTES_MAX || !text.chars().all(base58) {
        return Err(Error::BadMessage {
            what: "object request",
            reason: "node must be a node id (1 to 64 base58 characters)",
        });
    }
    Ok(text.into_owned())
}

/// The operation named by a `REQ|START` frame's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ObjectRequest {
    Get {
        addr: Address,
        #[serde(skip_serializing_if = "Option::is_none")]
        range: Option<InclusiveRange>,
        /// Verified streaming (docs/OAP-1.md): whole groups, each DATA header carrying
        /// the parent nodes that prove it against `addr`.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        proof: bool,
        /// Only a copy this node holds: 404 when it holds none (no read-through). What
        /// nodes send each other (a peer fetch, an audit), so that a GET never cascades.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        local: bool,
        /// With `local`: only a copy this node *keeps* (an upload or a placement copy),
        /// not one it may evict: 404 for an evictable copy. What an audit asks, so that
        /// a holder whose copy was made evictable does not pass for one that keeps it.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        kept: bool,
        /// With `local`: the node id (base58 `PeerId`) the asker means to reach; another
        /// node answers `not_found`, so a peer cannot pass an audit by pointing at a
        /// neighbour's port (at most [`NODE_ID_BYTES_MAX`] bytes).
        #[serde(skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    Put {
        len: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        addr: Option<Address>,
        /// Durable copies to wait for before the answer, this node's included (1 to 16,
        /// at most the network's `replicas`).
        #[serde(skip_serializing_if = "Option::is_none")]
        copies: Option<u32>,
    },
    Stat {
        addr: Address,
    },
}

/// The request as JSON spells it, before the address is checked, so that a bad address
/// is told apart (`bad_addr`) from bad JSON (`bad_request`).
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum ObjectRequestJson<'a> {
    Get {
        #[serde(borrow)]
        addr: std::borrow::Cow<'a, str>,
        #[serde(default)]
        range: Option<InclusiveRange>,
        #[serde(default)]
        proof: bool,
        #[serde(default)]
        local: bool,
        #[serde(default)]
        kept: bool,
        #[serde(default, borrow)]
        node: Option<std::borrow::Cow<'a, str>>,
    },
    Put {
        len: u64,
        #[serde(default, borrow)]
        addr: Option<std::borrow::Cow<'a, str>>,
        #[serde(default)]
        copies: Option<u32>,
    },
    Stat {
        #[serde(borrow)]
        addr: std::borrow::Cow<'a, str>,
    },
}

impl ObjectRequest {
    /// Parses a START payload. An address that does not parse is `bad_addr`; anything
    /// else wrong is `bad_request`.
    pub fn parse(payload: &[u8]) -> Result<Self, Error> {
        let json: ObjectRequestJson<'_> =
            serde_json::from_slice(payload).map_err(json_error("object request"))?;
        let addr = |text: &str| Address::parse(text.as_bytes());
        Ok(match json {
            ObjectRequestJson::Get {
                addr: a,
                range,
                proof,
                local,
                kept,
                node,
            } => ObjectRequest::Get {
                addr: addr(&a)?,
                range,
                proof,
                local,
                kept,
                node: node.map(node_id).transpose()?,
            },
            ObjectRequestJson::Put {
                len,
                addr: a,
                copies,
            } => ObjectRequest::Put {
                len,
                addr: a.as_deref().map(addr).transpose()?,
                copies,
            },
            ObjectRequestJson::Stat { addr: a } => ObjectRequest::Stat { addr: addr(&a)? },
        })
    }

    /// The `REQ|START` frame (plus END for GET/STAT and for a zero-byte PUT).
    pub fn frame(&self, corr_id: u64, tenant_id: u128, token: Bytes) -> Result<Frame, Error> {
        let mut flags = Flags::REQ | Flags::START;
        if !matches!(self, ObjectRequest::Put { len, .. } if *len > 0) {
            flags = flags | Flags::END;
        }
        let meta = FrameMeta {
            flags,
            code: 0,
            app_proto_id: APP_OBJECTS,
            tenant_id,
            corr_id,
        };
        Frame::new(meta, token, to_json(self), crate::frame::MAX_FRAME_BYTES)
    }
}

/// Payload of the `RESP|START` frame that opens a GET response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetStart {
    pub obj: Address,
    pub total_len: u64,
    pub offset: u64,
    pub len: u64,
    pub chunk: u32,
}

/// Payload of the `RESP|END` frame that closes a successful GET.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetEnd {
    pub status: String,
    pub len: u64,
}

/// Reply to PUT (201/200) and STAT (200): `{"obj":..,"len":..}`, and `"copies"` for a
/// PUT that asked for copies (how many durable copies exist, this node's included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    pub obj: Address,
    pub len: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copies: Option<usize>,
}

macro_rules! json_payload {
    ($ty:ty, $what:literal) => {
        impl $ty {
            pub fn parse(payload: &[u8]) -> Result<Self, Error> {
                serde_json::from_slice(payload).map_err(json_error($what))
            }

            pub fn to_payload(&self) -> Bytes {
                to_json(self)
            }
        }
    };
}

json_payload!(GetStart, "GET start");

/// Longest JSON `GetStart::write_json` produces.
pub const GET_START_JSON_MAX: usize = 192;
/// Longest JSON `GetEnd::write_ok_json` produces.
pub const GET_END_JSON_MAX: usize = 48;

impl GetStart {
    /// The payload JSON in a stack buffer (no allocation), byte for byte what
    /// [`GetStart::to_payload`] produces; returns the buffer and its length.
    pub fn write_json(&self) -> ([u8; GET_START_JSON_MAX], usize) {
        let mut json = [0u8; GET_START_JSON_MAX];
        let mut cursor = &mut json[..];
        let ok = write!(
            cursor,
            "{{\"obj\":\"{}{}\",\"total_len\":{},\"offset\":{},\"len\":{},\"chunk\":{}}}",
            ADDRESS_PREFIX,
            std::str::from_utf8(&self.obj.hex()).unwrap_or_default(),
            self.total_len,
            self.offset,
            self.len,
            self.chunk
        );
        debug_assert!(ok.is_ok());
        let len = GET_START_JSON_MAX - cursor.len();
        (json, len)
    }
}

impl GetEnd {
    /// `{"status":"ok","len":L}` in a stack buffer, as [`GetEnd::to_payload`] writes it.
    pub fn write_ok_json(len: u64) -> ([u8; GET_END_JSON_MAX], usize) {
        let mut json = [0u8; GET_END_JSON_MAX];
        let mut cursor = &mut json[..];
        let ok = write!(cursor, "{{\"status\":\"ok\",\"len\":{len}}}");
        debug_assert!(ok.is_ok());
        let written = GET_END_JSON_MAX - cursor.len();
        (json, written)
    }
}

/// Appends a whole object-plane response frame (`RESP | flags`) with `payload` to `out`.
pub fn write_response_frame(
    out: &mut BytesMut,
    flags: Flags,
    code: u16,
    corr_id: u64,
    payload: &[u8],
) -> Result<(), Error> {
    write_response_frame_on(out, APP_OBJECTS, flags, code, corr_id, payload)
}

/// [`write_response_frame`] on `app_proto_id`'s plane (an answer to a HELLO is on 0).
pub fn write_response_frame_on(
    out: &mut BytesMut,
    app_proto_id: u16,
    flags: Flags,
    code: u16,
    corr_id: u64,
    payload: &[u8],
) -> Result<(), Error> {
    let meta = FrameMeta {
        flags: Flags::RESP | flags,
        code,
        app_proto_id,
        tenant_id: 0,
        corr_id,
    };
    let header = FrameHeader::for_body(meta, 0, payload.len(), crate::frame::MAX_FRAME_BYTES)?;
    let mut head = [0u8; HEADER_LEN];
    header.write(&mut head);
    out.reserve(header.len as usize);
    out.put_slice(&head);
    out.put_slice(payload);
    Ok(())
}
json_payload!(GetEnd, "GET end");
json_payload!(ObjectInfo, "object info");

/// A response frame on the object plane.
pub fn response_frame(
    flags: Flags,
    code: u16,
    corr_id: u64,
    payload: Bytes,
) -> Result<Frame, Error> {
    let meta = FrameMeta {
        flags: Flags::RESP | flags,
        code,
        app_proto_id: APP_OBJECTS,
        tenant_id: 0,
        corr_id,
    };
    Frame::new(meta, Bytes::new(), payload, crate::frame::MAX_FRAME_BYTES)
}

/// The JSON header at the front of a DATA payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    /// Absent on uploads whose address the client did not announce.
    pub obj: Option<Address>,
    pub offset: u64,
    pub total_len: u64,
}

/// The field a verified stream's DATA header adds, before its hex value.
const PARENTS_FIELD: &[u8] = b",\"parents\":\"";

fn decode_hex(text: &str) -> Result<Vec<u8>, Error> {
    let bad = || Error::BadMessage {
        what: "DATA header",
        reason: "parents is not lowercase hex of whole bytes",
    };
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(bad()),
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err(bad());
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Ok(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

/// Longest JSON header `DataHeader::write` produces (obj + two 20-digit numbers).
const DATA_HEADER_MAX: usize = 160;

#[derive(Deserialize)]
struct DataHeaderJson<'a> {
    #[serde(default, borrow)]
    obj: Option<&'a str>,
    offset: u64,
    total_len: u64,
    #[serde(default, borrow)]
    parents: Option<&'a str>,
}

impl DataHeader {
    /// The JSON header in a stack buffer, and its length.
    fn json(&self) -> ([u8; DATA_HEADER_MAX], usize) {
        let mut json = [0u8; DATA_HEADER_MAX];
        let mut cursor = &mut json[..];
        let start = cursor.len();
        // Writing into a fixed array large enough for the longest header cannot fail.
        let ok = match self.obj {
            Some(obj) => write!(
                cursor,
                "{{\"obj\":\"{}{}\",\"offset\":{},\"total_len\":{}}}",
                ADDRESS_PREFIX,
                std::str::from_utf8(&obj.hex()).unwrap_or_default(),
                self.offset,
                self.total_len
            ),
            None => write!(
                cursor,
                "{{\"offset\":{},\"total_len\":{}}}",
                self.offset, self.total_len
            ),
        };
        debug_assert!(ok.is_ok());
        let written = start - cursor.len();
        (json, written)
    }

    /// Appends `[u16 len][JSON]` to `out`, allocating nothing beyond `out`'s growth.
    pub fn write(&self, out: &mut BytesMut) {
        let (json, len) = self.json();
        out.put_u16(len as u16);
        out.put_slice(&json[..len]);
    }

    /// Bytes [`DataHeader::write`] appends.
    pub fn encoded_len(&self) -> usize {
        2 + self.json().1
    }

    /// Appends the frame header and this DATA header of a frame whose `raw_len` raw
    /// bytes the caller sends right after, so large raw bytes are never copied into
    /// the frame. Checks the frame against `max_frame` like [`Frame::new`].
    pub fn write_frame_head(
        &self,
        out: &mut BytesMut,
        meta: FrameMeta,
        raw_len: usize,
        max_frame: u32,
    ) -> Result<(), Error> {
        self.write_frame_head_with_parents(out, meta, &[], raw_len, max_frame)
    }

    /// As [`DataHeader::write_frame_head`], with the proof's parent nodes (verified
    /// streaming) as a `"parents"` hex field after the others when not empty.
    pub fn write_frame_head_with_parents(
        &self,
        out: &mut BytesMut,
        meta: FrameMeta,
        parents: &[u8],
        raw_len: usize,
        max_frame: u32,
    ) -> Result<(), Error> {
        let (json, mut json_len) = self.json();
        let parents_field = if parents.is_empty() {
            0
        } else {
            json_len -= 1; // the closing brace, written after the field
            PARENTS_FIELD.len() + 2 * parents.len() + 2
        };
        let header_len = json_len + parents_field;
        let header_len_u16 = u16::try_from(header_len).map_err(|_| Error::BadMessage {
            what: "DATA header",
            reason: "longer than 65535 bytes",
        })?;
        let header = FrameHeader::for_body(meta, 0, 2 + header_len + raw_len, max_frame)?;
        let mut head = [0u8; HEADER_LEN];
        header.write(&mut head);
        out.reserve(HEADER_LEN + 2 + header_len);
        out.put_slice(&head);
        out.put_u16(header_len_u16);
        out.put_slice(&json[..json_len]);
        if !parents.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.put_slice(PARENTS_FIELD);
            for b in parents {
                out.put_u8(HEX[usize::from(b >> 4)]);
                out.put_u8(HEX[usize::from(b & 15)]);
            }
            out.put_slice(b"\"}");
        }
        Ok(())
    }

    /// Splits a DATA payload into its header and its raw bytes (zero-copy).
    pub fn split(payload: &Bytes) -> Result<(DataHeader, Bytes), Error> {
        Self::split_with_parents(payload).map(|(header, _, raw)| (header, raw))
    }

    /// Splits a DATA payload of a verified stream: header, parent nodes (decoded from
    /// `"parents"`, empty when absent), raw bytes.
    pub fn split_with_parents(payload: &Bytes) -> Result<(DataHeader, Vec<u8>, Bytes), Error> {
        let overrun = || Error::DataHeaderOverrun {
            header_len: 0,
            payload_len: payload.len(),
        };
        let len_bytes = payload.get(..2).ok_or_else(overrun)?;
        let header_len = u16::from_be_bytes([len_bytes[0], len_bytes[1]]);
        let end = 2 + usize::from(header_len);
        if end > payload.len() {
            return Err(Error::DataHeaderOverrun {
                header_len,
                payload_len: payload.len(),
            });
        }
        let json: DataHeaderJson<'_> =
            serde_json::from_slice(&payload[2..end]).map_err(json_error("DATA header"))?;
        let obj = json.obj.map(|s| Address::parse(s.as_bytes())).transpose()?;
        let header = DataHeader {
            obj,
            offset: json.offset,
            total_len: json.total_len,
        };
        let parents = json
            .parents
            .map(decode_hex)
            .transpose()?
            .unwrap_or_default();
        Ok((header, parents, payload.slice(end..)))
    }

    /// A whole DATA payload: header then `raw`.
    pub fn payload(&self, raw: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(2 + DATA_HEADER_MAX + raw.len());
        self.write(&mut out);
        out.put_slice(raw);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> Address {
        Address::of(b"abc")
    }

    #[test]
    fn object_requests_round_trip_and_reject_nonsense() {
        let get = ObjectRequest::Get {
            addr: addr(),
            range: Some(InclusiveRange { first: 0, last: 99 }),
            proof: false,
            local: false,
            kept: false,
            node: None,
        };
        let json = serde_json::to_string(&get).unwrap();
        assert_eq!(
            json,
            format!(r#"{{"op":"get","addr":"{}","range":[0,99]}}"#, addr())
        );
        assert_eq!(ObjectRequest::parse(json.as_bytes()).unwrap(), get);

        let e = ObjectRequest::parse(br#"{"op":"delete","addr":"x"}"#).unwrap_err();
        assert_eq!(e.code().as_str(), "bad_request");
        let e = ObjectRequest::parse(br#"{"op":"get","addr":"b3:XYZ"}"#).unwrap_err();
        assert_eq!(e.code().as_str(), "bad_addr");
        let e = ObjectRequest::parse(
            format!(r#"{{"op":"get","addr":"{}","range":[9,1]}}"#, addr()).as_bytes(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("range first is after last"), "{e}");
        let e = ObjectRequest::parse(br#"{"op":"put"}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `len`"), "{e}");
    }

    #[test]
    fn hand_written_replies_match_serde() {
        let start = GetStart {
            obj: addr(),
            total_len: u64::MAX,
            offset: u64::MAX - 1,
            len: u64::MAX,
            chunk: u32::MAX,
        };
        let (json, len) = start.write_json();
        assert_eq!(&json[..len], &start.to_payload()[..]);
        let (json, len) = GetEnd::write_ok_json(u64::MAX);
        let end = GetEnd {
            status: "ok".into(),
            len: u64::MAX,
        };
        assert_eq!(&json[..len], &end.to_payload()[..]);
        let mut out = BytesMut::new();
        write_response_frame(&mut out, Flags::END, 200, 7, &json[..len]).unwrap();
        let frame = response_frame(Flags::END, 200, 7, end.to_payload()).unwrap();
        assert_eq!(out.freeze(), frame.to_bytes());
    }

    #[test]
    fn put_of_zero_bytes_ends_on_start() {
        let put0 = ObjectRequest::Put {
            len: 0,
            addr: None,
            copies: None,
        }
        .frame(1, 0, Bytes::new())
        .unwrap();
        assert!(put0.header.flags.contains(Flags::END));
        let put = ObjectRequest::Put {
            len: 5,
            addr: None,
            copies: None,
        }
        .frame(1, 0, Bytes::new())
        .unwrap();
        assert!(!put.header.flags.contains(Flags::END));
    }

    #[test]
    fn data_payload_round_trips_with_and_without_obj() {
        for obj in [Some(addr()), None] {
            let header = DataHeader {
                obj,
                offset: u64::MAX,
                total_len: u64::MAX,
            };
            let payload = header.payload(b"hello");
            let (got, raw) = DataHeader::split(&payload).unwrap();
            assert_eq!(got, header);
            assert_eq!(&raw[..], b"hello");
        }
    }

    #[test]
    fn data_frame_head_plus_raw_bytes_is_the_whole_frame() {
        let header = DataHeader {
            obj: Some(addr()),
            offset: 0,
            total_len: 3,
        };
        let meta = FrameMeta {
            flags: Flags::RESP,
            code: 0,
            app_proto_id: APP_OBJECTS,
            tenant_id: 0,
            corr_id: 2,
        };
        let mut wire = BytesMut::new();
        header
            .write_frame_head(&mut wire, meta, 3, crate::frame::MAX_FRAME_BYTES)
            .unwrap();
        assert_eq!(wire.len(), HEADER_LEN + header.encoded_len());
        wire.extend_from_slice(b"abc");
        let whole = Frame::new(meta, Bytes::new(), header.payload(b"abc"), 1 << 20).unwrap();
        assert_eq!(wire.freeze(), whole.to_bytes());
        let err = header
            .write_frame_head(&mut BytesMut::new(), meta, 1 << 20, 1 << 20)
            .unwrap_err();
        assert_eq!(err.code().as_str(), "too_large");
    }

    #[test]
    fn verified_stream_data_header_carries_parents_in_hex() {
        let header = DataHeader {
            obj: Some(addr()),
            offset: 65536,
            total_len: 200_000,
        };
        let meta = FrameMeta {
            flags: Flags::RESP,
            code: 0,
            app_proto_id: APP_OBJECTS,
            tenant_id: 0,
            corr_id: 9,
        };
        let parents: Vec<u8> = (0..64).collect();
        let mut wire = BytesMut::new();
        header
            .write_frame_head_with_parents(&mut wire, meta, &parents, 2, 1 << 20)
            .unwrap();
        wire.extend_from_slice(b"xy");
        let mut input = &wire[..];
        let frame = crate::frame::FrameDecoder::new(1 << 20)
            .decode(&mut input)
            .unwrap()
            .unwrap();
        let (got, got_parents, raw) = DataHeader::split_with_parents(&frame.payload).unwrap();
        assert_eq!((got, got_parents, &raw[..]), (header, parents, &b"xy"[..]));
        let json = std::str::from_utf8(&frame.payload[2..frame.payload.len() - 2]).unwrap();
        assert!(json.ends_with("\"total_len\":200000,\"parents\":\"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\"}"), "{json}");
        let bad = header.payload(b"");
        let mut text = bad.to_vec();
        let n = text.len();
        text.truncate(n - 1);
        text.extend_from_slice(b",\"parents\":\"0G\"}");
        let hl = (text.len() - 2) as u16;
        text[..2].copy_from_slice(&hl.to_be_bytes());
        let err = DataHeader::split_with_parents(&Bytes::from(text)).unwrap_err();
        assert_eq!(err.code().as_str(), "bad_request");
    }

    #[test]
    fn data_payload_rejects_overrun_and_bad_json() {
        let e = DataHeader::split(&Bytes::from_static(&[0, 10, b'{'])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "DATA payload of 3 bytes announces a 10-byte header"
        );
        assert_eq!(e.code().as_str(), "bad_frame");
        let e = DataHeader::split(&Bytes::from_static(&[0])).unwrap_err();
        assert_eq!(e.code().as_str(), "bad_frame");
        let e = DataHeader::split(&Bytes::from_static(b"\x00\x02{}")).unwrap_err();
        assert_eq!(e.code().as_str(), "bad_request");
    }

    #[test]
    fn hello_accepts_empty_and_extra_fields() {
        assert_eq!(HelloRequest::parse(b"").unwrap(), HelloRequest::default());
        let h = HelloRequest::parse(br#"{"ua":"x/1","future":true}"#).unwrap();
        assert_eq!(h.ua.as_deref(), Some("x/1"));
    }

    #[test]
    fn a_get_names_a_node_by_its_base58_id_or_is_refused() {
        let id = "12D3KooWJCFQJPfqrRaNMcwoMQn9n6vEJfmQVw7Qch5VGisrhXtp";
        let addr = format!("b3:{}", "ab".repeat(32));
        let parsed = ObjectRequest::parse(
            format!(r#"{{"op":"get","addr":"{addr}","local":true,"node":"{id}"}}"#).as_bytes(),
        )
        .unwrap();
        assert!(matches!(parsed, ObjectRequest::Get { node: Some(n), kept: false, .. } if n == id));
        let audit = ObjectRequest::Get {
            addr: Address::parse(addr.as_bytes()).unwrap(),
            range: None,
            proof: true,
            local: true,
            kept: true,
            node: Some(id.into()),
        };
        let json = serde_json::to_string(&audit).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"op":"get","addr":"{addr}","proof":true,"local":true,"kept":true,"node":"{id}"}}"#
            )
        );
        assert_eq!(ObjectRequest::parse(json.as_bytes()).unwrap(), audit);
        for bad in [
            "",
            "0OIl",
            "not base58!",
            &"a".repeat(NODE_ID_BYTES_MAX + 1),
        ] {
            let payload = format!(r#"{{"op":"get","addr":"{addr}","node":"{bad}"}}"#);
            let err = ObjectRequest::parse(payload.as_bytes()).unwrap_err();
            assert_eq!(
                err.to_string(),
                "object request: node must be a node id (1 to 64 base58 characters)",
                "{bad:?}"
            );
        }
    }
}
