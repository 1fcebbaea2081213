//! Bao: BLAKE3 verified streaming in the wire format of the `bao` crate and `bao-tree` —
//! what ron sends to a client that asks for `application/x-bao`, and the decoder its
//! own clients check such an answer with (and an edge checks an origin's outboard with).
//!
//! # The format
//! BLAKE3 hashes 1 KiB chunks into a left-balanced binary tree. A bao answer is an
//! 8-byte little-endian object length, then the tree in pre-order: each node the walk
//! visits is either a *parent*, sent as its two children's chaining values (64 bytes),
//! or a *leaf*, sent as its bytes. The walk visits the nodes that overlap the *query*
//! (chunks `first..end`). A node wholly inside the query with at most 2^N chunks is a
//! leaf, N being the chunk-group log ([`ChunkGroupLog`]: bao-tree's block size, 0 for
//! the `bao` crate's own format); a node only partly inside is split down to single
//! chunks. So a slice costs the same at every N but for the subtrees it covers whole: a
//! whole encoding has one parent per 2^N KiB (less one), and an *outboard* is the same
//! walk with every leaf's bytes left out.
//!
//! # Where the chaining values come from
//! ron keeps one chaining value (CV) per 64 KiB group ([`ChunkTree`]). Every node of 64
//! chunks or more is a group or made of whole groups, so its CV is a lookup. Nodes
//! inside a group are hashed from the group's bytes as it is encoded, and the group's
//! CV is recomputed from them and compared with the tree's: the bytes are checked again
//! right before they are sent. Only a leaf that is a whole group the store has just
//! verified goes out without another hash (N = 6: the cost of a plain GET).

use blake3::hazmat::HasherExt;
use blake3::Hasher;

use crate::address::Address;
use crate::error::Error;
use crate::proof::{parents_before, GroupRange, PARENT_LEN_BYTES};
use crate::tree::{
    group_count, left_subtree_groups, merge_cvs, split_parent, ChunkTree, GroupIndex, CV_LEN_BYTES,
};

/// Bytes in one BLAKE3 chunk, the unit of a bao query.
pub const CHUNK_LEN_BYTES: u64 = 1024;
/// Bytes of the length header every bao answer starts with.
pub const LENGTH_HEADER_BYTES: usize = 8;
/// Chunks in one of ron's 64 KiB verification groups.
const GROUP_CHUNKS: u64 = crate::tree::GROUP_LEN_BYTES / CHUNK_LEN_BYTES;

/// log2 of the chunks in a bao leaf (bao-tree's block size): 0 is the `bao` crate's
/// 1 KiB chunks, 4 iroh-blobs' 16 KiB groups, 6 ron's own 64 KiB groups, the largest
/// served (a larger leaf would only make slices coarser).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkGroupLog(u8);

impl ChunkGroupLog {
    pub const MAX: u8 = 6;
    /// The `bao` crate's format (1 KiB leaves).
    pub const BAO: ChunkGroupLog = ChunkGroupLog(0);
    /// ron's verification group (64 KiB leaves): parents are lookups, nothing is rehashed.
    pub const GROUP: ChunkGroupLog = ChunkGroupLog(6);

    pub const fn new(log: u8) -> Option<ChunkGroupLog> {
        if log <= Self::MAX {
            Some(ChunkGroupLog(log))
        } else {
            None
        }
    }

    pub const fn get(self) -> u8 {
        self.0
    }

    const fn leaf_chunks(self) -> u64 {
        1 << self.0
    }
}

/// Chunks in an object of `object_len` bytes (an empty object is one empty chunk).
pub const fn chunk_count(object_len: u64) -> u64 {
    if object_len == 0 {
        1
    } else {
        object_len.div_ceil(CHUNK_LEN_BYTES)
    }
}

/// Chunks `first..end` of an object: what a bao query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    pub first: u64,
    pub end: u64,
}

