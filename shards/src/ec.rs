//! Erasure coding of an object's groups (issue 14; `docs/design/erasure-coding.md`):
//! where each block of a stripe lives ([`StripeGeometry`]) and the Reed–Solomon code
//! that makes and rebuilds them ([`StripeCode`]). No I/O here: the read and write
//! paths ask this module which dir, which file and which offset, and hand it blocks.
//!
//! A stripe is `k` consecutive 64 KiB groups of an object (the data blocks; the last
//! stripe may have fewer) and `m` parity blocks of 64 KiB. The last group is shorter
//! than 64 KiB when the object's length says so; for the code it is zero-padded, and
//! the groups a short last stripe lacks count as zeros: neither is ever stored.
//! Column `c` of a stripe (data `0..k`, then parity `k..k+m`) lives in dir
//! `(c + rot) mod n`; a dir keeps, per object, its data columns in one data file and
//! its parity columns in one parity file, stripe after stripe.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::str::FromStr;

use reed_solomon_erasure::galois_8::ReedSolomon;
use ron_codec::tree::GroupIndex;

use crate::ids::{ByteOffset, DirIndex, StripeIndex};
use crate::limits::{BLOCK_BYTES, DATA_BLOCKS_MAX, DIRS_MAX, PARITY_BLOCKS_MAX};

/// The code a node writes new objects with: `k` data blocks and `m` parity blocks per
/// stripe ("4+1"); `m = 0` is no parity at all ("off").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EcParams {
    pub data: u8,
    pub parity: u8,
}

/// Why an `--ec` value or a dir count cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EcParamsError {
    #[error("erasure code {given:?}: expected K+M (for example 4+1) or off")]
    Syntax { given: String },
    #[error("erasure code {data}+{parity}: K must be 1..={DATA_BLOCKS_MAX} and M 0..={PARITY_BLOCKS_MAX}")]
    OutOfRange { data: u8, parity: u8 },
    #[error("{dirs} data dirs: at most {DIRS_MAX}")]
    TooManyDirs { dirs: usize },
    #[error(
        "erasure code {data}+{parity} over {dirs} data dirs: one dir would hold {per_dir} \
         blocks of a stripe, more than the {parity} a stripe can lose; use more dirs or \
         more parity (at most {data_max}+{parity} fits {dirs} dirs)"
    )]
    DirsTooFew {
        data: u8,
        parity: u8,
        dirs: u8,
        per_dir: u8,
        data_max: u8,
    },
}

impl EcParams {
    pub const OFF: EcParams = EcParams { data: 1, parity: 0 };

    pub fn new(data: u8, parity: u8) -> Result<EcParams, EcParamsError> {
        let ok = (1..=DATA_BLOCKS_MAX).contains(&data) && parity <= PARITY_BLOCKS_MAX;
        match ok {
            true => Ok(EcParams { data, parity }),
            false => Err(EcParamsError::OutOfRange { data, parity }),
        }
    }

    /// The documented default for a node with `dirs` data dirs (see the design note):
    /// 1 dir 4+1 (bit rot), 2 dirs 1+1, 3 dirs 2+1, 4–16 dirs (n−2)+2, more 14+2.
    pub fn default_for(dirs: u8) -> EcParams {
        match dirs {
            0 | 1 => EcParams { data: 4, parity: 1 },
            2 => EcParams { data: 1, parity: 1 },
            3 => EcParams { data: 2, parity: 1 },
            4..=16 => EcParams {
                data: dirs - 2,
                parity: 2,
            },
            _ => EcParams {
                data: 14,
                parity: 2,
            },
        }
    }

    pub fn is_off(&self) -> bool {
        self.parity == 0
    }

    /// Blocks per stripe, data and parity.
    pub fn width(&self) -> u8 {
        self.data + self.parity
    }

    /// Checks that losing one whole dir of `dirs` loses at most `m` blocks of any
    /// stripe (a dir holds at most ⌈(k + m) / n⌉ of them). One dir is exempt: it is
    /// protected against bit rot only, which the banner says.
    pub fn check_dirs(&self, dirs: usize) -> Result<(), EcParamsError> {
        if dirs > usize::from(DIRS_MAX) {
            return Err(EcParamsError::TooManyDirs { dirs });
        }
        let n = dirs.max(1) as u8;
        let per_dir = self.width().div_ceil(n);
        if n == 1 || self.is_off() || per_dir <= self.parity {
            return Ok(());
        }
        Err(EcParamsError::DirsTooFew {
            data: self.data,
            parity: self.parity,
            dirs: n,
            per_dir,
            data_max: (n.saturating_mul(self.parity))
                .saturating_sub(self.parity)
                .max(1),
        })
    }
}

