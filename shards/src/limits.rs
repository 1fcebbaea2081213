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

/// Lanes a store writes at most (one more than the most parity blocks a code has).
pub const SEGMENT_LANES_MAX: u8 = 1 + PARITY_BLOCKS_MAX;