impl ChunkRange {
    /// The chunks holding bytes `first..=last`.
    pub const fn of_bytes(first: u64, last: u64) -> ChunkRange {
        ChunkRange {
            first: first / CHUNK_LEN_BYTES,
            end: last / CHUNK_LEN_BYTES + 1,
        }
    }

    const fn covers(&self, lo: u64, hi: u64) -> bool {
        self.first <= lo && hi <= self.end
    }

    const fn overlaps(&self, lo: u64, hi: u64) -> bool {
        lo < self.end && self.first < hi
    }
}

/// Largest power of two strictly below `n` (n ≥ 2): the left subtree's size, in chunks.
fn left_subtree_len(n: u64) -> u64 {
    left_subtree_groups(n as usize) as u64
}

/// The CV of the subtree of chunks starting at `start_chunk` holding `data` (the root
/// hash when `is_root`).
fn subtree_cv(start_chunk: u64, data: &[u8], is_root: bool) -> [u8; CV_LEN_BYTES] {
    if is_root {
        return *blake3::hash(data).as_bytes();
    }
    let mut hasher = Hasher::new();
    hasher.set_input_offset(start_chunk * CHUNK_LEN_BYTES);
    hasher.update(data);
    hasher.finalize_non_root()
}

/// How a group's bytes reach [`BaoShape::encode_group`].
#[derive(Debug, Clone, Copy)]
pub enum GroupInput<'a> {
    /// Checked against the object's tree by the store just now.
    Verified(&'a [u8]),
    /// Not checked yet: every byte is hashed before any is encoded.
    Unverified(&'a [u8]),
    /// None needed: an outboard whose leaves are whole groups (see [`BaoShape::groups`]).
    Absent,
}

/// What follows the bytes [`BaoShape::encode_group`] appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupTail {
    Nothing,
    /// The group's own bytes, as they are: the caller sends them without a copy.
    WholeGroup,
}

/// One bao answer: an object's length, the chunk-group log, the query, and whether the
/// leaves' bytes are in it (an outboard has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaoShape {
    object_len: u64,
    cgl: ChunkGroupLog,
    query: ChunkRange,
    with_data: bool,
}

impl BaoShape {
    /// The whole encoding (the `bao` crate's combined encoding at log 0).
    pub fn encoding(object_len: u64, cgl: ChunkGroupLog) -> BaoShape {
        BaoShape {
            object_len,
            cgl,
            query: ChunkRange {
                first: 0,
                end: chunk_count(object_len),
            },
            with_data: true,
        }
    }

    /// The slice that proves bytes `first..=last` (`last` < `object_len`).
    pub fn slice(object_len: u64, cgl: ChunkGroupLog, first: u64, last: u64) -> BaoShape {
        debug_assert!(
            first <= last && last < object_len,
            "a slice inside the object"
        );
        BaoShape {
            query: ChunkRange::of_bytes(first, last),
            ..BaoShape::encoding(object_len, cgl)
        }
    }

    /// The pre-order outboard: every parent of the whole encoding, no leaf bytes.
    pub fn outboard(object_len: u64, cgl: ChunkGroupLog) -> BaoShape {
        BaoShape {
            with_data: false,
            ..BaoShape::encoding(object_len, cgl)
        }
    }

    pub fn object_len(&self) -> u64 {
        self.object_len
    }

    pub fn chunk_group_log(&self) -> ChunkGroupLog {
        self.cgl
    }

    pub fn query(&self) -> ChunkRange {
        self.query
    }

    /// The answer's first bytes.
    pub fn length_header(&self) -> [u8; LENGTH_HEADER_BYTES] {
        self.object_len.to_le_bytes()
    }

    /// Bytes of the whole answer, header included (a Content-Length before any hashing).
    pub fn encoded_len(&self) -> u64 {
        LENGTH_HEADER_BYTES as u64 + self.node_len(0, chunk_count(self.object_len))
    }

