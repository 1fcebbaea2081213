//! OAP/1 framing: the fixed header, flags, the incremental decoder and the encoder.
//!
//! A frame is `header | capability (cap_len bytes) | payload`, all integers big-endian.
//! The header layout is one list of fields ([`FIELDS`]); its size and every offset are
//! derived from that list, so no bare 38 appears anywhere else.
//!
//! The decoder validates a header the moment its last byte arrives and before it sets
//! aside a single byte for the body: `len` below the header or above `max_frame`, a
//! version other than 1, unknown flag bits, a capability without START or larger than
//! the frame are all rejected from the header alone. Once it has rejected a frame the
//! decoder stays failed; the connection answers once and closes. [`FrameReader`] pairs
//! the decoder with a read buffer, for a connection's read loop (blocking or async).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::Error;

pub mod reader;
pub use reader::{FrameReader, READ_BUF_BYTES_DEFAULT};

/// One header field: its name and size in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub size: usize,
}

/// The header fields, in wire order (OAP-1.md "Framing").
pub const FIELDS: [Field; 8] = [
    Field {
        name: "len",
        size: 4,
    },
    Field {
        name: "ver",
        size: 2,
    },
    Field {
        name: "flags",
        size: 2,
    },
    Field {
        name: "code",
        size: 2,
    },
    Field {
        name: "app_proto_id",
        size: 2,
    },
    Field {
        name: "tenant_id",
        size: 16,
    },
    Field {
        name: "cap_len",
        size: 2,
    },
    Field {
        name: "corr_id",
        size: 8,
    },
];

const fn field_offset(index: usize) -> usize {
    let mut offset = 0;
    let mut i = 0;
    while i < index {
        offset += FIELDS[i].size;
        i += 1;
    }
    offset
}

/// Size of the fixed header: the sum of [`FIELDS`].
pub const HEADER_LEN: usize = field_offset(FIELDS.len());
/// A body's buffer before more than this much of it has arrived: a header alone (38
/// bytes) once reserved the whole body it announced (up to the frame limit, 1 MiB) for
/// as long as its sender then stayed silent. Past it, the rest is reserved at once (one
/// copy of at most this much, none when the first read brings more).
const BODY_RESERVED_FIRST_BYTES: usize = 64 * 1024;

const OFF_LEN: usize = field_offset(0);
const OFF_VER: usize = field_offset(1);
const OFF_FLAGS: usize = field_offset(2);
const OFF_CODE: usize = field_offset(3);
const OFF_APP: usize = field_offset(4);
const OFF_TENANT: usize = field_offset(5);
const OFF_CAP_LEN: usize = field_offset(6);
const OFF_CORR: usize = field_offset(7);

/// The only protocol version.
pub const VERSION: u16 = 1;
/// The protocol's largest frame, header included. A peer may negotiate less, never more.
pub const MAX_FRAME_BYTES: u32 = 1 << 20;
/// `app_proto_id` of HELLO and other control frames.
pub const APP_HELLO: u16 = 0;
/// `app_proto_id` of the object plane.
pub const APP_OBJECTS: u16 = 1;

/// The frame flag bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u16);

impl Flags {
    pub const NONE: Flags = Flags(0);
    pub const REQ: Flags = Flags(0x0001);
    pub const RESP: Flags = Flags(0x0002);
    pub const EVENT: Flags = Flags(0x0004);
    pub const START: Flags = Flags(0x0008);
    pub const END: Flags = Flags(0x0010);
    pub const ACK_REQ: Flags = Flags(0x0020);
    pub const COMP: Flags = Flags(0x0040);
    pub const APP_E2E: Flags = Flags(0x0080);
    /// Every defined bit; any other bit is a protocol error.
    pub const KNOWN: Flags = Flags(0x00ff);

    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Flags from raw bits, rejecting undefined ones.
    pub const fn from_bits(bits: u16) -> Result<Flags, Error> {
        let unknown = bits & !Self::KNOWN.0;
        if unknown != 0 {
            return Err(Error::UnknownFlags {
                flags: bits,
                unknown,
            });
        }
        Ok(Flags(bits))
    }

    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        self.union(rhs)
    }
}

