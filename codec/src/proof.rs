//! Verified streaming: proofs that let a client check each 64 KiB group of a range
//! against the object's root (its address) before it uses a byte of it.
//!
//! BLAKE3's tree over an object's groups is left-balanced (the left subtree of `n`
//! groups holds the largest power of two below `n`). To stream groups `first..=last`,
//! the server walks that tree in pre-order, visiting only subtrees that overlap the
//! range, and sends every visited *parent* node as its two child chaining values (64
//! bytes) right before the first group below it — the bao "slice" order. The client
//! keeps a stack of expected chaining values, starting from the root: a parent's two
//! children must merge to the expected value (with the ROOT flag at the top), and a
//! group must hash to its expected value. So the first byte of a group is usable only
//! once that group and every parent above it check out against the address.
//!
//! Cost: `depth ≤ 64` parents before a group, about `groups + 2·log2(n)` parents for a
//! whole range. The server looks each parent's children up in the loaded tree's inner
//! nodes (`ChunkTree`): no hashing, one lookup per level.

use crate::address::Address;
use crate::error::Error;
use crate::tree::{
    check_group, group_count, left_subtree_groups, merge_cvs, split_parent, ChunkTree, GroupIndex,
    CV_LEN_BYTES,
};

/// Bytes of one parent node on the wire: left CV then right CV.
pub const PARENT_LEN_BYTES: usize = 2 * CV_LEN_BYTES;

/// Groups `first..=last` of an object: the unit a proof covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupRange {
    pub first: GroupIndex,
    pub last: GroupIndex,
}

impl GroupRange {
    /// The groups covering bytes `offset..offset + len` (`len` ≥ 1).
    pub fn covering(offset: u64, len: u64) -> GroupRange {
        GroupRange {
            first: GroupIndex::containing(offset),
            last: GroupIndex::containing(offset + len.max(1) - 1),
        }
    }

    fn overlaps(&self, lo: u64, hi: u64) -> bool {
        lo <= self.last.0 && self.first.0 < hi
    }
}

/// Appends to `out` the parent nodes the server sends right before group `group` of
/// `range`: those ancestors of `group` whose first group inside the range is `group`,
/// top-down.
pub fn parents_before(tree: &ChunkTree, range: GroupRange, group: GroupIndex, out: &mut Vec<u8>) {
    let (mut lo, mut hi) = (0u64, tree.group_cvs().len() as u64);
    while hi - lo >= 2 {
        let mid = lo + left_subtree_groups((hi - lo) as usize) as u64;
        if lo.max(range.first.0) == group.0 {
            out.extend_from_slice(&tree.subtree_cv(lo, mid).0);
            out.extend_from_slice(&tree.subtree_cv(mid, hi).0);
        }
        if group.0 < mid {
            hi = mid;
        } else {
            lo = mid;
        }
    }
}

/// A subtree the verifier expects next: groups `lo..hi` and their chaining value.
#[derive(Debug, Clone, Copy)]
struct Pending {
    lo: u64,
    hi: u64,
    cv: [u8; CV_LEN_BYTES],
    is_root: bool,
}

/// The client side: checks each group of a range, in order, against the root.
#[derive(Debug)]
pub struct RangeVerifier {
    object_len: u64,
    range: GroupRange,
    stack: Vec<Pending>,
}

impl RangeVerifier {
    /// Starts verifying groups `range` of the object `root` of `object_len` bytes.
    pub fn new(root: Address, object_len: u64, range: GroupRange) -> Result<Self, Error> {
        let n = group_count(object_len);
        if range.first > range.last || range.last.0 >= n {
            return Err(Error::GroupOutOfRange {
                group: range.last.0,
                group_count: n,
            });
        }
        let stack = vec![Pending {
            lo: 0,
            hi: n,
            cv: *root.as_bytes(),
            is_root: true,
        }];
        Ok(RangeVerifier {
            object_len,
            range,
            stack,
        })
    }

    /// True once every group of the range has been verified.
    pub fn is_done(&self) -> bool {
        self.stack.is_empty()
    }

