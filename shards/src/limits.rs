//! The fixed limits of the storage formats, each with its unit and the reason for its
//! value. A leaf: every module may import it. Limits sized at start-up from the
//! configuration live in [`crate::ShardConfig`] instead.

use ron_codec::tree::GROUP_LEN_BYTES;

/// Bytes of one block: a group, or a parity block.
pub const BLOCK_BYTES: u64 = GROUP_LEN_BYTES;

/// Most data blocks per stripe: a degraded read reads `k` blocks to rebuild one, so
/// wider stripes make every rebuild slower.
pub const DATA_BLOCKS_MAX: u8 = 16;
/// Most parity blocks per stripe.
pub const PARITY_BLOCKS_MAX: u8 = 4;
/// Most data dirs a node takes.
pub const DIRS_MAX: u8 = 64;

/// Objects up to this length (one group) are packed into segments.
pub const PACKED_OBJECT_BYTES_MAX: u64 = GROUP_LEN_BYTES;

/// A segment stops taking needles once it holds this much (a batch never splits).
pub const SEGMENT_BYTES_MAX: u64 = 256 << 20;

/// Live needles a shard's start-up compaction moves at most, all its stores together
/// (`store/compact.rs`): two segments' worth, a second or two of reading and writing on
/// an SSD, so a start stays well within the time a node waits for its shards; what is
/// left waits for the next start.
pub const COMPACT_MOVE_BYTES_PER_START: u64 = 2 * SEGMENT_BYTES_MAX;

/// Lanes a store writes at most (one more than the most parity blocks a code has).
pub const SEGMENT_LANES_MAX: u8 = 1 + PARITY_BLOCKS_MAX;