/// A decoded, validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Total frame length, header included.
    pub len: u32,
    pub ver: u16,
    pub flags: Flags,
    /// Status on responses (HTTP numbering), 0 on requests.
    pub code: u16,
    pub app_proto_id: u16,
    pub tenant_id: u128,
    pub cap_len: u16,
    pub corr_id: u64,
}

/// The header fields as they came off the wire, before validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHeader {
    pub len: u32,
    pub ver: u16,
    pub flags: u16,
    pub code: u16,
    pub app_proto_id: u16,
    pub tenant_id: u128,
    pub cap_len: u16,
    pub corr_id: u64,
}

impl RawHeader {
    pub fn read(bytes: &[u8; HEADER_LEN]) -> RawHeader {
        let u16_at = |o: usize| u16::from_be_bytes([bytes[o], bytes[o + 1]]);
        let mut len = [0u8; 4];
        len.copy_from_slice(&bytes[OFF_LEN..OFF_LEN + 4]);
        let mut tenant = [0u8; 16];
        tenant.copy_from_slice(&bytes[OFF_TENANT..OFF_TENANT + 16]);
        let mut corr = [0u8; 8];
        corr.copy_from_slice(&bytes[OFF_CORR..OFF_CORR + 8]);
        RawHeader {
            len: u32::from_be_bytes(len),
            ver: u16_at(OFF_VER),
            flags: u16_at(OFF_FLAGS),
            code: u16_at(OFF_CODE),
            app_proto_id: u16_at(OFF_APP),
            tenant_id: u128::from_be_bytes(tenant),
            cap_len: u16_at(OFF_CAP_LEN),
            corr_id: u64::from_be_bytes(corr),
        }
    }

    /// Applies every header-only rule of OAP-1.md, in this order: length bounds (so
    /// nothing is ever sized from a bad `len`), version, flags, capability length.
    pub fn validate(&self, max_frame: u32) -> Result<FrameHeader, Error> {
        if (self.len as usize) < HEADER_LEN {
            return Err(Error::FrameTooShort {
                len: self.len,
                header_len: HEADER_LEN,
            });
        }
        if self.len > max_frame {
            return Err(Error::FrameTooLarge {
                len: u64::from(self.len),
                max_frame,
            });
        }
        if self.ver != VERSION {
            return Err(Error::UnsupportedVersion { ver: self.ver });
        }
        let flags = Flags::from_bits(self.flags)?;
        if self.cap_len > 0 && !flags.contains(Flags::START) {
            return Err(Error::CapabilityWithoutStart {
                cap_len: self.cap_len,
            });
        }
        let body_len = self.len - HEADER_LEN as u32;
        if u32::from(self.cap_len) > body_len {
            return Err(Error::CapabilityOverrun {
                cap_len: self.cap_len,
                body_len,
            });
        }
        Ok(FrameHeader {
            len: self.len,
            ver: self.ver,
            flags,
            code: self.code,
            app_proto_id: self.app_proto_id,
            tenant_id: self.tenant_id,
            cap_len: self.cap_len,
            corr_id: self.corr_id,
        })
    }
}

impl FrameHeader {
    /// The header of a frame with `cap_len` capability bytes and `payload_len` payload
    /// bytes, checked with the decoder's rules (the encoder never writes a frame the
    /// decoder would reject).
    pub fn for_body(
        meta: FrameMeta,
        cap_len: usize,
        payload_len: usize,
        max_frame: u32,
    ) -> Result<FrameHeader, Error> {
        let len = HEADER_LEN as u64 + cap_len as u64 + payload_len as u64;
        if len > u64::from(max_frame) {
            return Err(Error::FrameTooLarge { len, max_frame });
        }
        let cap_len = u16::try_from(cap_len).map_err(|_| Error::BadMessage {
            what: "capability",
            reason: "longer than 65535 bytes",
        })?;
        RawHeader {
            len: len as u32,
            ver: VERSION,
            flags: meta.flags.bits(),
            code: meta.code,
            app_proto_id: meta.app_proto_id,
            tenant_id: meta.tenant_id,
            cap_len,
            corr_id: meta.corr_id,
        }
        .validate(max_frame)
    }

    /// Bytes after the header (capability + payload).
    pub fn body_len(&self) -> usize {
        self.len as usize - HEADER_LEN
    }

