//! The 64 KiB chunk tree: group chaining values bound to the object's BLAKE3 root.
//!
//! BLAKE3 hashes 1 KiB chunks into a left-balanced binary tree. Every aligned run of 64
//! chunks (a 64 KiB *group*) is a complete subtree of that tree, and so is the shorter
//! last group, so the object's root is a function of the groups' chaining values (CVs)
//! alone. One streaming pass ([`TreeHasher`]) computes every group CV and merges them
//! into the root — the same work as `blake3::hash` plus one parent compression per group.
//!
//! Reading a range then needs only the groups it touches: each group is rehashed and
//! compared with its CV ([`ChunkTree::verify_group`]), and the CV list itself is checked
//! against the root once when it is loaded ([`ChunkTree::from_stored`]).
//!
//! An object of at most 64 KiB is a single group whose CV *is* the root (it is finalised
//! with the ROOT flag), so it stores no tree at all.
//!
//! # Stored encoding
//! For an object of `len` bytes there are `n = max(1, ceil(len / 65536))` groups.
//! If `n == 1` the encoding is empty. Otherwise it is `n × 32` bytes: the non-root CV of
//! group 0, 1, …, n − 1, in order. The root is not stored beside it (it is the object's
//! address, the index key). Any parent node of BLAKE3's tree above the groups can be
//! recomputed from this list, so it is enough to derive bao-style proofs later.

use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, HasherExt, Mode};
use blake3::Hasher;

use crate::address::Address;
use crate::error::Error;

/// Bytes in one verification group (64 BLAKE3 chunks).
pub const GROUP_LEN_BYTES: u64 = 64 * 1024;
/// Bytes in one chaining value.
pub const CV_LEN_BYTES: usize = 32;

/// Index of a 64 KiB group within an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupIndex(pub u64);

impl GroupIndex {
    /// The group holding byte `offset`.
    pub const fn containing(offset: u64) -> GroupIndex {
        GroupIndex(offset / GROUP_LEN_BYTES)
    }

    /// Offset of the group's first byte within the object.
    pub const fn start_offset(self) -> u64 {
        self.0 * GROUP_LEN_BYTES
    }
}

/// The non-root BLAKE3 chaining value of a subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainingValue(pub [u8; CV_LEN_BYTES]);

/// Groups in an object of `object_len` bytes (an empty object is one empty group).
pub const fn group_count(object_len: u64) -> u64 {
    if object_len == 0 {
        1
    } else {
        object_len.div_ceil(GROUP_LEN_BYTES)
    }
}

/// Bytes in group `group` of an object of `object_len` bytes, if that group exists.
pub const fn group_len(object_len: u64, group: GroupIndex) -> Option<u64> {
    if group.0 >= group_count(object_len) {
        return None;
    }
    let start = group.start_offset();
    let end = if object_len - start < GROUP_LEN_BYTES {
        object_len
    } else {
        start + GROUP_LEN_BYTES
    };
    Some(end - start)
}

/// The non-root CV of `data` taken as group `group` of a multi-group object.
pub fn group_cv(group: GroupIndex, data: &[u8]) -> ChainingValue {
    let mut hasher = Hasher::new();
    hasher.set_input_offset(group.start_offset());
    hasher.update(data);
    ChainingValue(hasher.finalize_non_root())
}

