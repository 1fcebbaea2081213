//! A CLOCK cache with a weight budget, for one shard's object metadata and open files.
//! Shard-local (`&mut self`, no locks). Every entry has a referenced bit set on hit; the hand sweeps the slots, clearing bits and evicting the first unreferenced
//! entry, until the new entry fits. Eviction touches at most two sweeps of the slots.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use ron_codec::tree::GroupIndex;
use ron_codec::Address;

/// Hasher for keys that start with a BLAKE3 address: its bytes are already uniform, so
/// the first eight (mixed with what follows) are the hash.
#[derive(Debug, Default)]
pub struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(5) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub type AddressMap<K, V> = HashMap<K, V, BuildHasherDefault<AddressHasher>>;

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
