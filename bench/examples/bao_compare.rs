//! bao-tree 0.17 (the format iroh uses for verified ranges) against ron's chunk tree, on
//! the same buffers: building the verification data for a whole object, and checking one
//! 64 KiB group. Interleaved rounds, medians. Opt-in so CI never builds bao-tree:
//!
//! `cargo run --release -p ron-bench --features bao-compare --example bao_compare`

use bao_tree::io::outboard::{EmptyOutboard, PreOrderMemOutboard};
use bao_tree::io::sync::{decode_ranges, encode_ranges_validated};
use bao_tree::{BlockSize, ChunkNum, ChunkRanges};
use ron_bench::{median, pattern, secs};
use ron_codec::tree::GroupIndex;
use ron_codec::{ChunkTree, TreeHasher};

const ROUNDS: usize = 101;

fn main() {
    let block = BlockSize::from_chunk_log(6); // 64 chunks = 64 KiB groups, like ron
    println!("size_bytes  ron_tree_GBps  bao_outboard_GBps  ron_stored_B  bao_outboard_B");
    for len in [1usize << 20, (10 << 20) + 123, 16 << 20] {
        let data = pattern(len);
        let (mut ron, mut bao) = (Vec::new(), Vec::new());
        let mut sizes = (0, 0);
        for _ in 0..ROUNDS {
            ron.push(secs(|| {
                let mut h = TreeHasher::new();
                h.update(&data);
                let tree = h.finalize();
                let mut stored = Vec::new();
                tree.write_stored(&mut stored);
                sizes.0 = stored.len();
            }));
            bao.push(secs(|| {
                let ob = PreOrderMemOutboard::create(&data, block);
                sizes.1 = ob.data.len();
            }));
        }
        let gbps = |s: f64| len as f64 / s / 1e9;
        println!(
            "{len:>10}  {:>13.2}  {:>17.2}  {:>12}  {:>14}",
            gbps(median(ron)),
            gbps(median(bao)),
            sizes.0,
            sizes.1
        );
    }

    // One 64 KiB group of a 10 MiB object: ron checks it against its stored CV; bao
    // encodes it with its parent hashes (validating on the way out) and decodes it.
    let len: usize = (10 << 20) + 123;
    let data = pattern(len);
    let tree = ChunkTree::of(&data);
    let group = &data[3 << 16..4 << 16];
    let ob = PreOrderMemOutboard::create(&data, block);
    let ranges = ChunkRanges::from(ChunkNum(3 * 64)..ChunkNum(4 * 64));
    let mut encoded = Vec::new();
    encode_ranges_validated(&data[..], &ob, &ranges, &mut encoded).unwrap();
    let (mut ron, mut bao_enc, mut bao_dec) = (Vec::new(), Vec::new(), Vec::new());
    let mut target = vec![0u8; len];
    for _ in 0..ROUNDS * 10 {
        ron.push(secs(|| tree.verify_group(GroupIndex(3), group).unwrap()));
        bao_enc.push(secs(|| {
            let mut out = Vec::with_capacity(encoded.len());
            encode_ranges_validated(&data[..], &ob, &ranges, &mut out).unwrap();
            out
        }));
        bao_dec.push(secs(|| {
            let empty = EmptyOutboard {
                tree: ob.tree,
                root: ob.root,
            };
            decode_ranges(&encoded[..], &ranges, &mut target, empty).unwrap();
        }));
    }
    println!("one 64 KiB group of a {len}-byte object (median µs):");
    println!("  ron verify_group            {:>8.2}", median(ron) * 1e6);
    println!(
        "  bao encode_ranges_validated {:>8.2}  ({} bytes on the wire)",
        median(bao_enc) * 1e6,
        encoded.len()
    );
    println!(
        "  bao decode_ranges           {:>8.2}",
        median(bao_dec) * 1e6
    );
}
