//! A CLOCK cache with a weight budget, for one shard's object metadata and open files.
//! Shard-local (`&mut self`, no locks). Every entry has a referenced bit set on hit; the hand sweeps the slots, clearing bits and evicting the first unreferenced
//! entry, until the new entry fits. Eviction touches at most two sweeps of the slots.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};

use ron_codec::tree::GroupIndex;
use ron_codec::Address;

/// How a shard's maps keyed by address hash their keys: seeded once per map from the
/// process's random hashing keys, then a folded multiply per 16 bytes.
///
/// An address in a request is a client's claim, not yet the hash of anything: a fixed
/// function of its bytes (the first eight, or a fold of all four words) lets a client
/// name as many addresses as it likes that hash alike, and every lookup and insert of
/// them in one map (the metadata loads in flight, `Shard::meta_loads`, take any address
/// a GET names) then walks all of them. Keyed, which addresses collide depends on seeds
/// a client never sees. Each step multiplies two seeded words into 128 bits and folds the
/// halves together, so every input bit reaches the low bits the table indexes with and the
/// top ones it tags with; one such step per 16 bytes keeps a 32-byte address at three.
#[derive(Debug, Clone, Copy)]
pub struct AddressHashing {
    seeds: [u64; 2],
}

impl Default for AddressHashing {
    fn default() -> Self {
        let keyed = RandomState::new();
        AddressHashing {
            seeds: [keyed.hash_one(0u8), keyed.hash_one(1u8)],
        }
    }
}

impl BuildHasher for AddressHashing {
    type Hasher = AddressHasher;

    fn build_hasher(&self) -> AddressHasher {
        AddressHasher {
            state: 0,
            seeds: self.seeds,
        }
    }
}

/// One key's hash under an [`AddressHashing`]'s seeds.
#[derive(Debug)]
pub struct AddressHasher {
    state: u64,
    seeds: [u64; 2],
}

impl AddressHasher {
    fn mix(&mut self, low: u64, high: u64) {
        self.state = folded_multiply(low ^ self.state ^ self.seeds[0], high ^ self.seeds[1]);
    }
}

/// The 128-bit product's two halves, xored.
fn folded_multiply(x: u64, y: u64) -> u64 {
    let full = u128::from(x) * u128::from(y);
    (full as u64) ^ ((full >> 64) as u64)
}

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.state
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(16) {
            let mut words = [0u8; 16];
            words[..chunk.len()].copy_from_slice(chunk);
            let (low, high) = words.split_at(8);
            let word = |half: &[u8]| u64::from_le_bytes(half.try_into().expect("8 bytes"));
            self.mix(word(low), word(high));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n, 0);
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64, 0);
    }
}

pub type AddressMap<K, V> = HashMap<K, V, AddressHashing>;

/// Key of one verified 64 KiB group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupKey {
    pub addr: Address,
    pub group: GroupIndex,
}

struct Slot<K, V> {
    key: K,
    value: V,
    weight: usize,
    referenced: bool,
}

/// CLOCK cache bounded by the sum of entry weights.
pub struct ClockCache<K, V> {
    index: AddressMap<K, usize>,
    slots: Vec<Option<Slot<K, V>>>,
    free: Vec<usize>,
    hand: usize,
    weight: usize,
    weight_max: usize,
}

impl<K, V> std::fmt::Debug for ClockCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClockCache")
            .field("entries", &self.index.len())
            .field("weight", &self.weight)
            .field("weight_max", &self.weight_max)
            .finish()
    }
}

impl<K: Copy + Eq + Hash, V: Clone> ClockCache<K, V> {
    pub fn new(weight_max: usize) -> Self {
        ClockCache {
            index: AddressMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            weight: 0,
            weight_max,
        }
    }

    pub fn get(&mut self, key: &K) -> Option<V> {
        let slot = self.slots[*self.index.get(key)?].as_mut()?;
        slot.referenced = true;
        Some(slot.value.clone())
    }

