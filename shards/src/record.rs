//! The index record of one object, as stored in its store's LMDB database under the
//! object's 32-byte address.
//!
//! Encoding, by where the bytes live ([`Location`]):
//! - version 1, an object in its own file: `ver u8 = 1 | object_len u64 BE | type_len u8 |
//!   content type | chunk tree` (the stored encoding of `ron_codec::tree`, `n × 32`
//!   bytes or empty). The file is `objects/<hh>/<hex>` of the same store; the path is a
//!   function of the address, so it is not stored.
//! - version 2, an object packed in a segment (`segment.rs`): `ver u8 = 2 | object_len
//!   u64 BE | segment u32 BE | body offset u64 BE | type_len u8 | content type | chunk
//!   tree`.

use ron_codec::{Address, ChunkTree};

use crate::error::ShardError;
use crate::segment::{ByteOffset, NeedleAt, SegmentId};

const OWN_FILE_VERSION: u8 = 1;
const PACKED_VERSION: u8 = 2;
/// Longest stored Content-Type.
pub const CONTENT_TYPE_LEN_MAX: usize = 255;

/// What the index knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub tree: ChunkTree,
    /// Empty when the uploader sent none (served as application/octet-stream).
    pub content_type: String,
    pub location: Location,
}

/// Where an object's bytes are in its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// Its own file, from offset 0.
    OwnFile,
    /// A needle in a segment.
    Packed(NeedleAt),
}

impl ObjectMeta {
    pub fn addr(&self) -> Address {
        self.tree.root()
    }