/// Largest power of two strictly below `n` (n ≥ 2): the size of BLAKE3's left subtree,
/// counted in groups (groups are a power-of-two number of chunks).
pub(crate) fn left_subtree_groups(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The CV of a parent whose children have CVs `left` and `right` (the root hash's bytes
/// when `is_root`).
pub(crate) fn merge_cvs(
    left: &[u8; CV_LEN_BYTES],
    right: &[u8; CV_LEN_BYTES],
    is_root: bool,
) -> [u8; CV_LEN_BYTES] {
    if is_root {
        *merge_subtrees_root(left, right, Mode::Hash).as_bytes()
    } else {
        merge_subtrees_non_root(left, right, Mode::Hash)
    }
}

/// A parent node as sent (64 bytes): its left and right children's CVs.
pub(crate) fn split_parent(
    pair: &[u8; 2 * CV_LEN_BYTES],
) -> ([u8; CV_LEN_BYTES], [u8; CV_LEN_BYTES]) {
    let mut left = [0; CV_LEN_BYTES];
    let mut right = [0; CV_LEN_BYTES];
    left.copy_from_slice(&pair[..CV_LEN_BYTES]);
    right.copy_from_slice(&pair[CV_LEN_BYTES..]);
    (left, right)
}

/// Builds the inner nodes of the subtree of groups `lo..hi` (at least two) into `inner`
/// (see [`ChunkTree`]) and returns its two children's CVs. One merge per inner node.
fn build_inner(
    cvs: &[ChainingValue],
    lo: usize,
    hi: usize,
    inner: &mut [ChainingValue],
) -> (ChainingValue, ChainingValue) {
    let mid = lo + left_subtree_groups(hi - lo);
    let subtree = |lo: usize, hi: usize, inner: &mut [ChainingValue]| {
        if hi - lo == 1 {
            return cvs[lo];
        }
        let (left, right) = build_inner(cvs, lo, hi, inner);
        let cv = ChainingValue(merge_subtrees_non_root(&left.0, &right.0, Mode::Hash));
        inner[lo + left_subtree_groups(hi - lo) - 1] = cv;
        cv
    };
    let left = subtree(lo, mid, inner);
    let right = subtree(mid, hi, inner);
    (left, right)
}

/// The inner nodes of the tree over `cvs` (at least two) and its root.
fn inner_nodes_and_root(cvs: &[ChainingValue]) -> (Vec<ChainingValue>, Address) {
    assert!(cvs.len() >= 2, "a single group's CV is already the root");
    let mut inner = vec![ChainingValue([0; CV_LEN_BYTES]); cvs.len() - 1];
    let (left, right) = build_inner(cvs, 0, cvs.len(), &mut inner);
    let root = merge_subtrees_root(&left.0, &right.0, Mode::Hash);
    (inner, Address::from_bytes(*root.as_bytes()))
}

/// An object's verified chunk tree: its length, root, group CVs and inner nodes.
///
/// Every subtree of two or more groups has a distinct split point (the first group of
/// its right child), so its CV is kept in `inner[split - 1]`: a proof then costs one
/// lookup per level, never a merge. The root's slot holds zeros (the root is the
/// address, merged with the ROOT flag). Inner nodes are rebuilt at load (the same
/// merges that check the tree against the address), never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkTree {
    object_len: u64,
    root: Address,
    /// Empty for single-group objects: their only CV is the root.
    cvs: Vec<ChainingValue>,
    /// `cvs.len() - 1` inner nodes (none for a single group), indexed as above.
    inner: Vec<ChainingValue>,
}

impl ChunkTree {
    /// Hashes a whole in-memory object (tests and small objects; streams use [`TreeHasher`]).
    pub fn of(data: &[u8]) -> ChunkTree {
        let mut hasher = TreeHasher::new();
        hasher.update(data);
        hasher.finalize()
    }

    pub fn root(&self) -> Address {
        self.root
    }

    pub fn object_len(&self) -> u64 {
        self.object_len
    }

    pub fn group_count(&self) -> u64 {
        group_count(self.object_len)
    }

    /// The non-root CV of every group; empty for a single-group object.
    pub fn group_cvs(&self) -> &[ChainingValue] {
        &self.cvs
    }

    /// The non-root CV of the subtree of groups `lo..hi` (within a multi-group tree,
    /// not the whole of it).
    pub(crate) fn subtree_cv(&self, lo: u64, hi: u64) -> ChainingValue {
        let (lo, hi) = (lo as usize, hi as usize);
        if hi - lo == 1 {
            return self.cvs[lo];
        }
        self.inner[lo + left_subtree_groups(hi - lo) - 1]
    }

    /// Memory a loaded tree of an `object_len`-byte object holds: its group CVs and
    /// inner nodes.
    pub fn memory_bytes(object_len: u64) -> u64 {
        match group_count(object_len) {
            1 => 0,
            n => (2 * n - 1) * CV_LEN_BYTES as u64,
        }
    }

    /// Bytes of the stored encoding (see the module docs).
    pub fn stored_len(object_len: u64) -> u64 {
        match group_count(object_len) {
            1 => 0,
            n => n * CV_LEN_BYTES as u64,
        }
    }

    /// Appends the stored encoding to `out`.
    pub fn write_stored(&self, out: &mut Vec<u8>) {
        out.reserve(self.cvs.len() * CV_LEN_BYTES);
        for cv in &self.cvs {
            out.extend_from_slice(&cv.0);
        }
    }

    /// Loads a stored encoding and checks it against `root` — once per load, so later
    /// group checks can trust each CV.
    pub fn from_stored(object_len: u64, root: Address, stored: &[u8]) -> Result<ChunkTree, Error> {
        let expected = Self::stored_len(object_len);
        if stored.len() as u64 != expected {
            return Err(Error::TreeLength {
                object_len,
                expected,
                got: stored.len(),
            });
        }
        let cvs: Vec<ChainingValue> = stored
            .chunks_exact(CV_LEN_BYTES)
            .map(|c| {
                let mut cv = [0u8; CV_LEN_BYTES];
                cv.copy_from_slice(c);
                ChainingValue(cv)
            })
            .collect();
        if cvs.is_empty() {
            // One group: its bytes are checked against the root when read. An empty
            // object has none to read, and only one root: a length of 0 for another
            // address is a lie (a record rotted, an origin's outboard), never a tree.
            if object_len == 0 && root != Address::of(b"") {
                return Err(Error::TreeRootMismatch {
                    root: root.to_string(),
                });
            }
            return Ok(ChunkTree {
                object_len,
                root,
                cvs,
                inner: Vec::new(),
            });
        }
        let (inner, computed) = inner_nodes_and_root(&cvs);
        if computed != root {
            return Err(Error::TreeRootMismatch {
                root: root.to_string(),
            });
        }
        Ok(ChunkTree {
            object_len,
            root,
            cvs,
            inner,
        })
    }

    /// The CV group `group` must hash to (for one group: the root's bytes).
    pub fn expected_cv(&self, group: GroupIndex) -> Option<ChainingValue> {
        if self.cvs.is_empty() {
            return (group.0 == 0).then_some(ChainingValue(*self.root.as_bytes()));
        }
        self.cvs.get(usize::try_from(group.0).ok()?).copied()
    }

    /// Checks one whole group (the last one may be short) against the tree.
    pub fn verify_group(&self, group: GroupIndex, data: &[u8]) -> Result<(), Error> {
        let group_count = self.group_count();
        if group.0 >= group_count {
            return Err(Error::GroupOutOfRange {
                group: group.0,
                group_count,
            });
        }
        let single = self.cvs.is_empty();
        let expected = self.expected_cv(group).map_or([0; CV_LEN_BYTES], |cv| cv.0);
        check_group(self.object_len, group, data, &expected, single)
    }
}

/// Checks that `data` is group `group` of an object of `object_len` bytes whose chaining
/// value is `expected` (the root's bytes when the group is the whole object, `is_root`).
pub(crate) fn check_group(
    object_len: u64,
    group: GroupIndex,
    data: &[u8],
    expected: &[u8; CV_LEN_BYTES],
    is_root: bool,
) -> Result<(), Error> {
    let group_count = group_count(object_len);
    let expected_len = group_len(object_len, group).ok_or(Error::GroupOutOfRange {
        group: group.0,
        group_count,
    })?;
    if data.len() as u64 != expected_len {
        return Err(Error::GroupLength {
            group: group.0,
            object_len,
            expected_len,
            got_len: data.len(),
        });
    }
    let got = if is_root {
        *Address::of(data).as_bytes()
    } else {
        group_cv(group, data).0
    };
    if got != *expected {
        return Err(Error::GroupMismatch {
            group: group.0,
            group_count,
            got_len: data.len(),
        });
    }
    Ok(())
}

/// One streaming pass over an object: every group CV and the root.
///
/// Feed it in any split; big slices (≥ 8 KiB) let BLAKE3 use all SIMD lanes.
#[derive(Debug)]
pub struct TreeHasher {
    object_len: u64,
    group: Hasher,
    group_filled: u64,
    cvs: Vec<ChainingValue>,
}

impl Default for TreeHasher {
    fn default() -> Self {
        TreeHasher::new()
    }
}

impl TreeHasher {
    pub fn new() -> TreeHasher {
        TreeHasher {
            object_len: 0,
            group: Hasher::new(),
            group_filled: 0,
            cvs: Vec::new(),
        }
    }

    /// Bytes hashed so far.
    pub fn object_len(&self) -> u64 {
        self.object_len
    }

    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.group_filled == GROUP_LEN_BYTES {
                // More bytes follow, so the full group is not the whole object: close it
                // as a non-root subtree.
                self.cvs.push(ChainingValue(self.group.finalize_non_root()));
                self.group = Hasher::new();
                self.group.set_input_offset(self.object_len);
                self.group_filled = 0;
            }
            let room = (GROUP_LEN_BYTES - self.group_filled) as usize;
            let (now, rest) = data.split_at(room.min(data.len()));
            self.group.update(now);
            self.group_filled += now.len() as u64;
            self.object_len += now.len() as u64;
            data = rest;
        }
    }

    pub fn finalize(mut self) -> ChunkTree {
        if self.cvs.is_empty() {
            return ChunkTree {
                object_len: self.object_len,
                root: Address::from_bytes(*self.group.finalize().as_bytes()),
                cvs: Vec::new(),
                inner: Vec::new(),
            };
        }
        self.cvs.push(ChainingValue(self.group.finalize_non_root()));
        let (inner, root) = inner_nodes_and_root(&self.cvs);
        ChunkTree {
            object_len: self.object_len,
            root,
            cvs: self.cvs,
            inner,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A length of 0 is the empty object's alone: for another address it is refused
    /// (its one group, empty, would otherwise never be checked against anything).
    #[test]
    fn an_empty_length_is_refused_for_any_address_but_the_empty_objects() {
        assert!(ChunkTree::from_stored(0, Address::of(b""), &[]).is_ok());
        let err = ChunkTree::from_stored(0, Address::of(b"not empty"), &[]).unwrap_err();
        assert!(matches!(err, Error::TreeRootMismatch { .. }), "{err}");
        assert!(ChunkTree::from_stored(9, Address::of(b"not empty"), &[]).is_ok());
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i.wrapping_mul(31) ^ (i >> 11)) as u8)
            .collect()
    }

    fn groups(data: &[u8]) -> impl Iterator<Item = (GroupIndex, &[u8])> {
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![data]
        } else {
            data.chunks(GROUP_LEN_BYTES as usize).collect()
        };
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, c)| (GroupIndex(i as u64), c))
    }

    const SIZES: [usize; 9] = [
        0,
        1,
        1023,
        1024,
        65535,
        65536,
        65537,
        3 * 65536,
        10 * 1024 * 1024 + 123,
    ];

    #[test]
    fn root_equals_blake3_hash_and_every_group_verifies() {
        for len in SIZES {
            let data = pattern(len);
            let tree = ChunkTree::of(&data);
            assert_eq!(tree.root(), Address::of(&data), "len {len}");
            assert_eq!(tree.group_count(), group_count(len as u64));
            for (g, bytes) in groups(&data) {
                tree.verify_group(g, bytes).unwrap();
            }
            let mut stored = Vec::new();
            tree.write_stored(&mut stored);
            assert_eq!(stored.len() as u64, ChunkTree::stored_len(len as u64));
            let loaded = ChunkTree::from_stored(len as u64, tree.root(), &stored).unwrap();
            assert_eq!(loaded, tree);
        }
    }

    #[test]
    fn left_subtree_matches_blake3s_rule() {
        for n in 2..300u64 {
            let input_len = (n - 1) * GROUP_LEN_BYTES + 1;
            assert_eq!(
                left_subtree_groups(n as usize) as u64 * GROUP_LEN_BYTES,
                blake3::hazmat::left_subtree_len(input_len),
                "n {n}"
            );
        }
    }

    #[test]
    fn flipping_a_byte_fails_exactly_its_group() {
        for len in SIZES {
            if len == 0 {
                continue;
            }
            let data = pattern(len);
            let tree = ChunkTree::of(&data);
            let step = (len / 7).max(1);
            for pos in (0..len).step_by(step).chain([len - 1]) {
                let mut rotten = data.clone();
                rotten[pos] ^= 0x01;
                let bad = GroupIndex::containing(pos as u64);
                for (g, bytes) in groups(&rotten) {
                    let result = tree.verify_group(g, bytes);
                    if g == bad {
                        assert_eq!(
                            result.unwrap_err(),
                            Error::GroupMismatch {
                                group: g.0,
                                group_count: tree.group_count(),
                                got_len: bytes.len()
                            },
                            "len {len} pos {pos}"
                        );
                    } else {
                        result.unwrap();
                    }
                }
            }
        }
    }

    #[test]
    fn wrong_lengths_and_indices_are_refused() {
        let data = pattern(65537);
        let tree = ChunkTree::of(&data);
        assert_eq!(
            tree.verify_group(GroupIndex(1), &data[65536..65536])
                .unwrap_err()
                .to_string(),
            "group 1 has 0 bytes, a 65537-byte object needs 1"
        );
        assert_eq!(
            tree.verify_group(GroupIndex(2), b"x").unwrap_err(),
            Error::GroupOutOfRange {
                group: 2,
                group_count: 2
            }
        );
        // A group's bytes moved to another index do not verify there.
        let full = pattern(3 * 65536);
        let tree = ChunkTree::of(&full);
        assert!(tree.verify_group(GroupIndex(1), &full[..65536]).is_err());
    }

    /// A subtree's CV the slow way: merging its groups' CVs.
    fn merged(cvs: &[ChainingValue]) -> ChainingValue {
        if let [only] = cvs {
            return *only;
        }
        let (left, right) = cvs.split_at(left_subtree_groups(cvs.len()));
        let (l, r) = (merged(left), merged(right));
        ChainingValue(merge_subtrees_non_root(&l.0, &r.0, Mode::Hash))
    }

    #[test]
    fn every_inner_node_is_the_merge_of_its_subtree() {
        for n in [2usize, 3, 5, 8, 13, 64, 100, 257] {
            let data = pattern(n * GROUP_LEN_BYTES as usize - 7);
            let tree = ChunkTree::of(&data);
            let cvs = tree.group_cvs();
            // Every node of the left-balanced tree, top-down.
            let mut nodes = vec![(0usize, n)];
            while let Some((lo, hi)) = nodes.pop() {
                if hi - lo < 2 {
                    continue;
                }
                let mid = lo + left_subtree_groups(hi - lo);
                for (a, b) in [(lo, mid), (mid, hi)] {
                    assert_eq!(
                        tree.subtree_cv(a as u64, b as u64),
                        merged(&cvs[a..b]),
                        "n={n} subtree {a}..{b}"
                    );
                }
                nodes.extend([(lo, mid), (mid, hi)]);
            }
            let reloaded = {
                let mut stored = Vec::new();
                tree.write_stored(&mut stored);
                ChunkTree::from_stored(tree.object_len(), tree.root(), &stored).unwrap()
            };
            assert_eq!(reloaded, tree);
        }
    }

    #[test]
    fn tampered_or_truncated_tree_is_refused_at_load() {
        let data = pattern(5 * 65536 + 3);
        let tree = ChunkTree::of(&data);
        let mut stored = Vec::new();
        tree.write_stored(&mut stored);
        let mut tampered = stored.clone();
        tampered[40] ^= 0x80;
        assert_eq!(
            ChunkTree::from_stored(data.len() as u64, tree.root(), &tampered).unwrap_err(),
            Error::TreeRootMismatch {
                root: tree.root().to_string()
            }
        );
        assert_eq!(
            ChunkTree::from_stored(data.len() as u64, tree.root(), &stored[..32]).unwrap_err(),
            Error::TreeLength {
                object_len: data.len() as u64,
                expected: 6 * 32,
                got: 32
            }
        );
        assert!(ChunkTree::from_stored(1000, tree.root(), &[]).is_ok());
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_tree(
            len in 0usize..300_000,
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let data = pattern(len);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(len + 1)).collect();
            points.extend([0, len]);
            points.sort_unstable();
            let mut hasher = TreeHasher::new();
            for pair in points.windows(2) {
                hasher.update(&data[pair[0]..pair[1]]);
            }
            let tree = hasher.finalize();
            prop_assert_eq!(tree.root(), Address::of(&data));
            prop_assert_eq!(tree, ChunkTree::of(&data));
        }
    }
}
