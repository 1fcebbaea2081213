//! The encoder and decoder checked against bao-tree (n0's implementation): the same
//! bytes for every length, chunk-group log and range, and each other's output decoded.

use super::*;
use crate::tree::{group_len, GROUP_LEN_BYTES};
use bao_tree::io::outboard::PreOrderMemOutboard;
use bao_tree::io::sync::encode_ranges_validated;
use bao_tree::{BlockSize, ChunkNum, ChunkRanges};
use proptest::prelude::*;

/// Lengths around every boundary the tree has: chunks, 16 KiB and 64 KiB groups.
const LENGTHS: [u64; 14] = [
    0,
    1,
    1023,
    1024,
    1025,
    2048,
    16 * 1024 + 1,
    GROUP_LEN_BYTES - 1,
    GROUP_LEN_BYTES,
    GROUP_LEN_BYTES + 1,
    2 * GROUP_LEN_BYTES,
    3 * GROUP_LEN_BYTES + 5000,
    200 * 1024 + 17,
    9 * GROUP_LEN_BYTES + 1,
];

fn object(len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(131) % 251) as u8)
        .collect()
}

fn cgl(log: u8) -> ChunkGroupLog {
    ChunkGroupLog::new(log).expect("a served log")
}

/// bao-tree's answer: the length header, then `encode_ranges_validated` of the chunks.
fn theirs(data: &[u8], log: u8, chunks: Option<ChunkRange>) -> Vec<u8> {
    let outboard = PreOrderMemOutboard::create(data, BlockSize::from_chunk_log(log));
    let mut out = (data.len() as u64).to_le_bytes().to_vec();
    let ranges = match chunks {
        Some(q) => ChunkRanges::from(ChunkNum(q.first)..ChunkNum(q.end)),
        None => ChunkRanges::all(),
    };
    encode_ranges_validated(data, &outboard, &ranges, &mut out).expect("bao-tree encodes");
    out
}

/// Ours, group after group as the server sends it.
fn ours(data: &[u8], shape: &BaoShape, verified: bool) -> Result<Vec<u8>, Error> {
    let tree = ChunkTree::of(data);
    let mut out = shape.length_header().to_vec();
    let Some((first, last)) = shape.groups() else {
        for g in 0..tree.group_count() {
            shape.encode_group(&tree, GroupIndex(g), GroupInput::Absent, &mut out)?;
        }
        return Ok(out);
    };
    for g in first.0..=last.0 {
        let group = GroupIndex(g);
        let start = group.start_offset() as usize;
        let bytes = &data[start..start + group_len(data.len() as u64, group).unwrap() as usize];
        let given = if verified {
            GroupInput::Verified(bytes)
        } else {
            GroupInput::Unverified(bytes)
        };
        if shape.encode_group(&tree, group, given, &mut out)? == GroupTail::WholeGroup {
            out.extend_from_slice(bytes);
        }
    }
    Ok(out)
}

/// Decodes `answer` with ours; returns the bytes proven, from the first leaf's offset.
fn decode(root: Address, log: u8, ask: SliceAsk, answer: &[u8]) -> Result<(u64, Vec<u8>), Error> {
    let mut decoder = SliceDecoder::new(root, cgl(log), ask);
    let (mut at, mut first, mut proven) = (0, None, Vec::new());
    while let Some(n) = decoder.wanted() {
        let piece = answer.get(at..at + n).ok_or(Error::BaoMismatch {
            chunk: 0,
            reason: "test: answer too short",
        })?;
        at += n;
        if let Decoded::Data { offset } = decoder.step(piece)? {
            first.get_or_insert(offset);
            proven.extend_from_slice(piece);
        }
    }
    assert_eq!(
        at,
        answer.len(),
        "the decoder reads the whole answer and no more"
    );
    Ok((first.unwrap_or(0), proven))
}

