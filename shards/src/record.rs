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
//! - version 3, an object in its own file with parity (`ec.rs`, docs/design/
//!   erasure-coding.md): `ver u8 = 3 | object_len u64 BE | k u8 | m u8 | n u8 | rot u8 |
//!   type_len u8 | content type | chunk tree | parity checksums` (`stripes × m × 32`
//!   bytes, stripe after stripe). The parity file is the object file's path plus
//!   `.parity`.

use ron_codec::{Address, ChunkTree};

use crate::ec::{EcParams, StripeGeometry};
use crate::error::ShardError;
use crate::ids::{ByteOffset, SegmentId, StripeIndex};
use crate::limits::DIRS_MAX;
use crate::segment::NeedleAt;

const OWN_FILE_VERSION: u8 = 1;
const PACKED_VERSION: u8 = 2;
const STRIPED_VERSION: u8 = 3;
/// Longest stored Content-Type.
pub const CONTENT_TYPE_LEN_MAX: usize = 255;

/// Whether the store keeps an object until an operator removes it, or may evict it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Retention {
    /// Uploaded: kept.
    #[default]
    Kept,
    /// A copy fetched from a peer or an origin: a cache, evicted oldest first past the
    /// node's `fetched_bytes_max` (`store/evictable.rs`).
    Evictable,
}

/// What the index knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub tree: ChunkTree,
    /// Empty when the uploader sent none (served as application/octet-stream).
    pub content_type: String,
    pub location: Location,
    /// The parity blocks of an object in its own file, when it was written with them.
    pub parity: Option<Parity>,
}

/// How an object's parity was made: the code, the dirs and rotation its columns were
/// placed by (kept so that a node whose configuration changes still finds every
/// block), and one checksum per parity block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parity {
    pub params: EcParams,
    pub dirs: u8,
    pub rot: u8,
    /// `m` per stripe, stripe after stripe.
    pub checksums: Vec<[u8; 32]>,
}

impl Parity {
    pub fn geometry(&self, object_len: u64) -> StripeGeometry {
        StripeGeometry::new(self.params, self.dirs, self.rot, object_len)
    }

    /// The checksum of parity block `parity` of `stripe`.
    pub fn checksum(&self, stripe: StripeIndex, parity: u8) -> Option<&[u8; 32]> {
        let at = stripe.0 * u64::from(self.params.parity) + u64::from(parity);
        self.checksums.get(usize::try_from(at).ok()?)
    }
}

/// Where an object's bytes are in its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// Its own file, from offset 0.
    OwnFile,
    /// A needle in a segment.
    Packed(NeedleAt),
}

/// The object length a record states (bytes 1..9 of every version), undecoded: for
/// counting an index without checking each tree.
pub fn object_len_of(record: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(*record.get(1..9)?.first_chunk::<8>()?))
}

/// Where a packed object's record (version 2) says its body lies, and the bytes its
/// needle takes, undecoded: for walking an index without checking each tree. `None` for
/// an object in its own file, or a record too short to say.
pub(crate) fn packed_needle_of(record: &[u8]) -> Option<(NeedleAt, u64)> {
    if record.first() != Some(&PACKED_VERSION) {
        return None;
    }
    let object_len = u64::from_be_bytes(*record.get(1..9)?.first_chunk::<8>()?);
    let segment = u32::from_be_bytes(*record.get(9..13)?.first_chunk::<4>()?);
    let body = u64::from_be_bytes(*record.get(13..21)?.first_chunk::<8>()?);
    let type_len = u64::from(*record.get(21)?);
    let at = NeedleAt {
        segment: SegmentId(segment),
        body: ByteOffset(body),
    };
    Some((at, crate::segment::needle_bytes(type_len, object_len)))
}

impl ObjectMeta {
    pub fn addr(&self) -> Address {
        self.tree.root()
    }

    /// Whether the object is a needle in its store's segments.
    pub fn is_packed(&self) -> bool {
        matches!(self.location, Location::Packed(_))
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
            + self.parity.as_ref().map_or(0, |p| p.checksums.len() * 32)
    }