impl FromStr for EcParams {
    type Err = EcParamsError;

    fn from_str(s: &str) -> Result<EcParams, EcParamsError> {
        let syntax = || EcParamsError::Syntax { given: s.into() };
        if s.eq_ignore_ascii_case("off") {
            return Ok(EcParams::OFF);
        }
        let (k, m) = s.split_once('+').ok_or_else(syntax)?;
        let k: u8 = k.trim().parse().map_err(|_| syntax())?;
        let m: u8 = m.trim().parse().map_err(|_| syntax())?;
        EcParams::new(k, m)
    }
}

impl fmt::Display for EcParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.is_off() {
            true => f.write_str("off"),
            false => write!(f, "{}+{}", self.data, self.parity),
        }
    }
}

/// Where one block lives: a dir, and an offset in that dir's data or parity file of
/// the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockAt {
    pub dir: DirIndex,
    pub offset: ByteOffset,
}

/// The layout of one object's stripes: everything a read, a write or a repair needs to
/// find a block. Pure arithmetic on what the object's record says (`k`, `m`, the dir
/// count it was written with, its rotation) and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripeGeometry {
    params: EcParams,
    dirs: u8,
    rot: u8,
    object_len: u64,
}

impl StripeGeometry {
    /// `rot` is the address's second byte (spreads column 0 over the dirs).
    pub fn new(params: EcParams, dirs: u8, rot: u8, object_len: u64) -> StripeGeometry {
        StripeGeometry {
            params,
            dirs: dirs.max(1),
            rot,
            object_len,
        }
    }

    pub fn params(&self) -> EcParams {
        self.params
    }

    pub fn groups(&self) -> u64 {
        self.object_len.div_ceil(BLOCK_BYTES)
    }

    pub fn stripes(&self) -> u64 {
        self.groups().div_ceil(u64::from(self.params.data))
    }

    pub fn stripe_of(&self, group: GroupIndex) -> StripeIndex {
        StripeIndex(group.0 / u64::from(self.params.data))
    }

    /// The groups of `stripe` (fewer than `k` for a short last stripe).
    pub fn groups_of(&self, stripe: StripeIndex) -> std::ops::Range<u64> {
        let k = u64::from(self.params.data);
        let first = stripe.0 * k;
        first..(first + k).min(self.groups())
    }

    /// Bytes of group `g` (the last one may be short; 0 past the end).
    pub fn group_len(&self, group: GroupIndex) -> u64 {
        let start = group.0.saturating_mul(BLOCK_BYTES);
        self.object_len.saturating_sub(start).min(BLOCK_BYTES)
    }

    fn dir_of_column(&self, column: u8) -> DirIndex {
        DirIndex(((u16::from(column) + u16::from(self.rot)) % u16::from(self.dirs)) as u8)
    }

    /// Columns in `columns` that `dir` holds, and how many of them come before `column`.
    fn count_in_dir(&self, columns: std::ops::Range<u8>, dir: DirIndex, before: u8) -> (u64, u64) {
        let mut total = 0;
        let mut rank = 0;
        for c in columns.filter(|c| self.dir_of_column(*c) == dir) {
            total += 1;
            rank += u64::from(c < before);
        }
        (total, rank)
    }

    /// Where group `g` is: its dir, and its offset in that dir's data file.
    pub fn data_block_at(&self, group: GroupIndex) -> BlockAt {
        let k = self.params.data;
        let stripe = group.0 / u64::from(k);
        let column = (group.0 % u64::from(k)) as u8;
        let dir = self.dir_of_column(column);
        let (per_stripe, rank) = self.count_in_dir(0..k, dir, column);
        BlockAt {
            dir,
            offset: ByteOffset((stripe * per_stripe + rank) * BLOCK_BYTES),
        }
    }

