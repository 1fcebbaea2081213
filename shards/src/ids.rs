//! The crate's ids: one newtype per thing a shard names, so that a store, a segment, a
//! dir and a stripe can never be passed for one another. A leaf: it imports nothing
//! from the crate, and every other module may import it.

/// A shard's index among the running shards (0..shards).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardIndex(pub u16);

/// Identifies a store: the value the partition table maps a partition to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreId(pub u16);

/// A data dir's position in the node's list of dirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DirIndex(pub u8);

/// A stripe of an object: its groups `s·k .. s·k + k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StripeIndex(pub u64);

/// Names a segment within its store; shown as its file name (8 hex digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId(pub u32);

impl std::fmt::Display for SegmentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// One of the copies of a store's segments: lane 0 is `segments/`, lane `l`
/// `segments.<l>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LaneIndex(pub u8);

/// A position in a file, bytes from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteOffset(pub u64);