    pub fn encode(&self) -> Vec<u8> {
        let ty = self.content_type.as_bytes();
        debug_assert!(ty.len() <= CONTENT_TYPE_LEN_MAX);
        let mut out =
            Vec::with_capacity(22 + ty.len() + ChunkTree::stored_len(self.len()) as usize);
        match (self.location, &self.parity) {
            (Location::OwnFile, Some(parity)) => {
                out.push(STRIPED_VERSION);
                out.extend_from_slice(&self.len().to_be_bytes());
                out.extend_from_slice(&[
                    parity.params.data,
                    parity.params.parity,
                    parity.dirs,
                    parity.rot,
                ]);
            }
            (Location::OwnFile, None) => {
                out.push(OWN_FILE_VERSION);
                out.extend_from_slice(&self.len().to_be_bytes());
            }
            (Location::Packed(at), _) => {
                debug_assert!(self.parity.is_none(), "packed objects have no parity");
                out.push(PACKED_VERSION);
                out.extend_from_slice(&self.len().to_be_bytes());
                out.extend_from_slice(&at.segment.0.to_be_bytes());
                out.extend_from_slice(&at.body.0.to_be_bytes());
            }
        }
        out.push(ty.len() as u8);
        out.extend_from_slice(ty);
        self.tree.write_stored(&mut out);
        if let (Location::OwnFile, Some(parity)) = (self.location, &self.parity) {
            parity
                .checksums
                .iter()
                .for_each(|c| out.extend_from_slice(c));
        }
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
        let mut code = None;
        let (location, rest) = match ver {
            OWN_FILE_VERSION => (Location::OwnFile, rest),
            STRIPED_VERSION => {
                let (&[data, parity, dirs, rot], rest) = rest
                    .split_first_chunk::<4>()
                    .ok_or(corrupt("truncated erasure code"))?;
                let params = EcParams::new(data, parity)
                    .ok()
                    .filter(|p| !p.is_off() && (1..=DIRS_MAX).contains(&dirs))
                    .ok_or(corrupt("erasure code out of range"))?;
                code = Some((params, dirs, rot));
                (Location::OwnFile, rest)
            }
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
        let (ty, rest) = rest.split_at(usize::from(ty_len));
        let content_type = std::str::from_utf8(ty)
            .map_err(|_| corrupt("content type is not UTF-8"))?
            .to_owned();
        let (stored_tree, checksums) = match code {
            None => (rest, &[][..]),
            Some(_) => {
                let tree_len = usize::try_from(ChunkTree::stored_len(object_len))
                    .ok()
                    .filter(|&len| len <= rest.len())
                    .ok_or(corrupt("truncated chunk tree"))?;
                rest.split_at(tree_len)
            }
        };
        let tree = ChunkTree::from_stored(object_len, addr, stored_tree)
            .map_err(|source| ShardError::CorruptTree { addr, source })?;
        let parity = match code {
            None => None,
            Some((params, dirs, rot)) => Some(decode_checksums(
                params, dirs, rot, object_len, checksums, corrupt,
            )?),
        };
        Ok(ObjectMeta {
            tree,
            content_type,
            location,
            parity,
        })
    }
}

/// The parity checksums of a version 3 record: exactly `stripes × m` of them.
fn decode_checksums(
    params: EcParams,
    dirs: u8,
    rot: u8,
    object_len: u64,
    bytes: &[u8],
    corrupt: impl Fn(&'static str) -> ShardError,
) -> Result<Parity, ShardError> {
    let geometry = StripeGeometry::new(params, dirs, rot, object_len);
    let expected = geometry.stripes() * u64::from(params.parity) * 32;
    if bytes.len() as u64 != expected {
        return Err(corrupt(
            "parity checksums do not match the object's stripes",
        ));
    }
    let checksums = bytes
        .chunks_exact(32)
        .map(|c| c.try_into().expect("chunks of 32"))
        .collect();
    Ok(Parity {
        params,
        dirs,
        rot,
        checksums,
    })
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
            parity: None,
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
                parity: None,
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

    fn striped(len: usize) -> ObjectMeta {
        let data: Vec<u8> = (0..len).map(|i| (i % 249) as u8).collect();
        let params = EcParams::new(4, 2).unwrap();
        let tree = ChunkTree::of(&data);
        let stripes = StripeGeometry::new(params, 1, 9, len as u64).stripes() as usize;
        ObjectMeta {
            tree,
            content_type: "video/mp4".into(),
            location: Location::OwnFile,
            parity: Some(Parity {
                params,
                dirs: 1,
                rot: 9,
                checksums: (0..stripes * 2).map(|i| [i as u8; 32]).collect(),
            }),
        }
    }

    #[test]
    fn records_with_parity_round_trip_and_refuse_a_wrong_checksum_count() {
        for len in [65_537, 4 * 65_536, 9 * 65_536 + 3] {
            let meta = striped(len);
            let enc = meta.encode();
            assert_eq!(enc[0], STRIPED_VERSION);
            assert_eq!(ObjectMeta::decode(meta.addr(), &enc).unwrap(), meta);
            let short = &enc[..enc.len() - 32];
            let err = ObjectMeta::decode(meta.addr(), short).unwrap_err();
            assert!(err.to_string().contains("parity checksums"), "{err}");
            let mut bad_code = enc.clone();
            bad_code[10] = 0;
            let err = ObjectMeta::decode(meta.addr(), &bad_code).unwrap_err();
            assert!(
                err.to_string().contains("erasure code out of range"),
                "{err}"
            );
        }
        let meta = striped(3 * 65_536);
        assert_eq!(
            meta.footprint_bytes(),
            std::mem::size_of::<ObjectMeta>() + 5 * 32 + 9 + 2 * 32
        );
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
            let meta = ObjectMeta { tree: ChunkTree::of(&data), content_type: "a/b".into(), location, parity: None };
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
            let meta = ObjectMeta { tree: ChunkTree::of(&data), content_type: ty, location, parity: None };
            proptest::prop_assert_eq!(ObjectMeta::decode(meta.addr(), &meta.encode()).unwrap(), meta);
        }
    }
}