    /// Where parity block `p` (0..m) of `stripe` is: its dir, and its offset in that
    /// dir's parity file.
    pub fn parity_block_at(&self, stripe: StripeIndex, parity: u8) -> BlockAt {
        debug_assert!(parity < self.params.parity);
        let (k, w) = (self.params.data, self.params.width());
        let column = k + parity;
        let dir = self.dir_of_column(column);
        let (per_stripe, rank) = self.count_in_dir(k..w, dir, column);
        BlockAt {
            dir,
            offset: ByteOffset((stripe.0 * per_stripe + rank) * BLOCK_BYTES),
        }
    }

    /// Length of `dir`'s data file of this object: its groups, the last one unpadded.
    /// Zero when the dir holds no data column.
    /// Counted per stripe, not per group: a room check asks it of objects of any size.
    pub fn data_file_len(&self, dir: DirIndex) -> u64 {
        let groups = self.groups();
        let Some(last) = groups.checked_sub(1).map(GroupIndex) else {
            return 0;
        };
        let k = self.params.data;
        let (per_stripe, _) = self.count_in_dir(0..k, dir, 0);
        let short_stripe_groups = (groups % u64::from(k)) as u8;
        let (in_short_stripe, _) = self.count_in_dir(0..short_stripe_groups, dir, 0);
        let blocks = groups / u64::from(k) * per_stripe + in_short_stripe;
        let last_short_by = match self.data_block_at(last).dir == dir {
            true => BLOCK_BYTES - self.group_len(last),
            false => 0,
        };
        blocks * BLOCK_BYTES - last_short_by
    }

    /// Length of `dir`'s parity file of this object: full blocks.
    pub fn parity_file_len(&self, dir: DirIndex) -> u64 {
        let (k, w) = (self.params.data, self.params.width());
        let (per_stripe, _) = self.count_in_dir(k..w, dir, 0);
        self.stripes() * per_stripe * BLOCK_BYTES
    }
}

/// The Reed–Solomon code of one `k+m` (`reed-solomon-erasure`, GF(2⁸)). Blocks handed
/// to it are at most [`BLOCK_BYTES`]; shorter ones (the last group) are zero-padded
/// for the arithmetic only.
pub struct StripeCode {
    params: EcParams,
    rs: Option<ReedSolomon>,
}

impl fmt::Debug for StripeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StripeCode({})", self.params)
    }
}

/// Why a stripe could not be encoded or rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeError {
    #[error("stripe needs {needed} good blocks to rebuild, has {good}")]
    TooFewBlocks { needed: usize, good: usize },
    #[error("stripe given {given} blocks, the code {params} has {expected}")]
    WrongShape {
        params: EcParams,
        given: usize,
        expected: usize,
    },
    #[error("block of {len} bytes, longer than a block ({BLOCK_BYTES})")]
    BlockTooLong { len: usize },
    #[error("parity buffer of {len} bytes, not one block ({BLOCK_BYTES})")]
    ParityNotOneBlock { len: usize },
}

impl StripeCode {
    pub fn new(params: EcParams) -> StripeCode {
        let rs = match params.is_off() {
            true => None,
            // `EcParams::new` keeps k and m in the range the field supports.
            false => ReedSolomon::new(params.data.into(), params.parity.into()).ok(),
        };
        StripeCode { params, rs }
    }

    pub fn params(&self) -> EcParams {
        self.params
    }

    /// Computes the `m` parity blocks of a stripe from its data blocks (`data.len()`
    /// at most `k`; fewer for a short last stripe, the missing ones zero). Each parity
    /// block is written whole ([`BLOCK_BYTES`]).
    pub fn encode(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), StripeError> {
        let (k, m) = (
            usize::from(self.params.data),
            usize::from(self.params.parity),
        );
        self.check_shape(
            data.len() <= k && parity.len() == m,
            data.len() + parity.len(),
        )?;
        let Some(rs) = &self.rs else {
            return Ok(());
        };
        let full = BLOCK_BYTES as usize;
        if let Some(long) = data.iter().find(|b| b.len() > full) {
            return Err(StripeError::BlockTooLong { len: long.len() });
        }
        if let Some(odd) = parity.iter().find(|b| b.len() != full) {
            return Err(StripeError::ParityNotOneBlock { len: odd.len() });
        }
        let padded: Vec<std::borrow::Cow<'_, [u8]>> = (0..k)
            .map(|i| match data.get(i) {
                Some(block) if block.len() == full => std::borrow::Cow::Borrowed(*block),
                Some(block) => {
                    let mut owned = vec![0u8; full];
                    owned[..block.len()].copy_from_slice(block);
                    std::borrow::Cow::Owned(owned)
                }
                None => std::borrow::Cow::Owned(vec![0u8; full]),
            })
            .collect();
        rs.encode_sep(&padded, parity)
            .map_err(|_| StripeError::WrongShape {
                params: self.params,
                given: data.len() + parity.len(),
                expected: k + m,
            })
    }