    /// Checks the next group: `parents` as the server sent them before it, then the
    /// group's bytes (the whole group, even when the range starts or ends inside it).
    pub fn verify(&mut self, group: GroupIndex, parents: &[u8], data: &[u8]) -> Result<(), Error> {
        let fail = |reason| Error::ProofMismatch {
            group: group.0,
            reason,
        };
        if !parents.len().is_multiple_of(PARENT_LEN_BYTES) {
            return Err(fail("parent nodes are not whole 64-byte pairs"));
        }
        let mut pairs = parents.chunks_exact(PARENT_LEN_BYTES);
        loop {
            let node = self
                .stack
                .pop()
                .ok_or(fail("group past the end of the range"))?;
            if node.hi - node.lo == 1 {
                if node.lo != group.0 {
                    return Err(fail("groups out of order"));
                }
                if pairs.next().is_some() {
                    return Err(fail("more parent nodes than the tree has"));
                }
                return check_group(self.object_len, group, data, &node.cv, node.is_root);
            }
            let pair = pairs.next().ok_or(fail("a parent node is missing"))?;
            let pair = pair.try_into().expect("chunks of the parent length");
            let (left, right) = split_parent(pair);
            if merge_cvs(&left, &right, node.is_root) != node.cv {
                return Err(fail("parent node does not match the tree above it"));
            }
            let mid = node.lo + left_subtree_groups((node.hi - node.lo) as usize) as u64;
            let children = [(mid, node.hi, right), (node.lo, mid, left)];
            for (lo, hi, cv) in children {
                if self.range.overlaps(lo, hi) {
                    self.stack.push(Pending {
                        lo,
                        hi,
                        cv,
                        is_root: false,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::GROUP_LEN_BYTES;
    use proptest::prelude::*;

    const G: usize = GROUP_LEN_BYTES as usize;

    fn object(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn group_bytes(data: &[u8], g: u64) -> &[u8] {
        let start = g as usize * G;
        &data[start..(start + G).min(data.len())]
    }

    /// Streams `range` through a verifier; `tamper` may corrupt (group, parents, data).
    fn stream(
        data: &[u8],
        range: GroupRange,
        tamper: impl Fn(u64, &mut Vec<u8>, &mut Vec<u8>),
    ) -> Result<usize, Error> {
        let tree = ChunkTree::of(data);
        let mut verifier = RangeVerifier::new(tree.root(), data.len() as u64, range)?;
        let mut parent_bytes = 0;
        for g in range.first.0..=range.last.0 {
            let mut parents = Vec::new();
            parents_before(&tree, range, GroupIndex(g), &mut parents);
            parent_bytes += parents.len();
            let mut bytes = group_bytes(data, g).to_vec();
            tamper(g, &mut parents, &mut bytes);
            verifier.verify(GroupIndex(g), &parents, &bytes)?;
        }
        assert!(verifier.is_done());
        Ok(parent_bytes / PARENT_LEN_BYTES)
    }

    #[test]
    fn whole_objects_and_ranges_verify_with_few_parents() {
        for len in [0, 1, G, G + 1, 3 * G, 5 * G + 7, 16 * G, 17 * G - 1, 33 * G] {
            let data = object(len);
            let n = group_count(len as u64);
            let whole = GroupRange {
                first: GroupIndex(0),
                last: GroupIndex(n - 1),
            };
            let parents = stream(&data, whole, |_, _, _| {}).unwrap();
            assert_eq!(
                parents as u64,
                n - 1,
                "a whole object sends every parent once"
            );
            if n >= 3 {
                let inner = GroupRange {
                    first: GroupIndex(1),
                    last: GroupIndex(n - 2),
                };
                stream(&data, inner, |_, _, _| {}).unwrap();
                let one = GroupRange::covering(n / 2 * GROUP_LEN_BYTES + 5, 1);
                let parents = stream(&data, one, |_, _, _| {}).unwrap();
                assert!(parents as u64 <= 64 - n.leading_zeros() as u64 + 1);
            }
        }
    }

    #[test]
    fn a_flipped_data_or_parent_byte_is_caught_at_its_group() {
        let data = object(9 * G + 100);
        let range = GroupRange {
            first: GroupIndex(2),
            last: GroupIndex(7),
        };
        let err = stream(&data, range, |g, _, bytes| {
            if g == 5 {
                bytes[10] ^= 1;
            }
        })
        .unwrap_err();
        assert_eq!(
            err,
            Error::GroupMismatch {
                group: 5,
                group_count: 10,
                got_len: G
            }
        );
        let err = stream(&data, range, |g, parents, _| {
            if g == 2 {
                parents[3] ^= 1;
            }
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "verified stream, group 2: parent node does not match the tree above it"
        );
        let err = stream(&data, range, |g, parents, _| {
            if g == 4 {
                parents.clear();
            }
        })
        .unwrap_err();
        assert_eq!(err.code().as_str(), "bad_digest");
    }

    #[test]
    fn a_proof_for_another_object_fails() {
        let (a, b) = (object(4 * G), object(4 * G + 1));
        let tree_b = ChunkTree::of(&b);
        let range = GroupRange {
            first: GroupIndex(0),
            last: GroupIndex(3),
        };
        let mut v = RangeVerifier::new(Address::of(&a), a.len() as u64, range).unwrap();
        let mut parents = Vec::new();
        parents_before(&tree_b, range, GroupIndex(0), &mut parents);
        assert!(v.verify(GroupIndex(0), &parents, &b[..G]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn any_range_of_any_shape_verifies(groups in 1u64..40, tail in 1usize..G, a in 0u64..40, b in 0u64..40) {
            let len = (groups as usize - 1) * G + tail;
            let data = object(len);
            let (a, b) = (a % groups, b % groups);
            let range = GroupRange { first: GroupIndex(a.min(b)), last: GroupIndex(a.max(b)) };
            let verified = stream(&data, range, |_, _, _| ());
            prop_assert!(verified.is_ok(), "{:?}", verified);
        }
    }
}
