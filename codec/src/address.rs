//! `b3:` addresses and the fixed partition function that names an object's owner shard.
//!
//! An [`Address`] is the BLAKE3-256 hash of a whole object. Its top
//! [`PARTITION_BITS`] bits name one of [`PARTITION_COUNT`] partitions; a
//! [`PartitionTable`] (stored in the data dir) maps every partition to a [`ShardId`].
//! Changing the shard count rewrites the table, moving as few partitions as possible
//! ([`PartitionTable::rebalanced`]), never rehashing objects.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// Bytes in an address (BLAKE3-256).
pub const ADDRESS_LEN: usize = 32;
/// Hex digits in the textual form.
pub const ADDRESS_HEX_LEN: usize = ADDRESS_LEN * 2;
/// The textual prefix.
pub const ADDRESS_PREFIX: &str = "b3:";

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The BLAKE3-256 hash of an object: its name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address([u8; ADDRESS_LEN]);

impl Address {
    pub const fn from_bytes(bytes: [u8; ADDRESS_LEN]) -> Self {
        Address(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; ADDRESS_LEN] {
        &self.0
    }

    /// The address of `data` (plain BLAKE3).
    pub fn of(data: &[u8]) -> Self {
        Address(*blake3::hash(data).as_bytes())
    }

    /// Parses `b3:<hex>` or bare `<hex>`; 64 lowercase hex digits, nothing else.
    pub fn parse(text: &[u8]) -> Result<Self, Error> {
        let hex = text.strip_prefix(ADDRESS_PREFIX.as_bytes()).unwrap_or(text);
        let bad = |reason| Error::BadAddress {
            got_len: text.len(),
            reason,
        };
        if hex.len() != ADDRESS_HEX_LEN {
            return Err(bad("wrong length"));
        }
        // A table and no branch per digit: every request names an address, and a branch
        // on each of 64 random digits mispredicted often enough to cost 3 % of a 4 KiB
        // GET's core (docs/PERF.md).
        let mut out = [0u8; ADDRESS_LEN];
        let mut seen = 0u8;
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let (hi, lo) = (hex_value(pair[0]), hex_value(pair[1]));
            seen |= hi | lo;
            *byte = (hi << 4) | lo;
        }
        if seen & NOT_HEX != 0 {
            let digit = hex.iter().find(|&&d| hex_value(d) == NOT_HEX);
            return Err(bad(hex_problem(digit.copied().unwrap_or_default())));
        }
        Ok(Address(out))
    }

    /// The 64 lowercase hex digits, without allocating.
    pub fn hex(&self) -> [u8; ADDRESS_HEX_LEN] {
        let mut out = [0u8; ADDRESS_HEX_LEN];
        for (pair, byte) in out.chunks_exact_mut(2).zip(self.0) {
            pair[0] = HEX_DIGITS[usize::from(byte >> 4)];
            pair[1] = HEX_DIGITS[usize::from(byte & 0x0f)];
        }
        out
    }

    /// `b3:` plus the hex digits, without allocating.
    pub fn text(&self) -> [u8; ADDRESS_PREFIX.len() + ADDRESS_HEX_LEN] {
        let mut out = [0u8; ADDRESS_PREFIX.len() + ADDRESS_HEX_LEN];
        out[..ADDRESS_PREFIX.len()].copy_from_slice(ADDRESS_PREFIX.as_bytes());
        out[ADDRESS_PREFIX.len()..].copy_from_slice(&self.hex());
        out
    }

    /// The partition this address falls in: its top [`PARTITION_BITS`] bits.
    pub fn partition(&self) -> PartitionId {
        let top = u16::from_be_bytes([self.0[0], self.0[1]]);
        PartitionId(top >> (16 - PARTITION_BITS))
    }
}

/// What [`hex_value`] gives a byte that is not a lowercase hex digit: a bit no digit's
/// value has.
const NOT_HEX: u8 = 0x10;

/// Every byte's value as a lowercase hex digit, [`NOT_HEX`] for the others.
const HEX_VALUES: [u8; 256] = {
    let mut values = [NOT_HEX; 256];
    let mut digit = 0;
    while digit < 16 {
        values[HEX_DIGITS[digit] as usize] = digit as u8;
        digit += 1;
    }
    values
};

fn hex_value(digit: u8) -> u8 {
    HEX_VALUES[usize::from(digit)]
}