    /// Rebuilds the missing blocks of a stripe in place. `blocks` has `k + m` entries
    /// (data, then parity); `None` is a block that is missing or failed its check.
    /// `data_lens[i]` is the true length of data block `i` (0 for a group a short last
    /// stripe lacks); present data blocks are that long, rebuilt ones are cut to it.
    pub fn rebuild(
        &self,
        blocks: &mut [Option<Vec<u8>>],
        data_lens: &[usize],
    ) -> Result<(), StripeError> {
        let (k, m) = (
            usize::from(self.params.data),
            usize::from(self.params.parity),
        );
        self.check_shape(blocks.len() == k + m && data_lens.len() == k, blocks.len())?;
        let good = blocks.iter().filter(|b| b.is_some()).count();
        if good < k {
            return Err(StripeError::TooFewBlocks { needed: k, good });
        }
        let Some(rs) = &self.rs else {
            return Ok(());
        };
        let full = BLOCK_BYTES as usize;
        for block in blocks.iter_mut().flatten() {
            if block.len() > full {
                return Err(StripeError::BlockTooLong { len: block.len() });
            }
            block.resize(full, 0);
        }
        rs.reconstruct(blocks)
            .map_err(|_| StripeError::TooFewBlocks { needed: k, good })?;
        for (i, block) in blocks.iter_mut().enumerate().take(k) {
            if let Some(block) = block {
                block.truncate(data_lens[i]);
            }
        }
        Ok(())
    }

    fn check_shape(&self, ok: bool, given: usize) -> Result<(), StripeError> {
        match ok {
            true => Ok(()),
            false => Err(StripeError::WrongShape {
                params: self.params,
                given,
                expected: usize::from(self.params.width()),
            }),
        }
    }
}

/// The codes of one shard, one per `k+m` met, each built once (its matrices).
#[derive(Debug, Default)]
pub struct StripeCodes {
    codes: RefCell<HashMap<EcParams, Rc<StripeCode>>>,
}

impl StripeCodes {
    pub fn get(&self, params: EcParams) -> Rc<StripeCode> {
        let mut codes = self.codes.borrow_mut();
        Rc::clone(
            codes
                .entry(params)
                .or_insert_with(|| Rc::new(StripeCode::new(params))),
        )
    }
}

