//! The heap trim gives back what a burst freed in the middle of an arena: memory malloc
//! keeps resident on its own. Alone in its test binary, so no other test's allocations
//! move this process's RSS while it measures.

use ron_control::heap::{resident_bytes, trim_heap};

const BLOCK_BYTES: usize = 4096;
const BLOCKS: usize = 24_576; // 96 MiB
/// One block in this many stays allocated, so what is freed around it cannot fall back
/// into the arena's top (which malloc returns by itself).
const KEPT_EVERY: usize = 64;
const MIB: u64 = 1 << 20;

#[test]
fn a_trim_gives_back_what_a_burst_freed_in_the_middle_of_an_arena() {
    // A thread of its own allocates from an arena of its own, as a shard or the DHT
    // thread does.
    let (kept, freed_resident) = std::thread::spawn(|| {
        let mut blocks: Vec<Vec<u8>> = (0..BLOCKS).map(|i| vec![i as u8; BLOCK_BYTES]).collect();
        let full = resident_bytes().expect("VmRSS");
        let kept: Vec<Vec<u8>> = blocks
            .drain(..)
            .enumerate()
            .filter_map(|(i, block)| (i % KEPT_EVERY == 0).then_some(block))
            .collect();
        (kept, full)
    })
    .join()
    .unwrap();
    let before = resident_bytes().expect("VmRSS");
    let burst = (BLOCKS * BLOCK_BYTES) as u64;
    assert!(
        before + burst / 4 > freed_resident,
        "malloc kept the freed blocks resident: {} MiB before the trim, {} MiB at the burst",
        before / MIB,
        freed_resident / MIB
    );
    let released = trim_heap();
    let after = resident_bytes().expect("VmRSS");
    assert!(
        released >= burst / 2,
        "a trim released {} MiB of a {} MiB burst (RSS {} -> {} MiB)",
        released / MIB,
        burst / MIB,
        before / MIB,
        after / MIB
    );
    assert_eq!(kept.len(), BLOCKS / KEPT_EVERY);
    assert!(kept
        .iter()
        .enumerate()
        .all(|(i, b)| b[0] == (i * KEPT_EVERY) as u8));
}