    /// Bytes the walk emits for the node of chunks `lo..hi`.
    fn node_len(&self, lo: u64, hi: u64) -> u64 {
        if !self.query.overlaps(lo, hi) {
            return 0;
        }
        let chunks = hi - lo;
        let data = if self.with_data {
            self.byte_len(lo, hi)
        } else {
            0
        };
        if self.is_leaf(lo, hi) {
            return data;
        }
        if self.query.covers(lo, hi) {
            let leaves = chunks.div_ceil(self.cgl.leaf_chunks());
            return (leaves - 1) * PARENT_LEN_BYTES as u64 + data;
        }
        let mid = lo + left_subtree_len(chunks);
        PARENT_LEN_BYTES as u64 + self.node_len(lo, mid) + self.node_len(mid, hi)
    }

    /// Whether the walk sends the node of chunks `lo..hi` (which overlaps the query) as
    /// bytes rather than as a parent.
    fn is_leaf(&self, lo: u64, hi: u64) -> bool {
        hi - lo == 1 || (self.query.covers(lo, hi) && hi - lo <= self.cgl.leaf_chunks())
    }

    /// Bytes of the object in chunks `lo..hi` (a lying length near `u64::MAX` saturates).
    fn byte_len(&self, lo: u64, hi: u64) -> u64 {
        hi.saturating_mul(CHUNK_LEN_BYTES).min(self.object_len) - lo * CHUNK_LEN_BYTES
    }

    /// The first and last 64 KiB group whose bytes the answer needs; `None` when it
    /// needs none (an outboard at log 6: every parent is a lookup in the tree).
    pub fn groups(&self) -> Option<(GroupIndex, GroupIndex)> {
        if !self.with_data && self.cgl == ChunkGroupLog::GROUP {
            return None;
        }
        Some((
            GroupIndex(self.query.first / GROUP_CHUNKS),
            GroupIndex((self.query.end - 1) / GROUP_CHUNKS),
        ))
    }

    /// Appends to `out` the part of the answer that group `group` starts: the parents
    /// above it that it is the first to need, then its own subtree (parents and leaf
    /// bytes). Groups must come in order, each whole, from `first` to `last` of
    /// [`Self::groups`] (every group for an outboard at log 6, with [`GroupInput::Absent`]).
    /// Fails, having appended nothing the caller may send, when the bytes do not hash to
    /// the tree's CV for the group.
    pub fn encode_group(
        &self,
        tree: &ChunkTree,
        group: GroupIndex,
        bytes: GroupInput<'_>,
        out: &mut Vec<u8>,
    ) -> Result<GroupTail, Error> {
        debug_assert_eq!(tree.object_len(), self.object_len, "the answer's own tree");
        let start = out.len();
        // Every node above a group is made of whole groups: its CV is a lookup, and the
        // parents come in the order the OAP/1 proofs send them.
        let groups = GroupRange {
            first: GroupIndex(self.query.first / GROUP_CHUNKS),
            last: GroupIndex((self.query.end - 1) / GROUP_CHUNKS),
        };
        parents_before(tree, groups, group, out);
        let first_chunk = group.0 * GROUP_CHUNKS;
        let end_chunk = (first_chunk + GROUP_CHUNKS).min(chunk_count(self.object_len));
        let single = tree.group_count() == 1;
        let expected = match tree.expected_cv(group) {
            Some(cv) => cv.0,
            None => return Err(mismatch(group, tree, 0)),
        };
        let group_is_leaf = self.is_leaf(first_chunk, end_chunk);
        let data = match bytes {
            GroupInput::Absent if group_is_leaf && !self.with_data => {
                return Ok(GroupTail::Nothing)
            }
            GroupInput::Absent => return Err(mismatch(group, tree, 0)),
            GroupInput::Verified(data) if group_is_leaf && self.with_data => {
                check_len(tree, group, data)?;
                return Ok(GroupTail::WholeGroup);
            }
            GroupInput::Verified(data) | GroupInput::Unverified(data) => data,
        };
        check_len(tree, group, data)?;
        let got = self.encode_node(first_chunk, data, single, out);
        if got != expected {
            out.truncate(start);
            return Err(mismatch(group, tree, data.len()));
        }
        Ok(GroupTail::Nothing)
    }

