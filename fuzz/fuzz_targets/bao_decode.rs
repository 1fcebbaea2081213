//! The bao decoder (`SliceDecoder`) and outboard reader (`outboard_group_cvs`) fed true
//! answers with the fuzzer's edits: they must never panic, and every leaf the decoder
//! accepts must be exactly the object's bytes at its offset.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ron_codec::bao::{
    outboard_group_cvs, BaoShape, ChunkGroupLog, Decoded, GroupInput, GroupTail, SliceAsk,
    SliceDecoder,
};
use ron_codec::tree::{group_len, GroupIndex};
use ron_codec::ChunkTree;

fn answer(object: &[u8], shape: &BaoShape) -> Vec<u8> {
    let tree = ChunkTree::of(object);
    let mut out = shape.length_header().to_vec();
    let groups = shape.groups();
    let (first, last) = groups.map_or((0, tree.group_count() - 1), |(f, l)| (f.0, l.0));
    for g in first..=last {
        let group = GroupIndex(g);
        let start = group.start_offset() as usize;
        let bytes = &object[start..start + group_len(object.len() as u64, group).unwrap() as usize];
        let input = if groups.is_some() {
            GroupInput::Verified(bytes)
        } else {
            GroupInput::Absent
        };
        if shape.encode_group(&tree, group, input, &mut out).unwrap() == GroupTail::WholeGroup {
            out.extend_from_slice(bytes);
        }
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let [shape, log, a, b, rest @ ..] = input else {
        return;
    };
    let len = usize::from(*shape) * 1111;
    let object: Vec<u8> = (0..len).map(|i| (i * 131 % 251) as u8).collect();
    let root = ron_codec::Address::of(&object);
    let log = ChunkGroupLog::new(log % 7).unwrap();
    let (ask, shape) = match len.checked_sub(1) {
        Some(end) if *a % 2 == 1 => {
            let (x, y) = (usize::from(*a) * 517 % len, usize::from(*b) * 4099 % len);
            let (first, last) = (x.min(y) as u64, x.max(y).min(end) as u64);
            let ask = SliceAsk::From {
                first,
                last: Some(last),
            };
            (ask, BaoShape::slice(len as u64, log, first, last))
        }
        _ => (SliceAsk::Whole, BaoShape::encoding(len as u64, log)),
    };
    let mut wire = answer(&object, &shape);
    let mut ops = rest.chunks_exact(3);
    for op in ops.by_ref().take(4) {
        let at = (usize::from(op[1]) << 8 | usize::from(op[2])) % (wire.len() + 1);
        match op[0] % 4 {
            0 if at < wire.len() => wire[at] ^= op[1] | 1,
            1 => wire.truncate(at),
            2 => wire.insert(at, op[2]),
            _ => {}
        }
    }
    let mut decoder = SliceDecoder::new(root, log, ask);
    let mut at = 0;
    while let Some(n) = decoder.wanted() {
        let Some(piece) = wire.get(at..at + n) else {
            break;
        };
        at += n;
        match decoder.step(piece) {
            Ok(Decoded::Data { offset }) => {
                let offset = offset as usize;
                assert_eq!(
                    object.get(offset..offset + piece.len()),
                    Some(piece),
                    "a wrong leaf accepted"
                );
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let outboard = answer(&object, &BaoShape::outboard(len as u64, log));
    let mut edited = outboard.clone();
    if let Some(op) = ops.next() {
        let at = usize::from(op[1]) % (edited.len() + 1);
        if at < edited.len() {
            edited[at] ^= op[2] | 1
        } else {
            edited.push(op[2])
        }
    }
    if let Ok(cvs) = outboard_group_cvs(root, len as u64, &edited) {
        let mut stored = Vec::new();
        ChunkTree::of(&object).write_stored(&mut stored);
        assert_eq!(cvs, stored, "an edited outboard gave other group CVs");
    }
});