    pub fn len(&self) -> u64 {
        self.tree.object_len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Memory this entry holds in a cache: the struct, its tree (group CVs and inner
    /// nodes), its type.
    pub fn footprint_bytes(&self) -> usize {
        std::mem::size_of::<ObjectMeta>()
            + ChunkTree::memory_bytes(self.len()) as usize
            + self.content_type.len()
    }

    pub fn encode(&self) -> Vec<u8> {
        let ty = self.content_type.as_bytes();
        debug_assert!(ty.len() <= CONTENT_TYPE_LEN_MAX);
        let mut out =
            Vec::with_capacity(22 + ty.len() + ChunkTree::stored_len(self.len()) as usize);
        match self.location {
            Location::OwnFile => {
                out.push(OWN_FILE_VERSION);
                out.extend_from_slice(&self.len().to_be_bytes());
            }
            Location::Packed(at) => {
                out.push(PACKED_VERSION);
                out.extend_from_slice(&self.len().to_be_bytes());
                out.extend_from_slice(&at.segment.0.to_be_bytes());
                out.extend_from_slice(&at.body.0.to_be_bytes());
            }
        }
        out.push(ty.len() as u8);
        out.extend_from_slice(ty);
        self.tree.write_stored(&mut out);
        out
    }

    /// Decodes a record and checks its chunk tree against `addr` (once per load).
    pub fn decode(addr: Address, bytes: &[u8]) -> Result<ObjectMeta, ShardError> {
        let corrupt = |reason: &'static str| ShardError::CorruptRecord { addr, reason };
        let (&ver, rest) = bytes.split_first().ok_or(corrupt("empty record"))?;
        let (len_bytes, rest) = rest
            .split_first_chunk::<8>()
            .ok_or(corrupt("truncated length"))?;
        let object_len = u64::from_be_bytes(*len_bytes);
        let (location, rest) = match ver {
            OWN_FILE_VERSION => (Location::OwnFile, rest),
            PACKED_VERSION => {
                let (segment, rest) = rest
                    .split_first_chunk::<4>()
                    .ok_or(corrupt("truncated segment"))?;
                let (body, rest) = rest
                    .split_first_chunk::<8>()
                    .ok_or(corrupt("truncated segment offset"))?;
                let at = NeedleAt {
                    segment: SegmentId(u32::from_be_bytes(*segment)),
                    body: ByteOffset(u64::from_be_bytes(*body)),
                };
                (Location::Packed(at), rest)
            }
            _ => return Err(corrupt("unknown record version")),
        };
        let (&ty_len, rest) = rest.split_first().ok_or(corrupt("truncated type length"))?;
        if rest.len() < usize::from(ty_len) {
            return Err(corrupt("truncated content type"));
        }
        let (ty, stored_tree) = rest.split_at(usize::from(ty_len));
        let content_type = std::str::from_utf8(ty)
            .map_err(|_| corrupt("content type is not UTF-8"))?
            .to_owned();
        let tree = ChunkTree::from_stored(object_len, addr, stored_tree)
            .map_err(|source| ShardError::CorruptTree { addr, source })?;
        Ok(ObjectMeta {
            tree,
            content_type,
            location,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footprint_counts_the_chaining_values() {
        // 5 groups: 5 group CVs and 4 inner nodes of 32 bytes.
        let data = vec![1u8; 300_000];
        let meta = ObjectMeta {
            tree: ChunkTree::of(&data),
            content_type: "text/plain".into(),
            location: Location::OwnFile,
        };
        assert_eq!(
            meta.footprint_bytes(),
            std::mem::size_of::<ObjectMeta>() + 9 * 32 + 10
        );
    }

    #[test]
    fn round_trips_and_detects_damage() {
        let packed = Location::Packed(NeedleAt {
            segment: SegmentId(0x0102_0304),
            body: ByteOffset(0x0506_0708_090a),
        });
        let cases = [0usize, 5, 65536, 65537, 300_000]
            .into_iter()
            .flat_map(|len| [(len, Location::OwnFile), (len, packed)]);
        for (len, location) in cases {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let meta = ObjectMeta {
                tree: ChunkTree::of(&data),
                content_type: "text/plain".into(),
                location,
            };
            let enc = meta.encode();
            assert_eq!(ObjectMeta::decode(meta.addr(), &enc).unwrap(), meta);
            if len > 65536 {
                let mut bad = enc.clone();
                let last = bad.len() - 1;
                bad[last] ^= 1;
                let err = ObjectMeta::decode(meta.addr(), &bad).unwrap_err();
                assert!(err.to_string().contains("chunk tree"), "{err}");
            }
            let err = ObjectMeta::decode(meta.addr(), &enc[..5]).unwrap_err();
            assert!(err.to_string().contains("truncated length"), "{err}");
        }
    }

    proptest::proptest! {
        /// Whatever the disk hands back under an address — noise, or a real record cut
        /// short or with a byte changed — decoding it is an error or a record whose tree
        /// checked out against that address; never a panic.
        #[test]
        fn decoding_damaged_records_never_panics(
            addr in proptest::array::uniform32(0u8..),
            noise in proptest::collection::vec(0u8.., 0..200),
            len in 0usize..300_000,
            packed: bool,
            cut in 0usize..400,
            flip in (0usize..400, 1u8..),
        ) {
            let addr = Address::from_bytes(addr);
            if let Ok(meta) = ObjectMeta::decode(addr, &noise) {
                proptest::prop_assert_eq!(meta.addr(), addr);
            }
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let location = match packed {
                true => Location::Packed(NeedleAt { segment: SegmentId(7), body: ByteOffset(40) }),
                false => Location::OwnFile,
            };
            let meta = ObjectMeta { tree: ChunkTree::of(&data), content_type: "a/b".into(), location };
            let mut record = meta.encode();
            let at = flip.0 % record.len();
            record[at] ^= flip.1;
            for damaged in [&meta.encode()[..cut.min(record.len())], &record[..]] {
                if let Ok(decoded) = ObjectMeta::decode(meta.addr(), damaged) {
                    proptest::prop_assert_eq!(decoded.addr(), meta.addr());
                }
            }
        }

        #[test]
        fn every_record_round_trips(len in 0usize..200_000, segment in 0u32.., body in 0u64.., packed: bool, ty in "[a-z/]{0,40}") {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let location = if packed {
                Location::Packed(NeedleAt { segment: SegmentId(segment), body: ByteOffset(body) })
            } else {
                Location::OwnFile
            };
            let meta = ObjectMeta { tree: ChunkTree::of(&data), content_type: ty, location };
            proptest::prop_assert_eq!(ObjectMeta::decode(meta.addr(), &meta.encode()).unwrap(), meta);
        }
    }
}