    /// Appends the walk of the node starting at `start_chunk` that holds `data` (inside
    /// one group) and returns its CV — every byte of `data` hashed, sent or not.
    fn encode_node(
        &self,
        start_chunk: u64,
        data: &[u8],
        is_root: bool,
        out: &mut Vec<u8>,
    ) -> [u8; CV_LEN_BYTES] {
        let end_chunk = start_chunk + chunk_count(data.len() as u64);
        let touched = self.query.overlaps(start_chunk, end_chunk);
        if !touched || self.is_leaf(start_chunk, end_chunk) {
            if touched && self.with_data {
                out.extend_from_slice(data);
            }
            return subtree_cv(start_chunk, data, is_root);
        }
        let left_chunks = left_subtree_len(end_chunk - start_chunk);
        let (left_data, right_data) = data.split_at((left_chunks * CHUNK_LEN_BYTES) as usize);
        let at = out.len();
        out.extend_from_slice(&[0; PARENT_LEN_BYTES]);
        let left = self.encode_node(start_chunk, left_data, false, out);
        let right = self.encode_node(start_chunk + left_chunks, right_data, false, out);
        out[at..at + CV_LEN_BYTES].copy_from_slice(&left);
        out[at + CV_LEN_BYTES..at + PARENT_LEN_BYTES].copy_from_slice(&right);
        merge_cvs(&left, &right, is_root)
    }
}

fn mismatch(group: GroupIndex, tree: &ChunkTree, got_len: usize) -> Error {
    Error::GroupMismatch {
        group: group.0,
        group_count: tree.group_count(),
        got_len,
    }
}

fn check_len(tree: &ChunkTree, group: GroupIndex, data: &[u8]) -> Result<(), Error> {
    let expected_len = crate::tree::group_len(tree.object_len(), group).unwrap_or(0);
    if data.len() as u64 != expected_len {
        return Err(Error::GroupLength {
            group: group.0,
            object_len: tree.object_len(),
            expected_len,
            got_len: data.len(),
        });
    }
    Ok(())
}

/// Which bytes a client asked a bao answer to prove, as its Range said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceAsk {
    Whole,
    /// `first-` or `first-last`.
    From {
        first: u64,
        last: Option<u64>,
    },
    /// The last `len` bytes.
    Suffix(u64),
}

impl SliceAsk {
    /// The bytes `first..=last` asked of an object of `object_len` bytes (clamped as a
    /// server clamps a range); `None` when none of them exists.
    pub fn resolve(self, object_len: u64) -> Option<(u64, u64)> {
        let end = object_len.checked_sub(1)?;
        match self {
            SliceAsk::Whole => Some((0, end)),
            SliceAsk::From { first, last } => {
                (first <= end).then(|| (first, last.map_or(end, |l| l.min(end))))
            }
            SliceAsk::Suffix(0) => None,
            SliceAsk::Suffix(len) => Some((object_len.saturating_sub(len), end)),
        }
    }
}

/// A node the decoder expects next: chunks `lo..hi` and their chaining value.
#[derive(Debug, Clone, Copy)]
struct Pending {
    lo: u64,
    hi: u64,
    cv: [u8; CV_LEN_BYTES],
    is_root: bool,
}

/// One step of [`SliceDecoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// The length header (believed once the bytes below it check out).
    Length(u64),
    /// A parent node, checked against the tree above it.
    Parent,
    /// Leaf bytes, checked: they are the object's bytes from `offset` on.
    Data { offset: u64 },
}