#[test]
fn whole_encodings_and_outboards_match_bao_tree() {
    for len in LENGTHS {
        let data = object(len);
        let root = Address::of(&data);
        for log in [0, 1, 4, 6] {
            let shape = BaoShape::encoding(len, cgl(log));
            let expected = theirs(&data, log, None);
            for verified in [false, true] {
                let got = ours(&data, &shape, verified).unwrap();
                assert!(got == expected, "len {len} log {log} verified {verified}");
            }
            assert_eq!(
                shape.encoded_len(),
                expected.len() as u64,
                "len {len} log {log}"
            );
            assert_eq!(
                decode(root, log, SliceAsk::Whole, &expected).unwrap(),
                (0, data.clone())
            );

            let outboard = BaoShape::outboard(len, cgl(log));
            let tree_outboard = PreOrderMemOutboard::create(&data, BlockSize::from_chunk_log(log))
                .into_inner_with_prefix();
            assert_eq!(
                ours(&data, &outboard, true).unwrap(),
                tree_outboard,
                "{len} {log}"
            );
            assert_eq!(outboard.encoded_len(), tree_outboard.len() as u64);
            let cvs = outboard_group_cvs(root, len, &tree_outboard).unwrap();
            let mut stored = Vec::new();
            ChunkTree::of(&data).write_stored(&mut stored);
            assert_eq!(
                cvs, stored,
                "len {len} log {log}: group CVs from the outboard"
            );
        }
    }
}

#[test]
fn the_sizes_users_see() {
    // 1 MiB: 1024 chunks, so 1023 parents at log 0 (6.25 %), 63 at log 4, 15 at log 6.
    let mib = 1 << 20;
    let parents = |log| BaoShape::outboard(mib, cgl(log)).encoded_len() - 8;
    assert_eq!(
        [parents(0), parents(4), parents(6)],
        [1023 * 64, 63 * 64, 15 * 64]
    );
    assert_eq!(BaoShape::encoding(0, cgl(0)).encoded_len(), 8);
    assert_eq!(BaoShape::encoding(1000, cgl(0)).encoded_len(), 1008);
    // Bytes 1000..=1099 of 1 MiB: chunks 0 and 1, a subtree the query covers whole —
    // one leaf under 9 parents at log ≥ 1; at log 0, one more parent splits it.
    let slice = |log| BaoShape::slice(mib, cgl(log), 1000, 1099);
    assert_eq!(slice(4).query(), ChunkRange { first: 0, end: 2 });
    assert_eq!(slice(4).encoded_len(), 8 + 9 * 64 + 2048);
    assert_eq!(slice(0).encoded_len(), 8 + 10 * 64 + 2048);
}

#[test]
fn an_outboard_of_no_served_log_or_another_length_is_refused() {
    let data = object(3 * GROUP_LEN_BYTES);
    let root = Address::of(&data);
    let good = theirs(&data, 6, None);
    let outboard = BaoShape::outboard(data.len() as u64, cgl(6));
    let obao = ours(&data, &outboard, true).unwrap();
    assert!(outboard_group_cvs(root, data.len() as u64, &obao[..obao.len() - 1]).is_err());
    assert!(outboard_group_cvs(root, data.len() as u64 + 1, &obao).is_err());
    assert!(
        outboard_group_cvs(root, data.len() as u64, &good).is_err(),
        "an encoding"
    );
    let err = outboard_group_cvs(root, data.len() as u64, &[1, 2]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bao answer, chunk 0: an outboard shorter than its length header"
    );
}

#[test]
fn stored_bytes_that_do_not_match_the_tree_are_never_encoded() {
    let data = object(3 * GROUP_LEN_BYTES + 10);
    let tree = ChunkTree::of(&data);
    let mut rotten = data[..GROUP_LEN_BYTES as usize].to_vec();
    rotten[700] ^= 1;
    for log in [0, 4, 6] {
        let shape = BaoShape::encoding(data.len() as u64, cgl(log));
        let mut out = Vec::new();
        let err = shape
            .encode_group(
                &tree,
                GroupIndex(0),
                GroupInput::Unverified(&rotten),
                &mut out,
            )
            .unwrap_err();
        assert!(
            matches!(err, Error::GroupMismatch { group: 0, .. }),
            "{err}"
        );
        assert!(out.is_empty(), "nothing of a rotten group is left to send");
    }
}

