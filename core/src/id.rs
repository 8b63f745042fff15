//! Identifiers: nodes, purges and purge streams.

use std::fmt;
use std::str::FromStr;

/// A node's identity in the cluster. Derived from its name (see
/// [`NodeId::from_name`]) so configs need to name a node only once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct NodeId(pub u64);

impl NodeId {
    /// Stable 64-bit FNV-1a hash of the node name. Stable across Rust
    /// versions and platforms, unlike `DefaultHasher`.
    pub fn from_name(name: &str) -> NodeId {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        NodeId(h)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// 128-bit purge id, printed as 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PurgeId(pub u128);

impl PurgeId {
    /// The id as 16 big-endian bytes (its wire and store form).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// Reads an id from 16 bytes; `None` for any other length.
    pub fn from_slice(b: &[u8]) -> Option<PurgeId> {
        let arr: [u8; 16] = b.try_into().ok()?;
        Some(PurgeId(u128::from_be_bytes(arr)))
    }
}

impl fmt::Display for PurgeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A purge id that is not 32 hexadecimal digits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("purge id must be 32 hexadecimal digits, got {0:?}")]
pub struct BadPurgeId(pub String);

impl FromStr for PurgeId {
    type Err = BadPurgeId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BadPurgeId(s.chars().take(64).collect()));
        }
        u128::from_str_radix(s, 16).map(PurgeId).map_err(|_| BadPurgeId(s.to_string()))
    }
}

/// The stream of purges one node accepted during one run (epoch). Within a
/// stream, purges are numbered 1, 2, 3 … without gaps, which is what lets
/// anti-entropy summarise "what I have" as one number per stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    /// The node that originated the stream.
    pub origin: NodeId,
    /// Its boot epoch: each run of a node starts a new stream.
    pub epoch: u64,
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.origin, self.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_id_round_trips_through_text_and_bytes() {
        let id = PurgeId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let s = id.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(s.parse::<PurgeId>(), Ok(id));
        assert_eq!(PurgeId::from_slice(&id.to_bytes()), Some(id));
        assert!("xyz".parse::<PurgeId>().is_err());
        assert!(PurgeId::from_slice(&[1, 2, 3]).is_none());
    }

    #[test]
    fn node_id_from_name_is_stable() {
        // Pinned: changing the hash would split existing clusters.
        assert_eq!(NodeId::from_name("node-0").0, NodeId::from_name("node-0").0);
        assert_ne!(NodeId::from_name("node-0"), NodeId::from_name("node-1"));
        assert_eq!(NodeId::from_name("").0, 0xcbf2_9ce4_8422_2325);
    }
}
