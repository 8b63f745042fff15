//! A purge: what to remove, how, and where it came from.

use crate::id::{NodeId, PurgeId, StreamId};
use crate::selector::{Selector, SelectorError};

/// At most this many selectors in one purge: Cloudflare's API takes up to
/// 500 URLs in one call, and one call is one purge.
pub const MAX_SELECTORS: usize = 500;

/// Longest zone id.
pub const MAX_ZONE_LEN: usize = 64;

/// What a purge does to the entries it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Delete matching entries.
    #[default]
    Hard,
    /// Keep matching entries but mark them stale (revalidate before serving).
    Soft,
}

/// One purge, as originated and spread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purge {
    /// Random id, for status and acks.
    pub id: PurgeId,
    /// The stream of its origin.
    pub stream: StreamId,
    /// Position in the stream, from 1, without gaps.
    pub seq: u64,
    /// What to purge.
    pub selectors: Vec<Selector>,
    /// Delete or mark stale.
    pub mode: Mode,
    /// Unix milliseconds when the origin accepted it (wall clock; used as
    /// the stale-since time of soft purges).
    pub issued_at_ms: u64,
    /// The tenant zone the purge is confined to: its tags are that zone's
    /// tags and its `Everything` is that zone's objects. Empty = no zone:
    /// the cluster without zones, or an operator's purge of the whole
    /// cluster. The core carries it; each node's store interprets it.
    pub zone: String,
    /// The id of the token that asked for it (`-` for an open API), for the
    /// audit log every node keeps with its purge log. Never a secret.
    pub requested_by: String,
}

/// Whose purge it is: [`Purge::zone`] and [`Purge::requested_by`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tenant {
    /// Zone id; empty = none.
    pub zone: String,
    /// Token id.
    pub requested_by: String,
}

/// A purge that must not be accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum PurgeError {
    /// No selector.
    #[error("a purge needs at least one selector")]
    NoSelectors,
    /// More than `MAX_SELECTORS` selectors.
    #[error("too many selectors: {0} (at most {MAX_SELECTORS} in one purge)")]
    TooManySelectors(usize),
    /// One selector is invalid.
    #[error("selector {index}: {source}")]
    Selector {
        /// Position of the selector in the purge.
        index: usize,
        /// What is wrong with it.
        source: SelectorError,
    },
    /// A seq of 0.
    #[error("seq must start at 1")]
    ZeroSeq,
    /// A zone id that is not a zone id.
    #[error("zone id {0:?} must be 1 to {MAX_ZONE_LEN} of a-z, 0-9, '-', '_', '.'")]
    BadZone(String),
    /// A token id longer than a token id can be.
    #[error("requested_by is longer than {MAX_ZONE_LEN} bytes")]
    BadRequester,
}

impl Purge {
    /// The node that originated the purge.
    pub fn origin(&self) -> NodeId {
        self.stream.origin
    }

    /// Checks everything a peer could get wrong.
    pub fn validate(&self) -> Result<(), PurgeError> {
        validate_selectors(&self.selectors)?;
        validate_zone(&self.zone)?;
        if self.requested_by.len() > MAX_ZONE_LEN {
            return Err(PurgeError::BadRequester);
        }
        if self.seq == 0 {
            return Err(PurgeError::ZeroSeq);
        }
        Ok(())
    }

    /// Rough in-memory size, for batching catch-ups.
    pub fn approx_len(&self) -> usize {
        48 + self.zone.len() + self.requested_by.len() + self.selectors.iter().map(Selector::approx_len).sum::<usize>()
    }
}

/// A zone id is empty (no zone) or 1 to [`MAX_ZONE_LEN`] lower-case
/// letters, digits, '-', '_' and '.': it is part of the store's tag keys.
pub fn validate_zone(zone: &str) -> Result<(), PurgeError> {
    let ok = zone.len() <= MAX_ZONE_LEN
        && zone.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(PurgeError::BadZone(zone.chars().take(80).collect()))
    }
}

/// Checks a purge's selectors (count and each one).
pub fn validate_selectors(selectors: &[Selector]) -> Result<(), PurgeError> {
    if selectors.is_empty() {
        return Err(PurgeError::NoSelectors);
    }
    if selectors.len() > MAX_SELECTORS {
        return Err(PurgeError::TooManySelectors(selectors.len()));
    }
    for (index, s) in selectors.iter().enumerate() {
        s.validate().map_err(|source| PurgeError::Selector { index, source })?;
    }
    Ok(())
}