    pub fn write(&self, out: &mut [u8; HEADER_LEN]) {
        out[OFF_LEN..OFF_LEN + 4].copy_from_slice(&self.len.to_be_bytes());
        out[OFF_VER..OFF_VER + 2].copy_from_slice(&self.ver.to_be_bytes());
        out[OFF_FLAGS..OFF_FLAGS + 2].copy_from_slice(&self.flags.bits().to_be_bytes());
        out[OFF_CODE..OFF_CODE + 2].copy_from_slice(&self.code.to_be_bytes());
        out[OFF_APP..OFF_APP + 2].copy_from_slice(&self.app_proto_id.to_be_bytes());
        out[OFF_TENANT..OFF_TENANT + 16].copy_from_slice(&self.tenant_id.to_be_bytes());
        out[OFF_CAP_LEN..OFF_CAP_LEN + 2].copy_from_slice(&self.cap_len.to_be_bytes());
        out[OFF_CORR..OFF_CORR + 8].copy_from_slice(&self.corr_id.to_be_bytes());
    }
}

/// The routing part of a frame: everything in the header but the lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameMeta {
    pub flags: Flags,
    pub code: u16,
    pub app_proto_id: u16,
    pub tenant_id: u128,
    pub corr_id: u64,
}

/// A whole frame. `cap` and `payload` share one allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: FrameHeader,
    /// The capability section (a bearer token); empty unless START.
    pub cap: Bytes,
    pub payload: Bytes,
}

impl Frame {
    /// Builds a frame, checking the same rules the decoder applies.
    pub fn new(
        meta: FrameMeta,
        cap: Bytes,
        payload: Bytes,
        max_frame: u32,
    ) -> Result<Frame, Error> {
        let header = FrameHeader::for_body(meta, cap.len(), payload.len(), max_frame)?;
        Ok(Frame {
            header,
            cap,
            payload,
        })
    }

    /// Whether the decoder dropped this frame's body ([`BodyGate::Skip`]): its header
    /// announced bytes that its capability and payload do not hold.
    pub fn is_skipped(&self) -> bool {
        self.cap.len() + self.payload.len() != self.header.body_len()
    }

    pub fn meta(&self) -> FrameMeta {
        FrameMeta {
            flags: self.header.flags,
            code: self.header.code,
            app_proto_id: self.header.app_proto_id,
            tenant_id: self.header.tenant_id,
            corr_id: self.header.corr_id,
        }
    }

    /// Appends the wire form to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        let mut head = [0u8; HEADER_LEN];
        self.header.write(&mut head);
        out.reserve(self.header.len as usize);
        out.put_slice(&head);
        out.put_slice(&self.cap);
        out.put_slice(&self.payload);
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.header.len as usize);
        self.encode_into(&mut out);
        out.freeze()
    }
}

/// Where the decoder is within the current frame.
#[derive(Debug)]
enum DecodeState {
    /// Collecting the fixed header.
    Header {
        buf: [u8; HEADER_LEN],
        filled: usize,
    },
    /// Header validated; collecting exactly `header.body_len()` bytes.
    Body { header: FrameHeader, body: BytesMut },
    /// Header validated; reading and dropping `left` more bytes of its body.
    Skipping { header: FrameHeader, left: usize },
    /// A frame was rejected; the connection must close.
    Failed { error: Error, raw: RawHeader },
}

/// What the decoder does with the body of a header that passed its checks
/// ([`FrameDecoder::decode_gated`]): a receiver that knows which frames it will use keeps
/// only those, so a frame it will refuse or drop costs it no memory however large its
/// sender says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyGate {
    /// Buffered (at most `max_frame`) and handed over whole.
    Keep,
    /// Read and dropped as it arrives; the frame is handed over with its header and an
    /// empty capability and payload ([`Frame::is_skipped`]).
    Skip,
    /// Refused before any body byte is buffered: the decoder fails with this error.
    Refuse(Error),
}

/// Incremental OAP/1 frame decoder. Feed it any split of the input; it yields the same
/// frames. Memory held is one header plus at most one validated frame body.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame: u32,
    state: DecodeState,
}

