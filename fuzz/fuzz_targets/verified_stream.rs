//! The client's verified-streaming check (`RangeVerifier`) fed parents and group bytes
//! from the fuzzer, mixed with the true ones: it must never panic, and whenever it
//! accepts a group, the bytes must be exactly the object's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ron_codec::proof::{parents_before, GroupRange, RangeVerifier};
use ron_codec::tree::{group_count, GroupIndex, GROUP_LEN_BYTES};
use ron_codec::ChunkTree;

const G: usize = GROUP_LEN_BYTES as usize;

fuzz_target!(|input: &[u8]| {
    let [shape, a, b, rest @ ..] = input else {
        return;
    };
    // Up to 9 groups, the last of any length.
    let len = usize::from(*shape % 9) * G + usize::from(*a) * 37;
    let object: Vec<u8> = (0..len).map(|i| (i * 131 % 251) as u8).collect();
    let tree = ChunkTree::of(&object);
    let n = group_count(len as u64);
    let (x, y) = (u64::from(*a) % n, u64::from(*b) % n);
    let range = GroupRange {
        first: GroupIndex(x.min(y)),
        last: GroupIndex(x.max(y)),
    };
    let Ok(mut verifier) = RangeVerifier::new(tree.root(), len as u64, range) else {
        return;
    };
    let mut fuzz = rest.iter().copied();
    for g in range.first.0..=range.last.0 {
        let group = GroupIndex(g);
        let mut parents = Vec::new();
        parents_before(&tree, range, group, &mut parents);
        let start = g as usize * G;
        let mut data = object[start..(start + G).min(len)].to_vec();
        // Each fuzz byte may flip a byte of the parents or of the data, or cut them.
        match fuzz.next() {
            Some(op @ 0..=63) if !parents.is_empty() => {
                let i = usize::from(op) % parents.len();
                parents[i] ^= fuzz.next().unwrap_or(1) | 1;
            }
            Some(op @ 64..=127) if !data.is_empty() => {
                let i = (usize::from(op) * 997) % data.len();
                data[i] ^= fuzz.next().unwrap_or(1) | 1;
            }
            Some(op @ 128..=143) => parents.truncate(usize::from(op - 128) * 8),
            Some(op @ 144..=159) => data.truncate(usize::from(op - 144) * 4096),
            _ => {}
        }
        let truth = &object[start..(start + G).min(len)];
        match verifier.verify(group, &parents, &data) {
            Ok(()) => assert_eq!(&data[..], truth, "accepted bytes that are not the object's"),
            Err(_) => return,
        }
    }
});
