//! A purge: what to remove, how, and where it came from.

use crate::id::{NodeId, PurgeId, StreamId};
use crate::selector::{Selector, SelectorError};

/// At most this many selectors in one purge (a CDN API takes ~100 a call).
pub const MAX_SELECTORS: usize = 256;

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
}

impl Purge {
    /// The node that originated the purge.
    pub fn origin(&self) -> NodeId {
        self.stream.origin
    }

    /// Checks everything a peer could get wrong.
    pub fn validate(&self) -> Result<(), PurgeError> {
        validate_selectors(&self.selectors)?;
        if self.seq == 0 {
            return Err(PurgeError::ZeroSeq);
        }
        Ok(())
    }

    /// Rough in-memory size, for batching catch-ups.
    pub fn approx_len(&self) -> usize {
        48 + self.selectors.iter().map(Selector::approx_len).sum::<usize>()
    }
}

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