/// Checks a bao answer (an encoding or a slice, any chunk-group log) against the address
/// asked for, as it arrives: the caller reads [`Self::wanted`] bytes, hands them to
/// [`Self::step`], and may use leaf bytes only once `step` returned them as
/// [`Decoded::Data`]. Memory: one stack entry per tree level and side.
#[derive(Debug)]
pub struct SliceDecoder {
    root: Address,
    cgl: ChunkGroupLog,
    ask: SliceAsk,
    /// Known once the length header is read.
    shape: Option<BaoShape>,
    stack: Vec<Pending>,
}

impl SliceDecoder {
    pub fn new(root: Address, cgl: ChunkGroupLog, ask: SliceAsk) -> SliceDecoder {
        SliceDecoder {
            root,
            cgl,
            ask,
            shape: None,
            stack: Vec::new(),
        }
    }

    /// The answer's shape, once its header is read.
    pub fn shape(&self) -> Option<&BaoShape> {
        self.shape.as_ref()
    }

    /// The bytes the next [`Self::step`] takes; `None` once the answer is whole.
    pub fn wanted(&self) -> Option<usize> {
        let Some(shape) = &self.shape else {
            return Some(LENGTH_HEADER_BYTES);
        };
        let node = self.stack.last()?;
        Some(if shape.is_leaf(node.lo, node.hi) {
            shape.byte_len(node.lo, node.hi) as usize
        } else {
            PARENT_LEN_BYTES
        })
    }

    /// Checks the next piece: exactly [`Self::wanted`] bytes.
    pub fn step(&mut self, input: &[u8]) -> Result<Decoded, Error> {
        let Some(shape) = self.shape else {
            return self.header(input);
        };
        let fail = |chunk: u64, reason: &'static str| Error::BaoMismatch { chunk, reason };
        let node = self
            .stack
            .pop()
            .ok_or(fail(0, "bytes after the end of the answer"))?;
        if shape.is_leaf(node.lo, node.hi) {
            if input.len() as u64 != shape.byte_len(node.lo, node.hi) {
                return Err(fail(node.lo, "a leaf of the wrong length"));
            }
            if subtree_cv(node.lo, input, node.is_root) != node.cv {
                return Err(fail(node.lo, "leaf bytes do not match the tree above them"));
            }
            return Ok(Decoded::Data {
                offset: node.lo * CHUNK_LEN_BYTES,
            });
        }
        let pair: &[u8; PARENT_LEN_BYTES] = input
            .try_into()
            .map_err(|_| fail(node.lo, "a parent node is not 64 bytes"))?;
        let (left, right) = split_parent(pair);
        if merge_cvs(&left, &right, node.is_root) != node.cv {
            return Err(fail(
                node.lo,
                "parent node does not match the tree above it",
            ));
        }
        let mid = node.lo + left_subtree_len(node.hi - node.lo);
        for (lo, hi, cv) in [(mid, node.hi, right), (node.lo, mid, left)] {
            if shape.query.overlaps(lo, hi) {
                self.stack.push(Pending {
                    lo,
                    hi,
                    cv,
                    is_root: false,
                });
            }
        }
        Ok(Decoded::Parent)
    }

    fn header(&mut self, input: &[u8]) -> Result<Decoded, Error> {
        let header: [u8; LENGTH_HEADER_BYTES] =
            input.try_into().map_err(|_| Error::BaoMismatch {
                chunk: 0,
                reason: "the length header is not 8 bytes",
            })?;
        let object_len = u64::from_le_bytes(header);
        let shape = match (self.ask, self.ask.resolve(object_len)) {
            (SliceAsk::Whole, _) => BaoShape::encoding(object_len, self.cgl),
            (_, Some((first, last))) => BaoShape::slice(object_len, self.cgl, first, last),
            (_, None) => {
                return Err(Error::BaoMismatch {
                    chunk: 0,
                    reason: "the bytes asked for are past the object's end",
                })
            }
        };
        self.shape = Some(shape);
        self.stack.push(Pending {
            lo: 0,
            hi: chunk_count(object_len),
            cv: *self.root.as_bytes(),
            is_root: true,
        });
        Ok(Decoded::Length(object_len))
    }
}