    /// Inserts (or replaces) an entry; an entry heavier than the whole budget is not kept.
    pub fn insert(&mut self, key: K, value: V, weight: usize) {
        if weight > self.weight_max {
            return;
        }
        self.remove(&key);
        while self.weight + weight > self.weight_max {
            self.evict_one();
        }
        let slot = Slot {
            key,
            value,
            weight,
            referenced: false,
        };
        let at = match self.free.pop() {
            Some(at) => {
                self.slots[at] = Some(slot);
                at
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.index.insert(key, at);
        self.weight += weight;
    }

    pub fn remove(&mut self, key: &K) {
        if let Some(at) = self.index.remove(key) {
            if let Some(slot) = self.slots[at].take() {
                self.weight -= slot.weight;
            }
            self.free.push(at);
        }
    }

    fn evict_one(&mut self) {
        debug_assert!(!self.index.is_empty(), "over budget with nothing to evict");
        loop {
            self.hand = (self.hand + 1) % self.slots.len();
            match &mut self.slots[self.hand] {
                Some(slot) if slot.referenced => slot.referenced = false,
                Some(slot) => {
                    let key = slot.key;
                    self.remove(&key);
                    return;
                }
                None => {}
            }
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn weight(&self) -> usize {
        self.weight
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    type GroupCache = ClockCache<GroupKey, Bytes>;

    /// Addresses a client could name that all hash alike under a fixed fold of their
    /// words (the hasher before this one: each word xored into the state rotated left by
    /// 5): the last word cancels the first three.
    fn addresses_alike_under_a_fold(count: u64) -> Vec<Address> {
        (0..count)
            .map(|n| {
                let words = [n.wrapping_mul(0x9e37_79b9_7f4a_7c15), n, !n];
                let fold = words
                    .iter()
                    .fold(0u64, |state, &w| state.rotate_left(5) ^ w);
                let mut bytes = [0u8; 32];
                for (at, word) in words.iter().chain([fold.rotate_left(5)].iter()).enumerate() {
                    bytes[at * 8..at * 8 + 8].copy_from_slice(&word.to_le_bytes());
                }
                Address::from_bytes(bytes)
            })
            .collect()
    }

    #[test]
    fn addresses_a_client_makes_alike_under_a_fixed_fold_spread_over_the_table() {
        let addresses = addresses_alike_under_a_fold(4096);
        let fold = |a: &Address| {
            a.as_bytes().chunks(8).fold(0u64, |state, w| {
                state.rotate_left(5) ^ u64::from_le_bytes(w.try_into().unwrap())
            })
        };
        assert!(
            addresses.iter().all(|a| fold(a) == 0),
            "the fold makes them all alike"
        );
        let hashing = AddressHashing::default();
        let hashes: std::collections::HashSet<u64> =
            addresses.iter().map(|a| hashing.hash_one(a)).collect();
        assert_eq!(hashes.len(), addresses.len(), "no two hash alike");
        // Buckets of a 4,096-slot table: uniform hashing fills 1 - 1/e of them (2,589).
        let buckets: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 4095).collect();
        assert!(
            buckets.len() > 2_400,
            "{} of 4096 buckets used",
            buckets.len()
        );
        let tags: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert_eq!(tags.len(), 128, "every top-7-bit tag used");
    }

    #[test]
    fn each_map_hashes_an_address_its_own_way() {
        let (one, other) = (AddressHashing::default(), AddressHashing::default());
        let group = key(7, 3);
        assert_ne!(one.hash_one(group), other.hash_one(group));
        assert_eq!(
            one.hash_one(group),
            one.hash_one(key(7, 3)),
            "the same key again"
        );
        assert_ne!(
            one.hash_one(group),
            one.hash_one(key(7, 4)),
            "the group index counts"
        );
        let map: AddressMap<GroupKey, u32> = (0..64).map(|g| (key(1, g), g as u32)).collect();
        assert!((0..64).all(|g| map.get(&key(1, g)) == Some(&(g as u32))));
    }

    fn key(n: u8, g: u64) -> GroupKey {
        GroupKey {
            addr: Address::from_bytes([n; 32]),
            group: GroupIndex(g),
        }
    }

    #[test]
    fn keeps_within_budget_and_prefers_referenced_entries() {
        let mut cache = GroupCache::new(300);
        for n in 0..3 {
            cache.insert(key(n, 0), Bytes::from(vec![n; 100]), 100);
        }
        assert_eq!(cache.weight(), 300);
        assert!(cache.get(&key(0, 0)).is_some()); // referenced: survives the next sweep
        cache.insert(key(9, 0), Bytes::from(vec![9; 100]), 100);
        assert_eq!(cache.weight(), 300);
        assert!(cache.get(&key(0, 0)).is_some());
        assert!(cache.get(&key(9, 0)).is_some());
        assert_eq!(cache.len(), 3);
        cache.insert(key(7, 0), Bytes::from(vec![0; 301]), 301);
        assert!(cache.get(&key(7, 0)).is_none(), "heavier than the budget");
    }

    proptest! {
        #[test]
        fn never_exceeds_budget_and_returns_what_was_stored(
            ops in proptest::collection::vec((0u8..20, 1usize..120, any::<bool>()), 1..300)
        ) {
            let mut cache = GroupCache::new(500);
            let mut model = std::collections::HashMap::new();
            for (n, w, read) in ops {
                let k = key(n, 0);
                if read {
                    if let Some(v) = cache.get(&k) {
                        prop_assert_eq!(Some(&v), model.get(&k));
                    }
                } else {
                    let v = Bytes::from(vec![n; w]);
                    cache.insert(k, v.clone(), w);
                    model.insert(k, v);
                }
                prop_assert!(cache.weight() <= 500);
            }
        }
    }
}