fn hex_problem(digit: u8) -> &'static str {
    if digit.is_ascii_hexdigit() {
        "uppercase hex digit"
    } else {
        "not a hex digit"
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.text();
        // The text is ASCII by construction.
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl FromStr for Address {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self, Error> {
        Address::parse(text.as_bytes())
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Address::parse(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// Bits of the address that pick a partition.
pub const PARTITION_BITS: u32 = 12;
/// Number of partitions: the finest unit that moves between shards.
pub const PARTITION_COUNT: usize = 1 << PARTITION_BITS;
/// The most shards a table can name.
pub const SHARD_COUNT_MAX: u16 = 1024;

/// One of [`PARTITION_COUNT`] fixed slices of the address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId(u16);

impl PartitionId {
    pub const fn get(self) -> u16 {
        self.0
    }

    pub fn new(id: u16) -> Option<Self> {
        (usize::from(id) < PARTITION_COUNT).then_some(PartitionId(id))
    }
}

/// A shard: one pinned executor owning one storage directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}

/// The partition → shard map. Pure data; the engine stores its encoding in the data dir.
#[derive(Clone, PartialEq, Eq)]
pub struct PartitionTable {
    shard_count: u16,
    owners: Box<[ShardId]>,
}

impl fmt::Debug for PartitionTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionTable")
            .field("shard_count", &self.shard_count)
            .field("partitions", &self.owners.len())
            .finish()
    }
}

const TABLE_MAGIC: &[u8; 8] = b"RONPT\0\0\x01";

impl PartitionTable {
    /// Partition `p` goes to shard `p % shard_count`.
    pub fn round_robin(shard_count: u16) -> Result<Self, Error> {
        check_shard_count(shard_count)?;
        let owners = (0..PARTITION_COUNT)
            .map(|p| ShardId((p % usize::from(shard_count)) as u16))
            .collect();
        Ok(PartitionTable {
            shard_count,
            owners,
        })
    }

    pub fn shard_count(&self) -> u16 {
        self.shard_count
    }

    /// The shard that owns `addr`.
    pub fn owner(&self, addr: &Address) -> ShardId {
        self.owner_of(addr.partition())
    }

    pub fn owner_of(&self, partition: PartitionId) -> ShardId {
        self.owners[usize::from(partition.0)]
    }

    /// How many partitions each shard owns.
    pub fn load(&self) -> Vec<usize> {
        let mut load = vec![0usize; usize::from(self.shard_count)];
        for owner in self.owners.iter() {
            load[usize::from(owner.0)] += 1;
        }
        load
    }

    /// A table for `shard_count` shards that keeps every partition where it is unless it
    /// must move: its shard is gone, or its shard holds more than its fair share. The result
    /// is balanced (owned counts differ by at most one).
    pub fn rebalanced(&self, shard_count: u16) -> Result<Self, Error> {
        check_shard_count(shard_count)?;
        let shards = usize::from(shard_count);
        let base = PARTITION_COUNT / shards;
        let extra = PARTITION_COUNT % shards;
        // Shards below `extra` may hold base + 1 partitions.
        let quota = |s: usize| base + usize::from(s < extra);
        let mut held = vec![0usize; shards];
        let mut owners: Vec<Option<ShardId>> = vec![None; PARTITION_COUNT];
        for (p, owner) in self.owners.iter().enumerate() {
            let s = usize::from(owner.0);
            if s < shards && held[s] < quota(s) {
                held[s] += 1;
                owners[p] = Some(*owner);
            }
        }
        let mut next = 0usize;
        let owners = owners
            .into_iter()
            .map(|slot| {
                slot.unwrap_or_else(|| {
                    while held[next] >= quota(next) {
                        next += 1;
                    }
                    held[next] += 1;
                    ShardId(next as u16)
                })
            })
            .collect();
        Ok(PartitionTable {
            shard_count,
            owners,
        })
    }

    /// Partitions whose owner differs between `self` and `other`.
    pub fn moved_partitions(&self, other: &PartitionTable) -> Vec<PartitionId> {
        (0..PARTITION_COUNT)
            .filter(|&p| self.owners[p] != other.owners[p])
            .map(|p| PartitionId(p as u16))
            .collect()
    }

    /// Encoding: magic (8) | shard_count u16 BE | PARTITION_COUNT × owner u16 BE |
    /// BLAKE3 of everything before (32).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::ENCODED_LEN);
        out.extend_from_slice(TABLE_MAGIC);
        out.extend_from_slice(&self.shard_count.to_be_bytes());
        for owner in self.owners.iter() {
            out.extend_from_slice(&owner.0.to_be_bytes());
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    pub const ENCODED_LEN: usize = TABLE_MAGIC.len() + 2 + PARTITION_COUNT * 2 + 32;

    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let bad = |reason| Error::BadPartitionTable { reason };
        if bytes.len() != Self::ENCODED_LEN {
            return Err(bad("wrong length"));
        }
        let (body, sum) = bytes.split_at(Self::ENCODED_LEN - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(bad("checksum mismatch"));
        }
        if &body[..TABLE_MAGIC.len()] != TABLE_MAGIC {
            return Err(bad("unknown magic or version"));
        }
        let shard_count = u16::from_be_bytes([body[8], body[9]]);
        check_shard_count(shard_count)?;
        let owners = body[10..]
            .chunks_exact(2)
            .map(|pair| {
                let s = u16::from_be_bytes([pair[0], pair[1]]);
                (s < shard_count)
                    .then_some(ShardId(s))
                    .ok_or(bad("owner beyond shard_count"))
            })
            .collect::<Result<Box<[ShardId]>, Error>>()?;
        Ok(PartitionTable {
            shard_count,
            owners,
        })
    }
}

fn check_shard_count(shard_count: u16) -> Result<(), Error> {
    if shard_count == 0 || shard_count > SHARD_COUNT_MAX {
        return Err(Error::BadPartitionTable {
            reason: "shard count must be 1..=1024",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ABC: &str = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85";

    #[test]
    fn parses_prefixed_and_bare_and_displays_prefixed() {
        let a: Address = format!("b3:{ABC}").parse().unwrap();
        let b: Address = ABC.parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a, Address::of(b"abc"));
        assert_eq!(a.to_string(), format!("b3:{ABC}"));
    }

    #[test]
    fn rejects_uppercase_short_long_and_junk() {
        let upper = ABC.to_uppercase();
        let cases = [
            (upper.as_str(), "uppercase hex digit"),
            (&ABC[..63], "wrong length"),
            ("b3:", "wrong length"),
            ("", "wrong length"),
            (
                "B3:6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85",
                "wrong length",
            ),
            (
                "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d8g",
                "not a hex digit",
            ),
        ];
        for (text, reason) in cases {
            let err = text.parse::<Address>().unwrap_err();
            assert_eq!(
                err,
                Error::BadAddress {
                    got_len: text.len(),
                    reason
                },
                "{text}"
            );
            assert_eq!(err.code().as_str(), "bad_addr");
        }
        let long = format!("{ABC}0");
        assert!(long.parse::<Address>().is_err());
    }

    #[test]
    fn partition_is_the_top_bits() {
        let mut bytes = [0u8; 32];
        bytes[0] = 0xab;
        bytes[1] = 0xcd;
        assert_eq!(Address::from_bytes(bytes).partition().get(), 0xabc);
        assert_eq!(Address::from_bytes([0xff; 32]).partition().get(), 4095);
    }

    #[test]
    fn table_round_trips_and_rejects_corruption() {
        let table = PartitionTable::round_robin(3).unwrap();
        let mut enc = table.encode();
        assert_eq!(enc.len(), PartitionTable::ENCODED_LEN);
        assert_eq!(PartitionTable::decode(&enc).unwrap(), table);
        enc[100] ^= 1;
        assert_eq!(
            PartitionTable::decode(&enc).unwrap_err().to_string(),
            "partition table: checksum mismatch"
        );
        assert!(PartitionTable::round_robin(0).is_err());
        assert!(PartitionTable::round_robin(SHARD_COUNT_MAX + 1).is_err());
    }

    proptest! {
        #[test]
        fn address_text_round_trips(bytes in any::<[u8; 32]>()) {
            let a = Address::from_bytes(bytes);
            prop_assert_eq!(a.to_string().parse::<Address>().unwrap(), a);
            prop_assert_eq!(Address::parse(&a.hex()).unwrap(), a);
        }

        /// Exactly 64 lowercase hex digits parse; otherwise the first offending digit
        /// names the reason.
        #[test]
        fn only_lowercase_hex_parses_and_the_first_bad_digit_is_named(
            text in proptest::collection::vec(
                prop_oneof![
                    8 => proptest::sample::select(HEX_DIGITS.to_vec()),
                    1 => any::<u8>(),
                ],
                64,
            )
        ) {
            let first_bad = text.iter().find(|d| !matches!(d, b'0'..=b'9' | b'a'..=b'f'));
            match (Address::parse(&text), first_bad) {
                (Ok(a), None) => prop_assert_eq!(&a.hex()[..], &text[..]),
                (Err(Error::BadAddress { reason, got_len: 64 }), Some(d)) => {
                    let expected = if d.is_ascii_hexdigit() { "uppercase hex digit" } else { "not a hex digit" };
                    prop_assert_eq!(reason, expected);
                }
                (got, bad) => prop_assert!(false, "{:?} for first bad digit {:?}", got, bad),
            }
        }

        #[test]
        fn rebalancing_is_balanced_and_moves_only_what_it_must(
            from in 1u16..40, to in 1u16..40
        ) {
            let old = PartitionTable::round_robin(from).unwrap();
            let new = old.rebalanced(to).unwrap();
            let load = new.load();
            let (min, max) = (load.iter().min().unwrap(), load.iter().max().unwrap());
            prop_assert!(max - min <= 1, "unbalanced: {:?}", load);
            // Lower bound on moves: partitions on removed shards, plus surplus on kept ones.
            let old_load = old.load();
            let quota_max = PARTITION_COUNT.div_ceil(usize::from(to));
            let must_move: usize = old_load.iter().enumerate().map(|(s, &n)| {
                if s >= usize::from(to) { n } else { n.saturating_sub(quota_max) }
            }).sum();
            let moved = old.moved_partitions(&new).len();
            prop_assert!(moved >= must_move);
            // Never more than what must move plus one per shard of rounding.
            prop_assert!(moved <= must_move + usize::from(from.max(to)),
                "moved {} must {}", moved, must_move);
            prop_assert_eq!(new.rebalanced(to).unwrap(), new.clone());
        }
    }
}
