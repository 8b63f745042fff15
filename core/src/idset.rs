//! The set of purge ids a node holds, asked on every push it receives
//! (most pushes are redundant copies). An open-addressing table with the
//! ids inline answers with one cache line; a general hash set reads its
//! control bytes and its entries from two.
//!
//! Ids are 128 random bits drawn by the origin. The slot comes from a
//! keyed mix of the id, the key derived from the engine's private seed, so
//! a peer cannot aim ids at one run of slots without knowing it.

use crate::id::PurgeId;

const EMPTY: u128 = 0;

#[derive(Debug, Default)]
pub(crate) struct IdSet {
    /// Power-of-two length (or empty); `EMPTY` marks a free slot.
    slots: Vec<u128>,
    /// Ids in `slots` (not counting id 0, kept aside).
    len: usize,
    zero: bool,
    key: u64,
}

impl IdSet {
    pub(crate) fn with_key(key: u64) -> IdSet {
        IdSet { key, ..IdSet::default() }
    }

    fn home(&self, id: u128) -> usize {
        let x = (id as u64) ^ ((id >> 64) as u64).rotate_left(29) ^ self.key;
        let x = (x ^ (x >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // The high bits are the best mixed; the mask keeps the index in range.
        ((x >> 32) as usize) & (self.slots.len() - 1)
    }

    /// Slot holding `id`, or the free slot where it would go.
    fn find(&self, id: u128) -> (usize, bool) {
        let mask = self.slots.len() - 1;
        let mut i = self.home(id);
        // Bounded: the table is never full (load at most 3/4).
        for _ in 0..self.slots.len() {
            match self.slots[i] {
                EMPTY => return (i, false),
                x if x == id => return (i, true),
                _ => i = (i + 1) & mask,
            }
        }
        (i, false)
    }

    pub(crate) fn contains(&self, id: &PurgeId) -> bool {
        if id.0 == EMPTY {
            return self.zero;
        }
        !self.slots.is_empty() && self.find(id.0).1
    }

    /// False if it was there already.
    pub(crate) fn insert(&mut self, id: PurgeId) -> bool {
        if id.0 == EMPTY {
            return !std::mem::replace(&mut self.zero, true);
        }
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let (i, found) = self.find(id.0);
        if found {
            return false;
        }
        self.slots[i] = id.0;
        self.len += 1;
        true
    }

    pub(crate) fn remove(&mut self, id: &PurgeId) -> bool {
        if id.0 == EMPTY {
            return std::mem::replace(&mut self.zero, false);
        }
        if self.slots.is_empty() {
            return false;
        }
        let (mut hole, found) = self.find(id.0);
        if !found {
            return false;
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        // Backward-shift deletion: move later members of the probe run
        // into the hole when their home does not lie between it and them,
        // so lookups never stop early at the hole.
        let mask = self.slots.len() - 1;
        let mut j = hole;
        for _ in 0..self.slots.len() {
            j = (j + 1) & mask;
            let x = self.slots[j];
            if x == EMPTY {
                break;
            }
            let home = self.home(x);
            // Distances along the ring: x may move to the hole if its home
            // is not strictly after the hole on its way to j.
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.slots[hole] = x;
                self.slots[j] = EMPTY;
                hole = j;
            }
        }
        true
    }

    fn grow(&mut self) {
        let cap = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; cap]);
        for x in old.into_iter().filter(|x| *x != EMPTY) {
            let (i, _) = self.find(x);
            self.slots[i] = x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::HashSet;

    #[test]
    fn behaves_like_a_hash_set_under_inserts_and_removes() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut set = IdSet::with_key(77);
        let mut reference = HashSet::new();
        // Small id space so removals and repeats hit, plus 0 now and then.
        for _ in 0..50_000 {
            let id = PurgeId(if rng.random_bool(0.01) { 0 } else { rng.random_range(0..3000u128) << 70 | 1 });
            match rng.random_range(0..3) {
                0 => assert_eq!(set.remove(&id), reference.remove(&id)),
                _ => assert_eq!(set.insert(id), reference.insert(id)),
            }
            let probe = PurgeId(rng.random_range(0..3000u128) << 70 | 1);
            assert_eq!(set.contains(&probe), reference.contains(&probe));
        }
        assert!(reference.iter().all(|id| set.contains(id)));
        assert!(set.len + usize::from(set.zero) == reference.len());
    }
}
