//! A fast keyed hash for the engine's tables that are looked up on every
//! purge received (stream ids). SipHash, std's default, showed up at 9% of
//! a simulation's profile; and `RandomState` reads OS randomness, which a
//! sans-IO engine must not do.
//!
//! Keys come from peers, so the hash is keyed from the engine's private
//! seed and ends in a full avalanche: without the key a peer cannot aim
//! ids at one bucket. It is not a cryptographic MAC, and does not need to
//! be: the worst a successful guess buys is slower lookups.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// The keyed hasher builder of [`KeyedMap`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Keyed(u64);

impl Keyed {
    /// A hasher keyed with `key` (derive it from a private seed).
    pub fn new(key: u64) -> Keyed {
        Keyed(key)
    }
}

impl BuildHasher for Keyed {
    type Hasher = KeyedHasher;

    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher(self.0)
    }
}

pub struct KeyedHasher(u64);

impl Hasher for KeyedHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }

    fn write_u8(&mut self, x: u8) {
        self.write_u64(u64::from(x));
    }

    fn write_u32(&mut self, x: u32) {
        self.write_u64(u64::from(x));
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0 ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(31);
    }

    fn write_u128(&mut self, x: u128) {
        self.write_u64(x as u64);
        self.write_u64((x >> 64) as u64);
    }

    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }

    fn finish(&self) -> u64 {
        mix64(self.0)
    }
}

/// A hash map keyed with [`Keyed`].
pub type KeyedMap<K, V> = HashMap<K, V, Keyed>;

/// A bijective 64-bit mixer (SplitMix64's finaliser): every input bit
/// affects every output bit.
pub fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hash;

    fn hash<T: Hash>(k: &Keyed, x: T) -> u64 {
        k.hash_one(x)
    }

    #[test]
    fn depends_on_key_and_every_word() {
        let (a, b) = (Keyed::new(1), Keyed::new(2));
        assert_ne!(hash(&a, (5u64, 6u64)), hash(&b, (5u64, 6u64)));
        assert_ne!(hash(&a, (5u64, 6u64)), hash(&a, (6u64, 5u64)));
        assert_ne!(hash(&a, (5u64, 6u64)), hash(&a, (5u64, 7u64)));
        assert_eq!(hash(&a, (5u64, 6u64)), hash(&a, (5u64, 6u64)));
    }

    #[test]
    fn spreads_sequential_keys_over_buckets() {
        // The low bits pick the bucket: sequential stream ids (one origin,
        // epochs 1, 2, 3 …) must not pile into a few of 64.
        let k = Keyed::new(0x1234);
        let mut buckets = [0u32; 64];
        for epoch in 0..6400u64 {
            buckets[(hash(&k, (7u64, epoch)) & 63) as usize] += 1;
        }
        let (lo, hi) = (buckets.iter().min().copied(), buckets.iter().max().copied());
        assert!(lo.unwrap_or(0) > 50 && hi.unwrap_or(u32::MAX) < 150, "{buckets:?}");
    }
}