fn arb_case() -> impl Strategy<Value = (u64, u8, u64, u64)> {
    (1u64..600_000, 0u8..=6).prop_flat_map(|(len, log)| {
        (Just(len), Just(log), 0..len)
            .prop_flat_map(|(len, log, first)| (Just(len), Just(log), Just(first), first..len))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn slices_match_bao_tree_and_decode(case in arb_case(), flip in any::<prop::sample::Index>()) {
        let (len, log, first, last) = case;
        let data = object(len);
        let root = Address::of(&data);
        let shape = BaoShape::slice(len, cgl(log), first, last);
        let expected = theirs(&data, log, Some(shape.query()));
        let got = ours(&data, &shape, true).unwrap();
        prop_assert!(got == expected, "len {} log {} bytes {}..={}", len, log, first, last);
        prop_assert_eq!(shape.encoded_len(), got.len() as u64);

        let ask = SliceAsk::From { first, last: Some(last) };
        let (offset, proven) = decode(root, log, ask, &got).unwrap();
        prop_assert!(offset <= first);
        let want = &data[first as usize..=last as usize];
        let skip = (first - offset) as usize;
        prop_assert_eq!(&proven[skip..skip + want.len()], want);

        // One flipped bit anywhere past the header is caught before its bytes are used.
        let mut bad = got.clone();
        let at = 8 + flip.index(bad.len() - 8);
        bad[at] ^= 0x20;
        prop_assert!(decode(root, log, ask, &bad).is_err(), "flip at {}", at);
    }
}

#[test]
fn asks_resolve_as_ranges_do() {
    assert_eq!(SliceAsk::Whole.resolve(0), None);
    assert_eq!(SliceAsk::Whole.resolve(10), Some((0, 9)));
    assert_eq!(
        SliceAsk::From {
            first: 3,
            last: None
        }
        .resolve(10),
        Some((3, 9))
    );
    assert_eq!(
        SliceAsk::From {
            first: 3,
            last: Some(99)
        }
        .resolve(10),
        Some((3, 9))
    );
    assert_eq!(
        SliceAsk::From {
            first: 10,
            last: None
        }
        .resolve(10),
        None
    );
    assert_eq!(SliceAsk::Suffix(4).resolve(10), Some((6, 9)));
    assert_eq!(SliceAsk::Suffix(40).resolve(10), Some((0, 9)));
    assert_eq!(SliceAsk::Suffix(0).resolve(10), None);
}

#[test]
fn a_length_header_near_the_end_of_u64_is_refused_without_a_panic() {
    let root = Address::of(b"x");
    for len in [u64::MAX, u64::MAX - 1, u64::MAX - 1023, 1 << 63] {
        let mut decoder = SliceDecoder::new(root, cgl(0), SliceAsk::Whole);
        assert_eq!(
            decoder.step(&len.to_le_bytes()).unwrap(),
            Decoded::Length(len)
        );
        assert_eq!(decoder.wanted(), Some(64));
        assert!(
            decoder.step(&[0; 64]).is_err(),
            "a parent that does not merge to the root"
        );
        let mut slice = SliceDecoder::new(root, cgl(4), SliceAsk::Suffix(10));
        slice.step(&len.to_le_bytes()).unwrap();
        assert!(!is_outboard_len(len, 8 << 20));
    }
    assert!(is_outboard_len(1 << 20, 8 + 15 * 64));
    assert!(is_outboard_len(1 << 20, 8 + 1023 * 64));
    assert!(!is_outboard_len(1 << 20, 8 + 16 * 64));
}