/// Whether `outboard_len` bytes is the length of an outboard (any log from 0 to 6) of an
/// object of `object_len` bytes: checked on an origin's answer before it is read.
pub fn is_outboard_len(object_len: u64, outboard_len: u64) -> bool {
    (0..=ChunkGroupLog::MAX)
        .filter_map(ChunkGroupLog::new)
        .any(|cgl| BaoShape::outboard(object_len, cgl).encoded_len() == outboard_len)
}

/// Reads a pre-order outboard (8-byte length, then parents; any chunk-group log up to
/// 6, told apart by its length) of the object `root` of `object_len` bytes, checks every
/// parent on the way down from the root, and returns the CV of each 64 KiB group — the
/// stored encoding of a [`ChunkTree`], so each group can then be checked as it arrives.
/// Empty for an object of one group (its CV is the root).
pub fn outboard_group_cvs(
    root: Address,
    object_len: u64,
    outboard: &[u8],
) -> Result<Vec<u8>, Error> {
    let fail = |reason: &'static str| Error::BaoMismatch { chunk: 0, reason };
    let (header, parents) = outboard
        .split_at_checked(LENGTH_HEADER_BYTES)
        .ok_or(fail("an outboard shorter than its length header"))?;
    if header != object_len.to_le_bytes() {
        return Err(fail("the outboard is for an object of another length"));
    }
    let shape = (0..=ChunkGroupLog::MAX)
        .filter_map(ChunkGroupLog::new)
        .map(|cgl| BaoShape::outboard(object_len, cgl))
        .find(|shape| shape.encoded_len() == outboard.len() as u64)
        .ok_or(fail(
            "the outboard's length fits no chunk-group log from 0 to 6",
        ))?;
    let mut walk = OutboardWalk {
        shape,
        parents,
        groups: Vec::with_capacity(ChunkTree::stored_len(object_len) as usize),
    };
    if object_len == 0 && root != Address::of(b"") {
        return Err(fail("the outboard says the object is empty, and it is not"));
    }
    if group_count(object_len) == 1 {
        return Ok(Vec::new());
    }
    walk.node(0, chunk_count(object_len), *root.as_bytes(), true)?;
    Ok(walk.groups)
}

/// The walk of [`outboard_group_cvs`]: parents still to read, group CVs found so far.
struct OutboardWalk<'a> {
    shape: BaoShape,
    parents: &'a [u8],
    groups: Vec<u8>,
}

impl OutboardWalk<'_> {
    fn node(
        &mut self,
        lo: u64,
        hi: u64,
        cv: [u8; CV_LEN_BYTES],
        is_root: bool,
    ) -> Result<(), Error> {
        let fail = |reason: &'static str| Error::BaoMismatch { chunk: lo, reason };
        if lo.is_multiple_of(GROUP_CHUNKS) && hi - lo <= GROUP_CHUNKS {
            // A group: what is below it is checked against its bytes, not read here.
            self.groups.extend_from_slice(&cv);
            let below = self.shape.node_len(lo, hi) as usize;
            self.parents = self
                .parents
                .get(below..)
                .ok_or(fail("the outboard ends early"))?;
            return Ok(());
        }
        let (pair, rest) = self
            .parents
            .split_first_chunk::<PARENT_LEN_BYTES>()
            .ok_or(fail("the outboard ends early"))?;
        self.parents = rest;
        let (left, right) = split_parent(pair);
        if merge_cvs(&left, &right, is_root) != cv {
            return Err(fail("outboard parent does not match the tree above it"));
        }
        let mid = lo + left_subtree_len(hi - lo);
        self.node(lo, mid, left, false)?;
        self.node(mid, hi, right, false)
    }
}

#[cfg(test)]
mod tests;