impl FrameDecoder {
    /// `max_frame` is clamped to the protocol maximum.
    pub fn new(max_frame: u32) -> FrameDecoder {
        FrameDecoder {
            max_frame: max_frame.min(MAX_FRAME_BYTES),
            state: DecodeState::Header {
                buf: [0; HEADER_LEN],
                filled: 0,
            },
        }
    }

    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// Consumes from the front of `input` and returns the next complete frame, or
    /// `Ok(None)` once `input` is empty with a frame still incomplete. Call again with
    /// the rest of `input` after each frame.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Frame>, Error> {
        self.decode_gated(input, |_| BodyGate::Keep)
    }

    /// As [`FrameDecoder::decode`], with `gate` asked about each header the moment it
    /// passed its checks, before any of its body is buffered.
    pub fn decode_gated(
        &mut self,
        input: &mut &[u8],
        mut gate: impl FnMut(&FrameHeader) -> BodyGate,
    ) -> Result<Option<Frame>, Error> {
        loop {
            match &mut self.state {
                DecodeState::Failed { error, .. } => return Err(error.clone()),
                DecodeState::Header { buf, filled } => {
                    let take = (HEADER_LEN - *filled).min(input.len());
                    buf[*filled..*filled + take].copy_from_slice(&input[..take]);
                    *filled += take;
                    *input = &input[take..];
                    if *filled < HEADER_LEN {
                        return Ok(None);
                    }
                    let raw = RawHeader::read(buf);
                    let gated = raw.validate(self.max_frame).and_then(|h| match gate(&h) {
                        BodyGate::Keep => Ok((h, true)),
                        BodyGate::Skip => Ok((h, false)),
                        BodyGate::Refuse(error) => Err(error),
                    });
                    match gated {
                        Ok((header, true)) => {
                            let first = header.body_len().min(BODY_RESERVED_FIRST_BYTES);
                            self.state = DecodeState::Body {
                                header,
                                body: BytesMut::with_capacity(first),
                            };
                        }
                        Ok((header, false)) => {
                            self.state = DecodeState::Skipping {
                                header,
                                left: header.body_len(),
                            };
                        }
                        Err(error) => {
                            self.state = DecodeState::Failed {
                                error: error.clone(),
                                raw,
                            };
                            return Err(error);
                        }
                    }
                }
                DecodeState::Body { header, body } => {
                    let left = header.body_len() - body.len();
                    let take = left.min(input.len());
                    if body.capacity() - body.len() < take {
                        body.reserve(left);
                    }
                    body.put_slice(&input[..take]);
                    *input = &input[take..];
                    if body.len() < header.body_len() {
                        return Ok(None);
                    }
                    let header = *header;
                    let mut body = std::mem::take(body).freeze();
                    let cap = body.split_to(usize::from(header.cap_len));
                    self.state = DecodeState::Header {
                        buf: [0; HEADER_LEN],
                        filled: 0,
                    };
                    return Ok(Some(Frame {
                        header,
                        cap,
                        payload: body,
                    }));
                }
                DecodeState::Skipping { header, left } => {
                    let take = (*left).min(input.len());
                    *left -= take;
                    *input = &input[take..];
                    if *left > 0 {
                        return Ok(None);
                    }
                    let header = *header;
                    self.state = DecodeState::Header {
                        buf: [0; HEADER_LEN],
                        filled: 0,
                    };
                    return Ok(Some(Frame {
                        header,
                        cap: Bytes::new(),
                        payload: Bytes::new(),
                    }));
                }
            }
        }
    }

    /// Drops what came of the body part way in when it is `corr_id`'s, and reads the rest
    /// of it as skipped ([`BodyGate::Skip`]): a receiver that stopped wanting it (an
    /// upload cut for falling behind) holds none of it while the rest comes. True if it
    /// was.
    pub fn skip_rest_of(&mut self, corr_id: u64) -> bool {
        let DecodeState::Body { header, body } = &self.state else {
            return false;
        };
        if header.corr_id != corr_id {
            return false;
        }
        let (header, left) = (*header, header.body_len() - body.len());
        self.state = DecodeState::Skipping { header, left };
        true
    }

    /// The header of the rejected frame, so the one error answer can echo its `corr_id`.
    pub fn rejected_header(&self) -> Option<&RawHeader> {
        match &self.state {
            DecodeState::Failed { raw, .. } => Some(raw),
            _ => None,
        }
    }

    /// Bytes still needed to finish the current header or body (a read-size hint).
    pub fn bytes_wanted(&self) -> usize {
        match &self.state {
            DecodeState::Header { filled, .. } => HEADER_LEN - filled,
            DecodeState::Body { header, body } => header.body_len() - body.len(),
            DecodeState::Skipping { left, .. } => *left,
            DecodeState::Failed { .. } => 0,
        }
    }

    /// True part way through a frame's fixed header: some of its bytes came, not all.
    pub fn header_begun(&self) -> bool {
        matches!(self.state, DecodeState::Header { filled, .. } if filled > 0)
    }

    /// True between frames: no partial frame is buffered.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, DecodeState::Header { filled: 0, .. })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_header_alone_reserves_at_most_64_kib_of_its_body() {
        let body_len = 1_000_000;
        let mut decoder = FrameDecoder::new(1 << 20);
        let payload = Bytes::from(vec![5u8; body_len]);
        let frame = Frame::new(meta(Flags::REQ, 7), Bytes::new(), payload, 1 << 20).unwrap();
        let bytes = frame.to_bytes();
        let mut input = &bytes[..HEADER_LEN + 10];
        assert!(decoder.decode(&mut input).unwrap().is_none());
        let reserved = match &decoder.state {
            DecodeState::Body { body, .. } => body.capacity(),
            _ => panic!("inside the body"),
        };
        assert!(reserved <= BODY_RESERVED_FIRST_BYTES, "{reserved}");
        // The rest, in small pieces and then one large one: the frame comes out whole.
        let mut rest = &bytes[HEADER_LEN + 10..];
        let mut out = None;
        for piece in [1_000, 100_000, usize::MAX] {
            let take = piece.min(rest.len());
            let mut some = &rest[..take];
            out = decoder.decode(&mut some).unwrap().or(out);
            rest = &rest[take..];
        }
        let decoded = out.expect("the whole frame");
        assert_eq!(decoded.payload.len(), body_len);
        assert!(decoded.payload.iter().all(|b| *b == 5));
    }

    /// A header the gate refuses fails the decoder before a byte of its body is
    /// buffered, and the one answer can still echo its corr_id.
    #[test]
    fn a_refused_header_holds_no_body() {
        let frame = Frame::new(
            meta(Flags::REQ | Flags::START, 41),
            Bytes::new(),
            Bytes::from(vec![1u8; 500_000]),
            MAX_FRAME_BYTES,
        )
        .unwrap();
        let bytes = frame.to_bytes();
        let refusal = Error::RequestFrameTooLarge {
            len: frame.header.len,
            max: 32_806,
        };
        let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES);
        let mut input = &bytes[..HEADER_LEN + 1_000];
        let got = decoder.decode_gated(&mut input, |_| BodyGate::Refuse(refusal.clone()));
        assert_eq!(got, Err(refusal.clone()));
        assert_eq!(decoder.rejected_header().map(|h| h.corr_id), Some(41));
        assert_eq!(decoder.bytes_wanted(), 0);
        assert_eq!(
            refusal.to_string(),
            "a request frame (HELLO or START) of len 500038 exceeds the 32806-byte limit for a bearer token and a JSON request"
        );
        assert_eq!(refusal.code(), crate::ErrorCode::TooLarge);
    }

    /// A body given up part way through is dropped at once; the rest is read as
    /// skipped, and the frame comes out with its header and no bytes.
    #[test]
    fn a_body_given_up_part_way_is_dropped_and_the_rest_skipped() {
        let payload = Bytes::from(vec![3u8; 300_000]);
        let frame =
            Frame::new(meta(Flags::REQ, 5), Bytes::new(), payload, MAX_FRAME_BYTES).unwrap();
        let bytes = frame.to_bytes();
        let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES);
        let mut input = &bytes[..200_000];
        assert_eq!(decoder.decode(&mut input), Ok(None));
        assert!(!decoder.skip_rest_of(4), "another corr_id's");
        assert!(decoder.skip_rest_of(5));
        assert!(
            matches!(decoder.state, DecodeState::Skipping { .. }),
            "nothing held"
        );
        let mut rest = &bytes[200_000..];
        let skipped = decoder.decode(&mut rest).unwrap().expect("the frame's end");
        assert_eq!(skipped.header, frame.header);
        assert!(skipped.is_skipped() && skipped.payload.is_empty());
        assert!(decoder.is_idle() && rest.is_empty());
        assert!(!decoder.skip_rest_of(5), "between frames: nothing to skip");
    }

    use super::*;
    use proptest::prelude::*;

    fn meta(flags: Flags, corr_id: u64) -> FrameMeta {
        FrameMeta {
            flags,
            code: 0,
            app_proto_id: APP_OBJECTS,
            tenant_id: 7,
            corr_id,
        }
    }

    fn raw_header(len: u32, ver: u16, flags: u16, cap_len: u16) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&len.to_be_bytes());
        out[4..6].copy_from_slice(&ver.to_be_bytes());
        out[6..8].copy_from_slice(&flags.to_be_bytes());
        out[28..30].copy_from_slice(&cap_len.to_be_bytes());
        out[30..38].copy_from_slice(&99u64.to_be_bytes());
        out
    }

    #[test]
    fn header_is_38_bytes_with_contract_offsets() {
        assert_eq!(HEADER_LEN, 38);
        assert_eq!(
            [
                OFF_LEN,
                OFF_VER,
                OFF_FLAGS,
                OFF_CODE,
                OFF_APP,
                OFF_TENANT,
                OFF_CAP_LEN,
                OFF_CORR
            ],
            [0, 4, 6, 8, 10, 12, 28, 30]
        );
    }

    fn decode_one(bytes: &[u8], max_frame: u32) -> Result<Option<Frame>, Error> {
        let mut dec = FrameDecoder::new(max_frame);
        let mut input = bytes;
        dec.decode(&mut input)
    }

    #[test]
    fn rejects_from_the_header_alone() {
        let cases: [(&[u8; HEADER_LEN], Error); 6] = [
            (
                &raw_header(37, 1, 1, 0),
                Error::FrameTooShort {
                    len: 37,
                    header_len: 38,
                },
            ),
            (
                &raw_header(MAX_FRAME_BYTES + 1, 1, 1, 0),
                Error::FrameTooLarge {
                    len: u64::from(MAX_FRAME_BYTES) + 1,
                    max_frame: MAX_FRAME_BYTES,
                },
            ),
            (
                &raw_header(38, 2, 1, 0),
                Error::UnsupportedVersion { ver: 2 },
            ),
            (
                &raw_header(38, 1, 0x0101, 0),
                Error::UnknownFlags {
                    flags: 0x0101,
                    unknown: 0x0100,
                },
            ),
            (
                &raw_header(48, 1, 0x0001, 4),
                Error::CapabilityWithoutStart { cap_len: 4 },
            ),
            (
                &raw_header(48, 1, 0x0009, 11),
                Error::CapabilityOverrun {
                    cap_len: 11,
                    body_len: 10,
                },
            ),
        ];
        for (head, expected) in cases {
            // Only the header is offered: the verdict must not wait for the body.
            let err = decode_one(head, MAX_FRAME_BYTES).unwrap_err();
            assert_eq!(err, expected);
        }
    }

    #[test]
    fn oversized_frame_allocates_nothing_and_stays_failed() {
        let mut dec = FrameDecoder::new(4096);
        let head = raw_header(4097, 1, 1, 0);
        let mut input = &head[..];
        let err = dec.decode(&mut input).unwrap_err();
        assert_eq!(err.code().as_str(), "too_large");
        assert_eq!(dec.bytes_wanted(), 0);
        assert_eq!(dec.rejected_header().unwrap().corr_id, 99);
        let mut more: &[u8] = &[0u8; 100];
        assert_eq!(dec.decode(&mut more).unwrap_err(), err);
    }

    #[test]
    fn negotiated_max_frame_is_never_above_the_protocol_max() {
        assert_eq!(FrameDecoder::new(u32::MAX).max_frame(), MAX_FRAME_BYTES);
    }

    #[test]
    fn encoder_refuses_oversized_frames() {
        let payload = Bytes::from(vec![0u8; 100]);
        let err = Frame::new(meta(Flags::REQ, 1), Bytes::new(), payload, 120).unwrap_err();
        assert_eq!(
            err,
            Error::FrameTooLarge {
                len: 138,
                max_frame: 120
            }
        );
        let err = Frame::new(
            meta(Flags::REQ, 1),
            Bytes::from_static(b"tok"),
            Bytes::new(),
            1024,
        )
        .unwrap_err();
        assert_eq!(err, Error::CapabilityWithoutStart { cap_len: 3 });
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        (
            any::<u16>(),
            0u16..4,
            any::<u128>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(any::<u8>(), 0..3000),
            any::<u16>(),
        )
            .prop_map(|(code, app, tenant, corr, cap, payload, flag_bits)| {
                let mut flags = Flags::from_bits(flag_bits & Flags::KNOWN.bits()).unwrap();
                if !cap.is_empty() {
                    flags = flags | Flags::START;
                }
                let meta = FrameMeta {
                    flags,
                    code,
                    app_proto_id: app,
                    tenant_id: tenant,
                    corr_id: corr,
                };
                Frame::new(
                    meta,
                    Bytes::from(cap),
                    Bytes::from(payload),
                    MAX_FRAME_BYTES,
                )
                .unwrap()
            })
    }

    /// `frames` on the wire, and the points `cuts` split it at (its ends included).
    fn wire_cut(frames: &[Frame], cuts: &[prop::sample::Index]) -> (BytesMut, Vec<usize>) {
        let mut wire = BytesMut::new();
        for f in frames {
            f.encode_into(&mut wire);
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.extend([0, wire.len()]);
        points.sort_unstable();
        (wire, points)
    }

    proptest! {
        #[test]
        fn any_split_yields_the_same_frames(
            frames in proptest::collection::vec(arb_frame(), 1..6),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let (wire, points) = wire_cut(&frames, &cuts);
            let mut dec = FrameDecoder::new(MAX_FRAME_BYTES);
            let mut got = Vec::new();
            for pair in points.windows(2) {
                let mut input = &wire[pair[0]..pair[1]];
                while let Some(frame) = dec.decode(&mut input).unwrap() {
                    got.push(frame);
                }
                prop_assert!(input.is_empty());
            }
            prop_assert!(dec.is_idle());
            prop_assert_eq!(got, frames);
        }

        /// Frames whose corr_id is odd skipped: every split yields the same headers, the
        /// kept ones whole and the skipped ones empty, and a skipped body is never held.
        #[test]
        fn a_skipped_body_is_read_and_dropped_in_any_split(
            frames in proptest::collection::vec(arb_frame(), 1..6),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let (wire, points) = wire_cut(&frames, &cuts);
            let gate = |h: &FrameHeader| match h.corr_id % 2 {
                0 => BodyGate::Keep,
                _ => BodyGate::Skip,
            };
            let mut dec = FrameDecoder::new(MAX_FRAME_BYTES);
            let mut got = Vec::new();
            for pair in points.windows(2) {
                let mut input = &wire[pair[0]..pair[1]];
                while let Some(frame) = dec.decode_gated(&mut input, gate).unwrap() {
                    got.push(frame);
                }
                prop_assert!(input.is_empty());
                let holds_skipped =
                    matches!(&dec.state, DecodeState::Body { header, .. } if header.corr_id % 2 == 1);
                prop_assert!(!holds_skipped, "a skipped body is buffered");
            }
            prop_assert!(dec.is_idle());
            let want: Vec<Frame> = frames
                .into_iter()
                .map(|f| match f.header.corr_id % 2 {
                    0 => f,
                    _ => Frame { header: f.header, cap: Bytes::new(), payload: Bytes::new() },
                })
                .collect();
            for f in &want {
                prop_assert_eq!(f.is_skipped(), f.header.corr_id % 2 == 1 && f.header.body_len() > 0);
            }
            prop_assert_eq!(got, want);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_never_over_allocate(
            bytes in proptest::collection::vec(any::<u8>(), 0..300)
        ) {
            let mut dec = FrameDecoder::new(256);
            let mut input = &bytes[..];
            while let Ok(Some(frame)) = dec.decode(&mut input) {
                prop_assert!(frame.header.len <= 256);
            }
            prop_assert!(dec.bytes_wanted() <= 256);
        }
    }
}