/// The checksum of a parity block kept in the object's record (data blocks have their
/// chaining values in the chunk tree).
pub fn parity_checksum(block: &[u8]) -> [u8; 32] {
    *blake3::hash(block).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn params_parse_print_and_refuse_what_they_must() {
        assert_eq!(
            "4+1".parse::<EcParams>().unwrap(),
            EcParams { data: 4, parity: 1 }
        );
        assert_eq!(
            " 10 + 4 ".trim().parse::<EcParams>().unwrap().to_string(),
            "10+4"
        );
        assert_eq!("off".parse::<EcParams>().unwrap(), EcParams::OFF);
        assert_eq!(EcParams::OFF.to_string(), "off");
        for bad in ["", "4", "4+", "+1", "a+b", "4-1"] {
            let err = bad.parse::<EcParams>().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("erasure code {bad:?}: expected K+M (for example 4+1) or off")
            );
        }
        assert_eq!(
            "0+1".parse::<EcParams>().unwrap_err().to_string(),
            "erasure code 0+1: K must be 1..=16 and M 0..=4"
        );
        assert!("17+1".parse::<EcParams>().is_err());
        assert!("4+5".parse::<EcParams>().is_err());
    }

    #[test]
    fn defaults_survive_what_the_design_note_says() {
        for dirs in 1..=20u8 {
            let p = EcParams::default_for(dirs);
            p.check_dirs(dirs.into()).unwrap();
            assert!(p.parity >= 1, "{dirs} dirs, {p}: no protection");
        }
        assert_eq!(EcParams::default_for(1).to_string(), "4+1");
        assert_eq!(EcParams::default_for(4).to_string(), "2+2");
        assert_eq!(EcParams::default_for(16).to_string(), "14+2");
        assert_eq!(EcParams::default_for(40).to_string(), "14+2");
    }

    #[test]
    fn too_few_dirs_for_the_code_is_refused_with_the_numbers() {
        let err = EcParams::new(4, 1).unwrap().check_dirs(4).unwrap_err();
        assert_eq!(
            err.to_string(),
            "erasure code 4+1 over 4 data dirs: one dir would hold 2 blocks of a stripe, more \
             than the 1 a stripe can lose; use more dirs or more parity (at most 3+1 fits 4 dirs)"
        );
        EcParams::new(3, 1).unwrap().check_dirs(4).unwrap();
        EcParams::new(4, 2).unwrap().check_dirs(4).unwrap();
        EcParams::new(8, 2).unwrap().check_dirs(1).unwrap();
        assert!(EcParams::new(2, 1).unwrap().check_dirs(65).is_err());
    }

    #[test]
    fn one_dir_keeps_the_groups_in_order_as_todays_object_file() {
        let g = StripeGeometry::new(EcParams::new(4, 1).unwrap(), 1, 0xab, 10 * BLOCK_BYTES + 5);
        for i in 0..g.groups() {
            let at = g.data_block_at(GroupIndex(i));
            assert_eq!(
                at,
                BlockAt {
                    dir: DirIndex(0),
                    offset: ByteOffset(i * BLOCK_BYTES)
                }
            );
        }
        assert_eq!(g.data_file_len(DirIndex(0)), 10 * BLOCK_BYTES + 5);
        assert_eq!(g.stripes(), 3);
        assert_eq!(g.parity_file_len(DirIndex(0)), 3 * BLOCK_BYTES);
        assert_eq!(
            g.parity_block_at(StripeIndex(2), 0).offset,
            ByteOffset(2 * BLOCK_BYTES)
        );
        assert_eq!(g.groups_of(StripeIndex(2)), 8..11);
    }

    fn stripe_of_bytes(len: u64, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn a_short_last_stripe_encodes_as_zeros_and_rebuilds_to_its_true_lengths() {
        let code = StripeCode::new(EcParams::new(4, 2).unwrap());
        let data = stripe_of_bytes(BLOCK_BYTES + 100, 7);
        let blocks: Vec<&[u8]> = data.chunks(BLOCK_BYTES as usize).collect();
        let mut p0 = vec![1u8; BLOCK_BYTES as usize];
        let mut p1 = vec![1u8; BLOCK_BYTES as usize];
        code.encode(&blocks, &mut [&mut p0, &mut p1]).unwrap();
        // The same stripe spelled out with zeros gives the same parity.
        let mut z0 = vec![0u8; BLOCK_BYTES as usize];
        let mut z1 = vec![0u8; BLOCK_BYTES as usize];
        let mut last = data[BLOCK_BYTES as usize..].to_vec();
        last.resize(BLOCK_BYTES as usize, 0);
        let zeros = vec![0u8; BLOCK_BYTES as usize];
        let spelled: Vec<&[u8]> = vec![blocks[0], &last, &zeros, &zeros];
        code.encode(&spelled, &mut [&mut z0, &mut z1]).unwrap();
        assert_eq!((p0.clone(), p1.clone()), (z0, z1));

        let lens = [BLOCK_BYTES as usize, 100, 0, 0];
        let mut stripe: Vec<Option<Vec<u8>>> =
            vec![None, None, Some(vec![]), Some(vec![]), Some(p0), Some(p1)];
        code.rebuild(&mut stripe, &lens).unwrap();
        assert_eq!(stripe[0].as_deref(), Some(blocks[0]));
        assert_eq!(stripe[1].as_deref(), Some(blocks[1]));
    }

    #[test]
    fn more_missing_blocks_than_parity_is_a_clean_error() {
        let code = StripeCode::new(EcParams::new(2, 1).unwrap());
        let mut stripe = vec![None, None, Some(vec![0u8; BLOCK_BYTES as usize])];
        let err = code
            .rebuild(&mut stripe, &[BLOCK_BYTES as usize; 2])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "stripe needs 2 good blocks to rebuild, has 1"
        );
        let err = code.rebuild(&mut stripe[..2], &[1, 1]).unwrap_err();
        assert_eq!(err.to_string(), "stripe given 2 blocks, the code 2+1 has 3");
        let data = [&[1u8; 10][..]];
        let mut short = [0u8; 10];
        let err = code.encode(&data, &mut [&mut short[..]]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "parity buffer of 10 bytes, not one block (65536)"
        );
    }

    proptest! {
        /// Every block of every object has exactly one place: no two blocks of an
        /// object share a dir and an offset, each file's blocks are packed from 0, and
        /// a dir never holds more blocks of a stripe than the check allows.
        #[test]
        fn every_block_has_one_place_and_files_are_dense(
            k in 1u8..=8, m in 0u8..=3, dirs in 1u8..=10, rot: u8, len in 0u64..40 * BLOCK_BYTES,
        ) {
            let params = EcParams::new(k, m).unwrap();
            let g = StripeGeometry::new(params, dirs, rot, len);
            let mut places = std::collections::HashSet::new();
            let mut data_ends = vec![0u64; dirs.into()];
            for i in 0..g.groups() {
                let at = g.data_block_at(GroupIndex(i));
                prop_assert!(at.dir.0 < dirs);
                prop_assert!(places.insert(("d", at.dir, at.offset.0)));
                let end = &mut data_ends[usize::from(at.dir.0)];
                *end = (*end).max(at.offset.0 + g.group_len(GroupIndex(i)));
            }
            for d in 0..dirs {
                prop_assert_eq!(g.data_file_len(DirIndex(d)), data_ends[usize::from(d)]);
            }
            let mut parity_ends = vec![0u64; dirs.into()];
            for s in 0..g.stripes() {
                let mut per_dir = vec![0u8; dirs.into()];
                for i in g.groups_of(StripeIndex(s)) {
                    per_dir[usize::from(g.data_block_at(GroupIndex(i)).dir.0)] += 1;
                }
                for p in 0..m {
                    let at = g.parity_block_at(StripeIndex(s), p);
                    prop_assert!(places.insert(("p", at.dir, at.offset.0)));
                    per_dir[usize::from(at.dir.0)] += 1;
                    let end = &mut parity_ends[usize::from(at.dir.0)];
                    *end = (*end).max(at.offset.0 + BLOCK_BYTES);
                }
                if dirs > 1 && params.check_dirs(dirs.into()).is_ok() && !params.is_off() {
                    prop_assert!(per_dir.iter().all(|n| *n <= m));
                }
            }
            for d in 0..dirs {
                prop_assert_eq!(g.parity_file_len(DirIndex(d)), parity_ends[usize::from(d)]);
            }
        }

        /// Any m blocks of a stripe lost (data or parity) are rebuilt byte for byte.
        #[test]
        fn any_m_lost_blocks_are_rebuilt(
            k in 1u8..=6, m in 1u8..=3, groups in 1u64..=6, tail in 1u64..=BLOCK_BYTES,
            lost_seed: u64, seed: u8,
        ) {
            let params = EcParams::new(k, m).unwrap();
            let groups = groups.min(u64::from(k));
            let len = (groups - 1) * BLOCK_BYTES + tail;
            let data = stripe_of_bytes(len, seed);
            let code = StripeCode::new(params);
            let blocks: Vec<&[u8]> = data.chunks(BLOCK_BYTES as usize).collect();
            let mut parity = vec![vec![0u8; BLOCK_BYTES as usize]; m.into()];
            let mut views: Vec<&mut [u8]> = parity.iter_mut().map(|p| &mut p[..]).collect();
            code.encode(&blocks, &mut views).unwrap();

            let mut lens = vec![0usize; k.into()];
            let mut stripe: Vec<Option<Vec<u8>>> = Vec::new();
            for (i, len) in lens.iter_mut().enumerate() {
                let block = blocks.get(i).copied().unwrap_or(&[]);
                *len = block.len();
                stripe.push(Some(block.to_vec()));
            }
            stripe.extend(parity.iter().cloned().map(Some));
            let width = stripe.len();
            let want = stripe.clone();
            let mut x = lost_seed;
            for _ in 0..m {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                stripe[(x >> 33) as usize % width] = None;
            }
            code.rebuild(&mut stripe, &lens).unwrap();
            prop_assert_eq!(stripe, want);
        }
    }
}
